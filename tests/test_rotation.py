"""genodae.rotation: the readable basis of an embedding (whitening + varimax, then sparse coding, of the genes'
correlations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genodae.kernels import module_recovery
from genodae.rotation import principal_axes, readable_basis, rotate_loadings, sparse_rotation, whitening


def _data(seed=0, n=2000, g=60, k=4):
    rng = np.random.default_rng(seed)
    S = rng.gamma(2.0, 1.0, size=(n, k))  # independent programs
    M = np.zeros((k, g))
    for j in range(k):
        M[j, j * 10 : (j + 1) * 10] = 1.0  # program j drives genes 10j..10j+9
    X = S @ M + rng.normal(0, 0.5, size=(n, g))
    return X, S


def _corr(X, Zw):
    Xc, Zc = X - X.mean(0), Zw - Zw.mean(0)
    return (Xc.T @ Zc) / len(X) / np.outer(Xc.std(0), Zc.std(0))


def test_whitening_gives_identity_covariance_in_float64_moments():
    rng = np.random.default_rng(1)
    Z = (rng.normal(size=(5000, 3)) @ np.array([[2.0, 0.5, 0], [0, 1.0, 0.3], [0, 0, 0.2]])).astype(np.float32)
    mu, M = whitening(Z)
    W = (Z - mu) @ M
    np.testing.assert_allclose(np.cov(W.T, bias=True), np.eye(3), atol=1e-6)


def test_sparse_basis_depends_only_on_the_space_spanned_and_finds_the_programs():
    """Any invertible mixing of the embedding gives the same sparse nodes (whitening, a start from the loadings'
    principal axes), and with independent programs each node's high-weight genes are one program's genes."""
    X, S = _data()
    rng = np.random.default_rng(2)
    mix = rng.normal(size=(4, 4))
    a = readable_basis(S, lambda mu, M: _corr(X, (S - mu) @ M), "sparse")
    b = readable_basis(S @ mix, lambda mu, M: _corr(X, (S @ mix - mu) @ M), "sparse")
    np.testing.assert_allclose(np.abs(a["weights"]), np.abs(b["weights"]), atol=1e-4)  # search tolerance
    top = [set(np.argsort(-np.abs(a["weights"][:, j]))[:10] // 10) for j in range(4)]
    assert all(len(t) == 1 for t in top) and {t.pop() for t in top} == {0, 1, 2, 3}
    E = (S @ mix - b["mean"]) @ b["transform"]
    np.testing.assert_allclose(_corr(X, E), b["weights"], atol=1e-8)  # weights = correlations with the nodes
    assert a["rank"] == 4


def test_varimax_basis_keeps_distances_between_cells_and_finds_the_programs():
    """The default basis is an orthogonal rotation of the centred embedding: every distance between cells is
    kept, any rotation (and shift) of the embedding gives the same nodes, and with independent programs each
    node's high-weight genes are one program's genes; weights = the genes' correlations with the nodes."""
    X, S = _data()
    rng = np.random.default_rng(2)
    rot, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    Z = S @ rot + 3.0
    a = readable_basis(S, lambda mu, M: _corr(X, (S - mu) @ M), "varimax")
    b = readable_basis(Z, lambda mu, M: _corr(X, (Z - mu) @ M), "varimax")
    np.testing.assert_allclose(np.abs(a["weights"]), np.abs(b["weights"]), atol=1e-4)  # search tolerance
    np.testing.assert_allclose(b["transform"].T @ b["transform"], np.eye(4), atol=1e-10)  # orthogonal
    E = (Z - b["mean"]) @ b["transform"]
    i, j = rng.integers(0, len(Z), 200), rng.integers(0, len(Z), 200)
    np.testing.assert_allclose(np.linalg.norm(E[i] - E[j], axis=1), np.linalg.norm(Z[i] - Z[j], axis=1), rtol=1e-9)
    np.testing.assert_allclose(_corr(X, E), b["weights"], atol=1e-8)  # weights = correlations with the nodes
    top = [set(np.argsort(-np.abs(b["weights"][:, j]))[:10] // 10) for j in range(4)]
    assert all(len(t) == 1 for t in top) and {t.pop() for t in top} == {0, 1, 2, 3}
    assert b["rank"] == 4


def _groups(seed, n=2000, g=800, groups=6, k=12, size=20, sd=2.0):
    """Discrete groups (one module of ``size`` genes up in each, weak against noise ``sd``), embedded with
    k − groups + 1 noise columns: the groups' centred indicators span groups − 1 directions, so no orthogonal
    basis gives each group a node."""
    rng = np.random.default_rng(seed)
    ind = np.eye(groups)[rng.integers(0, groups, n)]
    M = np.zeros((groups, g))
    for j in range(groups):
        M[j, j * size : (j + 1) * size] = 1.0
    X = ind @ M + rng.normal(0, sd, size=(n, g))
    Z = np.c_[ind[:, : groups - 1], rng.normal(size=(n, k - groups + 1))] @ rng.normal(size=(k, k))
    Z = Z + rng.normal(0, 0.3, size=Z.shape)
    modules = {f"m{j}": [f"g{i}" for i in range(j * size, (j + 1) * size)] for j in range(groups)}
    return X, Z, modules


def test_sparse_basis_gives_each_discrete_group_a_node_where_varimax_cannot(caplog):
    gains = []
    for seed in range(5):
        X, Z, modules = _groups(seed)
        f1 = {}
        for method in ("varimax", "sparse"):
            b = readable_basis(Z, lambda mu, M, X=X, Z=Z: _corr(X, (Z - mu) @ M), method)
            W = pd.DataFrame(b["weights"], index=[f"g{i}" for i in range(X.shape[1])])
            f1[method] = module_recovery(W, modules)["f1"].mean()
        assert f1["sparse"] >= f1["varimax"] - 0.005, (seed, f1)
        gains.append(f1["sparse"] - f1["varimax"])
        if seed == 1:  # the case varimax gets most wrong
            assert f1["sparse"] >= 0.95 and f1["varimax"] < 0.85, f1
    assert np.mean(gains) >= 0.04, gains
    assert "varimax nodes" not in caplog.text  # no fallback


def test_sparse_rotation_unit_atoms_sorted_and_identity_for_degenerate_input():
    X, Z, _ = _groups(1)
    Zw = (Z - Z.mean(0)) @ whitening(Z)[1]
    L = _corr(X, Zw)
    T = rotate_loadings(L, "sparse")
    np.testing.assert_allclose(np.linalg.norm(T, axis=0), 1.0, atol=1e-10)
    v = (L @ T).var(axis=0)
    assert np.all(np.diff(v) <= 1e-12)  # ordered by decreasing variance
    np.testing.assert_array_equal(sparse_rotation(np.zeros((50, 3))), np.eye(3))  # no spread: nothing to rotate
    np.testing.assert_array_equal(sparse_rotation(np.ones((50, 1))), np.eye(1))
    Q = principal_axes(L)
    np.testing.assert_allclose(Q.T @ Q, np.eye(Q.shape[0]), atol=1e-10)
    with pytest.raises(ValueError, match="sparse"):
        rotate_loadings(L, "promax")


def test_sparse_rotation_falls_back_to_identity_when_atoms_are_dependent(monkeypatch, caplog):
    import sklearn.decomposition as skd

    class Dependent:  # every atom the same: no invertible map of the embedding
        def __init__(self, n_components, **kw):
            self.k = n_components

        def fit(self, A):
            self.components_ = np.ones((self.k, self.k))
            return self

    monkeypatch.setattr(skd, "DictionaryLearning", Dependent)
    A = np.random.default_rng(0).normal(size=(100, 4))
    with caplog.at_level("WARNING", logger="genodae"):
        np.testing.assert_array_equal(sparse_rotation(A), np.eye(4))
    assert "linearly dependent" in caplog.text and "varimax nodes" in caplog.text


@pytest.mark.parametrize("method", ["varimax", "sparse"])
def test_fewer_genes_than_nodes_still_give_a_square_rotation(method):
    L = np.random.default_rng(0).normal(size=(3, 5))
    T = rotate_loadings(L, method)
    assert T.shape == (5, 5) and np.linalg.matrix_rank(T) == 5


def test_a_dead_node_stays_a_node_of_its_own_and_zero_genes_do_not_move_the_penalty():
    X, Z, _ = _groups(2)
    Zw = (Z - Z.mean(0)) @ whitening(Z)[1]
    L = _corr(X, Zw)
    L[:, 2] = 0.0  # a node no gene loads on
    T = rotate_loadings(L, "sparse")
    W = L @ T
    assert np.linalg.cond(T) < 1e4
    live = W.std(axis=0) > 1e-12
    assert live.sum() == L.shape[1] - 1  # the dead direction is one node, with zero weights
    C = np.abs(np.corrcoef(W[:, live].T)) - np.eye(live.sum())
    assert C.max() < 0.95  # and no two live nodes duplicate each other
    A = L @ rotate_loadings(L, "varimax")
    padded = np.vstack([A, np.zeros((3 * len(A), A.shape[1]))])  # constant genes: zero loading rows
    np.testing.assert_allclose(A @ sparse_rotation(padded), A @ sparse_rotation(A), atol=1e-8)  # same nodes
    L = _dense_program(200, 0.8, seed=2)  # also with a dense program (its own node, signed over live genes)
    A = L @ rotate_loadings(L, "varimax")
    padded = np.vstack([A, np.zeros((3 * len(A), A.shape[1]))])
    np.testing.assert_allclose(A @ sparse_rotation(padded), A @ sparse_rotation(A), atol=1e-8)


def _dense_program(n_genes, frac, seed, k=32):
    """Loadings of one program on ``frac`` of the genes (plus noise), embedded with k − 1 noise columns."""
    rng = np.random.default_rng(seed)
    prog = rng.normal(size=300)
    X = np.outer(prog, rng.uniform(0.5, 1.5, n_genes)) * (rng.random(n_genes) < frac)
    X = X + rng.normal(size=(300, n_genes))
    Z = np.c_[prog + 0.5 * rng.normal(size=300), rng.normal(size=(300, k - 1))]
    mu, M = whitening(Z)
    return _corr(X, (Z - mu) @ M)


def _twin_share(W, r=0.8):
    C = np.abs(np.corrcoef(W.T))
    np.fill_diagonal(C, 0)
    return float((C.max(axis=1) > r).mean())


@pytest.mark.parametrize("n_genes", [200, 1500])
def test_a_program_on_most_genes_keeps_its_own_node_and_the_others_are_not_its_copies(n_genes, monkeypatch):
    import genodae.rotation as RT

    L = _dense_program(n_genes, 0.8, seed=1)
    T = rotate_loadings(L, "sparse")
    assert _twin_share(L @ T) < 0.1
    vm = L @ rotate_loadings(L, "varimax")
    dense = np.argmax(vm.var(axis=0))  # the program's varimax node
    assert np.max(np.abs(np.corrcoef(vm[:, dense], (L @ T).T)[0, 1:])) > 0.999  # kept as a node of its own
    monkeypatch.setattr(RT, "MAX_DENSITY", 1.0)  # without the exclusion every atom leans toward the program
    assert _twin_share(L @ rotate_loadings(L, "sparse")) > 0.5


def test_a_nearly_constant_node_counts_as_not_spanned():
    """A node with almost no spread (variance 1e-14 of the others') is dropped by the whitening, so the rank the
    caller sees must drop too (else the sparse transform is near-singular and its inverse garbage)."""
    X, S = _data()
    Z = np.c_[S, 1.0 + 1e-7 * np.random.default_rng(3).normal(size=len(S))]
    for method in ("sparse", "varimax"):
        b = readable_basis(Z, lambda mu, M, Z=Z: _corr(X, (Z - mu) @ M), method)
        assert b["rank"] == 4, method
        assert np.isfinite(b["transform"]).all() and np.isfinite(b["weights"]).all()
