#!/usr/bin/env python
"""Molecular cross-validation (MCV): score denoised expression against held-out molecules of the same cells.

Batson, Royer & Webber (2019), "Molecular cross-validation for single-cell RNA-seq"; the Open Problems
denoising task. For each count dataset and seed:

1. Split every cell's raw counts by binomial thinning (sparse, ``numpy.random.default_rng(seed)``):
   ``train = Binomial(count, 0.9)``, ``test = count - train``. Both halves are independent draws of the same
   cells' expression (exactly so for Poisson sampling).
2. Choose one gene set from the TRAIN counts: 2,000 highly variable genes by scanpy's ``seurat_v3`` after
   dropping genes without train counts (all of them when fewer). Cells without train counts in the gene set
   are dropped (no method can say anything about them). Every method sees only these train counts.
3. Every method returns denoised normalised expression: cells × genes proportions ``p_cg >= 0``, each row
   summing to 1 over the gene set.
4. Scores over the test counts ``y``, with ``L_c`` = the cell's TEST total over the gene set (cells with
   ``L_c = 0`` excluded): the Poisson NLL per matrix entry, mean of ``rate - y log(rate) + lgamma(y + 1)`` with
   ``rate = max(p_cg L_c, 1e-10)`` (the MCV loss; lower is better), and Open Problems' log-scale MSE between
   ``log1p(1e4 p_cg)`` and ``log1p(1e4 y_cg / L_c)``.

Methods (``--methods``): genodae with its defaults (``genodae``: gene_likelihood auto = poisson), with each other
gene likelihood, and with the masking noise of before 2026-11-29 (``*_plain``: no inverted-dropout rescaling;
the study variants ``STUDY`` run only when named) (``genodae.pp.prepare(...,
n_top_genes=0)`` on the train counts of the gene set, then ``genodae.DAE(gene_likelihood=..., seed,
num_threads=1, device="cpu")``; ``denoise(scale="counts")`` for count likelihoods, ``scale="normalized"`` for
normal/bernoulli, rows renormalised to 1), scVI (ZINB default, and NB), MAGIC (Open Problems recipe), PCA(50)
reconstruction of log1p(CP10k), the pooled gene proportions (``gene_mean``) and each cell's own train
proportions (``no_denoising``).

Known-truth check (``--truth-seeds``; off with ``--no-truth``): counts simulated from known expression
(pbmc4k's cluster-mean proportions × each cell's real library size, Poisson draws), then the same thinning and
scoring, with the true proportions as a method (``truth``): does each metric rank the truth first?

Examples
--------
python bench/mcv.py                                         # every dataset, every method, seeds 0 1 2 (~40 min)
python bench/mcv.py --datasets pbmc68k --seeds 0 --methods genodae,pca,gene_mean --no-truth --out /tmp/m
python bench/mcv.py --variant 'c40={"gene_likelihood": "nb", "corruption": 0.4}'   # also genodae:c40
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path

import _common as C
import numpy as np
import pandas as pd
import scipy.sparse as sp

# genodae variants: method name -> DAE settings (on top of the library defaults)
_PLAIN = {"corruption_rescale": False}  # masking noise without the inverted-dropout rescaling (before 2026-11-29)
GENODAE = {
    "genodae": {},  # the library defaults: gene_likelihood auto (= poisson for counts), corruption_rescale on
    "genodae_normal": {"gene_likelihood": "normal"},
    "genodae_nb": {"gene_likelihood": "nb"},
    "genodae_zinb": {"gene_likelihood": "zinb"},
    "genodae_poisson_plain": {"gene_likelihood": "poisson", **_PLAIN},
    # the study that chose the likelihood (run with --methods; committed in results/mcv.json)
    "genodae_normal_plain": {"gene_likelihood": "normal", **_PLAIN},
    "genodae_nb_plain": {"gene_likelihood": "nb", **_PLAIN},
    "genodae_zinb_plain": {"gene_likelihood": "zinb", **_PLAIN},
    "genodae_nb_masked_plain": {"gene_likelihood": "nb", "loss_on": "masked", **_PLAIN},
    "genodae_nb_c30_plain": {"gene_likelihood": "nb", "corruption": 0.3, **_PLAIN},
    "genodae_zinb_c30_plain": {"gene_likelihood": "zinb", "corruption": 0.3, **_PLAIN},
    "genodae_bernoulli": {"gene_likelihood": "bernoulli"},  # not run by default
}
STUDY = tuple(m for m in GENODAE if m.endswith("_plain") and m != "genodae_poisson_plain")
METHODS = (*[m for m in GENODAE if m != "genodae_bernoulli" and m not in STUDY], "scvi", "scvi_nb", "magic",
           "pca", "gene_mean", "no_denoising")
ALL_METHODS = (*METHODS, *STUDY, "genodae_bernoulli")
TRUTH_METHODS = ("truth", "no_denoising", "gene_mean", "pca", "magic", "genodae")
COUNT_LIKELIHOODS = ("poisson", "nb", "zinb")
DATASETS = {  # run (and table) order: small sets first
    "pbmc68k": "scanpy pbmc68k_reduced as counts (= genodae.datasets.pbmc68k_counts()), 700 cells × 765 genes",
    "pbmc3k_cd8_cd14": "scrna/pbmc3k_cd8_cd14_mtx (10x PBMC3k CD8 T + CD14 monocytes, 946 genes)",
    "celseq2_5cl_p1": "CellBench CEL-seq2 plate 1, scrna/sc_celseq2_5cl_p1.count.csv.gz; demuxlet singlets "
                      "(as bench/baselines.py's celseq2_5cl); ERCC rows kept",
    "celseq2_5cl_p2": "CellBench CEL-seq2 plate 2 (sc_celseq2_5cl_p2), singlets, as p1",
    "celseq2_5cl_p3": "CellBench CEL-seq2 plate 3 (sc_celseq2_5cl_p3), singlets, as p1",
    "mouse_bladder": "scrna/mouse_bladder_top2000.h5ad (Mouse Cell Atlas bladder, top 2,003 genes)",
    "pbmc4k": "scrna/pbmc4k_top2000.h5ad (10x PBMC 4k, top 2,000 genes)",
}
DEFAULT_DATASETS = tuple(DATASETS)
TRUTH_DATASET = "pbmc4k"  # labelled: obs['cluster']
SIM_NAME = "sim_pbmc4k"
TRAIN_FRACTION = 0.9
N_TOP_GENES = 2000
RATE_FLOOR = 1e-10
LOG_SCALE = 1e4
METRICS = ("nll", "mse", "seconds")

log = logging.getLogger("bench.mcv")


# --- data ------------------------------------------------------------------------------------------------


def load_counts(name: str, data_dir: Path):
    """AnnData of raw counts (CSR) for ``name``; None when its file is absent (skipped with a message)."""
    if name.startswith("celseq2_5cl_p"):
        import genodae

        plate = name.rsplit("_", 1)[1]
        f = data_dir / "scrna" / f"sc_celseq2_5cl_{plate}.count.csv.gz"
        m = data_dir / "scrna" / f"sc_celseq2_5cl_{plate}.metadata.csv.gz"
        if not f.exists() or not m.exists():
            print(f"[mcv] skipping {name}: {f} not found", file=sys.stderr)
            return None
        adata = genodae.read(f, sample_sheet=m)  # as bench/baselines.py loads plate 1 (celseq2_5cl)
        adata = adata[adata.obs["demuxlet_cls"].astype(str) == "SNG"].copy()
    else:
        adata = C.load_raw(name, data_dir)
        if adata is None:
            return None
    X = sp.csr_matrix(adata.X)
    if X.nnz and (X.data.min() < 0 or not np.all(np.rint(X.data) == X.data)):
        raise ValueError(f"{name}: X does not hold raw counts")
    adata.X = X
    return adata


def thin(X, seed: int, frac: float = TRAIN_FRACTION):
    """(train, test) CSR int64 counts: ``train = Binomial(count, frac)``, ``test = count - train``, per entry."""
    C = sp.csr_matrix(X)
    C.sum_duplicates()
    data = np.rint(C.data).astype(np.int64)
    tr = np.random.default_rng(seed).binomial(data, frac)
    train = sp.csr_matrix((tr, C.indices.copy(), C.indptr.copy()), shape=C.shape)
    test = sp.csr_matrix((data - tr, C.indices.copy(), C.indptr.copy()), shape=C.shape)
    train.eliminate_zeros()
    test.eliminate_zeros()
    return train, test


def choose_genes(train, var_names: pd.Index, n_top: int = N_TOP_GENES) -> np.ndarray:
    """Column indices of the gene set: seurat_v3 HVGs of the train counts (genes with train counts only)."""
    import anndata as ad
    import scanpy as sc

    nonzero = np.flatnonzero(np.asarray(train.sum(axis=0)).ravel() > 0)
    if len(nonzero) <= n_top:
        return nonzero
    a = ad.AnnData(X=sp.csr_matrix(train[:, nonzero], dtype=np.float32), var=pd.DataFrame(index=var_names[nonzero]))
    sc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=n_top)
    return nonzero[a.var["highly_variable"].to_numpy(bool)]


def simulate(adata, seed: int):
    """Counts drawn from known expression: cluster-mean proportions × the cell's real library size, Poisson.

    Returns (simulated AnnData, true proportions cells × genes). ``default_rng(1000 + seed)`` draws the counts
    (the thinning then uses ``default_rng(seed)`` as for the real sets).
    """
    import anndata as ad

    C = sp.csr_matrix(adata.X, dtype=np.float64)
    lib = np.asarray(C.sum(axis=1)).ravel()
    labels = adata.obs["label"].astype(str).to_numpy()
    groups = sorted(set(labels))
    prop = np.zeros((len(groups), C.shape[1]))
    for i, g in enumerate(groups):
        s = np.asarray(C[labels == g].sum(axis=0)).ravel()
        prop[i] = s / s.sum()
    code = pd.Index(groups).get_indexer(labels)
    P = prop[code]
    Y = np.random.default_rng(1000 + seed).poisson(P * lib[:, None])
    sim = ad.AnnData(X=sp.csr_matrix(Y.astype(np.float32)), obs=adata.obs[["label"]].copy(),
                     var=pd.DataFrame(index=adata.var_names.copy()))
    return sim, P


# --- scoring ---------------------------------------------------------------------------------------------


def normalise_rows(P: np.ndarray, what: str) -> np.ndarray:
    """Non-negative proportions summing to 1 per row; refuses NaN/inf (reported, never hidden)."""
    P = np.asarray(P, dtype=np.float64)
    if not np.all(np.isfinite(P)):
        raise FloatingPointError(f"{what}: {int((~np.isfinite(P)).sum())} non-finite values in the denoised matrix")
    P = np.clip(P, 0.0, None)
    s = P.sum(axis=1, keepdims=True)
    if np.any(s <= 0):
        raise FloatingPointError(f"{what}: {int((s <= 0).sum())} cells with an all-zero denoised row")
    return P / s


def score(P: np.ndarray, test) -> dict:
    """Poisson NLL per entry and log-scale MSE of proportions ``P`` against the test counts (dense cells × genes)."""
    from scipy.special import gammaln

    Y = test.toarray().astype(np.float64) if sp.issparse(test) else np.asarray(test, np.float64)
    L = Y.sum(axis=1)
    ok = L > 0
    Y, P, L = Y[ok], P[ok], L[ok]
    rate = np.maximum(P * L[:, None], RATE_FLOOR)
    nll = rate - Y * np.log(rate) + gammaln(Y + 1.0)
    mse = (np.log1p(LOG_SCALE * P) - np.log1p(LOG_SCALE * Y / L[:, None])) ** 2
    return {"nll": float(nll.mean()), "mse": float(mse.mean()), "n_cells_scored": int(ok.sum())}


# --- methods ---------------------------------------------------------------------------------------------


def _adata(Xtr, genes: pd.Index):
    import anndata as ad

    return ad.AnnData(X=sp.csr_matrix(Xtr, dtype=np.float32),
                      obs=pd.DataFrame(index=[f"c{i}" for i in range(Xtr.shape[0])]), var=pd.DataFrame(index=genes))


def run_genodae(Xtr, genes: pd.Index, seed: int, threads: int, settings: dict):
    import genodae

    a = _adata(Xtr, genes)
    genodae.pp.prepare(a, n_top_genes=0)
    if a.n_obs != Xtr.shape[0]:
        raise RuntimeError(f"prepare dropped {Xtr.shape[0] - a.n_obs} cells")
    m = genodae.DAE(seed=seed, num_threads=threads, device="cpu", **settings).fit(a)
    lik = str(m.gene_likelihood)
    D = m.denoise(a, scale="counts" if lik in COUNT_LIKELIHOODS else "normalized")
    idx = pd.Index(m.genes).get_indexer(genes)
    P = np.zeros((a.n_obs, len(genes)))
    P[:, idx >= 0] = D[:, idx[idx >= 0]]
    h = m.history
    val = [float(v) for v in h.val_loss]
    info = {"gene_likelihood": lik, "epochs_run": int(h.epochs_run), "max_epochs": int(h.max_epochs),
            "best_epoch": int(h.best_epoch) + 1, "train_seconds": float(h.seconds),
            "s_per_epoch": float(h.seconds) / max(int(h.epochs_run), 1), "genes_missing": int((idx < 0).sum()),
            "train_loss_first": float(h.train_loss[0]), "train_loss_last": float(h.train_loss[-1]),
            "val_loss_first": val[0], "val_loss_best": float(h.best_loss),
            "loss_decreased": bool(h.best_loss < val[0])}
    return P, info


def run_scvi(Xtr, genes: pd.Index, seed: int, threads: int, cap: int, **kw):
    a = _adata(Xtr, genes)
    a.layers["counts"] = a.X.copy()
    a.var["highly_variable"] = True
    model, _, info = C.train_scvi(a, seed, C.scvi_epochs_for(a.n_obs, cap), threads=threads, **kw)
    rho = model.get_normalized_expression(library_size=1, n_samples=10, return_mean=True, return_numpy=True)
    info["s_per_epoch"] = info["train_seconds"] / max(info["epochs_run"], 1)
    return np.asarray(rho, np.float64), info


def run_magic(Xtr, seed: int):
    """Open Problems' magic recipe: per-cell proportions, sqrt, MAGIC (defaults, exact solver), square."""
    import magic

    X = sp.csr_matrix(Xtr, dtype=np.float64)
    lib = np.asarray(X.sum(axis=1)).ravel()
    Xs = sp.diags(1.0 / lib) @ X
    Xs.data = np.sqrt(Xs.data)
    op = magic.MAGIC(random_state=seed, n_jobs=1, verbose=0)
    n_pca = op.n_pca if op.n_pca is not None and op.n_pca < min(X.shape) else None
    op.set_params(n_pca=n_pca)
    Y = np.asarray(op.fit_transform(Xs.toarray(), genes="all_genes"), np.float64)
    n_neg = int((Y < 0).sum())
    return np.clip(Y, 0.0, None) ** 2, {"n_pca": n_pca, "negatives_clipped": n_neg}


def run_pca(Xtr, seed: int, n_comps: int = C.PCA_COMPS):
    from sklearn.decomposition import PCA

    X = sp.csr_matrix(Xtr, dtype=np.float64)
    lib = np.asarray(X.sum(axis=1)).ravel()
    Xl = (sp.diags(LOG_SCALE / lib) @ X).toarray()
    np.log1p(Xl, out=Xl)
    n = min(n_comps, min(Xl.shape) - 1)
    pca = PCA(n_components=n, random_state=seed, svd_solver="arpack")
    R = pca.inverse_transform(pca.fit_transform(Xl))
    return np.clip(np.expm1(R), 0.0, None), {"n_components": n,
                                             "explained_variance": float(pca.explained_variance_ratio_.sum())}


def run_method(m: str, Xtr, genes: pd.Index, seed: int, threads: int, scvi_cap: int, variants: dict,
               truth: np.ndarray | None = None):
    """(proportions cells × genes, info) of method ``m`` from the train counts ``Xtr`` (cells × gene set)."""
    info: dict = {}
    if m in GENODAE or m.startswith("genodae:"):
        settings = GENODAE[m] if m in GENODAE else variants[m.partition(":")[2]]
        P, info = run_genodae(Xtr, genes, seed, threads, settings)
    elif m == "scvi":
        P, info = run_scvi(Xtr, genes, seed, threads, scvi_cap)
    elif m == "scvi_nb":
        P, info = run_scvi(Xtr, genes, seed, threads, scvi_cap, gene_likelihood="nb")
    elif m == "magic":
        P, info = run_magic(Xtr, seed)
    elif m == "pca":
        P, info = run_pca(Xtr, seed)
    elif m == "gene_mean":
        s = np.asarray(Xtr.sum(axis=0), np.float64).ravel()
        P = np.broadcast_to(s / s.sum(), Xtr.shape)
    elif m == "no_denoising":
        P = sp.csr_matrix(Xtr, dtype=np.float64).toarray()
    elif m == "truth":
        if truth is None:
            raise ValueError("method 'truth' exists only for the simulated data")
        P = truth
    else:
        raise ValueError(m)
    return normalise_rows(P, m), info


# --- running ---------------------------------------------------------------------------------------------


def run_split(name: str, adata, seed: int, methods, threads: int, scvi_cap: int, variants: dict, rows: list,
              done=frozenset(), truth: np.ndarray | None = None, on_rows=None, progress=print, kind: str = "real"):
    t0 = time.perf_counter()
    train, test = thin(adata.X, seed)
    gi = choose_genes(train, adata.var_names)
    Xtr = train[:, gi]
    keep = np.asarray(Xtr.sum(axis=1)).ravel() > 0
    Xtr, Xte = sp.csr_matrix(Xtr[keep], dtype=np.float32), test[:, gi][keep]
    genes = pd.Index(adata.var_names[gi].astype(str))
    T = None if truth is None else truth[keep][:, gi]
    base = {"dataset": name, "seed": seed, "kind": kind, "n_cells": int(Xtr.shape[0]),
            "n_cells_dropped": int((~keep).sum()), "n_genes": len(gi), "n_genes_total": int(adata.n_vars),
            "train_nnz_frac": float(Xtr.nnz / max(np.prod(Xtr.shape), 1)),
            "train_total": float(Xtr.sum()), "test_total": float(Xte.sum())}
    progress(f"[mcv] {name} seed {seed}: {Xtr.shape[0]} cells × {len(gi)} genes (of {adata.n_vars}); "
             f"{base['n_cells_dropped']} cells without train counts dropped; train {base['train_total']:.0f} / "
             f"test {base['test_total']:.0f} molecules; {base['train_nnz_frac']:.1%} non-zero "
             f"(split + genes in {time.perf_counter() - t0:.1f}s)")
    for m in methods:
        if (name, m, seed) in done:
            continue
        t = time.perf_counter()
        try:
            P, info = run_method(m, Xtr, genes, seed, threads, scvi_cap, variants, T)
            secs = time.perf_counter() - t
            row = {**base, "method": m, **score(P, Xte), "seconds": secs, **info}
            del P
        except Exception as e:  # one failing method must not lose the others' results: recorded, reported
            secs = time.perf_counter() - t
            row = {**base, "method": m, "nll": float("nan"), "mse": float("nan"), "seconds": secs,
                   "error": f"{type(e).__name__}: {e}"}
            progress(traceback.format_exc())
        rows.append(row)
        extra = (f"  ep {row['epochs_run']}" + (f" (best {row['best_epoch']})" if "best_epoch" in row else "")
                 + f", {row.get('s_per_epoch', 0):.3f} s/ep" if "epochs_run" in row else "")
        progress(f"  {name:<16} {m:<18} seed {seed}: NLL {row['nll']:.5f}  MSE {row['mse']:.4f}  {secs:6.1f}s{extra}"
                 + (f"  ERROR {row['error']}" if "error" in row else ""))
        if on_rows is not None:
            on_rows()


def run(datasets, seeds, methods, data_dir, threads, scvi_cap, variants, rows, done=frozenset(), on_rows=None,
        progress=print, truth_seeds=(), truth_methods=()):
    for name in datasets:
        adata = load_counts(name, data_dir)
        if adata is None:
            continue
        for seed in seeds:
            run_split(name, adata, seed, methods, threads, scvi_cap, variants, rows, done, on_rows=on_rows,
                      progress=progress)
    if truth_seeds and truth_methods:
        ref = load_counts(TRUTH_DATASET, data_dir)
        if ref is None:
            return rows
        for seed in truth_seeds:
            sim, P = simulate(ref, seed)
            run_split(SIM_NAME, sim, seed, truth_methods, threads, scvi_cap, variants, rows, done, truth=P,
                      on_rows=on_rows, progress=progress, kind="known_truth")
    return rows


# --- reporting -------------------------------------------------------------------------------------------


def summarise(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    g = df.groupby(["kind", "dataset", "method"], sort=False)
    out = C.mean_sd(df, ["kind", "dataset", "method"], METRICS)
    out["n_seeds"] = g["nll"].apply(lambda s: int(s.notna().sum()))
    out["n_errors"] = g["error"].apply(lambda s: int(s.notna().sum())) if "error" in df else 0
    for c in ("n_cells", "n_genes", "n_cells_scored"):
        out[f"{c}_mean"] = g[c].mean()
    for c in ("epochs_run", "s_per_epoch"):
        if c in df:
            out[f"{c}_mean"] = g[c].mean()
    return out.reset_index()


def _fmt(mean, sd, nd):
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.{nd}f} ± {0.0 if pd.isna(sd) else sd:.{nd}f}"


def metric_table(sub: pd.DataFrame, metric: str, nd: int, methods: list[str], datasets: list[str]) -> list[str]:
    """Methods × datasets, mean ± sd, best (lowest mean) per dataset in bold, plus the mean rank over datasets."""
    by = {(r["dataset"], r["method"]): r for _, r in sub.iterrows()}
    ranks = {m: [] for m in methods}
    best = {}
    for d in datasets:
        vals = pd.Series({m: by[(d, m)][f"{metric}_mean"] for m in methods if (d, m) in by}).dropna()
        best[d] = vals.min() if len(vals) else None
        for m, rk in vals.rank(method="min").items():
            ranks[m].append(rk)
    lines = ["| method | " + " | ".join(datasets) + " | mean rank |", "|---|" + "---|" * len(datasets) + "---:|"]
    for m in methods:
        cells = []
        for d in datasets:
            r = by.get((d, m))
            if r is None:
                cells.append("–")
                continue
            s = _fmt(r[f"{metric}_mean"], r[f"{metric}_std"], nd)
            cells.append(f"**{s}**" if best[d] is not None and np.isclose(r[f"{metric}_mean"], best[d], rtol=0,
                                                                          atol=0.5 * 10 ** -nd) else s)
        mr = f"{np.mean(ranks[m]):.1f}" if len(ranks[m]) == len(datasets) else "–"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {mr} |")
    return lines


def findings(sub: pd.DataFrame, methods: list[str], datasets: list[str], runs: pd.DataFrame | None = None) -> list[str]:
    """Generated sentences: the best genodae variant per dataset and overall, and how it compares (per dataset
    mean NLL, and paired per seed: the same split for both methods)."""
    by = {(r["dataset"], r["method"]): r["nll_mean"] for _, r in sub.iterrows()}
    gd = [m for m in methods if m.startswith("genodae")]
    if not gd:
        return []
    out = []
    per = []
    for d in datasets:
        vals = {m: by[(d, m)] for m in gd if (d, m) in by and not pd.isna(by[(d, m)])}
        if vals:
            per.append(f"{d}: `{min(vals, key=vals.get)}`")
    out.append("Lowest NLL among the genodae variants, per dataset: " + "; ".join(per) + ".")
    full = [m for m in gd if all((d, m) in by and not pd.isna(by[(d, m)]) for d in datasets)]
    if full:
        mean_rank = {}
        for m in full:
            rk = []
            for d in datasets:
                vals = pd.Series({x: by[(d, x)] for x in full})
                rk.append(vals.rank(method="min")[m])
            mean_rank[m] = float(np.mean(rk))
        top = min(mean_rank, key=mean_rank.get)
        out.append(f"Over all {len(datasets)} datasets the best genodae variant by mean rank among the variants is "
                   f"`{top}` (mean rank {mean_rank[top]:.1f} of {len(full)}).")
        for other in ("scvi", "scvi_nb", "magic", "pca"):
            if all((d, other) in by for d in datasets):
                wins = sum(by[(d, top)] < by[(d, other)] for d in datasets)
                rel = np.mean([(by[(d, top)] - by[(d, other)]) / by[(d, other)] * 100 for d in datasets])
                paired = ""
                if runs is not None:
                    a = runs[runs["method"] == top].set_index(["dataset", "seed"])["nll"]
                    b = runs[runs["method"] == other].set_index(["dataset", "seed"])["nll"]
                    both = pd.concat([a, b], axis=1, keys=["a", "b"]).dropna()
                    paired = f"; lower in {int((both['a'] < both['b']).sum())} of {len(both)} (dataset, seed) splits"
                out.append(f"`{top}` vs `{other}`: lower mean NLL on {wins} of {len(datasets)} datasets "
                           f"(mean relative difference {rel:+.2f} %){paired}.")
    if runs is not None and "epochs_run" in runs:
        g = runs[runs["method"].isin(gd) & runs["dataset"].isin(datasets) & runs["epochs_run"].notna()
                 & runs["max_epochs"].notna()]
        capped = g[(g["epochs_run"] >= g["max_epochs"]) & (g["epochs_run"] - g["best_epoch"] <= 2)]
        if len(capped):
            where = capped.groupby(["dataset", "method"], sort=False).size()
            out.append(f"Still improving when stopped by the epoch limit (ran max_epochs, best epoch within the last "
                       f"3): {len(capped)} of {len(g)} genodae fits: " + ", ".join(
                           f"{d}/{m.removeprefix('genodae_')} ({n})" for (d, m), n in where.items()) + ".")
    return out


def markdown(summary: pd.DataFrame, meta: dict, runs: list[dict] | None = None) -> str:
    v = meta["versions"]
    lines = [
        "# Molecular cross-validation (MCV): denoised expression vs held-out molecules",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']['cpu']}, {meta['machine']['cores']} "
        f"cores, load average {meta.get('load_start', '?')} at the start, 1 torch thread); total "
        f"{meta['total_seconds'] / 60:.1f} min. Seeds {meta['seeds']}; mean ± sd over seeds. genodae "
        f"{v.get('genodae')}, scvi-tools {v.get('scvi-tools')}, magic-impute {v.get('magic-impute')}, torch "
        f"{v.get('torch')}, scanpy {v.get('scanpy')}, scikit-learn {v.get('scikit-learn')}.",
        "",
        "Procedure (Batson, Royer & Webber 2019; Open Problems denoising): every cell's raw counts are split by "
        f"binomial thinning, train = Binomial(count, {TRAIN_FRACTION}), test = count − train "
        "(`numpy.random.default_rng(seed)`). One gene set per dataset and seed is chosen from the train counts "
        f"({N_TOP_GENES:,} seurat_v3 HVGs after dropping genes without train counts; all when fewer); cells without "
        "train counts in it are dropped. Every method sees only the train counts of those genes and returns "
        "proportions p (rows sum to 1). **NLL**: Poisson negative log-likelihood per matrix entry of the test counts "
        "y at rate p × L (L = the cell's test total over the gene set; rate floored at 1e-10; includes lgamma(y+1)); "
        "**log MSE**: mean squared difference of log1p(1e4 p) and log1p(1e4 y / L) (Open Problems). Cells with "
        f"L = 0 are excluded. Lower is better for both; best mean per dataset in **bold** (ties at the shown "
        f"precision bold too); mean rank over the datasets in the last column. scVI: max_epochs = min(scvi's "
        f"default round(20000 / n × 400), 400, {meta['scvi_cap']}), early stopping. The seed sd mostly reflects "
        "the split, which all methods share: compare methods within a dataset and seed (per-seed rows in "
        "`mcv.json`).",
        "",
    ]
    real = summary[summary["kind"] == "real"] if len(summary) else summary
    if len(real):
        datasets = list(dict.fromkeys(real["dataset"]))
        seen = list(dict.fromkeys(real["method"]))
        order = {m: i for i, m in enumerate(ALL_METHODS)}  # the library default first, the study last
        methods = sorted(seen, key=lambda m: (order.get(m, len(order)), seen.index(m)))
        sizes = []
        for d in datasets:
            r = real[real["dataset"] == d].iloc[0]
            sizes.append(f"{d} {int(r['n_cells_mean'])} × {int(r['n_genes_mean'])}")
        lines += ["Cells × genes used (mean over seeds): " + "; ".join(sizes) + ".", ""]
        lines += ["## Poisson NLL per entry (lower is better)", ""]
        lines += metric_table(real, "nll", 4, methods, datasets) + [""]
        lines += ["## Log-scale MSE (Open Problems; lower is better)", ""]
        lines += metric_table(real, "mse", 3, methods, datasets) + [""]
        lines += ["## Seconds per fit (1 thread)", "", "| method | " + " | ".join(datasets) + " |",
                  "|---|" + "---:|" * len(datasets)]
        by = {(r["dataset"], r["method"]): r for _, r in real.iterrows()}
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(f"{by[(d, m)]['seconds_mean']:.1f}" if (d, m) in by else "–"
                                                  for d in datasets) + " |")
        lines += ["", "## Findings (generated from the NLL table)", ""]
        rdf = pd.DataFrame(runs) if runs else None
        lines += [f"- {s}" for s in findings(real, methods, datasets, rdf)]
        err = real[real["n_errors"] > 0]
        if len(err):
            lines += ["", "Failed runs (see `error` in `mcv.json`): " + ", ".join(
                f"{r['dataset']}/{r['method']} ({int(r['n_errors'])})" for _, r in err.iterrows())]
        lines.append("")
    sim = summary[summary["kind"] == "known_truth"] if len(summary) else summary
    if len(sim):
        r0 = sim.iloc[0]
        lines += ["## Known-truth check: does each metric rank the truth first?", "",
                  f"Counts simulated from known expression: {TRUTH_DATASET}'s cluster-mean proportions "
                  "(obs['cluster'], 8 clusters) × each cell's real library size, Poisson draws "
                  "(`default_rng(1000 + seed)`), then the same thinning, gene set and scoring "
                  f"({int(r0['n_cells_mean'])} cells × {int(r0['n_genes_mean'])} genes; seeds "
                  f"{meta.get('truth_seeds')}). `truth` = the true proportions. Rank 1 = best.", "",
                  "| method | NLL | rank (NLL) | log MSE | rank (MSE) | s |", "|---|---|---:|---|---:|---:|"]
        rk_n = sim["nll_mean"].rank(method="min")
        rk_m = sim["mse_mean"].rank(method="min")
        for i, r in sim.sort_values("nll_mean").iterrows():
            lines.append(f"| {r['method']} | {_fmt(r['nll_mean'], r['nll_std'], 4)} | {int(rk_n[i])} | "
                         f"{_fmt(r['mse_mean'], r['mse_std'], 3)} | {int(rk_m[i])} | {r['seconds_mean']:.1f} |")
        lines.append("")
    lines += ["## Methods", ""]
    for m, s in meta["methods"].items():
        lines.append(f"- `{m}`: {s}")
    lines += ["", "## Datasets", ""]
    for d in meta["datasets"]:
        lines.append(f"- `{d}`: {DATASETS.get(d, d)}")
    return "\n".join(lines) + "\n"


def method_descriptions(scvi_cap: int, variants: dict) -> dict:
    def gd(settings):
        return (f"genodae.pp.prepare(train counts of the gene set, n_top_genes=0); genodae.DAE("
                f"{''.join(f'{k}={v!r}, ' for k, v in settings.items())}seed, num_threads=1, device='cpu'); "
                "otherwise library defaults; denoise(scale='counts' for count likelihoods, 'normalized' for "
                "normal/bernoulli), rows renormalised")
    return {
        **{m: gd(s) for m, s in GENODAE.items()},
        **{f"genodae:{n}": gd(s) for n, s in variants.items()},
        "scvi": f"scvi.model.SCVI defaults (n_latent 10, gene_likelihood zinb) on the train counts; max_epochs = "
                f"min(round(20000/n*400), 400, {scvi_cap}), early stopping, batch 128; "
                "get_normalized_expression(library_size=1, n_samples=10)",
        "scvi_nb": "as scvi with gene_likelihood='nb'",
        "magic": "Open Problems recipe: per-cell proportions, sqrt, magic.MAGIC(random_state=seed, n_jobs=1; knn 5, "
                 "t 3, decay 1, n_pca 100, exact solver), clip at 0, square, rows renormalised",
        "pca": f"log1p(1e4 × train proportions), sklearn PCA({C.PCA_COMPS}, arpack; fewer when the data are smaller), "
               "reconstruction mean + Z @ components, expm1, clip at 0, rows renormalised",
        "gene_mean": "every cell gets the pooled train proportions (sum over cells / total)",
        "no_denoising": "each cell's own train proportions",
        "truth": "the true (simulated) proportions; known-truth check only",
    }


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(ALL_METHODS))
    C.add_seeds(p)
    p.add_argument("--truth-seeds", nargs="*", type=int, default=None,
                   help="seeds of the known-truth check (default: --seeds)")
    p.add_argument("--truth-methods", default=",".join(TRUTH_METHODS))
    p.add_argument("--no-truth", action="store_true", help="skip the known-truth check")
    C.add_scvi_epochs(p)
    C.add_threads(p)
    C.add_variant(p, "also run genodae with these DAE settings as method genodae:NAME (repeatable)")
    C.add_data_dir(p)
    C.add_out(p, "mcv")
    C.add_resume(p)
    p.add_argument("--report", action="store_true", help="only rewrite OUT.md from the runs in OUT.json")
    a = p.parse_args(argv)
    if a.report:
        prev = json.loads(Path(f"{a.out}.json").read_text())
        meta = {k: v for k, v in prev.items() if k not in ("summary", "runs")}
        Path(f"{a.out}.md").write_text(markdown(summarise(prev["runs"]), meta, prev["runs"]))
        print(f"[mcv] rewrote {a.out}.md from {len(prev['runs'])} runs in {a.out}.json")
        return 0
    logging.basicConfig(level=logging.WARNING)
    C.set_threads(a.threads)
    methods = [m for m in a.methods.split(",") if m]
    tmethods = [] if a.no_truth else [m for m in a.truth_methods.split(",") if m]
    bad = (set(methods) | set(tmethods)) - set(ALL_METHODS) - {"truth"}
    if bad or "truth" in methods:
        p.error(f"unknown method(s) {', '.join(sorted(bad or {'truth'}))}")
    variants = C.parse_variants(p, a.variant)
    at = max([i + 1 for i, m in enumerate(methods) if m.startswith("genodae")], default=0)
    methods[at:at] = [f"genodae:{n}" for n in variants]
    truth_seeds = [] if a.no_truth else (a.seeds if a.truth_seeds is None else a.truth_seeds)
    old, prev_s = [], 0.0
    if a.resume and Path(f"{a.out}.json").exists():
        prev = json.loads(Path(f"{a.out}.json").read_text())
        old, prev_s = prev["runs"], float(prev.get("total_seconds", 0))
    done = {(r["dataset"], r["method"], r["seed"]) for r in old if "error" not in r}
    old = [r for r in old if (r["dataset"], r["method"], r["seed"]) in done]
    t0, load0 = time.perf_counter(), C.load1()
    cmd = C.command("mcv", argv)
    descr = method_descriptions(a.scvi_epochs, variants)
    rows: list[dict] = []

    def write() -> str:
        allrows = old + rows
        meta = {"command": cmd, "date": C.utc_now(), "machine": C.machine(torch_threads=True),
                "load_start": load0, "load_now": C.load1(),
                "versions": C.versions(("scvi-tools", "lightning", "scikit-learn", "pandas", "magic-impute",
                                        "graphtools")),
                "seeds": a.seeds, "truth_seeds": truth_seeds,
                "datasets": [d for d in a.datasets if any(r["dataset"] == d for r in allrows)],
                "data_dir": str(a.data_dir), "scvi_cap": a.scvi_epochs, "train_fraction": TRAIN_FRACTION,
                "n_top_genes": N_TOP_GENES, "rate_floor": RATE_FLOOR, "total_seconds": prev_s + time.perf_counter() - t0,
                "methods": {m: descr[m] for m in dict.fromkeys(methods + tmethods)}}
        summary = summarise(allrows)
        md = markdown(summary, meta, allrows)
        C.write_results(a.out, C.run_record(meta, summary, allrows), md)
        return md

    run(a.datasets, a.seeds, methods, a.data_dir, a.threads, a.scvi_epochs, variants, rows, done, on_rows=write,
        progress=lambda s: print(s, flush=True), truth_seeds=truth_seeds, truth_methods=tmethods)
    print(write())
    print(f"[mcv] wrote {a.out}.json and {a.out}.md in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
