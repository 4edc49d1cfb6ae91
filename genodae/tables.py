"""Results of an embedded AnnData as plain tables and files, for use outside AnnData: what ``genodae export``,
``signatures --transform``, ``ensemble --support`` and ``sweep-summary`` write, and the activity transform that
``genodae score --transform`` reads back.

Torch-free: the tables come from ``obsm``/``varm``/``var``/``uns`` of a file written by ``genodae embed``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _keys as K
from .errors import UserError
from .signatures import model_scaling, node_labels

TRANSFORM_FORMAT = "genodae-transform"


def export_tables(adata: AnnData, *, key: str = "dae", source: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The three tables of ``genodae export``: ``embedding`` (cells × nodes), ``weights`` (genes used × nodes)
    and ``genes`` (every gene: used, reconstruction R², the model's input scaling ``(x - offset) / scale``: the
    preparation's, or the model's own min-max scaling where it made one, recorded in ``uns[key]``).

    ``source`` names the file in the error when the model ``key`` is missing (default: "the data").
    """
    emb, wkey = K.embedding_key(key), K.weights_key(key)
    if emb not in adata.obsm or wkey not in adata.varm:
        raise UserError(f"{source or 'the data'} has no obsm[{emb!r}] / varm[{wkey!r}]; run genodae embed "
                        "first (or pass the right --key)")
    Z, W = adata.obsm[emb], adata.varm[wkey]
    nodes = node_labels(None, key, Z.shape[1])  # node0, node1, … as genodae.model.node_names
    used = adata.var_names.isin(list(adata.uns[key]["genes_used"])) if key in adata.uns else (W != 0).any(1)
    offset, scale = adata.var.get(K.OFFSET), adata.var.get(K.SCALE)
    own = model_scaling(adata, key)  # the model's own scaling (it may differ from the preparation's: a 0-1 model)
    if own is not None:
        pos, own_offset, own_scale = own
        offset, scale = np.full(adata.n_vars, np.nan), np.full(adata.n_vars, np.nan)
        offset[pos], scale[pos] = own_offset, own_scale
    return {
        "embedding": pd.DataFrame(Z, index=adata.obs_names.rename("cell"), columns=nodes),
        "weights": pd.DataFrame(W[used], index=adata.var_names[used].rename("gene"), columns=nodes),
        "genes": pd.DataFrame({
            "used": used,
            "recon_r2": adata.var.get(K.recon_r2_key(key)),
            "offset": offset,
            "scale": scale,
        }, index=adata.var_names.rename("gene")),
    }


def transform_record(adata: AnnData, key: str, *, source_key: str, readout: str) -> dict[str, Any]:
    """The activity transform of the rotated model ``key`` (made from ``source_key``) as a JSON-ready dict: mean,
    whitening, rotation, the rotation method and node names, for :func:`genodae.tl.score` on new samples."""
    info = adata.uns[key]
    return {"format": TRANSFORM_FORMAT, "source_key": source_key, "readout": readout,
            "method": str(info.get("method", "varimax")),
            **{n: np.asarray(info[n]).tolist() for n in ("mean", "whitening", "rotation")},
            "node_names": list(map(str, info["node_names"])),
            **({"source_fingerprint": str(info["source_fingerprint"])} if "source_fingerprint" in info else {})}


def read_transform(path: str | Path) -> dict[str, Any]:
    """A transform written by ``genodae signatures --transform`` (:func:`transform_record` as JSON)."""
    path = Path(path)
    try:
        transform = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"transform {path} cannot be read ({e}); give the file of 'genodae signatures "
                        "--transform'") from None
    if not isinstance(transform, dict) or transform.get("format") != TRANSFORM_FORMAT:
        raise UserError(f"{path} is not a transform written by 'genodae signatures --transform'")
    return transform


def ensemble_support(adata: AnnData, key: str, labels: Sequence[str]) -> pd.DataFrame:
    """Members of each consensus node of :func:`genodae.tl.ensemble` with its support, the models (``model0``,
    ``model1``, …) named by ``labels`` in the order they were given."""
    info = adata.uns[key]
    support = info["members"].merge(info["support"], left_on="cluster", right_index=True)
    support["model"] = [labels[int(m[5:])] if str(m).startswith("model") else m for m in support["model"]]
    return support


def sweep_run(adata: AnnData, *, run: str, key: str = "dae", rotation: str = K.DEFAULT_ROTATION,
              readout: str = "correlation", gene_sets: Mapping[str, Sequence[str]] | None = None,
              id_map=None) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One model of a sweep, for :func:`genodae.signatures.sweep_summary`: its row of the runs table (``run``,
    ``n_latent``, ``seed``, gene ``weights`` after ``rotation``, mean ``recon_r2``, best ``val_loss``) and, with
    ``gene_sets``, the enrichment of its high-weight genes (a ``run`` column added). Rotates ``adata`` in place."""
    from .enrich import enrich
    from .signatures import gene_weights, high_weight_genes, rotate

    if K.weights_key(key) not in adata.varm or key not in adata.uns:
        raise UserError(f"{run} has no model {key!r}; pass the right --key")
    info = adata.uns[key]
    read_key = key
    if rotation != "none":
        rotate(adata, key=key, method=rotation, readout=readout)
        read_key = K.rotated_key(key, rotation)
    W = gene_weights(adata, read_key)
    r2 = adata.var.get(K.recon_r2_key(key))
    hist = info.get("history", {})
    val = np.asarray(hist.get("val_loss", []), dtype=float)
    row = dict(run=run, n_latent=int(info["params"]["n_latent"]), seed=int(info["params"]["seed"]),
               weights=W, recon_r2=float(np.nanmean(r2)) if r2 is not None else np.nan,
               val_loss=float(val.min()) if val.size else np.nan)
    enr = None
    if gene_sets is not None:
        enr = enrich(high_weight_genes(W), gene_sets, background=W.index, id_map=id_map)
        enr["run"] = run
    return row, enr
