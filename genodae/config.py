"""Settings: the single source of defaults for preparation, the network and training.

The CLI flags, the workflow's config schema and ``uns["dae"]["params"]`` are all derived from
these dataclasses (or tested against them), so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError

DEVICE_PATTERN = r"auto|cpu|cuda|cuda:(?:0|[1-9][0-9]?)"  # GPU index 0-99 as torch parses it; also the workflow schema's


def check_device(spec) -> None:
    """Raise :class:`UserError` unless ``spec`` is a device name genodae accepts (:data:`DEVICE_PATTERN`)."""
    if not isinstance(spec, str) or re.fullmatch(DEVICE_PATTERN, spec) is None:
        raise UserError(f"device must be auto, cpu, cuda or cuda:N (N a GPU index: 0, 1, …), not {spec!r}")

ACTIVATIONS = ("relu", "gelu", "elu", "selu", "tanh", "sigmoid", "leaky_relu", "linear")
# the range of each activation's outputs (as an output activation, it must reach the scaled values: 0-1 under min-max,
# any real value under z-scores, the log values themselves under "none")
ACTIVATION_RANGES = {"relu": (0.0, float("inf")), "gelu": (-0.17, float("inf")), "elu": (-1.0, float("inf")),
                     "selu": (-1.76, float("inf")), "tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0),
                     "leaky_relu": (-float("inf"), float("inf")), "linear": (-float("inf"), float("inf"))}
NORMS = ("none", "batch", "layer")
DECODERS = ("linear", "mlp")
ROTATIONS = ("sparse", "varimax", "none")
# Ensembles (tl.ensemble, kernels.consensus): nodes of different models join a consensus node when their weights
# correlate with |r| >= this (average linkage), by the rotation they were read with. Sparse nodes need the stricter
# cut: some carry a few dominant genes, and such nodes of 3-4 of 5 seeds clustered at 0.5 although no node of 5 other
# seeds matched them. Two independent 5-seed ensembles, 10 seeds per generator (bench/results/readable.md,
# "Ensemble threshold"): sparse 0.5 -> 0.6 raised their agreement on groups 0.83 -> 0.91, gradients 0.91 -> 0.94,
# overlap 0.92 -> 0.95, sizes 0.81 -> 0.91 (bulk-like 0.97 either way), consensus F1 within 0.01; varimax nodes
# lose a program at 0.6 on bulk-like (F1 0.99 -> 0.94), so they keep 0.5.
ENSEMBLE_MIN_CORR = {"sparse": 0.6, "varimax": 0.5, "none": 0.5}
# A consensus node whose weights correlate with a node ranked before it (higher support; at equal support larger
# weights) at |r| >= this is marked as its near copy
# (tl.ensemble's support table, near_copy_of). A cluster never holds two nodes of one model, so a pair of near-copy
# nodes that most seeds find gives two consensus nodes: variants of one program with tails of their own (merging them
# lost pathways on NCI-60 P53); the mark says which to read together (bench/results/readable.md, "Probe: nodes that
# are near copies", whose cut this is).
NEAR_COPY_CORR = 0.9
GENE_LIKELIHOODS = ("auto", "normal", "bernoulli", "poisson", "nb", "zinb")
COUNT_LIKELIHOODS = ("poisson", "nb", "zinb")
AUTO_COUNT_LIKELIHOOD = "poisson"  # what gene_likelihood="auto" means for count input (bench/results/mcv.md)
LOSS_ON = ("all", "masked")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCALINGS = ("auto", "minmax", "zscore", "none")
# scaling="auto" (genodae.pp.prepare): minmax for counts, whose model reads the counts themselves (a count likelihood)
# and masks an entry to the gene's minimum, 0, "not detected", as DCA and ADAGE; zscore for every other input (log-
# scale or linear intensities, log-normalised values): their model reconstructs the scaled values under a normal
# likelihood, so the scaling weighs each gene's errors, and z-scores weigh every gene alike, as the correlation
# read-out of the signatures does (bench/results/readable.md, "Probe: the input scaling").
AUTO_EPOCHS, MIN_STEPS = 100, 2000  # epochs=None: at least 100 epochs and at least 2,000 minibatch updates
HVG_FLAVORS = ("auto", "seurat_v3", "seurat", "cell_ranger", "none")
INPUT_KINDS = ("auto", "counts", "log", "linear")
DENOISED_SCALES = ("auto", "counts", "normalized", "log1p", "input")  # DAE.annotate(denoised_scale=...)


@dataclass
class PrepareConfig:
    """How an expression matrix becomes model input (``genodae.pp.prepare``)."""

    n_top_genes: int = field(default=2000, metadata={"help": "highly variable genes to keep; all genes when fewer (0 = all)"})
    hvg_flavor: str = field(default="auto", metadata={"help": "auto: seurat_v3 on counts, seurat on log-scale data"})
    input_kind: str = field(default="auto", metadata={"help": "auto-detect (raw counts, estimated counts, linear or log scale), or counts (estimated counts rounded), log (as is), linear (log1p)"})
    target_sum: float = field(default=1e4, metadata={"help": "library size after normalisation (fixed, so projection is reproducible)"})
    scaling: str = field(default="auto", metadata={"help": "auto: minmax for counts, zscore for other input (log-scale or linear intensities, log-normalised values); minmax: per-gene 0-1 (masking to 0 = \"not expressed\", as in ADAGE); zscore: per-gene mean 0, sd 1 (masking to the gene's mean); none: log values as they are"})
    min_cells: int = field(default=1, metadata={"help": "drop genes detected (non-zero) in fewer cells"})
    batch_key: str | None = field(default=None, metadata={"help": "obs column of batches (samples, plates, technologies): highly variable genes are chosen within each batch (scanpy's batch_key); the scaling is computed over all cells; with several input files, the column that names each file's batch"})
    layer: str | None = field(default=None, metadata={"help": "prepare this layer (e.g. counts of a processed .h5ad) instead of X"})

    def __post_init__(self) -> None:
        _check_choice("hvg_flavor", self.hvg_flavor, HVG_FLAVORS)
        _check_choice("input_kind", self.input_kind, INPUT_KINDS)
        _check_choice("scaling", self.scaling, SCALINGS)
        _check_range("n_top_genes", self.n_top_genes, lo=0, integer=True)
        _check_range("target_sum", self.target_sum, lo=0, lo_open=True)
        _check_range("min_cells", self.min_cells, lo=0, integer=True)
        self.n_top_genes, self.min_cells = int(self.n_top_genes), int(self.min_cells)
        _check_key("batch_key", self.batch_key)
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer.strip()):
            raise UserError(f"layer must be the name of a layer (e.g. counts), not {self.layer!r}")


@dataclass
class DAEConfig:
    """Architecture and training settings of the masking-noise denoising autoencoder."""

    # network
    n_latent: int = field(default=32, metadata={"help": "bottleneck units = latent nodes = columns of the embedding and gene weights"})
    hidden: tuple[int, ...] = field(default=(256,), metadata={"help": "encoder hidden sizes; the mlp decoder mirrors them"})
    activation: str = field(default="gelu", metadata={"help": "activation of hidden layers: relu, gelu, elu, selu, tanh, sigmoid, leaky_relu, linear"})
    latent_activation: str = field(default="linear", metadata={"help": "activation of the bottleneck (ADAGE used sigmoid)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout after each hidden layer"})
    norm: str = field(default="none", metadata={"help": "normalisation after each hidden layer"})
    decoder: str = field(default="linear", metadata={"help": "linear: the decoder's weights (varm dae_decoder_weights) are exactly its loadings (as in LDVAE); mlp mirrors the encoder"})
    tied: bool = field(default=False, metadata={"help": "decoder = transposed encoder (only without hidden layers, as in ADAGE)"})
    rotation: str = field(default="varimax", metadata={"help": "basis the nodes are reported in (embedding and gene weights alike): each gene weight is the gene's correlation with the node. varimax = an orthogonal rotation of the bottleneck as trained, so distances between cells are exactly as trained (neighbours, clustering, integration; bench/results/integration_genodae_varimax_2026-12-07.md) and each node has few high-weight genes; sparse = the oblique sparse nodes that tl.signatures reads signatures from (better signatures, bench/results/readable.md; nodes may correlate and the embedding's distances change: scib bio conservation 0.90 -> 0.73 on CEL-seq2); none = the bottleneck as trained, gene weights = decoder weights (as ADAGE)"})
    output_activation: str = field(default="auto", metadata={"help": "auto: sigmoid with the bernoulli likelihood, else linear (tuned: bench/results/quality.md); count likelihoods use a softmax over genes"})
    # noise
    corruption: float = field(default=0.2, metadata={"help": "probability of zeroing each input entry (fresh mask every batch)"})
    corruption_rescale: bool = field(default=True, metadata={"help": "divide the entries left by 1 - corruption (inverted dropout), so training input has the expected value of the clean input at inference (bench/results/mcv.md); ADAGE did not"})
    gaussian_noise: float = field(default=0.0, metadata={"help": "sd of additive Gaussian noise on the input (0 = off)"})
    # loss
    gene_likelihood: str = field(default="auto", metadata={"help": "reconstruction likelihood: normal (squared error of the scaled input), bernoulli (cross-entropy, 0-1 input), or of the raw counts with the library size as offset: poisson, nb, zinb; auto: poisson for count input (it had the lowest held-out NLL: bench/results/mcv.md), normal otherwise"})
    loss_on: str = field(default="all", metadata={"help": "all entries, or only the masked ones"})
    # batches and covariates (conditional autoencoder, as scVI's setup_anndata)
    batch_key: str | None = field(default=None, metadata={"help": "obs column of batches (samples, plates, technologies): the decoder sees each cell's batch, so the embedding need not encode it and the gene weights are the batch-free part"})
    categorical_covariate_keys: tuple[str, ...] = field(default=(), metadata={"help": "further categorical obs columns the decoder sees (e.g. donor)"})
    continuous_covariate_keys: tuple[str, ...] = field(default=(), metadata={"help": "numeric obs columns the decoder sees (standardised; e.g. percent mitochondrial counts)"})
    batch_mmd: float = field(default=0.3, metadata={"help": "weight of the batch-mixing penalty on the embedding, relative to the reconstruction loss (maximum mean discrepancy between each batch and the others in every minibatch, as trVAE); 0 = decoder conditioning only; used with batch_key"})
    encode_covariates: bool = field(default=False, metadata={"help": "the encoder sees the covariates too; then cells of batches unseen in training need genodae map (reference mapping) before they can be embedded"})
    dispersion: str = field(default="auto", metadata={"help": "inverse dispersion of nb/zinb: gene, or gene-batch (one per gene and batch); auto: gene-batch when batch_key is set"})
    # optimisation
    optimizer: str = field(default="adam", metadata={"help": "adam, adamw or sgd (momentum 0.9)"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty (decoupled for adamw)"})
    batch_size: int = field(default=128, metadata={"help": "cells per minibatch"})
    epochs: int | None = field(default=None, metadata={"help": "maximum passes over the training cells; auto (None): 100, more on small data so that training can make at least 2,000 minibatch updates"})
    val_fraction: float = field(default=0.1, metadata={"help": "cells held out for early stopping and the reconstruction scores"})
    patience: int = field(default=0, metadata={"help": "epochs without validation improvement before stopping early; 0 (default) = train the whole epoch budget, and either way keep the epoch with the best validation loss (stopping after 10 flat epochs ended training in validation plateaus: bench/results/mcv_patience.md)"})
    grad_clip: float = field(default=5.0, metadata={"help": "max gradient norm (0 = off)"})
    # execution
    seed: int = field(default=0, metadata={"help": "seeds the split, initialisation, shuffling and noise"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda, cuda:N"})
    amp: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA; ignored on CPU"})
    data_placement: str = field(default="auto", metadata={"help": "auto (on the GPU when a float16 copy fits), device or host (stream minibatches)"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 (auto) = the CPUs this process is given: the least of its CPU affinity, a cgroup CPU quota, SLURM_CPUS_PER_TASK and OMP_NUM_THREADS, shared among torchrun's ranks on a node"})

    def __post_init__(self) -> None:
        if isinstance(self.hidden, (str, bytes)) or not hasattr(self.hidden, "__iter__"):
            raise UserError(f"hidden must be a list of layer sizes such as [512, 128], not {self.hidden!r}")
        for h in self.hidden:
            _check_range("hidden", h, lo=1, integer=True)
        self.hidden = tuple(int(h) for h in self.hidden)
        if isinstance(self.epochs, str) and self.epochs.strip().lower() == "auto":
            self.epochs = None
        for name, lo in (("n_latent", 1), ("batch_size", 1), ("epochs", 1), ("patience", 0), ("seed", 0),
                         ("num_threads", 0)):
            if name == "epochs" and self.epochs is None:
                continue
            _check_range(name, getattr(self, name), lo=lo, integer=True)
            setattr(self, name, int(getattr(self, name)))
        for name in ("categorical_covariate_keys", "continuous_covariate_keys"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if value is None:
                value = ()
            if not isinstance(value, (list, tuple)):
                raise UserError(f"{name} must be a list of obs column names, not {value!r}")
            for v in value:
                _check_key(name, v)
            setattr(self, name, tuple(value))
        _check_key("batch_key", self.batch_key)
        keys = [k for k in (self.batch_key, *self.categorical_covariate_keys, *self.continuous_covariate_keys) if k]
        if len(set(keys)) < len(keys):
            raise UserError(f"an obs column is named twice among batch_key and the covariate keys: {', '.join(keys)}")
        _check_choice("dispersion", self.dispersion, ("auto", "gene", "gene-batch"))
        if self.dispersion == "gene-batch" and not self.batch_key:
            raise UserError("dispersion='gene-batch' needs batch_key (--batch-key): one dispersion per batch")
        if self.encode_covariates and not keys:
            raise UserError("encode_covariates needs batch_key or covariate keys to encode")
        for name in ("tied", "amp", "corruption_rescale", "encode_covariates"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, not {getattr(self, name)!r}")
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("latent_activation", self.latent_activation, ACTIVATIONS)
        _check_choice("output_activation", self.output_activation, ("auto", *ACTIVATIONS))
        _check_choice("norm", self.norm, NORMS)
        _check_choice("decoder", self.decoder, DECODERS)
        _check_choice("rotation", self.rotation, ROTATIONS)
        _check_choice("gene_likelihood", self.gene_likelihood, GENE_LIKELIHOODS)
        _check_choice("loss_on", self.loss_on, LOSS_ON)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("data_placement", self.data_placement, ("auto", "device", "host"))
        _check_range("dropout", self.dropout, lo=0, hi=1, hi_open=True)
        _check_range("corruption", self.corruption, lo=0, hi=1, hi_open=True)
        _check_range("gaussian_noise", self.gaussian_noise, lo=0)
        _check_range("lr", self.lr, lo=0, lo_open=True)
        _check_range("weight_decay", self.weight_decay, lo=0)
        _check_range("val_fraction", self.val_fraction, lo=0, hi=1, hi_open=True)
        _check_range("grad_clip", self.grad_clip, lo=0)
        _check_range("batch_mmd", self.batch_mmd, lo=0)
        if self.tied and (self.hidden or self.decoder != "linear"):
            raise UserError("tied weights need hidden=[] and decoder='linear' (one layer, as in ADAGE)")
        if self.norm == "batch" and self.batch_size < 2:
            raise UserError("norm='batch' needs batch_size >= 2 (batch statistics of one cell are undefined)")
        if self.loss_on == "masked" and self.corruption == 0:
            raise UserError("loss_on='masked' needs corruption > 0: with no masked entries there is no loss")
        check_device(self.device)

    def max_epochs(self, n_train: int) -> int:
        """``epochs``, or for ``epochs=None`` (auto) 100 raised so that training can make ``MIN_STEPS`` updates.

        A fixed 100 epochs gave 200 updates to a 220-sample bulk cohort, and its embedding was still improving
        (TCGA BRCA 15-NN 0.920 vs 0.941 when allowed to early-stop; bench/README.md, round 5). On 4,000 cells
        100 epochs are already 3,000 updates, so larger data train as before.
        """
        if self.epochs is not None:
            return self.epochs
        steps = max(1, -(-int(n_train) // self.batch_size))
        return max(AUTO_EPOCHS, -(-MIN_STEPS // steps))

    def resolved_gene_likelihood(self, input_kind: str = "counts") -> str:
        """What ``gene_likelihood="auto"`` means for data of ``input_kind`` (``counts`` or ``log``): the count
        likelihood that won the molecular cross-validation benchmark (bench/results/mcv.md) for counts, the
        Gaussian (squared error) for log-scale or bulk values."""
        if self.gene_likelihood != "auto":
            return self.gene_likelihood
        return AUTO_COUNT_LIKELIHOOD if input_kind == "counts" else "normal"

    def resolved_dispersion(self) -> str:
        """``dispersion="auto"``: one per gene and batch when there is a batch (scVI's ``gene-batch``), else per gene."""
        if self.dispersion != "auto":
            return self.dispersion
        return "gene-batch" if self.batch_key else "gene"

    def categorical_keys(self) -> tuple[str, ...]:
        """The categorical covariates the model conditions on, the batch first."""
        return ((self.batch_key,) if self.batch_key else ()) + self.categorical_covariate_keys

    def resolved_output_activation(self, gene_likelihood: str | None = None) -> str:
        """What ``output_activation="auto"`` means: sigmoid with the Bernoulli likelihood (it needs outputs in
        (0, 1)), else linear. Count likelihoods ignore it (their output is a softmax over genes).

        A sigmoid saturates on sparse 0-1 targets under squared error and cost up to 0.03 in 15-NN accuracy
        (bench/results/quality.md).
        """
        if self.output_activation != "auto":
            return self.output_activation
        return "sigmoid" if (gene_likelihood or self.gene_likelihood) == "bernoulli" else "linear"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["categorical_covariate_keys"] = list(self.categorical_covariate_keys)
        d["continuous_covariate_keys"] = list(self.continuous_covariate_keys)
        return d


# Named starting points; explicit settings override them.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # ADAGE (Tan et al. 2016): one sigmoid hidden layer of 50 nodes, tied weights, 10% masking,
    # cross-entropy on 0-1 scaled data, SGD with small batches.
    "adage": dict(
        n_latent=50, hidden=(), latent_activation="sigmoid", tied=True, decoder="linear",
        output_activation="sigmoid", corruption=0.1, corruption_rescale=False, gene_likelihood="bernoulli", optimizer="sgd", lr=0.01,
        batch_size=10, epochs=500, patience=0, rotation="none",
    ),
    # Signatures (issue 5, bench/signatures.py; issue 16, bench/readable.py): a linear encoder (no hidden
    # layer) trained with a larger learning rate for the whole 300 epochs (best validation epoch kept; no early
    # stop: with patience 30 one seed of six stopped inside a plateau, groups F1 0.53), its nodes reported in the
    # signatures' read-out (correlation, varimax, sparse coding: rotation="sparse"; the embedding's distances are
    # not the bottleneck's). Best single-model recovery of planted discrete groups (F1 0.89 vs 0.84 for the
    # default's signatures, 3 seeds; bench/results/readable.md), lower on the sizes and bulk-like generators, and
    # on real data fewer gene sets (NCI-60 P53) or fewer enriched signatures (PBMC3k, CEL-seq2): an option, the
    # default stays the recommended model for signatures (README "Signatures").
    "signatures": dict(hidden=(), lr=1e-2, epochs=300, patience=0, rotation="sparse"),
}


def make_config(preset: str = "default", **overrides: Any) -> DAEConfig:
    """Build a :class:`DAEConfig` from a preset and explicit overrides (``None`` = not set)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    if "loss" in values:
        raise UserError(f"the setting loss={values['loss']!r} is now gene_likelihood (mse → normal, bce → bernoulli; "
                        "or poisson, nb, zinb for counts)")
    known = {f.name for f in fields(DAEConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return DAEConfig(**values)


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file of settings into a flat dict (keys as in DAEConfig/PrepareConfig)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"settings file {path} not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"settings file {path} cannot be parsed: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"settings file {path} must hold a mapping of setting: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat dict into (PrepareConfig kwargs, DAEConfig kwargs); unknown keys are an error."""
    prep_keys = {f.name for f in fields(PrepareConfig)}
    dae_keys = {f.name for f in fields(DAEConfig)} | {"preset", "loss"}  # loss: refused by make_config with the new name
    unknown = sorted(set(settings) - prep_keys - dae_keys)
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)}")
    prep = {k: v for k, v in settings.items() if k in prep_keys}
    dae = {k: v for k, v in settings.items() if k in dae_keys}
    return prep, dae


def _check_key(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise UserError(f"{name} must be the name of an obs column, not {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _check_range(name, value, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, not {value!r}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise UserError(f"{name} must be a whole number, not {value!r}")
    if value != value:  # NaN
        raise UserError(f"{name} must be a number, not NaN")
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        raise UserError(f"{name} must be {' and '.join(s for s in (lo_s, hi_s) if s)}, not {value!r}")


__all__ = ["DAEConfig", "DEVICE_PATTERN", "PrepareConfig", "PRESETS", "check_device", "make_config", "read_settings_file",
           "split_settings"]
