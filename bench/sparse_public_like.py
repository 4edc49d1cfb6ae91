"""A public-like, very sparse count set for `genodae prepare` (issue 13): 4,186 cells × 13,488 genes, 9,000 genes seen in
one or two cells, the rest negative-binomial counts with library sizes varying about 8-fold — the shape of the public
set on which seurat_v3's loess failed ("reciprocal condition number").

    python bench/sparse_public_like.py OUT.h5ad      # then: genodae prepare OUT.h5ad -o prepared.h5ad
"""
import sys

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

rng = np.random.default_rng(1)
n, g, rare = 4186, 13488, 9000
lib = rng.lognormal(0, 0.8, n)
mean = rng.lognormal(-3, 1.5, g - rare)
rows, cols, vals = [], [], []
for j in range(g - rare):
    y = rng.negative_binomial(0.5, 0.5 / (0.5 + mean[j] * lib))
    nz = np.flatnonzero(y)
    rows.append(nz)
    cols.append(np.full(nz.size, j))
    vals.append(y[nz])
for j in range(g - rare, g):
    k = int(rng.integers(1, 3))
    rows.append(rng.choice(n, k, replace=False))
    cols.append(np.full(k, j))
    vals.append(rng.integers(1, 3, k))
X = sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=(n, g))
a = ad.AnnData(X, obs=pd.DataFrame(index=[f"cell{i}" for i in range(n)]), var=pd.DataFrame(index=[f"GENE{j}" for j in range(g)]))
a.write_h5ad(sys.argv[1])
print(a, f"density {X.nnz / (n * g):.4f}")
