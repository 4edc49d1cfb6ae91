#!/usr/bin/env python
"""Embedding quality: genodae (defaults) against PCA, ICA, NMF, scVI and the raw prepared input.

Every dataset is prepared once with ``genodae.pp.prepare`` (library defaults: normalise to 1e4 + log1p for
counts, 2,000 HVGs, min-max scaling for the model). Every method sees the same genes
(``var["highly_variable"]``) and the input it is designed for:

- ``genodae``: ``genodae.tl.dae`` with the library's defaults at run time (only ``seed``, ``device="cpu"`` and
  ``num_threads`` set); embedding ``obsm["X_dae"]``.
- ``pca``: ``sc.pp.pca`` (50 components) on the log-normalised HVG ``X`` (scanpy practice: centred, genes not
  scaled).
- ``ica``: ``sklearn.decomposition.FastICA`` (32 components, as genodae's ``n_latent``; unit-variance whitening)
  on the dense log-normalised HVG matrix; embedding = the sources.
- ``nmf``: ``sklearn.decomposition.NMF`` (32 components, ``init="nndsvda"``) on the same log-normalised HVG
  matrix (non-negative for counts; TCGA's log-scale values are shifted by their global minimum); embedding =
  W (cells × 32).
- ``scvi``: ``scvi.model.SCVI`` (library defaults: n_latent 10, 1 layer of 128, ZINB... see ``SCVI_KW``) on the
  raw counts of the same genes (``layers["counts"]``); ``max_epochs`` bounded (``--scvi-epochs``) with scvi's
  early stopping on the validation ELBO; embedding = ``get_latent_representation()`` (posterior means).
  Only for count data (not the TCGA microarray/RNA-seq log values).
- ``raw``: the log-normalised HVG matrix itself (dense), no reduction.

Metrics (``bench/_common.score_embedding``, identical to the PCA comparison): 15-NN accuracy (stratified 5-fold),
Leiden ARI/NMI at resolution 1.0 with the number of clusters, silhouette of the labels; seconds per
embedding. Seeds 0, 1, 2 by default (the seed drives the method and the metric's CV split / Leiden).

Examples
--------
python bench/baselines.py                                    # every dataset, every method, seeds 0 1 2
python bench/baselines.py --datasets pbmc68k --methods pca,scvi --seeds 0 --out /tmp/b
python bench/baselines.py --resume                           # skip (dataset, method, seed) already in OUT.json
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path

import _common as C
import numpy as np
import pandas as pd

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

METHODS = ("genodae", "pca", "ica", "nmf", "scvi", "raw")
PRESET_METHODS = ("genodae_signatures", "genodae_adage")  # genodae's other presets (run separately: slower)
N_COMPONENTS = 32  # ICA and NMF: genodae's n_latent
PCA_COMPS = C.PCA_COMPS
SCVI_KW: dict = {}  # scvi-tools defaults (n_latent=10, n_hidden=128, n_layers=1, gene_likelihood="zinb")

# name: description (loaded by _common.load_raw)
DATASETS = {
    "pbmc68k": "scanpy pbmc68k_reduced: counts = round(expm1(raw.X) * n_counts / 1e4); labels bulk_labels",
    "pbmc4k": "scrna/pbmc4k_top2000.h5ad; labels obs['cluster']",
    "mouse_bladder": "scrna/mouse_bladder_top2000.h5ad; labels obs['cell_type']",
    "pbmc3k_cd8_cd14": "scrna/pbmc3k_cd8_cd14_mtx (10x) + cells_metadata.csv; labels celltype",
    "celseq2_5cl": "scrna/sc_celseq2_5cl_p1.count.csv.gz + metadata; singlets (demuxlet_cls == 'SNG'); "
                   "labels cell_line_demuxlet",
    "tcga_brca": "bulk/tcga_brca_mixomics data.{train,test}.mrna.csv (log values, not counts) + subtype",
}

log = logging.getLogger("bench.baselines")


log_hvg = C.log_hvg


# --- methods ---------------------------------------------------------------------------------------------


def embed_pca(adata, seed: int, n_comps: int = PCA_COMPS):
    import scanpy as sc

    X = log_hvg(adata, dense=False)
    n = min(n_comps, min(X.shape) - 1)
    return sc.pp.pca(X, n_comps=n, random_state=seed).astype(np.float32), {"n_components": n}


def embed_ica(adata, seed: int, n_comps: int = N_COMPONENTS):
    from sklearn.decomposition import FastICA

    X = log_hvg(adata)
    ica = FastICA(n_components=n_comps, whiten="unit-variance", random_state=seed, max_iter=1000, tol=1e-4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        Z = ica.fit_transform(X)
    conv = not any("did not converge" in str(x.message) for x in w)
    return Z.astype(np.float32), {"n_components": n_comps, "n_iter": int(ica.n_iter_), "converged": conv}


def embed_nmf(adata, seed: int, n_comps: int = N_COMPONENTS):
    from sklearn.decomposition import NMF

    X = log_hvg(adata)
    shift = float(min(X.min(), 0.0))
    X = X - shift  # log-normalised counts are >= 0; log-scale bulk values (TCGA) are shifted by their minimum
    nmf = NMF(n_components=n_comps, init="nndsvda", random_state=seed, max_iter=500, tol=1e-4)
    Z = nmf.fit_transform(X)
    return Z.astype(np.float32), {"n_components": n_comps, "n_iter": int(nmf.n_iter_),
                                  "converged": bool(nmf.n_iter_ < 500), "shift": shift}


def embed_scvi(adata, seed: int, max_epochs: int, threads: int = 1):
    model, a, info = C.train_scvi(adata, seed, max_epochs, threads=threads, **SCVI_KW)
    return np.asarray(model.get_latent_representation(), np.float32), info


def embed_raw(adata, seed: int):
    X = log_hvg(adata)
    return X, {"n_features": int(X.shape[1])}


# --- running ---------------------------------------------------------------------------------------------


def run(datasets, seeds, methods, data_dir, scvi_cap, threads=1, done=frozenset(), on_rows=None,
        progress=print, variants=None) -> list[dict]:
    variants = variants or {}
    rows = []
    for name in datasets:
        raw = C.load_raw(name, data_dir)
        if raw is None:
            continue
        import genodae

        t0 = time.perf_counter()
        adata = genodae.pp.prepare(raw, copy=True)
        labels = adata.obs["label"]
        n_genes = int(adata.var["highly_variable"].sum())
        counts = C.is_count_data(adata)
        progress(f"[baselines] {name}: {adata.n_obs} cells × {n_genes} genes used ({'counts' if counts else 'log values'}; "
                 f"prepared in {time.perf_counter() - t0:.1f}s), {labels.nunique()} labels")
        for seed in seeds:
            for m in methods:
                if (name, m, seed) in done:
                    continue
                if m == "scvi" and not counts:
                    progress(f"  {name:<16} scvi: skipped (not count data)")
                    continue
                t = time.perf_counter()
                if m == "genodae":
                    Z, info, _ = C.embed_genodae(adata, seed, threads)
                elif m.startswith("genodae_"):
                    Z, info, _ = C.embed_genodae(adata, seed, threads, preset=m.removeprefix("genodae_"))
                elif m.startswith("genodae:"):  # --variant NAME=JSON
                    settings = dict(variants[m.partition(":")[2]])
                    scaling = settings.pop("scaling", None)
                    a = C.rescale(adata, scaling) if scaling else adata
                    Z, info, _ = C.embed_genodae(a, seed, threads, **settings)
                elif m == "pca":
                    Z, info = embed_pca(adata, seed)
                elif m == "ica":
                    Z, info = embed_ica(adata, seed)
                elif m == "nmf":
                    Z, info = embed_nmf(adata, seed)
                elif m == "scvi":
                    Z, info = embed_scvi(adata, seed, C.scvi_epochs_for(adata.n_obs, scvi_cap), threads)
                elif m == "raw":
                    Z, info = embed_raw(adata, seed)
                else:
                    raise ValueError(m)
                secs = time.perf_counter() - t
                r = {"dataset": name, "method": m, "seed": seed, "n_cells": int(adata.n_obs), "n_genes": n_genes,
                     "n_labels": int(labels.nunique()), **C.score_embedding(Z, labels, seed), "seconds": secs,
                     "dim": int(Z.shape[1]), **info}
                rows.append(r)
                progress(_fmt(r))
                if on_rows is not None:
                    on_rows(rows)
    return rows


def _fmt(r: dict) -> str:
    extra = f" ep {r['epochs_run']}" if "epochs_run" in r else ""
    return (f"  {r['dataset']:<16} {r['method']:<8} seed {r['seed']}: 15-NN {r['knn_acc']:.3f}  ARI {r['ari']:.3f}"
            f"  NMI {r['nmi']:.3f}  k {r['n_clusters']:>2}  ARI* {r['ari_opt']:.3f} (k {r['k_opt']})"
            f"  sil {r['silhouette']:+.3f}  {r['seconds']:.1f}s{extra}")


# --- reporting -------------------------------------------------------------------------------------------


def summarise(rows: list[dict], metrics=("knn_acc", "ari", "nmi", "n_clusters", "ari_opt", "nmi_opt", "k_opt",
                                        "silhouette", "seconds")):
    order = {m: i for i, m in enumerate(METHODS + PRESET_METHODS)}
    dorder = {d: i for i, d in enumerate(DATASETS)}
    out = C.mean_sd(pd.DataFrame(rows), ["dataset", "method"], metrics).reset_index()
    out["_d"] = out["dataset"].map(dorder).fillna(99)
    out["_m"] = out["method"].map(order).fillna(99)
    return out.sort_values(["_d", "_m"]).drop(columns=["_d", "_m"]).reset_index(drop=True)


pm = C.pm


def markdown(summary: pd.DataFrame, meta: dict) -> str:
    lines = [
        "# Embedding quality: genodae vs PCA, ICA, NMF, scVI and the raw input",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']['cpu']}, {meta['machine']['cores']} "
        f"cores, load average {meta.get('load_start', '?')} at the start, 1 torch thread); total {meta['total_seconds'] / 60:.1f} min. "
        f"Seeds {meta['seeds']}; mean ± sd over seeds. genodae {meta['versions'].get('genodae')}, "
        f"scvi-tools {meta['versions'].get('scvi-tools')}, torch {meta['versions'].get('torch')}, "
        f"scanpy {meta['versions'].get('scanpy')}, scikit-learn {meta['versions'].get('scikit-learn')}.",
        "",
        "15-NN: 15-nearest-neighbour accuracy (stratified 5-fold). ARI/NMI: Leiden (resolution 1.0, 15-NN graph) "
        "vs the labels; k: Leiden clusters. ARI*/NMI*/k*: the same at the resolution in 0.1-2.0 whose clusters "
        "have the best NMI (scib's cluster-optimal scores, free of the cluster-count effect of a fixed "
        "resolution). sil: silhouette of the labels (euclidean). s: seconds to compute the embedding. "
        "dim: embedding columns. Best mean per dataset and metric in **bold**.",
        "",
    ]
    for d, sub in summary.groupby("dataset", sort=False):
        info = sub.iloc[0]
        lines += [f"## {d} ({int(info['n_cells_mean'])} cells × {int(info['n_genes_mean'])} genes, "
                  f"{int(info['n_labels_mean'])} labels)", "",
                  "| method | dim | 15-NN acc | ARI | NMI | k | ARI* | NMI* | k* | silhouette | s |",
                  "|---|---:|---|---|---|---|---|---|---|---|---:|"]
        best = {m: sub[f"{m}_mean"].max() for m in ("knn_acc", "ari", "nmi", "ari_opt", "nmi_opt", "silhouette")}
        for _, r in sub.iterrows():
            cell = {m: (f"**{pm(r, m)}**" if np.isclose(r[f"{m}_mean"], best[m]) else pm(r, m))
                    for m in best}
            lines.append(f"| {r['method']} | {int(r['dim_mean'])} | {cell['knn_acc']} | {cell['ari']} | {cell['nmi']} | "
                         f"{pm(r, 'n_clusters', 1)} | {cell['ari_opt']} | {cell['nmi_opt']} | {pm(r, 'k_opt', 1)} | "
                         f"{cell['silhouette']} | {r['seconds_mean']:.1f} |")
        lines.append("")
    # means across datasets, only over datasets where every method in the row ran
    lines += ["## Mean over datasets", "",
              "Each dataset weighted equally. `all` = the datasets every method ran on (scVI: count data only); "
              "`count data` = the single-cell sets.", "",
              "| method | 15-NN acc (all but TCGA) | ARI (all but TCGA) | ARI* (all but TCGA) | 15-NN acc (all) | "
              "ARI (all) | NMI (all) | ARI* (all) | best 15-NN / ARI / ARI* (ties count) |",
              "|---|---|---|---|---|---|---|---|---|"]
    count_sets = [d for d in summary["dataset"].unique() if d != "tcga_brca"]
    wins = {m: [0, 0, 0] for m in summary["method"].unique()}
    for _d, sub in summary.groupby("dataset", sort=False):
        for j, metric in enumerate(("knn_acc_mean", "ari_mean", "ari_opt_mean")):
            for m in sub.loc[np.isclose(sub[metric], sub[metric].max()), "method"]:  # ties: each counts
                wins[m][j] += 1
    for m, sub in summary.groupby("method", sort=False):
        sc_ = sub[sub["dataset"].isin(count_sets)]
        all_ = sub if m != "scvi" else None
        f = lambda s, c: f"{s[c].mean():.3f}" if s is not None and len(s) else "—"  # noqa: E731
        lines.append(f"| {m} | {f(sc_, 'knn_acc_mean')} | {f(sc_, 'ari_mean')} | {f(sc_, 'ari_opt_mean')} | "
                     f"{f(all_, 'knn_acc_mean')} | {f(all_, 'ari_mean')} | {f(all_, 'nmi_mean')} | "
                     f"{f(all_, 'ari_opt_mean')} | {wins[m][0]} / {wins[m][1]} / {wins[m][2]} |")
    lines += ["", "## Methods", ""]
    for m, s in meta["methods"].items():
        lines.append(f"- `{m}`: {s}")
    lines += ["", "## Datasets", ""]
    for d in meta["datasets"]:
        lines.append(f"- `{d}`: {DATASETS[d]}")
    return "\n".join(lines) + "\n"


def method_descriptions(scvi_cap: int) -> dict:
    from genodae.config import DAEConfig, PrepareConfig, make_config

    cfg = DAEConfig().to_dict()
    for k in ("seed", "device", "amp", "num_threads", "data_placement"):
        cfg.pop(k, None)
    return {
        "genodae": {"what": "genodae.tl.dae, library defaults (num_threads=1, device=cpu, seed)",
                    "scaling": PrepareConfig().scaling, **cfg},
        **{m: {"what": f"genodae.tl.dae(preset={m.removeprefix('genodae_')!r}), otherwise as genodae",
               **make_config(m.removeprefix("genodae_")).to_dict()} for m in PRESET_METHODS},
        "pca": f"sc.pp.pca({PCA_COMPS}) on log-normalised HVG X (centred, genes not scaled)",
        "ica": f"sklearn FastICA({N_COMPONENTS}, whiten='unit-variance', max_iter=1000) on dense log-normalised HVG X; "
               "sources as embedding (32 = genodae's n_latent)",
        "nmf": f"sklearn NMF({N_COMPONENTS}, init='nndsvda', max_iter=500) on log-normalised HVG X (non-negative; "
               "log-scale bulk data with negative values are shifted by their global minimum); W as embedding (32 = genodae's n_latent)",
        "scvi": f"scvi.model.SCVI defaults (n_latent=10, n_hidden=128, n_layers=1, zinb) on raw counts of the HVGs; "
                f"max_epochs = min(scvi's default round(20000/n*400), 400, {scvi_cap}), early_stopping=True "
                "(validation ELBO, patience 45), batch_size 128; latent posterior means. Count data only.",
        "raw": "the log-normalised HVG matrix itself (dense, all genes)",
    }


def write(out: Path, rows, meta):
    summary = summarise(rows)
    for c in ("n_cells", "n_genes", "n_labels", "dim"):
        s = pd.DataFrame(rows).groupby(["dataset", "method"], sort=False)[c].mean()
        summary[f"{c}_mean"] = [s[(d, m)] for d, m in zip(summary["dataset"], summary["method"], strict=True)]
    md = markdown(summary, meta)
    C.write_results(out, C.run_record(meta, summary, rows), md)
    return md


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated subset of " + ",".join(METHODS + PRESET_METHODS))
    C.add_seeds(p)
    C.add_scvi_epochs(p)
    C.add_threads(p)
    C.add_data_dir(p)
    C.add_out(p, "baselines")
    C.add_resume(p)
    C.add_variant(p, "also run genodae with these settings (DAEConfig fields, or scaling) as method "
                     "genodae:NAME, e.g. 'long={\"epochs\": 1500}' (repeatable)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    C.set_threads(a.threads)
    methods = [m for m in a.methods.split(",") if m]
    bad = set(methods) - set(METHODS + PRESET_METHODS)
    if bad:
        p.error(f"unknown method(s) {', '.join(sorted(bad))}")
    variants = C.parse_variants(p, a.variant)
    methods += [f"genodae:{n}" for n in variants]
    old, prev_s = [], 0.0
    if a.resume and Path(f"{a.out}.json").exists():
        prev = json.loads(Path(f"{a.out}.json").read_text())
        old, prev_s = prev["runs"], float(prev.get("total_seconds", 0))
    done = {(r["dataset"], r["method"], r["seed"]) for r in old}
    t0, load0 = time.perf_counter(), C.load1()
    cmd = C.command("baselines", argv)

    def meta():
        return {"command": cmd, "date": C.utc_now(), "machine": C.machine(torch_threads=True), "load_start": load0,
                "versions": C.versions(C.SCVI_VERSIONS), "seeds": a.seeds,
                "datasets": sorted({r["dataset"] for r in old + rows_now}, key=list(DATASETS).index),
                "data_dir": str(a.data_dir), "total_seconds": prev_s + time.perf_counter() - t0,
                "methods": {**{k: v for k, v in method_descriptions(a.scvi_epochs).items()
                               if k in set(methods) | {r["method"] for r in old}},
                            **{f"genodae:{n}": {"what": "genodae.tl.dae with these settings", **v}
                               for n, v in variants.items()}}}

    rows_now: list[dict] = []

    def save(rows):
        rows_now[:] = rows
        write(a.out, old + rows, meta())

    rows = run(a.datasets, a.seeds, methods, a.data_dir, a.scvi_epochs, a.threads, done, on_rows=save,
               progress=lambda s: print(s, flush=True), variants=variants)
    rows_now[:] = rows
    md = write(a.out, old + rows, meta())
    print(md)
    print(f"[baselines] wrote {a.out}.json and {a.out}.md in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
