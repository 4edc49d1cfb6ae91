#!/usr/bin/env python
"""Training throughput and peak memory of genodae and scVI on the same data and epochs, in one run.

Each measurement runs in its own subprocess (``python bench/speed.py --worker METHOD``), so that peak RSS
(``ru_maxrss``) belongs to one method only; the two methods alternate (genodae, scvi, genodae, scvi …) so that
changing load on a shared machine hits both alike. Both train on the same prepared dataset (default pbmc4k:
``genodae.pp.prepare`` defaults, 2,000 HVGs) for the same number of epochs with batch size 128, 90% of the cells
for training and 10% for a validation pass every epoch, no early stopping, one torch thread, CPU:

- genodae: ``genodae.DAE(epochs=E, patience=0, batch_size=128, num_threads=1, device="cpu").fit(adata)``
  (library defaults otherwise: min-max scaled log input, ``gene_likelihood="auto"`` = negative binomial on the
  raw counts).
- genodae_normal / genodae_nb / genodae_zinb: the same with ``gene_likelihood="normal"`` (squared error of the
  scaled input), ``"nb"`` or ``"zinb"``: what each likelihood costs per epoch.
- scVI: ``scvi.model.SCVI`` (defaults: n_latent 10, 1 × 128 hidden, ZINB) on the raw counts of the same genes,
  ``train(max_epochs=E, early_stopping=False, batch_size=128, train_size=0.9, check_val_every_n_epoch=1)``.

Reported per run: cells/s per epoch = training cells × epochs / seconds of the training call (everything: set-up,
validation passes); the median per-epoch seconds (genodae: loop seconds / epochs; scVI: a Lightning callback,
validation included); RSS after loading and preparing the data (before the model exists), peak RSS, and their
difference. The ratio genodae / scVI uses the median over repeats.

Examples
--------
python bench/speed.py                                  # pbmc4k, 20 epochs, 2 repeats each
python bench/speed.py --dataset pbmc68k --epochs 5 --repeats 1 --out /tmp/s
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import numpy as np

METHODS = ("genodae", "scvi", "genodae_normal", "genodae_nb", "genodae_zinb")  # alternating in this order


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def worker(method: str, dataset: str, epochs: int, batch_size: int, threads: int, data_dir: Path) -> dict:
    C.set_threads(threads)
    import genodae

    raw = C.load_raw(dataset, data_dir)
    adata = genodae.pp.prepare(raw, copy=True)
    n_train = adata.n_obs - int(round(adata.n_obs * 0.1))
    import torch  # noqa: F401  (imported by both; counted in the baseline RSS)

    if method == "scvi":
        import scvi  # noqa: F401  (import cost is not training memory)
    rss_before = rss_now_mb()
    out = {"method": method, "dataset": dataset, "n_cells": int(adata.n_obs),
           "n_genes": int(adata.var["highly_variable"].sum()), "epochs": epochs, "batch_size": batch_size,
           "threads": threads}
    if method.startswith("genodae"):
        extra = {"gene_likelihood": method.split("_")[1]} if "_" in method else {}
        model = genodae.DAE(epochs=epochs, patience=0, batch_size=batch_size, num_threads=threads, device="cpu", seed=0,
                            **extra)
        t = time.perf_counter()
        model.fit(adata, progress=False)
        wall = time.perf_counter() - t
        h = model.history
        n_train = adata.n_obs - len(model.val_idx)
        epoch_s = [h.seconds / h.epochs_run] * h.epochs_run
        out["epochs_run"] = int(h.epochs_run)
        out["params"] = int(sum(p.numel() for p in model.module.parameters()))
    elif method == "scvi":
        import anndata as ad
        import lightning.pytorch as pl
        import pandas as pd
        import scipy.sparse as sp
        import scvi

        scvi.settings.seed = 0
        scvi.settings.num_threads = threads
        scvi.settings.dl_num_workers = 0
        for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)

        class EpochTimer(pl.Callback):
            def __init__(self):
                self.times, self._t = [], None

            def on_train_epoch_start(self, trainer, module):
                self._t = time.perf_counter()

            def on_train_epoch_end(self, trainer, module):
                self.times.append(time.perf_counter() - self._t)

        counts = sp.csr_matrix(C.counts_hvg(adata), dtype=np.float32)
        a = ad.AnnData(X=counts, obs=pd.DataFrame(index=adata.obs_names))
        scvi.model.SCVI.setup_anndata(a)
        model = scvi.model.SCVI(a)
        timer = EpochTimer()
        t = time.perf_counter()
        model.train(max_epochs=epochs, early_stopping=False, batch_size=batch_size, train_size=0.9,
                    check_val_every_n_epoch=1, accelerator="cpu", devices=1, enable_progress_bar=False,
                    enable_model_summary=False, logger=False, enable_checkpointing=False, callbacks=[timer])
        wall = time.perf_counter() - t
        n_train = int(len(model.train_indices))
        epoch_s = timer.times
        out["epochs_run"] = len(epoch_s)
        out["params"] = int(sum(p.numel() for p in model.module.parameters()))
    else:
        raise ValueError(method)
    peak = peak_rss_mb()
    out.update({
        "n_train": int(n_train), "train_call_seconds": wall,
        "cells_per_s": n_train * out["epochs_run"] / wall,
        "median_epoch_seconds": float(np.median(epoch_s)),
        "cells_per_s_epoch_median": n_train / float(np.median(epoch_s)),
        "rss_before_mb": rss_before, "peak_rss_mb": peak, "peak_minus_before_mb": peak - rss_before,
    })
    return out


def markdown(runs, summary, meta) -> str:
    lines = [
        "# Training speed and memory: genodae vs scVI",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
        f"load average {meta['loadavg_start']} at start / {meta['loadavg_end']} at end; "
        f"{meta['threads']} torch thread, CPU). genodae {meta['versions'].get('genodae')}, scvi-tools "
        f"{meta['versions'].get('scvi-tools')}, torch {meta['versions'].get('torch')}, lightning "
        f"{meta['versions'].get('lightning')}.",
        "",
        f"Same data: {meta['dataset']} ({runs[0]['n_cells']} cells × {runs[0]['n_genes']} genes, 90% training / 10% "
        f"validation every epoch), {meta['epochs']} epochs, batch size {meta['batch_size']}, no early stopping; each run in "
        "its own process, methods alternating. cells/s = training cells × epochs / seconds of the whole training call; "
        "epoch s = median seconds per epoch (validation included). RSS before = after loading/preparing the data and "
        "importing the method; peak = ru_maxrss of the process.",
        "",
        "| run | method | params | cells/s (training call) | cells/s (median epoch) | epoch s | RSS before (MB) | peak RSS (MB) | peak − before (MB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs):
        lines.append(f"| {i + 1} | {r['method']} | {r['params']:,} | {r['cells_per_s']:,.0f} | {r['cells_per_s_epoch_median']:,.0f} | "
                     f"{r['median_epoch_seconds']:.2f} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_minus_before_mb']:.0f} |")
    s = summary
    lines += [
        "",
        "Median over repeats:",
        "",
        "| method | cells/s (training call) | cells/s (median epoch) | peak RSS (MB) | peak − before (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        lines.append(f"| {m} | {s[m]['cells_per_s']:,.0f} | {s[m]['cells_per_s_epoch_median']:,.0f} | "
                     f"{s[m]['peak_rss_mb']:.0f} | {s[m]['peak_minus_before_mb']:.0f} |")
    lines += [
        "",
        f"**genodae / scVI throughput ratio: {s['ratio_cells_per_s']:.2f}× (whole training call), "
        f"{s['ratio_epoch']:.2f}× (median epoch); peak RSS ratio {s['ratio_peak_rss']:.2f}×.**",
        "",
        f"**Cost of the count likelihood: a genodae epoch (default gene_likelihood auto = poisson on these counts) takes {s['nb_cost_epoch']:.2f}× the time of a "
        f"genodae_normal epoch (median epochs; {s['nb_cost_call']:.2f}× over the whole training call); "
        + "; ".join(f"{m.split('_')[1]} {s[m]['epoch_cost']:.2f}×" for m in ("genodae_nb", "genodae_zinb"))
        + " (median epochs).**",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--dataset", default="pbmc4k")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="runs per method (alternating)")
    C.add_threads(p, help=None)
    C.add_data_dir(p)
    C.add_out(p, "speed", help=None)
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.worker:
        import warnings

        warnings.filterwarnings("ignore")
        r = worker(a.worker, a.dataset, a.epochs, a.batch_size, a.threads, a.data_dir)
        print("SPEED_RESULT " + json.dumps(r), flush=True)
        return 0

    load0 = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.perf_counter()
    runs = []
    for rep in range(a.repeats):
        for m in METHODS:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", m, "--dataset", a.dataset,
                   "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--threads", str(a.threads),
                   "--data-dir", str(a.data_dir)]
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                                                                             "OMP_NUM_THREADS": str(a.threads)})
            line = [x for x in res.stdout.splitlines() if x.startswith("SPEED_RESULT ")]
            if res.returncode != 0 or not line:
                print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"worker {m} failed (rc {res.returncode})")
            r = json.loads(line[-1][len("SPEED_RESULT "):])
            r["repeat"], r["process_seconds"] = rep, time.perf_counter() - t
            runs.append(r)
            print(f"[speed] {m:<14} rep {rep}: {r['cells_per_s']:,.0f} cells/s (call), "
                  f"{r['cells_per_s_epoch_median']:,.0f} cells/s (median epoch), peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(+{r['peak_minus_before_mb']:.0f}), process {r['process_seconds']:.0f}s", flush=True)
    summary = {}
    for m in METHODS:
        rs = [r for r in runs if r["method"] == m]
        summary[m] = {k: float(np.median([r[k] for r in rs])) for k in
                      ("cells_per_s", "cells_per_s_epoch_median", "peak_rss_mb", "peak_minus_before_mb", "rss_before_mb")}
    summary["ratio_cells_per_s"] = summary["genodae"]["cells_per_s"] / summary["scvi"]["cells_per_s"]
    summary["ratio_epoch"] = summary["genodae"]["cells_per_s_epoch_median"] / summary["scvi"]["cells_per_s_epoch_median"]
    summary["ratio_peak_rss"] = summary["genodae"]["peak_rss_mb"] / summary["scvi"]["peak_rss_mb"]
    summary["nb_cost_epoch"] = (summary["genodae_normal"]["cells_per_s_epoch_median"]
                                / summary["genodae"]["cells_per_s_epoch_median"])
    summary["nb_cost_call"] = summary["genodae_normal"]["cells_per_s"] / summary["genodae"]["cells_per_s"]
    for m in ("genodae_nb", "genodae_zinb"):
        summary[m]["epoch_cost"] = (summary["genodae_normal"]["cells_per_s_epoch_median"]
                                    / summary[m]["cells_per_s_epoch_median"])
    meta = {"command": C.command("speed", argv), "date": C.utc_now(),
            "machine": C.machine(torch_threads=True), "versions": C.versions(C.SCVI_VERSIONS), "dataset": a.dataset,
            "epochs": a.epochs,
            "batch_size": a.batch_size, "threads": a.threads, "repeats": a.repeats,
            "loadavg_start": " ".join(load0), "loadavg_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "total_seconds": time.perf_counter() - t0}
    md = markdown(runs, summary, meta)
    C.write_results(a.out, {**meta, "summary": summary, "runs": runs}, md)
    print(md)
    print(f"[speed] wrote {a.out}.json and {a.out}.md in {meta['total_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
