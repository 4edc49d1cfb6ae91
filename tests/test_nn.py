"""genodae.nn: masking noise, the network, gene weights and the losses (pure torch, tiny tensors)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from genodae.nn import DenoisingAutoencoder, corrupt, noise_seed, reconstruction_loss


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


# --- losses -----------------------------------------------------------------------------------------------


def test_bce_with_logits_equals_manual_binary_cross_entropy():
    g = _gen(0)
    logits = torch.randn(8, 6, generator=g) * 3
    target = torch.rand(8, 6, generator=g)
    p = torch.sigmoid(logits.double())
    manual = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    got = reconstruction_loss(logits, target, loss="bce", output_activation="sigmoid")
    torch.testing.assert_close(got.double(), manual, rtol=1e-5, atol=1e-6)


def test_bce_is_stable_for_extreme_logits():
    logits = torch.tensor([[100.0, -100.0]])
    target = torch.tensor([[1.0, 0.0]])
    got = reconstruction_loss(logits, target, loss="bce", output_activation="sigmoid")
    assert torch.isfinite(got) and got.item() < 1e-6


def test_mse_is_on_the_output_scale():
    g = _gen(1)
    logits = torch.randn(5, 4, generator=g)
    target = torch.rand(5, 4, generator=g)
    got = reconstruction_loss(logits, target, loss="mse", output_activation="sigmoid")
    torch.testing.assert_close(got, (torch.sigmoid(logits) - target).square().mean())
    got_lin = reconstruction_loss(logits, target, loss="mse", output_activation="linear")
    torch.testing.assert_close(got_lin, F.mse_loss(logits, target))


def test_masked_loss_counts_only_masked_entries():
    g = _gen(2)
    logits = torch.randn(10, 8, generator=g)
    target = torch.rand(10, 8, generator=g)
    mask = torch.rand(10, 8, generator=g) < 0.3
    got = reconstruction_loss(logits, target, loss="mse", output_activation="sigmoid", mask=mask)
    per = (torch.sigmoid(logits) - target).square()
    torch.testing.assert_close(got, per[mask].mean())
    # changing the reconstruction of unmasked entries leaves the loss unchanged
    other = logits.clone()
    other[~mask] += 5.0
    got2 = reconstruction_loss(other, target, loss="mse", output_activation="sigmoid", mask=mask)
    torch.testing.assert_close(got2, got)
    # ... while an unmasked loss sees it
    assert reconstruction_loss(other, target, loss="mse", output_activation="sigmoid") != reconstruction_loss(
        logits, target, loss="mse", output_activation="sigmoid")


def test_per_entry_loss_with_reduction_none():
    logits = torch.zeros(3, 2)
    target = torch.ones(3, 2)
    per = reconstruction_loss(logits, target, loss="mse", output_activation="sigmoid", reduction="none")
    assert per.shape == (3, 2)
    torch.testing.assert_close(per, torch.full((3, 2), 0.25))
