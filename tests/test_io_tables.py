"""genodae.io text tables as users really have them (issue 13): pipeline count tables (HTSeq-count,
featureCounts), UTF-8 byte-order marks, European Excel CSV, numeric-looking identifiers, orientation of
non-model organisms, and sample-sheet columns that must survive .h5ad. Every input is generated here."""

from __future__ import annotations

import gzip
import logging
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from genodae.errors import UserError
from genodae.io import OrientationWarning, read, read_batches_sheet, write_h5ad

BOM = "\ufeff"


def dense(X) -> np.ndarray:
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding=encoding) as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding=encoding)
    return path


GENES = ["ENSG00000000003", "ENSG00000000005", "ENSG00000000419", "ENSG00000000457"]
COUNTERS = {"__no_feature": 120, "__ambiguous": 7, "__too_low_aQual": 3, "__not_aligned": 50,
            "__alignment_not_unique": 80}


# ---- HTSeq-count ----------------------------------------------------------------------------------


def test_htseq_single_sample_file_drops_counters_and_says_so(tmp_path, caplog):
    lines = [f"{g}\t{c}" for g, c in zip(GENES, [10, 0, 5, 3], strict=True)]
    lines += [f"{k}\t{v}" for k, v in COUNTERS.items()]
    path = write(tmp_path / "sampleA.counts.txt", "\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="genodae"):
        adata = read(path)
    assert adata.shape == (1, 4)
    assert list(adata.var_names) == GENES  # the first line is a gene, not a header
    assert list(adata.obs_names) == ["sampleA"]
    np.testing.assert_array_equal(dense(adata.X), [[10, 0, 5, 3]])
    assert not any(v.startswith("__") for v in adata.var_names)
    assert "dropped HTSeq-count's 5 counter rows" in caplog.text and "__no_feature 120" in caplog.text


def test_htseq_file_with_counts_extension(tmp_path):
    path = write(tmp_path / "s1.htseq.counts", "Gnai3\t4\nPbsn\t0\nCdc45\t9\n__no_feature\t2\n__ambiguous\t1\n")
    adata = read(path)
    assert list(adata.obs_names) == ["s1"] and list(adata.var_names) == ["Gnai3", "Pbsn", "Cdc45"]


def test_htseq_merged_table_drops_counters(tmp_path, caplog):
    rows = [f"{g}\t{i}\t{i + 1}\t{2 * i}" for i, g in enumerate(GENES)]
    rows += [f"{k}\t{v}\t{v}\t{v}" for k, v in COUNTERS.items()]
    path = write(tmp_path / "merged.tsv", "gene\tA\tB\tC\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="genodae"):
        adata = read(path)
    assert adata.shape == (3, 4) and list(adata.obs_names) == ["A", "B", "C"]
    assert list(adata.var_names) == GENES
    assert "__alignment_not_unique 240" in caplog.text  # total over the three samples
    assert "HTSeq" in adata.uns["genodae_read"]["orientation_reason"]


# ---- featureCounts --------------------------------------------------------------------------------

FC = (
    '# Program:featureCounts v2.0.3; Command:"featureCounts" "-a" "genes.gtf" "-o" "counts.txt" '
    '"/data/run1/sampleA.sorted.bam" "/data/run1/sampleB.sorted.bam"\n'
    "Geneid\tChr\tStart\tEnd\tStrand\tLength\t/data/run1/sampleA.sorted.bam\t/data/run1/sampleB.sorted.bam\n"
    "ENSG00000223972\tchr1;chr1;chr1\t11869;12010;12179\t12227;12057;12227\t+;+;+\t1735\t0\t2\n"
    "ENSG00000227232\tchr1\t14404\t14501\t-\t1351\t35\t41\n"
    "ENSG00000243485\tchr1;chr1\t29554;30267\t30039;30667\t+;+\t1021\t1\t0\n"
)


def test_featurecounts_output(tmp_path):
    adata = read(write(tmp_path / "counts.txt", FC))
    assert adata.shape == (2, 3)
    assert list(adata.obs_names) == ["sampleA", "sampleB"]
    assert list(adata.var_names) == ["ENSG00000223972", "ENSG00000227232", "ENSG00000243485"]
    np.testing.assert_array_equal(dense(adata.X), [[0, 35, 1], [2, 41, 0]])
    assert list(adata.var["length"]) == [1735, 1351, 1021]
    assert not {"Chr", "Start", "End", "Strand", "Length"} & set(adata.obs_names)
    assert adata.obs["file"].iloc[0] == "/data/run1/sampleA.sorted.bam"
    assert adata.uns["genodae_read"]["format"] == "featurecounts"


def test_featurecounts_names_kept_unique(tmp_path):
    text = FC.replace("/data/run1/sampleB.sorted.bam", "/data/run2/sampleA.sorted.bam")
    adata = read(write(tmp_path / "counts.txt", text))
    assert adata.obs_names.is_unique and len(adata.obs_names) == 2


def test_featurecounts_summary_is_refused_with_the_counts_file(tmp_path):
    write(tmp_path / "counts.txt", FC)
    summary = write(
        tmp_path / "counts.txt.summary",
        "Status\t/data/run1/sampleA.sorted.bam\t/data/run1/sampleB.sorted.bam\nAssigned\t36\t43\n"
        "Unassigned_Unmapped\t5\t3\n",
    )
    with pytest.raises(UserError, match=r"featureCounts summary .*counts\.txt, next to it"):
        read(summary)
    renamed = write(tmp_path / "summary.tsv", summary.read_text())
    with pytest.raises(UserError, match="featureCounts summary"):
        read(renamed)


def test_star_reads_per_gene_is_refused(tmp_path):
    text = "N_unmapped\t10\t10\t10\nN_multimapping\t5\t5\t5\nN_noFeature\t3\t40\t2\nN_ambiguous\t1\t0\t0\n"
    text += "ENSG00000000003\t4\t0\t4\n"
    with pytest.raises(UserError, match="STAR ReadsPerGene.out.tab.*not three samples"):
        read(write(tmp_path / "ReadsPerGene.out.tab", text))


# ---- byte-order marks -----------------------------------------------------------------------------


def _table_text(sep=","):
    return sep.join(["gene", "sample_1", "sample_2"]) + "\n" + "\n".join(
        sep.join([g, str(i + 0.5), str(i + 1.25)]) for i, g in enumerate(GENES)) + "\n"


@pytest.mark.parametrize("name,sep", [("t.csv", ","), ("t.tsv", "\t"), ("t.csv.gz", ","), ("t.txt", "\t")])
def test_bom_on_plain_tables(tmp_path, name, sep):
    adata = read(write(tmp_path / name, BOM + _table_text(sep)))
    assert list(adata.obs_names) == ["sample_1", "sample_2"] and list(adata.var_names) == GENES
    assert adata.X[0, 0] == pytest.approx(0.5)


def test_bom_on_samples_by_genes_table_first_sample_name(tmp_path):
    text = BOM + "sample,ENSG00000000003,ENSG00000000005\nS01,1,2\nS02,3,4\n"
    adata = read(write(tmp_path / "t.csv", text))
    assert list(adata.obs_names) == ["S01", "S02"] and list(adata.var_names) == GENES[:2]


def test_bom_on_gct(tmp_path):
    text = BOM + "#1.2\n2\t2\nName\tDescription\tS1\tS2\nENSG00000000003\tTSPAN6\t1.5\t2\nENSG00000000005\tTNMD\t3\t4\n"
    adata = read(write(tmp_path / "t.gct", text))
    assert adata.shape == (2, 2) and list(adata.obs_names) == ["S1", "S2"]
    assert list(adata.var["description"]) == ["TSPAN6", "TNMD"]


def test_bom_on_gsea_txt(tmp_path):
    text = BOM + "NAME\tDESCRIPTION\tS1\tS2\nTP53\tna\t1.5\t2\nMDM2\tna\t3\t4\n"
    adata = read(write(tmp_path / "P53.txt", text))
    assert adata.uns["genodae_read"]["format"] == "gsea"
    assert list(adata.var_names) == ["TP53", "MDM2"] and list(adata.obs_names) == ["S1", "S2"]


def test_bom_on_sample_sheet_key_column(tmp_path):
    table = write(tmp_path / "t.csv", _table_text())
    sheet = write(tmp_path / "sheet.csv", BOM + "sample,group\nsample_1,a\nsample_2,b\n")
    adata = read(table, sample_sheet=sheet)
    assert list(adata.obs["group"]) == ["a", "b"]
    sheet2 = write(tmp_path / "sheet2.csv", BOM + "id,group\nsample_1,a\nsample_2,b\n")  # key = first column
    assert list(read(table, sample_sheet=sheet2).obs["group"]) == ["a", "b"]


def test_bom_on_batches_sheet(tmp_path):
    write(tmp_path / "p1.csv", _table_text())
    write(tmp_path / "p2.csv", _table_text())
    sheet = write(tmp_path / "batches.csv", BOM + "path,batch,technology\np1.csv,one,x\np2.csv,two,y\n")
    adata = read_batches_sheet(sheet, batch_key="plate")
    assert list(adata.obs["plate"].cat.categories) == ["one", "two"]
    assert set(adata.obs["technology"]) == {"x", "y"}


def test_bom_on_workflow_dataset_sheet_and_read_options(tmp_path):
    """config/datasets.tsv saved by Excel (a byte-order mark) is read as if it had none; its options column
    passes --delimiter/--decimal by name to genodae prepare."""
    from test_workflow import make_clone, snakemake

    work = make_clone(tmp_path / "clone")
    write(work / "euro.csv", EURO)
    (work / "config" / "datasets.tsv").write_text(
        BOM + "name\tpath\toptions\neuro\teuro.csv\tdelimiter=semicolon; decimal=comma; orientation=genes_by_samples\n",
        encoding="utf-8")
    out = snakemake(work, "-n", "--forceall", "-p").stdout
    line = next(x for x in out.splitlines() if "genodae prepare" in x and "euro.csv" in x)
    assert "--delimiter semicolon" in line and "--decimal comma" in line, line
    (work / "config" / "datasets.tsv").write_text("name\tpath\toptions\neuro\teuro.csv\tdecimal=;\n")
    res = snakemake(work, "-n", check=False)
    assert res.returncode != 0


# ---- European Excel CSV ---------------------------------------------------------------------------

EURO = "gene;sample_1;sample_2\nENSG00000000003;1,5;2\nENSG00000000005;-0,25;3,75\nENSG00000000419;4;5,5\n"


@pytest.mark.parametrize("bom", ["", BOM])
def test_european_csv_detected(tmp_path, bom):
    adata = read(write(tmp_path / "euro.csv", bom + EURO))
    assert adata.shape == (2, 3) and list(adata.obs_names) == ["sample_1", "sample_2"]
    np.testing.assert_allclose(dense(adata.X), [[1.5, -0.25, 4], [2, 3.75, 5.5]])


def test_european_csv_given_explicitly(tmp_path):
    path = write(tmp_path / "euro.txt", EURO)
    adata = read(path, delimiter="semicolon", decimal="comma")
    np.testing.assert_allclose(dense(adata.X)[0], [1.5, -0.25, 4])
    adata = read(path, delimiter=";", decimal=",")
    np.testing.assert_allclose(dense(adata.X)[1], [2, 3.75, 5.5])


def test_semicolon_with_decimal_points(tmp_path):
    adata = read(write(tmp_path / "semi.csv", EURO.replace(",", ".")))
    np.testing.assert_allclose(dense(adata.X)[0], [1.5, -0.25, 4])


def test_bad_delimiter_and_decimal_values(tmp_path):
    path = write(tmp_path / "t.csv", _table_text())
    with pytest.raises(UserError, match="delimiter='x' is not valid"):
        read(path, delimiter="x")
    with pytest.raises(UserError, match="decimal=';' is not valid"):
        read(path, decimal=";")
    with pytest.raises(UserError, match="decimal mark and the delimiter are both ',': leave out --decimal"):
        read(path, decimal=",")


def test_wrong_delimiter_advice_names_real_options(tmp_path):
    path = write(tmp_path / "t.csv", _table_text())
    with pytest.raises(UserError, match="only one column") as err:
        read(path, delimiter="|")
    msg = str(err.value)
    assert "--delimiter" in msg and "pass delimiter=" not in msg and "\n" not in msg


# ---- numeric-looking identifiers ------------------------------------------------------------------


def test_entrez_ids_with_a_blank_stay_text(tmp_path, caplog):
    text = "entrez,sample_1,sample_2\n30085,1,2\n,3,4\n7157,5,6\n4193,7,8\n"
    with caplog.at_level(logging.WARNING, logger="genodae"):
        adata = read(write(tmp_path / "entrez.csv", text), orientation="genes_by_samples")
    assert list(adata.var_names) == ["30085", "7157", "4193"]  # never 30085.0, never nan
    np.testing.assert_array_equal(dense(adata.X)[:, 0], [1, 2])
    assert "dropped 1 row(s) with no identifier" in caplog.text


def test_zero_padded_sample_ids_stay_text(tmp_path):
    genes = ",".join(GENES)
    text = f"id,{genes}\n0001,1,2,3,4\n0002,5,6,7,8\n0010,0,0,1,0\n"
    adata = read(write(tmp_path / "padded.csv", text))
    assert list(adata.obs_names) == ["0001", "0002", "0010"]
    sheet = write(tmp_path / "sheet.csv", "sample,group\n0001,a\n0002,b\n0010,c\n")
    adata = read(tmp_path / "padded.csv", sample_sheet=sheet)
    assert list(adata.obs["group"]) == ["a", "b", "c"]
    # zero-padded sample IDs in the header (genes × samples)
    t = pd.DataFrame([[1, 2], [3, 4]], index=GENES[:2], columns=["0001", "0002"])
    t.to_csv(tmp_path / "gxs.csv")
    assert list(read(tmp_path / "gxs.csv").obs_names) == ["0001", "0002"]


# ---- orientation ----------------------------------------------------------------------------------


def _locus_table(n_samples=6, n_genes=40):
    rng = np.random.default_rng(0)
    samples = [f"GSM2086{21 + i}.CEL" for i in range(n_samples)]
    genes = [f"PA{i + 1:04d}" for i in range(n_genes)]
    return pd.DataFrame(rng.normal(8, 1, (n_samples, n_genes)).round(3), index=samples, columns=genes)


def test_bacterial_locus_tags_and_cel_names(tmp_path):
    frame = _locus_table()
    frame.to_csv(tmp_path / "pao1.csv")
    adata = read(tmp_path / "pao1.csv")
    assert adata.uns["genodae_read"]["orientation"] == "samples_by_genes"
    assert adata.shape == (6, 40) and adata.obs_names[0] == "GSM208621.CEL" and adata.var_names[0] == "PA0001"
    frame.T.to_csv(tmp_path / "pao1_t.csv")
    assert read(tmp_path / "pao1_t.csv").obs_names[0] == "GSM208621.CEL"


@pytest.mark.parametrize("tags", [["b0001", "b0002", "b0003"], ["Rv0001", "Rv0002c", "Rv0003"],
                                  ["PA14_00010", "PA14_00020", "PA14_00030"], ["YAL001C", "YAL002W", "YAL003W"],
                                  ["AT1G01010", "AT1G01020", "AT1G01030"]])
def test_other_model_organism_ids_are_genes(tmp_path, tags):
    frame = pd.DataFrame([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], index=tags, columns=["ctrl_1", "treat_1"])
    frame.to_csv(tmp_path / "t.csv")
    assert list(read(tmp_path / "t.csv").var_names) == tags


def test_undecided_names_decided_by_a_bulk_shape(tmp_path):
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    genes = ["".join(rng.choice(letters, 3 + i % 5)) + "x" for i in range(200)]  # look like nothing
    frame = pd.DataFrame(rng.normal(size=(200, 4)), index=genes, columns=["alpha", "beta", "gamma", "delta"])
    frame.to_csv(tmp_path / "t.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrientationWarning)
        adata = read(tmp_path / "t.csv")
    assert adata.shape == (4, 200)
    assert "shape" in adata.uns["genodae_read"]["orientation_reason"]
    frame.T.to_csv(tmp_path / "t2.csv")
    assert read(tmp_path / "t2.csv").shape == (4, 200)


def test_undecided_names_decided_by_the_sample_sheet(tmp_path):
    frame = pd.DataFrame(np.arange(9.0).reshape(3, 3), index=["x1a", "y2b", "z3c"], columns=["foo", "bar", "baz"])
    frame.to_csv(tmp_path / "t.csv")
    sheet = write(tmp_path / "s.csv", "name,group\nx1a,a\ny2b,b\nz3c,c\n")
    adata = read(tmp_path / "t.csv", sample_sheet=sheet)
    assert list(adata.obs_names) == ["x1a", "y2b", "z3c"]


def test_undecided_is_an_orientation_warning_in_the_library(tmp_path):
    frame = pd.DataFrame(np.arange(9.0).reshape(3, 3), index=["x1a", "y2b", "z3c"], columns=["foo", "bar", "baz"])
    frame.to_csv(tmp_path / "t.csv")
    with pytest.warns(OrientationWarning, match="Cannot tell .*--orientation"):
        read(tmp_path / "t.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrientationWarning)
        with pytest.raises(OrientationWarning):
            read(tmp_path / "t.csv")


def test_undecided_is_an_error_in_the_cli(tmp_path, capsys):
    from genodae.cli import main

    frame = pd.DataFrame(np.arange(1, 10.0).reshape(3, 3), index=["x1a", "y2b", "z3c"],
                         columns=["foo", "bar", "baz"])
    frame.to_csv(tmp_path / "t.csv")
    rc = main(["prepare", str(tmp_path / "t.csv"), "-o", str(tmp_path / "p.h5ad")])
    err = capsys.readouterr().err
    assert rc != 0 and not (tmp_path / "p.h5ad").exists()
    assert "cannot tell whether its rows or its columns are genes" in err
    assert "--orientation genes_by_samples" in err and "Traceback" not in err


def test_cli_read_options_reach_read(tmp_path):
    """--delimiter/--decimal exist on every command that reads, and reach genodae.read."""
    from genodae import cli

    path = write(tmp_path / "euro.txt", EURO)
    parser = cli.build_parser() if hasattr(cli, "build_parser") else cli._parser()
    for command in (["prepare", str(path), "-o", "x.h5ad"], ["run", str(path), "-o", "out"],
                    ["embed", str(path), "model", "-o", "e.h5ad"], ["map", str(path), "model", "-o", "m"]):
        args = parser.parse_args([*command, "--delimiter", "semicolon", "--decimal", "comma"])
        assert args.delimiter == "semicolon" and args.decimal == "comma"
    args = parser.parse_args(["prepare", str(path), "-o", "x.h5ad", "--delimiter", "semicolon",
                              "--decimal", "comma"])
    adata = cli._read(args)
    np.testing.assert_allclose(dense(adata.X)[0], [1.5, -0.25, 4])


# ---- sample sheets: every column survives .h5ad ---------------------------------------------------


def test_sheet_columns_are_written_to_h5ad_cleanly(tmp_path):
    table = write(tmp_path / "t.csv", _table_text().replace("sample_2", "sample_2,sample_3").replace(
        "\n", "\n", 1))
    frame = pd.DataFrame(np.arange(12.0).reshape(4, 3) + 0.5, index=GENES, columns=["0001", "0002", "0003"])
    frame.to_csv(table)
    sheet = write(
        tmp_path / "sheet.tsv",
        BOM + "sample\tflag\tn_cells\tmixed\tdate\tempty\tratio\n"
        "0001\tTRUE\t12\ta\t2021-03-04\t\t0.5\n"
        "0002\t\t\t3\t2021-03-05\t\t\n"
        "0003\tFALSE\t7\t4.5\t\t\t1\n",
    )
    adata = read(table, sample_sheet=sheet)
    assert list(adata.obs_names) == ["0001", "0002", "0003"]
    assert str(adata.obs["flag"].dtype) == "boolean" and str(adata.obs["n_cells"].dtype) == "Int64"
    out = tmp_path / "o.h5ad"
    write_h5ad(adata, out)
    back = anndata.read_h5ad(out)
    assert back.obs.loc["0001", "flag"] is True or bool(back.obs.loc["0001", "flag"]) is True
    assert pd.isna(back.obs.loc["0002", "flag"]) and bool(back.obs.loc["0003", "flag"]) is False
    assert int(back.obs.loc["0003", "n_cells"]) == 7 and pd.isna(back.obs.loc["0002", "n_cells"])
    assert [str(x) for x in back.obs["mixed"]] == ["a", "3", "4.5"]
    assert str(back.obs.loc["0001", "date"]) == "2021-03-04" and pd.isna(back.obs.loc["0003", "date"])
    assert back.obs["empty"].isna().all()
    assert back.obs.loc["0001", "ratio"] == pytest.approx(0.5)


def test_sheet_with_python_mixed_objects_is_storable(tmp_path):
    """A column pandas reads as mixed objects (numbers and text in chunks) becomes text."""
    from genodae.io._sheets import _storable_columns

    df = pd.DataFrame({"m": [1, "a", np.nan, 2.5], "b": [True, np.nan, False, True],
                       "d": pd.to_datetime(["2020-01-01", None, "2020-01-03", "2020-01-04"])},
                      index=list("wxyz"))
    out = _storable_columns(df)
    assert out["m"].tolist()[:2] == ["1", "a"] and pd.isna(out["m"].iloc[2])
    assert str(out["b"].dtype) == "boolean"
    assert out["d"].iloc[0] == "2020-01-01T00:00:00" and pd.isna(out["d"].iloc[1])
    adata = anndata.AnnData(np.ones((4, 1), dtype=np.float32), obs=out)
    write_h5ad(adata, tmp_path / "m.h5ad")
    assert anndata.read_h5ad(tmp_path / "m.h5ad").obs["m"].astype(str).tolist()[1] == "a"


def test_leading_text_columns_are_annotation_nfcore_merged_counts(tmp_path):
    """nf-core/rnaseq's salmon.merged.gene_counts.tsv: gene_id, gene_name, then one column per sample. gene_name is
    not a sample: it goes to var; a text value inside a sample column is still an error."""
    rng = np.random.default_rng(0)
    genes = [f"ENSG{i:011d}" for i in range(40)]
    df = pd.DataFrame(rng.gamma(0.5, 200, (40, 4)).round(3), index=pd.Index(genes, name="gene_id"),
                      columns=["S1", "S2", "S3", "S4"])
    df.insert(0, "gene_name", [f"GENE{i}" for i in range(40)])
    path = tmp_path / "salmon.merged.gene_counts.tsv"
    df.to_csv(path, sep="\t")
    a = read(path)
    assert a.shape == (4, 40) and list(a.obs_names) == ["S1", "S2", "S3", "S4"]
    assert a.var.loc["ENSG00000000003", "gene_name"] == "GENE3"
    np.testing.assert_allclose(np.asarray(a.X[1, 2]), df.loc[genes[2], "S2"], rtol=1e-6)
    df.iloc[5, 2] = "oops"
    df.to_csv(path, sep="\t")
    with pytest.raises(UserError, match="non-numeric value 'oops'"):
        read(path)


def test_short_barcodes_with_a_gem_well_suffix_are_not_gene_symbols():
    from genodae.io._orientation import _label_kind

    assert _label_kind("AAACCTG0000-1")[0] == "cell barcodes"
    for symbol in ("GAPDH", "ACTB", "CTAGE15", "HLA-A", "NKX2-1"):
        assert _label_kind(symbol)[0] == "human gene symbols", symbol
