"""Scanpy-style tools: ``genodae.tl.dae`` trains a model and writes its results into the AnnData."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anndata import AnnData

from . import _keys
from .config import ROTATIONS
from .errors import UserError
from .model import DAE

log = logging.getLogger("genodae")


def dae(
    adata: AnnData,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
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
    denoised_scale: str = "auto",
    transform_batch: str | None = None,
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
    batch_key
        obs column of batches: the decoder sees each cell's batch, so the embedding need not encode it and
        ``varm["dae_decoder_weights"]`` are the batch-free part of the decoder (further covariates:
        ``categorical_covariate_keys``, ``continuous_covariate_keys``; ``encode_covariates=True`` conditions
        the encoder too). Prepare with the same ``batch_key`` (batch-aware gene selection).
    preset
        Named starting point for the settings (``genodae.config.PRESETS``: ``default``, ``adage``, ``signatures``).
    n_latent, hidden, corruption, epochs, batch_size, lr, seed, device
        The most used :class:`genodae.DAEConfig` settings.
    denoised
        Also add ``layers["dae_denoised"]`` (dense: cells × genes).
    denoised_scale
        Scale of that layer: ``auto`` (``normalized`` for count likelihoods, ``input`` otherwise),
        ``normalized``, ``counts``, ``log1p`` or ``input`` (see :meth:`genodae.DAE.denoise`).
    transform_batch
        Denoise every cell as if it came from this batch (needs ``batch_key`` and ``denoised``).
    model_dir
        Also save the trained model there, for :meth:`genodae.DAE.load` / ``genodae embed``.
    key_added
        Prefix of every key written (default ``"dae"``).
    copy
        Work on a copy and return it.

    Returns
    -------
    The annotated copy when ``copy=True``, else ``None``. Adds ``obsm["X_dae"]`` (cells × n_latent),
    ``varm["dae_weights"]`` (genes × n_latent, zero rows for genes not used; by default each gene's correlation
    with each node of ``X_dae``, :meth:`genodae.DAE.gene_weights`), ``varm["dae_decoder_weights"]`` (the decoder's
    weights in the same basis: log-scale loadings with a count likelihood), ``var["dae_recon_r2"]`` (per-gene score on validation cells: R² of the scaled input, or the
    fraction of Poisson deviance explained with a count likelihood), ``obs["dae_recon_error"]`` (per-cell mean
    negative log-likelihood under the model's likelihood) and ``uns["dae"]`` (settings, the resolved
    ``gene_likelihood``, preparation, loss history, genes used, version).

    Raises
    ------
    UserError
        Unprepared or unsuitable data or settings (e.g. a count likelihood on log-scale data), in one line.

    Notes
    -----
    ``gene_likelihood="auto"`` (default) reconstructs the raw counts of ``layers["counts"]`` with a Poisson
    likelihood whose mean is the cell's library size × a softmax over genes (the count model of DCA and scVI,
    whose negative binomial and zero-inflated variants are ``nb``/``zinb``; with the linear decoder as LDVAE,
    Svensson et al. 2020), and the scaled input itself by squared error for log-scale data.

    Examples
    --------
    >>> import scanpy as sc, genodae
    >>> genodae.pp.prepare(adata)
    >>> genodae.tl.dae(adata, n_latent=32, epochs=100)
    >>> sc.pp.neighbors(adata, use_rep="X_dae")
    """
    adata = adata.copy() if copy else adata
    explicit = dict(n_latent=n_latent, hidden=hidden, corruption=corruption, epochs=epochs,
                    batch_size=batch_size, lr=lr, seed=seed, device=device, batch_key=batch_key)
    model = DAE(preset=preset, **explicit, **settings)
    if transform_batch is not None and not denoised:
        raise UserError("transform_batch changes only the denoised layer: add denoised=True")
    model.fit(adata, layer=layer)
    model.annotate(adata, key_added=key_added or _keys.DEFAULT, denoised=denoised, denoised_scale=denoised_scale,
                   transform_batch=transform_batch, r2_rows=model.val_idx)
    if model_dir is not None:
        model.save(model_dir)
    return adata if copy else None


# --- signatures (issue 5): thin re-exports, scanpy style -------------------------------------------------

from .signatures import ensemble, rotate, signatures  # noqa: E402


def score(adata: AnnData, *, model: str | Path | DAE, key_added: str | None = None, rotation: str = _keys.DEFAULT_ROTATION,
          transform=None, allow_missing_genes: bool = False, key: str | None = None):
    """Project new samples onto a saved model and return their node (signature) activities.

    Embeds ``adata`` (raw or prepared) with the model (``genodae.DAE.load(model).annotate``, which re-applies
    the model's own preparation) into ``obsm[f"X_{key_added}"]``. With ``rotation="sparse"`` (or ``"varimax"``) the
    activities are then put in the basis of the signatures: pass ``transform`` = ``uns["dae_sparse"]`` of the AnnData the
    signatures were read from (its ``mean``/``whitening``/``rotation``; needed for the default correlation
    read-out); without it the rotation is recomputed from the model's weights (the ``weights`` read-out,
    which depends on the model only). Adds ``obsm[f"X_{key_added}_{rotation}"]`` then.

    Parameters
    ----------
    adata
        New samples, raw or prepared; genes aligned to the model by name.
    model
        A saved model folder or a :class:`genodae.DAE`.
    key_added
        Prefix of the keys written (default ``"dae"``).
    rotation
        ``sparse`` (default), ``varimax`` or ``none`` (the model's own nodes).
    transform
        ``uns[f"{key}_{rotation}"]`` of the signatures' AnnData (a mapping with mean, whitening, rotation).
    allow_missing_genes
        Fill model genes absent from ``adata`` (their input becomes 0).
    key
        Deprecated name of ``key_added`` (a ``FutureWarning``).

    Returns
    -------
    Samples × nodes activities (``vnode0`` … with a rotation). With ``transform`` they are the nodes of the
    signatures table it came from; without it, the nodes of the ``weights`` read-out, which carry the same
    labels but are **not** the signatures' nodes (read from the correlations): match them by weights, or pass
    the transform.

    Examples
    --------
    >>> new = genodae.read("new_cohort.csv")
    >>> act = genodae.tl.score(new, model="results/luad/model", transform=train.uns["dae_sparse"])
    """
    import numpy as np

    from .get import activities, model_fingerprint, network_fingerprint
    from .kernels import apply_transform

    key = _keys.resolve_key_added(key_added, key, where="genodae.tl.score")
    if rotation not in ROTATIONS:
        raise UserError(f"rotation must be one of {', '.join(ROTATIONS)}, not {rotation!r}")
    method = transform.get("method") if transform is not None and rotation != "none" else None
    if method is not None and str(method) != rotation:
        raise UserError(f"the transform is of the {method} rotation; pass rotation={str(method)!r} (--rotation "
                        f"{method}), or the transform of the {rotation} rotation")
    if transform is not None and rotation == "none":
        raise UserError("a transform puts the activities in a rotated basis, and rotation='none' keeps the model's "
                        "own nodes: pass rotation=the transform's method, or no transform")
    if transform is not None:
        missing = [n for n in ("mean", "whitening", "rotation") if n not in transform]
        if missing:
            raise UserError(f"the transform has no {', '.join(missing)}: pass uns['<key>_<rotation>'] of the AnnData the "
                            "signatures were read from (or the file of 'genodae signatures --transform')")
    m = model if isinstance(model, DAE) else DAE.load(model)
    made_from = transform.get("source_fingerprint") if transform is not None else None
    record = m.params_record()
    if made_from is not None and str(made_from) != model_fingerprint(record):
        if str(made_from) != network_fingerprint(record):
            raise UserError("the transform was made from another model's nodes (its weights differ from this model's, "
                            "or the same network reports its nodes in another basis, DAEConfig.rotation): pass the "
                            "transform of the signatures read from this model")
        log.warning("the transform was made from this network by a genodae that did not record the basis the model "
                    "reports its nodes in (%s here): it applies only if the signatures were read from this model as "
                    "saved", record["params"].get("rotation"))
    m.annotate(adata, key_added=key, allow_missing_genes=allow_missing_genes)
    if rotation == "none":
        return activities(adata, key)
    out = _keys.rotated_key(key, rotation)
    if transform is None:
        rotate(adata, key=key, method=rotation, readout="weights", key_added=out)
    else:
        Z = apply_transform(adata.obsm[_keys.embedding_key(key)], transform).astype(np.float32)
        adata.obsm[_keys.embedding_key(out)] = Z
        adata.uns[_keys.params_key(out)] = {
            **{n: transform[n] for n in ("mean", "whitening", "rotation", "method", "source_fingerprint")
               if n in transform},
            "node_names": np.asarray(_keys.node_names(Z.shape[1], _keys.ROTATED_NODE)), "source_key": key}
    return activities(adata, out)


def enrich(
    adata: AnnData,
    *,
    gene_sets,
    key: str = _keys.DEFAULT_ROTATED,
    id_map=None,
    sd_cutoff: float | None = None,
    min_size: int = 5,
    max_size: int = 1000,
    correction: str = "node",
    key_added: str | None = None,
):
    """Gene-set over-representation of every signature of a model, against the genes the model used.

    Uses ``uns[f"{key}_signatures"]`` (from :func:`genodae.tl.signatures`; the default key is its sparse
    read-out), or reads the high-weight genes of ``varm[f"{key}_weights"]`` at ``sd_cutoff`` when that table is
    absent or ``sd_cutoff`` is given.
    See :func:`genodae.enrich.enrich` for the test (gseapy's hypergeometric test, BH per node).

    Parameters
    ----------
    adata
        Annotated by :func:`genodae.tl.signatures` (or any model key).
    gene_sets
        Dict ``term → list of genes``, a GMT or JSON (``{term: [genes]}``) path, or a list of such paths
        (:func:`genodae.enrich.read_gene_sets`).
    key
        Prefix of the weights/signatures to test.
    id_map
        Maps the model's gene identifiers to those of the gene sets (:func:`genodae.enrich.read_id_map`).
    sd_cutoff
        High-weight genes beyond mean ± ``sd_cutoff`` SD of each node's weights, read from the weights (default
        ``None``: the stored signatures table, or 2.5 when none is stored).
    min_size, max_size
        Admissible gene-set sizes within the background.
    correction
        ``node`` (BH over both tails of a node), ``signature`` or ``all``.
    key_added
        ``uns`` key of the table (default ``f"{key}_enrichment"``).

    Returns
    -------
    The enrichment table (one row per signature × gene set with an overlap), also in ``uns``.

    Examples
    --------
    >>> genodae.tl.signatures(adata)
    >>> genodae.tl.enrich(adata, gene_sets="h.all.v7.0.symbols.gmt").query("fdr < 0.05")
    """
    from . import enrich as _enrich
    from .get import gene_weights, genes_used
    from .kernels import high_weight_genes
    from .signatures import with_near_copies

    if _keys.weights_key(key) not in adata.varm:
        source = _keys.rotated_source(key)
        hint = (f"run genodae.tl.signatures(adata, key={source[0]!r}, rotation={source[1]!r}) first (it stores "
                f"{key!r}), or pass key={source[0]!r} (the model's own nodes)"
                if source and _keys.weights_key(source[0]) in adata.varm else "pass the key of a model of this AnnData")
        raise UserError(f"no gene weights {key!r} (varm[{_keys.weights_key(key)!r}]): {hint}; models: "
                        f"{', '.join(_keys.weights_keys(adata.varm)) or 'none'}")
    used = genes_used(adata, key)
    table = adata.uns.get(_keys.signatures_key(key)) if sd_cutoff is None else None
    if table is None:
        table = with_near_copies(high_weight_genes(gene_weights(adata, key), sd_cutoff=2.5 if sd_cutoff is None
                                                   else sd_cutoff), adata, key)
    res = _enrich.enrich(table, gene_sets, background=adata.var_names[used], id_map=id_map, min_size=min_size,
                         max_size=max_size, correction=correction)
    adata.uns[key_added or _keys.enrichment_key(key)] = res
    if key_added and key_added != _keys.enrichment_key(key):
        _keys.record_table(adata.uns, key_added, key)
    return res


__all__ = ["dae", "enrich", "ensemble", "rotate", "score", "signatures"]
