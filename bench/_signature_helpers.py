"""Benchmark-only helpers of the signature benchmarks (bench/signatures.py, bench/readable.py).

Moved out of the library (``genodae.signatures.factor_loadings``) in issue 15: only benchmarks used them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from genodae.errors import UserError


def factor_loadings(X: np.ndarray, genes: Sequence[str], method: str, n_components: int, *,
                    seed: int = 0, subsample: float | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Gene loadings (genes × components) and cell scores of PCA, ICA (FastICA) or NMF, as baselines.

    PCA is deterministic; to measure its stability across "seeds", pass ``subsample`` (fraction of cells
    drawn without replacement with ``seed``), which is applied to every method alike.
    """
    from sklearn.decomposition import NMF, PCA, FastICA

    rows = np.arange(X.shape[0])
    if subsample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, int(round(subsample * len(rows))), replace=False))
    Xs = X[rows]
    if method == "pca":
        m = PCA(n_components, random_state=seed).fit(Xs)
        L, S = m.components_.T, m.transform(X)
    elif method == "ica":
        m = FastICA(n_components, random_state=seed, whiten="unit-variance", max_iter=1000, tol=1e-3).fit(Xs)
        L, S = m.mixing_, m.transform(X)
    elif method == "nmf":
        m = NMF(n_components, init="nndsvda", random_state=seed, max_iter=500).fit(np.clip(Xs, 0, None))
        L, S = m.components_.T, m.transform(np.clip(X, 0, None))
    else:
        raise UserError(f"method must be pca, ica or nmf, not {method!r}")
    return pd.DataFrame(L, index=pd.Index(genes), columns=[f"{method}{j}" for j in range(L.shape[1])]), S
