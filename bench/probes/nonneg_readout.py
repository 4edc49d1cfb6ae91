"""Probe (issue 16, not in the library): cNMF-like read-outs of a default model's sparse activities, on the planted-
program generators of bench/readable.py, 2 model seeds. ``relu corr``: each gene's correlation with max(a − median(a),
0) of each node's activity a (oriented so its larger tail is positive; a one-sided, usage-like activity);
``joint OLS on relu usages``: cNMF's spectra-style regression of the z-scored genes on all those usages at once.

    python bench/probes/nonneg_readout.py groups overlap bulk_like sizes   # ~10 min here, 1 thread

Result (2026-12-07, Intel Xeon, mean of seeds 0-1, F1 of the ±2.5 SD signatures): groups default 0.848, relu corr
0.881, joint 0.750; overlap 0.792 / 0.781 / 0.772; bulk_like 0.979 / 0.983 / 0.976; sizes 0.582 / 0.577 / 0.516.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: readable.py and _common.py

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import readable as R  # noqa: E402
from scipy.stats import skew  # noqa: E402

import genodae  # noqa: E402
from genodae import signatures as S  # noqa: E402

rows = []
for gen in sys.argv[1:] or ["groups", "overlap", "bulk_like", "sizes"]:
    adata = R.make(gen)
    modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
    prep = genodae.pp.prepare(adata, copy=True)
    X, genes = S.model_input(prep)
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)
    Xz = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    for seed in range(2):
        a = prep.copy()
        genodae.tl.dae(a, seed=seed, n_latent=32, num_threads=1)
        genodae.tl.rotate(a, method="sparse")
        used = S.genes_used(a, "dae")
        W0 = pd.DataFrame(a.varm["dae_sparse_weights"][used], index=a.var_names[used])
        A = np.asarray(a.obsm["X_dae_sparse"], dtype=np.float64)
        A = A * np.where(skew(A, axis=0) < 0, -1, 1)
        U = np.maximum(A - np.median(A, axis=0), 0)
        Uz = (U - U.mean(0)) / np.where(U.std(0) > 0, U.std(0), 1)
        Wr = pd.DataFrame(S._corr_cols(X, U), index=genes)
        coef, *_ = np.linalg.lstsq(Uz, Xz, rcond=None)
        Wj = pd.DataFrame(coef.T, index=genes)
        for name, W in (("default (sparse corr)", W0), ("relu corr", Wr), ("joint OLS on relu usages", Wj)):
            sc = R.score(W.reindex(W0.index) if name != "default (sparse corr)" else W, modules)
            rows.append({"gen": gen, "seed": seed, "readout": name, "auroc": sc["auroc"], "f1": sc["f1"],
                         "precision": sc["precision"], "recall": sc["recall"]})
            print(rows[-1], flush=True)
print(pd.DataFrame(rows).groupby(["gen", "readout"], sort=False)[["auroc", "precision", "recall", "f1"]].mean().round(3).to_string())
