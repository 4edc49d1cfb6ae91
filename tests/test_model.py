"""genodae.DAE: save/load, projection of new raw data, safe loading, decoders, presets, denoised values."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import torch

import genodae
from genodae import DAE, DAEConfig, pp
from genodae.errors import UserError
from genodae.model import META_FILE, WEIGHTS_FILE
from genodae.train import embed

FAST = dict(n_latent=6, hidden=(32,), epochs=8, batch_size=32, num_threads=1, seed=0)


@pytest.fixture(scope="module")
def raw(_counts_adata_session) -> anndata.AnnData:
    return _counts_adata_session.copy()


@pytest.fixture(scope="module")
def prepared(raw) -> anndata.AnnData:
    adata = raw.copy()
    pp.prepare(adata, n_top_genes=150)
    return adata


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """(model, saved model folder)."""
    model = DAE(**FAST).fit(prepared)
    path = tmp_path_factory.mktemp("model") / "m"
    model.save(path)
    return model, path


# --- save / load ----------------------------------------------------------------------------------------


def test_saved_model_is_safetensors_plus_json(trained, prepared):
    _, path = trained
    assert sorted(p.name for p in path.iterdir()) == sorted([WEIGHTS_FILE, META_FILE])
    meta = json.loads((path / META_FILE).read_text())
    assert meta["format"] == "genodae-model" and meta["format_version"] >= 1
    assert meta["genes"] == list(prepared.var_names[prepared.var["highly_variable"]])
    assert meta["config"]["n_latent"] == 6
    assert meta["prepare"]["input_kind"] == "counts"
    assert meta["genodae_version"]
    raw_bytes = (path / WEIGHTS_FILE).read_bytes()
    assert raw_bytes[:1] != b"\x80" and raw_bytes[:2] != b"PK"


def test_save_load_round_trip_gives_the_identical_embedding(trained, prepared):
    model, path = trained
    loaded = DAE.load(path)
    Z = model.embed(prepared)
    assert Z.shape == (prepared.n_obs, 6)
    np.testing.assert_array_equal(loaded.embed(prepared), Z)
    pd.testing.assert_frame_equal(loaded.gene_weights(), model.gene_weights())
    for k, v in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v.cpu())


def test_load_embeds_raw_counts_with_shuffled_genes_like_the_prepared_data(trained, prepared, raw):
    """Genes aligned by name and the saved preparation (normalise, log1p, scaling) re-applied to raw counts."""
    model, path = trained
    loaded = DAE.load(path)
    perm = np.random.default_rng(0).permutation(raw.n_vars)
    shuffled = raw[:, perm].copy()
    assert not shuffled.var_names.equals(raw.var_names)
    Z_raw = loaded.embed(shuffled)
    np.testing.assert_allclose(Z_raw, model.embed(prepared), rtol=1e-4, atol=1e-5)
    # prepared data with shuffled genes are aligned too
    np.testing.assert_allclose(loaded.embed(prepared[:, perm].copy()), model.embed(prepared), rtol=1e-5, atol=1e-6)


def test_embedding_a_subset_of_cells_and_a_single_cell(trained, prepared, raw):
    model, _ = trained
    Z = model.embed(prepared)
    np.testing.assert_allclose(model.embed(raw[[5, 17, 2]].copy()), Z[[5, 17, 2]], rtol=1e-4, atol=1e-5)
    one = model.embed(raw[[9]].copy())
    assert one.shape == (1, 6)
    np.testing.assert_allclose(one, Z[[9]], rtol=1e-4, atol=1e-5)


def test_missing_genes_are_an_error_that_says_how_many(trained, raw):
    model, _ = trained
    genes = list(model.genes)
    partial = raw[:, ~raw.var_names.isin(genes[:3])].copy()
    with pytest.raises(UserError, match=r"\b3 of the model's 150 genes") as e:
        model.embed(partial)
    assert genes[0] in str(e.value)  # and names some of them


def test_allow_missing_genes_fills_them_with_model_input_zero(trained, prepared):
    model, _ = trained
    genes = list(model.genes)
    drop = genes[:3]
    partial = prepared[:, ~prepared.var_names.isin(drop)].copy()
    Z = model.embed(partial, allow_missing_genes=True)
    # the same as the full data with those genes at their training minimum (scaled input 0)
    filled = prepared.copy()
    X = filled.X.toarray()
    cols = filled.var_names.get_indexer(drop)
    X[:, cols] = filled.var["genodae_offset"].to_numpy()[cols]
    filled.X = X
    np.testing.assert_allclose(Z, model.embed(filled), rtol=1e-5, atol=1e-6)


def test_raw_data_must_be_counts_for_a_counts_model(trained, raw):
    model, _ = trained
    bad = raw.copy()
    bad.X = bad.X.toarray() + 0.5
    with pytest.raises(UserError, match="counts"):
        model.embed(bad)


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_crafted_pickle_payload_is_refused_without_running(trained, tmp_path, kind):
    _, good = trained
    # the payload is live: unpickling it does create a marker file
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_model"
    evil.mkdir()
    (evil / META_FILE).write_text((good / META_FILE).read_text())  # a genuine description
    if kind == "pickle":
        (evil / WEIGHTS_FILE).write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"module.encoder.0.weight": _Payload(marker)}, evil / WEIGHTS_FILE)
    with pytest.raises(UserError, match="safetensors"):
        DAE.load(evil)
    assert not marker.exists()


def test_damaged_or_absent_model_folders_are_user_errors(trained, tmp_path):
    _, good = trained
    with pytest.raises(UserError, match="not a folder"):
        DAE.load(tmp_path / "absent")
    only_json = tmp_path / "only_json"
    only_json.mkdir()
    (only_json / META_FILE).write_text((good / META_FILE).read_text())
    with pytest.raises(UserError, match=WEIGHTS_FILE):
        DAE.load(only_json)
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / WEIGHTS_FILE).write_bytes((good / WEIGHTS_FILE).read_bytes())
    (bad_json / META_FILE).write_text("{not json")
    with pytest.raises(UserError, match="JSON"):
        DAE.load(bad_json)
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / WEIGHTS_FILE).write_bytes((good / WEIGHTS_FILE).read_bytes())
    meta = json.loads((good / META_FILE).read_text())
    meta["format_version"] = 999
    (newer / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="newer"):
        DAE.load(newer)


def test_save_replaces_an_existing_model_atomically(trained, prepared, tmp_path):
    model, _ = trained
    path = tmp_path / "m"
    model.save(path)
    other = DAE(**{**FAST, "seed": 1, "epochs": 2}).fit(prepared)
    other.save(path)
    np.testing.assert_array_equal(DAE.load(path).embed(prepared), other.embed(prepared))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary left behind


# --- training errors --------------------------------------------------------------------------------------


def test_n_latent_larger_than_genes_is_a_user_error(prepared):
    with pytest.raises(UserError, match="n_latent=151"):
        DAE(n_latent=151, epochs=1).fit(prepared)


def test_layer_not_found_is_a_user_error(prepared):
    with pytest.raises(UserError, match="'nope' not found"):
        DAE(**FAST).fit(prepared, layer="nope")


def test_single_sample_cannot_be_trained_on(prepared):
    with pytest.raises(UserError, match="2 samples"):
        DAE(n_latent=2, epochs=1).fit(prepared[:1].copy())


def test_unfitted_model_is_a_user_error(prepared):
    with pytest.raises(UserError, match="not trained"):
        DAE().embed(prepared)


def test_bernoulli_needs_minmax_scaling(raw):
    adata = raw.copy()
    pp.prepare(adata, n_top_genes=0, scaling="zscore")
    with pytest.raises(UserError, match="bernoulli"):
        DAE(gene_likelihood="bernoulli", epochs=1).fit(adata)


def test_adage_preset_min_max_scales_dense_data_that_auto_scaling_z_scored(caplog):
    """scaling='auto' z-scores dense bulk data; the adage preset's Bernoulli likelihood needs 0-1 input, so the
    model min-max scales the genes itself (it was asked for nothing else), and embeds new samples the same way.
    An explicit scaling='zscore' stays an error (test above)."""
    rng = np.random.default_rng(0)
    X = (rng.normal(8, 1.5, size=(1, 40)) + rng.normal(0, 0.7, size=(80, 40))).astype(np.float32)
    adata = anndata.AnnData(X)
    pp.prepare(adata)
    assert adata.uns["genodae_prepare"]["params"]["scaling"] == "zscore"
    with caplog.at_level("INFO", logger="genodae"):
        model = DAE(preset="adage", n_latent=4, epochs=2, num_threads=1).fit(adata)
    assert "the model min-max scales the genes itself" in caplog.text
    assert model.prep["params"]["scaling"] == "minmax"
    assert adata.uns["genodae_prepare"]["params"]["scaling"] == "zscore"  # the data's record is left as it was
    np.testing.assert_allclose(model.offset, X.min(0), rtol=1e-6)
    np.testing.assert_allclose(model.scale, X.max(0) - X.min(0), rtol=1e-5)
    new = anndata.AnnData(X[:5] + 0.1)
    Z = model.embed(new)
    assert Z.shape == (5, 4) and np.isfinite(Z).all()
    # what the model used is what its keys say: the export's gene table, the model input of signatures
    from genodae.signatures import model_input
    from genodae.tables import export_tables

    model.annotate(adata)
    np.testing.assert_allclose(adata.uns["dae"]["input_offset"], model.offset)
    genes = export_tables(adata)["genes"]
    np.testing.assert_allclose(genes["offset"].to_numpy(float), X.min(0), rtol=1e-6)
    np.testing.assert_allclose(genes["scale"].to_numpy(float), X.max(0) - X.min(0), rtol=1e-5)
    Xin, _ = model_input(adata, "dae")
    assert Xin.min() == pytest.approx(0, abs=1e-6) and Xin.max() == pytest.approx(1, abs=1e-5)
    assert model_input(adata)[0].min() < -1  # the preparation's z-scores


def test_an_output_activation_that_cannot_reach_the_scaled_values_gets_0_1_input_or_a_clear_error(caplog):
    """sigmoid outputs lie in (0, 1) and relu's in [0, inf): they cannot reconstruct z-scores. On input that
    scaling='auto' z-scored the model min-max scales the genes itself; an explicit zscore is an error."""
    rng = np.random.default_rng(1)
    X = (rng.normal(8, 1.5, size=(1, 30)) + rng.normal(0, 0.7, size=(60, 30))).astype(np.float32)
    auto = anndata.AnnData(X.copy())
    pp.prepare(auto)
    with caplog.at_level("INFO", logger="genodae"):
        model = DAE(output_activation="sigmoid", n_latent=3, hidden=(), epochs=2, num_threads=1).fit(auto)
    assert model.prep["params"]["scaling"] == "minmax" and "output_activation='sigmoid'" in caplog.text
    explicit = anndata.AnnData(X.copy())
    pp.prepare(explicit, scaling="zscore")
    with pytest.raises(UserError, match=r"output_activation='relu' .* needs 0-1 input: prepare with "
                                        r"scaling='minmax' or 'auto' .* or choose output_activation='linear'$"):
        DAE(output_activation="relu", n_latent=3, hidden=(), epochs=1, num_threads=1).fit(explicit)
    assert DAE(n_latent=3, hidden=(), epochs=1, num_threads=1).fit(explicit).prep["params"]["scaling"] == "zscore"
    # what can reach the targets trains as asked: leaky_relu on z-scores; relu on non-negative log values unscaled
    assert DAE(output_activation="leaky_relu", n_latent=3, hidden=(), epochs=1, num_threads=1).fit(
        explicit).prep["params"]["scaling"] == "zscore"
    unscaled = anndata.AnnData(X.copy())
    pp.prepare(unscaled, scaling="none")
    assert DAE(output_activation="relu", n_latent=3, hidden=(), epochs=1, num_threads=1).fit(
        unscaled).prep["params"]["scaling"] == "none"
    with pytest.raises(UserError, match=r"output_activation='sigmoid' \(its outputs cannot reach every unscaled"):
        DAE(output_activation="sigmoid", n_latent=3, hidden=(), epochs=1, num_threads=1).fit(unscaled)


def test_denoised_log_normalised_values_are_never_negative():
    """z-scored input (scaling='auto' without counts) has no clipping to the gene's range: the denoised values of
    non-negative input (log-normalised counts, log1p of intensities) are kept at or above 0."""
    rng = np.random.default_rng(2)
    counts = rng.poisson(rng.gamma(0.4, 1.5, size=(1, 40)), size=(120, 40)).astype(np.float32)
    logn = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    adata = anndata.AnnData(logn)
    pp.prepare(adata, input_kind="log", n_top_genes=0)
    assert adata.uns["genodae_prepare"]["params"]["scaling"] == "zscore"
    model = DAE(n_latent=3, hidden=(16,), epochs=3, num_threads=1).fit(adata)
    D = model.denoise(adata, scale="input")
    D = D.toarray() if hasattr(D, "toarray") else np.asarray(D)
    assert np.isfinite(D).all() and D.min() >= 0


def test_the_old_loss_setting_is_refused_with_its_new_name():
    with pytest.raises(UserError, match=r"loss='bce' is now gene_likelihood \(mse → normal, bce → bernoulli"):
        DAE(loss="bce")


@pytest.mark.parametrize("device", ["cuda:x", "cuda:", "cuda:-1", "gpu", "CUDA", "cuda:01", "cuda:128", "cuda:0\n"])
def test_a_malformed_device_is_refused_as_the_workflow_schema_refuses_it(device):
    import re

    from genodae.config import DEVICE_PATTERN, DAEConfig

    assert re.fullmatch(DEVICE_PATTERN, device) is None  # the schema's pattern (workflow/schema.py) agrees
    with pytest.raises(UserError, match=r"device must be auto, cpu, cuda or cuda:N"):
        DAEConfig(device=device)
    from genodae.train import resolve_device

    with pytest.raises(UserError, match=r"device must be auto, cpu, cuda or cuda:N"):
        resolve_device(device)  # the same rule where a device is resolved (embed, load), before torch parses it
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "cuda:99"):
        assert DAEConfig(device=ok).device == ok


def test_zscore_model_has_a_linear_output_and_trains(raw):
    adata = raw.copy()
    pp.prepare(adata, n_top_genes=0, scaling="zscore")
    model = DAE(n_latent=4, hidden=(), epochs=3, num_threads=1).fit(adata)
    assert model.module.output_activation == "linear"
    assert np.isfinite(model.embed(adata)).all()


def test_collapsed_training_is_not_silent(caplog):
    # lr 1.0 + ReLU kills every hidden unit (the failure mode of bench/README.md): the embedding is constant
    rng = np.random.default_rng(0)
    adata = anndata.AnnData(rng.poisson(rng.gamma(0.5, 2, size=(1, 200)), size=(300, 200)).astype(np.float32))
    pp.prepare(adata, n_top_genes=0)
    with caplog.at_level("WARNING", logger="genodae"):
        DAE(n_latent=4, hidden=(16,), activation="relu", lr=1.0, epochs=5, num_threads=1).fit(adata)
    assert any("training collapsed" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="genodae"):
        DAE(n_latent=4, hidden=(16,), epochs=5, num_threads=1).fit(adata)  # defaults: healthy
    assert not any("collapsed" in r.getMessage() for r in caplog.records)


def test_collapse_ratio():
    from genodae.train import COLLAPSED, collapse_ratio

    assert collapse_ratio(np.ones((5, 3))) == 0.0 < COLLAPSED
    assert collapse_ratio(np.random.default_rng(0).normal(size=(50, 3))) > 0.1
    assert collapse_ratio(np.zeros((1, 3))) == float("inf")  # one cell: nothing to compare


def test_auto_output_activation_is_sigmoid_only_with_bernoulli():
    from genodae.config import DAEConfig

    assert DAEConfig().resolved_output_activation() == "linear"
    assert DAEConfig(gene_likelihood="bernoulli").resolved_output_activation() == "sigmoid"
    assert DAEConfig(gene_likelihood="nb").resolved_output_activation() == "linear"
    assert DAEConfig(output_activation="sigmoid").resolved_output_activation() == "sigmoid"


def test_unscaled_log_input_round_trips_through_a_saved_model(raw, tmp_path):
    adata = raw.copy()
    pp.prepare(adata, n_top_genes=0, scaling="none")
    used = adata.var["highly_variable"].to_numpy(bool)
    assert (adata.var["genodae_offset"][used] == 0).all() and (adata.var["genodae_scale"][used] == 1).all()
    model = DAE(n_latent=3, hidden=(8,), epochs=2, num_threads=1).fit(adata)
    Z = model.embed(adata)
    model.save(tmp_path / "m")
    np.testing.assert_allclose(DAE.load(tmp_path / "m").embed(adata), Z, rtol=1e-5, atol=1e-6)
    model.annotate(adata, denoised=True)  # back on the log scale: offset 0, scale 1, no 0-1 clipping
    assert np.isfinite(np.asarray(adata.layers["dae_denoised"])).all()


# --- decoders and presets ---------------------------------------------------------------------------------


def test_linear_decoder_gene_weights_are_the_decoder_matrix(trained, prepared):
    """decoder=True: the decoder matrix in the reported basis (W · transform⁻ᵀ), so decoding the reported
    embedding gives exactly the decoder's pre-activation of the bottleneck."""
    model, _ = trained
    gw = model.gene_weights(decoder=True)
    assert list(gw.columns) == [f"node{i}" for i in range(6)]
    assert gw.index.equals(model.genes)
    T = model.readout["transform"]
    raw = model.module.decoder.weight.detach().cpu().numpy()
    np.testing.assert_allclose(gw.to_numpy() @ T.T, raw, atol=1e-5)
    source = model._input(prepared, False)
    Z = embed(model.module, source)
    E = model.embed(prepared)
    np.testing.assert_allclose(E, (Z - model.readout["mean"]) @ T, rtol=1e-4, atol=1e-5)
    lhs = E.astype(np.float64) @ gw.to_numpy().T  # + the decoder weights times the training mean of Z
    rhs = (Z - model.readout["mean"]) @ raw.T
    np.testing.assert_allclose(lhs, rhs, atol=1e-3)


def _correlations(X, E):
    Xc, Ec = X - X.mean(0), E - E.mean(0)
    sx, se = Xc.std(0), Ec.std(0)
    ok = sx > 0
    return ok, (Xc[:, ok].T @ Ec) / len(X) / np.outer(sx[ok], se)


def test_default_gene_weights_are_correlations_with_nodes_that_keep_distances(trained, prepared):
    """rotation='varimax' (default): the reported embedding is an orthogonal rotation of the centred bottleneck
    (every distance between cells as trained); each gene weight is the gene's Pearson correlation, over the
    training cells, between its model input and the node's reported activity."""
    model, _ = trained
    assert model.config.rotation == "varimax" and model.readout is not None
    T = model.readout["transform"].astype(np.float64)
    np.testing.assert_allclose(T.T @ T, np.eye(len(T)), atol=1e-8)
    X, _ = genodae.signatures.model_input(prepared)
    E = model.embed(prepared).astype(np.float64)
    Z = embed(model.module, model._input(prepared, False)).astype(np.float64)
    i, j = np.arange(0, 60), np.arange(60, 120)
    np.testing.assert_allclose(np.linalg.norm(E[i] - E[j], axis=1), np.linalg.norm(Z[i] - Z[j], axis=1), rtol=1e-4)
    ok, r = _correlations(X, E)
    W = model.gene_weights().to_numpy()
    np.testing.assert_allclose(W[ok], r, atol=2e-3)
    cov = W * E.std(axis=0)  # ∝ the genes' covariances with the nodes (÷ gene SD): what varimax signs and orders
    assert np.all(np.diff(cov[ok].var(axis=0)) <= 1e-6)  # nodes ordered by the variance of their loadings
    assert np.all(genodae.rotation._skew(cov[ok]) >= 0)  # each node's largest weights are positive
    a = prepared.copy()
    model.annotate(a)
    assert a.uns["dae"]["params"]["rotation"] == "varimax"
    assert genodae.signatures._read_out([(a, "dae")], "none") == "varimax"  # tl.ensemble's cut: 0.5


def test_sparse_model_nodes_are_the_signatures_read_out_of_the_default_model(trained, prepared):
    """rotation='sparse': the same network reports the oblique sparse nodes, which are what tl.signatures reads
    from a default model (the rotation depends only on the space the nodes span): weights = correlations with
    the reported nodes, ordered by the variance of their weights."""
    model, _ = trained
    sparse = DAE(**{**FAST, "rotation": "sparse"}).fit(prepared)
    assert sparse.config.rotation == "sparse"
    for p, q in zip(model.module.parameters(), sparse.module.parameters(), strict=True):
        assert torch.equal(p, q)  # the rotation changes only the read-out
    X, _ = genodae.signatures.model_input(prepared)
    W = sparse.gene_weights().to_numpy()
    ok, r = _correlations(X, sparse.embed(prepared).astype(np.float64))
    np.testing.assert_allclose(W[ok], r, atol=2e-3)
    assert np.all(np.diff(W.var(axis=0)) <= 1e-6)
    a = prepared.copy()
    model.annotate(a)
    genodae.tl.rotate(a)  # tl.signatures' default read-out, from the default model's varimax nodes
    np.testing.assert_allclose(a.varm["dae_sparse_weights"][a.var_names.get_indexer(sparse.genes)], W, atol=2e-3)


def test_rotation_none_keeps_the_trained_basis(prepared, tmp_path):
    model = DAE(n_latent=4, hidden=(), epochs=3, rotation="none", num_threads=1).fit(prepared)
    assert model.readout is None
    raw = model.module.decoder.weight.detach().cpu().numpy()
    np.testing.assert_array_equal(model.gene_weights().to_numpy(), raw)
    np.testing.assert_array_equal(model.gene_weights(decoder=True).to_numpy(), raw)
    model.save(tmp_path / "m")
    back = DAE.load(tmp_path / "m")
    assert back.readout is None and back.config.rotation == "none"
    np.testing.assert_array_equal(back.embed(prepared), model.embed(prepared))


def test_the_readable_basis_survives_save_and_load(trained, prepared, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    back = DAE.load(tmp_path / "m")
    np.testing.assert_array_equal(back.readout["transform"], model.readout["transform"])
    np.testing.assert_array_equal(back.embed(prepared), model.embed(prepared))
    np.testing.assert_array_equal(back.gene_weights(decoder=True).to_numpy(),
                                  model.gene_weights(decoder=True).to_numpy())


def test_too_few_cells_for_the_nodes(caplog):
    """Fewer cells than nodes: the sparse read-out (whitening) keeps the trained basis; varimax, an orthogonal
    rotation, still rotates, and the nodes without spread are empty (zero weights); both say so."""
    a = genodae.synthetic.planted_programs(n_cells=8, n_genes=60, n_programs=2, module_size=5, seed=0)
    p = genodae.pp.prepare(a, copy=True)
    with caplog.at_level("WARNING", logger="genodae"):
        model = DAE(n_latent=10, hidden=(), epochs=2, num_threads=1, val_fraction=0.0, rotation="sparse").fit(p)
    assert model.readout is None
    assert "kept as trained" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="genodae"):
        model = DAE(n_latent=10, hidden=(), epochs=2, num_threads=1, val_fraction=0.0).fit(p)
    assert model.readout is not None and "carry (nearly) no variance" in caplog.text
    E = model.embed(p).astype(np.float64)
    Z = embed(model.module, model._input(p, False)).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(E[:4] - E[4:], axis=1), np.linalg.norm(Z[:4] - Z[4:], axis=1), rtol=1e-4)
    W = model.gene_weights().to_numpy()
    assert np.isfinite(W).all() and (np.abs(W).max(axis=0) < 1e-3).sum() >= 10 - 7  # 8 centred cells: rank <= 7


def test_a_format_5_varimax_model_loads_as_saved_and_warns(trained, prepared, tmp_path, caplog):
    """Before format 6, rotation='varimax' rotated the whitened bottleneck: such a folder embeds with the
    transform it stored, and loading says that its distances are not the trained ones."""
    model, path = trained
    old = tmp_path / "old"
    old.mkdir()
    for f in (WEIGHTS_FILE, META_FILE):
        (old / f).write_bytes((path / f).read_bytes())
    meta = json.loads((old / META_FILE).read_text())
    meta["format_version"] = 5
    (old / META_FILE).write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="genodae"):
        back = DAE.load(old)
    assert "before model format 6" in caplog.text
    np.testing.assert_array_equal(back.embed(prepared), model.embed(prepared))
    caplog.clear()
    with caplog.at_level("WARNING", logger="genodae"):
        DAE.load(path)
    assert "before model format 6" not in caplog.text


def test_mlp_decoder_gene_weights_are_a_finite_mean_jacobian(prepared):
    model = DAE(n_latent=4, hidden=(16,), decoder="mlp", epochs=2, num_threads=1).fit(prepared)
    gw = model.gene_weights()
    assert gw.shape == (150, 4) and gw.index.equals(model.genes)
    W = gw.to_numpy()
    assert np.isfinite(W).all() and np.abs(W).sum() > 0
    adata = prepared.copy()
    model.annotate(adata)
    used = adata.var["highly_variable"].to_numpy()
    np.testing.assert_array_equal(adata.varm["dae_weights"][used], W)
    assert np.all(adata.varm["dae_weights"][~used] == 0)


def test_adage_preset_trains_with_tied_weights(prepared, tmp_path):
    model = DAE(preset="adage", epochs=2, n_latent=5, num_threads=1).fit(prepared)
    cfg = model.config
    assert cfg.tied and cfg.hidden == () and cfg.corruption == 0.1 and cfg.gene_likelihood == "bernoulli"
    assert model.module.tied and model.module.decoder is None
    enc = model.module.encoder[0].weight.detach().cpu().numpy()
    np.testing.assert_array_equal(model.gene_weights().to_numpy(), enc.T)
    Z = model.embed(prepared)
    assert ((Z > 0) & (Z < 1)).all()  # sigmoid nodes, as in ADAGE
    model.save(tmp_path / "adage")
    loaded = DAE.load(tmp_path / "adage")
    np.testing.assert_array_equal(loaded.embed(prepared), Z)
    adata = prepared.copy()
    model.annotate(adata)
    adata.write_h5ad(tmp_path / "adage.h5ad")  # uns with hidden=() must be writable
    # the preset is recorded next to the settings, in uns and through save/load
    assert adata.uns["dae"]["preset"] == "adage" and loaded.preset == "adage"
    assert anndata.read_h5ad(tmp_path / "adage.h5ad").uns["dae"]["preset"] == "adage"


def test_a_model_built_from_a_config_records_no_preset(prepared, tmp_path):
    model = DAE(DAEConfig(epochs=1, n_latent=3, num_threads=1)).fit(prepared)
    assert model.params_record()["preset"] == ""
    model.save(tmp_path / "m")
    assert DAE.load(tmp_path / "m").preset == ""


def test_gaussian_denoised_layer_is_on_the_prepared_scale(prepared):
    model = DAE(**FAST, gene_likelihood="normal").fit(prepared)
    adata = prepared.copy()
    x_before = adata.X.copy()
    model.annotate(adata, denoised=True)
    assert adata.uns["dae"]["denoised_scale"] == "input"
    D = adata.layers["dae_denoised"]
    X = adata.X.toarray()
    assert D.shape == X.shape and (adata.X != x_before).nnz == 0
    used = adata.var["highly_variable"].to_numpy()
    np.testing.assert_array_equal(D[:, ~used], X[:, ~used])  # genes the model does not use keep their values
    lo = adata.var["genodae_offset"].to_numpy()[used]
    hi = lo + adata.var["genodae_scale"].to_numpy()[used]
    Du = D[:, used]
    assert (Du >= lo - 1e-4).all() and (Du <= hi + 1e-4).all()  # clipped to 0-1, mapped back to [min, max]
    # exactly the reconstruction of the clean scaled input, mapped back: r * scale + offset
    scale = adata.var["genodae_scale"].to_numpy()[used]
    xs = np.clip((X[:, used] - lo) / scale, 0, 1).astype(np.float32)
    with torch.no_grad():
        r = np.clip(model.module.cpu().reconstruct(torch.from_numpy(xs)).numpy(), 0, 1)
    np.testing.assert_allclose(Du, r * scale + lo, rtol=1e-4, atol=1e-4)
    assert abs(Du.mean() - X[:, used].mean()) < 0.5 * X[:, used].std()  # log scale, not the 0-1 model scale


def _nb_reference_nll(model, adata, rows):
    """Per-cell mean NB negative log-likelihood of the counts, from scipy, for the model's mean and theta."""
    from scipy import stats

    used = adata.var["highly_variable"].to_numpy()
    y = adata.layers["counts"][rows][:, used].toarray()
    mu = model.denoise(adata, scale="counts")[rows]
    theta = np.exp(model.module.log_theta.detach().cpu().double().numpy())[None, :]
    return -stats.nbinom.logpmf(y, theta, theta / (theta + mu)).mean(1)


@pytest.fixture(scope="module")
def nb_model(prepared):
    return DAE(**FAST, gene_likelihood="nb").fit(prepared)


def test_count_model_is_the_auto_choice_for_counts_and_is_recorded(trained, prepared):
    from genodae.config import AUTO_COUNT_LIKELIHOOD

    model, path = trained
    assert AUTO_COUNT_LIKELIHOOD in ("poisson", "nb", "zinb")
    assert model.config.gene_likelihood == "auto" and model.gene_likelihood == AUTO_COUNT_LIKELIHOOD
    adata = prepared.copy()
    model.annotate(adata)
    assert adata.uns["dae"]["gene_likelihood"] == AUTO_COUNT_LIKELIHOOD
    assert adata.uns["dae"]["params"]["gene_likelihood"] == "auto"
    assert DAE.load(path).gene_likelihood == AUTO_COUNT_LIKELIHOOD


def test_count_model_scores_are_nb_log_likelihoods_and_deviance_r2(nb_model, prepared):
    model = nb_model
    adata = prepared.copy()
    model.annotate(adata)
    rows = np.arange(20)
    np.testing.assert_allclose(adata.obs["dae_recon_error"].to_numpy()[rows], _nb_reference_nll(model, adata, rows),
                               rtol=1e-4)
    used = adata.var["highly_variable"].to_numpy()
    r2 = adata.var["dae_recon_r2"].to_numpy()
    assert np.isnan(r2[~used]).all() and np.isfinite(r2[used]).all() and (r2[used] <= 1).all()
    # Poisson deviance explained, against the null of each gene's overall share of every cell's library
    y = adata.layers["counts"][:, used].toarray()
    mu = model.denoise(adata, scale="counts")
    lib = y.sum(1, keepdims=True)

    def deviance(m):
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * (np.where(y > 0, y * np.log(y / m), 0) - (y - m)).sum(0)

    np.testing.assert_allclose(r2[used], 1 - deviance(mu) / deviance(lib * y.sum(0) / lib.sum()), rtol=1e-3, atol=1e-4)


def test_count_model_denoised_scales(trained, prepared):
    model, _ = trained
    adata = prepared.copy()
    used = adata.var["highly_variable"].to_numpy()
    C = adata.layers["counts"]
    counts = model.denoise(adata, scale="counts")
    assert counts.shape == (adata.n_obs, used.sum()) and (counts >= 0).all()
    np.testing.assert_allclose(counts.sum(1), np.asarray(C[:, used].sum(1)).ravel(), rtol=1e-4)  # the library kept
    totals = np.asarray(C.sum(1)).ravel()
    norm = model.denoise(adata)  # auto = normalized for a count model
    np.testing.assert_allclose(norm, counts / totals[:, None] * 1e4, rtol=1e-4)
    np.testing.assert_allclose(model.denoise(adata, scale="log1p"), np.log1p(norm), rtol=1e-4, atol=1e-6)
    # the same from the raw counts, which get the model's own preparation
    raw = anndata.AnnData(X=C.copy(), obs=adata.obs[[]], var=adata.var[[]])
    np.testing.assert_allclose(model.denoise(raw, scale="counts"), counts, rtol=1e-5)
    # the layer: normalised values; genes the model does not use keep their normalised input
    model.annotate(adata, denoised=True)
    D = adata.layers["dae_denoised"]
    assert adata.uns["dae"]["denoised_scale"] == "normalized"
    np.testing.assert_allclose(D[:, used], norm, rtol=1e-5)
    np.testing.assert_allclose(D[:, ~used], (C[:, ~used].toarray() / totals[:, None] * 1e4), rtol=1e-5)
    model.annotate(adata, denoised=True, denoised_scale="counts")
    np.testing.assert_array_equal(adata.layers["dae_denoised"][:, ~used], C[:, ~used].toarray())
    with pytest.raises(UserError, match="denoised_scale must be one of"):
        model.annotate(adata, denoised=True, denoised_scale="tpm")


def test_denoising_follows_sequencing_depth(trained, prepared):
    """The failure this likelihood fixes: denoised counts rise with a cell's depth (the log model's fell)."""
    model, _ = trained
    counts = model.denoise(prepared, scale="counts")
    depth = np.asarray(prepared.layers["counts"].sum(1)).ravel()
    assert np.corrcoef(counts.sum(1), depth)[0, 1] > 0.9


@pytest.mark.parametrize("likelihood", ["poisson", "zinb"])
def test_other_count_likelihoods_train_save_and_load(prepared, tmp_path, likelihood):
    model = DAE(**FAST, gene_likelihood=likelihood).fit(prepared)
    h = model.history
    assert np.isfinite(h.train_loss).all() and h.val_loss[-1] < h.val_loss[0]
    model.save(tmp_path / "m")
    loaded = DAE.load(tmp_path / "m")
    assert loaded.gene_likelihood == likelihood
    a, b = prepared.copy(), prepared.copy()
    model.annotate(a)
    loaded.annotate(b)
    np.testing.assert_array_equal(a.obsm["X_dae"], b.obsm["X_dae"])
    np.testing.assert_allclose(a.obs["dae_recon_error"], b.obs["dae_recon_error"], rtol=1e-6)


def test_count_likelihood_needs_counts(raw):
    logdata = raw.copy()
    logdata.X = np.log1p(logdata.X.toarray()) * 1.5  # log-scale values
    pp.prepare(logdata, n_top_genes=0)
    assert DAE(**FAST).fit(logdata).gene_likelihood == "normal"  # auto: Gaussian for log-scale data
    with pytest.raises(UserError, match=r"gene_likelihood='nb' needs raw counts.*--gene-likelihood normal"):
        DAE(**FAST, gene_likelihood="nb").fit(logdata)


def test_version_1_model_folders_still_load(prepared, tmp_path):
    """Models saved before gene_likelihood existed (format 1, loss mse/bce) load as normal/bernoulli."""
    import json

    model = DAE(**FAST, gene_likelihood="normal").fit(prepared)
    model.save(tmp_path / "m")
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["format_version"] = 1
    meta.pop("gene_likelihood")
    meta["config"].pop("gene_likelihood")
    meta["config"]["loss"] = "mse"
    meta_file.write_text(json.dumps(meta))
    old = DAE.load(tmp_path / "m")
    assert old.gene_likelihood == "normal" and old.config.gene_likelihood == "normal"
    np.testing.assert_array_equal(old.embed(prepared), model.embed(prepared))


def test_saved_model_files_follow_the_umask_not_0600(tmp_path, counts_adata):
    """safetensors writes 0600 files; on a shared cluster the group must be able to read a model."""
    import os
    import stat

    import genodae

    genodae.pp.prepare(counts_adata, n_top_genes=50)
    old = os.umask(0o022)
    try:
        genodae.tl.dae(counts_adata, n_latent=3, hidden=(8,), epochs=1, num_threads=1, device="cpu",
                       model_dir=tmp_path / "m")
    finally:
        os.umask(old)
    for f in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_count_likelihood_on_unprepared_counts_says_to_prepare(raw):
    with pytest.raises(UserError, match=r"needs data prepared from raw counts: run genodae prepare"):
        DAE(**FAST, gene_likelihood="poisson").fit(raw.copy())


def test_gaussian_model_on_raw_counts_writes_one_scale_in_the_denoised_layer(prepared, raw):
    """Genes the model does not use get the model's own preparation too (log1p of normalised counts)."""
    model = DAE(**FAST, gene_likelihood="normal").fit(prepared)
    a = raw.copy()
    model.annotate(a, denoised=True)
    used = prepared.var["highly_variable"].to_numpy()
    np.testing.assert_allclose(a.layers["dae_denoised"][:, ~used], prepared.X[:, ~used].toarray(), rtol=1e-5, atol=1e-6)


def test_refused_denoised_scale_writes_nothing(prepared):
    logdata = prepared.copy()
    model = DAE(**FAST, gene_likelihood="normal").fit(prepared)
    model.prep = {**model.prep, "input_kind": "log"}  # as if trained on log-scale data
    with pytest.raises(UserError, match=r"--denoised-scale input"):
        model.annotate(logdata, denoised=True, denoised_scale="counts")
    assert "X_dae" not in logdata.obsm and "dae" not in logdata.uns


def test_cells_without_counts_in_the_model_genes_get_a_nan_error(nb_model, prepared):
    import scipy.sparse as sp

    a = prepared.copy()
    used = np.flatnonzero(a.var["highly_variable"].to_numpy())
    C = a.layers["counts"].tolil()
    C[0, used] = 0
    a.layers["counts"] = sp.csr_matrix(C)
    nb_model.annotate(a)
    err = a.obs["dae_recon_error"].to_numpy()
    assert np.isnan(err[0]) and np.isfinite(err[1:]).all()


def test_version_1_models_keep_their_plain_masking(prepared, tmp_path):
    import json

    model = DAE(**FAST, gene_likelihood="normal", corruption_rescale=False).fit(prepared)
    model.save(tmp_path / "m")
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["format_version"] = 1
    for k in ("gene_likelihood", "corruption_rescale"):
        meta["config"].pop(k)
    meta.pop("gene_likelihood")
    meta["config"]["loss"] = "mse"
    meta_file.write_text(json.dumps(meta))
    assert DAE.load(tmp_path / "m").config.corruption_rescale is False


def test_count_model_with_absent_genes_shares_the_library_among_those_present(nb_model, raw):
    used = nb_model.genes
    drop = list(used[:5])
    partial = raw[:, [g for g in raw.var_names if g not in drop]].copy()
    counts = nb_model.denoise(partial, scale="counts", allow_missing_genes=True)
    absent = used.isin(drop)
    assert (counts[:, absent] == 0).all()
    present_total = np.asarray(partial[:, used[~absent]].X.sum(1)).ravel()
    np.testing.assert_allclose(counts.sum(1), present_total, rtol=1e-4)
    a = partial.copy()
    nb_model.annotate(a, allow_missing_genes=True)
    assert np.isfinite(a.obs["dae_recon_error"]).all()


def test_init_module_sees_the_built_module_before_training(prepared):
    """``DAE.fit(init_module=...)`` (used by bench/signatures.py's prototypes): called once with the module the
    model then trains; what it changes before training persists (a frozen decoder at zero stays zero)."""
    seen = []

    def init(module):
        seen.append(module)
        torch.nn.init.zeros_(module.decoder.weight)
        module.decoder.weight.requires_grad_(False)

    model = DAE(**FAST).fit(prepared, init_module=init)
    assert len(seen) == 1 and seen[0] is model.module
    assert not model.module.decoder.weight.any()
    unfrozen = DAE(**FAST).fit(prepared)
    assert unfrozen.module.decoder.weight.any()


def test_resume_sees_the_scaling_the_model_uses_not_the_one_prepare_chose(tmp_path):
    """A 0-1 model min-max scales auto-z-scored data itself: the same model input as data prepared with
    scaling='minmax', so a checkpoint of one resumes on the other; z-scored input for a linear model does not."""
    rng = np.random.default_rng(3)
    X = (rng.normal(8, 1.5, size=(1, 30)) + rng.normal(0, 0.7, size=(60, 30))).astype(np.float32)
    explicit, auto = anndata.AnnData(X.copy()), anndata.AnnData(X.copy())
    pp.prepare(explicit, scaling="minmax")
    pp.prepare(auto)
    settings = dict(preset="adage", n_latent=3, num_threads=1)
    ck = tmp_path / "ck"
    DAE(epochs=2, **settings).fit(explicit, checkpoint_dir=ck, checkpoint_every=1)
    resumed = DAE(epochs=3, **settings).fit(auto, checkpoint_dir=ck, checkpoint_every=1, resume=True)
    assert resumed.history.epochs_run == 3
    ck2 = tmp_path / "ck2"
    DAE(epochs=2, n_latent=3, num_threads=1).fit(explicit, checkpoint_dir=ck2, checkpoint_every=1)
    with pytest.raises(UserError, match="prepared otherwise"):
        DAE(epochs=3, n_latent=3, num_threads=1).fit(auto, checkpoint_dir=ck2, resume=True)


def test_model_input_and_gene_table_follow_the_model_on_other_layers_and_missing_genes():
    """signatures.model_input(adata, key) reads the model's layer and scaling for its genes present; the gene
    table keeps the model's scaling for the genes present; an unknown key is an error."""
    from genodae.signatures import model_input
    from genodae.tables import export_tables

    rng = np.random.default_rng(5)
    X = (rng.normal(8, 1.5, size=(1, 30)) + rng.normal(0, 0.7, size=(60, 30))).astype(np.float32)
    a = anndata.AnnData(X.copy())
    pp.prepare(a)
    a.layers["alt"] = a.X * 2 + 5
    model = DAE(n_latent=3, hidden=(), epochs=2, num_threads=1).fit(a, layer="alt")
    model.annotate(a)
    Xin, genes = model_input(a, "dae")
    assert Xin.mean() == pytest.approx(0, abs=1e-4) and Xin.std() == pytest.approx(1, abs=1e-3)
    sub = a[:, 5:].copy()  # five of the model's genes missing
    Xs, gs = model_input(sub, "dae")
    assert list(gs) == list(genes[5:])
    np.testing.assert_allclose(Xs, Xin[:, 5:], rtol=1e-5, atol=1e-5)
    table = export_tables(sub)["genes"]
    np.testing.assert_allclose(table["offset"].to_numpy(float), model.offset[5:], rtol=1e-6)
    with pytest.raises(UserError, match=r"no trained model 'typo' in adata.uns; models: dae$"):
        model_input(a, "typo")
