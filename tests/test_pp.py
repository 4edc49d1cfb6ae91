"""genodae.pp.prepare: counts vs log data, normalisation, gene selection, per-gene scaling, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from genodae import pp
from genodae.config import PrepareConfig
from genodae.errors import UserError
from genodae.pp import PREP_KEY, is_counts, scaling_params


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _log_adata(n: int = 60, g: int = 30, seed: int = 0) -> AnnData:
    """Bulk-like log-scale values (e.g. log2 microarray): positive, non-integer, dense."""
    rng = np.random.default_rng(seed)
    X = (rng.normal(8, 1.5, size=(1, g)) + rng.normal(0, 0.7, size=(n, g))).astype(np.float32)
    return AnnData(X, obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))


# --- detection and normalisation -------------------------------------------------------------------------


def test_is_counts_detects_integers_vs_transformed_values():
    assert is_counts(sp.csr_matrix(np.array([[0, 3], [1, 0]], dtype=np.float32)))
    assert is_counts(np.array([[0, 3], [1, 0]], dtype=np.int64))
    assert not is_counts(np.log1p(np.array([[0, 3.0], [1, 0]])))
    assert not is_counts(np.array([[0, -1.0], [1, 0]]))


def test_counts_are_kept_and_x_is_log_normalised(counts_adata):
    raw = _dense(counts_adata.X).copy()
    pp.prepare(counts_adata, n_top_genes=0)
    rec = counts_adata.uns[PREP_KEY]
    assert rec["input_kind"] == "counts"
    np.testing.assert_array_equal(_dense(counts_adata.layers["counts"]), raw)
    expected = np.log1p(raw / raw.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(_dense(counts_adata.X), expected, rtol=1e-5, atol=1e-5)
    assert sp.issparse(counts_adata.X) and sp.issparse(counts_adata.layers["counts"])
    assert "log1p" not in counts_adata.uns


def test_target_sum_is_applied(counts_adata):
    raw = _dense(counts_adata.X).copy()
    pp.prepare(counts_adata, n_top_genes=0, target_sum=100.0)
    np.testing.assert_allclose(np.expm1(_dense(counts_adata.X)).sum(1), 100.0, rtol=1e-4)
    assert counts_adata.uns[PREP_KEY]["params"]["target_sum"] == 100.0
    assert np.array_equal(_dense(counts_adata.layers["counts"]), raw)


def test_log_data_is_used_as_it_is():
    adata = _log_adata()
    before = adata.X.copy()
    pp.prepare(adata)
    assert adata.uns[PREP_KEY]["input_kind"] == "log"
    assert "counts" not in adata.layers
    np.testing.assert_array_equal(adata.X, before)


def test_integer_log_like_data_can_be_forced_to_log():
    adata = AnnData(np.random.default_rng(0).integers(1, 12, size=(40, 20)).astype(np.float32))
    pp.prepare(adata, input_kind="log")
    assert adata.uns[PREP_KEY]["input_kind"] == "log"
    assert "counts" not in adata.layers


# --- gene selection ---------------------------------------------------------------------------------------


def test_hvg_count_is_n_top_genes(counts_adata):
    pp.prepare(counts_adata, n_top_genes=50)
    hv = counts_adata.var["highly_variable"]
    assert hv.dtype == bool and hv.sum() == 50
    assert counts_adata.uns[PREP_KEY]["n_genes_used"] == 50
    # the planted modules are the variable genes: most chosen genes belong to one (chance: 60 of 200)
    module_genes = (counts_adata.var["module"] != "none").to_numpy()
    assert module_genes[hv.to_numpy()].mean() > 0.8
    # scaling parameters exist for the genes used, and only for them
    assert counts_adata.var.loc[hv, "genodae_scale"].notna().all()
    assert counts_adata.var.loc[~hv, "genodae_scale"].isna().all()


def test_all_genes_when_fewer_than_n_top_genes(counts_adata):
    pp.prepare(counts_adata, n_top_genes=5000)
    assert counts_adata.var["highly_variable"].sum() == counts_adata.n_vars


def test_log_data_hvg_count():
    adata = _log_adata(n=80, g=60)
    pp.prepare(adata, n_top_genes=20)
    assert adata.var["highly_variable"].sum() == 20


def test_constant_and_undetected_genes_are_not_used(counts_adata):
    X = counts_adata.X.tolil()
    X[:, 0] = 0  # never detected
    counts_adata.X = X.tocsr()
    pp.prepare(counts_adata, n_top_genes=0)
    assert not counts_adata.var["highly_variable"].iloc[0]
    assert counts_adata.var["highly_variable"].sum() == counts_adata.n_vars - 1


# --- scaling ----------------------------------------------------------------------------------------------


class _NoDense(sp.csr_matrix):
    """A CSR matrix that fails if anything densifies more than one row of it."""

    def toarray(self, *a, **k):
        if self.shape[0] > 1:
            raise AssertionError("the sparse matrix was densified")
        return super().toarray(*a, **k)

    def todense(self, *a, **k):
        if self.shape[0] > 1:
            raise AssertionError("the sparse matrix was densified")
        return super().todense(*a, **k)

    def __array__(self, *a, **k):
        raise AssertionError("the sparse matrix was densified")


def test_minmax_on_sparse_is_computed_without_densifying():
    rng = np.random.default_rng(0)
    D = rng.random((50, 10)).astype(np.float32) * 5
    D[D < 2.5] = 0
    D[:, 3] += 1.0  # a gene that is never 0: offset = its minimum, not 0
    offset, scale = scaling_params(_NoDense(D), "minmax")
    np.testing.assert_allclose(offset, D.min(0), rtol=1e-6)
    np.testing.assert_allclose(scale, D.max(0) - D.min(0), rtol=1e-6)
    assert offset[3] >= 1.0


def test_zscore_on_sparse_is_computed_without_densifying():
    rng = np.random.default_rng(1)
    D = rng.random((50, 10)).astype(np.float32) * 5
    D[D < 2.5] = 0
    offset, scale = scaling_params(_NoDense(D), "zscore")
    np.testing.assert_allclose(offset, D.astype(np.float64).mean(0), rtol=1e-5)
    np.testing.assert_allclose(scale, D.astype(np.float64).std(0), rtol=1e-4)


def test_constant_gene_gets_scale_one():
    D = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 3.0]], dtype=np.float32)
    for s in ("minmax", "zscore"):
        _, scale = scaling_params(D, s)
        assert scale[0] == 1.0 and np.isfinite(scale).all()


def test_prepare_minmax_keeps_x_sparse_and_records_offsets(counts_adata):
    pp.prepare(counts_adata, n_top_genes=0)
    assert sp.issparse(counts_adata.X)
    X = _dense(counts_adata.X)
    used = counts_adata.var["highly_variable"].to_numpy()
    np.testing.assert_allclose(counts_adata.var["genodae_offset"].to_numpy()[used], X[:, used].min(0), atol=1e-6)
    np.testing.assert_allclose(counts_adata.var["genodae_scale"].to_numpy()[used],
                               X[:, used].max(0) - X[:, used].min(0), rtol=1e-5)
    scaled = (X[:, used] - counts_adata.var["genodae_offset"].to_numpy()[used]) / counts_adata.var[
        "genodae_scale"].to_numpy()[used]
    assert scaled.min() == pytest.approx(0, abs=1e-6) and scaled.max() == pytest.approx(1, abs=1e-5)


def test_prepare_zscore_records_mean_and_sd():
    adata = _log_adata()
    pp.prepare(adata, scaling="zscore")
    X = adata.X.astype(np.float64)
    np.testing.assert_allclose(adata.var["genodae_offset"], X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(adata.var["genodae_scale"], X.std(0), rtol=1e-3)
    assert adata.uns[PREP_KEY]["params"]["scaling"] == "zscore"


def test_auto_scaling_is_minmax_for_counts_and_zscore_for_log_data(counts_adata, caplog):
    """scaling='auto' (the default): min-max for counts (a count likelihood reads the counts; masking to 0 reads
    "not detected"), z-scores for other input, whose model reconstructs the scaled values."""
    assert PrepareConfig().scaling == "auto"
    with caplog.at_level("INFO", logger="genodae"):
        pp.prepare(counts_adata, n_top_genes=0)
    rec = counts_adata.uns[PREP_KEY]
    assert rec["input_kind"] == "counts" and rec["params"]["scaling"] == "minmax" and rec["scaling_auto"]
    assert "minmax scaling (scaling='auto', for count input)" in caplog.text
    dense = _log_adata()
    pp.prepare(dense)
    rec = dense.uns[PREP_KEY]
    assert rec["input_kind"] == "log" and rec["params"]["scaling"] == "zscore" and rec["scaling_auto"]
    X = dense.X.astype(np.float64)
    np.testing.assert_allclose(dense.var["genodae_offset"], X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(dense.var["genodae_scale"], X.std(0), rtol=1e-3)
    explicit = _log_adata()
    pp.prepare(explicit, scaling="minmax")  # asked for: kept, and recorded as not chosen from the data
    assert explicit.uns[PREP_KEY]["params"]["scaling"] == "minmax" and not explicit.uns[PREP_KEY]["scaling_auto"]


def test_auto_scaling_follows_the_input_kind_not_the_share_of_zeros():
    """Deep, dense counts (bulk RNA-seq-like) are counts: min-max; sparse log-normalised single-cell values (no
    counts) are log input: z-scores (readable.md, "Probe: the input scaling": F1 0.33 with min-max, 0.69 z-scores)."""
    rng = np.random.default_rng(1)
    deep = AnnData(rng.poisson(rng.gamma(2.0, 100.0, size=(1, 60)), size=(40, 60)).astype(np.float32))
    pp.prepare(deep, n_top_genes=0)
    assert deep.uns[PREP_KEY]["input_kind"] == "counts" and deep.uns[PREP_KEY]["params"]["scaling"] == "minmax"
    sparse_log = AnnData(np.log1p(rng.poisson(0.3, size=(80, 60)) * 3.7).astype(np.float32))
    assert (sparse_log.X == 0).mean() > 0.5
    pp.prepare(sparse_log, input_kind="log", n_top_genes=0)
    assert sparse_log.uns[PREP_KEY]["params"]["scaling"] == "zscore"


def test_zscore_is_accurate_for_high_mean_low_variance_genes():
    rng = np.random.default_rng(0)
    D = (12 + 0.05 * rng.standard_normal((500, 20))).astype(np.float32)  # log2 microarray-like genes
    truth = D.astype(np.float64).std(0)
    for X in (D, sp.csr_matrix(D)):
        _, scale = scaling_params(X, "zscore")
        np.testing.assert_allclose(scale, truth, rtol=1e-3)


# --- recoverable oddities and errors ---------------------------------------------------------------------


def test_zero_count_cells_are_dropped_with_a_warning(counts_adata):
    X = counts_adata.X.tolil()
    X[[3, 10], :] = 0
    counts_adata.X = X.tocsr()
    with pytest.warns(UserWarning, match="zero counts"):
        pp.prepare(counts_adata, n_top_genes=0)
    assert counts_adata.n_obs == 298
    assert "cell0003" not in counts_adata.obs_names and "cell0010" not in counts_adata.obs_names
    assert counts_adata.layers["counts"].shape == (298, 200)


def test_all_zero_matrix_is_a_user_error():
    adata = AnnData(sp.csr_matrix((20, 10), dtype=np.float32))
    with pytest.raises(UserError, match="zero"):
        pp.prepare(adata)


def test_empty_matrix_is_a_user_error():
    with pytest.raises(UserError, match="empty"):
        pp.prepare(AnnData(np.zeros((0, 5), dtype=np.float32)))


def test_negative_values_with_input_kind_counts_is_a_user_error():
    adata = _log_adata()
    adata.X[0, 0] = -1.0
    with pytest.raises(UserError, match="negative"):
        pp.prepare(adata, input_kind="counts")


@pytest.mark.parametrize("sparse", [False, True])
def test_nan_is_a_user_error(counts_adata, sparse):
    X = _dense(counts_adata.X)
    X[5, 7] = np.nan
    counts_adata.X = sp.csr_matrix(X) if sparse else X
    with pytest.raises(UserError, match="NaN"):
        pp.prepare(counts_adata)


def test_inf_is_a_user_error():
    adata = _log_adata()
    adata.X[2, 3] = np.inf
    with pytest.raises(UserError, match="infinite"):
        pp.prepare(adata)


def test_preparing_twice_is_a_user_error(counts_adata):
    pp.prepare(counts_adata, n_top_genes=0)
    with pytest.raises(UserError, match="already prepared"):
        pp.prepare(counts_adata)


def test_seurat_v3_on_log_data_is_a_user_error():
    with pytest.raises(UserError, match="seurat_v3"):
        pp.prepare(_log_adata(), hvg_flavor="seurat_v3", n_top_genes=5)


def test_bad_option_is_a_user_error(counts_adata):
    with pytest.raises(UserError, match="scaling"):
        pp.prepare(counts_adata, scaling="rank")


def test_copy_leaves_the_input_untouched(counts_adata):
    orig = counts_adata.copy()
    out = pp.prepare(counts_adata, n_top_genes=50, copy=True)
    assert isinstance(out, AnnData) and out is not counts_adata
    assert PREP_KEY in out.uns and "counts" in out.layers
    assert (counts_adata.X != orig.X).nnz == 0
    assert list(counts_adata.var.columns) == list(orig.var.columns)
    assert list(counts_adata.obs.columns) == list(orig.obs.columns)
    assert dict(counts_adata.uns) == {} and len(counts_adata.layers) == 0


def test_in_place_returns_none(counts_adata):
    assert pp.prepare(counts_adata, n_top_genes=0) is None
    assert PREP_KEY in counts_adata.uns


def test_gene_selection_falls_back_on_very_sparse_counts(caplog):
    """Thousands of genes seen in one or two cells make seurat_v3's loess singular ("reciprocal condition
    number", as on a public 4,186 × 13,488 set): prepare widens the span (or changes flavour), says so, and goes on."""
    import logging

    rng = np.random.default_rng(0)
    n, g = 400, 6000
    rows, cols, vals = [], [], []
    for j in range(g):
        k = int(rng.integers(1, 3)) if j >= 1000 else int(rng.integers(20, 200))
        rows += list(rng.choice(n, k, replace=False))
        cols += [j] * k
        vals += list(rng.integers(1, 4, k))
    X = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(n, g))
    a = AnnData(X, obs=pd.DataFrame({"b": np.where(np.arange(n) % 2, "x", "y")}, index=[f"c{i}" for i in range(n)]),
                        var=pd.DataFrame(index=[f"G{j}" for j in range(g)]))
    for batch_key in (None, "b"):
        b = a.copy()
        with caplog.at_level(logging.WARNING, logger="genodae"):
            caplog.clear()
            pp.prepare(b, batch_key=batch_key)
        assert int(b.var["highly_variable"].sum()) == 2000
        assert any("gene selection failed" in r.message and "instead" in r.message and "b'" not in r.message
                   for r in caplog.records)


def _ens(n: int, suffix: str = "") -> list[str]:
    return [f"ENSG{100000 + i:011d}{suffix}" for i in range(n)]


@pytest.mark.parametrize(("data_suffix", "model_suffix", "fix"), [
    (".5", "", "remove the suffixes from the data's gene IDs"),
    ("", ".5", "give data with the versioned IDs the model was trained on"),
])
def test_embed_names_ensembl_version_suffixes(data_suffix, model_suffix, fix):
    """Data and model both use Ensembl IDs, one with version suffixes: said so, not 'use the same kind of IDs'."""
    data = AnnData(np.ones((3, 5), np.float32), var=pd.DataFrame(index=_ens(5, data_suffix)))
    genes = pd.Index(_ens(5, model_suffix))
    with pytest.raises(UserError) as err:
        pp.prepared_matrix(data, genes, {"input_kind": "log"})
    msg = str(err.value)
    assert "carry version suffixes (.N)" in msg and fix in msg and "symbols vs Ensembl" not in msg


def test_embed_unrelated_ids_keep_the_generic_advice():
    data = AnnData(np.ones((3, 5), np.float32), var=pd.DataFrame(index=[f"GENE{i}" for i in range(5)]))
    with pytest.raises(UserError, match="symbols vs Ensembl IDs"):
        pp.prepared_matrix(data, pd.Index(_ens(5)), {"input_kind": "log"})
