#!/usr/bin/env python
"""Readable gene weights (issue 16): planted programs on several generators, and pathway coverage on bulk data.

Part ``synthetic``: five generators from ``genodae.synthetic.program_mixture`` that differ in how programs
combine (see ``GENERATORS``): discrete groups, continuous gradients, overlapping mixed-sign modules, modules
of different sizes with library-size spread, low dispersion and dropout, and bulk-like log2 microarray
values. Every method gets the same prepared input (``genodae.pp.prepare`` defaults: log1p of
library-normalised counts, or the log2 values as they are, min–max scaled) and the same number of nodes
(``--n-latent``, default: the library default 32).

Methods: ``genodae`` = ``tl.dae`` defaults, read out as users get them (``varm["dae_weights"]``) and as the
raw decoder weights (``varm["dae_decoder_weights"]`` when present); PCA, FastICA and NMF (scikit-learn) with
their loadings raw and with genodae's read-out (correlation with whitened scores, varimax); cNMF (the
``cnmf`` package, Kotliar et al. 2019: 20 NMF replicates, consensus, gene-spectra z-scores) where installed.

Metrics (``genodae.signatures.module_recovery``, averaged over modules): ``auroc`` = best node's AUROC of
|weight| for membership; ``f1`` (precision, recall) of the best-matching ±2.5 SD signature; ``stab`` = mean
pairwise best-match |r| of weight vectors across seeds (baselines: random_state and a 90 % subsample of
cells, as the DAE's seed changes its 90 % training split); ``ens_*`` = eADAGE consensus of the seeds.

Part ``bulk``: eADAGE's pathway coverage on the bulk sets of ../shared/data (``GENODAE_SHARED_DATA``
overrides) with Hallmark and GO BP: ±2.5 SD signatures per node, one-sided Fisher test, BH per node
(``genodae.enrich``), coverage = gene sets significant (FDR < 0.05) for at least one signature; share of
signatures enriched for at least one set.

python bench/readable.py synthetic --seeds 3       # bench/results/readable_synthetic.{tsv,md}
python bench/readable.py bulk --seeds 3            # bench/results/readable_bulk.{tsv,md}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "results"
SHARED = Path(os.environ.get("GENODAE_SHARED_DATA", REPO.parent / "shared" / "data"))

warnings.filterwarnings("ignore")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import genodae  # noqa: E402
from genodae import signatures as S  # noqa: E402
from genodae import synthetic  # noqa: E402

log = logging.getLogger("bench.readable")

GENERATORS = {
    "groups": dict(activity="groups"),
    "gradients": dict(activity="continuous"),
    "overlap": dict(activity="mixed", overlap=0.25, negative_fraction=0.25),
    "sizes": dict(activity="mixed", module_sizes=(10, 20, 40, 80, 160), library_sd=0.8, dispersion=1.5,
                  dropout=0.2),
    "bulk_like": dict(activity="continuous", module_sizes=(20, 40, 40, 60, 80), bulk=True, noise_sd=0.4,
                      effect=0.8, n_cells=300, n_genes=2000),
}
BASELINES = ("pca", "ica", "nmf")


def make(name: str, seed: int):
    kw = dict(n_cells=1500, n_genes=1500, seed=1000 + seed)  # data seed differs from the model seed
    kw.update(GENERATORS[name])
    kw["seed"] = 1000 + seed
    return synthetic.program_mixture(**kw)


def corr_varimax(X, scores: np.ndarray, genes) -> pd.DataFrame:
    """genodae's read-out applied to any factorisation: correlation with whitened scores, then varimax."""
    mu, M = S.whitening(scores)
    L = S.activity_loadings(X, (scores - mu) @ M)
    L = L @ S.varimax(L)
    return pd.DataFrame(L, index=pd.Index(genes), columns=[f"f{j}" for j in range(L.shape[1])])


def cnmf_loadings(adata, k: int, seed: int, genes) -> pd.DataFrame | None:
    try:
        from cnmf import cNMF
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        raw = adata.copy()
        raw.X = raw.X.toarray() if hasattr(raw.X, "toarray") else np.asarray(raw.X)
        raw.X = np.clip(raw.X, 0, None)
        raw = raw[:, list(genes)].copy()
        path = Path(tmp) / "counts.h5ad"
        raw.write_h5ad(path)
        c = cNMF(output_dir=tmp, name="run")
        c.prepare(counts_fn=str(path), components=[k], n_iter=20, seed=seed, num_highvar_genes=len(genes))
        c.factorize(worker_i=0, total_workers=1)
        c.combine()
        c.consensus(k=k, density_threshold=0.5, show_clustering=False)
        _, scores, _, _ = c.load_results(K=k, density_threshold=0.5)
    W = scores.T if scores.shape[0] == k else scores  # genes × components
    return W.reindex(pd.Index(genes)).fillna(0.0)


def genodae_weights(adata, seed: int, n_latent: int) -> dict[str, pd.DataFrame]:
    a = adata.copy()
    genodae.tl.dae(a, seed=seed, n_latent=n_latent, num_threads=1)
    used = S.genes_used(a, "dae")
    genes = a.var_names[used]
    out = {"genodae (as stored)": pd.DataFrame(a.varm["dae_weights"][used], index=genes)}
    if "dae_decoder_weights" in a.varm:
        out["genodae (raw decoder)"] = pd.DataFrame(a.varm["dae_decoder_weights"][used], index=genes)
    else:  # before readable weights: the stored weights are the raw decoder's; add the old tl.signatures read-out
        S.rotate(a, key="dae")
        out["genodae (corr+varimax)"] = pd.DataFrame(a.varm["dae_varimax_weights"][used], index=genes)
    return out


def score(weights: pd.DataFrame, modules) -> dict:
    r = S.module_recovery(weights, modules)
    return {m: float(r[m].mean()) for m in ("auroc", "precision", "recall", "f1")}


def run_synthetic(args) -> None:
    rows, weights_by = [], {}
    for gen in args.generators:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            adata = make(gen, seed)
            modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
            prep = genodae.pp.prepare(adata, copy=True)
            X, genes = S.model_input(prep)
            found = genodae_weights(prep, seed, args.n_latent)
            for method in BASELINES:
                L, sc = S.factor_loadings(X, genes, method, args.n_latent, seed=seed, subsample=0.9)
                found[f"{method} (raw)"] = L
                found[f"{method} (corr+varimax)"] = corr_varimax(X, sc, genes)
            if args.cnmf:
                W = cnmf_loadings(adata, args.n_latent, seed, genes)
                if W is not None:
                    found["cnmf (spectra scores)"] = W
            for method, W in found.items():
                rows.append({"generator": gen, "seed": seed, "method": method, **score(W, modules)})
                weights_by.setdefault((gen, method), []).append(W)
            log.info("%s seed %d: %.0fs; %s", gen, seed, time.perf_counter() - t0,
                     ", ".join(f"{r['method']} {r['auroc']:.3f}/{r['f1']:.2f}" for r in rows[-len(found):]))
    per_seed = pd.DataFrame(rows)
    summary = per_seed.groupby(["generator", "method"], sort=False)[["auroc", "precision", "recall", "f1"]].mean()
    stab, ens = {}, {}
    for (gen, method), Ws in weights_by.items():
        if len(Ws) > 1:
            stab[(gen, method)] = float(S.stability(Ws)["stability"].mean())
            modules = {k: list(v) for k, v in make(gen, 0).uns["synthetic"]["modules"].items()}
            cons = S.consensus(Ws)
            ens[(gen, method)] = score(cons["weights"], modules) if cons["weights"].shape[1] else {"auroc": 0.5, "f1": 0}
    summary["stab"] = [stab.get(i, np.nan) for i in summary.index]
    summary["ens_auroc"] = [ens.get(i, {}).get("auroc", np.nan) for i in summary.index]
    summary["ens_f1"] = [ens.get(i, {}).get("f1", np.nan) for i in summary.index]
    summary = summary.reset_index()
    OUT.mkdir(parents=True, exist_ok=True)
    per_seed.to_csv(OUT / f"readable_synthetic_per_seed{args.suffix}.tsv", sep="\t", index=False)
    summary.to_csv(OUT / f"readable_synthetic{args.suffix}.tsv", sep="\t", index=False, float_format="%.4f")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


def machine() -> dict:
    return {"machine": platform.node(), "cpu": platform.processor() or platform.machine(), "threads": 1,
            "torch": torch.__version__, "genodae": genodae.__version__, "load": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["synthetic", "bulk"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-latent", type=int, default=32)
    p.add_argument("--generators", nargs="+", default=list(GENERATORS))
    p.add_argument("--no-cnmf", dest="cnmf", action="store_false")
    p.add_argument("--suffix", default="")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("genodae").setLevel(logging.WARNING)
    log.info("machine %s", json.dumps(machine()))
    if args.part == "synthetic":
        run_synthetic(args)
    else:
        run_bulk(args)


def run_bulk(args) -> None:
    raise NotImplementedError


if __name__ == "__main__":
    main()
