"""Molecular signatures from gene weights: high-weight genes per node, rotations, ensembles, stability.

The read-out follows ADAGE (Tan et al. 2016): a node's signature is the set of genes whose weight lies
beyond mean ± ``sd_cutoff`` · SD of that node's weights over the genes the model used, with the positive
and negative tails kept apart. Because the nodes of an unconstrained autoencoder are an arbitrary mix of
the programs in the data (any invertible mix of the latent space reconstructs equally well), the default
read-out first rotates the gene-weight matrix to a *varimax* basis (Kaiser 1958) — the orthogonal rotation
that makes each node's weights as sparse as possible — and then, by default, to an oblique *sparse* basis
(sparse dictionary learning of the loadings, :func:`genodae.rotation.sparse_rotation`), and transforms the
embedding to the same nodes (each gene's weight is its correlation with the node's activity).
``bench/signatures.py`` and ``bench/readable.py`` measure this against the raw nodes, PCA, ICA, NMF and cNMF
on planted-program data.

Ensembles follow eADAGE (Tan et al. 2017): node weight vectors of several models (seeds, sizes) are
clustered by correlation (average linkage on 1 − |r|, signs aligned; unlike eADAGE, never two nodes of one
model in a cluster), each cluster is averaged into a consensus node and its *support* is the number of models that
have it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _keys
from .config import ENSEMBLE_MIN_CORR, ROTATIONS
from .errors import UserError

# The accessors (genodae.get), the maths (genodae.kernels, genodae.rotation) and the sweep plot (genodae.pl)
# live in their own modules; their names stay importable from here, where they were public since 0.1.
from .get import gene_weights, genes_used, model_fingerprint, network_fingerprint, node_labels  # noqa: F401
from .get import params as get_params
from .kernels import (  # noqa: F401
    _align,
    _corr_cols,
    activity_loadings,
    apply_transform,
    best_match_correlation,
    consensus,
    high_weight_genes,
    module_recovery,
    stability,
)
from .rotation import rotate_loadings, spanned_whitening, varimax, whitening  # noqa: F401

log = logging.getLogger("genodae")


READOUTS = ("correlation", "weights")


def _trained_model(adata: AnnData, key: str) -> bool:
    """Whether ``uns[key]`` is the record of a trained model (what :meth:`genodae.DAE.annotate` writes)."""
    rec = adata.uns.get(_keys.params_key(key))
    return isinstance(rec, Mapping) and "params" in rec and "genes_used" in rec


def _check_key_added(adata: AnnData, key_added: str, sources: Sequence[str], what: str) -> None:
    """``key_added`` of a read-out must not be one of the models it reads (``sources``) nor another trained model of
    ``adata``: writing there would overwrite that model's weights and record. Raises UserError."""
    rec = adata.uns.get(key_added)
    if key_added in sources or _trained_model(adata, key_added) or (isinstance(rec, Mapping) and "members" in rec):
        raise UserError(f"{what}: key_added={key_added!r} is a trained model (or an ensemble) of this AnnData, which "
                        "would be overwritten; choose another key_added (or leave it at its default)")


def _model_data(adata: AnnData, key: str, used: np.ndarray):
    """The expression the model ``key`` was trained on, genes used only (log scale; scaling does not change
    correlations)."""
    layer = None
    rec = adata.uns.get(_keys.params_key(key))
    if isinstance(rec, Mapping):
        layer = rec.get("layer")
    layer = None if layer in (None, "X") else str(layer)
    if layer is not None and layer not in adata.layers and not adata.isbacked:
        raise UserError(f"the model {key!r} was trained on layers[{layer!r}], which is not in this AnnData")
    if layer is not None and adata.isbacked:
        from .io import backed_layer

        X = backed_layer(adata, layer)
    else:
        X = adata.layers[layer] if layer is not None else adata.X
    if X is None:
        raise UserError("adata has no expression matrix (X); the correlation read-out needs the data; "
                        "use readout='weights'")
    prep = adata.uns.get(_keys.PREP)
    if layer is None and (not isinstance(prep, Mapping) or prep.get("input_kind") == "counts"):
        # unprepared, or prepared from counts (X then holds log1p values: counts there were put back after prepare)
        from ._values import raw_counts

        if raw_counts(X[: min(adata.n_obs, 2000)]):
            raise UserError("adata.X holds raw counts, not the model's input (genodae.pp.prepare's log1p of "
                            "normalised counts), and the correlation read-out would correlate the nodes with them: "
                            "read the signatures from the prepared data (genodae.pp.prepare, or the prepared .h5ad "
                            "of genodae prepare), or use the weights read-out (readout='weights'; --readout weights "
                            "of genodae signatures/ensemble/sweep-summary)")
    return X, np.flatnonzero(used)  # read in row chunks by activity_loadings: a backed X stays on disk


def rotate(
    adata: AnnData,
    *,
    key: str = _keys.DEFAULT,
    method: str = "sparse",
    readout: str = "correlation",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Re-express a model's nodes in a basis where each node is sparse in genes, embedding alike.

    Two read-outs of a node's gene weights:

    - ``correlation`` (default): the node activities ``Z`` (``obsm[f"X_{key}"]``) are whitened,
      ``Zw = (Z − mean) M`` (uncorrelated, unit variance: an invertible linear map, so ``Zw`` carries exactly
      the information of ``Z``), and a gene's weight for a node is its Pearson correlation with that node's
      whitened activity over the cells of ``adata`` (the *structure loadings* of factor analysis; for PCA
      they are proportional to the loadings). ``L`` is then rotated (``R``, :func:`genodae.rotation.rotate_loadings`:
      varimax from the principal axes of ``L``, then for ``sparse`` the oblique sparse-coding rotation):
      weights ``L R``, embedding ``Zw R``, so the rotated weights are again the correlations of genes with the
      rotated activities (unit-length columns of ``R``). This
      read-out uses the data, which average out the noise that stochastic training leaves in the decoder
      weights; on planted-program data it recovers modules best (``bench/results/signatures.md``).
    - ``weights``: the model's stored weights ``W`` (``varm[f"{key}_weights"]``: the decoder weights, as ADAGE
      read them, for a model trained with ``rotation="none"``; for a default model its correlations with the
      nodes of ``X_{key}``), rotated to ``W R`` with embedding ``Z R⁻ᵀ`` (``Z R`` for varimax), so the product
      ``Z Wᵀ`` (with decoder weights: the reconstruction) is kept; no data needed (``R`` depends only on the
      model, so new samples projected with the saved model rotate identically).

    When the activities of ``adata``'s cells span only r < k directions (fewer cells than nodes, an undertrained
    model), the correlation read-out whitens those r and leaves k − r empty nodes (zero weights), with a warning.

    Rotated node ``j`` is named ``vnode{j}``. ``uns[key_added]`` holds the transform of the activities
    (``mean``, ``whitening``, ``rotation``: ``X_{key_added} = (Z − mean) @ whitening @ rotation``), so
    :func:`genodae.tl.score` can apply it to new samples.

    Parameters
    ----------
    adata
        Annotated by :func:`genodae.tl.dae` (or ``genodae embed``); for ``correlation`` also holding the
        prepared expression the model was trained on (the same cells or new ones).
    key
        Prefix of the model's keys.
    method
        ``sparse`` (default: varimax, then oblique sparse coding; nodes may correlate) or ``varimax``
        (orthogonal). Both depend only on the space the nodes span, so re-rotating the nodes of a model trained
        with the same ``DAEConfig.rotation`` changes them little (the correlations are taken over ``adata``'s
        cells instead of the training cells).
    readout
        ``correlation`` or ``weights``.
    key_added
        Prefix of the rotated keys (default ``f"{key}_{method}"``).
    copy
        Work on a copy and return it.

    Returns
    -------
    The annotated copy when ``copy=True``, else ``None``. Adds ``varm[f"{key_added}_weights"]``,
    ``obsm[f"X_{key_added}"]`` and ``uns[key_added]``.

    Examples
    --------
    >>> genodae.tl.rotate(adata)                        # adds obsm["X_dae_sparse"], varm["dae_sparse_weights"]
    >>> genodae.tl.signatures(adata, key="dae_sparse", rotation="none")
    """
    if method not in ROTATIONS or method == "none":
        raise UserError(f"rotation method must be 'sparse' or 'varimax', not {method!r}")
    if readout not in READOUTS:
        raise UserError(f"readout must be one of {', '.join(READOUTS)}, not {readout!r}")
    adata = adata.copy() if copy else adata
    t0 = time.perf_counter()
    key_added = key_added or _keys.rotated_key(key, method)
    _check_key_added(adata, key_added, [key], "rotate")
    used = genes_used(adata, key)
    k = adata.varm[_keys.weights_key(key)].shape[1]
    rep = _keys.embedding_key(key)
    Z = np.asarray(adata.obsm[rep], dtype=np.float64) if rep in adata.obsm else None
    if readout == "correlation":
        if Z is None:
            raise UserError(f"obsm['{rep}'] not found: the correlation read-out needs the node activities; "
                            "use readout='weights'")
        if adata.n_obs < 3:
            raise UserError("the correlation read-out needs at least 3 samples; use readout='weights'")
        mu, M, rank = spanned_whitening(Z)
        if rank < k:  # the directions the cells span are whitened; the others become empty nodes (zero weights)
            log.warning("rotate %s: the node activities of these %d cells span only %d of %d directions (fewer cells "
                        "than nodes, or constant nodes); %d nodes stay empty", key, adata.n_obs, rank, k, k - rank)
        X, columns = _model_data(adata, key, used)
        L = np.zeros((len(np.flatnonzero(used)), k))
        L[:, :rank] = activity_loadings(X, ((Z - mu) @ M)[:, :rank], columns)
    else:
        mu, M = np.zeros(k), np.eye(k)
        L = np.asarray(adata.varm[_keys.weights_key(key)], dtype=np.float64)[used]
        rank = k
    R = np.eye(k)
    R[:rank, :rank] = rotate_loadings(L[:, :rank], method)
    W = np.zeros((adata.n_vars, k), dtype=np.float32)
    W[used] = L @ R
    adata.varm[_keys.weights_key(key_added)] = W
    # correlations: activities (Z − mean) M R, unit variance, whose correlations with the genes are L R; decoder
    # weights: activities Z R⁻ᵀ, so that activities × weightsᵀ (the reconstruction) is kept (R⁻ᵀ = R if orthogonal)
    T = R if readout == "correlation" or method == "varimax" else np.linalg.inv(R).T
    if Z is not None:
        adata.obsm[_keys.embedding_key(key_added)] = ((Z - mu) @ M @ T).astype(np.float32)
    made_from = model_fingerprint(adata.uns.get(_keys.params_key(key)))
    old = adata.uns.get(key_added)
    if isinstance(old, Mapping) and any(str(old.get(n)) != str(v) for n, v in (
            ("method", method), ("readout", readout), ("source_key", key), ("source_fingerprint", made_from))):
        # another read-out replaces this one: its signature/enrichment tables and rotations of it go with it
        _keys.drop_stale_readouts(adata, key_added, None, None)
    adata.uns[key_added] = {
        "mean": mu, "whitening": M, "rotation": T, "method": method, "readout": readout, "source_key": key,
        **({"source_fingerprint": made_from} if made_from else {}),
        "genes_used": np.asarray(adata.var_names[used], dtype=str),
        "node_names": np.asarray(_keys.node_names(k, _keys.ROTATED_NODE)),
    }
    log.info("rotated %s (%s of %s) in %.2fs; added %s", key, method, readout, time.perf_counter() - t0,
             ", ".join(_keys.keys_added(key_added, "varm", "obsm", "uns")))
    return adata if copy else None


def signatures(
    adata: AnnData,
    *,
    key: str = _keys.DEFAULT,
    sd_cutoff: float = 2.5,
    rotation: str = "sparse",
    readout: str = "correlation",
    min_genes: int = 0,
    key_added: str | None = None,
) -> pd.DataFrame:
    """High-weight genes of every node: the candidate molecular signatures of a model.

    By default each gene's weight for a node is its correlation with the node's (whitened) activity, and the
    nodes are rotated to the sparse basis (:func:`rotate`, stored under ``f"{key}_sparse"``, embedding
    transformed alike): on planted-program data this makes nodes recover whole modules as well as PCA, ICA,
    NMF and cNMF loadings do (see ``bench/results/readable.md``). ``readout="weights"`` rotates the decoder
    weights instead (no data needed); ``rotation="none"`` reads the model's weights as stored. A default model
    (``DAEConfig.rotation="varimax"``) reports orthogonal varimax nodes, which keep the embedding's distances;
    the sparse nodes read here are a different, oblique basis of the same space (the rotation depends only on that
    space, so the result is the same whatever basis the model reports). A model trained with
    ``DAEConfig.rotation="sparse"`` already reports these nodes (correlations over its training cells), so the
    rotation here changes them little and mainly records the transform that :func:`genodae.tl.score` applies to
    new samples; for a model trained with ``rotation="none"`` (the ``adage`` preset) ``rotation="none"`` reads
    the raw decoder weights, as ADAGE did.

    Parameters
    ----------
    adata
        Annotated by :func:`genodae.tl.dae`, ``genodae embed`` or :func:`ensemble`.
    key
        Prefix of the model's keys (``varm[f"{key}_weights"]``).
    sd_cutoff
        A gene is high-weight beyond mean ± ``sd_cutoff`` · SD of the node's weights over the genes used.
    rotation
        ``sparse`` (default), ``varimax`` or ``none``.
    readout
        With a rotation: ``correlation`` (default; needs the expression data in ``adata``) or ``weights``.
    min_genes
        Fill each tail up to this many top genes even when fewer pass the cutoff (flagged).
    key_added
        Where the table is stored in ``uns`` (default ``f"{key}_signatures"``; with a rotation
        ``f"{key}_{rotation}_signatures"``).

    Returns
    -------
    Long table: ``node``, ``direction`` (pos/neg), ``gene``, ``weight``, ``zscore``, ``rank``,
    ``beyond_cutoff``; read from an ensemble's consensus nodes as they are (``key`` of :func:`ensemble`,
    ``rotation="none"``), also ``near_copy_of``: the consensus node ranked before this one (higher support, then
    larger weights) whose weights correlate with this node's at |r| ≥ 0.9 (``config.NEAR_COPY_CORR``), or "" (the
    same in its support table). Also stored in
    ``uns``. Its ``attrs["key"]`` names the weights it was read from.

    Examples
    --------
    >>> genodae.tl.dae(adata)
    >>> sig = genodae.tl.signatures(adata)          # sparse nodes: uns["dae_sparse_signatures"]
    >>> sig.query("node == 'vnode0' and direction == 'pos'").gene.tolist()
    """
    if rotation not in ROTATIONS:
        raise UserError(f"rotation must be one of {', '.join(ROTATIONS)}, not {rotation!r}")
    if key_added is not None and (_trained_model(adata, key_added) or _keys.weights_key(key_added) in adata.varm):
        raise UserError(f"signatures: key_added={key_added!r} is a model of this AnnData, whose record would be "
                        "overwritten by the table; choose another key_added (default: '<key>_<rotation>_signatures')")
    t0 = time.perf_counter()
    params = get_params(adata, key)
    if rotation == "none" and params.get("rotation", "none") == "none" and len(params.get("hidden", [])) > 0:
        log.warning("signatures of %s: raw decoder weights of a model with hidden layers (%s) recovered planted "
                    "modules poorly (bench/results/readable.md); read them with the default rotation='sparse'", key, list(params.get("hidden")))
    read_key = key
    if rotation != "none":
        read_key = _keys.rotated_key(key, rotation)
        rotate(adata, key=key, method=rotation, readout=readout, key_added=read_key)
    W = gene_weights(adata, read_key)
    df = high_weight_genes(W, sd_cutoff=sd_cutoff, min_genes=min_genes)
    df = with_near_copies(df, adata, read_key)
    df.attrs["key"] = read_key
    out = key_added or _keys.signatures_key(read_key)
    adata.uns[out] = df
    if out != _keys.signatures_key(read_key):
        _keys.record_table(adata.uns, out, read_key)
    counts = df.groupby(["node", "direction"], observed=False).size()
    log.info("signatures of %s: %d nodes, median %d genes per tail (cutoff %.1f SD) in %.2fs; added uns['%s']",
             read_key, W.shape[1], int(np.median(counts)) if len(counts) else 0, sd_cutoff,
             time.perf_counter() - t0, out)
    return df


def with_near_copies(table: pd.DataFrame, adata: AnnData, key: str) -> pd.DataFrame:
    """``table`` (a :func:`high_weight_genes` table of ``key``'s weights) with the column ``near_copy_of`` when
    ``key`` holds an ensemble's consensus nodes (the node ranked before each that it nearly copies, "" if none);
    unchanged for any other weights."""
    copies = _near_copies(adata, key)
    if copies is not None:
        table["near_copy_of"] = pd.Categorical(table["node"].astype(str).map(copies).fillna(""))
    return table


def _near_copies(adata: AnnData, key: str) -> pd.Series | None:
    """node → the consensus node ranked before it that it nearly copies ("" if none), for the consensus nodes of
    :func:`ensemble` stored under ``key``; None for any other weights."""
    rec = adata.uns.get(key)
    support = rec.get("support") if isinstance(rec, Mapping) else None
    if not isinstance(support, pd.DataFrame) or "near_copy_of" not in support.columns:
        return None
    return support["near_copy_of"].fillna("").astype(str).rename(index=str)


def signature_sets(table: pd.DataFrame, *, beyond_cutoff_only: bool = False) -> dict[str, list[str]]:
    """``{"node3+": [genes], "node3-": [...]}`` from a :func:`signatures` table (empty tails omitted)."""
    t = table[table["beyond_cutoff"]] if beyond_cutoff_only else table
    out: dict[str, list[str]] = {}
    for (node, direction), g in t.groupby(["node", "direction"], observed=True, sort=False):
        out[f"{node}{'+' if direction == 'pos' else '-'}"] = g.sort_values("rank")["gene"].tolist()
    return out


def signature_score(adata: AnnData, genes: Sequence[str] | Mapping[str, float], *,
                    layer: str | None = None) -> np.ndarray:
    """Score of a gene signature per sample: mean z-scored expression of its genes (weighted if a mapping).

    For projected samples prefer the node activity itself (``genodae.DAE.load(path).embed(new)``); this
    score is the model-free alternative (e.g. for a signature read off a model on another platform).
    """
    weights = dict(genes) if isinstance(genes, Mapping) else {g: 1.0 for g in genes}
    present = [g for g in weights if g in adata.var_names]
    if not present:
        raise UserError("none of the signature's genes are in the data; check the gene identifiers")
    X = adata[:, present].layers[layer] if layer else adata[:, present].X
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    Zs = (X - X.mean(axis=0)) / sd
    w = np.array([weights[g] for g in present], dtype=np.float64)
    return Zs @ w / np.abs(w).sum()


# --- stability and ensembles ------------------------------------------------------------------------------


def _read_out(items: Sequence[tuple[AnnData, str]], rotation: str) -> str:
    """The read-out of the nodes an ensemble clusters: ``rotation``, or with ``"none"`` (the nodes as stored) the one
    every model was stored with (a rotated key such as ``dae_sparse``, or the model's ``rotation`` setting: a default
    model stores varimax nodes); ``"none"`` when they differ or are not recorded (weights written by hand)."""
    if rotation != "none":
        return rotation
    stored = set()
    for a, k in items:
        source = _keys.rotated_source(k)
        stored.add(source[1] if source else get_params(a, k).get("rotation", "none"))
    return stored.pop() if len(stored) == 1 else "none"


def _network_of(adata: AnnData, key: str, depth: int = 0) -> str | None:
    """:func:`network_fingerprint` of the trained network behind ``key``: its own record, or for a rotation
    (tl.rotate, tl.signatures) that of the model it was read from in this AnnData, when the rotation's recorded
    source is still that model. None for weights without a record (an ensemble, weights written by hand)."""
    rec = adata.uns.get(_keys.params_key(key))
    net = network_fingerprint(rec)
    if net is not None or not isinstance(rec, Mapping) or "source_key" not in rec or depth > 8:
        return net
    source = str(rec["source_key"])
    made_from = rec.get("source_fingerprint")
    if made_from is not None and str(made_from) != model_fingerprint(adata.uns.get(_keys.params_key(source))):
        return None  # read from a model no longer stored under its source key
    return _network_of(adata, source, depth + 1)


def _check_members(items: Sequence[tuple[AnnData, str]], key_added: str, one: AnnData | None) -> None:
    """Before anything is written: every model exists, none is given twice (the same key, or the same weights
    under another key or file: one model counted twice would agree with itself), and ``key_added`` is none of them
    nor another trained model. Raises UserError."""
    for i, (a, k) in enumerate(items):
        if _keys.weights_key(k) not in a.varm:
            models = [m for m in _keys.weights_keys(a.varm) if not m.endswith("_decoder")]
            raise UserError(f"model {k!r} (member {i + 1}) is not in its AnnData (no varm[{_keys.weights_key(k)!r}]); "
                            f"its models: {', '.join(models) or 'none'}")
    nets = [_network_of(a, k) for a, k in items]
    for i, (a, k) in enumerate(items):
        W = np.asarray(a.varm[_keys.weights_key(k)])
        for j, (b, m) in enumerate(items[:i]):
            same_weights = (a is b and k == m) or (W.shape == b.varm[_keys.weights_key(m)].shape
                                                   and a.n_vars == b.n_vars and a.var_names.equals(b.var_names)
                                                   and np.array_equal(W, np.asarray(b.varm[_keys.weights_key(m)])))
            same_net = nets[i] is not None and nets[i] == nets[j]  # one network, maybe read out in two bases
            if same_net or same_weights:
                raise UserError(f"members {j + 1} ({m!r}) and {i + 1} ({k!r}) are the same model"
                                f"{' (one trained network, read out in two bases)' if not same_weights else ''}: "
                                "give each model once (an ensemble of one model with itself has stability 1.0 by "
                                "construction)")
    sources = [k for _, k in items]
    target = items[0][0] if one is None else one
    if key_added in sources or _trained_model(target, key_added):
        raise UserError(f"ensemble: key_added={key_added!r} is a trained model of the (first) AnnData, which would be "
                        "overwritten; choose another key_added (default 'dae_ensemble')")
    rec = target.uns.get(key_added)
    if key_added in {_keys.rotated_key(k, m) for k in sources for m in _keys.ROTATION_METHODS} or (
            isinstance(rec, Mapping) and "source_key" in rec):
        raise UserError(f"ensemble: key_added={key_added!r} is a rotation of a model (tl.rotate), which would be "
                        "overwritten; choose another key_added (default 'dae_ensemble')")


def ensemble(
    adata: AnnData | Sequence[AnnData],
    *,
    keys: Sequence[str] | None = None,
    rotation: str = "sparse",
    readout: str = "correlation",
    min_corr: float | None = None,
    min_support: int | None = None,
    key_added: str = _keys.ENSEMBLE,
) -> AnnData:
    """Consensus nodes of several models of the same cells, written like a model under ``key_added``.

    ``adata`` is either one AnnData holding several models (their ``keys``) or a list of AnnData (one model
    each, key ``dae`` or ``keys[i]``; same cells). Each model is first rotated (:func:`rotate` with
    ``rotation``/``readout``, adding ``f"{key}_{rotation}"`` keys; the rotated nodes are far more reproducible
    across seeds than raw nodes). The first AnnData receives
    ``varm[f"{key_added}_weights"]`` (zero rows for genes not shared), ``obsm[f"X_{key_added}"]``
    (consensus activities) and ``uns[key_added]`` (``support``: per consensus node its support and
    ``near_copy_of``, the consensus node ranked before it (support, then weights) that it nearly copies, |r| ≥
    0.9, or ""; ``members``, ``genes_used``,
    ``node_names``, the stability of the members); read it with ``tl.signatures(adata, key=key_added,
    rotation="none")``. An earlier ensemble under ``key_added`` is replaced together with everything read from it
    (its signature and enrichment tables, rotations of it).

    Parameters
    ----------
    adata
        One AnnData with several models, or a list of AnnData (same cells, same order).
    keys
        The models' key prefixes (default ``dae`` for every AnnData of a list).
    rotation, readout
        How each model's nodes are read before clustering (see :func:`rotate`); ``rotation="none"`` uses the
        nodes as stored (``varm[f"{key}_weights"]``: a default model's varimax nodes, a ``rotation="sparse"``
        model's sparse nodes; raw decoder weights only for a model trained with ``rotation="none"``).
    min_corr
        Nodes join a cluster when their weight vectors correlate with |r| ≥ ``min_corr`` (average linkage); a
        cluster never holds two nodes of one model (a consensus node is one node reproduced across models:
        :func:`genodae.kernels.one_node_per_model_clusters`).
        Default ``None``: by the nodes' read-out (``config.ENSEMBLE_MIN_CORR``): 0.6 for sparse nodes, 0.5 for
        varimax or raw ones; with ``rotation="none"`` the read-out the models were stored with (a default model:
        varimax). Recorded in ``uns[key_added]["min_corr"]``. Evidence: bench/results/readable.md, "Ensemble
        threshold".
    min_support
        Models a consensus node needs (default: half of them, rounded up).
    key_added
        Prefix of the consensus keys.

    Returns
    -------
    The (first) AnnData, annotated.

    Examples
    --------
    >>> for s in range(5):
    ...     genodae.tl.dae(adata, seed=s, key_added=f"dae_s{s}")
    >>> genodae.tl.ensemble(adata, keys=[f"dae_s{s}" for s in range(5)])
    >>> genodae.tl.signatures(adata, key="dae_ensemble", rotation="none")
    """
    adatas = adata
    if isinstance(adatas, AnnData):
        if not keys or len(keys) < 2:
            raise UserError("with one AnnData, give the keys of at least 2 models (keys=[...])")
        items = [(adatas, k) for k in keys]
    else:
        adatas = list(adatas)
        keys = list(keys) if keys is not None else ["dae"] * len(adatas)
        if len(keys) != len(adatas):
            raise UserError(f"{len(keys)} keys for {len(adatas)} AnnData objects")
        items = list(zip(adatas, keys, strict=True))
        first = items[0][0].obs_names
        for a, _ in items[1:]:
            if not a.obs_names.equals(first):
                raise UserError("the models' AnnData objects must hold the same cells in the same order")
    if rotation not in ROTATIONS:
        raise UserError(f"rotation must be one of {', '.join(ROTATIONS)}, not {rotation!r}")
    _check_members(items, key_added, adatas if isinstance(adatas, AnnData) else None)
    if min_support is not None and (isinstance(min_support, bool) or not isinstance(min_support, int | np.integer)
                                    or not 1 <= min_support <= len(items)):
        raise UserError(f"min_support must be a whole number between 1 and the number of models ({len(items)}), not "
                        f"{min_support!r}")
    if min_corr is not None and not 0 < min_corr < 1:
        raise UserError(f"min_corr must be between 0 and 1 (exclusive), not {min_corr}")
    min_corr = ENSEMBLE_MIN_CORR[_read_out(items, rotation)] if min_corr is None else float(min_corr)
    t0 = time.perf_counter()
    Ws, Es = [], []
    for a, k in items:
        if rotation != "none":
            rotate(a, key=k, method=rotation, readout=readout)
            k = _keys.rotated_key(k, rotation)
        Ws.append(gene_weights(a, k))
        rep = _keys.embedding_key(k)
        Es.append(np.asarray(a.obsm[rep], dtype=np.float64) if rep in a.obsm else None)
    res = consensus(Ws, min_corr=min_corr, min_support=min_support,
                    embeddings=Es if all(e is not None for e in Es) else None)
    stab = stability(Ws)
    target = items[0][0]
    _keys.drop_stale_readouts(target, key_added, None, None)  # an earlier ensemble's tables and rotations
    Wc = res["weights"]
    full = np.zeros((target.n_vars, Wc.shape[1]), dtype=np.float32)
    pos = target.var_names.get_indexer(Wc.index)
    full[pos[pos >= 0]] = Wc.to_numpy()[pos >= 0]
    target.varm[_keys.weights_key(key_added)] = full
    if res["embedding"] is not None:
        target.obsm[_keys.embedding_key(key_added)] = res["embedding"].astype(np.float32)
    else:
        target.obsm.pop(_keys.embedding_key(key_added), None)
    members = res["members"].copy()
    members["model"] = [str(items[m][1]) if isinstance(adatas, AnnData) else f"model{m}" for m in members["model"]]
    target.uns[key_added] = {
        "genes_used": np.asarray(Wc.index, dtype=str),
        "node_names": np.asarray(Wc.columns, dtype=str),
        "support": pd.concat([res["support"], res["near_copy_of"]], axis=1),
        "members": members,
        "n_models": len(items),
        "rotation": rotation,
        "readout": readout,
        "min_corr": float(min_corr),
        "member_stability": float(stab["stability"].mean()),
    }
    log.info("ensemble of %d models in %.1fs: %d consensus nodes; mean pairwise stability %.3f; added %s",
             len(items), time.perf_counter() - t0, Wc.shape[1], stab["stability"].mean(),
             ", ".join(_keys.keys_added(key_added, "varm", "obsm", "uns")))
    return target


# --- the model input, as baselines see it ------------------------------------------------------------------


def model_scaling(adata: AnnData, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(positions in ``adata.var_names``, offset, scale) of model ``key``'s own input scaling ``(x - offset) / scale``
    (``uns[key]["input_offset"/"input_scale"]``, aligned with its ``genes_used``) for its genes present in ``adata``;
    None for a record without them (models annotated before 2026-12-08, ensembles)."""
    info = adata.uns.get(key)
    if not isinstance(info, Mapping) or not {"input_offset", "input_scale", "genes_used"} <= set(info):
        return None
    pos = adata.var_names.get_indexer(list(map(str, info["genes_used"])))
    have = pos >= 0
    return (pos[have], np.asarray(info["input_offset"], np.float64)[have],
            np.asarray(info["input_scale"], np.float64)[have])


def model_input(adata: AnnData, key: str | None = None) -> tuple[np.ndarray, pd.Index]:
    """The scaled model input (cells × genes, dense) of a prepared AnnData: ``(x - offset) / scale`` of the genes the
    preparation marks (``var["highly_variable"]``) with its scaling, clipped to 0-1 under min-max; with ``key``, that
    model's genes (those present in ``adata``), layer and scaling (``uns[key]``: a model that min-max scaled
    z-scored data itself differs from its preparation), as it trained on them. Raises :class:`UserError` for
    unprepared data or a ``key`` that is not a model of ``adata``."""
    if _keys.PREP not in adata.uns:
        raise UserError("adata is not prepared; run genodae.pp.prepare first")
    if key is not None and not _trained_model(adata, key):
        models = [str(k) for k in adata.uns if _trained_model(adata, str(k))]
        raise UserError(f"no trained model {key!r} in adata.uns; models: {', '.join(models) or 'none'}")
    info = adata.uns[key] if key is not None else {}
    M = adata.X
    own = model_scaling(adata, key) if key is not None else None
    if own is not None:
        pos, off, sc = own
        minmax = info.get("prepare", {}).get("params", {}).get("scaling") == "minmax"
        layer = str(info.get("layer", "X"))
        if layer != "X":
            if layer not in adata.layers:
                raise UserError(f"model {key!r} was trained on layers[{layer!r}], which adata does not have")
            M = adata.layers[layer]
    else:
        pos = np.flatnonzero(adata.var[_keys.HIGHLY_VARIABLE].to_numpy(bool))
        off = adata.var[_keys.OFFSET].to_numpy(np.float64)[pos]
        sc = adata.var[_keys.SCALE].to_numpy(np.float64)[pos]
        minmax = adata.uns[_keys.PREP]["params"]["scaling"] == "minmax"
    X = M[:, pos]
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    X = (X - off) / sc
    if minmax:
        X = np.clip(X, 0, 1)
    return X, adata.var_names[pos]


# --- latent-size sweeps -----------------------------------------------------------------------------------


def sweep_summary(runs: pd.DataFrame, *, enrichment: pd.DataFrame | None = None, fdr: float = 0.05) -> pd.DataFrame:
    """One row per ``n_latent`` from a table of trained runs.

    ``runs`` has one row per model with columns ``run``, ``n_latent``, ``seed``, ``weights`` (a genes ×
    nodes DataFrame), and optionally ``recon_r2`` (mean per-gene validation R²) and ``val_loss``.
    ``enrichment`` (optional) is an :func:`genodae.enrich.enrich` table with a ``run`` column.
    Returns: ``n_latent``, ``n_models``, ``recon_r2`` (mean), ``val_loss`` (mean), ``stability`` (mean
    over seed pairs, with ``stability_sd``), ``n_enriched_sets`` (distinct gene sets with FDR < ``fdr`` per
    model, averaged over models).
    """
    need = {"run", "n_latent", "weights"}
    if not need <= set(runs.columns):
        raise UserError(f"runs table needs columns {', '.join(sorted(need))}")
    rows = []
    for n, g in runs.groupby("n_latent", sort=True):
        st = stability(list(g["weights"])) if len(g) > 1 else pd.DataFrame({"stability": [np.nan]})
        row = {"n_latent": int(n), "n_models": len(g),
               "recon_r2": float(g["recon_r2"].mean()) if "recon_r2" in g else np.nan,
               "val_loss": float(g["val_loss"].mean()) if "val_loss" in g else np.nan,
               "stability": float(st["stability"].mean()), "stability_sd": float(st["stability"].std(ddof=0))}
        if enrichment is not None:  # gene sets were given: no enriched set is a count of 0, not a gap
            e = enrichment[(enrichment["fdr"] < fdr) & enrichment["run"].isin(g["run"])] if len(enrichment) else None
            row["n_enriched_sets"] = (float(e.groupby("run")["term"].nunique().reindex(g["run"], fill_value=0).mean())
                                      if e is not None else 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_sweep(table: pd.DataFrame, *, save=None):
    """:func:`genodae.pl.plot_sweep` (the plot lives in ``pl``; this name is kept for code written before)."""
    from .pl import plot_sweep as _plot_sweep

    return _plot_sweep(table, save=save)


__all__ = [
    "activity_loadings", "apply_transform", "consensus", "ensemble", "gene_weights", "genes_used",
    "high_weight_genes", "model_input", "module_recovery", "plot_sweep", "rotate", "signature_score",
    "signature_sets", "signatures", "stability", "sweep_summary", "varimax", "whitening",
]
