"""Accessors of a model's results in an AnnData, as labelled tables (scanpy's ``sc.get`` is the model).

Each takes ``adata`` and the prefix ``key`` of the model's keys (:mod:`genodae._keys`) and only reads: gene
weights (``varm``), node activities (``obsm``), the settings (``uns``), the genes used and the node labels. A
leaf of the package: it imports no tool, plot or model module, so tools and plots can all build on it.

Examples
--------
>>> genodae.get.gene_weights(adata, "dae_sparse").nlargest(10, "vnode0")
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


def model_fingerprint(record: Mapping | None) -> str | None:
    """A short hash that names one trained model as it reports its nodes: of its record (``uns[key]``, or
    ``DAE.params_record()``), the genes it used, its loss history (no two trainings share one) and the basis its
    nodes are reported in (``params["rotation"]``: the same network with ``rotation="sparse"`` reports other nodes
    than with the default ``"varimax"``). None for weights without such a record (an ensemble's consensus, weights
    written by hand). Read-outs record the fingerprint of the model they were made from, so that a transform cannot
    be applied to another model (or to the same network reported in another basis) and a retrained key drops the
    old read-outs."""
    h = _network_hash(record)
    if h is None:
        return None
    params = record.get("params")
    basis = params.get("rotation") if isinstance(params, Mapping) else None
    h.update(f"\trotation={basis}".encode())
    return h.hexdigest()[:16]


def network_fingerprint(record: Mapping | None) -> str | None:
    """The fingerprint of the trained network alone (genes used and loss history), whatever basis it reports its
    nodes in: what :func:`model_fingerprint` was before it included the basis (2026-12-07), so read-outs saved
    before can still be matched to their network."""
    h = _network_hash(record)
    return None if h is None else h.hexdigest()[:16]


def _network_hash(record):
    import hashlib

    if not isinstance(record, Mapping) or "genes_used" not in record or not isinstance(record.get("history"), Mapping):
        return None
    h = hashlib.sha1("\t".join(map(str, np.asarray(record["genes_used"]))).encode())
    for name in ("train_loss", "val_loss"):
        h.update(np.ascontiguousarray(np.asarray(record["history"].get(name, []), dtype=np.float64)).tobytes())
    return h


def params(adata: AnnData, key: str = _keys.DEFAULT) -> dict:
    """The settings the model ``key`` was trained with (``uns[key]["params"]``), as plain Python values (lists,
    numbers, strings), so that ``genodae.DAEConfig(**params(adata))`` rebuilds them.

    Empty when ``key`` names gene weights without recorded settings (an ensemble's consensus, weights written
    by hand). Raises :class:`~genodae.UserError` when ``key`` is not a genodae model of ``adata`` (a misspelt
    key, or another tool's ``uns`` entry such as scanpy's ``pca``), naming the models it has.
    """
    rec = adata.uns.get(_keys.params_key(key))
    if isinstance(rec, Mapping) and "params" in rec and "genes_used" in rec:  # what DAE.annotate records
        return {k: _plain(v) for k, v in rec["params"].items()}
    models = [k for k in _keys.weights_keys(adata.varm) if not k.endswith("_decoder")]
    if key in models:
        return {}
    raise UserError(f"{key!r} is not a genodae model in this AnnData (no settings in uns[{key!r}] and no "
                    f"varm[{_keys.weights_key(key)!r}]); pass one of its models: {', '.join(models) or 'none'}")


def _plain(value):
    """h5ad stores lists as arrays and numbers as numpy scalars; give them back as Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


__all__ = ["activities", "gene_weights", "genes_used", "node_labels", "params"]
