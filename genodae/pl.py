"""Plots (matplotlib, imported lazily; Agg when there is no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData

from . import _keys
from .errors import UserError
from .get import activities, gene_weights


def _plt():
    import matplotlib

    if not matplotlib.get_backend().lower().startswith(("qt", "tk", "macosx", "nbagg", "module://")):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _history(adata: AnnData, key: str) -> dict:
    rec = adata.uns.get(_keys.params_key(key))
    if rec is None or "history" not in rec:
        raise UserError(f"uns[{_keys.params_key(key)!r}] has no loss history; run genodae.tl.dae (or genodae embed) "
                        "first")
    return rec["history"]


def loss(adata: AnnData, *, key: str = _keys.DEFAULT, save: str | Path | None = None, ax=None):
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


def _check_labels(adata: AnnData, color: list[str], *, added: tuple[str, ...] = ()) -> None:
    """Fail before any work when a colour is neither an obs column nor a gene (``added``: columns still to come)."""
    absent = [c for c in color if c not in adata.obs and c not in adata.var_names and c not in added]
    if absent:
        raise UserError(f"label column(s) {', '.join(absent)} not in obs; available: {', '.join(adata.obs.columns)}")


def umap(adata: AnnData, *, key: str = _keys.DEFAULT, color: list[str] | None = None, save: str | Path | None = None,
         seed: int = 0):
    """UMAP of ``obsm["X_<key>"]`` coloured by ``obs`` columns (computed on a copy; ``adata`` is unchanged)."""
    import scanpy as sc

    rep = _keys.embedding_key(key)
    if rep not in adata.obsm:
        raise UserError(f"obsm[{rep!r}] not found; run genodae.tl.dae first (or pass the right key)")
    color = list(color or [])
    _check_labels(adata, color)
    tmp = AnnData(obs=adata.obs.copy(), obsm={rep: adata.obsm[rep]})
    sc.pp.neighbors(tmp, use_rep=rep, n_neighbors=min(15, max(adata.n_obs - 1, 2)), random_state=seed)
    sc.tl.umap(tmp, random_state=seed)
    plt = _plt()
    fig = sc.pl.umap(tmp, color=color or None, return_fig=True, show=False, title=color or f"{key} UMAP")
    if save is not None:
        fig.savefig(save, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return fig


# --- signatures (issue 5): gene weights, enrichment, node activity, survival, sweeps ----------------------


def _save(fig, save, plt) -> None:
    if save is not None:
        fig.tight_layout()
        fig.savefig(save, dpi=120, bbox_inches="tight")
        plt.close(fig)


def signature_heatmap(adata: AnnData, *, table=None, key: str = _keys.DEFAULT_ROTATED, n_genes: int = 5,
                      nodes: list[str] | None = None, save: str | Path | None = None):
    """Heatmap of the top ``n_genes`` positive and negative genes of each node (weights z-scored per node).

    ``table`` is a :func:`genodae.tl.signatures` table (default: ``uns[f"{key}_signatures"]``); the colour
    is each gene's weight z-score in every node shown, so shared genes and mixed nodes stand out.
    """
    if table is None:
        tkey = _keys.signatures_key(key)
        if tkey not in adata.uns:
            raise UserError(f"uns[{tkey!r}] not found; run genodae.tl.signatures first or pass the table")
        table = adata.uns[tkey]
    W = gene_weights(adata, key)
    Z = (W - W.mean()) / W.std(ddof=0).replace(0, 1)
    nodes = list(nodes) if nodes is not None else [n for n in W.columns if n in set(map(str, table["node"]))]
    if not nodes:
        raise UserError("no nodes to show: the signatures table is empty")
    genes: list[str] = []
    t = table[table["node"].astype(str).isin(nodes)]
    for node in nodes:
        for d in ("pos", "neg"):
            sel = t[(t["node"].astype(str) == node) & (t["direction"].astype(str) == d)].sort_values("rank")
            genes += [g for g in sel["gene"].head(n_genes) if g not in genes]
    if not genes:
        raise UserError("no high-weight genes to show; lower sd_cutoff or use min_genes")
    M = Z.loc[genes, nodes].to_numpy()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.45 * len(nodes) + 2.5, 0.16 * len(genes) + 1.5))
    lim = float(np.nanmax(np.abs(M))) or 1.0
    im = ax.imshow(M, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_xticks(range(len(nodes)), nodes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(genes)), genes, fontsize=6)
    fig.colorbar(im, ax=ax, label="weight z-score", shrink=0.6)
    ax.set_title(f"{key}: top {n_genes} genes per node tail", fontsize=9)
    _save(fig, save, plt)
    return fig


def enrichment_dotplot(adata: AnnData, *, key: str = _keys.DEFAULT_ROTATED, table=None, fdr: float = 0.05,
                       n_terms: int = 20, save: str | Path | None = None, ax=None):
    """Dot plot of enriched gene sets (rows) per signature (columns): size = overlap, colour = −log10 FDR.

    ``table``: a :func:`genodae.tl.enrich` table (default: ``uns[f"{key}_enrichment"]``).
    """
    if table is None:
        tkey = _keys.enrichment_key(key)
        if tkey not in adata.uns:
            raise UserError(f"uns[{tkey!r}] not found; run genodae.tl.enrich first or pass the table")
        table = adata.uns[tkey]
    df = table[table["fdr"] < fdr]
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    if df.empty:
        ax.text(0.5, 0.5, f"no gene set with FDR < {fdr}", ha="center", va="center")
        ax.set_axis_off()
        if fig is not None:
            _save(fig, save, plt)
        return ax
    terms = df.groupby("term")["fdr"].min().sort_values().index[:n_terms].tolist()
    df = df[df["term"].isin(terms)]
    sigs = sorted(df["signature"].unique(), key=lambda s: (len(s), s))
    x = df["signature"].map({s: i for i, s in enumerate(sigs)})
    y = df["term"].map({t: i for i, t in enumerate(terms)})
    if fig is not None:
        fig.set_size_inches(0.45 * len(sigs) + 5, 0.28 * len(terms) + 1.5)
    sc_ = ax.scatter(x, y, s=12 + 8 * df["overlap"], c=-np.log10(df["fdr"].clip(lower=1e-300)), cmap="viridis")
    ax.set_xticks(range(len(sigs)), sigs, rotation=90, fontsize=7)
    ax.set_yticks(range(len(terms)), [t.replace("HALLMARK_", "")[:50] for t in terms], fontsize=7)
    ax.set_xlim(-0.7, len(sigs) - 0.3)
    ax.set_ylim(len(terms) - 0.5, -0.5)
    ax.figure.colorbar(sc_, ax=ax, label="-log10 FDR", shrink=0.6)
    ax.set_title("gene-set enrichment of signatures (size = overlap)", fontsize=9)
    if fig is not None:
        _save(fig, save, plt)
    return ax


def node_activity(adata: AnnData, *, key: str = _keys.DEFAULT_ROTATED, nodes: list[str] | None = None,
                  basis: str | None = None, groupby: str | None = None, save: str | Path | None = None,
                  seed: int = 0):
    """Cells on a 2-D embedding coloured by node activity (one panel per node), plus activity by group.

    ``basis``: an ``obsm`` key with ≥ 2 columns (e.g. ``X_umap``); by default a UMAP of ``X_{key}`` is
    computed on a copy. With ``groupby``, a last panel shows each node's activity per group (box plot).
    """
    A = activities(adata, key)
    nodes = list(nodes) if nodes is not None else list(A.columns[:4])
    absent = [n for n in nodes if n not in A.columns]
    if absent:
        raise UserError(f"node(s) {', '.join(absent)} not in {key}")
    if groupby is not None and groupby not in adata.obs:
        raise UserError(f"label column {groupby!r} not in obs; available: {', '.join(adata.obs.columns)}")
    if basis is None:
        import scanpy as sc

        tmp = AnnData(obs=adata.obs[[]].copy(), obsm={"X_rep": A.to_numpy()})
        sc.pp.neighbors(tmp, use_rep="X_rep", n_neighbors=min(15, max(adata.n_obs - 1, 2)), random_state=seed)
        sc.tl.umap(tmp, random_state=seed)
        XY, bname = tmp.obsm["X_umap"], "UMAP"
    else:
        if basis not in adata.obsm:
            raise UserError(f"obsm[{basis!r}] not found")
        XY, bname = np.asarray(adata.obsm[basis])[:, :2], basis
    plt = _plt()
    n = len(nodes) + (groupby is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.2), squeeze=False)
    for ax, node in zip(axes[0], nodes, strict=False):
        v = A[node].to_numpy()
        lim = np.nanpercentile(np.abs(v - np.median(v)), 99) or 1.0
        s = ax.scatter(XY[:, 0], XY[:, 1], c=v, s=4, cmap="coolwarm", vmin=np.median(v) - lim,
                       vmax=np.median(v) + lim)
        ax.set_title(f"{node} activity", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{bname} 1", fontsize=7)
        fig.colorbar(s, ax=ax, shrink=0.7)
    if groupby is not None:
        ax = axes[0][-1]
        lab = adata.obs[groupby].astype(str).to_numpy()
        groups = sorted(set(lab))
        pos = 0
        ticks = []
        for node in nodes:
            data = [A[node].to_numpy()[lab == g] for g in groups]
            ax.boxplot(data, positions=[pos + i for i in range(len(groups))], widths=0.7, showfliers=False)
            ticks.append((pos + (len(groups) - 1) / 2, node))
            pos += len(groups) + 1
        ax.set_xticks([t for t, _ in ticks], [n for _, n in ticks], fontsize=7)
        ax.set_title(f"activity by {groupby}: {', '.join(groups)}", fontsize=8)
    _save(fig, save, plt)
    return fig


def km(adata: AnnData, *, node: str, duration: str, event: str, key: str = _keys.DEFAULT_ROTATED,
       event_value: str | None = None, quantile: float = 0.5, save: str | Path | None = None, ax=None):
    """Kaplan–Meier curves of samples with high vs low activity of ``node`` (split at ``quantile``), log-rank p."""
    from .assoc import km_split

    res = km_split(adata, key=key, node=node, duration=duration, event=event, event_value=event_value,
                   quantile=quantile)
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.8))
    for g, color in (("low", "tab:blue"), ("high", "tab:red")):
        res["fitters"][g].plot_survival_function(ax=ax, ci_show=True, color=color)
    ax.set_xlabel(duration)
    ax.set_ylabel("survival probability")
    ax.set_title(f"{key} {node}: high vs low (log-rank p = {res['logrank']['pvalue']:.2g})", fontsize=9)
    if fig is not None:
        _save(fig, save, plt)
    return ax


def plot_sweep(table, *, save=None):
    """Reconstruction, stability and enriched gene sets against ``n_latent`` (a sweep-summary table).

    ``table``: :func:`genodae.signatures.sweep_summary`'s. Not in ``__all__``: it plots a table, not an AnnData.
    """
    plt = _plt()
    cols = [c for c in ("recon_r2", "stability", "n_enriched_sets") if c in table and table[c].notna().any()]
    if not cols:
        raise UserError("the sweep table has no recon_r2, stability or n_enriched_sets values to plot")
    fig, axes = plt.subplots(1, len(cols), figsize=(3.4 * len(cols), 3.0), squeeze=False)
    titles = {"recon_r2": "validation R² (mean over genes)", "stability": "stability across seeds",
              "n_enriched_sets": "distinct enriched gene sets"}
    for ax, c in zip(axes[0], cols, strict=True):
        ax.plot(table["n_latent"], table[c], marker="o")
        if c == "stability" and "stability_sd" in table:
            ax.fill_between(table["n_latent"], table[c] - table["stability_sd"], table[c] + table["stability_sd"],
                            alpha=0.2)
        ax.set_xlabel("n_latent")
        ax.set_title(titles[c], fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xticks(table["n_latent"], [str(v) for v in table["n_latent"]])
    _save(fig, save, plt)
    return fig


# plot_sweep is left out: it takes a table, not an AnnData (scanpy's conventions for pl are tested on these)
__all__ = ["enrichment_dotplot", "km", "loss", "node_activity", "signature_heatmap", "umap"]
