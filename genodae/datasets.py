"""Built-in example data: needs nothing outside the installed packages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def pbmc68k_counts() -> AnnData:
    """Scanpy's ``pbmc68k_reduced`` (700 PBMCs × 765 genes, labels in ``obs["bulk_labels"]``) as raw counts.

    Its ``.raw`` holds log1p of counts normalised to 10,000 per cell, so the integer counts are recovered
    exactly as ``round(expm1(raw.X) * n_counts / 1e4)``.
    """
    import scanpy as sc

    ref = sc.datasets.pbmc68k_reduced()
    raw = ref.raw.X.toarray() if sp.issparse(ref.raw.X) else np.asarray(ref.raw.X)
    counts = np.rint(np.expm1(raw) * ref.obs["n_counts"].to_numpy()[:, None] / 1e4).astype(np.float32)
    obs = ref.obs[["bulk_labels", "louvain", "phase"]].copy()
    return AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=ref.raw.var_names.copy()))
