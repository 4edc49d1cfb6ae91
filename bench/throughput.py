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
import resource
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import numpy as np


def run_one(args) -> dict:
    import torch

    from genodae.config import DAEConfig
    from genodae.train import build_module, fit, make_source, resolve_device, split_cells

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    file_bytes = None
    if args.backed:
        import anndata as ad

        path = Path(args.backed) / f"bench_{args.one}.h5ad"
        if not path.exists():  # generate in a child process so its memory does not count here
            subprocess.run([sys.executable, __file__, "--write", str(path), "--one", str(args.one), "--genes",
                            str(args.genes), "--density", str(args.density)], check=True)
        X = ad.read_h5ad(path, backed="r").X
        file_bytes = path.stat().st_size
        csr_bytes = args.one * round(args.genes * args.density) * 8 + (args.one + 1) * 8
    else:
        X = C.make_csr(args.one, args.genes, args.density, seed=0)
        csr_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    t_data = time.perf_counter() - t0
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = DAEConfig(epochs=args.epochs, patience=0, val_fraction=args.val_fraction, device=args.device,
                    batch_size=args.batch_size, seed=0)
    module = build_module(args.genes, cfg, cfg.resolved_output_activation())
    device = resolve_device(cfg.device)
    lo = np.zeros(args.genes, np.float32)
    hi = np.full(args.genes, float(np.log1p(80.0)), np.float32)
    source = (make_source(X, lo, hi, device, clip=True, columns=np.arange(args.genes)) if args.backed
              else make_source(X, lo, hi, device, clip=True, placement=args.placement))
    tr, va = split_cells(X.shape[0], cfg.val_fraction, 0)
    hist = fit(module, source, cfg, train_idx=tr, val_idx=va, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = hist.seconds
    return {
        "input": "backed h5ad" if args.backed else "in-memory CSR", "placement": source.placement,
        "file_bytes": file_bytes, "cells": args.one, "genes": args.genes, "density": args.density, "epochs": hist.epochs_run,
        "batch_size": cfg.batch_size, "hidden": list(cfg.hidden), "n_latent": cfg.n_latent, "device": str(device),
        "train_cells": len(tr), "seconds": secs, "cells_per_s_per_epoch": len(tr) * hist.epochs_run / secs,
        "csr_bytes": csr_bytes, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_data_bytes": rss_data, "data_gen_seconds": t_data, "final_train_loss": hist.train_loss[-1],
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = C.parser(__doc__, full=True)
    p.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--md", default=None, help="markdown file for the table")
    p.add_argument("--backed", metavar="DIR", default=None,
                   help="train from a backed .h5ad (written to DIR once, then reused)")
    p.add_argument("--placement", default="auto", choices=("auto", "device", "host"))
    p.add_argument("--write", default=None, help=argparse.SUPPRESS)  # internal: write the h5ad and exit
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one size, in-process
    args = p.parse_args()
    if args.write:
        C.write_backed(C.make_csr(args.one, args.genes, args.density, seed=0), Path(args.write))
        return
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return
    rows = []
    for n in args.cells:
        cmd = [sys.executable, __file__, "--one", str(n), "--genes", str(args.genes), "--density", str(args.density),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", args.device,
               "--threads", str(args.threads), "--val-fraction", str(args.val_fraction), "--placement", args.placement]
        if args.backed:
            cmd += ["--backed", args.backed]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(C.REPO)})
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            raise SystemExit(f"size {n} failed")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    lines = ["| input | cells | genes | hidden | device (data) | batch | epochs | cells/s per epoch | peak RSS (GB) | "
             "CSR (GB) | file (GB) |", "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fb = f"{r['file_bytes'] / 1e9:.2f}" if r["file_bytes"] else "-"
        lines.append(f"| {r['input']} | {r['cells']:,} | {r['genes']} | {r.get('hidden')} | {r['device']} "
                     f"({r['placement']}) | {r['batch_size']} | {r['epochs']} | {r['cells_per_s_per_epoch']:,.0f} | "
                     f"{r['peak_rss_bytes'] / 1e9:.2f} | {r['csr_bytes'] / 1e9:.2f} | {fb} |")
    print("\n".join(lines))
    out = {"date": C.utc_now(), "machine": C.machine(), "load_end": C.load_average(),
           "command": "python bench/throughput.py " + " ".join(sys.argv[1:]), "results": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.md:
        m = out["machine"]
        head = [f"# Training throughput and peak memory ({rows[0]['device'] if rows else args.device})", "",
                f"Generated by `{out['command']}` on {out['date']} ({m['cpu']}, {m['cores']} cores, load average "
                f"{out['load_end']} at the end). Generated CSR, {args.density:.0%} non-zeros; each size in its own "
                "process (peak RSS = its ru_maxrss); library default architecture.", ""]
        Path(args.md).write_text("\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
