"""Accessors of a model's results in an AnnData, as labelled tables (scanpy's ``sc.get`` is the model).

Each takes ``adata`` and the prefix ``key`` of the model's keys (:mod:`genodae._keys`) and only reads: gene
weights (``varm``), node activities (``obsm``), the settings (``uns``), the genes used and the node labels. A
leaf of the package: it imports no tool, plot or model module, so tools and plots can all build on it.

Examples
--------
>>> genodae.get.gene_weights(adata, "dae_varimax").nlargest(10, "vnode0")
>>> genodae.get.activities(adata).groupby(adata.obs["celltype"]).mean()
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _keys
from .errors import UserError


def genes_used(adata: AnnData, key: str = _keys.DEFAULT) -> np.ndarray:
    """Boolean mask over ``var_names`` of the genes the model ``key`` used."""
    wkey = _keys.weights_key(key)
    if wkey not in adata.varm:
        raise UserError(f"varm[{wkey!r}] not found; run genodae.tl.dae (or genodae embed) first, or pass the "
                        f"right key (available: {', '.join(_keys.weights_keys(adata.varm)) or 'none'})")
    rec = adata.uns.get(_keys.params_key(key))
    if rec is not None and "genes_used" in rec:
        return adata.var_names.isin(list(map(str, rec["genes_used"])))
    return np.asarray((adata.varm[wkey] != 0).any(axis=1)).ravel()


def gene_weights(adata: AnnData, key: str = _keys.DEFAULT) -> pd.DataFrame:
    """Genes used × nodes weight table (labelled), from ``varm[f"{key}_weights"]``."""
    used = genes_used(adata, key)
    W = np.asarray(adata.varm[_keys.weights_key(key)], dtype=np.float64)[used]
    return pd.DataFrame(W, index=adata.var_names[used], columns=node_labels(adata, key, W.shape[1]))


def activities(adata: AnnData, key: str = _keys.DEFAULT) -> pd.DataFrame:
    """Cells × nodes activity table from ``obsm[f"X_{key}"]``."""
    rep = _keys.embedding_key(key)
    if rep not in adata.obsm:
        raise UserError(f"obsm[{rep!r}] not found; run genodae.tl.dae / tl.signatures / tl.ensemble first or pass "
                        f"the right key (available: {', '.join(_keys.embedding_keys(adata.obsm)) or 'none'})")
    Z = np.asarray(adata.obsm[rep], dtype=np.float64)
    return pd.DataFrame(Z, index=adata.obs_names, columns=node_labels(adata, key, Z.shape[1]))


def node_labels(adata: AnnData | None, key: str, n: int) -> list[str]:
    """Labels of the ``n`` nodes of ``key``: ``uns[key]["node_names"]`` when stored, else ``node0`` …"""
    return _keys.node_labels(adata, key, n)


def params(adata: AnnData, key: str = _keys.DEFAULT) -> dict:
    """The settings the model ``key`` was trained with (``uns[key]["params"]``).

    Empty when ``key`` names gene weights without recorded settings (an ensemble's consensus, weights written
    by hand). Raises :class:`~genodae.UserError` when ``adata`` has neither a record nor weights for ``key``
    (a misspelt key), naming the keys it has.
    """
    rec = adata.uns.get(_keys.params_key(key))
    if isinstance(rec, Mapping):
        return dict(rec.get("params", {}))
    if _keys.weights_key(key) in adata.varm:
        return {}
    raise UserError(f"no model {key!r} in this AnnData (no uns[{key!r}] and no varm[{_keys.weights_key(key)!r}]); "
                    f"pass the right key (models with weights: {', '.join(_keys.weights_keys(adata.varm)) or 'none'})")


__all__ = ["activities", "gene_weights", "genes_used", "node_labels", "params"]
