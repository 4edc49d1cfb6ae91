"""Loader-only speed: cells/s delivered as dense float32 minibatches, no model.

Compares, on one generated 1M-cell .h5ad (``--cells`` × ``--genes``, ``--density`` non-zeros, the generator
of ``bench/throughput.py``, seed 0), the ways genodae can feed training and annbatch (scverse's minibatch
loader for AnnData stores):

- ``genodae-memory``   the default path: the file read into memory as CSR, ``BatchSource`` densifies each
                       shuffled batch (``--backed`` off);
- ``genodae-backed``   ``genodae train --backed``: ``read_backed`` + ``ChunkedSource`` (shuffled contiguous
                       chunks of 8,192 rows read from the .h5ad, rows shuffled within a chunk);
- ``annbatch-zarr``    annbatch 0.3.1 ``Loader`` (``shuffle=True``; its default 32 random chunks of 512 rows per
                       read) over a ``DatasetCollection`` converted from the .h5ad (pre-shuffled, sharded zarr
                       v3, zarrs codec pipeline as its README asks); batches densified with ``.toarray()``;
- ``annbatch-memory``  the same Loader over the in-memory CSR (its numba path).

annbatch needs Python >= 3.12 (genodae's venv is 3.11), so its rows run in a separate interpreter given by
``--annbatch-python`` (a venv with ``pip install "annbatch[zarrs,numba]==0.3.1"``; no torch: batches are
numpy arrays, which ``torch.from_numpy`` would wrap without a copy). Every method runs in its own
subprocess pinned to one CPU (``taskset``), with every thread pool at 1 (OMP/MKL/numba/rayon, zarr
``threading.max_workers``). Per repeat: ``--warmup`` batches, then ``--batches`` timed batches. Page cache:
``warm`` (the file read once before) or ``dropped`` (``echo 3 > /proc/sys/vm/drop_caches`` before the child
starts; needs root), per ``--cache``.

    PYTHONPATH=. python bench/loader.py --annbatch-python /tmp/annbatch-venv/bin/python \\
        --data /tmp/genodae-loader --out bench/results/loader.json --md bench/results/loader.md
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
from pathlib import Path

import _common as C
import numpy as np

METHODS = ("genodae-memory", "genodae-backed", "annbatch-zarr", "annbatch-memory")
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                               "RAYON_NUM_THREADS")}


# ---- the batch streams (run in the child) ---------------------------------------------------------------


def genodae_batches(method: str, path: Path, batch_size: int, seed: int):
    """Dense float32 torch batches the way genodae's training loop draws them (epoch order, then the
    source's densify step; the per-gene scaling that follows in ``source(rows)`` is left out)."""
    import anndata as ad
    import torch

    torch.set_num_threads(1)
    from genodae.io import read_backed
    from genodae.train import make_source

    t0 = time.perf_counter()
    if method == "genodae-memory":
        X = ad.read_h5ad(path).X
        cols = None
    else:
        X = read_backed(path).X
        cols = np.arange(X.shape[1])  # what DAE.fit passes for a backed file (the model's genes)
    n, g = X.shape
    source = make_source(X, np.zeros(g, np.float32), np.ones(g, np.float32), torch.device("cpu"), columns=cols)
    open_s = time.perf_counter() - t0
    info = {"open_seconds": open_s, "source": type(source).__name__, "chunk_rows": getattr(source, "chunk", None)}

    def stream():
        epoch = 0
        while True:
            order = source.epoch_order(torch.arange(n), torch.Generator().manual_seed(seed + epoch))
            for s in range(0, n - batch_size + 1, batch_size):
                yield source._rows(order[s : s + batch_size])
            epoch += 1

    return stream(), info


def annbatch_batches(method: str, path: Path, batch_size: int, seed: int, store: Path, chunk_size: int,
                     preload_nchunks: int):
    """Dense float32 numpy batches from annbatch's Loader."""
    import anndata as ad
    import zarr

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline", "threading.max_workers": 1})
    from annbatch import DatasetCollection, Loader

    t0 = time.perf_counter()
    loader = Loader(batch_size=batch_size, chunk_size=chunk_size, preload_nchunks=preload_nchunks, shuffle=True,
                    preload_to_gpu=False, rng=np.random.default_rng(seed), drop_last=True)
    if method == "annbatch-zarr":
        coll = DatasetCollection(store, mode="r")
        loader.use_collection(coll, load_adata=lambda g: ad.AnnData(X=ad.io.sparse_dataset(g["X"])))
    else:
        loader.add_adata(ad.AnnData(X=ad.read_h5ad(path).X))
    info = {"open_seconds": time.perf_counter() - t0, "source": f"annbatch.Loader(chunk_size={chunk_size}, "
            f"preload_nchunks={preload_nchunks})", "chunk_rows": chunk_size * preload_nchunks}

    def stream():
        while True:
            for b in loader:
                x = b["X"]
                yield np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)

    return stream(), info


def peak_rss() -> int:
    """This process's peak RSS (VmHWM): unlike ru_maxrss it does not carry over the driver's peak through
    fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(args) -> dict:
    path = Path(args.data) / f"cells{args.cells}.h5ad"
    if args.one.startswith("genodae"):
        it, info = genodae_batches(args.one, path, args.batch_size, args.seed)
    else:
        it, info = annbatch_batches(args.one, path, args.batch_size, args.seed, Path(args.data) /
                                    f"cells{args.cells}.zarr", args.chunk_size, args.preload_nchunks)
    first = next(it)
    assert first.shape == (args.batch_size, args.genes) and str(first.dtype).endswith("float32"), first.dtype
    reps = []
    for _ in range(args.repeats):
        for _ in range(args.warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)  # the batch is materialised (dense, float32) by the time next() returns
        reps.append(args.batches * args.batch_size / (time.perf_counter() - t0))
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("scipy", "anndata", "h5py", "torch", "zarr", "zarrs", "annbatch", "numba"):
        if mod in sys.modules:
            from importlib.metadata import version

            versions[mod] = version(mod)
    return {"method": args.one, **info, "cells_per_s": reps, "median_cells_per_s": float(np.median(reps)),
            "batch_size": args.batch_size, "batches": args.batches, "warmup": args.warmup,
            "peak_rss_bytes": peak_rss(), "versions": versions,
            "affinity": sorted(os.sched_getaffinity(0))}


# ---- set-up and driver ----------------------------------------------------------------------------------


def convert(args, py: str) -> dict:
    """h5ad → annbatch DatasetCollection (zarr), timed; in the annbatch interpreter."""
    code = f"""
import json, time, numpy as np, anndata as ad, zarr
zarr.config.set({{"codec_pipeline.path": "zarrs.ZarrsCodecPipeline", "threading.max_workers": 1}})
from annbatch import DatasetCollection
t0 = time.perf_counter()
DatasetCollection({str(args.store)!r}).add_adatas([{str(args.h5ad)!r}], dataset_size="4GB",
    rng=np.random.default_rng(0), load_adata=lambda p: ad.AnnData(X=ad.experimental.read_lazy(p).X))
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""
    env = {**os.environ, **ONE_THREAD}
    res = subprocess.run(["taskset", "-c", str(args.cpu), "/usr/bin/time", "-f", "%M", py, "-c", code],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"conversion failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["peak_rss_bytes"] = int(res.stderr.strip().splitlines()[-1]) * 1024
    out["store_bytes"] = sum(f.stat().st_size for f in args.store.rglob("*") if f.is_file())
    return out


def can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_method(args, method: str, source_tree: str | None) -> dict:
    """One child: ``method`` pinned to one CPU, one repeat; genodae from ``source_tree`` (default: this tree)."""
    py = args.annbatch_python if method.startswith("annbatch") else sys.executable
    cmd = ["taskset", "-c", str(args.cpu), py, __file__, "--one", method, "--repeats", "1"]
    for k in ("cells", "genes", "batch_size", "batches", "warmup", "seed", "chunk_size", "preload_nchunks", "data"):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    root = source_tree or str(C.REPO)
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": root}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(res.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{method} failed")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return r


def warm(paths) -> None:
    for p in paths:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def main() -> None:
    p = C.parser(__doc__, full=True)
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128, help="genodae's default batch_size")
    p.add_argument("--batches", type=int, default=7000, help="timed batches per repeat (7,000 × 128 = 0.9 of 1M)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--cache", nargs="+", default=["warm", "dropped"], choices=("warm", "dropped"))
    p.add_argument("--chunk-size", type=int, default=512, help="annbatch chunk_size (its default)")
    p.add_argument("--preload-nchunks", type=int, default=32, help="annbatch preload_nchunks (its default)")
    p.add_argument("--data", default="/tmp/genodae-loader", help="folder for the generated .h5ad and zarr store")
    p.add_argument("--annbatch-python", default=None, help="a Python >= 3.12 with annbatch installed")
    p.add_argument("--cpu", type=int, default=0, help="the CPU each child is pinned to")
    p.add_argument("--before", default=None, metavar="DIR",
                   help="also run the genodae rows with the genodae package in DIR (an older source tree)")
    p.add_argument("--before-label", default=None, help="what --before is, for the table (e.g. a commit)")
    p.add_argument("--out", default=None)
    p.add_argument("--md", default=None)
    p.add_argument("--render", default=None, metavar="JSON", help="only write --md from an earlier --out")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.render:
        out = json.loads(Path(args.render).read_text())
        if args.before_label:
            out["before_label"] = args.before_label
            Path(args.render).write_text(json.dumps(out, indent=1) + "\n")
        Path(args.md).write_text(markdown(out) + "\n")
        return
    if args.one:
        print(json.dumps(run_child(args)))
        return

    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    args.h5ad = data / f"cells{args.cells}.h5ad"
    args.store = data / f"cells{args.cells}.zarr"
    setup = {}
    if not args.h5ad.exists():
        t0 = time.perf_counter()
        C.write_backed(C.make_csr(args.cells, args.genes, args.density, seed=0), args.h5ad)
        setup["write_h5ad_seconds"] = time.perf_counter() - t0
    setup["h5ad_bytes"] = args.h5ad.stat().st_size
    methods = list(args.methods)
    annbatch_note = None
    if any(m.startswith("annbatch") for m in methods):
        if not args.annbatch_python:
            annbatch_note = "annbatch rows skipped: no --annbatch-python (annbatch needs Python >= 3.12)"
            methods = [m for m in methods if not m.startswith("annbatch")]
        elif "annbatch-zarr" in methods:
            if not args.store.exists():
                setup["conversion"] = convert(args, args.annbatch_python)
            setup["store_bytes"] = sum(f.stat().st_size for f in args.store.rglob("*") if f.is_file())

    variants = [(m, None) for m in methods]
    if args.before:  # the same genodae rows with an older source tree (e.g. `git archive REV genodae | tar -x`)
        variants += [(m, args.before) for m in methods if m.startswith("genodae")]
    rows = []
    for cache in args.cache:
        if cache == "dropped" and not can_drop_caches():
            print("cannot drop the page cache (needs root): no dropped rows", file=sys.stderr)
            continue
        # warm: the methods take turns, one repeat each per round, so that a change in the load of this shared
        # machine falls on all of them alike; dropped: one round (a second would find the first one's pages)
        runs = {v: [] for v in variants}
        for _ in range(args.repeats if cache == "warm" else 1):
            for m, src in variants:
                if cache == "dropped":
                    drop_caches()
                else:
                    warm([args.store] if m == "annbatch-zarr" else [args.h5ad])
                runs[(m, src)].append(run_method(args, m, src))
        for (m, src), rs in runs.items():
            speeds = [r["cells_per_s"][0] for r in rs]
            r = {**rs[0], "method": m + (" (before)" if src else ""), "source_tree": src, "cache": cache,
                 "cells_per_s": speeds, "median_cells_per_s": float(np.median(speeds)),
                 "open_seconds": float(np.median([x["open_seconds"] for x in rs])),
                 "peak_rss_bytes": max(x["peak_rss_bytes"] for x in rs), "load_after": [x["load_after"] for x in rs]}
            rows.append(r)
            print(f"{r['method']:26s} {cache:8s} {r['median_cells_per_s']:>10,.0f} cells/s  (rounds "
                  f"{', '.join(f'{x:,.0f}' for x in speeds)}; open {r['open_seconds']:.1f} s; "
                  f"peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB; load {' | '.join(r['load_after'])})", flush=True)

    out = {"date": C.utc_now(), "machine": C.machine(),
           "command": "python bench/loader.py " + " ".join(sys.argv[1:]), "threads": 1,
           "pinned_cpu": args.cpu, "data": {"cells": args.cells, "genes": args.genes, "density": args.density,
                                            "seed": 0, **setup},
           "annbatch_note": annbatch_note, "before_label": args.before_label, "load_end": C.load_average(2),
           "results": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(markdown(out) + "\n")


def markdown(out: dict) -> str:
    m, d = out["machine"], out["data"]
    lines = [
        "# Loader speed: dense float32 minibatches, no model",
        "",
        f"Generated by `{out['command']}` on {out['date']} ({m['cpu']}, {m['cores']} cores, "
        f"{m['memory_bytes'] / 2**30:.0f} GiB, {m['platform']}; shared with other jobs: the load average after "
        f"each run is listed). Data: {d['cells']:,} cells × {d['genes']:,} genes, {d['density']:.0%} non-zeros "
        f"(seed 0), a {d['h5ad_bytes'] / 1e9:.2f} GB .h5ad. Every run: its own process pinned to one CPU "
        f"(taskset -c {out['pinned_cpu']}), every thread pool at {out['threads']} (torch, OMP/MKL/OpenBLAS, numba, "
        "rayon, zarr `threading.max_workers`); cells/s = timed batches × batch size / seconds, after warm-up "
        "batches. Warm page cache: the methods take turns, one run each per round, median of the rounds; "
        "dropped: `echo 3 > /proc/sys/vm/drop_caches` before the one run.",
        "",
        "| method | page cache | batch | cells/s (median) | rounds | open (s) | peak RSS (GB) | load average after each |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for r in out["results"]:
        lines.append(f"| {r['method']} | {r['cache']} | {r['batch_size']} | {r['median_cells_per_s']:,.0f} | "
                     f"{', '.join(f'{x:,.0f}' for x in r['cells_per_s'])} | {r['open_seconds']:.1f} | "
                     f"{r['peak_rss_bytes'] / 1e9:.2f} | {' / '.join(r['load_after'])} |")
    r0 = out["results"][0] if out["results"] else {}
    lines += ["", f"Timed: {r0.get('batches', 0):,} batches of {r0.get('batch_size', 0)} after {r0.get('warmup', 0)} "
                  "warm-up batches per run. open = reading the file into memory (memory rows) or opening it (the "
                  "others), not timed in cells/s."]
    if any(r.get("source_tree") for r in out["results"]):
        lines += ["", f"(before): the same rows with the genodae package of `--before` "
                      f"({out.get('before_label') or 'an older source tree'})."]
    if "conversion" in d:
        c = d["conversion"]
        lines += ["", f"annbatch conversion (h5ad → pre-shuffled, sharded zarr `DatasetCollection`, lz4, one CPU): "
                      f"{c['seconds']:.0f} s, peak RSS {c['peak_rss_bytes'] / 1e9:.2f} GB, store "
                      f"{c['store_bytes'] / 1e9:.2f} GB."]
    if out.get("annbatch_note"):
        lines += ["", out["annbatch_note"]]
    vers = {}
    for r in out["results"]:
        vers.setdefault(r["method"].split("-")[0], {}).update(r["versions"])
    lines += ["", "Versions: " + "; ".join(f"{who}: " + ", ".join(f"{k} {v}" for k, v in sorted(v.items()))
                                         for who, v in vers.items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
