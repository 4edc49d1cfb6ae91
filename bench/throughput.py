"""Training throughput (cells/s per epoch) and peak memory of genodae's training loop.

Pure torch + numpy/scipy (no AnnData), so the same script runs on a GPU machine from the source tree:

    PYTHONPATH=. python bench/throughput.py --cells 10000 100000 --epochs 3 --device cpu

Each size runs in its own subprocess so that its peak RSS is its own. Data: generated CSR,
``--genes`` genes, ``--density`` non-zeros, log1p-like values, min-max scaled per batch exactly as in
training. Results: a JSON (``--out``) and a markdown table on stdout, with the machine recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def make_csr(n_cells: int, n_genes: int, density: float, seed: int):
    """Random CSR with ~density non-zeros per row, float32 values in (0, 5], int32 indices; built row-block-wise."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    nnz_row = max(1, int(round(n_genes * density)))
    blocks = []
    for start in range(0, n_cells, 50_000):
        n = min(50_000, n_cells - start)
        # genes drawn per row without replacement via argpartition of random keys
        keys = rng.random((n, n_genes), dtype=np.float32)
        idx = np.sort(np.argpartition(keys, nnz_row, axis=1)[:, :nnz_row], axis=1).astype(np.int32)
        del keys
        vals = np.log1p(rng.gamma(1.0, 4.0, size=(n, nnz_row))).astype(np.float32)
        indptr = np.arange(0, n * nnz_row + 1, nnz_row, dtype=np.int64)
        blocks.append(sp.csr_matrix((vals.ravel(), idx.ravel(), indptr), shape=(n, n_genes)))
    X = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
    X.indices = X.indices.astype(np.int32)
    return X


def run_one(args) -> dict:
    import torch

    from genodae.config import DAEConfig
    from genodae.train import BatchSource, build_module, fit, resolve_device, split_cells

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    X = make_csr(args.one, args.genes, args.density, seed=0)
    t_data = time.perf_counter() - t0
    csr_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = DAEConfig(epochs=args.epochs, patience=0, val_fraction=args.val_fraction, device=args.device,
                    batch_size=args.batch_size, seed=0)
    module = build_module(args.genes, cfg, "sigmoid")
    device = resolve_device(cfg.device)
    lo = np.zeros(args.genes, np.float32)
    hi = np.full(args.genes, float(np.log1p(80.0)), np.float32)
    source = BatchSource(X, lo, hi, device, clip=True)
    tr, va = split_cells(X.shape[0], cfg.val_fraction, 0)
    hist = fit(module, source, cfg, train_idx=tr, val_idx=va, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = hist.seconds
    return {
        "cells": args.one, "genes": args.genes, "density": args.density, "epochs": hist.epochs_run,
        "batch_size": cfg.batch_size, "hidden": list(cfg.hidden), "n_latent": cfg.n_latent, "device": str(device),
        "train_cells": len(tr), "seconds": secs, "cells_per_s_per_epoch": len(tr) * hist.epochs_run / secs,
        "csr_bytes": csr_bytes, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_data_bytes": rss_data, "data_gen_seconds": t_data, "final_train_loss": hist.train_loss[-1],
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "python": platform.python_version()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one size, in-process
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return
    rows = []
    for n in args.cells:
        cmd = [sys.executable, __file__, "--one", str(n), "--genes", str(args.genes), "--density", str(args.density),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", args.device,
               "--threads", str(args.threads), "--val-fraction", str(args.val_fraction)]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            raise SystemExit(f"size {n} failed")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print("| cells | genes | device | batch | epochs | cells/s per epoch | peak RSS (GB) | CSR (GB) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cells']:,} | {r['genes']} | {r['device']} | {r['batch_size']} | {r['epochs']} | "
              f"{r['cells_per_s_per_epoch']:,.0f} | {r['peak_rss_bytes'] / 1e9:.2f} | {r['csr_bytes'] / 1e9:.2f} |")
    if args.out:
        out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               "command": " ".join(sys.argv), "results": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
