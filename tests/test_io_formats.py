"""Formats recognised by their markers (issue 13): 10x .h5 of every Cell Ranger generation (several genomes,
several feature types), kb-python, STARsolo, alevin-fry, Cell Ranger outs/ and multi folders, and R/Seurat
exports — each read right (shape, names, entries) or refused with a one-line error that names the problem and
the fix. Every input is generated here, small."""

from __future__ import annotations

import gzip
import io
import json
import logging
from pathlib import Path

import anndata
import h5py
import numpy as np
import pytest
import scipy.io
from scipy import sparse

from genodae.cli import _read, build_parser
from genodae.errors import UserError
from genodae.io import read

RNG = np.random.default_rng(13)


def counts(n_cells: int, n_genes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(0.8, size=(n_cells, n_genes)).astype(np.int64)


def barcodes(n: int, tag: str = "") -> list[str]:
    return [f"{tag}AAAC{i:06d}-1" for i in range(n)]


def dense(X) -> np.ndarray:
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


def write_mtx(path: Path, X: np.ndarray) -> Path:
    """``X`` exactly as stored (rows × columns), Matrix Market, gzipped when the name ends in .gz."""
    buf = io.BytesIO()
    scipy.io.mmwrite(buf, sparse.coo_matrix(X), field="integer")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buf.getvalue()) if path.name.endswith(".gz") else buf.getvalue())
    return path


def write_lines(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


def write_10x_dir(folder: Path, X: np.ndarray, bars, ids, names, types=None, gz=True, prefix="") -> Path:
    """A Cell Ranger 3+ folder (features.tsv.gz with feature types) or, with types=None and gz=False, 1–2."""
    z = ".gz" if gz else ""
    write_mtx(folder / f"{prefix}matrix.mtx{z}", X.T)
    rows = [f"{i}\t{n}" + (f"\t{t}" if types is not None else "") for i, n, t in
            zip(ids, names, types if types is not None else [None] * len(ids), strict=True)]
    write_lines(folder / f"{prefix}{'features' if types is not None else 'genes'}.tsv{z}", rows)
    write_lines(folder / f"{prefix}barcodes.tsv{z}", bars)
    return folder


def genes(n: int, tag: str = "ENSG", sym: str = "G") -> tuple[list[str], list[str]]:
    return [f"{tag}{j:011d}" for j in range(n)], [f"{sym}{j}" for j in range(n)]


# --- 10x .h5 ------------------------------------------------------------------------------------------------


def write_legacy_h5(path: Path, groups: dict) -> Path:
    """Cell Ranger 1–2: one group per genome, genes × barcodes CSC. ``groups``: name → (X cells × genes, bars,
    ids, names)."""
    with h5py.File(path, "w") as f:
        for g, (X, bars, ids, names) in groups.items():
            csc = sparse.csc_matrix(sparse.csr_matrix(X).T)
            grp = f.create_group(g)
            grp.create_dataset("barcodes", data=np.array(bars, dtype="S"))
            grp.create_dataset("data", data=csc.data.astype(np.int32))
            grp.create_dataset("indices", data=csc.indices.astype(np.int64))
            grp.create_dataset("indptr", data=csc.indptr.astype(np.int64))
            grp.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
            grp.create_dataset("genes", data=np.array(ids, dtype="S"))
            grp.create_dataset("gene_names", data=np.array(names, dtype="S"))
    return path


def write_v3_h5(path: Path, X, bars, ids, names, types, genomes) -> Path:
    csc = sparse.csc_matrix(sparse.csr_matrix(X).T)
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array(bars, dtype="S"))
        m.create_dataset("data", data=csc.data.astype(np.int32))
        m.create_dataset("indices", data=csc.indices.astype(np.int64))
        m.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
        ft = m.create_group("features")
        ft.create_dataset("id", data=np.array(ids, dtype="S"))
        ft.create_dataset("name", data=np.array(names, dtype="S"))
        ft.create_dataset("feature_type", data=np.array(types, dtype="S"))
        ft.create_dataset("genome", data=np.array(genomes, dtype="S"))
        ft.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))
    return path


@pytest.fixture
def barnyard(tmp_path):
    """A Cell Ranger 2 .h5 of a human–mouse mix: GRCh38 (30 genes) and mm10 (20 genes), the same 40 barcodes."""
    bars = barcodes(40)
    hx, mx = counts(40, 30, 1), counts(40, 20, 2)
    h_ids, h_names = genes(30, "ENSG", "HUMAN")
    m_ids, m_names = genes(20, "ENSMUSG", "mouse")
    path = write_legacy_h5(tmp_path / "filtered_gene_bc_matrices_h5.h5",
                           {"GRCh38": (hx, bars, h_ids, h_names), "mm10": (mx, bars, m_ids, m_names)})
    return path, hx, mx


def test_legacy_h5_one_genome_just_reads(tmp_path):
    X = counts(25, 12)
    ids, names = genes(12)
    adata = read(write_legacy_h5(tmp_path / "x.h5", {"hg19": (X, barcodes(25), ids, names)}))
    assert adata.shape == (25, 12)
    np.testing.assert_array_equal(dense(adata.X), X)
    assert adata.var_names[3] == "G3" and adata.var["gene_ids"].iloc[3] == ids[3]
    assert adata.obs_names[0] == "AAAC000000-1" and adata.uns["genodae_read"]["format"] == "10x_h5"


def test_legacy_h5_two_genomes_read_together_with_a_genome_column(barnyard, caplog):
    path, hx, mx = barnyard
    with caplog.at_level(logging.WARNING, logger="genodae"):
        adata = read(path)
    assert adata.shape == (40, 50)
    assert list(adata.var["genome"].value_counts().sort_index().items()) == [("GRCh38", 30), ("mm10", 20)]
    np.testing.assert_array_equal(dense(adata.X), np.hstack([hx, mx]))
    assert adata.var_names[30] == "mouse0"
    assert adata.uns["genodae_read"]["genomes"] == ["GRCh38", "mm10"]
    assert "2 genomes" in caplog.text and "--genome" in caplog.text


@pytest.mark.parametrize("genome", ["GRCh38", "mm10"])
def test_legacy_h5_genome_chosen(barnyard, genome):
    path, hx, mx = barnyard
    adata = read(path, genome=genome)
    expected = hx if genome == "GRCh38" else mx
    assert adata.shape == expected.shape
    np.testing.assert_array_equal(dense(adata.X), expected)
    assert adata.uns["genodae_read"]["genome"] == genome


def test_unknown_genome_names_the_genomes(barnyard):
    with pytest.raises(UserError, match=r"genome='hg19' is not in .*: it holds GRCh38, mm10; give one of them "
                                        r"\(--genome\)\.$"):
        read(barnyard[0], genome="hg19")


def test_legacy_h5_genomes_with_different_barcodes_are_refused(tmp_path):
    ids, names = genes(5)
    path = write_legacy_h5(tmp_path / "x.h5", {"GRCh38": (counts(6, 5), barcodes(6), ids, names),
                                               "mm10": (counts(4, 5), barcodes(4, "M"), ids, names)})
    with pytest.raises(UserError, match=r"holds 2 genomes \(GRCh38, mm10\) with different barcodes: choose one "
                                        r"with --genome NAME"):
        read(path)
    assert read(path, genome="mm10").shape == (4, 5)


def test_genome_for_a_file_without_genomes_is_refused(tmp_path, counts_adata):
    path = tmp_path / "x.h5ad"
    counts_adata.write_h5ad(path)
    with pytest.raises(UserError, match=r"genome='GRCh38' applies to 10x \.h5 files .*leave out --genome"):
        read(path, genome="GRCh38")


def test_v3_h5_feature_types_gene_expression_kept_rest_said(tmp_path, caplog):
    X = counts(30, 16)
    ids, names = genes(16)
    types = ["Gene Expression"] * 10 + ["Antibody Capture"] * 4 + ["CRISPR Guide Capture"] * 2
    path = write_v3_h5(tmp_path / "filtered_feature_bc_matrix.h5", X, barcodes(30), ids, names, types,
                       ["GRCh38"] * 10 + [""] * 6)
    with caplog.at_level(logging.WARNING, logger="genodae"):
        adata = read(path)
    assert adata.shape == (30, 10)
    np.testing.assert_array_equal(dense(adata.X), X[:, :10])
    assert (adata.var["feature_types"] == "Gene Expression").all()
    assert adata.uns["genodae_read"]["set_aside_features"] == {"Antibody Capture": 4, "CRISPR Guide Capture": 2}
    assert "Antibody Capture (4), CRISPR Guide Capture (2)" in caplog.text


def test_v3_h5_without_gene_expression_is_refused(tmp_path):
    ids, names = genes(4)
    path = write_v3_h5(tmp_path / "adt.h5", counts(5, 4), barcodes(5), ids, names, ["Antibody Capture"] * 4,
                       [""] * 4)
    with pytest.raises(UserError, match=r"holds no 'Gene Expression' features, only Antibody Capture \(4\)"):
        read(path)


def test_v3_h5_two_genomes(tmp_path):
    X = counts(20, 9)
    ids, names = genes(9)
    gen = ["GRCh38"] * 5 + ["mm10"] * 4
    path = write_v3_h5(tmp_path / "x.h5", X, barcodes(20), ids, names, ["Gene Expression"] * 9, gen)
    adata = read(path)
    assert adata.shape == (20, 9) and list(adata.var["genome"]) == gen
    mouse = read(path, genome="mm10")
    np.testing.assert_array_equal(dense(mouse.X), X[:, 5:])


def test_hdf5_markers_whatever_the_extension(tmp_path, counts_adata):
    small = counts_adata[:20, :15].copy()
    small.write_loom(tmp_path / "loom_as.h5")
    assert read(tmp_path / "loom_as.h5").shape == (20, 15)
    X = counts(8, 6)
    ids, names = genes(6)
    write_v3_h5(tmp_path / "tenx_as.h5ad", X, barcodes(8), ids, names, ["Gene Expression"] * 6, ["GRCh38"] * 6)
    adata = read(tmp_path / "tenx_as.h5ad")
    assert adata.uns["genodae_read"]["format"] == "10x_h5" and adata.shape == (8, 6)


def test_molecule_info_h5_is_refused(tmp_path):
    with h5py.File(tmp_path / "molecule_info.h5", "w") as f:
        for k in ("barcode_idx", "feature_idx", "umi", "count", "gem_group"):
            f.create_dataset(k, data=np.zeros(3, dtype=np.int64))
        f.create_group("features")
    with pytest.raises(UserError, match=r"molecule_info\.h5 \(one row per molecule\), not a count matrix: give "
                                        r"filtered_feature_bc_matrix\.h5"):
        read(tmp_path / "molecule_info.h5")


# --- R / Seurat / MuData -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pbmc.rds", "pbmc.RData", "pbmc.rda", "pbmc.h5Seurat", "seurat_as.h5"])
def test_r_and_seurat_files_refused_with_conversion_advice(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".h5") or name.endswith(".h5Seurat"):
        with h5py.File(path, "w") as f:
            f.attrs["active.assay"] = "RNA"
            f.create_group("assays")
    else:
        path.write_bytes(b"X\n\x00\x00\x00\x03")
    with pytest.raises(UserError) as err:
        read(path)
    msg = str(err.value)
    assert "\n" not in msg and "genodae cannot read: convert it to .h5ad" in msg
    assert "Convert('x.h5Seurat', dest = 'h5ad')" in msg and "zellkonverter" in msg and "sceasy" in msg


def test_h5mu_refused_with_advice(tmp_path):
    (tmp_path / "x.h5mu").write_bytes(b"\x89HDF")
    with pytest.raises(UserError, match=r"MuData \.h5mu .*mudata\.read_h5mu\(path\)\['rna'\]\.write_h5ad"):
        read(tmp_path / "x.h5mu")


def test_anndata_zarr_store_reads(tmp_path, counts_adata):
    small = counts_adata[:10, :7].copy()
    small.write_zarr(tmp_path / "x.zarr")
    adata = read(tmp_path / "x.zarr")
    np.testing.assert_array_equal(dense(adata.X), dense(small.X))
    assert adata.uns["genodae_read"]["format"] == "zarr"


# --- kb-python ---------------------------------------------------------------------------------------------


def write_kb(folder: Path, X: np.ndarray, *, names=True, matrices=("",)) -> Path:
    """kb count output: counts_unfiltered/cells_x_genes[.<kind>].mtx stored cells × genes."""
    cu = folder / "counts_unfiltered"
    for i, kind in enumerate(matrices):
        write_mtx(cu / f"cells_x_genes{'.' + kind if kind else ''}.mtx", X + i)
    ids, syms = genes(X.shape[1], "ENSMUSG", "Gm")
    write_lines(cu / "cells_x_genes.barcodes.txt", barcodes(X.shape[0]))
    write_lines(cu / "cells_x_genes.genes.txt", ids)
    if names:
        write_lines(cu / "cells_x_genes.genes.names.txt", syms[:-1] + [""])  # one gene without a name
    (folder / "kb_info.json").write_text("{}")
    return folder


@pytest.mark.parametrize("given", ["top", "counts_unfiltered", "mtx"])
def test_kb_python_folder(tmp_path, given):
    X = counts(250, 90, 5)
    top = write_kb(tmp_path / "kb_out", X)
    path = {"top": top, "counts_unfiltered": top / "counts_unfiltered",
            "mtx": top / "counts_unfiltered" / "cells_x_genes.mtx"}[given]
    adata = read(path)
    assert adata.shape == (250, 90)
    np.testing.assert_array_equal(dense(adata.X), X)
    assert adata.var_names[0] == "Gm0" and adata.var_names[89] == "ENSMUSG00000000089"  # no name: its ID
    assert adata.var["gene_ids"].iloc[5] == "ENSMUSG00000000005"
    assert adata.obs_names[249] == "AAAC000249-1"
    assert adata.uns["genodae_read"]["layout"] == "kb-python"


def test_kb_without_gene_names_uses_ids(tmp_path):
    adata = read(write_kb(tmp_path / "kb", counts(12, 7), names=False))
    assert adata.var_names[2] == "ENSMUSG00000000002"


def test_kb_nac_without_total_is_refused_naming_them(tmp_path):
    top = write_kb(tmp_path / "kb", counts(12, 7), matrices=("ambiguous", "mature", "nascent"))
    with pytest.raises(UserError, match=r"holds 3 count matrices \(ambiguous, mature, nascent\) and no total: "
                                        r"genodae reads one matrix, so give the one to read \(e\.g\. .*cells_x_genes"
                                        r"\.ambiguous\.mtx\), or re-run kb count with --sum total"):
        read(top)
    one = read(top / "counts_unfiltered" / "cells_x_genes.mature.mtx")  # a chosen one reads
    np.testing.assert_array_equal(dense(one.X), counts(12, 7) + 1)


def test_kb_nac_with_total_reads_the_total(tmp_path):
    top = write_kb(tmp_path / "kb", counts(12, 7), matrices=("mature", "nascent", "total"))
    adata = read(top)
    np.testing.assert_array_equal(dense(adata.X), counts(12, 7) + 2)
    assert len(adata.uns["genodae_read"]["not_read"]) == 2


def test_kb_filtered_preferred(tmp_path):
    top = write_kb(tmp_path / "kb", counts(30, 7))
    filt = tmp_path / "kb" / "counts_filtered"
    filt.mkdir()
    for f in (top / "counts_unfiltered").iterdir():
        (filt / f.name).write_bytes(f.read_bytes())
    write_mtx(filt / "cells_x_genes.mtx", counts(30, 7)[:, :] * 0 + 3)
    assert dense(read(top).X).min() == 3


# --- STARsolo --------------------------------------------------------------------------------------------------


def write_starsolo(run: Path, X: np.ndarray, *, genefull=False) -> Path:
    ids, names = genes(X.shape[1])
    bars = barcodes(X.shape[0])
    solo = run / "Solo.out"
    for feature in ("Gene", "GeneFull") if genefull else ("Gene",):
        write_10x_dir(solo / feature / "filtered", X, bars, ids, names, ["Gene Expression"] * len(ids), gz=False)
        raw = np.vstack([X, np.zeros((5, X.shape[1]), dtype=np.int64)])
        write_10x_dir(solo / feature / "raw", raw, barcodes(X.shape[0] + 5), ids, names,
                      ["Gene Expression"] * len(ids), gz=False)
    velo = solo / "Velocyto" / "filtered"
    for kind in ("spliced", "unspliced", "ambiguous"):
        write_mtx(velo / f"{kind}.mtx", X.T)
    write_lines(velo / "features.tsv", [f"{i}\t{n}\tGene Expression" for i, n in zip(ids, names, strict=True)])
    write_lines(velo / "barcodes.tsv", bars)
    (solo / "SJ" / "raw").mkdir(parents=True)
    return run


@pytest.mark.parametrize("given", ["run", "Solo.out", "Gene"])
def test_starsolo_reads_gene_filtered(tmp_path, given):
    X = counts(33, 21)
    run = write_starsolo(tmp_path / "sample1", X)
    path = {"run": run, "Solo.out": run / "Solo.out", "Gene": run / "Solo.out" / "Gene"}[given]
    adata = read(path)
    assert adata.shape == (33, 21)
    np.testing.assert_array_equal(dense(adata.X), X)
    info = adata.uns["genodae_read"]
    assert info["read"].endswith("Gene/filtered/matrix.mtx")
    assert any(p.endswith("raw") or p.endswith("Velocyto") for p in info.get("not_read", []))


def test_starsolo_gene_and_genefull_is_ambiguous(tmp_path):
    run = write_starsolo(tmp_path / "s", counts(10, 5), genefull=True)
    with pytest.raises(UserError, match=r"holds STARsolo counts of 2 kinds \(Gene, GeneFull\): give the one to "
                                        r"read: .*Gene/filtered, .*GeneFull/filtered\.$"):
        read(run)


def test_starsolo_velocyto_parts_are_refused(tmp_path):
    run = write_starsolo(tmp_path / "s", counts(10, 5))
    with pytest.raises(UserError, match=r"holds 3 count matrices \(ambiguous, spliced, unspliced\) and no total"):
        read(run / "Solo.out" / "Velocyto" / "filtered")
    assert read(run / "Solo.out" / "Velocyto" / "filtered" / "spliced.mtx").shape == (10, 5)


def test_starsolo_multimapper_matrices_beside_matrix_mtx(tmp_path):
    run = write_starsolo(tmp_path / "s", counts(10, 5))
    raw = run / "Solo.out" / "Gene" / "raw"
    write_mtx(raw / "UniqueAndMult-EM.mtx", counts(15, 5, 9).T)
    adata = read(raw)
    assert adata.shape == (15, 5) and adata.uns["genodae_read"]["not_read"][0].endswith("UniqueAndMult-EM.mtx")
    np.testing.assert_array_equal(dense(read(raw / "UniqueAndMult-EM.mtx").X), counts(15, 5, 9))


# --- alevin-fry / salmon alevin ---------------------------------------------------------------------------------


def write_fry(top: Path, X: np.ndarray, usa=False) -> Path:
    alevin = top / "af_quant" / "alevin"
    ids, _ = genes(X.shape[1] // 3 if usa else X.shape[1])
    cols = ids + [f"{g}-U" for g in ids] + [f"{g}-A" for g in ids] if usa else ids
    write_mtx(alevin / "quants_mat.mtx", X)  # cells × genes
    write_lines(alevin / "quants_mat_cols.txt", cols)
    write_lines(alevin / "quants_mat_rows.txt", barcodes(X.shape[0]))
    (top / "af_quant" / "quant.json").write_text(json.dumps({"usa_mode": usa, "num_genes": len(cols)}))
    return top


@pytest.mark.parametrize("given", ["top", "af_quant", "alevin", "mtx"])
def test_alevin_fry(tmp_path, given):
    X = counts(17, 11)
    top = write_fry(tmp_path / "simpleaf_quant", X)
    alevin = top / "af_quant" / "alevin"
    path = {"top": top, "af_quant": top / "af_quant", "alevin": alevin, "mtx": alevin / "quants_mat.mtx"}[given]
    adata = read(path)
    assert adata.shape == (17, 11)
    np.testing.assert_array_equal(dense(adata.X), X)
    assert adata.var_names[4] == "ENSG00000000004" and adata.uns["genodae_read"]["layout"] == "alevin-fry"


def test_alevin_fry_usa_mode_is_refused(tmp_path):
    top = write_fry(tmp_path / "q", counts(9, 12), usa=True)
    with pytest.raises(UserError, match=r"alevin-fry USA-mode output: spliced, unspliced and ambiguous counts .*"
                                        r"pyroe: load_fry\(folder, output_format='scRNA'\)"):
        read(top)


def test_salmon_alevin_binary_matrix_is_refused(tmp_path):
    alevin = tmp_path / "salmon_out" / "alevin"
    alevin.mkdir(parents=True)
    (alevin / "quants_mat.gz").write_bytes(gzip.compress(b"\x00\x01"))
    write_lines(alevin / "quants_mat_cols.txt", ["g1"])
    write_lines(alevin / "quants_mat_rows.txt", ["c1"])
    for path in (tmp_path / "salmon_out", alevin / "quants_mat.gz"):
        with pytest.raises(UserError, match=r"salmon alevin's binary .*--dumpMtx"):
            read(path)


# --- Cell Ranger outs/ and multi -------------------------------------------------------------------------------


def write_outs(outs: Path, X: np.ndarray, *, raw_only=False) -> Path:
    ids, names = genes(X.shape[1])
    types = ["Gene Expression"] * X.shape[1]
    raw = np.vstack([X, np.ones((4, X.shape[1]), dtype=np.int64)])
    write_10x_dir(outs / "raw_feature_bc_matrix", raw, barcodes(X.shape[0] + 4), ids, names, types)
    write_v3_h5(outs / "raw_feature_bc_matrix.h5", raw, barcodes(X.shape[0] + 4), ids, names, types,
                ["GRCh38"] * len(ids))
    if not raw_only:
        write_10x_dir(outs / "filtered_feature_bc_matrix", X, barcodes(X.shape[0]), ids, names, types)
        write_v3_h5(outs / "filtered_feature_bc_matrix.h5", X, barcodes(X.shape[0]), ids, names, types,
                    ["GRCh38"] * len(ids))
    (outs / "web_summary.html").write_text("<html/>")
    return outs


@pytest.mark.parametrize("given", ["sample", "outs"])
def test_cellranger_outs_reads_filtered(tmp_path, given):
    X = counts(26, 14)
    outs = write_outs(tmp_path / "sample1" / "outs", X)
    adata = read(tmp_path / "sample1" if given == "sample" else outs)
    assert adata.shape == (26, 14)
    np.testing.assert_array_equal(dense(adata.X), X)
    assert "filtered_feature_bc_matrix" in adata.uns["genodae_read"]["read"]
    assert any("raw_feature_bc_matrix" in p for p in adata.uns["genodae_read"]["not_read"])


def test_cellranger_outs_with_only_raw_reads_it_with_a_warning(tmp_path, caplog):
    outs = write_outs(tmp_path / "outs", counts(6, 5), raw_only=True)
    with caplog.at_level(logging.WARNING, logger="genodae"):
        adata = read(outs)
    assert adata.shape == (10, 5) and "only the unfiltered matrix" in caplog.text


def test_cellranger_multi_one_sample_and_several(tmp_path):
    X = counts(12, 8)
    ids, names = genes(8)
    types = ["Gene Expression"] * 8
    outs = tmp_path / "multi_run" / "outs"
    write_10x_dir(outs / "multi" / "count" / "raw_feature_bc_matrix", np.vstack([X, X]), barcodes(24), ids, names,
                  types)
    pso = outs / "per_sample_outs"
    write_10x_dir(pso / "donorA" / "count" / "sample_filtered_feature_bc_matrix", X, barcodes(12), ids, names, types)
    adata = read(tmp_path / "multi_run")
    assert adata.shape == (12, 8) and adata.uns["genodae_read"]["layout"] == "Cell Ranger outs/"
    write_10x_dir(pso / "donorB" / "count" / "sample_filtered_feature_bc_matrix", X, barcodes(12), ids, names, types)
    with pytest.raises(UserError, match=r"cellranger multi output of 2 samples \(donorA, donorB\): give them as "
                                        r"several inputs to read them as batches, or one of them: .*donorA/count/"
                                        r"sample_filtered_feature_bc_matrix"):
        read(outs)
    assert read(pso / "donorB").shape == (12, 8)


def test_cellranger2_genome_folders(tmp_path):
    folder = tmp_path / "filtered_gene_bc_matrices"
    bars = barcodes(15)
    hx, mx = counts(15, 6, 3), counts(15, 4, 4)
    write_10x_dir(folder / "GRCh38", hx, bars, *genes(6), gz=False)
    write_10x_dir(folder / "mm10", mx, bars, *genes(4, "ENSMUSG", "m"), gz=False)
    adata = read(tmp_path)  # the outs/-like folder holding filtered_gene_bc_matrices/
    assert adata.shape == (15, 10) and list(adata.var["genome"].unique()) == ["GRCh38", "mm10"]
    np.testing.assert_array_equal(dense(adata.X), np.hstack([hx, mx]))
    np.testing.assert_array_equal(dense(read(folder, genome="mm10").X), mx)


def test_geo_folder_of_several_samples_is_refused(tmp_path):
    ids, names = genes(5)
    for s in ("GSM1_", "GSM2_"):
        write_10x_dir(tmp_path / "GSE1", counts(4, 5), barcodes(4), ids, names, ["Gene Expression"] * 5, prefix=s)
    with pytest.raises(UserError, match=r"holds the matrices of 2 samples \(GSM1_matrix\.mtx\.gz, "
                                        r"GSM2_matrix\.mtx\.gz\): give them as several inputs"):
        read(tmp_path / "GSE1")
    assert read(tmp_path / "GSE1" / "GSM2_matrix.mtx.gz").shape == (4, 5)


def test_unknown_folder_lists_what_it_holds(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.md").write_text("x")
    with pytest.raises(UserError, match=r"is a folder but not a matrix folder genodae knows \(it holds notes\.md\)"):
        read(tmp_path / "stuff")


# --- the CLI -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["prepare", "{x}", "-o", "o.h5ad"], ["embed", "{x}", "model", "-o", "o.h5ad"], ["map", "{x}", "model", "-o", "m"],
    ["run", "{x}", "-o", "out"],
])
def test_every_reading_command_has_genome(barnyard, argv):
    path, hx, mx = barnyard
    args = build_parser().parse_args([a.format(x=path) for a in argv] + ["--genome", "mm10"])
    adata = _read(args, {})
    assert isinstance(adata, anndata.AnnData)
    np.testing.assert_array_equal(dense(adata.X), mx)
