"""genodae.train: the loop (learning, early stopping, keyed noise), data sources, scores and checkpoints."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from genodae.config import DAEConfig
from genodae.errors import UserError
from genodae.nn import DenoisingAutoencoder, corrupt, noise_seed
from genodae.train import (
    CHECKPOINT_FILE,
    BatchSource,
    build_module,
    embed,
    evaluate_loss,
    fit,
    gene_weights,
    reconstruction_scores,
    split_cells,
)

CPU = torch.device("cpu")
N_GENES = 40


@pytest.fixture(scope="module")
def lowrank() -> np.ndarray:
    """300 cells × 40 genes in [0, 1], driven by 3 latent factors plus a little noise: learnable."""
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(300, 3))
    W = rng.normal(size=(3, N_GENES)) * 1.5
    X = 1 / (1 + np.exp(-(Z @ W))) + rng.normal(scale=0.03, size=(300, N_GENES))
    return np.clip(X, 0, 1).astype(np.float32)


def _source(X) -> BatchSource:
    return BatchSource(X, np.zeros(X.shape[1]), np.ones(X.shape[1]), CPU, clip=True)


def _cfg(**kw) -> DAEConfig:
    base = dict(n_latent=4, hidden=(16,), epochs=6, batch_size=32, patience=0, num_threads=1, lr=3e-3)
    return DAEConfig(**{**base, **kw})


def _module(cfg: DAEConfig, n: int = N_GENES) -> DenoisingAutoencoder:
    torch.manual_seed(cfg.seed)
    lik = cfg.resolved_gene_likelihood("log")
    return build_module(n, cfg, "sigmoid", lik)


def _train(X, cfg, **kw):
    tr, va = split_cells(X.shape[0], cfg.val_fraction, cfg.seed)
    m = _module(cfg, X.shape[1])
    h = fit(m, _source(X), cfg, train_idx=tr, val_idx=va, progress=False, **kw)
    return m, h


def _equal_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- learning -------------------------------------------------------------------------------------------


def test_training_lowers_held_out_loss(lowrank):
    cfg = _cfg(epochs=40, hidden=(32,))
    tr, va = split_cells(lowrank.shape[0], cfg.val_fraction, cfg.seed)
    src = _source(lowrank)
    m = _module(cfg)
    before = evaluate_loss(m, src, va, cfg)
    h = fit(m, src, cfg, train_idx=tr, val_idx=va, progress=False)
    after = evaluate_loss(m, src, va, cfg)
    assert len(h.train_loss) == len(h.val_loss) == h.epochs_run == 40
    assert after < 0.5 * before, (before, after)
    assert h.val_loss[-1] < h.val_loss[0]
    assert after == pytest.approx(h.best_loss, rel=1e-6)  # the best epoch's weights are what is left
    # clean-input reconstruction explains most of each gene's variance on cells never trained on
    _, r2 = reconstruction_scores(m, src, va)
    assert np.nanmedian(r2) > 0.5


def test_noise_is_applied_to_the_input_layer(lowrank, monkeypatch):
    """Masking noise corrupts the input (cells × genes), not a hidden layer (the Tybalt ADAGE mistake)."""
    import genodae.train as train_mod

    seen = []

    def spy(x, *args, **kwargs):
        seen.append(tuple(x.shape))
        return corrupt(x, *args, **kwargs)

    monkeypatch.setattr(train_mod, "corrupt", spy)
    _train(lowrank, _cfg(epochs=1))
    assert seen and all(s[1] == N_GENES for s in seen)


def test_masked_loss_training_runs(lowrank):
    m, h = _train(lowrank, _cfg(epochs=3, loss_on="masked", gene_likelihood="bernoulli"))
    assert all(np.isfinite(h.train_loss)) and all(np.isfinite(h.val_loss))


def test_early_stopping_stops_after_patience_and_restores_best_epoch(lowrank, monkeypatch):
    import genodae.train as train_mod

    scripted = [1.0, 0.5, 0.3, 0.31, 0.4, 0.35, 0.2, 0.1, 0.05]  # best at epoch index 2, then 3 worse
    snapshots = []

    def fake_eval(module, source, rows, config):
        snapshots.append({k: v.detach().clone() for k, v in module.state_dict().items()})
        return scripted[len(snapshots) - 1]

    monkeypatch.setattr(train_mod, "evaluate_loss", fake_eval)
    m, h = _train(lowrank, _cfg(epochs=9, patience=3))
    assert h.stopped_early
    assert h.epochs_run == 6  # epochs 3, 4, 5 did not improve on epoch 2
    assert h.best_epoch == 2 and h.best_loss == 0.3
    assert h.val_loss == scripted[:6]
    best = snapshots[2]
    assert all(torch.equal(m.state_dict()[k], best[k]) for k in best)
    assert not all(torch.equal(snapshots[5][k], best[k]) for k in best)  # training did move on


def test_patience_zero_never_stops_early(lowrank, monkeypatch):
    import genodae.train as train_mod

    monkeypatch.setattr(train_mod, "evaluate_loss", lambda *a, **k: 1.0)
    _, h = _train(lowrank, _cfg(epochs=5, patience=0))
    assert h.epochs_run == 5 and not h.stopped_early


def test_same_seed_same_weights_different_seed_different(lowrank):
    a, _ = _train(lowrank, _cfg(epochs=2, seed=3))
    b, _ = _train(lowrank, _cfg(epochs=2, seed=3))
    c, _ = _train(lowrank, _cfg(epochs=2, seed=4))
    assert _equal_state(a, b)
    assert not _equal_state(a, c)


# --- keyed randomness -----------------------------------------------------------------------------------


def test_noise_keyed_by_seed_epoch_step_is_independent_of_other_randomness():
    x = torch.rand(64, 50) + 0.5
    gen = torch.Generator()

    def mask(seed, epoch, step):
        gen.manual_seed(noise_seed(seed, epoch, step))
        return corrupt(x, 0.2, generator=gen)[1]

    ref = mask(0, 3, 5)
    torch.manual_seed(999)
    torch.rand(1000, generator=gen)  # whatever happened before does not matter
    _ = np.random.default_rng(1).random(10)
    assert torch.equal(mask(0, 3, 5), ref)
    others = [mask(0, 3, 6), mask(0, 4, 5), mask(1, 3, 5), mask(0, 5, 3)]
    assert all(not torch.equal(o, ref) for o in others)


def test_split_cells_is_deterministic_and_a_partition():
    tr, va = split_cells(100, 0.2, seed=5)
    tr2, va2 = split_cells(100, 0.2, seed=5)
    tr3, va3 = split_cells(100, 0.2, seed=6)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, va3)
    assert len(va) == 20 and len(tr) == 80
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(100))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)


def test_split_cells_keeps_every_cell_for_training_when_there_are_too_few():
    tr, va = split_cells(2, 0.5, seed=0)
    assert len(va) == 0 and np.array_equal(tr, [0, 1])
    tr, va = split_cells(10, 0.0, seed=0)
    assert len(va) == 0 and len(tr) == 10


# --- data sources ---------------------------------------------------------------------------------------


def test_batch_source_csr_equals_dense_and_scales():
    rng = np.random.default_rng(0)
    D = rng.random((30, 8)).astype(np.float32) * 4
    D[D < 2] = 0
    offset = rng.random(8).astype(np.float32)
    scale = (rng.random(8) + 0.5).astype(np.float32)
    rows = np.array([5, 0, 29, 5, 12])
    for clip in (False, True):
        dense = BatchSource(D, offset, scale, CPU, clip=clip)(rows)
        for fmt in (sp.csr_matrix, sp.csc_matrix):
            assert torch.equal(BatchSource(fmt(D), offset, scale, CPU, clip=clip)(rows), dense)
        expected = (D[rows] - offset) / scale
        if clip:
            expected = np.clip(expected, 0, 1)
            assert dense.min() >= 0 and dense.max() <= 1
        np.testing.assert_allclose(dense.numpy(), expected, rtol=1e-6, atol=1e-6)
    # without clipping, values outside [0, 1] pass through
    raw = BatchSource(D, np.zeros(8), np.full(8, 0.5), CPU, clip=False)(np.arange(30))
    assert raw.max() > 1


def test_batch_source_does_not_modify_the_matrix():
    D = np.arange(12, dtype=np.float32).reshape(4, 3)
    before = D.copy()
    BatchSource(D, np.ones(3), np.full(3, 2.0), CPU, clip=True)(np.arange(4))
    assert np.array_equal(D, before)


def test_device_resident_source_matches_host_streaming_within_float16():
    from genodae.train import DeviceSource, make_source

    rng = np.random.default_rng(4)
    D = (rng.random((20, 6)) * 8).astype(np.float32)
    offset, scale = np.ones(6, np.float32), np.full(6, 7.0, np.float32)
    host = make_source(sp.csr_matrix(D), offset, scale, CPU, clip=True)
    assert type(host) is BatchSource  # auto on CPU streams from host memory
    dev = make_source(sp.csr_matrix(D), offset, scale, CPU, clip=True, placement="device")
    assert isinstance(dev, DeviceSource)
    rows = np.array([3, 19, 0, 3])
    torch.testing.assert_close(dev(rows), host(rows), rtol=0, atol=2e-3)


def test_batch_norm_with_batch_size_one_is_refused_not_silently_skipped(lowrank):
    with pytest.raises(UserError, match="batch"):
        _train(lowrank, _cfg(norm="batch", batch_size=1, epochs=1))


# --- evaluation -----------------------------------------------------------------------------------------


def _identity_module(g: int) -> DenoisingAutoencoder:
    m = DenoisingAutoencoder(g, g, decoder="linear", output_activation="linear")
    with torch.no_grad():
        m.encoder[0].weight.copy_(torch.eye(g))
        m.encoder[0].bias.zero_()
        m.decoder.weight.copy_(torch.eye(g))
        m.decoder.bias.zero_()
    return m.eval()


def test_reconstruction_scores_of_identity_are_perfect():
    rng = np.random.default_rng(1)
    X = rng.random((50, 6)).astype(np.float32)
    err, r2 = reconstruction_scores(_identity_module(6), _source(X), np.arange(50), batch_size=16)
    np.testing.assert_allclose(r2, 1.0, atol=1e-6)
    np.testing.assert_allclose(err, 0.0, atol=1e-12)


def test_reconstruction_scores_match_sklearn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(2)
    X = rng.random((41, 5)).astype(np.float32)
    X[:, 4] = 0.25  # a constant gene: R² undefined (NaN), not a division by zero
    m = _identity_module(5)
    with torch.no_grad():
        m.decoder.weight.mul_(0.6)
        m.decoder.bias.fill_(0.15)
    rows = np.arange(3, 41)
    err, r2 = reconstruction_scores(m, _source(X), rows, batch_size=7)  # several batches
    R = X[rows] * 0.6 + 0.15
    expected = r2_score(X[rows][:, :4], R[:, :4], multioutput="raw_values")
    np.testing.assert_allclose(r2[:4], expected, rtol=1e-4, atol=1e-5)
    assert np.isnan(r2[4])
    np.testing.assert_allclose(err, ((R - X[rows]) ** 2).mean(1), rtol=1e-5)


def test_embed_uses_clean_input_and_keeps_row_order():
    m = _identity_module(4)
    X = np.random.default_rng(3).random((9, 4)).astype(np.float32)
    Z = embed(m, _source(X), rows=np.array([8, 0, 3]), batch_size=2)
    np.testing.assert_allclose(Z, X[[8, 0, 3]], rtol=1e-6)


def test_linear_gene_weights_are_a_copy_not_a_view():
    m = _identity_module(4)
    W = gene_weights(m)
    W[:] = 7
    assert torch.equal(m.decoder.weight, torch.eye(4))


# --- checkpoints ----------------------------------------------------------------------------------------


def test_checkpoint_resume_is_bit_identical_to_an_uninterrupted_run(lowrank, tmp_path):
    cfg6 = _cfg(epochs=6, dropout=0.1)  # dropout: its RNG must be resumed too
    full, h_full = _train(lowrank, cfg6)
    first, _ = _train(lowrank, _cfg(epochs=3, dropout=0.1), checkpoint_dir=tmp_path, checkpoint_every=1)
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    resumed, h_res = _train(lowrank, cfg6, checkpoint_dir=tmp_path, checkpoint_every=1, resume=True)
    assert _equal_state(full, resumed)
    assert h_res.epochs_run == 6
    assert h_res.train_loss == h_full.train_loss and h_res.val_loss == h_full.val_loss
    assert h_res.best_epoch == h_full.best_epoch
    assert not _equal_state(first, resumed)


def test_resume_without_checkpoint_starts_from_scratch(lowrank, tmp_path):
    a, _ = _train(lowrank, _cfg(epochs=2))
    b, _ = _train(lowrank, _cfg(epochs=2), checkpoint_dir=tmp_path / "none", resume=True)
    assert _equal_state(a, b)


def test_resume_refuses_a_checkpoint_with_other_settings(lowrank, tmp_path):
    _train(lowrank, _cfg(epochs=2), checkpoint_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(UserError, match="lr"):
        _train(lowrank, _cfg(epochs=4, lr=1e-2), checkpoint_dir=tmp_path, checkpoint_every=1, resume=True)


def test_resume_refuses_a_checkpoint_made_on_other_data(lowrank, tmp_path):
    """A checkpoint records what identifies its data: another record (e.g. other genes, same count) is refused in
    one line naming the checkpoint; the same record resumes."""
    cfg = _cfg(epochs=2)
    _train(lowrank, cfg, checkpoint_dir=tmp_path, checkpoint_every=1, data={"genes": "aaaa"})
    ckpt = tmp_path / CHECKPOINT_FILE
    with pytest.raises(UserError, match=r"made on other data \(genes differ\): delete .*checkpoint") as info:
        _train(lowrank, _cfg(epochs=4), checkpoint_dir=tmp_path, resume=True, data={"genes": "bbbb"})
    assert "\n" not in str(info.value) and str(ckpt) in str(info.value)
    _, h = _train(lowrank, _cfg(epochs=4), checkpoint_dir=tmp_path, resume=True, data={"genes": "aaaa"})
    assert h.epochs_run == 4


def test_resume_with_another_gene_count_is_a_user_error_not_a_size_mismatch(lowrank, tmp_path):
    _train(lowrank, _cfg(epochs=2), checkpoint_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(UserError, match=r"other data \(40 genes in the checkpoint, 30 now\)"):
        _train(lowrank[:, :30], _cfg(epochs=4), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(UserError, match=r"other data \(300 cells in the checkpoint, 200 now\)"):
        _train(lowrank[:200], _cfg(epochs=4), checkpoint_dir=tmp_path, resume=True)


def test_resume_refuses_a_checkpoint_that_does_not_record_its_data(lowrank, tmp_path):
    """Checkpoints of genodae before the data record: refused (they may be of other data), with the way out."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    _train(lowrank, _cfg(epochs=2), checkpoint_dir=tmp_path, checkpoint_every=1)
    ckpt = tmp_path / CHECKPOINT_FILE
    with safe_open(str(ckpt), framework="pt") as f:
        meta = json.loads(f.metadata()["genodae_checkpoint"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del meta["data"]
    save_file(tensors, str(ckpt), metadata={"genodae_checkpoint": json.dumps(meta)})
    with pytest.raises(UserError, match=r"does not record the data it was made on .*: delete .* or train without"):
        _train(lowrank, _cfg(epochs=4), checkpoint_dir=tmp_path, resume=True)


def test_resume_after_early_stop_does_not_train_further(lowrank, tmp_path, monkeypatch):
    import genodae.train as train_mod

    scripted = iter([1.0, 0.5, 0.6, 0.7, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01])
    monkeypatch.setattr(train_mod, "evaluate_loss", lambda *a, **k: next(scripted))
    cfg = _cfg(epochs=10, patience=2)
    stopped, h1 = _train(lowrank, cfg, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert h1.stopped_early and h1.epochs_run == 4
    # e.g. the job was killed after the final checkpoint but before the model was saved
    resumed, h2 = _train(lowrank, cfg, checkpoint_dir=tmp_path, checkpoint_every=1, resume=True)
    assert h2.epochs_run == 4 and h2.val_loss == h1.val_loss
    assert _equal_state(stopped, resumed)


def test_checkpoint_is_safetensors_with_json_metadata_not_pickle(lowrank, tmp_path):
    from safetensors import safe_open

    _train(lowrank, _cfg(epochs=2), checkpoint_dir=tmp_path, checkpoint_every=1)
    path = tmp_path / CHECKPOINT_FILE
    raw = path.read_bytes()
    assert raw[:1] != b"\x80" and raw[:2] != b"PK"  # neither a pickle nor a torch.save zip
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])  # safetensors: a JSON header, then raw tensor bytes
    assert "__metadata__" in header
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["genodae_checkpoint"])
        keys = set(f.keys())
    assert meta["epoch"] == 2 and meta["config"]["lr"] == pytest.approx(3e-3)
    assert meta["data"] == {"n_cells": 300, "n_genes": N_GENES, "n_train": 270, "n_val": 30}  # what it trained on
    assert any(k.startswith("model.") for k in keys)
    assert any(k.startswith("best.") for k in keys)
    assert any(k.startswith("opt.") for k in keys)  # optimiser moments travel with it
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_unreadable_checkpoint_is_a_user_error(lowrank, tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="checkpoint"):
        _train(lowrank, _cfg(epochs=2), checkpoint_dir=tmp_path, checkpoint_every=1, resume=True)


@pytest.mark.parametrize("damage", ["no history", "data null", "epoch text", "not an object"])
def test_a_checkpoint_with_a_damaged_record_is_a_user_error(lowrank, tmp_path, damage):
    """A readable safetensors file whose record lacks a part (hand-edited, another tool's): one line, not a
    KeyError/TypeError traceback."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    _train(lowrank, _cfg(epochs=2), checkpoint_dir=tmp_path, checkpoint_every=1)
    ckpt = tmp_path / CHECKPOINT_FILE
    with safe_open(str(ckpt), framework="pt") as f:
        meta = json.loads(f.metadata()["genodae_checkpoint"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if damage == "no history":
        del meta["history"]
    elif damage == "data null":
        meta["data"] = None
    elif damage == "epoch text":
        meta["epoch"] = "x"
    else:
        meta = [1, 2]
    save_file(tensors, str(ckpt), metadata={"genodae_checkpoint": json.dumps(meta)})
    with pytest.raises(UserError, match=r"checkpoint .* is damaged \(.*\); delete it to start from scratch") as info:
        _train(lowrank, _cfg(epochs=4), checkpoint_dir=tmp_path, resume=True)
    assert "\n" not in str(info.value)


def test_resume_with_fewer_epochs_than_the_checkpoint_says_so(lowrank, tmp_path, caplog):
    first, h1 = _train(lowrank, _cfg(epochs=3), checkpoint_dir=tmp_path, checkpoint_every=1)
    with caplog.at_level("WARNING", logger="genodae"):
        again, h2 = _train(lowrank, _cfg(epochs=1), checkpoint_dir=tmp_path, resume=True)
    assert "the checkpoint has trained 3 epochs, more than the 1 asked for" in caplog.text
    assert h2.epochs_run == 3 and _equal_state(first, again)
    assert h2.seconds > h1.seconds / 2 > 0  # the epochs before the resume count in its time (saved at epoch 3)


def test_a_checkpoint_folder_that_is_a_file_is_refused_before_training(lowrank, tmp_path):
    (tmp_path / "c").write_text("x")
    with pytest.raises(UserError, match=r"checkpoint folder .*c is a file: remove it or give another checkpoint_dir"):
        _train(lowrank, _cfg(epochs=2), checkpoint_dir=tmp_path / "c", checkpoint_every=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_absent_cuda_device_is_a_user_error():
    from genodae.train import resolve_device

    with pytest.raises(UserError, match="cuda"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU


def test_auto_epochs_give_small_data_enough_updates(lowrank, monkeypatch):
    from genodae import config as C

    assert DAEConfig().epochs is None and DAEConfig(epochs="auto").epochs is None
    # 198 training samples in batches of 128: 2 updates per epoch, so auto allows 1,000 epochs (2,000 updates)
    assert DAEConfig().max_epochs(198) == 1000
    # 3,843 cells: 31 updates per epoch, 100 epochs are already >= 2,000 updates
    assert DAEConfig().max_epochs(3843) == 100
    assert DAEConfig(epochs=7).max_epochs(198) == 7  # an explicit value is kept
    monkeypatch.setattr(C, "MIN_STEPS", 150)  # small, for speed: 1 update per epoch below
    cfg = _cfg(epochs=None, patience=0, batch_size=512)
    tr, va = split_cells(lowrank.shape[0], cfg.val_fraction, cfg.seed)
    h = fit(_module(cfg), _source(lowrank), cfg, train_idx=tr, val_idx=va, progress=False)
    assert h.max_epochs == h.epochs_run == 150
