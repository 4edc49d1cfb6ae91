"""Bit-identical results on CPU across processes, and kill -9 + ``--resume`` reaching the uninterrupted weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_counts

from genodae import pp
from genodae.io import write_h5ad
from genodae.train import CHECKPOINT_FILE

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

EMBED_SCRIPT = """
import sys
import numpy as np
import torch
torch.set_num_threads(1)
import anndata
import genodae
path, out = sys.argv[1], sys.argv[2]
for seed in map(int, sys.argv[3:]):
    a = anndata.read_h5ad(path)
    genodae.tl.dae(a, n_latent=6, hidden=(32,), epochs=5, batch_size=32, dropout=0.1, seed=seed,
                   num_threads=1, device="cpu")
    np.save(f"{out}_{seed}.npy", a.obsm["X_dae"])
"""


def test_same_seed_is_bit_identical_across_processes(_counts_adata_session, tmp_path):
    adata = _counts_adata_session.copy()
    pp.prepare(adata, n_top_genes=150)
    write_h5ad(adata, tmp_path / "p.h5ad")
    procs = [
        subprocess.Popen([sys.executable, "-c", EMBED_SCRIPT, str(tmp_path / "p.h5ad"), str(tmp_path / "a"), "0", "1"],
                         env=ENV, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-c", EMBED_SCRIPT, str(tmp_path / "p.h5ad"), str(tmp_path / "b"), "0"],
                         env=ENV, stderr=subprocess.PIPE, text=True),
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    a0, a1, b0 = (np.load(tmp_path / f) for f in ("a_0.npy", "a_1.npy", "b_0.npy"))
    assert a0.shape == (300, 6)
    assert a0.tobytes() == b0.tobytes(), "same seed, two processes: embeddings differ"
    assert not np.allclose(a0, a1), "a different seed gave the same embedding"


@pytest.fixture(scope="module")
def big_prepared(tmp_path_factory) -> Path:
    """3000 cells × 300 genes: an epoch takes ~0.15 s, so a kill lands mid-training."""
    adata = make_counts(n_cells=3000, n_genes=300, seed=1)
    pp.prepare(adata, n_top_genes=0)
    path = tmp_path_factory.mktemp("big") / "prepared.h5ad"
    write_h5ad(adata, path)
    return path


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "genodae", "-q", "train", str(data), "-o", str(out), "--epochs", "20",
            "--num-threads", "1", "--device", "cpu", "--seed", "7", "--dropout", "0.1", *extra]


def _checkpoint_epoch(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int(json.loads(f.metadata()["genodae_checkpoint"])["epoch"])


def test_kill_and_resume_reaches_the_uninterrupted_weights(big_prepared, tmp_path):
    from safetensors.torch import load_file

    full, victim = tmp_path / "full", tmp_path / "victim"
    ckpt = tmp_path / "victim.ckpt" / CHECKPOINT_FILE  # the default: OUTPUT.ckpt beside the output
    proc = subprocess.Popen(_train_cmd(big_prepared, victim, "--checkpoint-every", "1"), env=ENV,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not ckpt.exists():
            assert proc.poll() is None, f"training ended before its first checkpoint: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint_epoch(ckpt)
    assert 1 <= killed_at < 20, "the kill did not land mid-training"
    assert not victim.exists(), "a killed run must not leave a model that looks finished"

    r = subprocess.run(_train_cmd(big_prepared, victim, "--checkpoint-every", "1", "--resume"), env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # the uninterrupted run, through the same command line (in this process: one interpreter start-up less)
    from genodae.cli import main

    assert main(_train_cmd(big_prepared, full)[4:]) == 0  # (without -q: leave the log level alone)
    assert not ckpt.parent.exists()  # the finished model supersedes its checkpoint

    a = load_file(str(full / "model.safetensors"))
    b = load_file(str(victim / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not np.array_equal(a[k].numpy(), b[k].numpy())]
    assert different == [], f"resumed from epoch {killed_at}: tensors differ: {different}"
    hist_a = json.loads((full / "model.json").read_text())["history"]
    hist_b = json.loads((victim / "model.json").read_text())["history"]
    assert hist_a["val_loss"] == hist_b["val_loss"] and hist_b["epochs_run"] == hist_a["epochs_run"]
