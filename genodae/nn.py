"""The network, in pure torch: masking noise, the MLP encoder, the decoders and the losses.

This module sees only tensors and ints, never AnnData (``genodae.model`` owns that), so the same
module trains from a notebook, the CLI, a cluster job or several GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "linear": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def noise_seed(seed: int, epoch: int, step: int) -> int:
    """A 63-bit seed for one (seed, epoch, step): the noise of a global batch depends on nothing else.

    Keying the noise by the global batch (not by a generator's running state) makes it independent of
    how many ranks share the batch and of where a resumed run restarted.
    """
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB) & (2**64 - 1)
    # splitmix64 finaliser: decorrelates neighbouring (epoch, step) pairs
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (x ^ (x >> 31)) & (2**63 - 1)


def corrupt(
    x: torch.Tensor,
    corruption: float,
    gaussian_noise: float = 0.0,
    generator: torch.Generator | None = None,
    global_rows: int | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masking noise on the *input*: zero each entry with probability ``corruption``.

    Returns the corrupted copy and the boolean mask of zeroed entries (None when nothing is masked).
    Noise is drawn for a whole global batch of ``global_rows`` rows and this rank's rows
    ``offset : offset + len(x)`` are kept, so data-parallel ranks see exactly the noise a single
    process would.
    """
    if corruption <= 0 and gaussian_noise <= 0:
        return x, None
    n = x.shape[0]
    shape = (global_rows or n, x.shape[1])
    mask = None
    out = x
    if corruption > 0:
        u = torch.rand(shape, generator=generator, device=x.device, dtype=torch.float32)
        mask = u[offset : offset + n] < corruption
        out = out.masked_fill(mask, 0.0)
    if gaussian_noise > 0:
        g = torch.randn(shape, generator=generator, device=x.device, dtype=torch.float32)
        out = out + gaussian_noise * g[offset : offset + n].to(out.dtype)
    return out, mask


def _mlp(sizes: Sequence[int], act: str, dropout: float, norm: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=False):
        layers.append(nn.Linear(n_in, n_out))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(n_out))
        elif norm == "layer":
            layers.append(nn.LayerNorm(n_out))
        layers.append(make_activation(act))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class DenoisingAutoencoder(nn.Module):
    """MLP encoder → bottleneck of ``n_latent`` nodes → linear or MLP decoder.

    ``decode`` returns pre-activation outputs (logits for a sigmoid output), which the losses use for
    numerical stability; ``reconstruct`` applies the output activation.
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        latent_activation: str = "linear",
        dropout: float = 0.0,
        norm: str = "none",
        decoder: str = "linear",
        tied: bool = False,
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        if tied and (hidden or decoder != "linear"):
            raise ValueError("tied weights need no hidden layers and a linear decoder")
        self.n_input, self.n_latent, self.hidden = int(n_input), int(n_latent), tuple(hidden)
        self.decoder_kind, self.tied, self.output_activation = decoder, tied, output_activation
        sizes = [self.n_input, *self.hidden]
        self.encoder = nn.Sequential(
            *_mlp(sizes, activation, dropout, norm),
            nn.Linear(sizes[-1], self.n_latent),
            make_activation(latent_activation),
        )
        if tied:
            self.decoder = None
            self.decoder_bias = nn.Parameter(torch.zeros(self.n_input))
        elif decoder == "linear":
            self.decoder = nn.Linear(self.n_latent, self.n_input)
        else:
            back = [self.n_latent, *reversed(self.hidden)]
            self.decoder = nn.Sequential(*_mlp(back, activation, dropout, norm), nn.Linear(back[-1], self.n_input))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.tied:
            w = self.encoder[0].weight  # (n_latent, n_input): the same matrix read backwards
            return F.linear(z, w.t(), self.decoder_bias)
        return self.decoder(z)

    def output(self, logits: torch.Tensor) -> torch.Tensor:
        return _activation_fn(self.output_activation)(logits)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.decode(self.encode(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decode(z)

    def linear_gene_weights(self) -> torch.Tensor:
        """genes × latent decoder weights (linear or tied decoder only)."""
        if self.tied:
            return self.encoder[0].weight.detach().t()
        if self.decoder_kind != "linear":
            raise ValueError("an MLP decoder has no single weight matrix; use mean_jacobian()")
        return self.decoder.weight.detach()

    def mean_jacobian(self, z: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """Mean over cells of d(reconstruction_g)/d(z_k), genes × latent: the MLP decoder's gene weights."""
        total = torch.zeros(self.n_input, self.n_latent, device=z.device)

        def f(zi: torch.Tensor) -> torch.Tensor:
            return self.output(self.decode(zi.unsqueeze(0))).squeeze(0)

        jac = torch.func.vmap(torch.func.jacfwd(f))
        for start in range(0, z.shape[0], chunk):
            total += jac(z[start : start + chunk]).sum(0)
        return total / max(z.shape[0], 1)


def _activation_fn(name: str):
    return {
        "sigmoid": torch.sigmoid,
        "linear": lambda t: t,
        "relu": F.relu,
        "gelu": F.gelu,
        "elu": F.elu,
        "selu": F.selu,
        "tanh": torch.tanh,
        "leaky_relu": F.leaky_relu,
    }[name]


def reconstruction_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: str,
    output_activation: str,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """MSE or binary cross-entropy between the reconstruction and the clean input.

    With ``mask``, only masked entries count (the denoising criterion of Vincent et al. 2010 at full
    emphasis). ``reduction="none"`` returns the per-entry loss.
    """
    logits = logits.float()
    if loss == "bce":
        if output_activation == "sigmoid":
            per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            recon = _activation_fn(output_activation)(logits).clamp(1e-6, 1 - 1e-6)
            per = F.binary_cross_entropy(recon, target.clamp(0, 1), reduction="none")
    else:
        per = (_activation_fn(output_activation)(logits) - target).square()
    if reduction == "none":
        return per
    if mask is not None:
        m = mask.to(per.dtype)
        return (per * m).sum() / m.sum().clamp_min(1.0)
    return per.mean()
