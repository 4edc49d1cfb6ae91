"""Batches and covariates: conditioning, batch-aware preparation, counterfactual expression, reference mapping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import make_counts
from sklearn.neighbors import KNeighborsClassifier

import genodae
from genodae.cli import main
from genodae.errors import UserError
from genodae.nn import DenoisingAutoencoder, level_lookup
from genodae.train import batch_mmd

FAST = dict(n_latent=4, hidden=(16,), epochs=15, batch_size=64, seed=0, device="cpu")


def batched_counts(seed: int = 0, n_cells: int = 300, effect: float = 0.8) -> genodae.AnnData:
    """The synthetic counts split at random into two batches; batch b2's counts are redrawn as Poisson(y × f_g) with
    gene factors f_g ~ LogNormal(0, ``effect``) drawn once (a known batch effect on top of the planted groups)."""
    a = make_counts(n_cells=n_cells, seed=seed)
    rng = np.random.default_rng(seed + 1)
    b2 = rng.random(a.n_obs) < 0.5
    f = rng.lognormal(0.0, effect, a.n_vars)
    X = a.X.toarray()
    X[b2] = rng.poisson(X[b2] * f[None, :])
    a.X = sp.csr_matrix(X.astype(np.float32))
    a.obs["batch"] = pd.Categorical(np.where(b2, "b2", "b1"))
    return a


def knn_acc(Z, y, k=15):
    from sklearn.model_selection import cross_val_predict

    return float((cross_val_predict(KNeighborsClassifier(k), Z, y, cv=5) == y).mean())


# --- the network ------------------------------------------------------------------------------------------------


def test_covariate_offsets_start_at_zero_and_unknown_level_is_the_mean():
    torch.manual_seed(0)
    m = DenoisingAutoencoder(20, 4, hidden=(8,), n_cats_per_cov=(3,), gene_likelihood="poisson")
    x = torch.rand(5, 20)
    plain = DenoisingAutoencoder(20, 4, hidden=(8,), gene_likelihood="poisson")
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if "covariates" not in k})
    cats = torch.tensor([[0], [1], [2], [0], [1]])
    # offsets start at zero: the conditioned network is the plain one until trained
    assert torch.equal(m(x, cats)[1], plain(x)[1])
    table = torch.arange(12.0).reshape(3, 4)
    got = level_lookup(table, torch.tensor([2, -1, 0]))
    assert torch.equal(got[0], table[2]) and torch.equal(got[2], table[0])
    assert torch.allclose(got[1], table.mean(0))


def test_decoder_sees_the_batch_and_linear_weights_are_batch_free():
    torch.manual_seed(0)
    m = DenoisingAutoencoder(10, 3, hidden=(), n_cats_per_cov=(2,), gene_likelihood="poisson")
    with torch.no_grad():
        m.decoder_covariates.levels[0].weight.copy_(torch.randn(2, 10))
    x = torch.rand(4, 10)
    z0, out0 = m(x, torch.zeros(4, 1, dtype=torch.long))
    z1, out1 = m(x, torch.ones(4, 1, dtype=torch.long))
    assert torch.equal(z0, z1)  # the encoder does not see the batch by default
    assert not torch.allclose(out0, out1)
    assert m.linear_gene_weights().shape == (10, 3)
    assert torch.equal(m.linear_gene_weights(), m.decoder.weight)  # the covariate offsets are a separate table
    with pytest.raises(ValueError, match="covariates"):
        m(x)


def test_encoder_conditioning_and_per_batch_dispersion():
    torch.manual_seed(0)
    m = DenoisingAutoencoder(10, 3, hidden=(8,), n_cats_per_cov=(2,), n_continuous=1, encode_covariates=True,
                             gene_likelihood="nb", dispersion="gene-batch")
    assert m.log_theta.shape == (2, 10)
    with torch.no_grad():
        m.encoder_covariates.levels[0].weight.copy_(torch.randn(2, 8))
        m.log_theta.copy_(torch.tensor([[0.0] * 10, [2.0] * 10]))
    x = torch.rand(4, 10)
    cont = torch.zeros(4, 1)
    za, _ = m(x, torch.zeros(4, 1, dtype=torch.long), cont)
    zb, _ = m(x, torch.ones(4, 1, dtype=torch.long), cont)
    assert not torch.allclose(za, zb)
    theta = m.cell_log_theta(torch.tensor([[0], [1], [-1]]))
    assert torch.allclose(theta[:, 0], torch.tensor([0.0, 2.0, 1.0]))


def test_batch_mmd_is_zero_for_one_distribution_and_large_for_separated_batches():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 4, generator=g)
    batch = torch.arange(200) % 2
    same = float(batch_mmd(z, batch, 2))
    apart = float(batch_mmd(z + 5 * batch[:, None], batch, 2))
    assert abs(same) < 0.05 < apart
    assert float(batch_mmd(z, torch.zeros(200, dtype=torch.long), 3)) == 0.0  # one batch: nothing to mix
    # the vectorised estimate equals the plain one, batch by batch
    codes = torch.arange(30) % 3
    zz = torch.randn(30, 2, generator=g)
    d2 = torch.cdist(zz, zz).square()
    K = sum(torch.exp(-d2 / (d2.median() * s)) for s in (0.25, 1.0, 4.0)) / 3

    def within(k):
        return (k.sum() - k.diagonal().sum()) / (k.shape[0] * (k.shape[0] - 1))

    ref = torch.stack([within(K[codes == b][:, codes == b]) + within(K[codes != b][:, codes != b])
                       - 2 * K[codes == b][:, codes != b].mean() for b in range(3)]).mean()
    assert torch.allclose(batch_mmd(zz, codes, 3), ref, atol=1e-6)


# --- settings and bad input -------------------------------------------------------------------------------------


def test_settings_are_checked():
    with pytest.raises(UserError, match="dispersion='gene-batch' needs batch_key"):
        genodae.DAE(dispersion="gene-batch")
    with pytest.raises(UserError, match="encode_covariates needs batch_key"):
        genodae.DAE(encode_covariates=True)
    with pytest.raises(UserError, match="named twice"):
        genodae.DAE(batch_key="b", categorical_covariate_keys=("b",))
    cfg = genodae.DAE(batch_key="batch", categorical_covariate_keys="donor").config
    assert cfg.categorical_covariate_keys == ("donor",) and cfg.resolved_dispersion() == "gene-batch"
    assert genodae.DAE().config.resolved_dispersion() == "gene"


def test_bad_batch_columns_are_one_line_errors():
    a = batched_counts()
    genodae.pp.prepare(a, batch_key="batch")
    with pytest.raises(UserError, match="batch_key 'plate' is not an obs column"):
        genodae.DAE(batch_key="plate", **FAST).fit(a)
    b = a.copy()
    b.obs["batch"] = b.obs["batch"].astype(str)
    b.obs.iloc[0, b.obs.columns.get_loc("batch")] = "lonely"
    with pytest.raises(UserError, match="batch 'lonely' of 'batch' has only 1 cell"):
        genodae.DAE(batch_key="batch", **FAST).fit(b)
    with pytest.raises(UserError, match="has only 1 cell"):
        genodae.pp.prepare(_one_cell_batch(), batch_key="batch")
    b.obs["batch"] = b.obs["batch"].where(np.arange(b.n_obs) != 3, None)
    with pytest.raises(UserError, match="missing value"):
        genodae.DAE(batch_key="batch", **FAST).fit(b)
    c = a.copy()
    c.obs["depth"] = "high"
    with pytest.raises(UserError, match="non-numeric"):
        genodae.DAE(continuous_covariate_keys=("depth",), **FAST).fit(c)


def _one_cell_batch():
    a = batched_counts()
    a.obs["batch"] = a.obs["batch"].astype(str)
    a.obs.iloc[0, a.obs.columns.get_loc("batch")] = "lonely"
    return a


def test_prepare_batch_aware_genes_and_unknown_column():
    a = make_counts(n_cells=300, n_genes=200)
    with pytest.raises(UserError, match="batch_key 'plate' is not an obs column"):
        genodae.pp.prepare(a.copy(), batch_key="plate")
    b = batched_counts()
    genodae.pp.prepare(b, batch_key="batch", n_top_genes=50)
    assert int(b.var["highly_variable"].sum()) == 50
    assert b.uns["genodae_prepare"]["params"]["batch_key"] == "batch"


# --- training, embedding, denoising -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    a = batched_counts(effect=1.0)
    genodae.pp.prepare(a, batch_key="batch")
    model = genodae.DAE(batch_key="batch", **{**FAST, "epochs": 40}).fit(a)
    return a, model


def test_fit_records_levels_and_weights_are_the_decoder_matrix(trained):
    a, model = trained
    assert model.covariates["categorical"] == {"batch": ["b1", "b2"]}
    raw = model.module.decoder.weight.detach().numpy()  # the batch offsets are a separate table, not in it
    np.testing.assert_allclose(model.decoder_weights @ model.readout["transform"].T, raw, atol=1e-5)
    genodae_uns = model.params_record()
    assert list(genodae_uns["covariates"]["categorical"]["batch"]) == ["b1", "b2"]


def test_embedding_mixes_batches_better_than_without_batch_key():
    """The known batch effect separates the batches in the plain model's embedding; with batch_key (decoder
    conditioning + the batch-mixing penalty) the batches mix while the planted groups stay apart."""
    a = batched_counts(effect=1.0, n_cells=400)
    genodae.pp.prepare(a, batch_key="batch")
    plain = genodae.DAE(**{**FAST, "epochs": 60}).fit(a).embed(a)
    cond = genodae.DAE(batch_key="batch", **{**FAST, "epochs": 60}).fit(a).embed(a)
    batch, group = a.obs["batch"].astype(str).to_numpy(), a.obs["group"].astype(str).to_numpy()
    assert knn_acc(cond, batch) < knn_acc(plain, batch) - 0.1
    assert knn_acc(cond, group) > 0.9


def test_unseen_batch_embeds_with_an_unconditioned_encoder(trained, caplog):
    a, model = trained
    Z = model.embed(a)
    b = a.copy()
    b.obs["batch"] = "new-plate"
    assert np.array_equal(model.embed(b), Z)  # the embedding does not depend on the batch
    del b.obs["batch"]
    assert np.array_equal(model.embed(b), Z)
    model.annotate(b)  # the decoder uses the mean of the batch offsets: scores still computed
    assert np.isfinite(b.obs["dae_recon_error"]).all()


def test_transform_batch(trained):
    a, model = trained
    own = model.denoise(a, scale="normalized")
    as_b1 = model.denoise(a, scale="normalized", transform_batch="b1")
    b1 = (a.obs["batch"] == "b1").to_numpy()
    np.testing.assert_array_equal(as_b1[b1], own[b1])  # b1 cells as if from b1: unchanged
    assert not np.allclose(as_b1[~b1], own[~b1])
    with pytest.raises(UserError, match="transform_batch 'p9' is not a batch of the model; its batches"):
        model.denoise(a, transform_batch="p9")
    c = a.copy()
    with pytest.raises(UserError, match="add denoised=True"):
        model.annotate(c, transform_batch="b1")
    model.annotate(c, denoised=True, transform_batch="b2")
    assert c.uns["dae"]["transform_batch"] == "b2"
    plain = genodae.DAE(**FAST).fit(a)
    with pytest.raises(UserError, match="needs a model trained with batch_key"):
        plain.denoise(a, transform_batch="b1")


def test_save_load_keeps_covariates(trained, tmp_path):
    a, model = trained
    model.save(tmp_path / "m")
    back = genodae.DAE.load(tmp_path / "m")
    assert back.covariates == model.covariates
    np.testing.assert_array_equal(back.embed(a), model.embed(a))
    np.testing.assert_array_equal(back.denoise(a, transform_batch="b1"), model.denoise(a, transform_batch="b1"))


def test_continuous_and_categorical_covariates_train():
    a = batched_counts()
    rng = np.random.default_rng(0)
    a.obs["pct_mt"] = rng.random(a.n_obs) * 10
    a.obs["donor"] = pd.Categorical(rng.choice(["d1", "d2", "d3"], a.n_obs))
    genodae.pp.prepare(a, batch_key="batch")
    m = genodae.DAE(batch_key="batch", categorical_covariate_keys=("donor",), continuous_covariate_keys=("pct_mt",),
                    gene_likelihood="nb", **FAST).fit(a)
    assert m.module.log_theta.shape == (2, m.module.n_input)
    assert m.covariates["continuous"]["pct_mt"][1] > 0
    b = a.copy()
    del b.obs["pct_mt"]
    assert m.embed(b).shape == (a.n_obs, 4)  # a missing continuous column: its training mean (a warning)


def test_encode_covariates_refuses_unseen_levels(trained):
    a, _ = trained
    model = genodae.DAE(batch_key="batch", encode_covariates=True, **FAST).fit(a)
    b = a.copy()
    b.obs["batch"] = "p3"
    with pytest.raises(UserError, match="not seen in training and the encoder is conditioned on it: map them"):
        model.embed(b)
    del b.obs["batch"]
    with pytest.raises(UserError, match="conditioned on obs column 'batch', which these data lack"):
        model.embed(b)


# --- reference mapping ------------------------------------------------------------------------------------------


def test_map_query_trains_only_new_levels(trained):
    a, _ = trained
    ref = a[a.obs["batch"] == "b1"].copy()
    ref.obs["plate"] = np.where(np.arange(ref.n_obs) % 2 == 0, "r1", "r2")
    query = a[a.obs["batch"] == "b2"].copy()
    query.obs["plate"] = "q1"
    model = genodae.DAE(batch_key="plate", encode_covariates=True, **FAST).fit(ref)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    mapped = model.map_query(query, epochs=5)
    assert mapped.covariates["categorical"]["plate"] == ["r1", "r2", "q1"]
    assert mapped.mapping[0]["levels"] == {"plate": ["q1"]}
    assert mapped.preset == model.preset == "default"  # the settings' provenance travels with the copy
    for k, v in model.module.state_dict().items():  # the reference model is untouched
        assert torch.equal(v, before[k])
    for k, v in mapped.module.state_dict().items():
        ref_v = before[k]
        assert torch.equal(v[: ref_v.shape[0]], ref_v) if v.shape != ref_v.shape else torch.equal(v, ref_v)
    np.testing.assert_array_equal(mapped.embed(ref), model.embed(ref))
    np.testing.assert_array_equal(mapped.weights, model.weights)
    with pytest.raises(UserError, match="already in the model; nothing to map"):
        mapped.map_query(query)
    q2 = query.copy()
    del q2.obs["plate"]
    with pytest.raises(UserError, match="the query has no obs column 'plate'"):
        model.map_query(q2)
    with pytest.raises(UserError, match="needs a model trained with batch_key"):
        genodae.DAE(**FAST).fit(ref).map_query(query)


@pytest.mark.slow
def test_map_third_celseq2_plate(shared_data):
    """Train on two CEL-seq2 plates (encoder conditioned on the plate), map the third: the mapped cells' cell line
    transferred by 15-NN from the reference is >= 0.95 accurate, and the reference embedding is unchanged bit for bit."""
    d = shared_data / "scrna"
    files = [d / f"sc_celseq2_5cl_p{p}.count.csv.gz" for p in (1, 2, 3)]
    if not all(f.exists() for f in files):
        pytest.skip("CEL-seq2 plates not in the shared data")
    a = genodae.read_many(files, batch_key="plate", batch_names=["p1", "p2", "p3"],
                          sample_sheets=[d / f"sc_celseq2_5cl_p{p}.metadata.csv.gz" for p in (1, 2, 3)])
    a = a[a.obs["demuxlet_cls"] == "SNG"].copy()
    ref, query = a[a.obs["plate"] != "p3"].copy(), a[a.obs["plate"] == "p3"].copy()
    genodae.pp.prepare(ref, batch_key="plate")
    model = genodae.DAE(batch_key="plate", encode_covariates=True, seed=0, device="cpu").fit(ref)
    Z_ref = model.embed(ref)
    mapped = model.map_query(query)
    assert np.array_equal(mapped.embed(ref), Z_ref)
    knn = KNeighborsClassifier(15).fit(Z_ref, ref.obs["cell_line_demuxlet"].to_numpy())
    acc = float((knn.predict(mapped.embed(query)) == query.obs["cell_line_demuxlet"].to_numpy()).mean())
    assert acc >= 0.95, acc


# --- CLI --------------------------------------------------------------------------------------------------------


def test_cli_train_map_embed_transform_batch(tmp_path, capsys):
    a = batched_counts()
    ref = a[a.obs["batch"] == "b1"].copy()
    ref.obs["plate"] = np.where(np.arange(ref.n_obs) % 2 == 0, "r1", "r2")
    query = a[a.obs["batch"] == "b2"].copy()
    query.obs["plate"] = "q1"
    genodae.pp.prepare(ref, batch_key="plate")
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    fast = ["--n-latent", "4", "--hidden", "16", "--epochs", "5", "--device", "cpu"]
    assert main(["train", str(tmp_path / "ref.h5ad"), "-o", str(tmp_path / "m"), "--batch-key", "plate",
                 "--encode-covariates", *fast]) == 0
    assert main(["embed", str(tmp_path / "query.h5ad"), str(tmp_path / "m"), "-o", str(tmp_path / "q.h5ad")]) == 2
    assert "map them onto the model first" in capsys.readouterr().err
    assert main(["map", str(tmp_path / "query.h5ad"), str(tmp_path / "m"), "-o", str(tmp_path / "mapped"),
                 "--epochs", "3"]) == 0
    assert main(["embed", str(tmp_path / "query.h5ad"), str(tmp_path / "mapped"), "-o", str(tmp_path / "q.h5ad"),
                 "--denoised", "--transform-batch", "r1"]) == 0
    out = genodae.read(tmp_path / "q.h5ad")
    assert out.obsm["X_dae"].shape == (query.n_obs, 4) and out.uns["dae"]["transform_batch"] == "r1"
    capsys.readouterr()
    assert main(["embed", str(tmp_path / "query.h5ad"), str(tmp_path / "mapped"), "-o", str(tmp_path / "x.h5ad"),
                 "--transform-batch", "r1"]) == 2
    assert "add --denoised" in capsys.readouterr().err
    assert main(["map", str(tmp_path / "ref.h5ad"), str(tmp_path / "m"), "-o", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "nothing to map" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "again").exists() and not (tmp_path / "x.h5ad").exists()


def test_cli_run_several_inputs_conditions_the_model(tmp_path):
    a = batched_counts()
    for lv in ("b1", "b2"):
        sub = a[a.obs["batch"] == lv]
        pd.DataFrame(sub.X.toarray().T, index=sub.var_names, columns=sub.obs_names).to_csv(tmp_path / f"{lv}.csv")
    assert main(["run", str(tmp_path / "b1.csv"), str(tmp_path / "b2.csv"), "-o", str(tmp_path / "out"),
                 "--batch-key", "plate", "--n-latent", "4", "--hidden", "16", "--epochs", "5", "--device", "cpu"]) == 0
    model = genodae.DAE.load(tmp_path / "out" / "model")
    assert model.config.batch_key == "plate"
    assert model.covariates["categorical"]["plate"] == ["b1", "b2"]
