"""genodae.rotation: the readable basis of an embedding (whitening + varimax of the genes' correlations)."""

from __future__ import annotations

import numpy as np

from genodae.rotation import readable_basis, whitening


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


def test_readable_basis_depends_only_on_the_space_spanned_and_finds_the_programs():
    """Any invertible mixing of the embedding gives the same nodes (whitening + varimax), and with independent
    programs each node's high-weight genes are one program's genes."""
    X, S = _data()
    rng = np.random.default_rng(2)
    mix = rng.normal(size=(4, 4))
    a = readable_basis(S, lambda mu, M: _corr(X, (S - mu) @ M))
    b = readable_basis(S @ mix, lambda mu, M: _corr(X, (S @ mix - mu) @ M))
    np.testing.assert_allclose(np.abs(a["weights"]), np.abs(b["weights"]), atol=1e-4)  # varimax tolerance
    top = [set(np.argsort(-np.abs(a["weights"][:, j]))[:10] // 10) for j in range(4)]
    assert all(len(t) == 1 for t in top) and {t.pop() for t in top} == {0, 1, 2, 3}
    E = (S @ mix - b["mean"]) @ b["transform"]
    np.testing.assert_allclose(np.corrcoef(E.T), np.eye(4), atol=1e-6)  # uncorrelated nodes
    C = np.cov(S @ mix, rowvar=False, bias=True)
    assert np.isclose(E.var(axis=0).sum(), np.trace(C), rtol=1e-6)  # the total variance is kept
    assert a["rank"] == 4
