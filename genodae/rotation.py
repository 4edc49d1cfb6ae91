"""Rotations of latent nodes: the maths of genodae's readable gene weights (numpy, scipy and scikit-learn; a leaf
module).

:func:`varimax` (Kaiser 1958, as R's ``stats::varimax``), :func:`sparse_rotation` (varimax, then sparse dictionary
learning of the loadings: Mairal et al. 2009, scikit-learn; a program on most genes keeps its varimax node),
:func:`rotate_loadings` (either, from a start that
depends only on the space the nodes span), :func:`whitening` (ZCA) and :func:`readable_basis`, which combines them
into the basis genodae's models report their nodes in (``DAEConfig.rotation``: an orthogonal varimax rotation that
keeps distances between cells by default, the oblique sparse nodes of the signatures on request).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

log = logging.getLogger("genodae")


def varimax(W: np.ndarray, *, normalize: bool = True, max_iter: int = 500, tol: float = 1e-7) -> np.ndarray:
    """Orthogonal varimax rotation ``R`` (k × k) of a genes × k loading matrix: ``W @ R`` is the rotated one.

    Kaiser normalisation (each gene's row scaled to unit length during the search) is on by default, as in
    R's ``stats::varimax``. The rotated columns are then given positive skew (a column whose largest
    weights are negative is flipped, together with its activity) and ordered by decreasing variance.

    The search stops when the criterion grows by less than ``tol`` (relative) in an iteration, or after
    ``max_iter`` iterations. R's ``eps`` is 1e-5; on 32 nodes of 1,500–2,000 mostly noise genes that stopped
    after 1–31 iterations, where 1e-7 takes 350–1,800 (so ``max_iter`` can end the search); the
    signatures recovered were the same in all three cases (F1 within 0.005 on bench/readable.py's generators, 3 seeds; a one-off check).
    """
    W = np.asarray(W, dtype=np.float64)
    p, k = W.shape
    if k < 2:
        return np.eye(k)
    h = np.sqrt((W**2).sum(axis=1, keepdims=True)) if normalize else np.ones((p, 1))
    h[h == 0] = 1.0
    A = W / h
    R = np.eye(k)
    d_old = 0.0
    for _ in range(max_iter):
        L = A @ R
        u, s, vt = np.linalg.svd(A.T @ (L**3 - L @ np.diag((L**2).sum(axis=0)) / p))
        R = u @ vt
        d = s.sum()
        if d_old != 0 and d < d_old * (1 + tol):
            break
        d_old = d
    L = W @ R
    sign = np.sign(_skew(L))
    sign[sign == 0] = 1
    R = R * sign
    order = np.argsort(-(W @ R).var(axis=0), kind="stable")
    return R[:, order]


def principal_axes(L: np.ndarray) -> np.ndarray:
    """Orthogonal ``Q`` (k × k) such that the columns of ``L @ Q`` are the principal axes of the genes × k loadings
    ``L`` (orthogonal, by decreasing sum of squares, each with positive skew). ``L @ Q`` does not depend on the
    basis ``L`` is given in (for any orthogonal ``O``, ``L O`` has the same axes), so a rotation started there
    depends only on the space the nodes span; the classic start of varimax (unrotated principal-component
    loadings). From the k × k matrix ``LᵀL``, so it is k × k also with fewer genes than nodes."""
    L = np.asarray(L, dtype=np.float64)
    w, V = np.linalg.eigh(L.T @ L)
    Q = V[:, np.argsort(-w, kind="stable")]
    sign = np.sign(_skew(L @ Q))
    sign[sign == 0] = 1
    return Q * sign


MAX_DENSITY = 0.5  # sparse_rotation: a node with more than this share of the genes beyond the penalty is dense


def sparse_rotation(A: np.ndarray, *, seed: int = 0, threshold: float = 2.0) -> np.ndarray:
    """Oblique sparse rotation ``T`` (k × k, unit-length columns) of genes × k loadings ``A`` (e.g. varimax-rotated
    structure loadings): ``A @ T`` are the loadings on the new nodes.

    Varimax keeps nodes orthogonal, so programs whose activities are not orthogonal cannot each get a node (six
    discrete cell groups span only five centred directions). Here each gene's loading row is written as a sparse
    combination of k unit-length *atoms* (sparse dictionary learning, Mairal et al. 2009;
    ``sklearn.decomposition.DictionaryLearning``, coordinate descent, started from ``A``'s own axes): minimise
    ``½‖A − U D‖² + α‖U‖₁`` over codes ``U`` and atoms ``D``, with ``α = threshold × σ``, ``σ`` the robust
    noise level of one loading (1.4826 × the median |loading| over the genes with any non-zero loading; most
    genes carry no program), so a gene is coded by an atom only where its loading stands ``threshold`` noise SDs
    out. The atoms are the new nodes: ``T = Dᵀ``, and ``A @ T`` are the genes' correlations with the nodes'
    activities when ``A`` holds correlations with whitened activities. Columns get positive skew and are ordered
    by decreasing variance. ``seed`` seeds scikit-learn's re-initialisation of an atom no gene uses (genodae
    passes 0, so the nodes depend on ``A`` only).

    Directions no gene loads on (a dead node, fewer genes than nodes) are kept as nodes of their own (zero
    weights) and the atoms are learnt in the others. Returns the identity, with a warning, when the atoms found
    are nearly linearly dependent (condition number of ``T`` above 1e4: the nodes must stay an invertible map of
    the embedding; k discrete groups span only k − 1 centred directions, so their atoms can come close) or two
    nearly coincide (|cosine| above 0.95: scikit-learn re-seeds an atom no gene uses with a gene's loadings, which
    can duplicate a program's node when the loadings carry fewer programs than nodes and few genes).

    Dense programs: a column of ``A`` with more than half of the genes beyond the penalty (``MAX_DENSITY``) is no
    sparse program and breaks the premise of the noise level; left in, every atom leans toward it and the nodes
    become near copies of one another (a toy with one program on 80 % of 200 or 1,500 genes: 59-97 % of the
    nodes had another node with |r| > 0.8 of their weights; TCGA BRCA, 200 genes, 3 such columns: 83 % at
    |r| > 0.7). Such a column keeps its own (varimax) node, and the atoms are learnt in the others (recursively,
    as the noise level is re-estimated without it).
    """
    from sklearn.decomposition import DictionaryLearning
    from sklearn.exceptions import ConvergenceWarning

    A = np.asarray(A, dtype=np.float64)
    k = A.shape[1]
    rows, cols = np.any(A != 0, axis=1), np.any(A != 0, axis=0)  # genes and nodes with any non-zero loading
    live = np.abs(A[np.ix_(rows, cols)])
    sigma = 1.4826 * float(np.median(live)) if live.size else 0.0
    dense = np.zeros(k, bool)
    if sigma > 0:
        dense[cols] = (live > threshold * sigma).mean(axis=0) > MAX_DENSITY
    if dense.any() and dense.sum() < cols.sum():  # dense programs keep their nodes; the atoms are learnt in the rest
        keep, own = np.flatnonzero(~dense), np.flatnonzero(dense)
        T = np.zeros((k, k))
        T[np.ix_(keep, np.arange(len(keep)))] = sparse_rotation(A[:, keep], seed=seed, threshold=threshold)
        T[own, len(keep) + np.arange(len(own))] = 1.0
        return _signed_by_variance(A[rows], T)
    w, V = np.linalg.eigh(A.T @ A)
    order = np.argsort(-w, kind="stable")
    w, V = w[order], V[:, order]
    r = int((w > max(w[0], 0.0) * 1e-12).sum()) if k else 0  # directions the genes load on
    if k < 2 or r < 2 or sigma == 0 or rows.sum() < r:
        return np.eye(k)
    B, basis = (A, np.eye(k)) if r == k else (A @ V[:, :r], V[:, :r])  # the atoms' coordinates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dl = DictionaryLearning(n_components=r, alpha=threshold * sigma, fit_algorithm="cd",
                                transform_algorithm="lasso_cd", max_iter=100, tol=1e-4, dict_init=np.eye(r),
                                code_init=B, random_state=seed).fit(B)
    D = np.asarray(dl.components_, dtype=np.float64)
    norms = np.linalg.norm(D, axis=1, keepdims=True)
    D = np.where(norms > 0, D / np.where(norms > 0, norms, 1.0), np.eye(r))
    T = np.c_[basis @ D.T, V[:, r:]]  # the atoms, then the null directions (orthogonal to them)
    cond = np.linalg.cond(T) if np.isfinite(T).all() else np.inf
    cos = np.abs(D @ D.T)[np.triu_indices(r, 1)].max()  # scikit-learn re-seeds an unused atom with a gene's row
    if cond > 1e4 or cos > 0.95:
        log.warning("sparse rotation: the atoms found are nearly linearly dependent (condition number %.3g, largest "
                    "|cosine| between two %.3f); the nodes stay the varimax nodes", cond, cos)
        return np.eye(k)
    return _signed_by_variance(A[rows], T)


def _signed_by_variance(A: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``T``'s columns signed so that the nodes' loadings ``A @ T`` have positive skew, ordered by their variance
    (``A``: the genes with any non-zero loading, so that constant genes change neither)."""
    sign = np.sign(_skew(A @ T))
    sign[sign == 0] = 1
    T = T * sign
    order = np.argsort(-(A @ T).var(axis=0), kind="stable")
    return T[:, order]


def rotate_loadings(L: np.ndarray, method: str = "sparse", *, seed: int = 0) -> np.ndarray:
    """k × k transform ``T`` of genes × k loadings ``L`` into the readable nodes ``L @ T``: ``varimax`` (orthogonal;
    :func:`varimax` started from :func:`principal_axes`) or ``sparse`` (oblique; that varimax, then
    :func:`sparse_rotation`). The result depends on the space ``L``'s columns span, not on their basis (up to the
    float error of the searches), so re-rotating nodes that are already readable changes little."""
    if method not in ("varimax", "sparse"):
        raise ValueError(f"rotation method must be 'varimax' or 'sparse', not {method!r}")
    L = np.asarray(L, dtype=np.float64)
    Q = principal_axes(L)
    R = Q @ varimax(L @ Q)
    return R if method == "varimax" else R @ sparse_rotation(L @ R, seed=seed)


def _skew(L: np.ndarray) -> np.ndarray:
    """Skewness of each column (scipy's, biased as a moment ratio); 0 for a column without spread."""
    from scipy.stats import skew

    with warnings.catch_warnings():  # a (near-)constant column: "precision loss", and nan, which is 0 here
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nan_to_num(skew(np.asarray(L, dtype=np.float64), axis=0), nan=0.0)


def _moments(Z: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with 1/n) of the rows of ``Z``, accumulated in float64 a chunk of rows at a time
    (no float64 copy of ``Z``)."""
    n, k = Z.shape
    s, ss = np.zeros(k), np.zeros((k, k))
    for i in range(0, n, chunk):
        z = np.asarray(Z[i : i + chunk], dtype=np.float64)
        s += z.sum(axis=0)
        ss += z.T @ z
    mu = s / max(n, 1)
    return mu, ss / max(n, 1) - np.outer(mu, mu)


def _spanned(C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues, eigenvectors (ascending) of a covariance ``C``, and the directions whitening keeps (variance
    above 1e-10 of the largest)."""
    w, V = np.linalg.eigh((C + C.T) / 2)
    return w, V, w > 1e-10 * max(w.max(), 1e-300)


def _inverse_sqrt(C: np.ndarray) -> np.ndarray:
    w, V, keep = _spanned(C)
    inv = np.zeros_like(w)
    inv[keep] = w[keep] ** -0.5
    return (V * inv) @ V.T


def whitening(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, M) such that ``(Z - mean) @ M`` has identity covariance (symmetric ZCA whitening; a degenerate
    direction gets weight 0 instead of blowing up). ``Z``: cells × k; moments in float64, row chunk by chunk."""
    mu, C = _moments(np.asarray(Z))
    return mu, _inverse_sqrt(C)


def spanned_whitening(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, M, r): :func:`whitening` when ``Z`` (cells × k) spans all k directions (r = k); when it spans only
    r < k, the first r columns of ``(Z − mean) @ M`` whiten the directions it spans (PCA whitening) and the
    other k − r columns of ``M`` are 0."""
    mu, C = _moments(np.asarray(Z))
    w, V, keep = _spanned(C)
    k, r = len(w), int(keep.sum())
    if r == k:
        return mu, (V * w**-0.5) @ V.T, r
    M = np.zeros((k, k))
    M[:, :r] = V[:, keep] / np.sqrt(w[keep])
    return mu, M, r


def readable_basis(Z: np.ndarray, loadings_of, method: str = "varimax", *, seed: int = 0) -> dict:
    """The readable basis of an embedding (``method``: ``varimax`` or ``sparse``): the map to it, and the genes'
    correlations with it.

    ``Z``: cells × k, any float dtype; never copied whole. ``loadings_of(mu, M)`` must return every gene's Pearson
    correlation with each column of ``(Z − mu) @ M`` (genes × k; ``M`` k × k).

    - ``varimax`` (orthogonal; the model default): the centred embedding is rotated, ``(Z − mean) @ Q`` with ``Q``
      orthogonal, so **distances between cells are exactly those of ``Z``** (neighbours, UMAP, clustering and
      integration scores as trained). ``Q`` is Kaiser's varimax (:func:`rotate_loadings`) of the genes'
      covariance loadings ``cov(gene, Z)/sd(gene)`` (genes × k; these rotate with ``Q``, so the criterion sees
      each direction with the spread it has in ``Z``). Each node's weights are the genes' correlations with it.
    - ``sparse`` (oblique): ``Z`` is whitened (:func:`whitening`: mean, ``M``), the genes' correlations with the
      whitened activities (the *structure loadings* of factor analysis) are rotated (``R`` =
      :func:`rotate_loadings` with ``sparse``: varimax, then :func:`sparse_rotation`; ``seed`` seeds the
      dictionary learning), and each new activity is scaled by the standard deviation of ``Z`` it accounts for,
      ``d_j = sqrt((Rᵀ C R)_jj)`` (``C`` the covariance of ``Z``). Nodes may correlate, as programs do, and the
      embedding's distances are not those of ``Z`` (bench/results/integration_genodae*_2026-12-07.md: scib
      bio conservation 0.90 → 0.73 on CEL-seq2); the signatures' read-out (:func:`genodae.tl.signatures`).

    Returns ``mean`` (k), ``transform`` (k × k, readable embedding = ``(Z − mean) @ transform``), ``weights``
    (genes × k: each gene's correlation with each readable node; 0 for a node without spread) and ``rank`` (of
    ``C``; below k, ``sparse`` does not rotate and the caller should keep the trained basis, while ``varimax``
    still rotates and k − rank nodes are (nearly) empty). Both depend only on the space ``Z`` spans and
    its metric (for ``sparse`` only on the space), not on the basis it is given in (the rotation starts from
    :func:`principal_axes`).
    """
    if method not in ("varimax", "sparse"):
        raise ValueError(f"rotation method must be 'varimax' or 'sparse', not {method!r}")
    Z = np.asarray(Z)
    mu, C = _moments(Z)
    k = C.shape[0]
    rank = int(_spanned(C)[2].sum()) if Z.shape[0] > 1 else 0  # the directions whitening keeps (as _inverse_sqrt)
    if method == "varimax":
        sd = np.sqrt(np.clip(np.diag(C), 0, None))
        Lc = np.asarray(loadings_of(mu, np.eye(k)), dtype=np.float64) * sd  # cov(gene, Z) / sd(gene)
        Q = rotate_loadings(Lc, "varimax")  # orthogonal: needs no full rank (directions without spread: empty nodes)
        sd_q = np.sqrt(np.clip(np.einsum("ij,ik,kj->j", Q, C, Q), 0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            W = np.where(sd_q > 0, (Lc @ Q) / np.where(sd_q > 0, sd_q, 1.0), 0.0)
        return {"mean": mu, "transform": Q, "weights": W, "rank": rank}
    M = _inverse_sqrt(C)
    L = np.asarray(loadings_of(mu, M), dtype=np.float64)
    R = rotate_loadings(L, method, seed=seed) if rank == k else np.eye(k)  # rank < k: no basis (the caller says so)
    d = np.sqrt(np.clip(np.einsum("ij,ik,kj->j", R, C, R), 0, None))
    return {"mean": mu, "transform": M @ R * d, "weights": L @ R, "rank": rank}


__all__ = ["principal_axes", "readable_basis", "rotate_loadings", "sparse_rotation", "spanned_whitening", "varimax",
           "whitening"]
