"""Batch size on a GPU: does a larger minibatch (lr scaled by sqrt(batch/128)) reach the default's validation loss?

The default batch of 128 leaves a GPU launch-bound (bench/results/gpu_h200.md). This trains the library default
(count likelihood, ``epochs`` auto = 100 raised to >= 2,000 updates, ``patience`` 0, best validation epoch kept) on
real count sets prepared here, at several batch sizes, on one device, and reports the best validation loss and the
wall time. Pure torch + numpy/scipy at run time (the GPU machine has no anndata):

    python bench/gpu_batch.py export --out .gpudata            # here: prepare the sets (anndata, ../shared/data)
    PYTHONPATH=. python bench/gpu_batch.py run --data .gpudata --device cuda --out $OUT/gpu_batch.json

``run --device cpu --check`` first compares this script's training with ``genodae.DAE.fit`` on the same data (the
same best validation loss), so the GPU numbers are those of the library's own training loop.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from genodae import _keys
from genodae.config import DAEConfig
from genodae.train import build_module, fit, make_source, split_cells

SETS = {"pbmc4k": "scrna/pbmc4k_top2000.h5ad", "mouse_bladder": "scrna/mouse_bladder_top2000.h5ad"}


def export(out: Path) -> None:
    import _common as C

    import genodae

    out.mkdir(parents=True, exist_ok=True)
    for name, rel in SETS.items():
        a = genodae.read(C.shared_data_dir() / rel)
        genodae.pp.prepare(a)
        used = a.var[_keys.HIGHLY_VARIABLE].to_numpy()
        np.savez_compressed(out / f"{name}.npz", **_csr("X", a.X[:, used]), **_csr("C", a.layers["counts"][:, used]),
                            offset=a.var[_keys.OFFSET].to_numpy(np.float32)[used],
                            scale=a.var[_keys.SCALE].to_numpy(np.float32)[used],
                            clip=a.uns[_keys.PREP]["params"]["scaling"] == "minmax",
                            input_kind=a.uns[_keys.PREP]["input_kind"])
        print(name, a.n_obs, int(used.sum()))


def _csr(prefix, M) -> dict:
    M = sp.csr_matrix(M, dtype=np.float32)
    return {f"{prefix}_data": M.data, f"{prefix}_indices": M.indices, f"{prefix}_indptr": M.indptr,
            f"{prefix}_shape": np.asarray(M.shape)}


def _load(path: Path):
    z = np.load(path)
    mat = {p: sp.csr_matrix((z[f"{p}_data"], z[f"{p}_indices"], z[f"{p}_indptr"]), shape=tuple(z[f"{p}_shape"]))
           for p in ("X", "C")}
    return mat["X"], mat["C"], z["offset"], z["scale"], bool(z["clip"]), str(z["input_kind"])


def train(X, Cn, offset, scale, clip, input_kind, dev, batch_size: int, seed: int = 0) -> dict:
    cfg = DAEConfig(batch_size=batch_size, lr=1e-3 * (batch_size / 128) ** 0.5, seed=seed,
                    device=str(dev) if dev.type == "cuda" else "cpu")
    lik = cfg.resolved_gene_likelihood(input_kind)
    torch.manual_seed(seed)
    module = build_module(X.shape[1], cfg, cfg.resolved_output_activation(lik), lik)
    src = make_source(X, offset, scale, dev, clip=clip, counts=Cn)
    tr, va = split_cells(X.shape[0], cfg.val_fraction, cfg.seed)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    h = fit(module, src, cfg, train_idx=tr, val_idx=va, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return {"batch_size": batch_size, "lr": cfg.lr, "likelihood": lik, "epochs_run": int(h.epochs_run),
            "best_epoch": int(h.best_epoch), "best_val_loss": float(min(h.val_loss)),
            "seconds": time.perf_counter() - t0, "n_cells": X.shape[0], "n_genes": X.shape[1]}


def check(data: Path) -> dict:
    """This script's loop against genodae.DAE.fit on the same prepared data (CPU, batch 128)."""
    import _common as C

    import genodae

    name, rel = next(iter(SETS.items()))
    a = genodae.read(C.shared_data_dir() / rel)
    genodae.pp.prepare(a)
    torch.set_num_threads(1)
    m = genodae.DAE(seed=0, num_threads=1).fit(a)
    mine = train(*_load(data / f"{name}.npz"), torch.device("cpu"), 128)
    return {"set": name, "dae_fit_best_val_loss": float(min(m.history.val_loss)),
            "script_best_val_loss": mine["best_val_loss"], "dae_fit_epochs": int(m.history.epochs_run),
            "script_epochs": mine["epochs_run"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["export", "run"])
    p.add_argument("--data", type=Path, default=Path(".gpudata"))
    p.add_argument("--out", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512, 1024, 4096])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    if a.part == "export":
        export(a.out or a.data)
        return
    dev = torch.device(a.device)
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "rows": []}
    if a.check:
        res["check"] = check(a.data)
        print(res["check"], flush=True)
    for f in sorted(a.data.glob("*.npz")):
        d = _load(f)
        for seed in range(a.seeds):
            for b in a.batch_sizes:
                r = {"set": f.stem, "seed": seed, **train(*d, dev, b, seed)}
                res["rows"].append(r)
                print(f"{r['set']:14} seed {seed} batch {b:5d} lr {r['lr']:.4f} epochs {r['epochs_run']:4d} "
                      f"best val {r['best_val_loss']:.5f} {r['seconds']:7.1f} s", flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
