"""What the values are (issue 13): raw counts, estimated counts, linear scale, log scale, z-scores; a processed
.h5ad's layers; the embed-time scale check; and writing every kind of metadata to .h5ad without a traceback.

Every input is generated here, in a realistic shape; two real files come from the shared data (skipped when
absent)."""

from __future__ import annotations

import datetime
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from conftest import make_counts
from scipy import sparse

import genodae
from genodae import cli
from genodae.errors import UserError
from genodae.io import write_h5ad
from genodae.pp import PREP_KEY, decide_value_kind, prepare, value_evidence

REPO = Path(__file__).resolve().parents[1]
GENES = 400


def _frame(X, prefix="S") -> anndata.AnnData:
    X = np.asarray(X, dtype=np.float32)
    return anndata.AnnData(X, obs=pd.DataFrame(index=[f"{prefix}{i:02d}" for i in range(X.shape[0])]),
                           var=pd.DataFrame(index=[f"GENE{j:04d}" for j in range(X.shape[1])]))


def _bulk_counts(n=12, genes=GENES, seed=0, fold=(0.4, 2.4)) -> np.ndarray:
    """Bulk RNA-seq counts: per-gene means spanning five decades, libraries differing about six-fold."""
    rng = np.random.default_rng(seed)
    base = rng.lognormal(3.0, 2.2, size=genes)
    base[: genes // 10] = 0.02  # unexpressed genes: mostly zeros
    lib = np.linspace(*fold, n)[:, None]
    mu = base * lib
    return rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float64)


def estimated_counts(seed=0) -> anndata.AnnData:
    """salmon/RSEM NumReads: fractional (multi-mapping reads split), range in the tens of thousands."""
    rng = np.random.default_rng(seed)
    c = _bulk_counts(seed=seed)
    frac = c * rng.uniform(0.85, 1.15, size=c.shape)
    frac[c == 0] = 0
    return _frame(np.round(frac, 3))


def tpm(seed=0) -> anndata.AnnData:
    rng = np.random.default_rng(seed)
    c = _bulk_counts(seed=seed)
    length = rng.uniform(0.5, 8.0, size=c.shape[1])  # kb
    rate = c / length
    return _frame(rate / rate.sum(axis=1, keepdims=True) * 1e6)


def log2_microarray(seed=0) -> anndata.AnnData:
    rng = np.random.default_rng(seed)
    return _frame(np.clip(rng.normal(rng.uniform(3, 13, GENES), 0.6, size=(30, GENES)), 1, 15))


def log_ratios(seed=0) -> anndata.AnnData:
    """Two-colour microarray log2 ratios: negatives, each gene its own mean and spread."""
    rng = np.random.default_rng(seed)
    return _frame(rng.normal(rng.normal(0, 0.8, GENES), rng.uniform(0.2, 2.5, GENES), size=(30, GENES)))


def zscores(seed=0) -> anndata.AnnData:
    a = log2_microarray(seed)
    X = a.X
    a.X = ((X - X.mean(0)) / X.std(0, ddof=1)).astype(np.float32)
    return a


def processed_h5ad(seed=0, with_counts=True) -> anndata.AnnData:
    """What scanpy's tutorial leaves: X scaled (z-scores clipped at 10), .raw log-normalised, layers['counts']."""
    import scanpy as sc

    a = make_counts(n_cells=200, n_genes=150, seed=seed)
    if with_counts:
        a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    a.raw = a
    a.X = a.X.toarray()  # scaling makes X dense anyway
    sc.pp.scale(a, max_value=10)
    return a


def prep_record(a) -> dict:
    return a.uns[PREP_KEY]


# ---- the decision ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "kind"), [
    (lambda: _frame(_bulk_counts()), "counts"),
    (estimated_counts, "estimated_counts"),
    (tpm, "linear"),
    (log2_microarray, "log"),
    (log_ratios, "log"),
    (zscores, "zscore"),
])
def test_value_kind_of_generated_data(make, kind):
    assert decide_value_kind(value_evidence(make().X)) == kind


def clipped_rare_gene_zscores() -> anndata.AnnData:
    """scanpy's scale(max_value=10) of data where 40 % of the genes are rare (in 3 of 1,000 cells): their z-scores
    (~18) are clipped at 10, so their mean and sd are no longer 0 and 1."""
    import scanpy as sc

    rng = np.random.default_rng(3)
    n, g = 1000, 100
    X = rng.poisson(rng.uniform(1, 20, g), size=(n, g)).astype(np.float32)
    for j in range(60, 100):
        X[:, j] = 0
        X[rng.choice(n, 3, replace=False), j] = rng.integers(1, 5, 3)
    a = _frame(X)
    sc.pp.log1p(a)
    sc.pp.scale(a, max_value=10)
    return a


def test_clipped_zscores_of_rare_genes_are_still_zscores(tmp_path):
    a = clipped_rare_gene_zscores()
    ev = value_evidence(a.X)
    assert ev["fraction_genes_capped"] == pytest.approx(0.4)  # the rare genes reach the cap
    assert ev["fraction_genes_mean0_sd1"] == 1.0 and decide_value_kind(ev) == "zscore"
    # without the cap rule only 60 % of the genes would pass the 90 % rule
    sd = a.X.std(axis=0)
    assert np.mean((np.abs(a.X.mean(axis=0)) < 0.05) & (np.abs(sd - 1) < 0.1)) == pytest.approx(0.6)
    with pytest.raises(UserError, match="per-gene z-scores"):
        prepare(a.copy())
    path = tmp_path / "z.h5ad"
    a.write_h5ad(path)
    with pytest.raises(UserError, match="per-gene z-scores"):  # the chunked preparation decides alike
        genodae.pp.prepare_h5ad(path, tmp_path / "out.h5ad")
    # one largest value shared by nobody else is not a cap: unclipped z-scores are judged on every gene
    assert value_evidence(zscores().X)["fraction_genes_capped"] == 0.0


def test_sparse_single_cell_counts_and_log_normalised():
    a = make_counts()
    assert decide_value_kind(value_evidence(a.X)) == "counts"
    prepare(a)
    assert prep_record(a)["value_kind"] == "counts" and prep_record(a)["transform"] == "normalize_total+log1p"
    b = make_counts()
    genodae.pp.normalize_log(b, 1e4)
    assert decide_value_kind(value_evidence(b.X)) == "log"


def test_estimated_counts_are_rounded_and_used_as_counts(caplog):
    a = estimated_counts()
    raw = a.X.copy()
    with caplog.at_level(logging.WARNING, logger="genodae"):
        prepare(a)
    rec = prep_record(a)
    assert rec["value_kind"] == "estimated_counts" and rec["input_kind"] == "counts"
    assert rec["transform"] == "round+normalize_total+log1p"
    ev = rec["evidence"]
    assert ev["max"] > 10_000 and ev["fraction_integer"] < 0.5 and ev["library_fold_q90_q10"] > 3
    np.testing.assert_array_equal(np.asarray(a.layers["counts"]), np.rint(raw))
    lines = [r.getMessage() for r in caplog.records if "estimated counts" in r.getMessage()]
    assert len(lines) == 1 and "rounded to integers and used as counts" in lines[0]


def test_input_kind_counts_accepts_estimated_counts(caplog):
    a = estimated_counts()
    with caplog.at_level(logging.WARNING, logger="genodae"):
        prepare(a, input_kind="counts")
    assert prep_record(a)["input_kind"] == "counts" and prep_record(a)["transform"].startswith("round")
    assert any("rounded to integers and used as counts (input_kind='counts')" in r.getMessage()
               for r in caplog.records)


def test_input_kind_counts_refuses_log_values_and_negatives():
    with pytest.raises(UserError, match=r"^input_kind='counts' but X holds log-scale values \(values .*: rounding "
                       r"them would not give counts; give raw counts, or use input_kind='log' \(--input-kind log\)"):
        prepare(log2_microarray(), input_kind="counts")
    with pytest.raises(UserError, match=r"^input_kind='counts' but X holds negative values \(\d+ value\(s\), e\.g\. "
                       r"gene 'GENE\d+' in sample 'S\d+'\)"):
        prepare(log_ratios(), input_kind="counts")


def test_linear_values_are_log1p_transformed():
    a = tpm()
    raw = a.X.copy()
    prepare(a, n_top_genes=0)
    rec = prep_record(a)
    assert rec["value_kind"] == "linear" and rec["input_kind"] == "log" and rec["transform"] == "log1p"
    assert rec["evidence"]["library_fold_q90_q10"] == pytest.approx(1.0, abs=0.01)  # TPM: a million per sample
    np.testing.assert_allclose(a.X, np.log1p(raw), rtol=1e-6)
    assert "counts" not in a.layers


def test_input_kind_linear_and_log_are_obeyed():
    a = estimated_counts()
    raw = a.X.copy()
    prepare(a, input_kind="linear", n_top_genes=0)
    assert prep_record(a)["transform"] == "log1p"
    np.testing.assert_allclose(a.X, np.log1p(raw), rtol=1e-6)
    b = tpm()
    prepare(b, input_kind="log", n_top_genes=0)
    assert prep_record(b)["transform"] == "none" and prep_record(b)["value_kind"] == "linear"
    with pytest.raises(UserError, match=r"^input_kind='linear' but X holds negative values .*log1p needs "
                       r"non-negative values; use input_kind='log' \(--input-kind log\)"):
        prepare(log_ratios(), input_kind="linear")


@pytest.mark.parametrize("make", [log2_microarray, log_ratios])
def test_log_values_are_used_as_they_are(make):
    a = make()
    raw = a.X.copy()
    prepare(a, n_top_genes=0)
    assert prep_record(a)["value_kind"] == "log" and prep_record(a)["transform"] == "none"
    np.testing.assert_array_equal(a.X, raw)


def test_zscores_are_refused_pointing_to_raw_counts():
    with pytest.raises(UserError, match=r"^X holds per-gene z-scores \(values .*100% of genes with mean 0 and sd 1\): "
                       r"each gene's level was removed, so this is not expression on a usable scale; give the raw "
                       r"counts \(or the log-scale values\) these were computed from$"):
        prepare(zscores())


def test_linear_values_with_negatives_are_refused():
    rng = np.random.default_rng(0)
    a = _frame(rng.lognormal(6, 1.5, size=(20, GENES)) - 300)  # background-subtracted intensities (MAS4-like)
    with pytest.raises(UserError, match=r"^X holds linear-scale values with negatives \(.*\); give raw counts or "
                       r"log-scale values, or use input_kind='log' \(--input-kind log\) to use them as they are$"):
        prepare(a)


def test_decision_is_recorded_and_written(tmp_path):
    a = estimated_counts()
    prepare(a)
    write_h5ad(a, tmp_path / "p.h5ad")
    rec = anndata.read_h5ad(tmp_path / "p.h5ad").uns[PREP_KEY]
    assert rec["value_kind"] == "estimated_counts" and rec["source"] == "X"
    assert set(rec["evidence"]) >= {"min", "max", "p99_nonzero", "fraction_integer", "library_fold_q90_q10"}


# ---- a processed .h5ad -----------------------------------------------------------------------------------


def test_processed_h5ad_uses_its_counts_layer(caplog):
    a = processed_h5ad()
    counts = a.layers["counts"].copy()
    with caplog.at_level(logging.WARNING, logger="genodae"):
        prepare(a)
    rec = prep_record(a)
    assert rec["source"] == "layers['counts']" and rec["value_kind"] == "counts" and rec["input_kind"] == "counts"
    assert (a.layers["counts"] != counts).nnz == 0
    assert any("X holds per-gene z-scores" in r.getMessage() and "using layers['counts'] (raw counts) instead"
               in r.getMessage() for r in caplog.records)


def test_processed_h5ad_layer_setting():
    a = processed_h5ad()
    a.layers["umi"] = a.layers.pop("counts")
    with pytest.raises(UserError, match=r"^X holds per-gene z-scores .*; prepare the raw counts in layers\['umi'\] "
                       r"instead: layer='umi' \(--layer umi\)$"):
        prepare(a.copy())
    prepare(a, layer="umi")
    assert prep_record(a)["source"] == "layers['umi']" and prep_record(a)["params"]["layer"] == "umi"
    assert prep_record(a)["value_kind"] == "counts"


def test_processed_h5ad_without_counts_points_to_raw():
    with pytest.raises(UserError, match=r"^X holds per-gene z-scores .*; give the raw counts, or prepare "
                       r"adata\.raw\.to_adata\(\) \(the values before scaling\) in Python$"):
        prepare(processed_h5ad(with_counts=False))


def test_layer_not_found():
    with pytest.raises(UserError, match=r"^layer 'nope' not found; layers: counts$"):
        prepare(processed_h5ad(), layer="nope")


def test_cli_prepare_layer(tmp_path):
    a = processed_h5ad()
    a.layers["umi"] = a.layers.pop("counts")
    anndata.AnnData.write_h5ad(a, tmp_path / "in.h5ad")
    assert cli.main(["prepare", str(tmp_path / "in.h5ad"), "-o", str(tmp_path / "out.h5ad"), "--layer", "umi",
                     "--n-top-genes", "50"]) == 0
    assert anndata.read_h5ad(tmp_path / "out.h5ad").uns[PREP_KEY]["source"] == "layers['umi']"


# ---- embedding new data on another scale -----------------------------------------------------------------


def _tiny_model(a):
    m = genodae.DAE(genodae.make_config(n_latent=2, hidden=(), epochs=1, batch_size=64, patience=0,
                                        gene_likelihood="normal", device="cpu", seed=0))
    m.fit(a)
    return m


def test_embed_warns_when_log_model_gets_counts(caplog):
    train = log2_microarray()
    prepare(train, n_top_genes=0)
    model = _tiny_model(train)
    new = _frame(_bulk_counts(n=5))
    with caplog.at_level(logging.WARNING, logger="genodae"):
        z = model.embed(new)
    assert z.shape == (5, 2)
    lines = [r.getMessage() for r in caplog.records if "the model was trained on" in r.getMessage()]
    assert len(lines) == 1
    assert re.match(r"^the model was trained on log-scale values up to 1\d\.\d, but these data hold raw counts "
                    r"\(values 0 to [\d,]+, .*\); used as they are: give values on the training scale", lines[0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genodae"):
        model.embed(zscores())
    assert any("but these data hold per-gene z-scores" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genodae"):
        model.embed(log2_microarray(seed=1))  # same scale: no warning
    assert not [r for r in caplog.records if "the model was trained on" in r.getMessage()]


def test_embed_counts_model_refuses_log_data_and_rounds_estimated_counts(caplog):
    train = _frame(_bulk_counts(n=20))
    prepare(train, n_top_genes=0)
    model = _tiny_model(train)
    new = log2_microarray()
    with pytest.raises(UserError, match=r"^the model was trained on raw counts up to .*, but these data hold "
                       r"log-scale values \(.*\); give raw counts, or data prepared from them \(genodae prepare\)$"):
        model.embed(new)
    with caplog.at_level(logging.WARNING, logger="genodae"):
        z = model.embed(estimated_counts())
    assert z.shape == (12, 2)
    assert any("but these data hold estimated counts" in r.getMessage() and "rounded to integers" in r.getMessage()
               for r in caplog.records)


def test_embed_repeats_log1p_of_a_linear_model():
    train = tpm()
    prepare(train, n_top_genes=0)
    model = _tiny_model(train)
    np.testing.assert_allclose(model.embed(tpm()), model.embed(train), rtol=1e-4, atol=1e-5)


# ---- real files ------------------------------------------------------------------------------------------


def test_p53_nci60_linear(shared_data):
    path = shared_data / "bulk/p53_nci60/P53.txt"
    if not path.exists():
        pytest.skip(f"{path} absent")
    a = genodae.read(path)
    prepare(a)
    rec = prep_record(a)
    assert rec["value_kind"] == "linear" and rec["transform"] == "log1p"
    assert rec["evidence"]["max"] > 30_000 and a.X.max() < 11
    assert rec["n_genes_used"] == 2000


def test_shedden_luad_log(shared_data):
    path = shared_data / "bulk/shedden2008_luad/shedden2008_lung_150probes_x_444.csv"
    if not path.exists():
        pytest.skip(f"{path} absent")
    a = genodae.read(path, missing="drop")
    raw = a.X.copy()
    prepare(a)
    assert prep_record(a)["value_kind"] == "log" and prep_record(a)["transform"] == "none"
    np.testing.assert_array_equal(a.X, raw)


# ---- writing ---------------------------------------------------------------------------------------------


def _messy(n=4) -> anndata.AnnData:
    a = _frame(np.arange(n * 3).reshape(n, 3))
    a.obs["flag"] = pd.Series([True, np.nan, False, True][:n], index=a.obs_names, dtype=object)
    a.obs["count"] = pd.Series([1, None, 3, 4][:n], index=a.obs_names, dtype=object)
    a.obs["mixed"] = pd.Series([1, "a", 2.5, None][:n], index=a.obs_names, dtype=object)
    a.obs["date"] = pd.to_datetime(["2020-01-01", None, "2021-03-04", "2022-05-06"][:n])
    a.obs["pydate"] = [datetime.date(2020, 1, i + 1) for i in range(n)]
    a.obs["pair"] = [(i, i + 1) for i in range(n)]
    a.obs[7] = np.arange(n)
    a.var["tz"] = pd.to_datetime(["2020-01-01"] * 3).tz_localize("UTC")
    a.uns["when"] = datetime.datetime(2020, 1, 2, 3, 4)
    a.uns["tags"] = {"b", "a"}
    a.uns["pair"] = (1, 2)
    a.uns["nested"] = {1: [{"x": 1}], "none": None, "a/b": "slash"}
    a.uns["mixed_list"] = [1, "a", None]
    a.uns["thing"] = object()
    return a


def test_write_h5ad_converts_what_anndata_cannot_store(tmp_path, caplog):
    a = _messy()
    before = a.obs.copy()
    with caplog.at_level(logging.WARNING, logger="genodae"):
        write_h5ad(a, tmp_path / "m.h5ad")
    b = anndata.read_h5ad(tmp_path / "m.h5ad")
    assert b.obs["flag"].dtype == "boolean" and b.obs["flag"].isna().tolist() == [False, True, False, False]
    assert b.obs["flag"].tolist()[0] is np.True_ or bool(b.obs["flag"].iloc[0]) is True
    assert b.obs["count"].dtype == "Int64" and b.obs["count"].tolist()[2] == 3 and b.obs["count"].isna().sum() == 1
    assert b.obs["mixed"].astype(object).tolist()[:3] == ["1", "a", "2.5"] and pd.isna(b.obs["mixed"].iloc[3])
    assert b.obs["date"].astype(object).tolist()[0] == "2020-01-01" and pd.isna(b.obs["date"].iloc[1])
    assert b.obs["pydate"].astype(str).tolist()[0] == "2020-01-01"
    assert b.obs["pair"].astype(str).tolist()[0] == "(0, 1)"
    assert b.obs["7"].tolist() == [0, 1, 2, 3]
    assert b.var["tz"].astype(str).tolist()[0] == "2020-01-01 00:00:00+00:00"
    assert b.uns["when"] == "2020-01-02T03:04:00"
    assert list(b.uns["tags"]) == ["a", "b"] and list(b.uns["pair"]) == [1, 2]
    assert b.uns["nested"]["1"]["0"]["x"] == 1 and b.uns["nested"]["a_b"] == "slash"
    assert list(b.uns["mixed_list"]) == ["1", "a", "None"]
    assert b.uns["thing"].startswith("<object object")
    lines = [r.getMessage() for r in caplog.records if "converted for .h5ad" in r.getMessage()]
    assert len(lines) == 1 and "obs['flag']: booleans with blanks → nullable boolean" in lines[0]
    pd.testing.assert_frame_equal(a.obs, before)  # the caller's object is left as it was
    assert 7 in a.obs.columns


def test_write_h5ad_of_a_view(tmp_path):
    a = _messy()[:2]
    write_h5ad(a, tmp_path / "v.h5ad")
    assert anndata.read_h5ad(tmp_path / "v.h5ad").n_obs == 2


def test_write_h5ad_clean_data_unchanged(tmp_path, caplog):
    a = make_counts(n_cells=20, n_genes=10)
    with caplog.at_level(logging.WARNING, logger="genodae"):
        write_h5ad(a, tmp_path / "c.h5ad")
    assert not caplog.records
    b = anndata.read_h5ad(tmp_path / "c.h5ad")
    assert (b.X != a.X).nnz == 0 and b.obs["group"].tolist() == a.obs["group"].tolist()


def test_write_h5ad_name_clash_is_one_line_and_nothing_written(tmp_path):
    a = _frame(np.ones((2, 2)))
    a.obs[1] = [1, 2]
    a.obs["1"] = [3, 4]
    with pytest.raises(UserError, match=r"^obs has several columns named '1' \(as text\); rename them so that each "
                       r"name is unique before writing the \.h5ad$"):
        write_h5ad(a, tmp_path / "x.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_write_h5ad_unwritable_is_one_line_and_nothing_written(tmp_path, monkeypatch):
    a = _frame(np.ones((2, 2)))

    def fail(self, path, **kw):
        Path(path).write_bytes(b"half")
        raise TypeError("Can't implicitly convert non-string objects to strings")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", fail)
    with pytest.raises(UserError, match=r"^Cannot write .*x\.h5ad: anndata cannot store a value \(Can't implicitly "
                       r"convert non-string objects to strings\); convert it to text or numbers, or remove it$"):
        write_h5ad(a, tmp_path / "x.h5ad")
    assert list(tmp_path.iterdir()) == []


def _run(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genodae", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                            "PYTHONPATH": str(REPO)})


def test_cli_prepare_with_a_messy_sample_sheet(tmp_path):
    c = _bulk_counts(n=6, genes=60)
    samples = [f"S{i}" for i in range(6)]
    pd.DataFrame(c.T.astype(int), index=[f"ENSG{j:011d}" for j in range(60)], columns=samples).to_csv(
        tmp_path / "counts.csv")
    sheet = pd.DataFrame({
        "sample": samples,
        "treated": ["TRUE", "FALSE", "", "TRUE", "FALSE", "TRUE"],
        "batch": ["1", "2", "", "1", "2", "x"],
        "date": ["2020-01-01", "2020-02-03", "", "2021-01-01", "2021-01-02", "2021-01-03"],
        "mixed": ["1", "a", "2.5", "", "True", "b"],
        "age": ["1", "", "3", "4", "5", "6"],
    })
    sheet.to_csv(tmp_path / "sheet.csv", index=False)
    r = _run("prepare", "counts.csv", "--obs", "sheet.csv", "-o", "p.h5ad", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    b = anndata.read_h5ad(tmp_path / "p.h5ad")
    assert b.n_obs == 6 and {"treated", "batch", "date", "mixed", "age"} <= set(b.obs.columns)


def test_cli_prepare_estimated_counts(tmp_path):
    a = estimated_counts()
    pd.DataFrame(a.X.T, index=[f"ENSG{j:011d}" for j in range(a.n_vars)], columns=a.obs_names).to_csv(
        tmp_path / "quant.tsv", sep="\t")
    r = _run("prepare", "quant.tsv", "-o", "p.h5ad", "--input-kind", "counts", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rounded to integers and used as counts (input_kind='counts')" in r.stderr
    r = _run("prepare", "quant.tsv", "-o", "q.h5ad", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "estimated counts (as from salmon, RSEM or kallisto)" in r.stderr
    assert anndata.read_h5ad(tmp_path / "q.h5ad").uns[PREP_KEY]["value_kind"] == "estimated_counts"


def test_cli_prepare_zscores_is_one_line(tmp_path):
    a = processed_h5ad(with_counts=False)
    anndata.AnnData.write_h5ad(a, tmp_path / "z.h5ad")
    r = _run("prepare", "z.h5ad", "-o", "p.h5ad", cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("genodae prepare: error: z.h5ad: X holds per-gene z-scores (")
    assert "Traceback" not in r.stderr and not (tmp_path / "p.h5ad").exists()


def test_sparse_evidence_counts_implicit_zeros():
    X = sparse.random(50, 100, density=0.05, format="csr", random_state=0, dtype=np.float32)
    X.data = np.round(X.data * 100) + 1
    ev = value_evidence(X)
    assert ev["min"] == 0 and ev["fraction_zero"] == pytest.approx(0.95, abs=0.01)
    assert decide_value_kind(ev) == "counts"


def test_embed_one_sample_of_an_estimated_counts_model(caplog):
    train = estimated_counts()
    prepare(train, n_top_genes=0)
    model = _tiny_model(train)
    one = estimated_counts(seed=1)[:1].copy()  # one sample: no library sizes to compare
    with caplog.at_level(logging.WARNING, logger="genodae"):
        assert model.embed(one).shape == (1, 2)
    assert not [r for r in caplog.records if "the model was trained on" in r.getMessage()]
    with pytest.raises(UserError, match=r"^the model was trained on estimated counts .* but these data hold "
                       r"log-scale values"):
        model.embed(log2_microarray())


# ---- integer counts with a few negative entries (tester's defect 2) ------------------------------------


def _counts_with_a_negative(sparse_x=False) -> anndata.AnnData:
    rng = np.random.default_rng(3)
    X = rng.negative_binomial(2, 0.3, size=(120, 300)).astype(np.float32)  # max in the thirties, as the tester's
    X[4, 3] = -5
    a = _frame(X)
    if sparse_x:
        a.X = sparse.csr_matrix(a.X)
    return a


@pytest.mark.parametrize("sparse_x", [False, True])
def test_integer_counts_with_one_negative_are_refused_naming_it(sparse_x):
    a = _counts_with_a_negative(sparse_x)
    with pytest.raises(UserError) as err:
        prepare(a)
    msg = str(err.value)
    assert msg.startswith("X holds integer counts (up to ") and "1 value(s), e.g. gene 'GENE0003' in sample 'S04'" in msg
    assert "minimum -5" in msg and "counts cannot be negative" in msg and "--input-kind log" in msg
    assert "log-scale" not in msg.split("counts cannot")[0]


def test_integer_counts_with_one_negative_as_log_when_asked():
    a = _counts_with_a_negative()
    prepare(a, input_kind="log")
    assert a.uns[PREP_KEY]["input_kind"] == "log"


def test_integer_counts_with_one_negative_in_chunks(tmp_path):
    from genodae.pp import prepare_h5ad

    _counts_with_a_negative().write_h5ad(tmp_path / "neg.h5ad")
    with pytest.raises(UserError, match=r"neg\.h5ad: X holds integer counts .*gene 'GENE0003' in sample 'S04'"):
        prepare_h5ad(tmp_path / "neg.h5ad", tmp_path / "out.h5ad", hvg_flavor="seurat_v3")
    assert not (tmp_path / "out.h5ad").exists()


@pytest.mark.parametrize("make", [log_ratios, zscores])
def test_log_ratios_and_zscores_are_not_taken_for_bad_counts(make):
    ev = value_evidence(make().X)
    from genodae._values import negative_counts

    assert not negative_counts(ev)
    rounded = make()
    rounded.X = np.rint(rounded.X * 3)  # integer log ratios: many negatives, not a few bad entries
    assert not negative_counts(value_evidence(rounded.X))


def test_embed_refuses_counts_with_a_negative():
    from genodae.pp import repeat_preparation

    fit = _frame(_bulk_counts())
    prepare(fit)
    with pytest.raises(UserError, match=r"integer counts .*negative values .*counts cannot be negative; correct "
                       r"those entries in the file$"):
        repeat_preparation(_counts_with_a_negative(), fit.uns[PREP_KEY])


# ---- processed .h5ad files: messages that are true and genodae's own (tester's defect 7) ---------------------


def test_processed_h5ad_without_scanpys_stray_log_warning(capfd):
    """scanpy's uns['log1p'] belongs to the z-scored X; preparing the counts layer must not print scanpy's
    'adata.X seems to be already log-transformed'."""
    a = processed_h5ad()
    assert "log1p" in a.uns
    prepare(a)
    assert "already log-transformed" not in capfd.readouterr().err


def test_chunked_prepare_uses_the_counts_layer_of_z_scores_as_in_memory(tmp_path, caplog):
    from genodae.pp import prepare_h5ad

    a = processed_h5ad()
    anndata.AnnData.write_h5ad(a, tmp_path / "scaled.h5ad")
    with caplog.at_level(logging.INFO, logger="genodae"):
        prepare_h5ad(tmp_path / "scaled.h5ad", tmp_path / "out.h5ad", hvg_flavor="seurat_v3", n_top_genes=50)
    rec = anndata.read_h5ad(tmp_path / "out.h5ad").uns[PREP_KEY]
    assert rec["source"] == "layers['counts']" and rec["input_kind"] == "counts"
    assert "--layer counts" not in caplog.text
    assert "using layers['counts'] (raw counts) instead" in caplog.text


def test_cli_prepare_h5ad_with_duplicate_genes_warns_once_in_genodaes_words(tmp_path, caplog):
    a = make_counts(n_cells=60, n_genes=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.var_names = list(a.var_names[:-2]) + list(a.var_names[:2])
        a.write_h5ad(tmp_path / "dup.h5ad")
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING, logger="genodae"):
        warnings.simplefilter("always")
        assert cli.main(["prepare", str(tmp_path / "dup.h5ad"), "-o", str(tmp_path / "out.h5ad")]) == 0
    assert not [w for w in seen if "Variable names are not unique" in str(w.message)]  # anndata's raw warning
    assert caplog.text.count("2 duplicate gene name(s)") == 1
    caplog.clear()
    assert cli.main(["prepare", str(tmp_path / "dup.h5ad"), "--backed", "-o", str(tmp_path / "out2.h5ad")]) != 0
    assert not (tmp_path / "out2.h5ad").exists()
