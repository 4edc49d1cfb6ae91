"""The network, in pure torch: masking noise, the MLP encoder, the decoders and the likelihoods.

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
    rescale: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masking noise on the *input*: zero each entry with probability ``corruption``.

    With ``rescale``, the entries left are divided by ``1 - corruption`` (inverted dropout, as
    ``torch.nn.Dropout``): the corrupted input then has the expected value of the clean input that the model
    sees at inference, instead of ``1 - corruption`` times it (the masking noise of Vincent et al. 2008, used
    by ADAGE, does not rescale).
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
        if rescale:
            out = out / (1.0 - corruption)
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


class CovariateOffset(nn.Module):
    """What the covariates add to a layer's pre-activation (width ``n_out``): a learned vector per level of each
    categorical covariate (a lookup, identical to a one-hot input through a linear layer; new levels can be
    appended without changing the others, as scArches' surgery needs) plus a linear map of the continuous ones.

    ``cats``: cells × n_categorical integer codes; code ``-1`` (a level never seen in training) gets the mean
    of the known levels' vectors. ``cont``: cells × n_continuous (standardised by the caller). Starts at zero.
    """

    def __init__(self, n_cats_per_cov: Sequence[int], n_continuous: int, n_out: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(nn.Embedding(int(n), n_out) for n in n_cats_per_cov)
        for emb in self.levels:
            nn.init.zeros_(emb.weight)
        self.continuous = nn.Linear(int(n_continuous), n_out, bias=False) if n_continuous else None
        if self.continuous is not None:
            nn.init.zeros_(self.continuous.weight)

    def forward(self, cats: torch.Tensor | None, cont: torch.Tensor | None) -> torch.Tensor | float:
        out: torch.Tensor | float = 0.0
        for i, emb in enumerate(self.levels):
            out = out + level_lookup(emb.weight, cats[:, i])
        if self.continuous is not None:
            out = out + self.continuous(cont.to(self.continuous.weight.dtype))
        return out


def level_lookup(table: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Rows ``codes`` of ``table`` (levels × d); code -1 (unknown level) gets the mean row."""
    rows = table.index_select(0, codes.clamp_min(0))
    return torch.where((codes < 0).unsqueeze(-1), table.mean(0, keepdim=True).expand_as(rows), rows)  # no branch: vmap-safe


COUNT_LIKELIHOODS = ("poisson", "nb", "zinb")
GENE_LIKELIHOODS = ("normal", "bernoulli", *COUNT_LIKELIHOODS)


class DenoisingAutoencoder(nn.Module):
    """MLP encoder → bottleneck of ``n_latent`` nodes → linear or MLP decoder.

    ``decode`` returns pre-activation outputs, which the likelihoods use for numerical stability:

    - ``normal`` / ``bernoulli``: the decoder's outputs reconstruct the (scaled) input itself;
      ``reconstruct`` applies the output activation (logits for a sigmoid output).
    - ``poisson`` / ``nb`` / ``zinb`` (count likelihoods, as in DCA and scVI): the decoder's outputs are
      log-scale gene scores whose softmax over genes is each cell's expected share of its library, so the
      expected count of gene g in cell c is ``library_c * softmax(decode(z_c))_g``. ``nb`` and ``zinb``
      add a learned per-gene inverse dispersion ``theta = exp(log_theta)``; ``zinb`` a per-entry dropout
      logit from a linear head on the bottleneck. With the linear decoder its weights are log-scale
      loadings, as in LDVAE (Svensson et al. 2020).

    Covariates (batch first, then further categorical and continuous ones; conditional autoencoders as in
    scVI, Lopez et al. 2018, and trVAE/scArches, Lotfollahi et al. 2020/2022): the decoder's first layer gets a
    learned offset per covariate level (:class:`CovariateOffset`), so the bottleneck need not encode them and the
    linear decoder's weights stay the covariate-free loadings; with ``encode_covariates`` the encoder's first layer
    gets them too. ``dispersion="gene-batch"``: one inverse dispersion per gene and level of the first categorical
    covariate (the batch), as scVI's ``dispersion="gene-batch"``.
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
        gene_likelihood: str = "normal",
        n_cats_per_cov: Sequence[int] = (),
        n_continuous: int = 0,
        encode_covariates: bool = False,
        dispersion: str = "gene",
    ) -> None:
        super().__init__()
        if tied and (hidden or decoder != "linear"):
            raise ValueError("tied weights need no hidden layers and a linear decoder")
        if gene_likelihood not in GENE_LIKELIHOODS:
            raise ValueError(f"gene_likelihood must be one of {GENE_LIKELIHOODS}, not {gene_likelihood!r}")
        self.n_input, self.n_latent, self.hidden = int(n_input), int(n_latent), tuple(hidden)
        self.decoder_kind, self.tied, self.output_activation = decoder, tied, output_activation
        self.gene_likelihood = gene_likelihood
        self.n_cats_per_cov, self.n_continuous = tuple(int(n) for n in n_cats_per_cov), int(n_continuous)
        self.encode_covariates, self.dispersion = bool(encode_covariates), dispersion
        if dispersion not in ("gene", "gene-batch"):
            raise ValueError(f"dispersion must be gene or gene-batch, not {dispersion!r}")
        if dispersion == "gene-batch" and not self.n_cats_per_cov:
            raise ValueError("dispersion='gene-batch' needs a batch (a first categorical covariate)")
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
        has_cov = bool(self.n_cats_per_cov) or self.n_continuous > 0
        # the decoder's first layer: genes for a linear or tied decoder, the first hidden width of an MLP one
        dec_width = self.hidden[-1] if (decoder == "mlp" and not tied and self.hidden) else self.n_input
        self.decoder_covariates = CovariateOffset(self.n_cats_per_cov, self.n_continuous, dec_width) if has_cov else None
        self.encoder_covariates = (CovariateOffset(self.n_cats_per_cov, self.n_continuous, sizes[1] if self.hidden else self.n_latent)
                                   if has_cov and encode_covariates else None)
        if gene_likelihood in ("nb", "zinb"):
            # theta = 1 at the start, learned per gene (or per gene and batch)
            shape = (self.n_cats_per_cov[0], self.n_input) if dispersion == "gene-batch" else (self.n_input,)
            self.log_theta = nn.Parameter(torch.zeros(shape))
        if gene_likelihood == "zinb":
            self.dropout_head = nn.Linear(self.n_latent, self.n_input)

    @property
    def counts(self) -> bool:
        """True for a count likelihood (the target is raw counts, the library size an offset)."""
        return self.gene_likelihood in COUNT_LIKELIHOODS

    def encode(self, x: torch.Tensor, cats: torch.Tensor | None = None, cont: torch.Tensor | None = None) -> torch.Tensor:
        if self.encoder_covariates is None:
            return self.encoder(x)
        h = self.encoder[0](x)
        return self.encoder[1:](h + self.encoder_covariates(cats, cont).to(h.dtype))

    def decode(self, z: torch.Tensor, cats: torch.Tensor | None = None, cont: torch.Tensor | None = None) -> torch.Tensor:
        if self.tied:
            w = self.encoder[0].weight  # (n_latent, n_input): the same matrix read backwards
            out = F.linear(z, w.t(), self.decoder_bias)
        elif self.decoder_covariates is None:
            return self.decoder(z)
        else:
            first = self.decoder if isinstance(self.decoder, nn.Linear) else self.decoder[0]
            out = first(z)
        if self.decoder_covariates is not None:
            out = out + self.decoder_covariates(cats, cont).to(out.dtype)
        if self.tied or isinstance(self.decoder, nn.Linear):
            return out
        return self.decoder[1:](out)

    def _check_covariates(self, cats, cont) -> None:
        if self.n_cats_per_cov and cats is None or self.n_continuous and cont is None:
            raise ValueError("this module was built with covariates: pass cats/cont")

    def cell_log_theta(self, cats: torch.Tensor | None) -> torch.Tensor:
        """log inverse dispersion per gene, or per cell × gene with ``dispersion="gene-batch"``."""
        if self.dispersion == "gene-batch":
            return level_lookup(self.log_theta, cats[:, 0]).float()
        return self.log_theta.float()

    def output(self, logits: torch.Tensor) -> torch.Tensor:
        """The reconstruction from decoder outputs: the output activation, or for a count likelihood the
        softmax over genes (each cell's expected share of its library)."""
        if self.counts:
            return torch.softmax(logits.float(), dim=-1)
        return _activation_fn(self.output_activation)(logits)

    def reconstruct(self, x: torch.Tensor, cats: torch.Tensor | None = None, cont: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.decode(self.encode(x, cats, cont), cats, cont))

    def nll(self, z: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
            library: torch.Tensor | None = None, cats: torch.Tensor | None = None) -> torch.Tensor:
        """Per-entry negative log-likelihood (cells × genes, float32) of ``target`` given decoder outputs.

        ``normal``: squared error of the reconstruction (the Gaussian NLL with unit variance, up to a constant
        and a factor 2); ``bernoulli``: binary cross-entropy of 0-1 targets; count likelihoods: the exact
        negative log-pmf of the counts ``target`` (dense, or a sparse COO tensor) with mean
        ``library * softmax(logits)``, ``library`` (cells,) being each cell's observed total count over the
        model's genes. ``cats``: the cells' covariate codes (per-batch dispersion).
        """
        if not self.counts:
            return gaussian_or_bernoulli_nll(logits, target, self.gene_likelihood, self.output_activation)
        if library is None:
            raise ValueError("a count likelihood needs each cell's library size")
        log_mu = torch.log_softmax(logits.float(), dim=-1) + torch.log(library.float().clamp_min(1e-8)).unsqueeze(-1)
        y = target if target.is_sparse else target.float()
        if self.gene_likelihood == "poisson":
            return -log_poisson(y, log_mu)
        log_theta = self.cell_log_theta(cats)
        if self.gene_likelihood == "nb":
            return -log_nb(y, log_mu, log_theta)
        return -log_zinb(y, log_mu, log_theta, self.dropout_head(z.float()))  # z is bfloat16 under CUDA autocast

    def forward(self, x: torch.Tensor, cats: torch.Tensor | None = None, cont: torch.Tensor | None = None,
                decode_cats: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, decoder outputs)``; ``decode_cats`` replaces the categorical covariates the decoder sees
        (counterfactual expression, scvi-tools' ``transform_batch``), the encoder still sees ``cats``."""
        self._check_covariates(cats, cont)
        z = self.encode(x, cats, cont)
        return z, self.decode(z, cats if decode_cats is None else decode_cats, cont)

    def linear_gene_weights(self) -> torch.Tensor:
        """genes × latent decoder weights (linear or tied decoder only)."""
        if self.tied:
            return self.encoder[0].weight.detach().t()
        if self.decoder_kind != "linear":
            raise ValueError("an MLP decoder has no single weight matrix; use mean_jacobian()")
        return self.decoder.weight.detach()

    def mean_jacobian(self, z: torch.Tensor, chunk: int = 256, cats: torch.Tensor | None = None,
                      cont: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over cells of d(reconstruction_g)/d(z_k), genes × latent: the MLP decoder's gene weights.

        For a count likelihood the derivative is of the decoder's log-scale output (the log expected count up
        to the cell's constant), so the weights are log-scale loadings like a linear decoder's."""
        total = torch.zeros(self.n_input, self.n_latent, device=z.device)
        n = z.shape[0]
        cats = torch.zeros((n, 0), dtype=torch.long, device=z.device) if cats is None else cats
        cont = torch.zeros((n, 0), device=z.device) if cont is None else cont

        def f(zi: torch.Tensor, ci: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
            out = self.decode(zi.unsqueeze(0), ci.unsqueeze(0), ki.unsqueeze(0))
            return (out if self.counts else self.output(out)).squeeze(0)

        jac = torch.func.vmap(torch.func.jacfwd(f), in_dims=(0, 0, 0))
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            total += jac(z[sl], cats[sl], cont[sl]).sum(0)
        return total / max(n, 1)


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


def gaussian_or_bernoulli_nll(logits: torch.Tensor, target: torch.Tensor, gene_likelihood: str,
                              output_activation: str) -> torch.Tensor:
    """Per-entry squared error (``normal``) or binary cross-entropy (``bernoulli``) of the reconstruction."""
    logits = logits.float()
    if gene_likelihood == "bernoulli":
        if output_activation == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
        recon = _activation_fn(output_activation)(logits).clamp(1e-6, 1 - 1e-6)
        return F.binary_cross_entropy(recon, target.float().clamp(0, 1), reduction="none")
    return (_activation_fn(output_activation)(logits) - target.float()).square()


# --- count log-pmfs, float32, written on the log scale (log-sum-exp, softplus, lgamma) so that they stay finite
# for tiny means and large counts; the parametrisations of scvi-tools (mean mu, inverse dispersion theta). ---


def _nonzeros(y: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``((rows, cols), values)`` of the non-zero counts, or None to compute densely.

    A sparse COO target (what the host data sources give: the indices come from the CSR, nothing is searched)
    is used as it is; a dense target on the CPU is searched once. A dense target on a GPU is computed densely
    (memory-bound, and a search would stall the stream); both ways give the same values.
    """
    if y.is_sparse:
        y = y.coalesce()
        idx = y.indices()
        return (idx[0], idx[1]), y.values().float()
    if y.is_cuda:
        return None
    idx = (y > 0).nonzero(as_tuple=True)
    return idx, y[idx].float()


def _dense(y: torch.Tensor) -> torch.Tensor:
    return y.to_dense().float() if y.is_sparse else y.float()


def _gather(t: torch.Tensor, idx, shape) -> torch.Tensor:
    """Entries ``idx`` of ``t`` broadcast to ``shape`` (per-gene vectors included)."""
    return t.expand(shape)[idx]


# lgamma and its derivative cost more than the network on a CPU, and single-cell counts are mostly zeros: every
# term that vanishes at y = 0 is evaluated at the non-zero counts only, the rest densely.


def log_poisson(y: torch.Tensor, log_mu: torch.Tensor) -> torch.Tensor:
    """log Poisson(y; mu) with ``mu = exp(log_mu)``; ``y`` dense or sparse COO, cells × genes."""
    dense = -torch.exp(log_mu)
    nz = _nonzeros(y)
    if nz is None:
        yd = _dense(y)
        return dense + yd * log_mu - torch.lgamma(yd + 1)
    idx, v = nz
    return dense.index_put(idx, v * log_mu[idx] - torch.lgamma(v + 1), accumulate=True)


def _nb_nonzero_terms(v, d, theta):
    """The terms of log NB that vanish at y = 0, for counts ``v`` and ``d = log mu - log theta``:
    ``v log(mu / (theta + mu)) + lgamma(v + theta) - lgamma(theta) - lgamma(v + 1)``. Float32: at counts in the
    thousands rounding reaches ~3e-4 of the NLL, far below what separates two models."""
    return -v * F.softplus(-d) + torch.lgamma(v + theta) - torch.lgamma(theta) - torch.lgamma(v + 1)


def _nb_parts(log_mu, log_theta):
    """``(theta, d, log NB(0))`` with ``d = log mu - log theta`` and ``log NB(0) = theta log(theta / (theta + mu))
    = -theta softplus(d)``: a subtraction, a softplus and a product, stable for any mean (softplus is linear
    beyond its threshold)."""
    theta = torch.exp(log_theta)
    d = log_mu - log_theta
    return theta, d, -theta * F.softplus(d)


def log_nb(y: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """log NB(y; mu, theta): mean ``mu``, variance ``mu + mu²/theta`` (scvi-tools' ``NegativeBinomial``);
    ``y`` dense or sparse COO, cells × genes; ``log_theta`` per gene or per entry."""
    theta, d, log_nb0 = _nb_parts(log_mu, log_theta)
    nz = _nonzeros(y)
    if nz is None:
        return log_nb0 + _nb_nonzero_terms(_dense(y), d, theta)
    idx, v = nz
    extra = _nb_nonzero_terms(v, d[idx], _gather(theta, idx, log_mu.shape))
    return log_nb0.index_put(idx, extra, accumulate=True)


def log_zinb(y: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor, pi_logits: torch.Tensor) -> torch.Tensor:
    """log ZINB(y; mu, theta, pi) with dropout probability ``pi = sigmoid(pi_logits)`` (scvi-tools'
    ``ZeroInflatedNegativeBinomial``); ``y`` dense or sparse COO, cells × genes."""
    theta, d, log_nb0 = _nb_parts(log_mu, log_theta)
    sp_pi = F.softplus(-pi_logits)
    # y = 0: log(pi + (1 - pi) NB(0)) = softplus(-pi_logits + log NB(0)) - softplus(-pi_logits)
    zero = F.softplus(-pi_logits + log_nb0) - sp_pi
    # y > 0: log((1 - pi) NB(y)) = -pi_logits - softplus(-pi_logits) + log NB(y)
    nz = _nonzeros(y)
    if nz is None:
        yd = _dense(y)
        nonzero = -pi_logits - sp_pi + log_nb0 + _nb_nonzero_terms(yd, d, theta)
        return torch.where(yd > 0, nonzero, zero)
    idx, v = nz
    nonzero = (-pi_logits[idx] - sp_pi[idx] + log_nb0[idx]
               + _nb_nonzero_terms(v, d[idx], _gather(theta, idx, log_mu.shape)))
    return zero.index_put(idx, nonzero)  # replaces the zero-case value at the non-zeros


def reduce_loss(per: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-entry loss; with ``mask``, over the masked entries only (the denoising criterion of
    Vincent et al. 2010 at full emphasis)."""
    if mask is not None:
        m = mask.to(per.dtype)
        return (per * m).sum() / m.sum().clamp_min(1.0)
    return per.mean()
