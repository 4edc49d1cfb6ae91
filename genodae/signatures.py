"""Molecular signatures from gene weights: high-weight genes per node, rotations, ensembles, stability.

The read-out follows ADAGE (Tan et al. 2016): a node's signature is the set of genes whose weight lies
beyond mean ± ``sd_cutoff`` · SD of that node's weights over the genes the model used, with the positive
and negative tails kept apart. Because the nodes of an unconstrained autoencoder are an arbitrary mix of
the programs in the data (any invertible mix of the latent space reconstructs equally well), the default
read-out first rotates the gene-weight matrix to a *varimax* basis (Kaiser 1958) — the orthogonal rotation
that makes each node's weights as sparse as possible — and rotates the embedding the same way, so that
weights × activities (and hence every reconstruction) are unchanged. ``bench/signatures.py`` measures
this against the raw nodes, PCA, ICA and NMF on planted-program data.

Ensembles follow eADAGE (Tan et al. 2017): node weight vectors of several models (seeds, sizes) are
clustered by correlation (average linkage on 1 − |r|, signs aligned), each cluster is averaged into a
consensus node and its *support* is the number of models that have it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .config import ROTATIONS
from .errors import UserError
from .rotation import _skew, varimax, whitening  # noqa: F401  (re-exported: public since 0.1)

log = logging.getLogger("genodae")



# --- reading weights out of an AnnData -------------------------------------------------------------------


def genes_used(adata: AnnData, key: str = "dae") -> np.ndarray:
    """Boolean mask over ``var_names`` of the genes the model ``key`` used."""
    wkey = f"{key}_weights"
    if wkey not in adata.varm:
        raise UserError(f"varm[{wkey!r}] not found; run genodae.tl.dae (or genodae embed) first, or pass the "
                        f"right key (available: {', '.join(k[:-8] for k in adata.varm if k.endswith('_weights')) or 'none'})")
    if key in adata.uns and "genes_used" in adata.uns[key]:
        return adata.var_names.isin(list(map(str, adata.uns[key]["genes_used"])))
    return np.asarray((adata.varm[wkey] != 0).any(axis=1)).ravel()


def gene_weights(adata: AnnData, key: str = "dae") -> pd.DataFrame:
    """Genes used × nodes weight table (labelled), from ``varm[f"{key}_weights"]``."""
    used = genes_used(adata, key)
    W = np.asarray(adata.varm[f"{key}_weights"], dtype=np.float64)[used]
    return pd.DataFrame(W, index=adata.var_names[used], columns=node_labels(adata, key, W.shape[1]))


def node_labels(adata: AnnData | None, key: str, n: int) -> list[str]:
    if adata is not None and key in adata.uns and "node_names" in adata.uns[key]:
        names = list(map(str, adata.uns[key]["node_names"]))
        if len(names) == n:
            return names
    return [f"node{i}" for i in range(n)]


# --- the read-out --------------------------------------------------------------------------------------


def high_weight_genes(weights: pd.DataFrame, *, sd_cutoff: float = 2.5, min_genes: int = 0) -> pd.DataFrame:
    """Long table of each node's positive and negative high-weight genes (ADAGE's read-out).

    A gene is in node ``j``'s positive signature when its weight exceeds ``mean_j + sd_cutoff · sd_j`` (mean
    and SD over the genes in ``weights``), in the negative one when below ``mean_j − sd_cutoff · sd_j``.
    With ``min_genes`` > 0, a tail with fewer genes is filled up with its ``min_genes`` most extreme genes
    on that side (flagged ``beyond_cutoff=False``).

    Returns columns ``node``, ``direction`` (``pos``/``neg``), ``gene``, ``weight``, ``zscore``, ``rank``
    (1 = most extreme in its tail), ``beyond_cutoff``.
    """
    if sd_cutoff <= 0:
        raise UserError(f"sd_cutoff must be > 0, not {sd_cutoff}")
    rows = []
    W = weights.to_numpy(dtype=np.float64)
    mu = W.mean(axis=0)
    sd = W.std(axis=0)
    sd[sd == 0] = np.inf
    Z = (W - mu) / sd
    genes = np.asarray(weights.index, dtype=str)
    for j, node in enumerate(weights.columns):
        z = Z[:, j]
        for direction, s in (("pos", 1.0), ("neg", -1.0)):
            beyond = np.flatnonzero(s * z > sd_cutoff)
            order = beyond[np.argsort(-s * z[beyond])]
            flag = np.ones(len(order), dtype=bool)
            if min_genes and len(order) < min_genes:
                cand = np.argsort(-s * z)
                cand = cand[s * z[cand] > 0][:min_genes]
                flag = np.isin(cand, order)
                order = cand
            for r, g in enumerate(order):
                rows.append((str(node), direction, genes[g], W[g, j], z[g], r + 1, bool(flag[r])))
    df = pd.DataFrame(rows, columns=["node", "direction", "gene", "weight", "zscore", "rank", "beyond_cutoff"])
    df["node"] = pd.Categorical(df["node"], categories=list(map(str, weights.columns)))
    df["direction"] = pd.Categorical(df["direction"], categories=["pos", "neg"])
    return df


READOUTS = ("correlation", "weights")


def activity_loadings(X, Zw: np.ndarray, columns: np.ndarray | None = None, chunk: int = 16384) -> np.ndarray:
    """Pearson correlation of every gene (columns of ``X``, dense or sparse, never densified) with every column
    of ``Zw`` — whitened activities (mean 0, identity covariance). Genes × nodes; constant genes get 0.

    ``X`` is read ``chunk`` rows at a time (it may be on disk: a backed AnnData's X), ``columns`` of it when
    given; the sums are float64."""
    import scipy.sparse as sp

    n = X.shape[0]
    g = X.shape[1] if columns is None else len(columns)
    s1, s2, xz = np.zeros(g), np.zeros(g), np.zeros((g, Zw.shape[1]))
    for s in range(0, n, chunk):
        B = X[s : s + chunk]
        if columns is not None:
            B = B[:, columns]
        z = Zw[s : s + chunk]
        if sp.issparse(B):
            B = sp.csr_matrix(B, dtype=np.float64)
            s1 += np.asarray(B.sum(axis=0)).ravel()
            s2 += np.asarray(B.multiply(B).sum(axis=0)).ravel()
            xz += np.asarray(B.T @ z)
        else:
            B = np.asarray(B, dtype=np.float64)
            s1 += B.sum(axis=0)
            s2 += np.square(B).sum(axis=0)
            xz += B.T @ z
    mean = s1 / n
    var = s2 / n - mean**2
    sd = np.sqrt(np.clip(var, 0, None))
    sdz = Zw.std(axis=0)
    sdz[sdz == 0] = np.inf
    cov = xz / n - np.outer(mean, Zw.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        L = cov / np.outer(sd, sdz)
    L[~np.isfinite(L)] = 0.0
    return L


def _model_data(adata: AnnData, key: str, used: np.ndarray):
    """The expression the model ``key`` was trained on, genes used only (log scale; scaling does not change
    correlations)."""
    layer = None
    if key in adata.uns and isinstance(adata.uns[key], Mapping):
        layer = adata.uns[key].get("layer")
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
    return X, np.flatnonzero(used)  # read in row chunks by activity_loadings: a backed X stays on disk


def rotate(
    adata: AnnData,
    *,
    key: str = "dae",
    method: str = "varimax",
    readout: str = "correlation",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Re-express a model's nodes in a basis where each node is sparse in genes (varimax), embedding alike.

    Two read-outs of a node's gene weights:

    - ``correlation`` (default): the node activities ``Z`` (``obsm[f"X_{key}"]``) are whitened,
      ``Zw = (Z − mean) M`` (uncorrelated, unit variance: an invertible linear map, so ``Zw`` carries exactly
      the information of ``Z``), and a gene's weight for a node is its Pearson correlation with that node's
      whitened activity over the cells of ``adata`` (the *structure loadings* of factor analysis; for PCA
      they are proportional to the loadings). ``L`` is then varimax-rotated: weights ``L R``, embedding
      ``Zw R``, so the rotated weights are again the correlations of genes with the rotated activities. This
      read-out uses the data, which average out the noise that stochastic training leaves in the decoder
      weights; on planted-program data it recovers modules best (``bench/results/signatures.md``).
    - ``weights``: the decoder weights ``W`` (``varm[f"{key}_weights"]``, as ADAGE read them), varimax-rotated
      to ``W R`` with embedding ``Z R``; no data needed (``R`` depends only on the model, so new samples
      projected with the saved model rotate identically).

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
        ``varimax`` (the only rotation so far).
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
    >>> genodae.tl.rotate(adata)                        # adds obsm["X_dae_varimax"], varm["dae_varimax_weights"]
    >>> genodae.tl.signatures(adata, key="dae_varimax", rotation="none")
    """
    if method not in ROTATIONS or method == "none":
        raise UserError(f"rotation method must be 'varimax', not {method!r}")
    if readout not in READOUTS:
        raise UserError(f"readout must be one of {', '.join(READOUTS)}, not {readout!r}")
    adata = adata.copy() if copy else adata
    t0 = time.perf_counter()
    key_added = key_added or f"{key}_{method}"
    used = genes_used(adata, key)
    k = adata.varm[f"{key}_weights"].shape[1]
    Z = np.asarray(adata.obsm[f"X_{key}"], dtype=np.float64) if f"X_{key}" in adata.obsm else None
    if readout == "correlation":
        if Z is None:
            raise UserError(f"obsm['X_{key}'] not found: the correlation read-out needs the node activities; "
                            "use readout='weights'")
        if adata.n_obs < 3:
            raise UserError("the correlation read-out needs at least 3 samples; use readout='weights'")
        mu, M = whitening(Z)
        X, columns = _model_data(adata, key, used)
        L = activity_loadings(X, (Z - mu) @ M, columns)
    else:
        mu, M = np.zeros(k), np.eye(k)
        L = np.asarray(adata.varm[f"{key}_weights"], dtype=np.float64)[used]
    R = varimax(L)
    W = np.zeros((adata.n_vars, k), dtype=np.float32)
    W[used] = L @ R
    adata.varm[f"{key_added}_weights"] = W
    if Z is not None:
        adata.obsm[f"X_{key_added}"] = ((Z - mu) @ M @ R).astype(np.float32)
    adata.uns[key_added] = {
        "mean": mu, "whitening": M, "rotation": R, "method": method, "readout": readout, "source_key": key,
        "genes_used": np.asarray(adata.var_names[used], dtype=str),
        "node_names": np.asarray([f"vnode{j}" for j in range(k)]),
    }
    log.info("rotated %s (%s of %s) in %.2fs; added varm['%s_weights'], obsm['X_%s'], uns['%s']", key, method,
             readout, time.perf_counter() - t0, key_added, key_added, key_added)
    return adata if copy else None


def apply_transform(Z: np.ndarray, transform: Mapping) -> np.ndarray:
    """Node activities of new samples in a rotated basis: ``(Z − mean) @ whitening @ rotation``."""
    mu = np.asarray(transform["mean"], dtype=np.float64)
    M = np.asarray(transform["whitening"], dtype=np.float64)
    R = np.asarray(transform["rotation"], dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    if Z.shape[1] != len(mu):
        raise UserError(f"the transform is for {len(mu)} nodes, the activities have {Z.shape[1]}")
    return (Z - mu) @ M @ R


def signatures(
    adata: AnnData,
    *,
    key: str = "dae",
    sd_cutoff: float = 2.5,
    rotation: str = "varimax",
    readout: str = "correlation",
    min_genes: int = 0,
    key_added: str | None = None,
) -> pd.DataFrame:
    """High-weight genes of every node: the candidate molecular signatures of a model.

    By default each gene's weight for a node is its correlation with the node's (whitened) activity, and the
    nodes are rotated to the varimax basis (:func:`rotate`, stored under ``f"{key}_varimax"``, embedding
    transformed alike): on planted-program data this makes nodes recover whole modules as well as PCA, ICA
    and NMF loadings do (see ``bench/results/signatures.md``). ``readout="weights"`` rotates the decoder
    weights instead (no data needed); ``rotation="none"`` reads the model's weights as stored. A model trained
    with ``DAEConfig.rotation="varimax"`` (the default) already reports its nodes in this basis
    (``varm[f"{key}_weights"]`` are the correlations with its varimax nodes), so the rotation here changes
    them only by float error (on the training cells) and mainly records the transform that
    :func:`genodae.tl.score` applies to new samples; for a model trained with ``rotation="none"`` (the ``adage``
    preset) ``rotation="none"`` reads the raw decoder weights, as ADAGE did.

    Parameters
    ----------
    adata
        Annotated by :func:`genodae.tl.dae`, ``genodae embed`` or :func:`ensemble`.
    key
        Prefix of the model's keys (``varm[f"{key}_weights"]``).
    sd_cutoff
        A gene is high-weight beyond mean ± ``sd_cutoff`` · SD of the node's weights over the genes used.
    rotation
        ``varimax`` (default) or ``none``.
    readout
        With a rotation: ``correlation`` (default; needs the expression data in ``adata``) or ``weights``.
    min_genes
        Fill each tail up to this many top genes even when fewer pass the cutoff (flagged).
    key_added
        Where the table is stored in ``uns`` (default ``f"{key}_signatures"``; with a rotation
        ``f"{key}_varimax_signatures"``).

    Returns
    -------
    Long table: ``node``, ``direction`` (pos/neg), ``gene``, ``weight``, ``zscore``, ``rank``,
    ``beyond_cutoff``; also stored in ``uns``. Its ``attrs["key"]`` names the weights it was read from.

    Examples
    --------
    >>> genodae.tl.dae(adata, preset="signatures")
    >>> sig = genodae.tl.signatures(adata)          # varimax nodes: uns["dae_varimax_signatures"]
    >>> sig.query("node == 'vnode0' and direction == 'pos'").gene.tolist()
    """
    if rotation not in ROTATIONS:
        raise UserError(f"rotation must be one of {', '.join(ROTATIONS)}, not {rotation!r}")
    t0 = time.perf_counter()
    params = adata.uns.get(key, {}).get("params", {}) if isinstance(adata.uns.get(key), Mapping) else {}
    if rotation == "none" and params.get("rotation", "none") == "none" and len(params.get("hidden", [])) > 0:
        log.warning("signatures of %s: raw decoder weights of a model with hidden layers (%s) recovered planted "
                    "modules poorly (bench/results/readable.md); read them with rotation='varimax', or train with "
                    "the default rotation='varimax'", key, list(params.get("hidden")))
    read_key = key
    if rotation != "none":
        read_key = f"{key}_{rotation}"
        rotate(adata, key=key, method=rotation, readout=readout, key_added=read_key)
    W = gene_weights(adata, read_key)
    df = high_weight_genes(W, sd_cutoff=sd_cutoff, min_genes=min_genes)
    df.attrs["key"] = read_key
    out = key_added or f"{read_key}_signatures"
    adata.uns[out] = df
    counts = df.groupby(["node", "direction"], observed=False).size()
    log.info("signatures of %s: %d nodes, median %d genes per tail (cutoff %.1f SD) in %.2fs; added uns['%s']",
             read_key, W.shape[1], int(np.median(counts)) if len(counts) else 0, sd_cutoff,
             time.perf_counter() - t0, out)
    return df


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


def _corr_cols(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of A (g × a) and of B (g × b): a × b."""
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    na = np.linalg.norm(A, axis=0)
    nb = np.linalg.norm(B, axis=0)
    na[na == 0] = 1.0
    nb[nb == 0] = 1.0
    return (A / na).T @ (B / nb)


def best_match_correlation(A: np.ndarray, B: np.ndarray) -> float:
    """Mean over the nodes of A and of B of each node's best |correlation| with a node of the other."""
    if A.shape[1] == 0 or B.shape[1] == 0:
        return 0.0
    C = np.abs(_corr_cols(A, B))
    return float(np.concatenate([C.max(axis=1), C.max(axis=0)]).mean())


def stability(weights: Sequence[np.ndarray | pd.DataFrame], *, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """For each pair of models, the mean best-match |correlation| of their node weight vectors.

    ``weights``: genes × nodes matrices over the same genes (DataFrames are aligned on their common genes).
    Returns one row per pair: ``a``, ``b``, ``stability``.
    """
    mats = _align(weights)
    labels = list(labels) if labels is not None else [f"m{i}" for i in range(len(mats))]
    rows = [(labels[i], labels[j], best_match_correlation(mats[i], mats[j]))
            for i in range(len(mats)) for j in range(i + 1, len(mats))]
    return pd.DataFrame(rows, columns=["a", "b", "stability"])


def _align(weights: Sequence[np.ndarray | pd.DataFrame]) -> list[np.ndarray]:
    if all(isinstance(w, pd.DataFrame) for w in weights):
        common = weights[0].index
        for w in weights[1:]:
            common = common.intersection(w.index, sort=False)
        if len(common) < 3:
            raise UserError("the models share fewer than 3 genes; they cannot be compared or combined")
        return [w.loc[common].to_numpy(dtype=np.float64) for w in weights]
    mats = [np.asarray(w.to_numpy() if isinstance(w, pd.DataFrame) else w, dtype=np.float64) for w in weights]
    if len({m.shape[0] for m in mats}) != 1:
        raise UserError("weight matrices have different numbers of genes; pass labelled DataFrames to align them")
    return mats


def consensus(
    weights: Sequence[pd.DataFrame],
    *,
    min_corr: float = 0.5,
    min_support: int | None = None,
    embeddings: Sequence[np.ndarray] | None = None,
) -> dict:
    """Cluster the nodes of several models into consensus nodes (eADAGE-style).

    Every node is a weight vector over the common genes, scaled to unit SD. Average-linkage hierarchical
    clustering on ``1 − |r|`` is cut at ``1 − min_corr``; in each cluster the members' signs are aligned to
    the member most correlated with the others, and their weights averaged. *Support* = the number of
    distinct models with a node in the cluster; clusters with support below ``min_support`` (default: half the
    models, rounded up, so that two seeds never fail for want of a shared node) are dropped.

    Consensus activities of cells (when ``embeddings`` are given, cells × nodes per model, same cells): the
    mean of the members' activities, each z-scored and sign-aligned. This uses each model's own encoder
    (non-linear in general), which a projection onto the consensus weights would not; for new samples, embed
    them with every member model and combine with the returned ``members`` table.

    Returns a dict: ``weights`` (genes × consensus nodes DataFrame, ``cnode0`` …), ``support`` (Series),
    ``members`` (model, node, cluster, sign, corr_to_consensus), ``embedding`` (cells × nodes or None).
    """
    if len(weights) < 2:
        raise UserError("an ensemble needs at least 2 models")
    if not 0 < min_corr < 1:
        raise UserError(f"min_corr must be between 0 and 1, not {min_corr}")
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    common = weights[0].index
    for w in weights[1:]:
        common = common.intersection(w.index, sort=False)
    if len(common) < 3:
        raise UserError("the models share fewer than 3 genes; they cannot be combined")
    n_models = len(weights)
    min_support = int(np.ceil(n_models / 2)) if min_support is None else int(min_support)
    cols, owner, node = [], [], []
    for m, w in enumerate(weights):
        A = w.loc[common].to_numpy(dtype=np.float64)
        sd = A.std(axis=0)
        sd[sd == 0] = 1.0
        cols.append(A / sd)
        owner += [m] * A.shape[1]
        node += list(map(str, w.columns))
    X = np.concatenate(cols, axis=1)
    owner = np.asarray(owner)
    C = _corr_cols(X, X)
    D = np.clip(1 - np.abs(C), 0, None)
    np.fill_diagonal(D, 0)
    Zl = linkage(squareform(D, checks=False), method="average")
    lab = fcluster(Zl, t=1 - min_corr, criterion="distance")
    clusters = []
    for c in np.unique(lab):
        idx = np.flatnonzero(lab == c)
        support = len(np.unique(owner[idx]))
        if support < min_support:
            continue
        sub = C[np.ix_(idx, idx)]
        ref = idx[np.argmax(np.abs(sub).sum(axis=1))]
        sign = np.sign(C[ref, idx])
        sign[sign == 0] = 1
        mean = (X[:, idx] * sign).mean(axis=1)
        if _skew(mean[:, None])[0] < 0:  # orient: the larger tail positive
            mean, sign = -mean, -sign
        clusters.append((support, idx, sign, mean))
    clusters.sort(key=lambda t: (-t[0], -np.abs(t[3]).max()))
    names = [f"cnode{i}" for i in range(len(clusters))]
    Wc = pd.DataFrame(np.column_stack([c[3] for c in clusters]) if clusters else np.zeros((len(common), 0)),
                      index=common, columns=names)
    rows = []
    for name, (_support, idx, sign, mean) in zip(names, clusters, strict=True):
        r = _corr_cols(X[:, idx] * sign, mean[:, None])[:, 0]
        rows += [(int(owner[i]), node[i], name, int(s), float(rr)) for i, s, rr in zip(idx, sign, r, strict=True)]
    members = pd.DataFrame(rows, columns=["model", "node", "cluster", "sign", "corr_to_consensus"])
    support = pd.Series([c[0] for c in clusters], index=names, name="support", dtype=int)
    emb = None
    if embeddings is not None:
        if len(embeddings) != n_models:
            raise UserError(f"{len(embeddings)} embeddings for {n_models} models")
        Zs = []
        for E in embeddings:
            E = np.asarray(E, dtype=np.float64)
            sd = E.std(axis=0)
            sd[sd == 0] = 1.0
            Zs.append((E - E.mean(axis=0)) / sd)
        if len({z.shape[0] for z in Zs}) != 1:
            raise UserError("the embeddings have different numbers of cells")
        Zall = np.concatenate(Zs, axis=1)
        emb = np.column_stack([(Zall[:, c[1]] * c[2]).mean(axis=1) for c in clusters]) if clusters else (
            np.zeros((Zall.shape[0], 0)))
    log.info("consensus of %d models: %d nodes clustered into %d consensus nodes with support >= %d "
             "(|r| >= %.2f)", n_models, X.shape[1], len(clusters), min_support, min_corr)
    return {"weights": Wc, "support": support, "members": members, "embedding": emb}


def ensemble(
    adata: AnnData | Sequence[AnnData],
    *,
    keys: Sequence[str] | None = None,
    rotation: str = "varimax",
    readout: str = "correlation",
    min_corr: float = 0.5,
    min_support: int | None = None,
    key_added: str = "dae_ensemble",
) -> AnnData:
    """Consensus nodes of several models of the same cells, written like a model under ``key_added``.

    ``adata`` is either one AnnData holding several models (their ``keys``) or a list of AnnData (one model
    each, key ``dae`` or ``keys[i]``; same cells). Each model is first rotated (:func:`rotate` with
    ``rotation``/``readout``, adding ``f"{key}_varimax"`` keys; the rotated nodes are far more reproducible
    across seeds than raw nodes). The first AnnData receives
    ``varm[f"{key_added}_weights"]`` (zero rows for genes not shared), ``obsm[f"X_{key_added}"]``
    (consensus activities) and ``uns[key_added]`` (``support``, ``members``, ``genes_used``,
    ``node_names``, the stability of the members); read it with ``tl.signatures(adata, key=key_added,
    rotation="none")``.

    Parameters
    ----------
    adata
        One AnnData with several models, or a list of AnnData (same cells, same order).
    keys
        The models' key prefixes (default ``dae`` for every AnnData of a list).
    rotation, readout
        How each model's nodes are read before clustering (see :func:`rotate`); ``rotation="none"`` uses the
        raw decoder weights.
    min_corr
        Nodes join a cluster when their weight vectors correlate with |r| ≥ ``min_corr`` (average linkage).
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
    ...     genodae.tl.dae(adata, preset="signatures", seed=s, key_added=f"dae_s{s}")
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
    t0 = time.perf_counter()
    Ws, Es = [], []
    for a, k in items:
        if rotation != "none":
            rotate(a, key=k, method=rotation, readout=readout)
            k = f"{k}_{rotation}"
        Ws.append(gene_weights(a, k))
        Es.append(np.asarray(a.obsm[f"X_{k}"], dtype=np.float64) if f"X_{k}" in a.obsm else None)
    res = consensus(Ws, min_corr=min_corr, min_support=min_support,
                    embeddings=Es if all(e is not None for e in Es) else None)
    stab = stability(Ws)
    target = items[0][0]
    Wc = res["weights"]
    full = np.zeros((target.n_vars, Wc.shape[1]), dtype=np.float32)
    pos = target.var_names.get_indexer(Wc.index)
    full[pos[pos >= 0]] = Wc.to_numpy()[pos >= 0]
    target.varm[f"{key_added}_weights"] = full
    if res["embedding"] is not None:
        target.obsm[f"X_{key_added}"] = res["embedding"].astype(np.float32)
    members = res["members"].copy()
    members["model"] = [str(items[m][1]) if isinstance(adatas, AnnData) else f"model{m}" for m in members["model"]]
    target.uns[key_added] = {
        "genes_used": np.asarray(Wc.index, dtype=str),
        "node_names": np.asarray(Wc.columns, dtype=str),
        "support": res["support"].to_frame(),
        "members": members,
        "n_models": len(items),
        "rotation": rotation,
        "readout": readout,
        "min_corr": float(min_corr),
        "member_stability": float(stab["stability"].mean()),
    }
    log.info("ensemble of %d models in %.1fs: %d consensus nodes; mean pairwise stability %.3f; added "
             "varm['%s_weights'], obsm['X_%s'], uns['%s']", len(items), time.perf_counter() - t0, Wc.shape[1],
             stab["stability"].mean(), key_added, key_added, key_added)
    return target


# --- planted-module recovery (evaluation) ----------------------------------------------------------------


def _auroc(score: np.ndarray, truth: np.ndarray) -> float:
    from scipy.stats import rankdata

    n1 = int(truth.sum())
    n0 = len(truth) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[truth].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def module_recovery(weights: pd.DataFrame, modules: Mapping[str, Sequence[str]], *,
                    sd_cutoff: float = 2.5) -> pd.DataFrame:
    """How well the nodes of a genes × nodes weight table recover known gene modules.

    Per module: ``auroc`` = best over nodes of the AUROC of |weight| for membership (genes in ``weights``);
    ``auroc_node``; and, over every node tail's high-weight set (mean ± ``sd_cutoff`` SD), the one with
    the best F1 against the module: its ``precision``, ``recall``, ``f1``, ``sig_node``, ``sig_size``.
    """
    W = weights.to_numpy(dtype=np.float64)
    genes = weights.index
    mu, sd = W.mean(axis=0), W.std(axis=0)
    sd[sd == 0] = np.inf
    Z = (W - mu) / sd
    tails = [(j, s, s * Z[:, j] > sd_cutoff) for j in range(W.shape[1]) for s in (1, -1)]
    rows = []
    for name, members in modules.items():
        truth = genes.isin(list(members))
        if truth.sum() == 0:
            continue
        aucs = [_auroc(np.abs(W[:, j]), truth) for j in range(W.shape[1])]
        if not aucs:  # no nodes at all (e.g. an ensemble without consensus nodes): chance level
            rows.append((name, 0.5, "", 0.0, 0.0, 0.0, None, 0))
            continue
        jbest = int(np.nanargmax(aucs))
        best = (0.0, 0.0, 0.0, None, 0)
        for j, s, sel in tails:
            tp = int((sel & truth).sum())
            if tp == 0:
                continue
            p, r = tp / sel.sum(), tp / truth.sum()
            f1 = 2 * p * r / (p + r)
            if f1 > best[2]:
                best = (p, r, f1, f"{weights.columns[j]}{'+' if s > 0 else '-'}", int(sel.sum()))
        rows.append((name, aucs[jbest], str(weights.columns[jbest]), *best))
    return pd.DataFrame(rows, columns=["module", "auroc", "auroc_node", "precision", "recall", "f1", "sig_node",
                                       "sig_size"])


# --- baselines: linear factorisations of the same model input ------------------------------------------


def model_input(adata: AnnData, key: str | None = None) -> tuple[np.ndarray, pd.Index]:
    """The scaled model input (cells × genes used, dense) of a prepared AnnData, as genodae trains on it."""
    from .pp import PREP_KEY

    if PREP_KEY not in adata.uns:
        raise UserError("adata is not prepared; run genodae.pp.prepare first")
    used = adata.var["highly_variable"].to_numpy(bool)
    X = adata.X[:, np.flatnonzero(used)]
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    off = adata.var["genodae_offset"].to_numpy(np.float64)[used]
    sc = adata.var["genodae_scale"].to_numpy(np.float64)[used]
    X = (X - off) / sc
    if adata.uns[PREP_KEY]["params"]["scaling"] == "minmax":
        X = np.clip(X, 0, 1)
    return X, adata.var_names[used]


def factor_loadings(X: np.ndarray, genes: Sequence[str], method: str, n_components: int, *,
                    seed: int = 0, subsample: float | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Gene loadings (genes × components) and cell scores of PCA, ICA (FastICA) or NMF, as baselines.

    PCA is deterministic; to measure its stability across "seeds", pass ``subsample`` (fraction of cells
    drawn without replacement with ``seed``), which is applied to every method alike.
    """
    from sklearn.decomposition import NMF, PCA, FastICA

    rows = np.arange(X.shape[0])
    if subsample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, int(round(subsample * len(rows))), replace=False))
    Xs = X[rows]
    if method == "pca":
        m = PCA(n_components, random_state=seed).fit(Xs)
        L, S = m.components_.T, m.transform(X)
    elif method == "ica":
        m = FastICA(n_components, random_state=seed, whiten="unit-variance", max_iter=1000, tol=1e-3).fit(Xs)
        L, S = m.mixing_, m.transform(X)
    elif method == "nmf":
        m = NMF(n_components, init="nndsvda", random_state=seed, max_iter=500).fit(np.clip(Xs, 0, None))
        L, S = m.components_.T, m.transform(np.clip(X, 0, None))
    else:
        raise UserError(f"method must be pca, ica or nmf, not {method!r}")
    return pd.DataFrame(L, index=pd.Index(genes), columns=[f"{method}{j}" for j in range(L.shape[1])]), S


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
    """Reconstruction, stability and enriched gene sets against ``n_latent`` (a sweep-summary table)."""
    from .pl import _plt, _save

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


__all__ = [
    "consensus", "ensemble", "factor_loadings", "gene_weights", "genes_used", "high_weight_genes", "model_input",
    "activity_loadings", "apply_transform", "module_recovery", "plot_sweep", "rotate", "whitening", "signature_score", "signature_sets", "signatures", "stability", "sweep_summary",
    "varimax",
]
