#!/usr/bin/env python
"""Integration benchmark: embeddings of data with batches, scored with scib-metrics and 15-NN accuracies.

Data sets (``--data-dir``, default ``$GENODAE_SHARED_DATA`` or ``../shared/data``; a missing file is skipped with
a message), each with ``obs['label']`` (cell type, the truth) and ``obs['batch']``:

- ``celseq2_3plates``: the three CellBench CEL-seq2 plates ``scrna/sc_celseq2_5cl_p{1,2,3}.count.csv.gz`` (genes ×
  cells) + ``.metadata.csv.gz``; demuxlet singlets only (``demuxlet_cls == "SNG"``), label
  ``cell_line_demuxlet``, batch = plate; ``ERCC-`` spike-in rows dropped; genes = those of all three plates
  (inner join); obs names ``p<plate>/<barcode>`` (the barcodes repeat across plates). A real batch effect.
- ``<set>_batch`` (pbmc4k, mouse_bladder, pbmc3k_cd8_cd14): a labelled count set split at random into two halves
  (``default_rng(DATA_SEED)``, fixed: the data are the same for every method seed); batch 2's counts are redrawn
  as ``Poisson(y × f_g × s)`` with gene factors ``f_g ~ LogNormal(0, 0.5)`` (drawn once per set from the same
  generator) and library factor ``s = 0.5``; batch 1 is left as it is. Cells left without counts are dropped.
- ``pbmc4k_batch_imbal``: as ``pbmc4k_batch`` but cluster ``"2"`` is absent from batch 2 (its batch-2 cells are
  removed): a composition imbalance, where a method that mixes batches too hard merges cluster 2 into others.

Methods (``--methods``), each a cells × d embedding:

- ``pca`` (unintegrated): scanpy's standard on the counts: ``normalize_total(1e4)``, ``log1p``, 2,000 HVGs by
  ``highly_variable_genes(flavor="seurat", batch_key="batch")`` (all genes when fewer), ``pca(50 comps)`` on
  those genes (centred, not scaled). Also the pre-integration embedding of scib's PCR comparison.
- ``harmony``: harmonypy ``run_harmony`` on that PCA (``vars_use="batch"``, ``random_state=seed``, ``ncores=1``,
  defaults otherwise). Its seconds exclude the PCA.
- ``scvi``: ``scvi.model.SCVI(n_latent=10, defaults)`` with ``setup_anndata(batch_key="batch")`` on the raw
  counts of the same HVGs; ``max_epochs = min(round(20000 / n × 400), 400, --scvi-epochs)`` with early
  stopping, as bench/baselines.py; embedding = posterior means.
- ``genodae``: ``genodae.pp.prepare`` (library defaults, no batch) + ``genodae.tl.dae(seed, device="cpu",
  num_threads=1)``; ``obsm["X_dae"]``.
- ``genodae_batch``: ``genodae.pp.prepare(batch_key="batch")`` + ``genodae.tl.dae(batch_key="batch", ...)``;
  run only when the library has it (``batch_key`` a field of ``genodae.config.DAEConfig`` and a parameter of
  ``genodae.pp.prepare``), else skipped with a message.

Scores per (data set, method, seed): ``scib_metrics.benchmark.Benchmarker`` (default metric sets: isolated
labels, KMeans NMI/ARI, silhouette label, cLISI; BRAS, iLISI, kBET, graph connectivity, PCR comparison with the
``pca`` embedding as ``pre_integrated_embedding_obsm_key``; ``n_jobs=1``; scores NOT min-max scaled, so every row
stands on its own) -> Bio conservation, Batch correction, Total = 0.6 bio + 0.4 batch; plus leave-one-out
15-NN label accuracy (higher = better) and 15-NN batch accuracy (lower = better mixed) on the embedding
(sklearn ``NearestNeighbors``, each cell's 15 nearest other cells, majority vote), and seconds.

Examples
--------
python bench/integration.py                                   # every set, every method, seed 0
python bench/integration.py --datasets celseq2_3plates --methods pca,harmony --out /tmp/i
python bench/integration.py --resume                          # skip (set, method, seed) already in OUT.tsv
"""

from __future__ import annotations

import os

# before jax / numba / BLAS load: one thread, CPU jax (2 shared cores)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import dataclasses  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

DATA_SEED = 0  # the random split and the gene factors of the simulated batches (fixed for every method seed)
LIB_FACTOR = 0.5  # s: batch 2's library-size factor
GENE_SD = 0.5  # f_g ~ LogNormal(0, GENE_SD)
IMBAL_ABSENT = "2"  # pbmc4k cluster absent from batch 2 in pbmc4k_batch_imbal
N_HVG = 2000
N_PCS = 50
K = 15
SCVI_LATENT = 10

SIMULATED = {  # name: (source file under data_dir, label column)
    "pbmc4k_batch": ("scrna/pbmc4k_top2000.h5ad", "cluster"),
    "pbmc4k_batch_imbal": ("scrna/pbmc4k_top2000.h5ad", "cluster"),
    "mouse_bladder_batch": ("scrna/mouse_bladder_top2000.h5ad", "cell_type"),
    "pbmc3k_cd8_cd14_batch": ("scrna/pbmc3k_cd8_cd14_mtx", "celltype"),
}
DATASETS = {
    "celseq2_3plates": "CellBench CEL-seq2 plates p1-p3 (scrna/sc_celseq2_5cl_p{1,2,3}), demuxlet singlets, 5 cell "
                       "lines, batch = plate (real); ERCC rows dropped, genes of all plates",
    "pbmc3k_cd8_cd14_batch": "scrna/pbmc3k_cd8_cd14_mtx (CD8 T + CD14 monocytes) with a simulated batch",
    "mouse_bladder_batch": "scrna/mouse_bladder_top2000.h5ad (obs cell_type) with a simulated batch",
    "pbmc4k_batch": "scrna/pbmc4k_top2000.h5ad (obs cluster) with a simulated batch",
    "pbmc4k_batch_imbal": f"as pbmc4k_batch, cluster {IMBAL_ABSENT!r} absent from batch 2 (composition imbalance)",
}
METHODS = ("pca", "harmony", "scvi", "genodae", "genodae_batch")
SCORES = ("bio", "batch", "total", "knn_label_acc", "knn_label_acc_unshared", "knn_batch_acc", "seconds")

log = logging.getLogger("bench.integration")


# --- data ------------------------------------------------------------------------------------------------


def _absent(name, path):
    return C.absent(name, path, "integration")


def load_source(name: str, data_dir: Path):
    """Counts AnnData (CSR float32) with obs['label'] of a simulated set's source; None when absent."""
    import anndata as ad
    import scanpy as sc

    path, key = SIMULATED[name]
    f = data_dir / path
    if not f.exists():
        return _absent(name, f)
    if f.is_dir():  # 10x mtx folder + cells_metadata.csv
        adata = sc.read_10x_mtx(f, var_names="gene_symbols", make_unique=True)
        meta = pd.read_csv(f / "cells_metadata.csv", index_col=0)
        meta.index = meta.index.astype(str)
        adata = adata[adata.obs_names.isin(meta.index)].copy()
        adata.obs[key] = meta.loc[adata.obs_names, key].to_numpy()
    else:
        adata = ad.read_h5ad(f)
    adata = adata[adata.obs[key].notna()].copy()
    out = ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32),
                     obs=pd.DataFrame({"label": adata.obs[key].astype(str).to_numpy()}, index=adata.obs_names),
                     var=pd.DataFrame(index=adata.var_names.astype(str)))
    return out


def add_batch(adata, imbal_absent: str | None = None, seed: int = DATA_SEED):
    """Two batches: a random half of the cells keeps its counts; the other half's counts ``y`` are redrawn as
    ``Poisson(y × f_g × s)``, ``f_g ~ LogNormal(0, GENE_SD)``, ``s = LIB_FACTOR`` (one generator, ``seed``).
    With ``imbal_absent``, that label's batch-2 cells are removed. Cells without counts afterwards are dropped."""
    rng = np.random.default_rng(seed)
    n = adata.n_obs
    b2 = rng.permutation(n) < n // 2
    f = rng.lognormal(0.0, GENE_SD, size=adata.n_vars)
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    X.sum_duplicates()
    X2 = sp.csr_matrix(X[b2])
    rate = X2.data * f[X2.indices] * LIB_FACTOR
    X2.data = rng.poisson(rate).astype(np.float64)
    X = sp.vstack([X[~b2], X2]).tocsr()
    order = np.concatenate([np.flatnonzero(~b2), np.flatnonzero(b2)])
    obs = adata.obs.iloc[order].copy()
    obs["batch"] = np.where(b2[order], "b2", "b1")
    X.eliminate_zeros()
    a = adata.__class__(X=X.astype(np.float32), obs=obs, var=adata.var.copy())
    keep = np.asarray(a.X.sum(axis=1)).ravel() > 0
    if imbal_absent is not None:
        keep &= ~((a.obs["batch"] == "b2") & (a.obs["label"] == imbal_absent)).to_numpy()
    return a[keep].copy()


def load(name: str, data_dir: Path):
    """AnnData of raw counts with obs 'label' and 'batch' (categorical), or None when its files are absent."""
    if name == "celseq2_3plates":
        adata = C.load_celseq2_plates(data_dir, "integration")
    else:
        src = load_source(name, data_dir)
        if src is None:
            return None
        adata = add_batch(src, IMBAL_ABSENT if name.endswith("_imbal") else None)
    if adata is None:
        return None
    adata = adata[np.asarray(adata.X.sum(axis=1)).ravel() > 0].copy()
    for c in ("label", "batch"):
        adata.obs[c] = adata.obs[c].astype(str).astype("category")
    return adata


def standard(adata):
    """scanpy standard on counts: layers['counts'], X = log1p(CP10k), var['highly_variable'] batch-aware."""
    import scanpy as sc

    a = adata.copy()
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    if a.n_vars > N_HVG:
        sc.pp.highly_variable_genes(a, n_top_genes=N_HVG, flavor="seurat", batch_key="batch")
    else:
        a.var["highly_variable"] = True
    return a


# --- methods ---------------------------------------------------------------------------------------------


def embed_pca(a, seed: int):
    import scanpy as sc

    X = a.X[:, a.var["highly_variable"].to_numpy(bool)]
    n = min(N_PCS, min(X.shape) - 1)
    return sc.pp.pca(X, n_comps=n, random_state=seed).astype(np.float32), {"dim": n}


def embed_harmony(a, pcs: np.ndarray, seed: int):
    import harmonypy

    h = harmonypy.run_harmony(pcs, a.obs[["batch"]], "batch", random_state=seed, ncores=1, verbose=False)
    Z = np.asarray(h.Z_corr)
    if Z.shape[0] != a.n_obs:
        Z = Z.T
    return Z.astype(np.float32), {"dim": int(Z.shape[1])}


def embed_scvi(a, seed: int, cap: int, threads: int = 1):
    model, _, info = C.train_scvi(a, seed, C.scvi_epochs_for(a.n_obs, cap), threads=threads, batch_key="batch",
                                  n_latent=SCVI_LATENT)
    return (np.asarray(model.get_latent_representation(), np.float32),
            {"dim": SCVI_LATENT, "epochs_run": info["epochs_run"], "max_epochs": info["max_epochs"]})


def genodae_has_batch() -> tuple[bool, str]:
    """Whether the library has batch conditioning (DAEConfig.batch_key and pp.prepare(batch_key=))."""
    import genodae
    from genodae.config import DAEConfig

    in_cfg = "batch_key" in {f.name for f in dataclasses.fields(DAEConfig)}
    in_prep = "batch_key" in inspect.signature(genodae.pp.prepare).parameters
    if in_cfg and in_prep:
        return True, ""
    return False, ("genodae has no batch_key yet (" + ", ".join(
        w for w, ok in (("DAEConfig field", in_cfg), ("pp.prepare parameter", in_prep)) if not ok) + " missing)")


def embed_genodae(raw, seed: int, threads: int = 1, batch: bool = False):
    import genodae

    kw = {"batch_key": "batch"} if batch else {}
    a = genodae.pp.prepare(raw.copy(), copy=True, **kw)
    genodae.tl.dae(a, seed=seed, device="cpu", num_threads=threads, **kw)
    Z = pd.DataFrame(np.asarray(a.obsm["X_dae"], np.float32), index=a.obs_names).reindex(raw.obs_names)
    if Z.isna().any().any():
        raise RuntimeError(f"genodae.pp.prepare dropped {int(Z.isna().any(axis=1).sum())} cells")
    h = a.uns["dae"]["history"]
    st = a.uns["dae"].get("params", {})
    extra = {k: st[k] for k in ("batch_mmd", "n_latent", "corruption") if k in st}
    return Z.to_numpy(np.float32), {**extra, "dim": int(Z.shape[1]), "epochs_run": int(h["epochs_run"]),
                                    "best_epoch": int(h["best_epoch"]) + 1,
                                    "n_genes": int(a.var["highly_variable"].sum())}


# --- scores ----------------------------------------------------------------------------------------------


def knn_loo_correct(Z: np.ndarray, y, k: int = K) -> np.ndarray:
    """Leave-one-out k-NN: per cell, whether its k nearest other cells (Euclidean) vote for its own class."""
    from sklearn.neighbors import NearestNeighbors

    codes, _ = pd.factorize(np.asarray(y), sort=True)
    idx = NearestNeighbors(n_neighbors=k).fit(Z).kneighbors(return_distance=False)  # excludes the cell itself
    votes = np.zeros((len(codes), codes.max() + 1), np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(codes)), k), codes[idx].ravel()), 1)
    return votes.argmax(axis=1) == codes  # ties: the first class in sorted order


def knn_loo_acc(Z: np.ndarray, y, k: int = K) -> float:
    return float(knn_loo_correct(Z, y, k).mean())


def unshared_cells(obs: pd.DataFrame) -> np.ndarray:
    """Cells whose label is missing from at least one batch (the over-correction probe)."""
    per = obs.groupby("label", observed=True)["batch"].nunique()
    return obs["label"].isin(per.index[per < obs["batch"].nunique()]).to_numpy()


def scib_scores(a, key: str, Z: np.ndarray, pcs: np.ndarray) -> dict:
    """Benchmarker on one embedding (unscaled scores), with the unintegrated PCA as the pre-integration one."""
    import anndata as ad
    from scib_metrics.benchmark import Benchmarker

    b = ad.AnnData(X=sp.csr_matrix(a.shape, dtype=np.float32), obs=a.obs[["label", "batch"]].copy())
    b.obsm["X_pre"] = pcs
    b.obsm[key] = Z
    bm = Benchmarker(b, batch_key="batch", label_key="label", embedding_obsm_keys=[key],
                     pre_integrated_embedding_obsm_key="X_pre", n_jobs=1, progress_bar=False)
    bm.benchmark()
    res = bm.get_results(min_max_scale=False)
    r = res.loc[key]
    out = {"bio": float(r["Bio conservation"]), "batch": float(r["Batch correction"]), "total": float(r["Total"])}
    for c in res.columns:
        if c not in ("Bio conservation", "Batch correction", "Total"):
            out[f"scib:{c}"] = float(r[c])
    return out


# --- running ---------------------------------------------------------------------------------------------


def run(datasets, seeds, methods, data_dir, scvi_cap, threads, done, on_row, progress=print, git="?"):
    has_batch, why = genodae_has_batch() if "genodae_batch" in methods else (True, "")
    if not has_batch:
        progress(f"[integration] genodae_batch skipped: {why}")
        methods = [m for m in methods if m != "genodae_batch"]
    for name in datasets:
        todo = [(m, s) for s in seeds for m in methods if (name, m, s) not in done]
        if not todo:
            continue
        t0 = time.perf_counter()
        raw = load(name, data_dir)
        if raw is None:
            continue
        a = standard(raw)
        nb = raw.obs["batch"].value_counts()
        progress(f"[integration] {name}: {raw.n_obs} cells × {raw.n_vars} genes ({int(a.var['highly_variable'].sum())} "
                 f"HVG), {raw.obs['label'].nunique()} labels, batches {', '.join(k + ' ' + str(v) for k, v in nb.items())} (loaded in "
                 f"{time.perf_counter() - t0:.1f}s)")
        base = {"dataset": name, "n_cells": int(raw.n_obs), "n_genes": int(raw.n_vars),
                "n_labels": int(raw.obs["label"].nunique()), "n_batches": int(len(nb)),
                "largest_batch_share": float(nb.max() / nb.sum()), "n_unshared": int(unshared_cells(raw.obs).sum())}
        for seed in seeds:
            t = time.perf_counter()
            pcs, _ = embed_pca(a, seed)
            t_pca = time.perf_counter() - t
            for m in methods:
                if (name, m, seed) in done:
                    continue
                t = time.perf_counter()
                row = {**base, "method": m, "seed": seed, "git": git}
                try:
                    if m == "pca":
                        Z, info = pcs, {"dim": int(pcs.shape[1])}
                        secs = t_pca
                    else:
                        if m == "harmony":
                            Z, info = embed_harmony(a, pcs, seed)
                        elif m == "scvi":
                            Z, info = embed_scvi(a, seed, scvi_cap, threads)
                        elif m in ("genodae", "genodae_batch"):
                            Z, info = embed_genodae(raw, seed, threads, batch=m == "genodae_batch")
                        else:
                            raise ValueError(m)
                        secs = time.perf_counter() - t
                    t2 = time.perf_counter()
                    sc = scib_scores(a, f"X_{m}", Z, pcs)
                    ok_label = knn_loo_correct(Z, raw.obs["label"])
                    uns = unshared_cells(raw.obs)
                    row.update({**info, "seconds": secs, "knn_label_acc": float(ok_label.mean()),
                                "knn_label_acc_unshared": float(ok_label[uns].mean()) if uns.any() else np.nan,
                                "knn_batch_acc": knn_loo_acc(Z, raw.obs["batch"]), **sc,
                                "scoring_seconds": time.perf_counter() - t2})
                except Exception as e:  # one failing method must not lose the others: recorded, reported
                    row.update({"seconds": time.perf_counter() - t, "error": f"{type(e).__name__}: {e}"})
                    progress(traceback.format_exc())
                progress(_fmt(row))
                on_row(row)


def _fmt(r: dict) -> str:
    if "error" in r:
        return f"  {r['dataset']:<22} {r['method']:<14} seed {r['seed']}: ERROR {r['error']}"
    ep = f" ep {r['epochs_run']}" if not pd.isna(r.get("epochs_run", np.nan)) else ""
    return (f"  {r['dataset']:<22} {r['method']:<14} seed {r['seed']}: bio {r['bio']:.3f} batch {r['batch']:.3f} "
            f"total {r['total']:.3f}  15-NN label {r['knn_label_acc']:.3f} batch {r['knn_batch_acc']:.3f}  "
            f"{r['seconds']:.1f}s{ep} (scoring {r['scoring_seconds']:.0f}s)")


# --- reporting -------------------------------------------------------------------------------------------


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["error"].isna()] if "error" in df else df
    return C.mean_sd(ok, ["dataset", "method"], SCORES).reset_index()


def _pm(r, m, nd=3):
    mean, sd = r[f"{m}_mean"], r[f"{m}_std"]
    if r["n_seeds"] < 2 or pd.isna(sd):
        return f"{mean:.{nd}f}"
    return f"{mean:.{nd}f} ± {sd:.{nd}f}"


def markdown(df: pd.DataFrame, meta: dict, notes: str = "") -> str:
    v = meta["versions"]
    lines = [
        "# Integration benchmark: embeddings of data with batches (scib-metrics)",
        "",
        "Generated by " + " then ".join(f"`{c}`" for c in meta.get("commands", [meta["command"]]))
        + f" (last {meta['date']}; genodae at git {meta.get('git', '?')}; "
        f"{meta['machine']['cpu']}, {meta['machine']['cores']} "
        f"cores, load average {meta['load_start']} at the start of the last; 1 thread everywhere: "
        "OMP/MKL/OPENBLAS/NUMBA_NUM_THREADS=1, torch.set_num_threads(1), JAX_PLATFORMS=cpu with single-threaded XLA). Seeds "
        f"{meta['seeds']} (mean ± sd when more than one). genodae {v.get('genodae')}, scib-metrics "
        f"{v.get('scib-metrics')}, harmonypy {v.get('harmonypy')}, scvi-tools {v.get('scvi-tools')}, torch "
        f"{v.get('torch')}, jax {v.get('jax')}, scanpy {v.get('scanpy')}, anndata {v.get('anndata')}, "
        f"scikit-learn {v.get('scikit-learn')}.",
        "",
        "**bio** / **batch** / **total**: scib-metrics `Benchmarker` aggregates (default metrics, **not** min-max "
        "scaled; total = 0.6 bio + 0.4 batch; higher is better). **label acc**: leave-one-out 15-NN accuracy of "
        "the cell type (higher = better). **batch acc**: the same for the batch (lower = better mixed; with "
        "perfect mixing it is about the largest batch's share, `ref` below, unless cell types are not shared by "
        "all batches). **s**: seconds to compute the embedding (1 thread; harmony's exclude the PCA it starts "
        "from; scoring time not included). **unshared acc**: the label accuracy of the cells whose type is "
        "missing from a batch (only `pbmc4k_batch_imbal`): a method that forces the batches together pulls them "
        "into other types. Best total per set in **bold**.",
        "",
    ]
    if len(df):
        s = summarise(df)
        sets = [d for d in DATASETS if d in set(s["dataset"])]
        uns = "knn_label_acc_unshared_mean" in s and s["knn_label_acc_unshared_mean"].notna().any()
        lines += ["| set | method | bio | batch | total | label acc | " + ("unshared acc | " if uns else "")
                  + "batch acc | s |", "|---|---|---:|---:|---:|---:|" + ("---:|" if uns else "") + "---:|---:|"]
        for d in sets:
            sub = s[s["dataset"] == d]
            best = sub["total_mean"].max()
            ref = df[df["dataset"] == d]["largest_batch_share"].iloc[0]
            for i, (_, r) in enumerate(sub.set_index("method").reindex(
                    [m for m in METHODS if m in set(sub["method"])]).reset_index().iterrows()):
                tot = _pm(r, "total")
                tot = f"**{tot}**" if np.isclose(r["total_mean"], best, rtol=0, atol=5e-4) else tot
                name = f"{d} (ref {ref:.2f})" if i == 0 else ""
                ua = ((_pm(r, "knn_label_acc_unshared") if not pd.isna(r["knn_label_acc_unshared_mean"]) else "–")
                      + " | ") if uns else ""
                lines.append(f"| {name} | {r['method']} | {_pm(r, 'bio')} | {_pm(r, 'batch')} | {tot} | "
                             f"{_pm(r, 'knn_label_acc')} | {ua}{_pm(r, 'knn_batch_acc')} | {r['seconds_mean']:.1f} |")
        lines.append("")
        sizes = df.drop_duplicates("dataset").set_index("dataset")
        lines += ["Sizes: " + "; ".join(f"{d} {int(sizes.loc[d, 'n_cells'])} cells × {int(sizes.loc[d, 'n_genes'])} "
                                        f"genes, {int(sizes.loc[d, 'n_labels'])} labels, "
                                        f"{int(sizes.loc[d, 'n_batches'])} batches" for d in sets) + ".", ""]
        if "error" in df and df["error"].notna().any():
            e = df[df["error"].notna()]
            lines += ["Failed runs: " + "; ".join(f"{r['dataset']}/{r['method']} seed {r['seed']}: {r['error']}"
                                                  for _, r in e.iterrows()), ""]
        metric_cols = [c for c in df.columns if c.startswith("scib:")]
        if metric_cols:
            lines += ["<details><summary>Individual scib metrics (mean over seeds)</summary>", "",
                      "| set | method | " + " | ".join(c.removeprefix("scib:") for c in metric_cols) + " |",
                      "|---|---|" + "---:|" * len(metric_cols)]
            ok = df[df["error"].isna()] if "error" in df else df
            g = ok.groupby(["dataset", "method"], sort=False)[metric_cols].mean()
            for (d, m), r in g.iterrows():
                lines.append(f"| {d} | {m} | " + " | ".join(f"{x:.3f}" for x in r) + " |")
            lines += ["", "</details>", ""]
    if len(df):
        lines += ["## Findings (generated from the table)", ""] + [f"- {x}" for x in findings(summarise(df))] + [""]
    if notes:
        lines += ["## Reading", "", notes.strip(), ""]
    lines += ["## Data sets", ""] + [f"- `{d}`: {DATASETS[d]}" for d in meta["datasets"]]
    lines += ["", f"Simulated batches: cells split at random in two halves (`numpy.random.default_rng({DATA_SEED})`); "
              "batch `b1` keeps its counts, batch `b2`'s counts y are redrawn as Poisson(y × f_g × s), "
              f"f_g ~ LogNormal(0, {GENE_SD}) per gene (same generator, drawn once), s = {LIB_FACTOR}; cells without "
              f"counts afterwards are dropped. `pbmc4k_batch_imbal`: the same with cluster {IMBAL_ABSENT!r}'s b2 "
              "cells removed.", "", "## Methods", ""]
    lines += [f"- `{m}`: {t}" for m, t in meta["methods"].items()]
    return "\n".join(lines) + "\n"


def findings(s: pd.DataFrame) -> list[str]:
    """Sentences: the best total per set, and genodae (with/without batch) against PCA, Harmony and scVI."""
    out = []
    by = s.set_index(["dataset", "method"])
    sets = [d for d in DATASETS if d in set(s["dataset"])]
    best = []
    for d in sets:
        sub = by.loc[d]
        best.append(f"{d}: `{sub['total_mean'].idxmax()}` ({sub['total_mean'].max():.3f})")
    out.append("Best total per set: " + "; ".join(best) + ".")
    for g in ("genodae_batch", "genodae"):
        for other in ("pca", "harmony", "scvi", "genodae"):
            if other == g:
                continue
            both = [d for d in sets if (d, g) in by.index and (d, other) in by.index]
            if not both:
                continue
            parts = []
            for col, word, hi in (("total", "total", True), ("bio", "bio", True), ("batch", "batch", True),
                                  ("knn_label_acc", "label acc", True), ("knn_batch_acc", "batch acc", False)):
                diff = [by.loc[(d, g), f"{col}_mean"] - by.loc[(d, other), f"{col}_mean"] for d in both]
                wins = sum((x > 0) if hi else (x < 0) for x in diff)
                parts.append(f"{word} {'higher' if hi else 'lower'} on {wins}/{len(both)} (mean Δ {np.mean(diff):+.3f})")
            out.append(f"`{g}` vs `{other}`: " + "; ".join(parts) + ".")
    return out


def git_state() -> str:
    """HEAD and whether genodae/ had uncommitted edits (the editable install runs the working tree)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=C.REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "genodae"], cwd=C.REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted edits in genodae/" if dirty else "")


def write_tsv(path: Path, df: pd.DataFrame, meta: dict) -> None:
    """One row per (set, method, seed); the run's metadata (command, machine, versions) as a first '# ' line."""
    import json

    with open(path, "w") as fh:
        fh.write("# " + json.dumps(meta, default=str) + "\n")
        df.to_csv(fh, sep="\t", index=False)


def read_tsv(path: Path) -> tuple[pd.DataFrame, dict]:
    import json

    with open(path) as fh:
        first = fh.readline()
    meta = json.loads(first[2:]) if first.startswith("# ") else {}
    return pd.read_csv(path, sep="\t", skiprows=1 if meta else 0), meta


def method_descriptions(scvi_cap: int) -> dict:
    return {
        "pca": f"scanpy: normalize_total(1e4), log1p, highly_variable_genes({N_HVG}, flavor='seurat', "
               f"batch_key='batch'; all genes when fewer), pca({N_PCS}) on the HVGs (centred, not scaled); "
               "also scib's pre-integration embedding",
        "harmony": "harmonypy.run_harmony(the pca embedding, vars_use='batch', random_state=seed, ncores=1), defaults",
        "scvi": f"scvi.model.SCVI(n_latent={SCVI_LATENT}; otherwise defaults) with setup_anndata(batch_key='batch') "
                f"on the raw counts of the same HVGs; max_epochs = min(round(20000/n*400), 400, {scvi_cap}), early "
                "stopping, batch 128; get_latent_representation()",
        "genodae": "genodae.pp.prepare(counts) (library defaults, no batch) + genodae.tl.dae(seed, device='cpu', "
                   "num_threads=1); obsm['X_dae']",
        "genodae_batch": "genodae.pp.prepare(counts, batch_key='batch') + genodae.tl.dae(batch_key='batch', seed, "
                         "device='cpu', num_threads=1); obsm['X_dae']",
    }


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    C.add_seeds(p, default=[0])
    C.add_scvi_epochs(p)
    C.add_threads(p)
    C.add_data_dir(p, default=C.shared_data_dir(), help="shared data (env GENODAE_SHARED_DATA overrides the default)")
    C.add_out(p, "integration", help="writes OUT.tsv and OUT.md")
    C.add_resume(p, "the rows in OUT.tsv")
    p.add_argument("--notes", type=Path, default=None, help="a markdown file appended as the 'Reading' section")
    p.add_argument("--report", action="store_true", help="only rewrite OUT.md from OUT.tsv")
    a = p.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m]
    bad = set(methods) - set(METHODS)
    if bad:
        p.error(f"unknown method(s) {', '.join(sorted(bad))}")
    notes = a.notes.read_text() if a.notes else ""
    tsv, mdp = Path(f"{a.out}.tsv"), Path(f"{a.out}.md")
    cmd = C.command("integration", argv)
    old, old_meta = read_tsv(tsv) if (a.resume or a.report) and tsv.exists() else (pd.DataFrame(), {})
    if a.report:
        mdp.write_text(markdown(old, old_meta, notes))
        print(f"[integration] rewrote {mdp} from {len(old)} rows of {tsv}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    C.set_threads(a.threads)
    if len(old) and "error" in old:
        old = old[old["error"].isna()]
    done = {(r["dataset"], r["method"], int(r["seed"])) for _, r in old.iterrows()}
    rows: list[dict] = []
    t0, load0 = time.perf_counter(), C.load1()
    descr = method_descriptions(a.scvi_epochs)
    git_now = git_state()  # at the start (the working tree may change under a long run)

    def meta() -> dict:
        allsets = set(old["dataset"]) if len(old) else set()
        allsets |= {r["dataset"] for r in rows}
        return {"command": cmd, "commands": [*old_meta.get("commands", []), cmd], "git": git_now,
                "date": C.utc_now(), "machine": C.machine(torch_threads=True), "load_start": load0,
                "versions": C.versions((*C.SCVI_VERSIONS, "scib-metrics", "harmonypy")),
                "seeds": a.seeds, "datasets": [d for d in DATASETS if d in allsets],
                "methods": {m: descr[m] for m in METHODS
                            if m in methods or (len(old) and m in set(old["method"]))}}

    def write(row: dict) -> None:
        rows.append(row)
        df = pd.concat([old, pd.DataFrame(rows)], ignore_index=True)
        mt = meta()
        tsv.parent.mkdir(parents=True, exist_ok=True)
        write_tsv(tsv, df, mt)
        mdp.write_text(markdown(df, mt, notes))

    run(a.datasets, a.seeds, methods, a.data_dir, a.scvi_epochs, a.threads, done, write,
        progress=lambda s: print(s, flush=True), git=git_now)
    print(mdp.read_text() if mdp.exists() else "[integration] nothing run")
    print(f"[integration] wrote {tsv} and {mdp} in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
