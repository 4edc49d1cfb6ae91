"""Several input files → one AnnData with a batch column: ``read_many``, ``read_batches_sheet``, the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import genodae
from genodae import UserError
from genodae.cli import main
from genodae.config import PrepareConfig
from genodae.io import read_batches_sheet, read_many

RNG = np.random.default_rng(0)
BASES = np.array(list("ACGT"))


def barcodes(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(BASES, 16)) for _ in range(n)]


def genes(lo: int, hi: int) -> list[str]:
    return [f"GENE{j:03d}" for j in range(lo, hi)]


def counts(n_genes: int, n_cells: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).poisson(2.0, size=(n_genes, n_cells)).astype(np.int64)


def write_plate(path: Path, gene_names: list[str], cells: list[str], seed: int) -> pd.DataFrame:
    """A genes × cells count table (CSV, gzipped when the name ends in .gz); returns it."""
    df = pd.DataFrame(counts(len(gene_names), len(cells), seed), index=gene_names, columns=cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path)
    return df


SHARED_BC = barcodes(3, seed=99)  # in both plates (CEL-seq2 plates reuse their barcodes)


@pytest.fixture
def plates(tmp_path: Path) -> dict:
    """plate1.csv.gz (GENE000-009 × 5 cells), plate2.csv (GENE002-011 × 5 cells, 3 barcodes shared with
    plate1), tenx.h5ad (cells × GENE000-011, own names), each plate with its own sample sheet."""
    cells1 = SHARED_BC + barcodes(2, seed=1)
    cells2 = SHARED_BC + barcodes(2, seed=2)
    t1 = write_plate(tmp_path / "plate1.csv.gz", genes(0, 10), cells1, seed=1)
    t2 = write_plate(tmp_path / "plate2.csv", genes(2, 12), cells2, seed=2)
    tenx = anndata.AnnData(
        sparse.csr_matrix(counts(12, 6, seed=3).T.astype(np.float32)),
        obs=pd.DataFrame({"donor": ["d1"] * 6}, index=[f"cell{i}" for i in range(6)]),
        var=pd.DataFrame(index=genes(0, 12)),
    )
    tenx.write_h5ad(tmp_path / "tenx.h5ad")
    pd.DataFrame({"barcode": cells1, "cell_line": ["A549", "H838", "H1975", "A549", "H838"]}).to_csv(
        tmp_path / "plate1.meta.csv", index=False)
    pd.DataFrame({"barcode": cells2, "cell_line": ["H2228", "HCC827", "A549", "H838", "H2228"]}).to_csv(
        tmp_path / "plate2.meta.csv", index=False)
    return {"dir": tmp_path, "p1": tmp_path / "plate1.csv.gz", "p2": tmp_path / "plate2.csv",
            "tenx": tmp_path / "tenx.h5ad", "s1": tmp_path / "plate1.meta.csv", "s2": tmp_path / "plate2.meta.csv",
            "t1": t1, "t2": t2, "tenx_adata": tenx, "cells1": cells1, "cells2": cells2}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- read_many: values ------------------------------------------------------------------------------


def test_read_many_intersects_genes_and_suffixes_colliding_names(plates, caplog):
    files = [plates["p1"], plates["p2"], plates["tenx"]]
    before = {p: _digest(p) for p in files}
    with caplog.at_level(logging.INFO, logger="genodae"):
        adata = read_many(files)
    assert {p: _digest(p) for p in files} == before  # inputs never modified

    assert list(adata.var_names) == genes(2, 10)  # in every file, in the first file's order
    assert adata.n_obs == 5 + 5 + 6
    batch = adata.obs["batch"]
    assert isinstance(batch.dtype, pd.CategoricalDtype)
    assert list(batch.cat.categories) == ["plate1", "plate2", "tenx"]  # .csv.gz, .csv, .h5ad stripped
    assert batch.value_counts().to_dict() == {"plate1": 5, "plate2": 5, "tenx": 6}
    # barcodes collide between the plates: every name gets -<batch>, also the h5ad's
    expected = ([f"{c}-plate1" for c in plates["cells1"]] + [f"{c}-plate2" for c in plates["cells2"]]
                + [f"cell{i}-tenx" for i in range(6)])
    assert list(adata.obs_names) == expected
    assert adata.obs_names.is_unique
    # values follow their cells and genes
    X = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    df = pd.DataFrame(X, index=adata.obs_names, columns=adata.var_names)
    bc = SHARED_BC[0]
    assert df.loc[f"{bc}-plate1", "GENE005"] == plates["t1"].loc["GENE005", bc]
    assert df.loc[f"{bc}-plate2", "GENE005"] == plates["t2"].loc["GENE005", bc]
    tenx = plates["tenx_adata"]
    assert df.loc["cell4-tenx", "GENE009"] == tenx[4, "GENE009"].X.toarray()[0, 0]
    # obs columns of some files are kept (missing elsewhere)
    assert list(adata.obs.loc[adata.obs["batch"] == "tenx", "donor"].unique()) == ["d1"]
    assert adata.obs.loc[adata.obs["batch"] == "plate1", "donor"].isna().all()

    info = adata.uns["genodae_read"]
    assert info["files"] == [str(p) for p in files]
    assert info["batches"] == ["plate1", "plate2", "tenx"]
    assert info["batch_key"] == "batch" and info["n_vars_common"] == 8 and info["obs_names_suffixed"]
    log = caplog.text
    assert "plate1.csv.gz: 2 of 10 genes dropped" in log and "plate2.csv: 2 of 10 genes dropped" in log
    assert "tenx.h5ad: 4 of 12 genes dropped" in log
    assert "3 sample name(s) occur in more than one file" in log
    adata.write_h5ad(plates["dir"] / "out.h5ad")  # uns and obs are h5ad-writable
    back = anndata.read_h5ad(plates["dir"] / "out.h5ad")
    assert list(back.uns["genodae_read"]["batches"]) == ["plate1", "plate2", "tenx"]


def test_read_many_keeps_names_that_do_not_collide(plates):
    adata = read_many([plates["p1"], plates["tenx"]], batch_key="plate", batch_names=["P1", "10x"])
    assert list(adata.obs_names) == plates["cells1"] + [f"cell{i}" for i in range(6)]
    assert list(adata.obs["plate"].cat.categories) == ["P1", "10x"]
    assert "batch" not in adata.obs
    assert adata.uns["genodae_read"]["obs_names_suffixed"] is False


def test_read_many_joins_each_files_sample_sheet(plates):
    adata = read_many([plates["p1"], plates["p2"]], sample_sheets=[plates["s1"], plates["s2"]])
    bc = SHARED_BC[0]  # the same barcode, different cells: each plate's own sheet decides
    assert adata.obs.loc[f"{bc}-plate1", "cell_line"] == "A549"
    assert adata.obs.loc[f"{bc}-plate2", "cell_line"] == "H2228"
    assert adata.obs["cell_line"].notna().all()
    # one sheet may be None
    adata = read_many([plates["p1"], plates["p2"]], sample_sheets=[plates["s1"], None])
    assert adata.obs.loc[adata.obs["batch"] == "plate2", "cell_line"].isna().all()
    assert adata.uns["genodae_read"]["sample_sheets"] == [str(plates["s1"]), ""]


def test_read_many_passes_read_options(plates, tmp_path):
    # cells × genes table with ambiguous names: orientation given once for every file
    for name, seed in (("a.tsv", 1), ("b.tsv", 2)):
        pd.DataFrame(counts(4, 3, seed), index=[f"s{i}" for i in range(4)], columns=["x", "y", "z"]).to_csv(
            tmp_path / name, sep="\t")
    adata = read_many([tmp_path / "a.tsv", tmp_path / "b.tsv"], orientation="samples_by_genes")
    assert adata.shape == (8, 3) and list(adata.var_names) == ["x", "y", "z"]


def test_read_list_goes_to_read_many(plates):
    adata = genodae.read([plates["p1"], plates["p2"]])
    assert list(adata.obs["batch"].cat.categories) == ["plate1", "plate2"]
    assert genodae.read_many is read_many and genodae.read_batches_sheet is read_batches_sheet
    single = genodae.read([plates["tenx"]])
    assert "batch" not in single.obs and single.n_obs == 6


def test_default_batch_names_are_made_unique(tmp_path):
    write_plate(tmp_path / "run1" / "counts.csv", genes(0, 5), barcodes(3, 1), seed=1)
    write_plate(tmp_path / "run2" / "counts.csv", genes(0, 5), barcodes(3, 2), seed=2)
    adata = read_many([tmp_path / "run1" / "counts.csv", tmp_path / "run2" / "counts.csv"])
    assert list(adata.obs["batch"].cat.categories) == ["counts", "counts-1"]


def test_existing_batch_column_with_the_same_values_is_fine(plates, tmp_path):
    a = plates["tenx_adata"].copy()
    a.obs["batch"] = "tenx"
    a.write_h5ad(tmp_path / "tenx.h5ad")
    adata = read_many([plates["p1"], tmp_path / "tenx.h5ad"])
    assert list(adata.obs["batch"].cat.categories) == ["plate1", "tenx"]


# --- batches sheet ----------------------------------------------------------------------------------


def test_batches_sheet_with_per_batch_metadata(plates):
    d = plates["dir"]
    (d / "sheets").mkdir()
    sheet = d / "sheets" / "batches.csv"
    sheet.write_text(
        "path,batch,obs,technology,depth\n"
        "../plate1.csv.gz,P1,../plate1.meta.csv,CEL-seq2,1.5\n"
        "../plate2.csv,,../plate2.meta.csv,CEL-seq2,2\n"
        f"{plates['tenx']},10x,,10x Chromium,3\n"  # absolute path, no sample sheet
    )
    adata = read_batches_sheet(sheet, batch_key="plate")
    assert list(adata.obs["plate"].cat.categories) == ["P1", "plate2", "10x"]  # empty batch: from the file name
    assert adata.obs_names.is_unique
    by = adata.obs.groupby("plate", observed=True)
    assert by["technology"].unique().map(list).to_dict() == {
        "P1": ["CEL-seq2"], "plate2": ["CEL-seq2"], "10x": ["10x Chromium"]}
    assert adata.obs["depth"].dtype.kind == "f"
    assert by["depth"].first().to_dict() == {"P1": 1.5, "plate2": 2.0, "10x": 3.0}
    assert adata.obs.loc[f"{SHARED_BC[0]}-P1", "cell_line"] == "A549"
    assert adata.obs.loc[f"{SHARED_BC[0]}-plate2", "cell_line"] == "H2228"
    assert adata.uns["genodae_read"]["batches_sheet"] == str(sheet)


# --- errors: one line each ---------------------------------------------------------------------------


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as exc:
        fn(*args, **kwargs)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_no_gene_in_common_names_files_and_examples(plates, tmp_path):
    write_plate(tmp_path / "ensembl.csv", ["ENSG00000154529", "ENSG00000204977", "ENSG00000118503"],
                barcodes(3, 5), seed=5)
    msg = _error(read_many, [plates["p1"], tmp_path / "ensembl.csv"])
    assert "No gene is in every file" in msg
    assert "plate1.csv.gz ('GENE000'" in msg and "ensembl.csv ('ENSG00000154529'" in msg
    assert "Ensembl IDs or all symbols" in msg


def test_counts_and_log_values_are_not_mixed(plates, tmp_path):
    logged = plates["tenx_adata"].copy()
    logged.X = np.log1p(logged.X.toarray())
    logged.write_h5ad(tmp_path / "lognorm.h5ad")
    msg = _error(read_many, [plates["p1"], tmp_path / "lognorm.h5ad"])
    assert "raw integer counts in plate1.csv.gz" in msg and "non-integer" in msg and "lognorm.h5ad" in msg


def test_existing_batch_key_with_other_values(plates, tmp_path):
    a = plates["tenx_adata"].copy()
    a.obs["batch"] = "run7"
    a.write_h5ad(tmp_path / "tenx.h5ad")
    msg = _error(read_many, [plates["p1"], tmp_path / "tenx.h5ad"])
    assert "already has an obs column 'batch' with other values ('run7')" in msg and "'tenx'" in msg
    assert "batch_key" in msg
    assert read_many([plates["p1"], tmp_path / "tenx.h5ad"], batch_key="sample").obs["batch"].notna().sum() == 6


def test_batches_sheet_without_path(tmp_path):
    (tmp_path / "b.csv").write_text("file,batch\na.csv,A\nb.csv,B\n")
    msg = _error(read_batches_sheet, tmp_path / "b.csv")
    assert "has no 'path' column (columns: file, batch)" in msg


def test_missing_file_is_named(plates):
    msg = _error(read_many, [plates["p1"], plates["dir"] / "plate9.csv"])
    assert "not found" in msg and "plate9.csv" in msg
    sheet = plates["dir"] / "b.tsv"
    sheet.write_text("path\tbatch\nplate1.csv.gz\tA\nnope.csv\tB\n")
    assert "nope.csv" in _error(read_batches_sheet, sheet)


@pytest.mark.parametrize("paths", [[], ["one"]])
def test_fewer_than_two_files(plates, paths):
    msg = _error(read_many, [plates["p1"] for _ in paths])
    assert "at least 2 files" in msg and "genodae.read" in msg


def test_options_that_belong_to_one_file(plates):
    pair = [plates["p1"], plates["p2"]]
    assert "one per file" in _error(read_many, pair, sample_sheets=[plates["s1"]])
    assert "one entry per file" in _error(read_many, pair, sample_sheets=plates["s1"])
    assert "sample_sheets=" in _error(read_many, pair, sample_sheet=plates["s1"])
    assert "2 batch names for 3 files" in _error(read_many, [*pair, plates["tenx"]], batch_names=["a", "b"])
    assert "list of paths" in _error(read_many, str(plates["p1"]))


# --- command line -----------------------------------------------------------------------------------


def cli(*args) -> int:
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("genodae: ")]
    assert len(lines) == 1, f"expected one error line, got: {text!r}"
    return lines[0]


@pytest.fixture
def stub_prepare(monkeypatch):
    """Record what ``genodae prepare`` hands to pp.prepare (the batch-aware preparation is tested elsewhere)."""
    calls = []

    def prepare(adata, **kwargs):
        calls.append((adata.copy(), kwargs))

    monkeypatch.setattr(genodae.pp, "prepare", prepare)
    return calls


def test_cli_prepare_several_inputs(plates, stub_prepare, tmp_path, caplog):
    out = tmp_path / "out.h5ad"
    with caplog.at_level(logging.INFO, logger="genodae"):
        assert cli("prepare", plates["p1"], plates["p2"], plates["tenx"], "-o", out,
                   "--obs", plates["s1"], "--obs", plates["s2"], "--obs", "") == 0
    adata = anndata.read_h5ad(out)
    assert list(adata.obs["batch"].cat.categories) == ["plate1", "plate2", "tenx"]
    assert adata.obs.loc[f"{SHARED_BC[0]}-plate2", "cell_line"] == "H2228"
    if "batch_key" in {f.name for f in dataclasses.fields(PrepareConfig)}:
        assert stub_prepare[0][1]["batch_key"] == "batch"  # HVGs and scaling become batch-aware too
    assert "obs['batch']" in caplog.text


def test_cli_batches_sheet(plates, stub_prepare, tmp_path):
    sheet = plates["dir"] / "batches.tsv"
    sheet.write_text("path\tobs\tplate_id\nplate1.csv.gz\tplate1.meta.csv\t1\nplate2.csv\tplate2.meta.csv\t2\n")
    out = tmp_path / "out.h5ad"
    assert cli("prepare", "--batches", sheet, "-o", out) == 0
    adata = anndata.read_h5ad(out)
    assert adata.obs.groupby("batch", observed=True)["plate_id"].first().to_dict() == {"plate1": 1, "plate2": 2}
    assert adata.obs["cell_line"].notna().all()


@pytest.mark.skipif("batch_key" not in {f.name for f in dataclasses.fields(PrepareConfig)},
                    reason="PrepareConfig has no batch_key yet")
def test_cli_batch_key_flag(plates, stub_prepare, tmp_path):
    out = tmp_path / "out.h5ad"
    assert cli("prepare", plates["p1"], plates["p2"], "-o", out, "--batch-key", "plate") == 0
    assert list(anndata.read_h5ad(out).obs["plate"].cat.categories) == ["plate1", "plate2"]
    assert stub_prepare[0][1]["batch_key"] == "plate"


@pytest.mark.skipif("batch_key" not in inspect.signature(genodae.pp.prepare).parameters,
                    reason="pp.prepare is not batch-aware yet")
def test_cli_prepare_several_inputs_end_to_end(plates, tmp_path):
    out = tmp_path / "prepared.h5ad"
    assert cli("prepare", plates["p1"], plates["p2"], plates["tenx"], "-o", out, "--n-top-genes", "5") == 0
    adata = anndata.read_h5ad(out)
    assert adata.n_obs == 16 and "batch" in adata.obs


def test_cli_errors_are_one_line(plates, stub_prepare, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    cases = [
        (["prepare", plates["p1"], plates["p2"], "-o", out, "--obs", plates["s1"]], "--obs given 1 time(s) for 2"),
        (["prepare", plates["p1"], plates["dir"] / "gone.csv", "-o", out], "gone.csv"),
        (["prepare", plates["p1"], "--batches", plates["s1"], "-o", out], "not both"),
        (["prepare", "-o", out], "no input"),
        (["prepare", plates["p1"], plates["p2"], "-o", plates["p2"]], "is the input file"),
        (["prepare", "--batches", plates["s1"], "-o", out], "no 'path' column"),
        (["prepare", plates["p1"], plates["p2"], "-o", out, "--cls", plates["s1"]], "--cls belongs to one file"),
        (["run", plates["p1"], plates["dir"] / "gone.csv", "-o", tmp_path / "run"], "gone.csv"),
    ]
    for args, expected in cases:
        capsys.readouterr()
        assert cli(*args) == 2, args
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"genodae {args[0]}: error:") and expected in line, line
    assert not out.exists() and not (tmp_path / "run").exists()
    assert stub_prepare == []


# --- the three CEL-seq2 plates (real data) -----------------------------------------------------------


def test_celseq2_plates(shared_data):
    d = shared_data / "scrna"
    counts_ = [d / f"sc_celseq2_5cl_p{i}.count.csv.gz" for i in (1, 2, 3)]
    sheets = [d / f"sc_celseq2_5cl_p{i}.metadata.csv.gz" for i in (1, 2, 3)]
    if not all(p.is_file() for p in counts_ + sheets):
        pytest.skip(f"CEL-seq2 plates not found in {d}")
    # each plate's metadata has its own 'batch' column (sc_Celseq2_5cl_p1…), so the files go to obs['plate']
    adata = read_many(counts_, batch_key="plate", sample_sheets=sheets)
    n_cells = [len(pd.read_csv(s, usecols=[0])) for s in sheets]
    assert adata.n_obs == sum(n_cells) == 909
    assert list(adata.obs["plate"].cat.categories) == [f"sc_celseq2_5cl_p{i}.count" for i in (1, 2, 3)]
    assert adata.obs["plate"].value_counts().sort_index().tolist() == n_cells
    assert adata.obs["cell_line_demuxlet"].notna().all()
    assert adata.obs_names.is_unique and adata.obs_names[0].endswith("-sc_celseq2_5cl_p1.count")
    assert adata.n_vars == 12_653  # genes in all three plates (15,564, 14,078 and 13,426 per plate)


@pytest.mark.parametrize(("path", "name"), [
    ("dir/plate1.count.csv.gz", "plate1.count"),
    ("/data/sampleA/outs/filtered_feature_bc_matrix.h5", "sampleA"),
    ("run1/Solo.out/Gene/filtered", "run1"),
    ("geo/p3/matrix.mtx.gz", "p3"),
    ("kb/s1/counts_unfiltered/cells_x_genes.mtx", "s1"),
    ("a.h5ad", "a"),
])
def test_batch_names_skip_pipeline_folder_names(path, name):
    """Several Cell Ranger/STARsolo/kb outputs name their batches after the sample folder, not 'outs', 'outs-1' …"""
    from genodae.io._multi import _batch_name_from_path

    assert _batch_name_from_path(Path(path)) == name


def test_read_many_refuses_a_file_given_twice_and_prepared_files(tmp_path):
    from conftest import make_counts

    a = make_counts(n_cells=60, n_genes=40, seed=1)
    a.write_h5ad(tmp_path / "a.h5ad")
    make_counts(n_cells=50, n_genes=40, seed=2).write_h5ad(tmp_path / "b.h5ad")
    with pytest.raises(UserError, match=r"a\.h5ad is given twice \(also as .*a\.h5ad\): every cell would be read twice"):
        genodae.read_many([tmp_path / "a.h5ad", tmp_path / "." / "a.h5ad"])
    genodae.pp.prepare(a)
    genodae.io.write_h5ad(a, tmp_path / "prepared.h5ad")
    with pytest.raises(UserError, match=r"prepared\.h5ad is already prepared \(uns\['genodae_prepare'\]\); give the raw"):
        genodae.read_many([tmp_path / "prepared.h5ad", tmp_path / "b.h5ad"])


# --- bad sheets and gene IDs (tester's defects 1, 2, 4) -------------------------------------------------


def test_batches_sheet_listing_itself_is_named_not_read_as_data(plates):
    """A sheet line whose path resolves to the sheet itself (a 'missing' file that has the sheet's name) is said
    so, with the line; the sheet is never read as expression data."""
    sheet = plates["dir"] / "missing.csv"
    sheet.write_text("path,batch\nplate2.csv,p1\nmissing.csv,p2\n")
    msg = _error(read_batches_sheet, sheet)
    assert "line 3" in msg and "'missing.csv' is the batches sheet itself" in msg
    assert "non-numeric" not in msg


def test_batches_sheet_missing_file_names_the_line(plates):
    sheet = plates["dir"] / "sheet.csv"
    sheet.write_text("path,batch\nplate2.csv,p1\nnot_there.csv,p2\n")
    msg = _error(read_batches_sheet, sheet)
    assert msg.startswith("Input file(s) not found") and "not_there.csv (line 3)" in msg
    assert "relative to the sheet's folder" in msg


def test_batches_sheet_given_as_an_input_is_recognised(plates):
    sheet = plates["dir"] / "sheet.csv"
    sheet.write_text("path,batch\nplate1.csv.gz,p1\nplate2.csv,p2\n")
    msg = _error(genodae.read, sheet)
    assert "is a batches sheet" in msg and "--batches" in msg and "read_batches_sheet" in msg
    msg = _error(read_many, [plates["p2"], sheet])
    assert "is a batches sheet" in msg


def test_ensembl_version_suffixes_are_named_with_the_fix(tmp_path):
    ids = ["ENSG00000154529", "ENSG00000204977", "ENSG00000118503", "ENSG00000141510"]
    write_plate(tmp_path / "plain.csv", ids, barcodes(3, 5), seed=5)
    write_plate(tmp_path / "versioned.csv", [i + ".5" for i in ids], barcodes(3, 6), seed=6)
    msg = _error(read_many, [tmp_path / "plain.csv", tmp_path / "versioned.csv"])
    assert "versioned.csv carry version suffixes" in msg and "those in plain.csv do not" in msg
    assert "str.replace" in msg and "Ensembl IDs or all symbols" not in msg


def test_ensembl_ids_with_other_version_suffixes_are_named_with_the_fix(tmp_path):
    ids = ["ENSG00000154529", "ENSG00000204977", "ENSG00000118503", "ENSG00000141510"]
    write_plate(tmp_path / "v5.csv", [i + ".5" for i in ids], barcodes(3, 5), seed=5)
    write_plate(tmp_path / "v6.csv", [i + ".6" for i in ids], barcodes(3, 6), seed=6)
    msg = _error(read_many, [tmp_path / "v5.csv", tmp_path / "v6.csv"])
    assert "differ only in their version suffixes (.N; 4 genes would match without them)" in msg
    assert "str.replace" in msg and "Ensembl IDs or all symbols" not in msg


def test_genes_lost_only_to_other_version_suffixes_are_warned_about(tmp_path):
    ids = [f"ENSG{100000 + i:011d}" for i in range(40)]
    write_plate(tmp_path / "v5.csv", [i + ".5" for i in ids], barcodes(3, 5), seed=5)
    write_plate(tmp_path / "mixed.csv", [i + (".5" if k % 2 else ".6") for k, i in enumerate(ids)], barcodes(3, 6),
                seed=6)
    with pytest.warns(UserWarning, match=r"20 genes are left out only because their Ensembl version suffixes \(\.N\) "
                      r"differ between the files .*remove the suffixes"):
        adata = read_many([tmp_path / "v5.csv", tmp_path / "mixed.csv"])
    assert adata.n_vars == 20


def test_one_negative_count_in_one_file_is_named_not_called_log_scale(plates, tmp_path):
    t = write_plate(tmp_path / "neg.csv", genes(0, 100), barcodes(5, 7), seed=7)  # 500 entries
    t.iloc[3, 1] = -5
    t.to_csv(tmp_path / "neg.csv")
    msg = _error(read_many, [plates["p1"], tmp_path / "neg.csv"])
    assert "integer counts" in msg and "negative" in msg and repr(t.index[3]) in msg and repr(t.columns[1]) in msg
    assert "non-integer" not in msg and "--input-kind" not in msg


def test_batches_sheet_giving_two_files_one_batch_warns(plates, caplog):
    sheet = plates["dir"] / "sheet.csv"
    sheet.write_text("path,batch\nplate1.csv.gz,p1\nplate2.csv,p1\n")
    with caplog.at_level(logging.WARNING, logger="genodae"):
        adata = read_batches_sheet(sheet)
    assert "plate1.csv.gz, plate2.csv share the batch 'p1'" in caplog.text
    assert adata.obs_names.is_unique and list(adata.obs["batch"].cat.categories) == ["p1"]
