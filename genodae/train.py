"""The training loop, explicit from top to bottom (nanoGPT style), and the evaluation passes.

Pure torch + numpy/scipy: no AnnData here. Data arrive as a dense array or a CSR matrix plus per-gene
``offset``/``scale`` vectors; each minibatch is densified and scaled on its own, so a sparse matrix is
never densified wholesale.

Randomness is keyed, not streamed: the shuffle of epoch ``e`` comes from ``(seed, e)``, the masking
noise of global batch ``s`` from ``(seed, e, s)``, dropout from ``(seed, e)``. A run resumed from a
checkpoint at an epoch boundary therefore continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ._files import default_mode
from ._threads import configure as configure_threads
from .config import DAEConfig, check_device
from .errors import UserError
from .nn import DenoisingAutoencoder, corrupt, noise_seed, reduce_loss

log = logging.getLogger("genodae")

CHECKPOINT_FILE = "checkpoint.safetensors"
_VAL_EPOCH = 2**31 - 1  # the validation noise is drawn once, from its own key, and reused every epoch


def _gpu_requested() -> bool:
    """Whether the environment says this process was given a GPU (a scheduler's or the user's CUDA_VISIBLE_DEVICES,
    SLURM's GPU variables), so that running on CPU is a surprise rather than the expected."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return (cvd not in ("", "-1", "none", "NoDevFiles")
            or any(os.environ.get(v) for v in ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")))


def resolve_device(spec: str = "auto", *, warn: bool = True) -> torch.device:
    """``auto`` → CUDA when present, else CPU (a warning when the environment says a GPU was given, e.g.
    ``CUDA_VISIBLE_DEVICES`` or SLURM's GPU variables; else logged at info level); an absent CUDA device asked for
    by name is an error."""
    check_device(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if warn and _gpu_requested():
            log.warning("device auto: a GPU was given (CUDA_VISIBLE_DEVICES or SLURM) but torch finds no CUDA device "
                        "(a CPU build of torch, or a driver problem); running on CPU")
        else:
            log.info("device auto: no CUDA device found, running on CPU")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} requested but no CUDA device is available; use --device cpu or auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return dev
    return torch.device("cpu")


class BatchSource:
    """Rows of a dense array or CSR matrix in host memory, densified one batch at a time, scaled on the device.

    Model input = ``(X - offset) / scale``, clipped to [0, 1] when ``clip`` (min-max scaling, so that a new
    sample outside the training range still means "not expressed" … "highest seen"). Host → device copies
    go through pinned memory and are non-blocking. ``counts`` (same rows and genes as ``X``), when given, is
    the target of a count likelihood: ``target(rows)`` returns its rows, densified one batch at a time.
    """

    placement = "host"
    # covariates (set by the caller): integer codes (cells × categorical, -1 = unknown level) and standardised
    # continuous values (cells × continuous); ``decode_cats`` replaces the codes the decoder sees
    cats: np.ndarray | None = None
    cont: np.ndarray | None = None
    decode_cats: np.ndarray | None = None

    def __init__(self, X, offset: np.ndarray, scale: np.ndarray, device: torch.device, clip: bool = False,
                 counts=None):
        if sp.issparse(X) and not sp.isspmatrix_csr(X):
            X = sp.csr_matrix(X)
        if counts is not None and sp.issparse(counts):
            counts = canonical_csr(counts)
        if counts is not None and counts.shape != X.shape:
            raise ValueError(f"counts {counts.shape} and input {X.shape} differ in shape")
        self.X = X
        self.counts = counts
        self.gene_present = None  # set by the caller when some model genes are absent from the data
        self.n_obs, self.n_vars = X.shape
        self.device = device
        self.offset = torch.as_tensor(np.asarray(offset, dtype=np.float32), device=device)
        self.scale = torch.as_tensor(np.asarray(scale, dtype=np.float32), device=device)
        self.clip = clip
        self._pin = device.type == "cuda"

    index_device = torch.device("cpu")  # where the row order lives

    def epoch_order(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training rows of one epoch, shuffled."""
        return rows[torch.randperm(len(rows), generator=generator)]

    def _rows(self, rows, M=None) -> torch.Tensor:
        if torch.is_tensor(rows):
            rows = rows.numpy()
        block = (self.X if M is None else M)[rows]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
        if self._pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def __call__(self, rows) -> torch.Tensor:
        t = (self._rows(rows) - self.offset) / self.scale
        return t.clamp_(0.0, 1.0) if self.clip else t

    def covariates(self, rows, *, decoder: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(cats, cont)`` of ``rows`` on the device (None when the data have none); ``decoder``: the codes
        the decoder sees (``decode_cats`` when set)."""
        cats = self.decode_cats if decoder and self.decode_cats is not None else self.cats
        if cats is None and self.cont is None:
            return None, None
        r = torch.as_tensor(rows).to(self.device, non_blocking=True)
        return (self._on_device(cats).index_select(0, r) if cats is not None else None,
                self._on_device(self.cont).index_select(0, r) if self.cont is not None else None)

    def _on_device(self, a: np.ndarray) -> torch.Tensor:
        """A device copy of a small per-cell array (covariates: a few numbers per cell), made once."""
        cache = self.__dict__.setdefault("_device_copies", {})
        if id(a) not in cache or cache[id(a)][0] is not a:
            cache[id(a)] = (a, torch.as_tensor(np.ascontiguousarray(a), device=self.device))
        return cache[id(a)][1]

    def target(self, rows) -> torch.Tensor:
        """Raw counts of ``rows`` (cells × genes, float32 on the device): the target of a count likelihood.

        A sparse COO tensor when the counts are a CSR matrix (the likelihoods then evaluate their count terms at
        the stored non-zeros only), else dense."""
        if self.counts is None:
            raise ValueError("this data source holds no counts")
        if not sp.issparse(self.counts):
            return self._rows(rows, self.counts)
        if torch.is_tensor(rows):
            rows = rows.numpy()
        return self._coo(self.counts[rows])

    def _coo(self, block: sp.csr_matrix) -> torch.Tensor:
        """A canonical CSR block as a coalesced float32 COO tensor on the device."""
        n = block.shape[0]
        r = np.repeat(np.arange(n, dtype=np.int64), np.diff(block.indptr))
        idx = torch.from_numpy(np.vstack([r, block.indices.astype(np.int64)]))
        vals = torch.from_numpy(np.asarray(block.data, dtype=np.float32))
        t = torch.sparse_coo_tensor(idx, vals, block.shape, is_coalesced=True, check_invariants=False)  # built canonical
        return t.to(self.device, non_blocking=True)


class DeviceSource(BatchSource):
    """The whole matrix resident on the device as float16 (half the bytes of float32, ~3 significant digits,
    ample for log-scale expression); batches are gathered on the device with no host round trip."""

    placement = "device"

    def __init__(self, X, offset, scale, device, clip=False, counts=None, chunk: int = 16384):
        super().__init__(X, offset, scale, device, clip, counts)
        self.index_device = device
        self.data = self._upload(self.X, torch.float16, chunk)
        self.X = None  # the device copy is the data now
        if self.counts is not None:
            # float16 holds every integer up to 2,048 exactly; larger counts stay float32
            top = self.counts.max() if self.counts.shape[0] else 0
            self.count_data = self._upload(self.counts, torch.float16 if top <= 2048 else torch.float32, chunk)
            self.counts = None

    def _upload(self, M, dtype: torch.dtype, chunk: int) -> torch.Tensor:
        out = torch.empty((self.n_obs, self.n_vars), dtype=dtype, device=self.device)
        for s in range(0, self.n_obs, chunk):  # densify chunk by chunk: never the whole matrix on the host
            out[s : s + chunk] = BatchSource._rows(self, np.arange(s, min(s + chunk, self.n_obs)), M).to(dtype)
        return out

    def _rows(self, rows, M=None) -> torch.Tensor:
        rows = torch.as_tensor(rows, device=self.device)
        return self.data.index_select(0, rows).float()

    def target(self, rows) -> torch.Tensor:
        rows = torch.as_tensor(rows, device=self.device)
        return self.count_data.index_select(0, rows).float()


class ChunkedSource(BatchSource):
    """Rows read from an on-disk matrix (e.g. a backed .h5ad's X) one contiguous chunk at a time.

    ``X`` needs only ``X[start:stop]`` (returning CSR or an array) and ``.shape``; ``columns`` picks the
    genes. Each epoch visits the chunks in a shuffled order and shuffles rows within each chunk, so reads
    stay contiguous and memory stays at a couple of chunks, whatever the file's size.
    """

    placement = "chunked"

    def __init__(self, X, offset, scale, device, clip=False, columns: np.ndarray | None = None, chunk: int = 8192,
                 counts=None):
        self.X = X
        self.counts = counts
        self.gene_present = None
        self.n_obs = X.shape[0]
        self.n_vars = len(columns) if columns is not None else X.shape[1]
        if columns is not None and np.array_equal(columns, np.arange(X.shape[1])):
            columns = None  # every gene in order: no column subset to copy per chunk
        self.columns = columns
        self.device = device
        self.offset = torch.as_tensor(np.asarray(offset, dtype=np.float32), device=device)
        self.scale = torch.as_tensor(np.asarray(scale, dtype=np.float32), device=device)
        self.clip = clip
        self._pin = device.type == "cuda"
        self.chunk = chunk
        self._cache: dict[tuple[int, int], object] = {}

    def epoch_order(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        chunk_of = rows // self.chunk
        chunks = torch.unique(chunk_of)
        parts = []
        for c in chunks[torch.randperm(len(chunks), generator=generator)]:
            r = rows[chunk_of == c]
            parts.append(r[torch.randperm(len(r), generator=generator)])
        return torch.cat(parts) if parts else rows

    def _load(self, c: int, which: int = 0):
        key = (c, which)
        if key not in self._cache:
            if len(self._cache) >= 4:  # a batch spans at most two chunks (of input and of counts)
                self._cache.pop(next(iter(self._cache)))
            M = self.X if which == 0 else self.counts
            block = read_rows(M, c * self.chunk, min((c + 1) * self.chunk, self.n_obs))
            if self.columns is not None:
                block = block[:, self.columns]
            self._cache[key] = sp.csr_matrix(block, dtype=np.float32) if sp.issparse(block) else np.asarray(block, np.float32)
        return self._cache[key]

    def _rows(self, rows, M=None) -> torch.Tensor:
        which = 0 if M is None else 1
        rows = rows.numpy() if torch.is_tensor(rows) else np.asarray(rows)
        chunk_of = rows // self.chunk
        if len(rows) and chunk_of[0] == chunk_of.min() == chunk_of.max():  # one chunk (most batches): no gather
            c = int(chunk_of[0])
            block = self._load(c, which)[rows - c * self.chunk]
            out = block.toarray() if sp.issparse(block) else np.ascontiguousarray(block)
        else:
            out = np.empty((len(rows), self.n_vars), dtype=np.float32)
            for c in np.unique(chunk_of):
                sel = chunk_of == c
                block = self._load(int(c), which)[rows[sel] - c * self.chunk]
                out[sel] = block.toarray() if sp.issparse(block) else block
        t = torch.from_numpy(out)
        if self._pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def target(self, rows) -> torch.Tensor:
        if self.counts is None:
            raise ValueError("this data source holds no counts")
        rows = rows.numpy() if torch.is_tensor(rows) else np.asarray(rows)
        chunk_of = rows // self.chunk
        parts, where = [], []
        for c in np.unique(chunk_of):
            sel = np.flatnonzero(chunk_of == c)
            block = self._load(int(c), 1)[rows[sel] - c * self.chunk]
            parts.append(sp.csr_matrix(block))
            where.append(sel)
        stacked = sp.vstack(parts, format="csr")[np.argsort(np.concatenate(where))]  # back to the order of rows
        return self._coo(canonical_csr(stacked))


class LogNormalizedCounts:
    """The rows of ``log1p(counts[i] / norm_factors[i])`` for a CSR of counts, computed when a block of rows is
    read: the model input of data prepared from counts (scanpy's ``normalize_total`` then ``log1p``, whose
    norm factor is ``cell total / target_sum``; float32 division as scanpy does it, so the values are the prepared
    X's to the bit), without a second cells × genes matrix in memory. ``M[rows]`` returns a float32 CSR with the
    counts' sparsity structure."""

    dtype = np.dtype(np.float32)

    def __init__(self, counts: sp.csr_matrix, norm_factors: np.ndarray):
        self.counts = canonical_csr(counts)
        self.norm_factors = np.asarray(norm_factors, dtype=np.float32)
        if self.norm_factors.shape != (self.counts.shape[0],):
            raise ValueError(f"{self.norm_factors.shape[0]} norm factors for {self.counts.shape[0]} cells")
        self.shape = self.counts.shape

    def __getitem__(self, rows) -> sp.csr_matrix:
        block = self.counts[rows]
        f = np.repeat(self.norm_factors[rows], np.diff(block.indptr))
        return sp.csr_matrix((np.log1p(block.data / f), block.indices, block.indptr), shape=block.shape)


def read_rows(M, start: int, stop: int):
    """Rows ``start:stop`` of an on-disk matrix. A backed CSR (anndata's sparse dataset of a backed .h5ad) is read
    straight from its ``indptr``, ``indices`` and ``data`` arrays: the same three reads anndata's slicing makes,
    without its per-call checks (~5 ms a call with anndata 0.12, as much as the read of 8,192 rows itself;
    ``bench/results/loader.md``)."""
    group = getattr(M, "group", None)
    if getattr(M, "format", None) == "csr" and group is not None and {"indptr", "indices", "data"} <= set(group):
        indptr = np.asarray(group["indptr"][start : stop + 1])
        lo, hi = int(indptr[0]), int(indptr[-1])
        return sp.csr_matrix((group["data"][lo:hi], group["indices"][lo:hi], indptr - lo),
                             shape=(stop - start, M.shape[1]))
    return M[start:stop]


def canonical_csr(M) -> sp.csr_matrix:
    """``M`` as float32 CSR with sorted, unique indices and no stored zeros (a copy only when it is not one)."""
    M = M if sp.isspmatrix_csr(M) and M.dtype == np.float32 else sp.csr_matrix(M, dtype=np.float32)
    if not M.has_canonical_format or (M.data == 0).any():
        M = M.copy()
        M.sum_duplicates()
        M.eliminate_zeros()
    return M


def library_size(y: torch.Tensor) -> torch.Tensor:
    """Each cell's total count (cells,), from a dense or sparse COO target."""
    if y.is_sparse:
        y = y.coalesce()
        return torch.zeros(y.shape[0], dtype=torch.float32, device=y.device).index_add_(0, y.indices()[0],
                                                                                        y.values().float())
    return y.float().sum(1)


def make_source(X, offset, scale, device: torch.device, clip: bool = False, placement: str = "auto",
                columns: np.ndarray | None = None, counts=None) -> BatchSource:
    """Host streaming or device-resident data: ``auto`` puts the data on a GPU when its float16 copy (and a
    copy of the counts) fits in 40% of the free memory, and says which it chose. ``columns`` (genes to use)
    marks an on-disk matrix, which is always read in chunks. ``counts``: the target of a count likelihood."""
    if columns is not None:
        return ChunkedSource(X, offset, scale, device, clip, columns=columns, counts=counts)
    n, g = X.shape
    need = n * g * (2 if counts is None else 6)
    if placement == "auto":
        placement = "host"
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            placement = "device" if need < 0.4 * free else "host"
            log.info("data placement auto: float16 copy needs %.2f GB, %.2f GB free on %s → %s",
                     need / 1e9, free / 1e9, device, placement)
    if placement == "device":
        return DeviceSource(X, offset, scale, device, clip, counts)
    return BatchSource(X, offset, scale, device, clip, counts)


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int, torch.device | None]:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU.

    Returns (rank, world size, this rank's device or None for "as configured").
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    if not torch.distributed.is_initialized():
        cuda = torch.cuda.is_available()
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return torch.distributed.get_rank(), world, device


def split_cells(n_obs: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split; no validation cells when there are too few cells to spare."""
    n_val = int(round(n_obs * val_fraction))
    if n_obs - n_val < 2:
        n_val = 0
    perm = np.random.default_rng(seed).permutation(n_obs)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1  # 0-based index into val_loss (the log counts epochs from 1)
    best_loss: float = math.inf
    epochs_run: int = 0
    max_epochs: int = 0  # config.max_epochs(): epochs, or what epochs=None (auto) resolved to
    stopped_early: bool = False
    seconds: float = 0.0
    device: str = "cpu"


def build_module(n_input: int, config: DAEConfig, output_activation: str,
                 gene_likelihood: str = "normal", n_cats_per_cov: tuple[int, ...] = (),
                 n_continuous: int = 0) -> DenoisingAutoencoder:
    """The torch module of ``config``; ``gene_likelihood`` is the resolved one (never ``auto``);
    ``n_cats_per_cov``: levels of each categorical covariate (the batch first), ``n_continuous``: continuous ones."""
    return DenoisingAutoencoder(
        n_input,
        config.n_latent,
        hidden=config.hidden,
        activation=config.activation,
        latent_activation=config.latent_activation,
        dropout=config.dropout,
        norm=config.norm,
        decoder=config.decoder,
        tied=config.tied,
        output_activation=output_activation,
        gene_likelihood=gene_likelihood,
        n_cats_per_cov=n_cats_per_cov,
        n_continuous=n_continuous,
        encode_covariates=config.encode_covariates,
        dispersion=config.resolved_dispersion(),
    )


def batch_nll(module: DenoisingAutoencoder, net: torch.nn.Module, source: BatchSource, rows, xc: torch.Tensor,
              x: torch.Tensor, amp: bool = False, with_z: bool = False):
    """Per-entry negative log-likelihood (cells × genes) of the clean data of ``rows`` given the corrupted
    input ``xc``: of the scaled input ``x`` itself (normal, bernoulli) or of the raw counts, with each cell's
    observed total over the model's genes as its library size (poisson, nb, zinb). ``with_z``: return
    ``(nll, z, cats)``."""
    cats, cont = source.covariates(rows)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
        z, logits = net(xc, cats, cont)
    if module.counts:
        y = source.target(rows)
        per = module.nll(z, logits, y, library_size(y), cats)
    else:
        per = module.nll(z, logits, x)
    return (per, z, cats) if with_z else per


def batch_mmd(z: torch.Tensor, batch: torch.Tensor, n_batches: int) -> torch.Tensor:
    """Mean over the batches of a minibatch of the squared maximum mean discrepancy between that batch's embeddings
    and the other batches' (Gaussian kernels at 1/4, 1 and 4 times the median squared distance, so the scale of
    the embedding cannot shrink it away; the unbiased estimate, Gretton et al. 2012): the batch-mixing penalty of
    trVAE (Lotfollahi et al. 2020), 0 in expectation when the batches' embeddings share one distribution.

    ``batch``: codes 0 … ``n_batches`` − 1 of the cells. Batches with fewer than 2 cells in the minibatch (or whose
    complement has fewer) are left out. Written without data-dependent branches (no host sync on a GPU).
    """
    z = z.float()
    n = z.shape[0]
    d2 = torch.cdist(z, z).square()
    med = d2.detach().median().clamp_min(1e-8)
    K = sum(torch.exp(-d2 / (med * s)) for s in (0.25, 1.0, 4.0)) / 3  # K_ii = 1
    B = torch.nn.functional.one_hot(batch.long(), n_batches).to(K.dtype)  # cells × batches
    n_b = B.sum(0)
    m_b = n - n_b
    KB = K @ B
    S = (B * KB).sum(0)  # sum of K within each batch
    R = KB.sum(0)  # sum of K over (cell of the batch, any cell)
    total = K.sum()
    within = (S - n_b) / (n_b * (n_b - 1)).clamp_min(1)
    within_other = (total - 2 * R + S - m_b) / (m_b * (m_b - 1)).clamp_min(1)
    cross = (R - S) / (n_b * m_b).clamp_min(1)
    valid = ((n_b >= 2) & (m_b >= 2)).to(K.dtype)
    return ((within + within_other - 2 * cross) * valid).sum() / valid.sum().clamp_min(1)


def make_optimizer(module: torch.nn.Module, config: DAEConfig) -> torch.optim.Optimizer:
    params = module.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def fit(
    module: DenoisingAutoencoder,
    source: BatchSource,
    config: DAEConfig,
    *,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    progress: bool | None = None,
    data: dict | None = None,
) -> History:
    """Train ``module`` in place on rows ``train_idx`` of ``source``; early-stop on ``val_idx``.

    At the end the weights of the best validation epoch are restored. Returns the loss history.

    Every checkpoint records the settings and what identifies the training data: the numbers of cells, genes,
    training and validation cells, and ``data`` (JSON values from the caller; :meth:`genodae.DAE.fit` gives
    fingerprints of the gene and cell names, the per-gene scaling, the layer, the likelihood and the covariate
    levels). ``resume`` continues from the checkpoint in ``checkpoint_dir`` only when both match.

    Raises
    ------
    UserError
        ``resume`` with a checkpoint that is unreadable, was made with other settings or on other data, or
        records no training data (written by genodae before it recorded them: such a checkpoint is refused, not
        trusted, as it may be of other data).
    """
    device = source.device
    module.to(device)
    configure_threads(config.num_threads)
    opt = make_optimizer(module, config)
    amp = config.amp and device.type == "cuda"
    noise_gen = torch.Generator(device=device)
    max_epochs = config.max_epochs(len(train_idx))
    hist = History(device=str(device), max_epochs=max_epochs)
    best_state = _copy_state(module)
    bad_epochs, start_epoch = 0, 0
    check_checkpoint_dir(checkpoint_dir)
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    record = _json_roundtrip({"n_cells": int(source.n_obs), "n_genes": int(source.n_vars), "n_train": len(train_idx),
                              "n_val": len(val_idx), **(data or {})})
    if resume and ckpt is not None and ckpt.exists():
        start_epoch, best_state, bad_epochs = _load_checkpoint(ckpt, module, opt, hist, config, record)
        hist.max_epochs = max_epochs  # a resumed run may be given more epochs
        log.info("resumed from %s at epoch %d", ckpt, start_epoch)
        if hist.stopped_early:
            start_epoch = max_epochs  # it had already stopped early: nothing left to train
        elif start_epoch > max_epochs:
            log.warning("the checkpoint has trained %d epochs, more than the %d asked for: nothing left to train; the "
                        "model keeps the best of those %d epochs", start_epoch, max_epochs, start_epoch)
    elif resume:
        log.info("--resume: no checkpoint at %s, starting from scratch", ckpt)
    monitor_idx = val_idx if len(val_idx) else train_idx
    if progress is None:
        progress = sys.stderr.isatty() and _dist_info()[0] == 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, initial=start_epoch, desc="training", unit="epoch")

    rank, world = _dist_info()
    mmd_weight = config.batch_mmd if config.batch_key else 0.0
    net = module
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    t0, before = time.perf_counter(), hist.seconds  # a resumed run: the seconds of the epochs before it count too
    n_train, bs = len(train_idx), config.batch_size
    train_t = torch.as_tensor(train_idx, dtype=torch.long)
    for epoch in range(start_epoch, max_epochs):
        torch.manual_seed(noise_seed(config.seed, epoch, -1))  # dropout
        shuffle = torch.Generator().manual_seed(noise_seed(config.seed, epoch, -2))
        order = source.epoch_order(train_t, shuffle).to(source.index_device, non_blocking=True)
        net.train()
        total = torch.zeros((), device=device)
        for step, start in enumerate(range(0, n_train, bs)):
            n_global = min(bs, n_train - start)
            if n_global < max(world, 2 if config.norm == "batch" else 1):
                continue  # too few cells to give every rank one (or batch norm two); same choice on every rank
            per_rank = -(-n_global // world)
            lo = min(rank * per_rank, n_global)
            rows = order[start + lo : start + min(lo + per_rank, n_global)]
            x = source(rows)
            noise_gen.manual_seed(noise_seed(config.seed, epoch, step))
            xc, mask = corrupt(x, config.corruption, config.gaussian_noise, noise_gen, global_rows=n_global, offset=lo,
                               rescale=config.corruption_rescale)
            per, z, cats = batch_nll(module, net, source, rows, xc, x, amp, with_z=True)
            recon = reduce_loss(per, mask if config.loss_on == "masked" else None)
            loss = recon
            if mmd_weight > 0 and cats is not None:
                # relative to the reconstruction loss, so that one weight means the same for every likelihood and
                # data scale (the per-entry NLL of min-max input is ~100× smaller than that of counts)
                loss = recon + mmd_weight * recon.detach() * batch_mmd(z, cats[:, 0], module.n_cats_per_cov[0])
            # DDP averages gradients over ranks: weight by this rank's share so the result is the global mean
            scaled = loss * (x.shape[0] * world / n_global) if world > 1 else loss
            opt.zero_grad(set_to_none=True)
            scaled.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
            opt.step()
            total += recon.detach() * x.shape[0]  # the reconstruction loss (comparable with validation); no host sync
        if world > 1:
            torch.distributed.all_reduce(total)
        train_loss = float(total) / n_train
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training diverged at epoch {epoch + 1} (loss {train_loss}); lower --lr or set --grad-clip"
            )
        val_loss = evaluate_loss(module, source, monitor_idx, config)
        hist.train_loss.append(train_loss)
        hist.val_loss.append(val_loss)
        hist.epochs_run = epoch + 1
        if val_loss < hist.best_loss - 1e-7:
            hist.best_loss, hist.best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = _copy_state(module)
        else:
            bad_epochs += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
        elif (epoch + 1) % max(1, max_epochs // 10) == 0 or epoch == 0:
            log.info("epoch %d/%d  train %.5g  val %.5g", epoch + 1, max_epochs, train_loss, val_loss)
        stop = config.patience > 0 and bad_epochs >= config.patience
        hist.stopped_early = stop  # recorded before the checkpoint, so a resumed run knows it is finished
        if ckpt is not None and rank == 0 and checkpoint_every > 0 and ((epoch + 1) % checkpoint_every == 0 or stop):
            hist.seconds = before + time.perf_counter() - t0
            _save_checkpoint(ckpt, module, opt, hist, best_state, bad_epochs, epoch + 1, config, record)
        if stop:
            log.info("early stop at epoch %d: no validation improvement for %d epochs", epoch + 1, bad_epochs)
            break
    if bar is not None:
        bar.close()
    hist.seconds = before + time.perf_counter() - t0
    module.load_state_dict(best_state)
    module.eval()
    return hist


@torch.no_grad()
def evaluate_loss(module: DenoisingAutoencoder, source: BatchSource, rows: np.ndarray, config: DAEConfig) -> float:
    """Denoising loss on ``rows`` with fixed noise (the same every epoch, so epochs are comparable)."""
    module.eval()
    gen = torch.Generator(device=source.device)
    total, n = 0.0, 0
    for step, start in enumerate(range(0, len(rows), 4096)):
        r = rows[start : start + 4096]
        x = source(r)
        gen.manual_seed(noise_seed(config.seed, _VAL_EPOCH, step))
        xc, mask = corrupt(x, config.corruption, config.gaussian_noise, gen, rescale=config.corruption_rescale)
        # the noise is drawn per 4,096 cells (as always); the likelihood in slices of 1,024 cells, whose
        # temporaries (a count likelihood's lgamma/xlogy terms) stay at a quarter of the memory
        num = torch.zeros((), dtype=torch.float64, device=x.device)
        for i in range(0, len(r), 1024):
            per = batch_nll(module, module, source, r[i : i + 1024], xc[i : i + 1024], x[i : i + 1024])
            masked = config.loss_on == "masked" and mask is not None
            num += (per * mask[i : i + 1024]).sum().double() if masked else per.sum().double()
        den = mask.sum().clamp_min(1) if config.loss_on == "masked" and mask is not None else x.numel()
        total += float(num / den) * x.shape[0]
        n += x.shape[0]
    return total / max(n, 1)


@torch.no_grad()
def embed(module: DenoisingAutoencoder, source: BatchSource, rows: np.ndarray | None = None,
          batch_size: int = 4096) -> np.ndarray:
    """Bottleneck activations of clean (uncorrupted) input, cells × n_latent."""
    module.eval()
    rows = np.arange(source.n_obs) if rows is None else rows
    out = np.empty((len(rows), module.n_latent), np.float32)  # filled in place: no list of chunks to concatenate
    for s in range(0, len(rows), batch_size):
        r = rows[s : s + batch_size]
        out[s : s + len(r)] = module.encode(source(r), *source.covariates(r)).float().cpu().numpy()
    return out


def input_correlations(source: BatchSource, Z: np.ndarray, mean: np.ndarray, transform: np.ndarray,
                       batch_size: int = 1024) -> np.ndarray:
    """Pearson correlation of every gene of the clean model input with every column of ``(Z − mean) @ transform``.

    ``Z``: cells × k activations (rows in the order of ``source``; float32 is fine), ``mean`` (k) and
    ``transform`` (k × k) e.g. a whitening. Streams ``source`` and ``Z`` in row chunks, accumulating per-gene
    sums, sums of squares and ``Xᵀ scores`` in float64 (memory: genes × k; no copy of ``Z`` or the data).
    Genes or columns with no variance get 0. Returns genes × k.
    """
    n, k = Z.shape
    g = len(source.offset)  # the model's genes
    sx, sxx, xz = np.zeros(g), np.zeros(g), np.zeros((g, k))
    sz, szz = np.zeros(k), np.zeros(k)
    for s in range(0, n, batch_size):
        rows = np.arange(s, min(s + batch_size, n))
        x = source(rows).double().cpu().numpy()
        z = (np.asarray(Z[rows], dtype=np.float64) - mean) @ transform
        sx += x.sum(axis=0)
        sxx += np.einsum("ij,ij->j", x, x)  # no temporary of x's size
        xz += x.T @ z
        sz += z.sum(axis=0)
        szz += np.einsum("ij,ij->j", z, z)
    mx, mz = sx / n, sz / n
    sdx = np.sqrt(np.clip(sxx / n - mx**2, 0, None))
    sdz = np.sqrt(np.clip(szz / n - mz**2, 0, None))
    cov = xz / n - np.outer(mx, mz)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = cov / np.outer(sdx, sdz)
    out[~np.isfinite(out)] = 0.0
    return out


# below this, the embedding is constant up to float noise: measured 4e-6 for a dead-ReLU collapse, 0.1-1 for a
# healthy model (bench/README.md, "Why the plain DAE failed")
COLLAPSED = 1e-4


def collapse_ratio(Z: np.ndarray) -> float:
    """Largest per-node sd of an embedding relative to its largest absolute value (0 = every cell the same)."""
    Z = np.asarray(Z, dtype=np.float64)
    if Z.shape[0] < 2:
        return float("inf")
    top = float(np.abs(Z).max())
    return float(Z.std(axis=0).max() / top) if top > 0 else 0.0


def _masked(module: DenoisingAutoencoder, source: BatchSource, z: torch.Tensor, logits: torch.Tensor):
    """For a count model on data lacking some of its genes: those genes get no share of the library (their
    log-scale output is pushed to -1e4, so the softmax renormalises over the genes present and their NLL is 0)."""
    present = source.gene_present
    if module.counts and present is not None:
        logits = logits.float().masked_fill(~torch.as_tensor(present, device=logits.device), -1e4)
    return z, logits


@torch.no_grad()
def reconstruction_scores(module: DenoisingAutoencoder, source: BatchSource, rows: np.ndarray,
                          batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell reconstruction error and per-gene reconstruction score of clean (uncorrupted) input.

    Per cell: the mean per-entry negative log-likelihood under the model's likelihood (squared error of the
    scaled input for ``normal``, cross-entropy for ``bernoulli``, the negative log-pmf of the counts for
    ``poisson``/``nb``/``zinb``). Per gene: for ``normal``/``bernoulli`` the R² of the scaled input; for count
    likelihoods the fraction of Poisson deviance explained, ``1 - D(model) / D(null)``, where the model's
    rate is its expected count ``library * softmax`` and the null model gives every cell the gene's overall
    share of its library (the deviance R² of GLMs; Cameron & Windmeijer 1996). NaN for genes that do not vary.
    Accumulated batch by batch: nothing cells × genes is kept. Batches of 1,024 cells: a count likelihood's
    deviance terms take about ten dense batch × genes temporaries (some 0.4 GB at 4,096 cells × 2,000 genes).
    """
    module.eval()
    cell_err = np.zeros(len(rows), dtype=np.float64)
    g = source.n_vars
    acc = {k: torch.zeros(g, dtype=torch.float64, device=source.device) for k in ("a", "b", "c", "d")}
    total_lib = 0.0
    empty: list[bool] = []
    for s in range(0, len(rows), batch_size):
        r = rows[s : s + batch_size]
        x = source(r)
        cats, cont = source.covariates(r)
        z, logits = _masked(module, source, *module(x, cats, cont))
        if module.counts:
            y = source.target(r)
            lib = library_size(y)
            per = module.nll(z, logits, y, lib, cats)
            empty.extend((lib <= 0).cpu().tolist())
            y = y.to_dense() if y.is_sparse else y
            mu = module.output(logits) * lib.unsqueeze(1)
            ylogy = torch.xlogy(y, y)
            acc["a"] += ylogy.sum(0).double()  # sum y log y
            acc["b"] += torch.xlogy(y, lib.clamp_min(1e-12).unsqueeze(1)).sum(0).double()  # sum y log l
            acc["c"] += y.sum(0).double()  # sum y
            acc["d"] += (ylogy - torch.xlogy(y, mu.clamp_min(1e-12)) - (y - mu)).sum(0).double()  # deviance / 2
            total_lib += float(lib.double().sum())
        else:
            per = module.nll(z, logits, x)
            r_ = module.output(logits).float()
            acc["a"] += (r_ - x).square().sum(0).double()  # SSE
            acc["b"] += x.sum(0).double()
            acc["c"] += x.square().sum(0).double()
        if module.counts and source.gene_present is not None:  # absent genes are not scored
            per = per[:, torch.as_tensor(source.gene_present, device=per.device)]
        cell_err[s : s + x.shape[0]] = per.mean(1).double().cpu().numpy()
    n = max(len(rows), 1)
    if module.counts:
        cell_err[np.asarray(empty, dtype=bool)] = np.nan  # no counts in the model's genes: nothing to score
        Y = acc["c"]
        null = acc["a"] - acc["b"] - torch.xlogy(Y, Y / max(total_lib, 1e-12))  # null deviance / 2
        score = torch.where(null > 1e-9, 1 - acc["d"] / null.clamp_min(1e-9), torch.full_like(null, float("nan")))
    else:
        sst = acc["c"] - acc["b"].square() / n
        score = torch.where(sst > 1e-12, 1 - acc["a"] / sst.clamp_min(1e-12), torch.full_like(sst, float("nan")))
    return cell_err, score.cpu().numpy()


@torch.no_grad()
def denoise_chunks(module: DenoisingAutoencoder, source: BatchSource, rows: np.ndarray | None = None,
                   batch_size: int = 4096):
    """Yield ``(start, block)``: the reconstruction of clean input, ``batch_size`` cells at a time (float32).

    Count likelihoods give each cell's expected share of its library per gene (rows sum to 1; the mean of
    the negative binomial part, without zero-inflation dropouts, as DCA and scVI's normalised expression);
    ``normal``/``bernoulli`` the reconstruction in the model's scaled input space. The decoder sees
    ``source.decode_cats`` when set (counterfactual covariates), the encoder the cells' own.
    """
    module.eval()
    rows = np.arange(source.n_obs) if rows is None else rows
    for s in range(0, len(rows), batch_size):
        r = rows[s : s + batch_size]
        cats, cont = source.covariates(r)
        dcats = source.covariates(r, decoder=True)[0] if source.decode_cats is not None else None
        z, logits = _masked(module, source, *module(source(r), cats, cont, dcats))
        yield s, module.output(logits).float().cpu().numpy()


def gene_weights(module: DenoisingAutoencoder, source: BatchSource | None = None,
                 max_cells: int = 2000, seed: int = 0) -> np.ndarray:
    """genes × latent weights: the decoder matrix (linear/tied), or the mean Jacobian (MLP decoder)."""
    if module.decoder_kind == "linear" or module.tied:
        return module.linear_gene_weights().float().cpu().numpy().copy()  # not a view of the live weights
    if source is None:
        raise ValueError("an MLP decoder's gene weights need data (the mean Jacobian over cells)")
    rows = np.arange(source.n_obs)
    if len(rows) > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_cells, replace=False))
    z = torch.from_numpy(embed(module, source, rows)).to(source.device)
    module.eval()
    cats, cont = source.covariates(rows)
    return module.mean_jacobian(z, cats=cats, cont=cont).detach().float().cpu().numpy()


# --- checkpoints: safetensors for tensors, JSON metadata for the rest; nothing is ever unpickled ---------


def check_checkpoint_dir(checkpoint_dir: str | Path | None, fix: str = "remove it or give another checkpoint_dir") -> None:
    """Before training: the checkpoint folder, when it exists, is a folder (else writing the first checkpoint would
    fail after an epoch of training). ``fix``: what to tell the user. Raises UserError."""
    if checkpoint_dir is None:
        return
    path = Path(checkpoint_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"checkpoint folder {path} is a file: {fix}")


def remove_checkpoint(checkpoint_dir: str | Path) -> None:
    """Delete the checkpoint file (and its folder when that is left empty), nothing else."""
    ckpt = Path(checkpoint_dir)
    (ckpt / CHECKPOINT_FILE).unlink(missing_ok=True)
    try:
        ckpt.rmdir()
    except OSError:
        pass  # absent, or holds the user's other files


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _json_roundtrip(obj):
    """``obj`` as it reads back from JSON (tuples become lists), so that a record compares equal to its saved copy."""
    return json.loads(json.dumps(obj))


def _save_checkpoint(path: Path, module, opt, hist: History, best_state, bad_epochs: int, epoch: int,
                     config: DAEConfig, data: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.contiguous().cpu() for k, v in module.state_dict().items()}
    tensors.update({f"best.{k}": v.contiguous().cpu() for k, v in best_state.items()})
    osd = opt.state_dict()
    scalars: dict[str, dict] = {}
    for pid, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    meta = {
        "epoch": epoch,
        "bad_epochs": bad_epochs,
        "history": asdict(hist),
        "param_groups": osd["param_groups"],
        "opt_scalars": scalars,
        "config": config.to_dict(),
        "data": data,  # what identifies the training data (fit(): checked on resume)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"genodae_checkpoint": json.dumps(meta)})
    default_mode(tmp)
    os.replace(tmp, path)  # a kill mid-write never leaves a checkpoint that looks complete


# what a difference in each entry of the data record means, in the order they are reported
_DATA_DIFFERENCES = {
    "n_genes": "{old} genes in the checkpoint, {new} now",
    "genes": "genes differ",
    "n_cells": "{old} cells in the checkpoint, {new} now",
    "cells": "cell names differ",
    "n_train": "training cells differ",
    "n_val": "validation cells differ",
    "layer": "layer {old} in the checkpoint, {new} now",
    "gene_likelihood": "gene likelihood {old} in the checkpoint, {new} now",
    "scaling": "per-gene scaling differs: prepared otherwise",
    "preparation": "prepared otherwise ({detail})",
    "covariates": "covariates differ (categorical levels, or a continuous covariate's mean or SD)",
    "cell_covariates": "the cells' batch or covariate values differ",
}
# differences that follow from another one (other genes have other scaling), not reported beside it
_IMPLIED = {"genes": ("n_genes",), "cells": ("n_cells",), "n_train": ("n_cells",), "n_val": ("n_cells",),
            "scaling": ("n_genes", "genes", "preparation"), "cell_covariates": ("n_cells", "cells", "covariates")}


def _data_differences(saved: dict, now: dict) -> list[str]:
    """How the data record of a checkpoint differs from this run's, in words (empty: the same data)."""
    keys = [k for k in (*_DATA_DIFFERENCES, *sorted(set(saved) | set(now))) if saved.get(k) != now.get(k)]
    keys = [k for k in dict.fromkeys(keys) if not set(_IMPLIED.get(k, ())) & set(keys)]
    return [_DATA_DIFFERENCES.get(k, k + " differs").format(old=saved.get(k), new=now.get(k),
                                                            detail=_preparation_detail(saved.get(k), now.get(k)))
            for k in keys]


def _preparation_detail(saved, now) -> str:
    """Which preparation settings differ, e.g. ``target_sum 10000.0 in the checkpoint, 100.0 now``."""
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return "prepared data in one, unprepared in the other" if (saved is None) != (now is None) else "differs"
    a, b = dict(saved.get("params") or {}), dict(now.get("params") or {})
    parts = [f"{k} {a.get(k)} in the checkpoint, {b.get(k)} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    parts += [f"{k} {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in ("input_kind", "transform", "source")
              if saved.get(k) != now.get(k)]
    if not parts and saved.get("evidence") != now.get("evidence"):
        parts.append("the raw values it was prepared from differ")
    return "; ".join(parts) or "differs"


def _load_checkpoint(path: Path, module, opt, hist: History, config: DAEConfig, data: dict):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["genodae_checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise UserError(f"checkpoint {path} is unreadable ({e}); delete it to start from scratch") from None
    damaged = _damaged_record(meta)
    if damaged:
        raise UserError(f"checkpoint {path} is damaged ({damaged}); delete it to start from scratch")
    saved = {k: v for k, v in meta["config"].items() if k not in ("epochs", "patience", "device", "num_threads")}
    now = {k: v for k, v in config.to_dict().items() if k in saved}
    if saved != now:
        diff = sorted(k for k in saved if saved[k] != now.get(k))
        raise UserError(f"checkpoint {path} was made with other settings ({', '.join(diff)}); "
                        "delete it or train without --resume (resume=False in Python)")
    if "data" not in meta:
        raise UserError(f"checkpoint {path} does not record the data it was made on (written by an older genodae): "
                        f"delete {path} or train without --resume (resume=False in Python)")
    if "cell_covariates" in data and "cell_covariates" not in meta["data"]:
        raise UserError(f"checkpoint {path} does not record each cell's batch or covariate values (written by an older "
                        f"genodae): delete {path} or train without --resume (resume=False in Python)")
    differ = _data_differences(meta["data"], data)
    if differ:
        raise UserError(f"checkpoint {path} was made on other data ({'; '.join(differ)}): delete {path} or train "
                        "without --resume (resume=False in Python)")
    dev = next(module.parameters()).device
    try:
        module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError:  # e.g. size mismatch (a hand-edited record): torch's message is many lines
        raise UserError(f"checkpoint {path} does not fit this model (its weights have other shapes): delete {path} "
                        "or train without --resume (resume=False in Python)") from None
    best = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("best.")}
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v  # load_state_dict moves them
    try:
        for pid, sc in meta["opt_scalars"].items():
            state.setdefault(int(pid), {}).update(sc)
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise UserError(f"checkpoint {path} is damaged (its optimizer state does not fit this model); delete it to "
                        "start from scratch") from None
    for k, v in meta["history"].items():
        if k in History.__dataclass_fields__:
            setattr(hist, k, v)
    return int(meta["epoch"]), best, int(meta["bad_epochs"])


# what a checkpoint's record holds, by type (a hand-edited or foreign file may lack any of them)
_RECORD_FIELDS = {"config": dict, "history": dict, "opt_scalars": dict, "param_groups": list, "epoch": int,
                  "bad_epochs": int}


def _damaged_record(meta) -> str | None:
    """What is wrong with a checkpoint's record, in words, or None. ``data`` is checked by the caller (its absence
    has a message of its own)."""
    if not isinstance(meta, dict):
        return "its record is not a JSON object"
    for key, kind in _RECORD_FIELDS.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its record has no valid {key!r}"
    if "data" in meta and not isinstance(meta["data"], dict):
        return "its record has no valid 'data'"
    return None
