"""Plots (matplotlib, imported lazily; Agg when there is no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData

from .errors import UserError


def _plt():
    import matplotlib

    if not matplotlib.get_backend().lower().startswith(("qt", "tk", "macosx", "nbagg", "module://")):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _history(adata: AnnData, key: str) -> dict:
    if key not in adata.uns or "history" not in adata.uns[key]:
        raise UserError(f"uns[{key!r}] has no loss history; run genodae.tl.dae (or genodae embed) first")
    return adata.uns[key]["history"]


def loss(adata: AnnData, *, key: str = "dae", save: str | Path | None = None, ax=None):
    """Training and validation loss per epoch, the best epoch marked."""
    h = _history(adata, key)
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    tr, va = np.asarray(h["train_loss"]), np.asarray(h["val_loss"])
    ep = np.arange(1, len(tr) + 1)
    ax.plot(ep, tr, label="train (corrupted input)")
    ax.plot(ep, va, label="validation")
    if int(h.get("best_epoch", -1)) >= 0:
        ax.axvline(int(h["best_epoch"]) + 1, color="grey", ls=":", label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction loss")
    ax.set_title(f"{key}: loss")
    ax.legend(frameon=False)
    if save is not None and fig is not None:
        fig.tight_layout()
        fig.savefig(save, dpi=120)
        plt.close(fig)
    return ax


def umap(adata: AnnData, *, key: str = "dae", color: list[str] | None = None, save: str | Path | None = None,
         seed: int = 0):
    """UMAP of ``obsm["X_<key>"]`` coloured by ``obs`` columns (computed on a copy; ``adata`` is unchanged)."""
    import scanpy as sc

    rep = f"X_{key}"
    if rep not in adata.obsm:
        raise UserError(f"obsm[{rep!r}] not found; run genodae.tl.dae first (or pass the right key)")
    color = list(color or [])
    absent = [c for c in color if c not in adata.obs and c not in adata.var_names]
    if absent:
        raise UserError(f"label column(s) {', '.join(absent)} not in obs; available: {', '.join(adata.obs.columns)}")
    tmp = AnnData(obs=adata.obs.copy(), obsm={rep: adata.obsm[rep]})
    sc.pp.neighbors(tmp, use_rep=rep, n_neighbors=min(15, max(adata.n_obs - 1, 2)), random_state=seed)
    sc.tl.umap(tmp, random_state=seed)
    plt = _plt()
    fig = sc.pl.umap(tmp, color=color or None, return_fig=True, show=False, title=color or f"{key} UMAP")
    if save is not None:
        fig.savefig(save, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return fig
