"""The maths of signatures, on arrays and labelled tables only (no AnnData; imports neither tl nor pl).

High-weight genes of a weight table (ADAGE's read-out), gene–activity correlations (the *structure loadings*
the correlation read-out rotates), the transform of new samples' activities into a rotated basis, the stability
of nodes across models, eADAGE-style consensus nodes, and how well nodes recover known gene modules. The
rotations themselves (varimax, whitening) are in :mod:`genodae.rotation`. :mod:`genodae.signatures` applies
these to the models in an AnnData and re-exports them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from . import _keys
from .config import ENSEMBLE_MIN_CORR, NEAR_COPY_CORR
from .errors import UserError

log = logging.getLogger("genodae")


def high_weight_genes(weights: pd.DataFrame, *, sd_cutoff: float = 2.5, min_genes: int = 0) -> pd.DataFrame:
    """Long table of each node's positive and negative high-weight genes (ADAGE's read-out).

    A gene is in node ``j``'s positive signature when its weight exceeds ``mean_j + sd_cutoff · sd_j`` (mean
    and SD over the genes in ``weights``), in the negative one when below ``mean_j − sd_cutoff · sd_j``.
    With ``min_genes`` > 0, a tail with fewer genes is filled up with its ``min_genes`` most extreme genes
    on that side (flagged ``beyond_cutoff=False``).

    Returns columns ``node``, ``direction`` (``pos``/``neg``), ``gene``, ``weight``, ``zscore``, ``rank``
    (1 = most extreme in its tail), ``beyond_cutoff``.
    """
    if not (np.isfinite(sd_cutoff) and sd_cutoff > 0):
        raise UserError(f"sd_cutoff must be a number > 0, not {sd_cutoff}")
    if isinstance(min_genes, bool) or not isinstance(min_genes, int | np.integer) or min_genes < 0:
        raise UserError(f"min_genes must be a whole number >= 0, not {min_genes!r}")
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


def apply_transform(Z: np.ndarray, transform: Mapping) -> np.ndarray:
    """Node activities of new samples in a rotated basis: ``(Z − mean) @ whitening @ rotation``."""
    mu = np.asarray(transform["mean"], dtype=np.float64)
    M = np.asarray(transform["whitening"], dtype=np.float64)
    R = np.asarray(transform["rotation"], dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    if Z.shape[1] != len(mu):
        raise UserError(f"the transform is for {len(mu)} nodes, the activities have {Z.shape[1]}")
    return (Z - mu) @ M @ R


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


def one_node_per_model_clusters(D: np.ndarray, owner: np.ndarray, *, max_dist: float) -> np.ndarray:
    """Average-linkage agglomerative clustering of nodes that never puts two nodes of one model in a cluster.

    A consensus node is one node reproduced across models: two nodes of the same model are different nodes by
    construction (a model's near-copy nodes carry terms of their own; bench/results/readable.md, "Consensus with
    one node per model"), so merges between clusters that share a model are forbidden (a cannot-link
    constraint). Merges happen in order of the smallest average-linkage distance and stop above ``max_dist``;
    without shared models this is scipy's ``linkage(method="average")`` cut at ``max_dist``.

    Parameters
    ----------
    D
        nodes × nodes distances (``1 − |r|``), symmetric.
    owner
        The model of each node (integers).
    max_dist
        No merge above this distance.

    Returns
    -------
    Cluster labels 1…k (one per node), numbered by first node.
    """
    n = D.shape[0]
    if not np.isfinite(D).all():
        raise ValueError("distances must be finite (a NaN weight, e.g. of a model that diverged?)")
    owner = np.asarray(owner)
    models = np.unique(owner, return_inverse=True)[1]
    Dm = np.array(D, dtype=np.float64, copy=True)
    Dm[models[:, None] == models[None, :]] = np.inf  # two nodes of one model (and a node with itself)
    has = np.zeros((n, models.max() + 1 if n else 0), dtype=bool)
    has[np.arange(n), models] = True
    size = np.ones(n)
    alive = np.ones(n, dtype=bool)
    root = np.arange(n)
    nn = Dm.argmin(axis=1) if n else np.zeros(0, dtype=int)
    nd = Dm[np.arange(n), nn] if n else np.zeros(0)
    while n:
        i = int(np.argmin(nd))
        if not (np.isfinite(nd[i]) and nd[i] <= max_dist):  # inf: nothing left that may merge
            break
        j = int(nn[i])
        row = (size[i] * Dm[i] + size[j] * Dm[j]) / (size[i] + size[j])  # Lance-Williams, average linkage
        has[i] |= has[j]
        alive[j] = False
        row[has[:, has[i]].any(axis=1) | ~alive] = np.inf  # clusters sharing a model with the merged one
        Dm[j, :] = Dm[:, j] = np.inf
        Dm[i, :] = Dm[:, i] = row
        size[i] += size[j]
        root[root == j] = i
        nd[j] = np.inf
        for k in np.flatnonzero(alive & ((nn == i) | (nn == j))):  # their nearest cluster changed or is gone
            nn[k] = np.argmin(Dm[k])
            nd[k] = Dm[k, nn[k]]
        closer = alive & (row < nd)
        nn[closer], nd[closer] = i, row[closer]
    _, first = np.unique(root, return_index=True)
    order = {r: k + 1 for k, r in enumerate(root[np.sort(first)])}
    return np.array([order[r] for r in root], dtype=int)


def consensus(
    weights: Sequence[pd.DataFrame],
    *,
    min_corr: float | None = None,
    min_support: int | None = None,
    embeddings: Sequence[np.ndarray] | None = None,
) -> dict:
    """Cluster the nodes of several models into consensus nodes (eADAGE-style).

    Every node is a weight vector over the common genes, scaled to unit SD. Average-linkage hierarchical
    clustering on ``1 − |r|`` is cut at ``1 − min_corr`` (default ``None``: the cut for nodes of genodae's default
    signatures read-out, ``config.ENSEMBLE_MIN_CORR["sparse"]`` = 0.6; varimax nodes cluster best at 0.5), and never
    puts two nodes of one model in a cluster (:func:`one_node_per_model_clusters`; eADAGE's clustering had no such
    constraint: on NCI-60 P53 it merged a model's near-copy nodes and covered 8 Hallmark sets where single models
    cover 13); in each cluster the members' signs are aligned to
    the member most correlated with the others, and their weights averaged. *Support* = the number of
    distinct models with a node in the cluster; clusters with support below ``min_support`` (default: half the
    models, rounded up, so that two seeds never fail for want of a shared node) are dropped.

    Consensus activities of cells (when ``embeddings`` are given, cells × nodes per model, same cells): the
    mean of the members' activities, each z-scored and sign-aligned. This uses each model's own encoder
    (non-linear in general), which a projection onto the consensus weights would not; for new samples, embed
    them with every member model and combine with the returned ``members`` table.

    Returns a dict: ``weights`` (genes × consensus nodes DataFrame, ``cnode0`` …), ``support`` (Series),
    ``near_copy_of`` (Series: the consensus node ranked before this one, by support and then by the size of its
    weights, whose weights correlate with this one's at |r| ≥ ``config.NEAR_COPY_CORR`` = 0.9, else ""; at equal
    support the later-ranked node of a pair is marked; with ``min_corr`` ≥ 0.9 a mark can also be one program whose
    nodes in different models did not join), ``members`` (model, node, cluster, sign, corr_to_consensus),
    ``embedding`` (cells × nodes or None).
    """
    if len(weights) < 2:
        raise UserError("an ensemble needs at least 2 models")
    min_corr = ENSEMBLE_MIN_CORR[_keys.DEFAULT_ROTATION] if min_corr is None else min_corr
    if not 0 < min_corr < 1:
        raise UserError(f"min_corr must be between 0 and 1 (exclusive), not {min_corr}")
    from scipy.stats import skew

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
    if not np.isfinite(X).all():
        bad = sorted({int(owner[j]) for j in np.flatnonzero(~np.isfinite(X).all(axis=0))})
        raise UserError(f"the weights of model(s) {', '.join(map(str, bad))} (counting from 0) hold NaN or infinite "
                        "values: retrain those models (a diverged training gives them) or leave them out")
    owner = np.asarray(owner)
    C = _corr_cols(X, X)
    D = np.clip(1 - np.abs(C), 0, None)
    lab = one_node_per_model_clusters(D, owner, max_dist=1 - min_corr)
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
        if skew(mean) < 0:  # orient: the larger tail positive (a constant mean has no skew: nan, kept)
            mean, sign = -mean, -sign
        clusters.append((support, idx, sign, mean))
    clusters.sort(key=lambda t: (-t[0], -np.abs(t[3]).max()))
    names = _keys.node_names(len(clusters), _keys.CONSENSUS_NODE)
    Wc = pd.DataFrame(np.column_stack([c[3] for c in clusters]) if clusters else np.zeros((len(common), 0)),
                      index=common, columns=names)
    rows = []
    for name, (_support, idx, sign, mean) in zip(names, clusters, strict=True):
        r = _corr_cols(X[:, idx] * sign, mean[:, None])[:, 0]
        rows += [(int(owner[i]), node[i], name, int(s), float(rr)) for i, s, rr in zip(idx, sign, r, strict=True)]
    members = pd.DataFrame(rows, columns=["model", "node", "cluster", "sign", "corr_to_consensus"])
    support = pd.Series([c[0] for c in clusters], index=names, name="support", dtype=int)
    near_copy_of = pd.Series("", index=names, name="near_copy_of", dtype=object)
    if len(clusters) > 1:  # each node against the ones ranked before it (the order above: support, then weights)
        R = np.abs(_corr_cols(Wc.to_numpy(), Wc.to_numpy()))
        for j in range(1, len(clusters)):
            i = int(np.argmax(R[j, :j]))
            if R[j, i] >= NEAR_COPY_CORR:
                near_copy_of.iloc[j] = names[i]
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
    return {"weights": Wc, "support": support, "near_copy_of": near_copy_of, "members": members, "embedding": emb}


def module_recovery(weights: pd.DataFrame, modules: Mapping[str, Sequence[str]], *,
                    sd_cutoff: float = 2.5) -> pd.DataFrame:
    """How well the nodes of a genes × nodes weight table recover known gene modules.

    Per module: ``auroc`` = best over nodes of the AUROC of |weight| for membership (genes in ``weights``);
    ``auroc_node``; and, over every node tail's high-weight set (mean ± ``sd_cutoff`` SD), the one with
    the best F1 against the module: its ``precision``, ``recall``, ``f1``, ``sig_node``, ``sig_size``.
    """
    from sklearn.metrics import roc_auc_score

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
        aucs = ([float(roc_auc_score(truth, np.abs(W[:, j]))) for j in range(W.shape[1])] if not truth.all()
                else [float("nan")] * W.shape[1])
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


__all__ = ["activity_loadings", "apply_transform", "best_match_correlation", "consensus", "high_weight_genes",
           "module_recovery", "stability"]
