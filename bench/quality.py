#!/usr/bin/env python
"""Embedding quality: genodae against PCA(50) on labelled single-cell data, over several seeds.

Datasets: scanpy's pbmc68k_reduced (counts recovered exactly from ``raw`` and ``n_counts``), pbmc4k and
mouse bladder from ``--data-dir`` (skipped with a message when absent), and ``pbmc4k_thin20``, a derived
stress set (pbmc4k with every count binomially thinned to 20%, seeded: the same cells at a fifth of the
sequencing depth, about 4% non-zeros instead of 10%). Every dataset is prepared once with
``genodae.pp.prepare`` (library defaults); every method sees the same genes (``var["highly_variable"]``).
Methods:

- ``dae:<variant>``: ``genodae.tl.dae`` with the settings of a named variant (see ``VARIANTS``; ``default``
  is whatever the library's defaults are when the script runs, ``before`` freezes the defaults that
  shipped before tuning, so the comparison survives later default changes).
- ``pca_log``: scanpy's usual practice: ``sc.pp.pca`` (50 components) on the log-normalised HVG matrix
  (``X``, sparse, implicitly centred, genes *not* scaled to unit variance).
- ``pca_minmax``: PCA(50) on exactly genodae's default model input (each gene min–max scaled to 0–1).
- ``pca_zscore``: PCA(50) on z-scored genes (scanpy's older ``sc.pp.scale`` + ``sc.pp.pca`` recipe,
  without clipping).

Metrics per method × dataset × seed: 15-NN classification accuracy (stratified 5-fold, shuffled with the
seed), Leiden ARI/NMI at resolution 1.0 (``sc.pp.neighbors(n_neighbors=15, random_state=seed)`` then
``sc.tl.leiden(flavor="igraph", n_iterations=2, random_state=seed)``), the number of Leiden clusters, the
silhouette of the labels on the embedding (euclidean), and the seconds the embedding took.

Examples
--------
python bench/quality.py                                   # all datasets, seeds 0 1 2, before/default + PCA
python bench/quality.py --datasets pbmc68k --seeds 0 --variants default,zscore --epochs 30 --out /tmp/q
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
import scipy.sparse as sp

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="anndata")

# --- what is compared ------------------------------------------------------------------------------------

# Each variant: PrepareConfig fields (only ``scaling`` may differ from the shared preparation: it changes
# the per-gene scaling, never the genes) plus DAEConfig fields. ``{}`` = the library's current defaults.
BEFORE = dict(  # the defaults that shipped before tuning (genodae 0.1.0, commit 57224f1); output "auto"
    # then meant sigmoid for min-max input, so it is written out (today's "auto" means linear with MSE)
    scaling="minmax", n_latent=32, hidden=(512, 128), activation="relu", dropout=0.0, norm="none",
    decoder="linear", output_activation="sigmoid", corruption=0.2, gene_likelihood="normal", loss_on="all",
    optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=128, epochs=100, patience=10,
)
# The winner of the tuning in bench/README.md ("Tuning the defaults"): min-max input kept, but a linear
# output (no sigmoid), one GELU hidden layer of 256 (no dead-ReLU collapse, half the compute).
TUNED = {**BEFORE, "output_activation": "linear", "hidden": (256,), "activation": "gelu"}
VARIANTS: dict[str, dict] = {
    "default": {},
    "before": BEFORE,
    "tuned": TUNED,
    # the plain DAE of issue 4's evidence: 512-128-32, 20% masking, MSE on min-max data, 200 epochs
    "issue4": {**BEFORE, "epochs": 200, "patience": 0},
    "adage": {"preset": "adage"},
}
PCA_METHODS = ("pca_log", "pca_minmax", "pca_zscore")
# the data sets (loaded by _common.load_raw); mouse_bladder_thin20 is not run by default
DATASETS = ("pbmc68k", "pbmc4k", "mouse_bladder", "pbmc4k_thin20", "mouse_bladder_thin20")
CORE = ("pbmc68k", "pbmc4k", "mouse_bladder")  # the headline mean is over these
DEFAULT_DATASETS = (*CORE, "pbmc4k_thin20")
METRICS = ("knn_acc", "ari", "nmi", "n_clusters", "ari_opt", "nmi_opt", "k_opt", "silhouette", "seconds")

log = logging.getLogger("bench.quality")


def import_genodae():
    try:
        import genodae
    except ModuleNotFoundError as e:  # genodae.io may still be missing in a work-in-progress checkout
        raise SystemExit(f"cannot import genodae ({e}); finish the package first") from None
    return genodae


# --- data ------------------------------------------------------------------------------------------------


def prepare(adata, scaling: str | None = None):
    """A prepared copy (library defaults, or another per-gene scaling of the same genes)."""
    genodae = import_genodae()
    kw = {} if scaling is None else {"scaling": scaling}
    return genodae.pp.prepare(adata, copy=True, **kw)


# --- methods ---------------------------------------------------------------------------------------------


def embed_pca(adata, method: str, seed: int, n_comps: int = 50) -> np.ndarray:
    import scanpy as sc

    used = adata.var["highly_variable"].to_numpy(bool)
    if method == "pca_log":
        X = adata.X[:, used]
        X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)
    elif method == "pca_minmax":
        X = C.scaled_input(adata)  # adata prepared with minmax (the default)
    elif method == "pca_zscore":
        X = adata.X[:, used]
        X = X.toarray() if sp.issparse(X) else np.asarray(X)
        X = X.astype(np.float32)
        sd = X.std(0)
        X = (X - X.mean(0)) / np.where(sd > 0, sd, 1)
    else:
        raise ValueError(method)
    n_comps = min(n_comps, min(X.shape) - 1)
    return sc.pp.pca(X, n_comps=n_comps, random_state=seed).astype(np.float32)


def variant_settings(variant: str | dict) -> dict:
    if isinstance(variant, dict):
        return dict(variant)
    if variant in VARIANTS:
        return dict(VARIANTS[variant])
    if variant.startswith("{"):
        return json.loads(variant)
    raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)} (or a JSON dict of settings)")


def embed_dae(prepared: dict, settings: dict, seed: int, epochs: int | None = None, threads: int = 0):
    """(embedding, info) of genodae with ``settings`` on the prepared copy with the right scaling."""
    genodae = import_genodae()
    s = dict(settings)
    scaling = s.pop("scaling", None)
    adata = prepared[scaling or "default"] if (scaling or "default") in prepared else None
    if adata is None:
        base = prepared["default"]
        adata = prepared.setdefault(scaling, C.rescale(base, scaling))
    if epochs is not None:
        s["epochs"] = epochs
    s["seed"] = seed
    s.setdefault("device", "cpu")
    if threads:
        s["num_threads"] = threads
    ad = adata.copy()
    genodae.tl.dae(ad, **s)
    h = ad.uns["dae"]["history"]
    info = {**C.history_info(h), "best_val_loss": float(np.min(h["val_loss"]))}
    return np.asarray(ad.obsm["X_dae"]), info


# --- metrics ---------------------------------------------------------------------------------------------


score = C.score_embedding  # bench/_common.py: 15-NN, Leiden ARI/NMI (fixed and cluster-optimal), silhouette


# --- running ---------------------------------------------------------------------------------------------


def run(datasets, seeds, variants, pca_methods, data_dir: Path, epochs=None, threads=0,
        progress=print) -> list[dict]:
    rows = []
    for name in datasets:
        raw = C.load_raw(name, data_dir)
        if raw is None:
            continue
        t0 = time.perf_counter()
        prepared = {"default": prepare(raw)}
        prep_s = time.perf_counter() - t0
        labels = prepared["default"].obs["label"]
        n_genes = int(prepared["default"].var["highly_variable"].sum())
        progress(f"[quality] {name}: {prepared['default'].n_obs} cells × {n_genes} genes used "
                 f"(prepared in {prep_s:.1f}s), {labels.nunique()} labels")
        for seed in seeds:
            for m in pca_methods:
                t = time.perf_counter()
                Z = embed_pca(prepared["default"], m, seed)
                secs = time.perf_counter() - t
                r = {"dataset": name, "method": m, "seed": seed, **score(Z, labels, seed), "seconds": secs}
                rows.append(r)
                progress(_fmt(r))
            for v in variants:
                vname = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                t = time.perf_counter()
                Z, info = embed_dae(prepared, variant_settings(v), seed, epochs, threads)
                secs = time.perf_counter() - t
                r = {"dataset": name, "method": f"dae:{vname}", "seed": seed, **score(Z, labels, seed),
                     "seconds": secs, **info}
                rows.append(r)
                progress(_fmt(r))
    return rows


def _fmt(r: dict) -> str:
    extra = f" ep {r['epochs_run']}(best {r['best_epoch']})" if "epochs_run" in r else ""
    return (f"  {r['dataset']:<14} {r['method']:<22} seed {r['seed']}: 15-NN {r['knn_acc']:.3f}  ARI {r['ari']:.3f}"
            f"  NMI {r['nmi']:.3f}  k {r['n_clusters']:>2}  ARI* {r.get('ari_opt', float('nan')):.3f} (k {r.get('k_opt', 0)})"
            f"  sil {r['silhouette']:+.3f}  {r['seconds']:.1f}s{extra}")


def summarise(rows: list[dict]) -> pd.DataFrame:
    return C.mean_sd(pd.DataFrame(rows), ["dataset", "method"], METRICS).reset_index()


def markdown(summary: pd.DataFrame, meta: dict) -> str:
    pm = C.pm

    def opt(r, m, nd=3):  # absent from runs recorded before the metric existed
        return pm(r, m, nd) if f"{m}_mean" in r and not pd.isna(r[f"{m}_mean"]) else "–"

    lines = [
        "# Embedding quality: genodae vs PCA(50)",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']['cpu']}, "
        f"{meta['machine']['cores']} cores, load average {meta['machine'].get('load_average', '?')} at the end: "
        "with other jobs running, seconds are noisy); total {meta['total_seconds'] / 60:.1f} min. "
        f"Seeds {meta['seeds']}; mean ± sd over seeds.",
        "",
        "15-NN: 15-nearest-neighbour classification accuracy, stratified 5-fold. ARI/NMI: Leiden (resolution 1.0, "
        "15-NN graph) against the labels; k: number of Leiden clusters. ARI*/NMI*/k*: the same at the resolution "
        "in 0.1-2.0 whose clusters have the best NMI (scib's cluster-optimal scores). sil: silhouette of the "
        "labels. s: seconds to compute the embedding (training for genodae).",
        "",
        "| dataset | method | 15-NN acc | ARI | NMI | k | ARI* | NMI* | k* | silhouette | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        lines.append(f"| {r['dataset']} | {r['method']} | {pm(r, 'knn_acc')} | {pm(r, 'ari')} | {pm(r, 'nmi')} | "
                     f"{pm(r, 'n_clusters', 1)} | {opt(r, 'ari_opt')} | {opt(r, 'nmi_opt')} | {opt(r, 'k_opt', 1)} | "
                     f"{pm(r, 'silhouette')} | {pm(r, 'seconds', 1)} |")
    # means across datasets
    core = summary[summary["dataset"].isin(CORE)]
    lines += ["", f"Mean over the datasets {', '.join(sorted(set(core['dataset'])))} (each weighted equally; "
              "the derived thinned stress sets are not included):", "",
              "| method | 15-NN acc | ARI | NMI | ARI* | NMI* |", "|---|---|---|---|---|---|"]
    cols = [c for c in ("knn_acc_mean", "ari_mean", "nmi_mean", "ari_opt_mean", "nmi_opt_mean") if c in core]
    per = core.groupby("method", sort=False)[cols].mean()
    for m, r in per.iterrows():
        lines.append("| " + " | ".join([m] + [f"{r[c]:.3f}" if c in r and not pd.isna(r[c]) else "–"
                                              for c in ("knn_acc_mean", "ari_mean", "nmi_mean", "ari_opt_mean",
                                                        "nmi_opt_mean")]) + " |")
    for k, v in meta.get("same_settings", {}).items():
        lines += ["", f"`{k}` (the library's defaults when this ran) has exactly the settings of `{v}`: shown once."]
    lines += ["", "Methods:", ""]
    for m, s in meta["methods"].items():
        lines.append(f"- `{m}`: {s}")
    return "\n".join(lines) + "\n"


def resolved_settings(variant, epochs=None) -> dict:
    """Every setting a variant trains with: scaling + preset + all DAEConfig fields (library defaults filled in)."""
    from genodae.config import PrepareConfig, make_config

    s = variant_settings(variant)
    preset = s.pop("preset", "default")
    scaling = s.pop("scaling", PrepareConfig().scaling)
    if epochs is not None:
        s["epochs"] = epochs
    cfg = make_config(preset, **s).to_dict()
    for k in ("seed", "device", "amp", "num_threads"):
        cfg.pop(k)
    return {"scaling": scaling, "preset": preset, **cfg}


def effective_output_activation(settings: dict) -> str:
    """The output activation the library really uses for these settings (resolves ``"auto"``)."""
    from genodae.config import DAEConfig, fields

    known = {f.name for f in fields(DAEConfig)}
    return DAEConfig(**{k: v for k, v in settings.items() if k in known}).resolved_output_activation()


def method_descriptions(variants, epochs) -> dict:
    d = {
        "pca_log": "sc.pp.pca(50) on log-normalised HVG X (centred, genes not scaled)",
        "pca_minmax": "PCA(50) on genodae's min-max (0-1 per gene) model input",
        "pca_zscore": "PCA(50) on z-scored HVG genes",
    }
    for v in variants:
        vname = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        r = resolved_settings(v, epochs)
        d[f"dae:{vname}"] = {**r, "output_activation_used": effective_output_activation(r)}
    return d


def dedupe(variants: list, aliases: dict | None = None) -> list:
    """Drop a variant whose effective settings equal an earlier one's (e.g. ``default`` once it equals ``tuned``).

    ``aliases`` (if given) receives ``{dropped: kept}``.
    """
    seen: dict[str, str] = {}
    out = []
    for v in variants:
        r = resolved_settings(v)
        r["output_activation"] = effective_output_activation(r)
        key = json.dumps(r, sort_keys=True)
        name = v if isinstance(v, str) else "JSON settings"
        if key in seen:
            print(f"[quality] variant {name!r} has the same settings as {seen[key]!r}: run once", file=sys.stderr)
            if aliases is not None:
                aliases[name] = seen[key]
            continue
        seen[key] = name
        out.append(v)
    return out


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(DATASETS))
    C.add_seeds(p)
    p.add_argument("--variants", default="before,tuned,default",
                   help=f"comma-separated genodae variants: {', '.join(VARIANTS)}; or one JSON dict of settings")
    p.add_argument("--pca", default=",".join(PCA_METHODS), help="comma-separated PCA inputs ('' for none)")
    p.add_argument("--epochs", type=int, default=None, help="override every variant's epochs (quick runs)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads for everything (0 = torch's default: all cores)")
    C.add_data_dir(p)
    C.add_out(p, "quality", help="output prefix: writes OUT.json and OUT.md")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    variants = [a.variants] if a.variants.strip().startswith("{") else [v for v in a.variants.split(",") if v]
    for v in variants:
        variant_settings(v)
    aliases: dict[str, str] = {}
    variants = dedupe(variants, aliases)
    pcas = [m for m in a.pca.split(",") if m]
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    rows = run(a.datasets, a.seeds, variants, pcas, a.data_dir, a.epochs, a.threads, progress=lambda s: print(s, flush=True))
    total = time.perf_counter() - t0
    summary = summarise(rows)
    meta = {
        "command": C.command("quality", argv), "date": C.utc_now(),
        "machine": C.machine(torch_threads=True), "versions": C.versions(), "seeds": a.seeds, "datasets": a.datasets,
        "data_dir": str(a.data_dir), "total_seconds": total, "methods": method_descriptions(variants, a.epochs),
        "same_settings": {f"dae:{k}": f"dae:{v}" for k, v in aliases.items()},
    }
    C.write_results(a.out, C.run_record(meta, summary, rows), markdown(summary, meta))
    print(markdown(summary, meta))
    print(f"[quality] wrote {a.out}.json and {a.out}.md in {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
