#!/usr/bin/env python
"""Denoising: hide 10% of the non-zero counts, train on the rest, and score how well each method recovers them.

For each count dataset and seed:

1. Choose 10% of the non-zero entries of the raw count matrix at random (``numpy.random.default_rng(seed)``),
   remember their counts and set them to 0.
2. Prepare the masked counts with ``genodae.pp.prepare`` (library defaults: normalise to 1e4 with the *masked*
   library sizes, log1p, 2,000 HVGs chosen on the masked data). Every method trains on exactly this data.
3. Score at the hidden positions that fall in the genes the model uses (HVGs). Truth = the hidden count on the
   same log-normalised scale the methods were given: ``log1p(count / L_masked * 1e4)``, ``L_masked`` = the cell's
   total of the masked counts over all genes (what ``prepare`` divided by).

Methods (each gives a cells × HVG reconstruction on that log scale):

- ``genodae``: ``genodae.tl.dae(..., denoised=True, denoised_scale="log1p")`` with the library defaults
  (num_threads=1, device cpu); ``layers["dae_denoised"]`` on the prepared log scale (a count model's expected
  share of the library, normalised to 1e4 per cell and log1p'd; a ``normal`` model's reconstruction mapped back).
- ``pca``: PCA(50) of the log-normalised HVG matrix, reconstruction ``mean + Z @ components``.
- ``scvi``: ``scvi.model.SCVI`` (defaults, n_latent 10; ``max_epochs`` capped, early stopping) on the masked raw
  counts of the HVGs; ``get_normalized_expression(library_size=1, n_samples=10)`` = expected fraction of the cell's
  HVG counts, mapped to the prepared scale as ``log1p(rho * L_hvg / L_masked * 1e4)`` (``L_hvg``: the cell's
  masked HVG total; ``L_hvg / L_masked`` = 1 when every gene is an HVG).
- ``gene_mean``: every cell gets the gene's mean of the (masked) log-normalised training values.
- ``zero``: the observed (masked) input itself, i.e. 0 at every hidden position (MSE reference only).

Metrics at the hidden positions: Pearson r and Spearman rho of prediction vs truth (pooled), ``r_within`` (the
mean over genes with >= 10 hidden entries of the per-gene Pearson r: does the method know *which cells* express
the gene more, beyond its mean?), MSE and MAE. Mean ± sd over seeds.

Examples
--------
python bench/denoise.py                                        # pbmc68k, pbmc4k, mouse_bladder; seeds 0 1 2
python bench/denoise.py --datasets pbmc68k --seeds 0 --methods genodae,pca,gene_mean --out /tmp/d
"""

from __future__ import annotations

import json
import logging
import sys
import time

import _common as C
import numpy as np
import pandas as pd
import scipy.sparse as sp

METHODS = ("genodae", "pca", "scvi", "gene_mean", "zero")
COUNT_DATASETS = ("pbmc68k", "pbmc4k", "mouse_bladder", "pbmc3k_cd8_cd14", "celseq2_5cl")
METRICS = ("pearson", "spearman", "r_within", "mse", "mae", "seconds")


def mask_counts(adata, frac: float, seed: int):
    """(masked copy, hidden rows, hidden cols, hidden counts): ``frac`` of the non-zero entries set to 0."""
    C = sp.csr_matrix(adata.X, dtype=np.float32)
    C.sort_indices()
    rows = np.repeat(np.arange(C.shape[0]), np.diff(C.indptr))
    nz = np.flatnonzero(C.data != 0)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(nz, size=int(round(frac * len(nz))), replace=False))
    hr, hc, hv = rows[pick], C.indices[pick].copy(), C.data[pick].copy()
    M = C.copy()
    M.data[pick] = 0
    M.eliminate_zeros()
    out = adata.copy()
    out.X = M
    return out, hr, hc, hv


def scores(pred: np.ndarray, truth: np.ndarray, genes: np.ndarray, min_per_gene: int = 10) -> dict:
    from scipy.stats import pearsonr, spearmanr

    pred = np.asarray(pred, np.float64)
    truth = np.asarray(truth, np.float64)
    const = np.ptp(pred) == 0
    within = []
    order = np.argsort(genes, kind="stable")
    g_sorted = genes[order]
    bounds = np.flatnonzero(np.diff(g_sorted)) + 1
    for idx in np.split(order, bounds):
        if len(idx) >= min_per_gene and np.ptp(pred[idx]) > 0 and np.ptp(truth[idx]) > 0:
            within.append(np.corrcoef(pred[idx], truth[idx])[0, 1])
    return {
        "pearson": float("nan") if const else float(pearsonr(pred, truth)[0]),
        "spearman": float("nan") if const else float(spearmanr(pred, truth)[0]),
        "r_within": float(np.mean(within)) if within else float("nan"),
        "n_genes_within": len(within),
        "mse": float(np.mean((pred - truth) ** 2)),
        "mae": float(np.mean(np.abs(pred - truth))),
    }


def run(datasets, seeds, methods, data_dir, frac, scvi_cap, threads=1, on_rows=None, progress=print, variants=None):
    import genodae

    variants = variants or {}
    rows = []
    for name in datasets:
        raw = C.load_raw(name, data_dir)
        if raw is None:
            continue
        if not genodae.pp.is_counts(raw.X):
            progress(f"[denoise] skipping {name}: not counts")
            continue
        for seed in seeds:
            t0 = time.perf_counter()
            masked, hr, hc, hv = mask_counts(raw, frac, seed)
            L_masked_all = np.asarray(masked.X.sum(axis=1)).ravel()
            adata = genodae.pp.prepare(masked, copy=True)
            # map hidden entries to prepared rows (cells with zero counts after masking are dropped) and HVG columns
            row_of = pd.Index(raw.obs_names).get_indexer(adata.obs_names)
            new_row = np.full(raw.n_obs, -1)
            new_row[row_of] = np.arange(adata.n_obs)
            used = adata.var["highly_variable"].to_numpy(bool)
            col_of = np.full(raw.n_vars, -1)
            col_of[np.flatnonzero(used)] = np.arange(int(used.sum()))  # prepare keeps var order
            r, c = new_row[hr], col_of[hc]
            keep = (r >= 0) & (c >= 0)
            r, c, v = r[keep], c[keep], hv[keep]
            L = L_masked_all[row_of]
            truth = np.log1p(v / L[r] * adata.uns["genodae_prepare"]["params"]["target_sum"])
            target_sum = adata.uns["genodae_prepare"]["params"]["target_sum"]
            Xlog = C.log_hvg(adata)
            progress(f"[denoise] {name} seed {seed}: {adata.n_obs} cells × {int(used.sum())} genes; "
                     f"{len(hv)} entries hidden ({frac:.0%} of non-zeros), {len(v)} in the HVGs; "
                     f"mean hidden log value {truth.mean():.3f} (prepared in {time.perf_counter() - t0:.1f}s)")
            for m in methods:
                t = time.perf_counter()
                info = {}
                if m == "genodae" or m.startswith("genodae:"):
                    settings = variants.get(m.partition(":")[2], {}) if ":" in m else {}
                    _, info, a = C.embed_genodae(adata, seed, threads, denoised=True, denoised_scale="log1p", **settings)
                    D = a.layers["dae_denoised"][:, used]
                    pred = np.asarray(D[r, c]).ravel()
                elif m == "pca":
                    from sklearn.decomposition import PCA

                    n = min(C.PCA_COMPS, min(Xlog.shape) - 1)
                    pca = PCA(n_components=n, random_state=seed, svd_solver="arpack")
                    Z = pca.fit_transform(Xlog)
                    R = pca.inverse_transform(Z)
                    pred = R[r, c]
                    info = {"n_components": n, "explained_variance": float(pca.explained_variance_ratio_.sum())}
                elif m == "scvi":
                    model, _, info = C.train_scvi(adata, seed, C.scvi_epochs_for(adata.n_obs, scvi_cap), threads=threads)
                    rho = np.asarray(model.get_normalized_expression(library_size=1, n_samples=10, return_mean=True,
                                                                     return_numpy=True))
                    L_hvg = np.asarray(C.counts_hvg(adata).sum(axis=1)).ravel()
                    pred = np.log1p(rho[r, c] * L_hvg[r] / L[r] * target_sum)
                elif m == "gene_mean":
                    pred = Xlog.mean(axis=0)[c]
                elif m == "zero":
                    pred = Xlog[r, c]
                    assert np.all(pred == 0), "hidden entries must be 0 in the training input"
                else:
                    raise ValueError(m)
                secs = time.perf_counter() - t
                row = {"dataset": name, "method": m, "seed": seed, "n_cells": int(adata.n_obs),
                       "n_genes": int(used.sum()), "n_hidden": int(len(v)), **scores(pred, truth, c),
                       "seconds": secs, **info}
                rows.append(row)
                progress(f"  {name:<14} {m:<10} seed {seed}: r {row['pearson']:.3f}  rho {row['spearman']:.3f}  "
                         f"r_within {row['r_within']:.3f}  MSE {row['mse']:.4f}  MAE {row['mae']:.4f}  {secs:.1f}s")
                if on_rows is not None:
                    on_rows(rows)
    return rows


def summarise(rows):
    df = pd.DataFrame(rows)
    g = df.groupby(["dataset", "method"], sort=False)
    out = C.mean_sd(df, ["dataset", "method"], METRICS)
    for c in ("n_cells", "n_genes", "n_hidden"):
        out[f"{c}_mean"] = g[c].mean()
    return out.reset_index()


def markdown(summary, meta) -> str:
    pm = C.pm
    lines = [
        "# Denoising: recovering hidden counts",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']['cpu']}, {meta['machine']['cores']} "
        f"cores, load average {meta.get('load_start', '?')} at the start, 1 torch thread); total {meta['total_seconds'] / 60:.1f} min. Seeds "
        f"{meta['seeds']} (the seed picks the hidden entries and seeds the methods); mean ± sd over seeds. "
        f"genodae {meta['versions'].get('genodae')}, scvi-tools {meta['versions'].get('scvi-tools')}, "
        f"torch {meta['versions'].get('torch')}.",
        "",
        f"{meta['fraction']:.0%} of the non-zero counts are set to 0 before `genodae.pp.prepare`; every method trains on "
        "the masked data. Truth at a hidden entry: `log1p(count / L_masked * 1e4)` (the prepared scale). Scored over the "
        "hidden entries in the HVGs. r / rho: Pearson / Spearman over all hidden entries; r_within: mean per-gene Pearson "
        "(genes with >= 10 hidden entries; blank for constant predictions); MSE / MAE on the log scale. "
        "`zero` is the masked input itself. Best per dataset in **bold** (gene_mean/zero rows included).",
        "",
    ]
    for d, sub in summary.groupby("dataset", sort=False):
        i = sub.iloc[0]
        lines += [f"## {d} ({int(i['n_cells_mean'])} cells × {int(i['n_genes_mean'])} genes; "
                  f"{int(i['n_hidden_mean'])} hidden entries in the HVGs)", "",
                  "| method | Pearson r | Spearman rho | r_within | MSE | MAE | s |", "|---|---|---|---|---|---|---:|"]
        best = {m: (sub[f"{m}_mean"].min() if m in ("mse", "mae") else sub[f"{m}_mean"].max())
                for m in ("pearson", "spearman", "r_within", "mse", "mae")}
        for _, r in sub.iterrows():
            cells = []
            for m, nd in (("pearson", 3), ("spearman", 3), ("r_within", 3), ("mse", 4), ("mae", 4)):
                if pd.isna(r[f"{m}_mean"]):
                    cells.append("—")
                    continue
                s = pm(r, m, nd)
                cells.append(f"**{s}**" if np.isclose(r[f"{m}_mean"], best[m]) else s)
            lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {r['seconds_mean']:.1f} |")
        lines.append("")
    lines += ["## Methods", ""]
    for m, s in meta["methods"].items():
        lines.append(f"- `{m}`: {s}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--datasets", nargs="+", default=["pbmc68k", "pbmc4k", "mouse_bladder"], choices=COUNT_DATASETS)
    p.add_argument("--methods", default=",".join(METHODS))
    C.add_seeds(p)
    p.add_argument("--fraction", type=float, default=0.1, help="fraction of the non-zero entries hidden")
    C.add_scvi_epochs(p)
    C.add_threads(p, help=None)
    C.add_variant(p, "also run genodae with these settings as method genodae:NAME, e.g. "
                     "'masked={\"loss_on\": \"masked\"}' (repeatable)")
    C.add_data_dir(p)
    C.add_out(p, "denoise", help=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    C.set_threads(a.threads)
    methods = [m for m in a.methods.split(",") if m]
    if set(methods) - set(METHODS):
        p.error(f"unknown method(s) {set(methods) - set(METHODS)}")
    variants = C.parse_variants(p, a.variant)
    at = methods.index("genodae") + 1 if "genodae" in methods else 0
    methods[at:at] = [f"genodae:{n}" for n in variants]
    t0, load0 = time.perf_counter(), C.load1()
    cmd = C.command("denoise", argv)
    descr = {
        "genodae": "genodae.tl.dae library defaults (num_threads=1, device=cpu, seed), layers['dae_denoised'] (denoised_scale='log1p')",
        "pca": f"sklearn PCA({C.PCA_COMPS}) on the dense log-normalised HVG matrix; mean + Z @ components",
        "scvi": f"scvi.model.SCVI defaults (n_latent 10) on masked HVG counts, max_epochs = min(scvi default, "
                f"{a.scvi_epochs}), early stopping; get_normalized_expression(library_size=1, n_samples=10) "
                "-> log1p(rho * L_hvg / L_masked * 1e4)",
        "gene_mean": "per-gene mean of the masked log-normalised training values",
        "zero": "the masked input (0 at every hidden entry)",
        **{f"genodae:{n}": f"genodae.tl.dae with {json.dumps(v)} (otherwise as `genodae`)" for n, v in variants.items()},
    }

    def write(rows):
        meta = {"command": cmd, "date": C.utc_now(), "machine": C.machine(torch_threads=True), "load_start": load0,
                "versions": C.versions(C.SCVI_VERSIONS), "seeds": a.seeds, "fraction": a.fraction,
                "datasets": a.datasets, "total_seconds": time.perf_counter() - t0,
                "methods": {m: descr[m] for m in methods}}
        summary = summarise(rows)
        md = markdown(summary, meta)
        C.write_results(a.out, C.run_record(meta, summary, rows), md)
        return md

    rows = run(a.datasets, a.seeds, methods, a.data_dir, a.fraction, a.scvi_epochs, a.threads, on_rows=write,
               progress=lambda s: print(s, flush=True), variants=variants)
    print(write(rows))
    print(f"[denoise] wrote {a.out}.json and {a.out}.md in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
