"""genodae.tl.dae: the keys it writes (scanpy conventions), copy/key_added, and a planted signal recovered."""

from __future__ import annotations

import dataclasses

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

import genodae
from genodae import pp, tl
from genodae.config import DAEConfig
from genodae.errors import UserError

FAST = dict(n_latent=8, hidden=(64,), epochs=30, batch_size=32, num_threads=1, seed=0)
N_TOP = 150  # of 200 genes: 50 genes are not used, so their weight rows must be zero


@pytest.fixture(scope="module")
def prepared(_counts_adata_session) -> anndata.AnnData:
    adata = _counts_adata_session.copy()
    pp.prepare(adata, n_top_genes=N_TOP)
    return adata


@pytest.fixture(scope="module")
def annotated(prepared, tmp_path_factory):
    """(annotated AnnData, X before tl.dae, model folder)."""
    adata = prepared.copy()
    x_before = adata.X.copy()
    model_dir = tmp_path_factory.mktemp("tl") / "model"
    assert tl.dae(adata, model_dir=model_dir, **FAST) is None
    return adata, x_before, model_dir


def test_writes_every_key_with_the_right_shape(annotated):
    adata, _, _ = annotated
    used = adata.var["highly_variable"].to_numpy()
    Z = adata.obsm["X_dae"]
    assert Z.shape == (adata.n_obs, 8) and np.isfinite(Z).all()
    assert Z.std(0).min() > 0  # no dead node: every column varies over cells
    W = adata.varm["dae_weights"]
    assert W.shape == (adata.n_vars, 8)
    assert used.sum() == N_TOP
    assert np.all(W[~used] == 0), "genes the model does not use must have exactly zero weight rows"
    assert np.all(np.abs(W[used]).sum(1) > 0)
    r2 = adata.var["dae_recon_r2"].to_numpy()
    assert np.isnan(r2[~used]).all()
    assert np.isfinite(r2[used]).mean() > 0.9  # NaN only where a gene is constant on the validation cells
    assert np.nanmax(r2[used]) <= 1
    err = adata.obs["dae_recon_error"].to_numpy()
    assert err.shape == (adata.n_obs,) and np.isfinite(err).all() and (err >= 0).all()


def test_uns_records_params_history_genes_and_version(annotated):
    adata, _, _ = annotated
    rec = adata.uns["dae"]
    params = rec["params"]
    assert set(params) <= {f.name for f in dataclasses.fields(DAEConfig)}
    assert params["n_latent"] == 8 and params["epochs"] == 30 and params["seed"] == 0
    assert list(params["hidden"]) == [64]
    assert params["corruption"] == DAEConfig().corruption  # not given: the dataclass default
    h = rec["history"]
    assert len(h["train_loss"]) == len(h["val_loss"]) == h["epochs_run"] > 0
    assert 0 <= h["best_epoch"] < h["epochs_run"]
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert rec["version"] == genodae.__version__
    assert list(rec["genes_used"]) == list(adata.var_names[adata.var["highly_variable"]])
    assert rec["recon_r2_on"] == "validation cells"


def test_x_is_never_changed(annotated):
    adata, x_before, _ = annotated
    assert sp.issparse(adata.X)
    assert (adata.X != x_before).nnz == 0


def test_planted_groups_are_separated_by_the_embedding(annotated):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    adata, _, _ = annotated
    y = adata.obs["group"].to_numpy()
    knn = KNeighborsClassifier(n_neighbors=15)
    acc = cross_val_score(knn, adata.obsm["X_dae"], y, cv=5).mean()
    # chance is ~1/3; a random or gene-misaligned embedding scores ~0.35
    rand = np.random.default_rng(0).normal(size=adata.obsm["X_dae"].shape)
    acc_rand = cross_val_score(knn, rand, y, cv=5).mean()
    assert acc > 0.75, acc
    assert acc_rand < 0.5


def test_gene_weights_point_to_the_planted_modules(annotated):
    """Decoding each group's latent shift through the gene weights singles out that group's own module.

    Catches gene weights written to the wrong rows of varm (misaligned genes give AUC ≈ 0.5).
    """
    from sklearn.metrics import roc_auc_score

    adata, _, _ = annotated
    used = adata.var["highly_variable"].to_numpy()
    W = adata.varm["dae_weights"][used]
    Z = adata.obsm["X_dae"]
    module = adata.var["module"].to_numpy()[used]
    group = adata.obs["group"].to_numpy()
    aucs = []
    for k in range(3):
        shift = Z[group == f"g{k}"].mean(0) - Z.mean(0)
        aucs.append(roc_auc_score(module == f"m{k}", W @ shift))
    assert np.mean(aucs) > 0.62 and min(aucs) > 0.55, aucs


@pytest.mark.slow  # scanpy's neighbors compile numba code on first use (~8 s)
def test_neighbors_work_on_the_embedding(annotated):
    import scanpy as sc

    adata = annotated[0].copy()
    sc.pp.neighbors(adata, use_rep="X_dae", n_neighbors=10)
    assert adata.obsp["connectivities"].shape == (adata.n_obs, adata.n_obs)
    assert adata.uns["neighbors"]["params"]["use_rep"] == "X_dae"


def test_annotated_adata_round_trips_through_h5ad(annotated, tmp_path):
    adata = annotated[0]
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = anndata.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_dae"], adata.obsm["X_dae"])
    np.testing.assert_array_equal(back.varm["dae_weights"], adata.varm["dae_weights"])
    np.testing.assert_array_equal(back.uns["dae"]["history"]["val_loss"], adata.uns["dae"]["history"]["val_loss"])


def test_model_dir_holds_the_same_model(annotated):
    adata, _, model_dir = annotated
    model = genodae.DAE.load(model_dir)
    np.testing.assert_array_equal(model.embed(adata), adata.obsm["X_dae"])
    gw = model.gene_weights()
    used = adata.var["highly_variable"].to_numpy()
    assert list(gw.index) == list(adata.var_names[used])
    np.testing.assert_array_equal(gw.to_numpy(), adata.varm["dae_weights"][used])


def test_key_added_renames_every_key_and_models_live_side_by_side(annotated):
    adata = annotated[0].copy()
    before = adata.obsm["X_dae"].copy()
    tl.dae(adata, key_added="foo", n_latent=3, hidden=(), epochs=2, num_threads=1, denoised=True,
           denoised_scale="counts")
    assert adata.obsm["X_foo"].shape == (adata.n_obs, 3)
    assert adata.varm["foo_weights"].shape == (adata.n_vars, 3)
    assert "foo_recon_r2" in adata.var and "foo_recon_error" in adata.obs
    assert "foo" in adata.uns and adata.uns["foo"]["params"]["n_latent"] == 3
    assert adata.layers["foo_denoised"].shape == adata.shape and adata.uns["foo"]["denoised_scale"] == "counts"
    assert "dae_denoised" not in adata.layers
    np.testing.assert_array_equal(adata.obsm["X_dae"], before)  # the first model is untouched
    assert adata.uns["dae"]["params"]["n_latent"] == 8


def test_copy_returns_a_new_object_and_leaves_the_input_unchanged(prepared):
    adata = prepared.copy()
    out = tl.dae(adata, copy=True, n_latent=3, hidden=(), epochs=2, num_threads=1)
    assert isinstance(out, anndata.AnnData) and out is not adata
    assert "X_dae" in out.obsm and "dae" in out.uns
    assert "X_dae" not in adata.obsm and "dae" not in adata.uns
    assert "dae_weights" not in adata.varm and "dae_recon_error" not in adata.obs
    assert (adata.X != prepared.X).nnz == 0


def test_explicit_settings_and_extra_config_fields_are_used(prepared):
    out = tl.dae(prepared, copy=True, n_latent=2, hidden=(), epochs=3, num_threads=1, corruption=0.05,
                 dropout=0.0, optimizer="adamw", seed=7)
    p = out.uns["dae"]["params"]
    assert (p["corruption"], p["optimizer"], p["seed"], p["epochs"]) == (0.05, "adamw", 7, 3)


def test_bad_settings_are_user_errors(prepared):
    adata = prepared.copy()
    with pytest.raises(UserError, match="n_latent"):
        tl.dae(adata, n_latent=N_TOP + 1, epochs=1)
    with pytest.raises(UserError, match="layer"):
        tl.dae(adata, layer="nope", epochs=1)
    with pytest.raises(UserError, match="corruption"):
        tl.dae(adata, corruption=1.5, epochs=1)
    with pytest.raises(UserError, match="unknown setting"):
        tl.dae(adata, n_latnet=4, epochs=1)
    with pytest.raises(UserError, match="preset"):
        tl.dae(adata, preset="nope", epochs=1)
    assert "X_dae" not in adata.obsm  # a failed call adds nothing


def test_unprepared_log_data_is_used_as_it_is(prepared):
    adata = anndata.AnnData(prepared.X.toarray(), obs=prepared.obs[[]], var=prepared.var[[]])
    tl.dae(adata, n_latent=3, hidden=(), epochs=2, num_threads=1)
    assert adata.obsm["X_dae"].shape == (adata.n_obs, 3)
    assert adata.varm["dae_weights"].shape == (adata.n_vars, 3)
