"""Scanpy-style tools: ``genodae.tl.dae`` trains a model and writes its results into the AnnData."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anndata import AnnData

from .model import DAE


def dae(
    adata: AnnData,
    *,
    layer: str | None = None,
    preset: str = "default",
    n_latent: int | None = None,
    hidden: Sequence[int] | None = None,
    corruption: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    denoised: bool = False,
    model_dir: str | Path | None = None,
    key_added: str | None = None,
    copy: bool = False,
    **settings: Any,
) -> AnnData | None:
    """Train a masking-noise denoising autoencoder and add its embedding and gene weights to ``adata``.

    Run :func:`genodae.pp.prepare` first. Settings left as ``None`` take the value of ``preset``
    (``"default"`` or ``"adage"``), and otherwise the default of :class:`genodae.DAEConfig`; any other
    ``DAEConfig`` field can be passed as a keyword (``dropout=0.1``, ``decoder="mlp"`` …).

    Parameters
    ----------
    adata
        Prepared cells × genes. ``adata.X`` is never overwritten.
    layer
        Train on this layer (log-scale values) instead of ``X``.
    preset
        Named starting point for the settings.
    n_latent, hidden, corruption, epochs, batch_size, lr, seed, device
        The most used :class:`genodae.DAEConfig` settings.
    denoised
        Also add ``layers["dae_denoised"]`` (dense: cells × genes).
    model_dir
        Also save the trained model there, for :meth:`genodae.DAE.load` / ``genodae embed``.
    key_added
        Prefix of every key written (default ``"dae"``).
    copy
        Work on a copy and return it.

    Returns
    -------
    The annotated copy when ``copy=True``, else ``None``. Adds ``obsm["X_dae"]`` (cells × n_latent),
    ``varm["dae_weights"]`` (genes × n_latent, zero rows for genes not used), ``var["dae_recon_r2"]``
    (per-gene R² on validation cells), ``obs["dae_recon_error"]`` (per-cell reconstruction MSE) and
    ``uns["dae"]`` (settings, preparation, loss history, genes used, version).

    Examples
    --------
    >>> import scanpy as sc, genodae
    >>> genodae.pp.prepare(adata)
    >>> genodae.tl.dae(adata, n_latent=32, epochs=100)
    >>> sc.pp.neighbors(adata, use_rep="X_dae")
    """
    adata = adata.copy() if copy else adata
    explicit = dict(n_latent=n_latent, hidden=hidden, corruption=corruption, epochs=epochs,
                    batch_size=batch_size, lr=lr, seed=seed, device=device)
    model = DAE(preset=preset, **explicit, **settings).fit(adata, layer=layer)
    model.annotate(adata, key=key_added or "dae", denoised=denoised, r2_rows=model.val_idx)
    if model_dir is not None:
        model.save(model_dir)
    return adata if copy else None
