"""Shared pytest fixtures: the shared real-data folder and a small synthetic counts AnnData."""

from __future__ import annotations

import os
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real datasets (``$GENODAE_SHARED_DATA`` or ``<repo>/../shared/data``); skip if absent."""
    path = Path(os.environ.get("GENODAE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}; set GENODAE_SHARED_DATA")
    return path


def make_counts(
    n_cells: int = 300, n_genes: int = 200, n_groups: int = 3, module_size: int = 20, seed: int = 0
) -> anndata.AnnData:
    """Negative-binomial counts with ``n_groups`` planted cell groups, each driving its own gene module.

    Cells of group ``k`` express the genes of module ``k`` (``var["module"] == "m{k}"``) about six
    times more than other cells; the remaining genes (``"none"``) carry no group signal. Library
    sizes vary between cells. ``X`` is CSR float32 holding integers; ``obs["group"]`` is categorical.
    """
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, size=n_cells)
    base = rng.lognormal(mean=-1.0, sigma=1.2, size=n_genes)  # per-gene mean: mostly low, as in scRNA-seq
    module = np.full(n_genes, "none", dtype=object)
    for k in range(n_groups):
        module[k * module_size : (k + 1) * module_size] = f"m{k}"
    fold = np.ones((n_cells, n_genes))
    for k in range(n_groups):
        fold[np.ix_(group == k, module == f"m{k}")] = 6.0
    size_factor = rng.lognormal(mean=0.0, sigma=0.3, size=(n_cells, 1))
    mu = base * fold * size_factor
    dispersion = 2.0  # NB with variance mu + mu^2 / 2
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mu))
    obs = pd.DataFrame(
        {"group": pd.Categorical([f"g{k}" for k in group], categories=[f"g{k}" for k in range(n_groups)])},
        index=[f"cell{i:04d}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"module": pd.Categorical(module)}, index=[f"GENE{j:04d}" for j in range(n_genes)])
    return anndata.AnnData(sparse.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)


@pytest.fixture(scope="session")
def _counts_adata_session() -> anndata.AnnData:
    return make_counts()


@pytest.fixture
def counts_adata(_counts_adata_session: anndata.AnnData) -> anndata.AnnData:
    """A fresh copy of the synthetic counts (300 cells × 200 genes, 3 planted groups) for each test."""
    return _counts_adata_session.copy()
