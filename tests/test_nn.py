"""genodae.nn: masking noise, the network, gene weights and the losses (pure torch, tiny tensors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from genodae.nn import DenoisingAutoencoder, corrupt, noise_seed, reduce_loss


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _nonzero_input(n: int = 400, g: int = 250, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, g, generator=_gen(seed)) + 0.5  # no entry is zero before masking


# --- masking noise ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("corruption", [0.1, 0.3, 0.6])
def test_masking_zeroes_the_corruption_fraction_of_input_entries(corruption):
    x = _nonzero_input()
    before = x.clone()
    xc, mask = corrupt(x, corruption, generator=_gen(1))
    assert torch.equal(x, before), "corrupt must not modify its input in place"
    assert mask is not None and mask.dtype == torch.bool and mask.shape == x.shape
    # ~100k entries: the fraction is within a few standard errors (sd ≈ 0.0015) of the corruption level
    assert abs(mask.float().mean().item() - corruption) < 0.01
    # the mask marks exactly the zeroed entries, and nothing else changes
    assert torch.equal(xc == 0, mask)
    assert torch.equal(xc[~mask], x[~mask])
    # the mask is spread over cells and genes, not whole rows/columns
    assert mask.any(1).all() and mask.any(0).all()
    assert not mask.all(1).any() and not mask.all(0).any()


def test_no_noise_returns_the_input_and_no_mask():
    x = _nonzero_input(10, 5)
    xc, mask = corrupt(x, 0.0, 0.0, generator=_gen(0))
    assert mask is None
    assert torch.equal(xc, x)


def test_gaussian_noise_is_additive_with_the_requested_sd():
    x = _nonzero_input()
    xc, mask = corrupt(x, 0.0, 0.5, generator=_gen(3))
    assert mask is None
    d = xc - x
    assert abs(d.mean().item()) < 0.01
    assert abs(d.std().item() - 0.5) < 0.01


def test_same_generator_seed_same_mask_different_seed_different_mask():
    x = _nonzero_input(50, 40)
    _, m1 = corrupt(x, 0.2, generator=_gen(7))
    torch.manual_seed(123)  # the global RNG must play no part
    _, m2 = corrupt(x, 0.2, generator=_gen(7))
    _, m3 = corrupt(x, 0.2, generator=_gen(8))
    assert torch.equal(m1, m2)
    assert not torch.equal(m1, m3)


@pytest.mark.parametrize("gaussian", [0.0, 0.3])
def test_a_ranks_rows_of_a_global_batch_get_the_single_process_noise(gaussian):
    x = _nonzero_input(12, 30)
    full, full_mask = corrupt(x, 0.25, gaussian, generator=_gen(42))
    for lo, hi in ((0, 4), (4, 8), (8, 12), (9, 12)):  # equal ranks, and a short last rank
        part, part_mask = corrupt(x[lo:hi], 0.25, gaussian, generator=_gen(42), global_rows=12, offset=lo)
        assert torch.equal(part, full[lo:hi])
        assert torch.equal(part_mask, full_mask[lo:hi])


def test_noise_seed_is_a_63_bit_key_without_collisions():
    keys = [noise_seed(s, e, k) for s in range(3) for e in range(20) for k in range(-2, 30)]
    assert all(0 <= v < 2**63 for v in keys)
    assert len(set(keys)) == len(keys)
    assert noise_seed(0, 1, 2) == noise_seed(0, 1, 2)


# --- the network ------------------------------------------------------------------------------------------


def _linears(seq) -> list[torch.nn.Linear]:
    return [m for m in seq.modules() if isinstance(m, torch.nn.Linear)]


def test_encoder_and_mlp_decoder_layer_sizes():
    m = DenoisingAutoencoder(40, 6, hidden=(32, 16), decoder="mlp", norm="batch", dropout=0.1)
    enc = [(lin.in_features, lin.out_features) for lin in _linears(m.encoder)]
    dec = [(lin.in_features, lin.out_features) for lin in _linears(m.decoder)]
    assert enc == [(40, 32), (32, 16), (16, 6)]
    assert dec == [(6, 16), (16, 32), (32, 40)]  # the mirror of the encoder
    assert sum(isinstance(x, torch.nn.BatchNorm1d) for x in m.modules()) == 4
    assert sum(isinstance(x, torch.nn.Dropout) for x in m.modules()) == 4
    z, logits = m.eval()(torch.rand(5, 40))
    assert z.shape == (5, 6) and logits.shape == (5, 40)


def test_latent_activation_is_applied_to_the_bottleneck():
    m = DenoisingAutoencoder(20, 4, hidden=(8,), latent_activation="sigmoid")
    z = m.encode(torch.randn(30, 20) * 10)
    assert ((z > 0) & (z < 1)).all()


def test_linear_decoder_gene_weights_are_genes_by_latent_decoder_weights():
    m = DenoisingAutoencoder(25, 7, hidden=(16,), decoder="linear")
    w = m.linear_gene_weights()
    assert w.shape == (25, 7)
    assert torch.equal(w, m.decoder.weight)
    z = torch.randn(3, 7)
    assert torch.allclose(m.decode(z), z @ w.T + m.decoder.bias)


def test_tied_weights_share_the_encoder_matrix():
    m = DenoisingAutoencoder(30, 5, hidden=(), tied=True, decoder="linear", latent_activation="sigmoid")
    enc = m.encoder[0].weight
    assert enc.shape == (5, 30)
    # no separate decoder matrix: encoder W and b, decoder bias only
    assert sum(p.numel() for p in m.parameters()) == 30 * 5 + 5 + 30
    assert torch.equal(m.linear_gene_weights(), enc.detach().t())
    z = torch.rand(4, 5)
    assert torch.allclose(m.decode(z), z @ enc + m.decoder_bias)
    # a change of the encoder matrix is a change of the decoder, and decoder gradients reach it
    with torch.no_grad():
        enc.mul_(2.0)
    assert torch.allclose(m.decode(z), z @ enc + m.decoder_bias)
    m.decode(z).sum().backward()
    assert enc.grad is not None and enc.grad.abs().sum() > 0


def test_tied_weights_refuse_hidden_layers():
    with pytest.raises(ValueError):
        DenoisingAutoencoder(30, 5, hidden=(10,), tied=True)


def test_mean_jacobian_of_linear_decoder_with_linear_output_is_the_decoder_weight():
    torch.manual_seed(0)
    m = DenoisingAutoencoder(20, 4, hidden=(8,), decoder="linear", output_activation="linear").eval()
    z = torch.randn(37, 4)
    J = m.mean_jacobian(z, chunk=10)  # several chunks
    assert J.shape == (20, 4)
    torch.testing.assert_close(J, m.decoder.weight.detach(), rtol=1e-5, atol=1e-6)


def test_mean_jacobian_with_sigmoid_output_matches_the_chain_rule():
    torch.manual_seed(1)
    m = DenoisingAutoencoder(15, 3, decoder="linear", output_activation="sigmoid").eval()
    z = torch.randn(11, 3)
    W = m.decoder.weight.detach()
    s = torch.sigmoid(z @ W.T + m.decoder.bias.detach())
    expected = ((s * (1 - s)).unsqueeze(2) * W.unsqueeze(0)).mean(0)
    torch.testing.assert_close(m.mean_jacobian(z, chunk=4), expected, rtol=1e-5, atol=1e-6)


def test_mean_jacobian_of_mlp_decoder_matches_autograd():
    torch.manual_seed(2)
    m = DenoisingAutoencoder(12, 3, hidden=(10, 6), decoder="mlp", activation="tanh").eval()
    z = torch.randn(5, 3)
    expected = torch.stack([
        torch.autograd.functional.jacobian(lambda v: m.output(m.decode(v.unsqueeze(0))).squeeze(0), zi)
        for zi in z
    ]).mean(0)
    got = m.mean_jacobian(z, chunk=2)
    assert got.shape == (12, 3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        m.linear_gene_weights()


# --- likelihoods ------------------------------------------------------------------------------------------


def _nll(logits, target, likelihood="normal", output_activation="sigmoid", library=None, z=None):
    m = DenoisingAutoencoder(target.shape[1], 2, gene_likelihood=likelihood, output_activation=output_activation)
    z = torch.zeros(target.shape[0], 2) if z is None else z
    return m, m.nll(z, logits, target, library)


def test_bce_with_logits_equals_manual_binary_cross_entropy():
    g = _gen(0)
    logits = torch.randn(8, 6, generator=g) * 3
    target = torch.rand(8, 6, generator=g)
    p = torch.sigmoid(logits.double())
    manual = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    got = reduce_loss(_nll(logits, target, "bernoulli")[1])
    torch.testing.assert_close(got.double(), manual, rtol=1e-5, atol=1e-6)


def test_bce_is_stable_for_extreme_logits():
    logits = torch.tensor([[100.0, -100.0]])
    target = torch.tensor([[1.0, 0.0]])
    got = reduce_loss(_nll(logits, target, "bernoulli")[1])
    assert torch.isfinite(got) and got.item() < 1e-6


def test_squared_error_is_on_the_output_scale():
    g = _gen(1)
    logits = torch.randn(5, 4, generator=g)
    target = torch.rand(5, 4, generator=g)
    got = reduce_loss(_nll(logits, target, "normal", "sigmoid")[1])
    torch.testing.assert_close(got, (torch.sigmoid(logits) - target).square().mean())
    got_lin = reduce_loss(_nll(logits, target, "normal", "linear")[1])
    torch.testing.assert_close(got_lin, F.mse_loss(logits, target))


def test_masked_loss_counts_only_masked_entries():
    g = _gen(2)
    logits = torch.randn(10, 8, generator=g)
    target = torch.rand(10, 8, generator=g)
    mask = torch.rand(10, 8, generator=g) < 0.3
    per = _nll(logits, target)[1]
    got = reduce_loss(per, mask)
    torch.testing.assert_close(got, ((torch.sigmoid(logits) - target).square())[mask].mean())
    # changing the reconstruction of unmasked entries leaves the loss unchanged
    other = logits.clone()
    other[~mask] += 5.0
    per2 = _nll(other, target)[1]
    torch.testing.assert_close(reduce_loss(per2, mask), got)
    # ... while an unmasked loss sees it
    assert reduce_loss(per2) != reduce_loss(per)


def _count_case(seed=3, n=40, g=30):
    rng = np.random.default_rng(seed)
    logits = torch.tensor(rng.normal(0, 2, (n, g)), dtype=torch.float32)
    library = torch.tensor(rng.integers(1, 5000, n), dtype=torch.float32)
    mu = (torch.softmax(logits.double(), -1) * library.double()[:, None]).numpy()
    y = rng.poisson(mu * rng.gamma(2.0, 0.5, mu.shape))  # overdispersed, many zeros and some large counts
    return logits, torch.tensor(y, dtype=torch.float32), library, mu, y


@pytest.mark.parametrize("likelihood", ["poisson", "nb", "zinb"])
def test_count_likelihoods_match_scipy_log_pmfs(likelihood):
    from scipy import stats

    logits, y_t, library, mu, y = _count_case()
    m = DenoisingAutoencoder(y.shape[1], 2, gene_likelihood=likelihood)
    rng = np.random.default_rng(4)
    with torch.no_grad():
        if likelihood != "poisson":
            m.log_theta.copy_(torch.tensor(rng.normal(0, 1.5, y.shape[1]), dtype=torch.float32))
        if likelihood == "zinb":
            m.dropout_head.bias.copy_(torch.tensor(rng.normal(-1, 1, y.shape[1]), dtype=torch.float32))
    z = torch.tensor(rng.normal(0, 1, (y.shape[0], 2)), dtype=torch.float32)
    got = m.nll(z, logits, y_t, library).double().detach().numpy()
    if likelihood == "poisson":
        want = -stats.poisson.logpmf(y, mu)
    else:
        theta = np.exp(m.log_theta.detach().double().numpy())[None, :]
        nb = stats.nbinom.logpmf(y, theta, theta / (theta + mu))  # scipy: n = theta, p = theta / (theta + mu)
        if likelihood == "nb":
            want = -nb
        else:
            pi = torch.sigmoid(m.dropout_head(z)).double().detach().numpy()
            want = -np.log(np.where(y == 0, pi + (1 - pi) * np.exp(nb), (1 - pi) * np.exp(nb)))
    assert np.isfinite(got).all()
    # float32 log-means: counts in the thousands multiply their rounding (~1e-7 relative) into ~3e-4 of the NLL
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(np.median(np.abs(got - want)), 0, atol=1e-5)  # typical entries: exact to 1e-5


@pytest.mark.parametrize("likelihood", ["poisson", "nb", "zinb"])
def test_count_likelihoods_are_finite_at_extremes_and_under_bf16(likelihood):
    # tiny means (logit -80), huge counts, a zero library, bf16 decoder outputs: finite values and gradients
    m = DenoisingAutoencoder(3, 2, gene_likelihood=likelihood)
    logits = torch.tensor([[-80.0, 0.0, 80.0], [0.0, 0.0, 0.0], [5.0, -5.0, 0.0]], requires_grad=True)
    y = torch.tensor([[0.0, 3.0, 1e5], [0.0, 0.0, 0.0], [2e4, 0.0, 7.0]])
    lib = y.sum(1)
    z = torch.randn(3, 2)
    for lg in (logits, logits.bfloat16()):
        per = m.nll(z, lg, y, lib)
        assert per.dtype == torch.float32 and torch.isfinite(per).all()
        per.sum().backward(retain_graph=True)
        assert torch.isfinite(logits.grad).all()
        if likelihood != "poisson":
            assert torch.isfinite(m.log_theta.grad).all()


@pytest.mark.parametrize("likelihood", ["poisson", "nb", "zinb"])
def test_sparse_and_dense_count_targets_give_the_same_nll_and_gradients(likelihood):
    logits, y, library, _, _ = _count_case(seed=7)
    m = DenoisingAutoencoder(y.shape[1], 2, gene_likelihood=likelihood)
    z = torch.randn(y.shape[0], 2)
    out = []
    for target in (y, y.to_sparse()):
        lg = logits.clone().requires_grad_(True)
        m.zero_grad()
        per = m.nll(z, lg, target, library)
        per.sum().backward()
        out.append((per.detach(), lg.grad, *(p.grad.clone() for p in m.parameters() if p.grad is not None)))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_count_output_is_a_softmax_and_needs_a_library():
    m = DenoisingAutoencoder(6, 2, gene_likelihood="nb")
    x = torch.rand(4, 6)
    r = m.reconstruct(x)
    torch.testing.assert_close(r.sum(1), torch.ones(4))
    z, logits = m(x)
    with pytest.raises(ValueError, match="library"):
        m.nll(z, logits, torch.ones(4, 6))
    with pytest.raises(ValueError, match="gene_likelihood"):
        DenoisingAutoencoder(6, 2, gene_likelihood="gaussian")



def test_rescaled_masking_keeps_the_expected_input():
    x = torch.rand(400, 50) + 0.5
    xc, mask = corrupt(x, 0.3, generator=_gen(11), rescale=True)
    torch.testing.assert_close(xc[~mask], x[~mask] / 0.7)  # inverted dropout on the entries left
    assert (xc[mask] == 0).all()
    assert abs(xc.mean().item() - x.mean().item()) < 0.02 * x.mean().item()  # same expected value
    plain, mask2 = corrupt(x, 0.3, generator=_gen(11))
    assert torch.equal(mask, mask2) and torch.equal(plain[~mask], x[~mask])  # ADAGE's masking: no rescale
