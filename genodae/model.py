"""``DAE``: the AnnData-aware model. It picks the genes and the layer, builds and trains the torch module,
maps results back to ``obs_names``/``var_names``, and saves itself as safetensors + JSON."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from . import __version__, _keys
from ._threads import configure as configure_threads
from ._values import raw_counts
from .config import (
    ACTIVATION_RANGES,
    COUNT_LIKELIHOODS,
    DENOISED_SCALES,
    DAEConfig,
    PrepareConfig,
    make_config,
)
from .errors import UserError
from .get import model_fingerprint, network_fingerprint
from .pp import PREP_KEY, check_batches, check_finite, is_counts, prepared_matrix, scaling_params
from .rotation import readable_basis
from .train import (
    COLLAPSED,
    BatchSource,
    History,
    LogNormalizedCounts,
    build_module,
    collapse_ratio,
    denoise_chunks,
    embed,
    fit,
    gene_weights,
    init_distributed,
    input_correlations,
    library_size,
    make_source,
    reconstruction_scores,
    resolve_device,
    split_cells,
)

log = logging.getLogger("genodae")

FORMAT_VERSION = 6  # 6: rotation "varimax" keeps distances (an orthogonal rotation of the bottleneck); 5: rotation "sparse"; 4: readable basis (rotation); 3: covariates (batch_key); 2: gene_likelihood; version-1/2 folders still load
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


class DAE:
    """A masking-noise denoising autoencoder over the genes of an AnnData.

    Examples
    --------
    >>> model = genodae.DAE(n_latent=32, epochs=50).fit(adata)      # adata prepared by genodae.pp.prepare
    >>> adata.obsm["X_dae"] = model.embed(adata)
    >>> model.save("model/")
    >>> genodae.DAE.load("model/").embed(new_raw_counts)             # re-applies the preparation
    """

    def __init__(self, config: DAEConfig | None = None, *, preset: str = "default", **settings: Any) -> None:
        self.config = config if config is not None else make_config(preset, **settings)
        self.preset = preset if config is None else ""  # recorded with the settings ("": given as a DAEConfig)
        self.module = None
        self.genes: pd.Index | None = None
        self.offset = self.scale = None
        self.prep: dict[str, Any] = {}
        self.layer: str | None = None
        self.gene_likelihood: str | None = None  # resolved (never "auto") once fitted or loaded
        # levels of each categorical covariate (batch first) and (mean, sd) of each continuous one, from training
        self.covariates: dict[str, dict[str, list]] = {"categorical": {}, "continuous": {}}
        self.mapping: list[dict[str, Any]] = []  # reference mappings (map_query) this model has been through
        self.history: History | None = None
        self.weights: np.ndarray | None = None  # genes × n_latent, in the reported basis (gene_weights())
        self.decoder_weights: np.ndarray | None = None  # genes × n_latent, the decoder's, in the reported basis
        self.readout: dict[str, np.ndarray] | None = None  # mean, transform: bottleneck → reported basis
        self.val_idx = np.zeros(0, dtype=np.int64)
        self.device = torch.device("cpu")

    # --- training -------------------------------------------------------------------------------------

    def fit(self, adata: AnnData, *, layer: str | None = None, checkpoint_dir: str | Path | None = None,
            checkpoint_every: int = 0, resume: bool = False, progress: bool | None = None,
            init_module: Callable[[torch.nn.Module], None] | None = None) -> DAE:
        """Train on the genes marked in ``var["highly_variable"]`` of a prepared ``adata``.

        With a count likelihood (``gene_likelihood`` ``poisson``/``nb``/``zinb``, or ``auto`` on count input)
        the model reads the normalised, scaled input as always but reconstructs the raw counts of
        ``layers["counts"]`` (written by :func:`genodae.pp.prepare`), each cell's observed total over the
        model's genes being its library size.

        ``init_module``, if given, is called with the freshly built torch module (after the seeded weight
        initialisation, before training and before any checkpoint is resumed): a place for prototypes of model
        changes, such as another initialisation or torch hooks that constrain the weights (see
        bench/signatures.py).

        ``adata.X`` may be None for data prepared from counts (:func:`genodae.io.read_sharing` with
        ``x_from_counts=True``, as ``genodae train`` reads a prepared file): the input is then computed from
        ``layers["counts"]`` one minibatch at a time, ``log1p(counts / (cell total / target_sum))``, the prepared X
        to the bit, without holding it.

        Raises
        ------
        UserError
            Unprepared or empty data, too few cells or genes, or a count likelihood without raw counts; with
            ``resume``, a checkpoint in ``checkpoint_dir`` made with other settings or on other data (other genes,
            cells, scaling, layer or covariate levels), or one that does not record its data (see
            :func:`genodae.train.fit`).
        """
        cfg = self.config
        if cfg.gene_likelihood in COUNT_LIKELIHOODS and PREP_KEY not in adata.uns:
            raise UserError(f"gene_likelihood={cfg.gene_likelihood!r} needs data prepared from raw counts: run genodae "
                            "prepare (genodae.pp.prepare) first; it keeps the raw counts in layers['counts']")
        X, genes, offset, scale, prep, columns = _training_input(adata, layer)
        likelihood = cfg.resolved_gene_likelihood(prep.get("input_kind", "log"))
        counts = None
        if likelihood in COUNT_LIKELIHOODS:
            counts = _training_counts(adata, layer, prep, likelihood, genes, columns)
        if X is None:
            X, C = _input_from_counts(adata, prep, genes, counts)
            counts = C if counts is not None else None
        if cfg.n_latent > len(genes):
            raise UserError(f"n_latent={cfg.n_latent} is larger than the {len(genes)} genes the model uses; "
                            "choose n_latent <= the number of genes")
        if adata.n_obs < 2:
            raise UserError("training needs at least 2 samples; a single sample can only be embedded with a "
                            "saved model (genodae embed)")
        scaling = prep["params"]["scaling"]
        out_act = cfg.resolved_output_activation(likelihood)
        # a 0-1 likelihood, or an output activation whose outputs cannot reach the scaled values (sigmoid's (0, 1) or
        # relu's [0, ∞) against z-scores; sigmoid's against log values), needs 0-1 input
        lo, hi = ACTIVATION_RANGES.get(out_act, (-np.inf, np.inf))
        data_min = float(prep.get("evidence", {}).get("min", -np.inf))
        reaches = (lo == -np.inf and hi == np.inf) or (scaling == "none" and hi == np.inf and lo <= min(data_min, 0))
        needs_01 = likelihood == "bernoulli" or (likelihood not in COUNT_LIKELIHOODS and not reaches)
        if needs_01 and scaling != "minmax":
            what = "gene_likelihood='bernoulli'" if likelihood == "bernoulli" else f"output_activation={out_act!r}"
            why = what if likelihood == "bernoulli" else (
                f"{what} (its outputs cannot reach every {'z-scored' if scaling == 'zscore' else 'unscaled'} value)")
            other = "another gene_likelihood" if likelihood == "bernoulli" else "output_activation='linear'"
            if not prep.get("scaling_auto"):
                raise UserError(f"{why} needs 0-1 input: prepare with scaling='minmax' or 'auto' (genodae prepare "
                                f"--scaling minmax) or choose {other}")
            if X is None or columns is not None:
                raise UserError(f"{why} needs 0-1 input; prepare's scaling='auto' chose z-scores for input without "
                                "counts, and training from disk (--backed) cannot min-max scale the genes itself: "
                                "train in memory (without --backed), or prepare with scaling='minmax' (genodae "
                                f"prepare --scaling minmax), or choose {other}")
            # scaling='auto' chose z-scores for these data; the model min-max scales the genes itself
            offset, scale = scaling_params(X, "minmax")
            scaling = "minmax"
            prep["params"] = {**prep["params"], "scaling": scaling}
            log.info("%s needs 0-1 input: the model min-max scales the genes itself (prepare's scaling='auto' chose "
                     "zscore for these data)", what)
        self.covariates = _fit_covariates(adata, cfg)
        self.genes, self.offset, self.scale, self.prep, self.layer = genes, offset, scale, prep, layer
        self.gene_likelihood = likelihood
        log.info("gene likelihood: %s%s", likelihood,
                 f" (auto, for {prep.get('input_kind', 'log')} input)" if cfg.gene_likelihood == "auto" else "")
        torch.manual_seed(cfg.seed)  # weight initialisation
        self.module = self._build(out_act, likelihood)
        if init_module is not None:
            init_module(self.module)
        _, world, rank_device = init_distributed()  # torchrun: one rank per process, cells split per batch
        self.device = rank_device if rank_device is not None else resolve_device(cfg.device)
        source = self._source(X, columns=columns, counts=counts, obs=adata.obs)
        train_idx, self.val_idx = split_cells(adata.n_obs, cfg.val_fraction, cfg.seed)
        n_params = sum(p.numel() for p in self.module.parameters())
        log.info("training DAE: %d cells (%d validation) × %d genes → %d nodes, %d parameters, on %s%s (data: %s)",
                 len(train_idx), len(self.val_idx), len(genes), cfg.n_latent, n_params, self.device,
                 f" × {world} ranks" if world > 1 else "", source.placement)
        try:
            self.history = fit(self.module, source, cfg, train_idx=train_idx, val_idx=self.val_idx,
                               checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                               resume=resume, progress=progress, data=self._data_record(adata))
        except torch.cuda.OutOfMemoryError:  # the same class as torch.OutOfMemoryError (torch >= 2.5)
            raise UserError(f"out of GPU memory with batch_size={cfg.batch_size}; lower --batch-size, stream "
                            "minibatches from host memory (--data-placement host), or train on CPU (--device cpu)") from None
        self.decoder_weights = self.weights = gene_weights(self.module, source, seed=cfg.seed)
        self.readout = None
        if cfg.rotation != "none":
            self._fit_readout(source)
        probe = np.sort((self.val_idx if len(self.val_idx) > 1 else train_idx)[:2000])  # sorted: cheap when backed
        ratio = collapse_ratio(embed(self.module, source, probe))
        if ratio < COLLAPSED:
            log.warning("training collapsed: every cell gets nearly the same embedding (largest latent sd is %.1g "
                        "of its values), so the model learned little beyond the gene means; lower --lr, or use "
                        "--activation gelu or --norm batch", ratio)
        h = self.history
        log.info("trained %d epochs in %.1fs (%.0f cells/s per epoch); best validation loss %.5g at epoch %d",
                 h.epochs_run, h.seconds, h.epochs_run * len(train_idx) / max(h.seconds, 1e-9), h.best_loss,
                 h.best_epoch + 1)
        return self

    def _data_record(self, adata: AnnData) -> dict[str, Any]:
        """What identifies the training data, for checkpoints (a resumed run must train on the same data):
        fingerprints of the model's genes (in order), of the cell names, of the per-gene scaling and of each cell's
        covariate values (batch labels), the layer, the likelihood and the covariate levels. Cheap: names, per-gene
        and per-cell vectors, never the matrix."""
        import hashlib

        def digest(*parts) -> str:
            h = hashlib.sha256()
            for part in parts:
                h.update(part if isinstance(part, bytes) else "\0".join(map(str, part)).encode())
                h.update(b"\1")
            return h.hexdigest()[:16]

        scaling = [np.ascontiguousarray(np.asarray(v, dtype=np.float32)).tobytes() for v in (self.offset, self.scale)]
        prep = self.prep if PREP_KEY in adata.uns else None  # the data's record, scaling as the model uses it
        # how the input was prepared (settings, transform, and the evidence about the raw values it was read from):
        # per-gene min-max scaling hides e.g. another target_sum under scaling="none" from the scaling fingerprint
        preparation = ({k: prep[k] for k in ("params", "input_kind", "transform", "source", "evidence") if k in prep}
                       if isinstance(prep, Mapping) else None)
        if preparation is not None:  # None-valued settings are not written to .h5ad: the same in memory and on disk
            preparation["params"] = {k: v for k, v in dict(preparation.get("params", {})).items() if v is not None}
        record = {"genes": digest(self.genes), "cells": digest(adata.obs_names), "scaling": digest(*scaling),
                  "preparation": _json_safe(preparation), "layer": self.layer, "gene_likelihood": self.gene_likelihood,
                  "covariates": _json_safe(self.covariates)}
        if self.covariates and (self.covariates.get("categorical") or self.covariates.get("continuous")):
            # each cell's batch/covariate values, not only the levels: relabelled cells are other training data
            cats, cont = self._covariate_values(adata.obs)
            record["cell_covariates"] = digest(*(np.ascontiguousarray(v).tobytes() for v in (cats, cont) if v is not None))
        return record

    def _fit_readout(self, source: BatchSource) -> None:
        """Put the nodes in their readable basis (``rotation="varimax"`` or ``"sparse"``), from the cells given to fit.

        :func:`genodae.rotation.readable_basis` of the bottleneck activities of every training cell: gene
        weights become each gene's Pearson correlation with the node over those cells (its clean model input:
        log1p-normalised counts or log values, scaled), rotated (``cfg.rotation``); the embedding is mapped to the same
        nodes (with ``varimax`` by an orthogonal rotation of the centred bottleneck: distances between cells kept).
        The decoder's weights are re-expressed in that basis (``W · transform⁻ᵀ``), so the decoder weights times
        the reported embedding equal the decoder weights times the bottleneck, up to a constant per gene (the
        weights times the training mean)."""
        t0 = time.perf_counter()
        Z = embed(self.module, source, batch_size=1024)  # cells × k float32: the only per-cell array held
        k = Z.shape[1]
        basis = readable_basis(Z, lambda mean, M: input_correlations(source, Z, mean, M), self.config.rotation)
        if basis["rank"] < k and self.config.rotation == "sparse":
            log.warning("gene weights: the %d training cells span only %d of the %d nodes, so the nodes are kept as "
                        "trained (no readable basis; gene weights = decoder weights); train on more cells or lower "
                        "n_latent", Z.shape[0], basis["rank"], k)
            return
        if basis["rank"] < k:
            log.warning("gene weights: the %d training cells span only %d of the %d nodes, so %d varimax nodes carry "
                        "(nearly) no variance and no weights; train on more cells or lower n_latent", Z.shape[0],
                        basis["rank"], k, k - basis["rank"])
        self.readout = {"mean": basis["mean"], "transform": basis["transform"]}
        self.weights = basis["weights"].astype(np.float32)
        self.decoder_weights = (self.decoder_weights @ np.linalg.inv(basis["transform"]).T).astype(np.float32)
        log.info("gene weights: correlations with %d %s-rotated nodes (readable basis) in %.1fs", k,
                 self.config.rotation, time.perf_counter() - t0)

    def _readable(self, Z: np.ndarray) -> np.ndarray:
        """Bottleneck activations (cells × n_latent) in the reported basis (unchanged without a readout)."""
        if self.readout is None:
            return Z
        mean, T = self.readout["mean"], self.readout["transform"]
        out = np.empty(Z.shape, dtype=np.float32)
        for s in range(0, len(Z), 65536):  # float64 a chunk at a time
            out[s : s + 65536] = (np.asarray(Z[s : s + 65536], np.float64) - mean) @ T
        return out

    def _build(self, output_activation: str, likelihood: str):
        cov = self.covariates
        return build_module(len(self.genes), self.config, output_activation, likelihood,
                            n_cats_per_cov=tuple(len(v) for v in cov["categorical"].values()),
                            n_continuous=len(cov["continuous"]))

    def _source(self, X, missing: np.ndarray | None = None, columns: np.ndarray | None = None,
                counts=None, obs: pd.DataFrame | None = None) -> BatchSource:
        offset = self.offset.copy()
        if missing is not None and missing.any():
            offset[missing] = 0.0  # absent genes were filled with 0: make their model input exactly 0
        source = make_source(X, offset, self.scale, self.device, clip=self.prep["params"]["scaling"] == "minmax",
                             placement=self.config.data_placement, columns=columns, counts=counts)
        if missing is not None and missing.any():
            source.gene_present = ~np.asarray(missing, dtype=bool)
        if obs is not None:
            source.cats, source.cont = self._covariate_values(obs)
        return source

    def _covariate_values(self, obs: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(codes cells × categorical, standardised values cells × continuous) of ``obs`` under the training levels.

        A level never seen in training, or a missing column, gets code -1 (the decoder then adds the mean of the
        known levels' offsets); with ``encode_covariates`` that is an error, since the encoder needs the level."""
        cov = self.covariates
        cats = cont = None
        if cov["categorical"]:
            cats = np.empty((len(obs), len(cov["categorical"])), dtype=np.int64)
            for i, (key, levels) in enumerate(cov["categorical"].items()):
                if key not in obs.columns:
                    if self.config.encode_covariates:
                        raise UserError(f"the model's encoder is conditioned on obs column {key!r}, which these data "
                                        "lack: add the column (a batch name per cell)")
                    log.info("the data have no obs column %r: every cell is treated as from an unseen %s (the "
                             "decoder gets the mean of the training levels; the embedding does not depend on it)",
                             key, "batch" if i == 0 and self.config.batch_key else "level")
                    cats[:, i] = -1
                    continue
                values = obs[key].astype(str).to_numpy()
                codes = pd.Index(levels).get_indexer(values)
                unseen = sorted(set(values[codes < 0]))
                if unseen and self.config.encode_covariates:
                    raise UserError(f"level(s) {', '.join(map(repr, unseen[:5]))} of obs column {key!r} were not seen in "
                                    "training and the encoder is conditioned on it: map them onto the model first "
                                    "(genodae map, DAE.map_query), or use a model trained without encode_covariates")
                if unseen:
                    log.info("%d cell(s) from level(s) of %r unseen in training (%s): the decoder gets the mean of "
                             "the training levels", int((codes < 0).sum()), key, ", ".join(unseen[:5]))
                cats[:, i] = codes
        if cov["continuous"]:
            cont = np.zeros((len(obs), len(cov["continuous"])), dtype=np.float32)
            for i, (key, (mean, sd)) in enumerate(cov["continuous"].items()):
                if key not in obs.columns:
                    if self.config.encode_covariates:
                        raise UserError(f"the model's encoder is conditioned on obs column {key!r}, which these data "
                                        "lack: add the column")
                    log.warning("the data have no obs column %r: its training mean is used for every cell", key)
                    continue
                v = _numeric_column(obs, key)
                cont[:, i] = (v - mean) / sd
        return cats, cont

    def map_query(self, adata: AnnData, *, epochs: int | None = None, lr: float | None = None,
                  allow_missing_genes: bool = False, progress: bool | None = None) -> DAE:
        """Reference mapping (the architecture surgery of scArches, Lotfollahi et al. 2022): a copy of this model
        extended with the levels of ``adata``'s batches (and other categorical covariates) unseen in training, whose
        new per-level parameters — the batch offsets of the decoder, of the encoder when ``encode_covariates``,
        and the per-batch dispersion — are the only ones trained, on the query cells; every reference weight
        stays frozen.

        So reference cells get the same embedding, denoised values and gene weights from the mapped model as from
        this one, bit for bit, and the query cells are embedded in the reference's space. Without
        ``encode_covariates`` the embedding of any cell does not depend on its batch, so mapping changes only
        what the decoder gives the query cells (denoised values, reconstruction scores); ``embed`` works on
        unseen batches directly.

        Parameters
        ----------
        adata
            Query cells (raw or prepared like the reference's data), with the model's covariate columns in obs.
        epochs, lr
            Training of the new parameters (default: the model's settings).

        Returns
        -------
        The mapped model (this one is not changed).

        Raises
        ------
        UserError
            A model without batch_key, a query without the batch column or without new levels.
        """
        self._check_fitted()
        key = self.config.batch_key
        if not key:
            raise UserError("reference mapping needs a model trained with batch_key (--batch-key): its batches are what "
                            "the query adds to")
        missing = [k for k in self.covariates["categorical"] if k not in adata.obs.columns]
        if missing:
            raise UserError(f"the query has no obs column {missing[0]!r}: give each query cell its batch "
                            f"(e.g. --obs SHEET, or several input files with --batch-key {key})")
        new_levels = {}
        for k, levels in self.covariates["categorical"].items():
            values = adata.obs[k].astype(str)
            if values.isna().any():
                raise UserError(f"obs column {k!r} of the query has missing values; give every cell a level")
            new_levels[k] = sorted(set(values) - set(levels))
        if not any(new_levels.values()):
            raise UserError(f"every query batch of {key!r} is already in the model; nothing to map (embed the cells "
                            "with the model directly)")
        cfg = dataclasses.replace(self.config, weight_decay=0.0, **{k: v for k, v in (("epochs", epochs), ("lr", lr))
                                                                      if v is not None})
        mapped = DAE(cfg)
        mapped.genes, mapped.offset, mapped.scale = self.genes, self.offset, self.scale
        mapped.prep, mapped.layer, mapped.gene_likelihood = self.prep, self.layer, self.gene_likelihood
        mapped.preset = self.preset  # the reference's settings, and where they started from
        mapped.weights, mapped.history, mapped.device = self.weights.copy(), self.history, self.device
        mapped.decoder_weights, mapped.readout = self.decoder_weights.copy(), self.readout
        mapped.covariates = {"categorical": {k: [*v, *new_levels[k]] for k, v in self.covariates["categorical"].items()},
                             "continuous": dict(self.covariates["continuous"])}
        mapped.module = mapped._build(self.module.output_activation, self.gene_likelihood).to(self.device)
        reference = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        grown = _load_grown(mapped.module, reference)  # name → rows of the reference (tables that gained rows)
        for name, p in mapped.module.named_parameters():
            p.requires_grad_(name in grown)
            if name in grown:
                n_old = grown[name]
                p.register_hook(lambda g, n_old=n_old: torch.cat([torch.zeros_like(g[:n_old]), g[n_old:]]))
        batchnorms = [m for m in mapped.module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in batchnorms:
            m.momentum = 0.0  # training mode must not move the reference's running statistics
        source = mapped._input(adata, allow_missing_genes, with_counts=True)
        train_idx, val_idx = split_cells(adata.n_obs, cfg.val_fraction, cfg.seed)
        log.info("mapping %d query cells onto the reference: new level(s) %s; training only their parameters (%s)",
                 adata.n_obs, "; ".join(f"{k}: {', '.join(v)}" for k, v in new_levels.items() if v), ", ".join(grown))
        hist = fit(mapped.module, source, cfg, train_idx=train_idx, val_idx=val_idx, progress=progress)
        for m in batchnorms:
            m.momentum = 0.1
        with torch.no_grad():  # the reference part exactly as it was, whatever the optimiser did
            state = mapped.module.state_dict()
            for name, ref in reference.items():
                target = state[name][: ref.shape[0]] if name in grown else state[name]  # 0-dim buffers: whole
                target.copy_(ref)
        for p in mapped.module.parameters():
            p.requires_grad_(True)
        mapped.mapping = [*self.mapping, {"levels": {k: v for k, v in new_levels.items() if v}, "cells": int(adata.n_obs),
                                          "epochs_run": int(hist.epochs_run), "best_loss": float(hist.best_loss),
                                          "seconds": float(hist.seconds)}]
        log.info("mapped in %d epochs (%.1fs); best validation loss %.5g", hist.epochs_run, hist.seconds, hist.best_loss)
        return mapped

    def _check_fitted(self) -> None:
        if self.module is None:
            raise UserError("the model is not trained yet: call fit() or load a saved model")

    # --- outputs --------------------------------------------------------------------------------------

    def _input(self, adata: AnnData, allow_missing_genes: bool, with_counts: bool = False):
        """A data source over ``adata`` in the model's genes; ``with_counts`` adds the raw counts a count
        likelihood scores (from ``layers["counts"]`` of prepared data, or ``X`` of raw counts)."""
        configure_threads(self.config.num_threads)  # before the heavy work; logged once
        with_counts = with_counts and self.module.counts
        obs = adata.obs  # the covariates, before a layer is swapped in below
        if adata.isbacked and PREP_KEY in adata.uns and self.layer is None and self.genes.isin(adata.var_names).all():
            cols = adata.var_names.get_indexer(self.genes)
            counts = _backed_counts(adata) if with_counts else None
            return self._source(adata.X, columns=cols, counts=counts, obs=adata.obs)  # read in chunks
        if adata.isbacked and PREP_KEY not in adata.uns:
            raise UserError("this AnnData of raw (unprepared) data is opened from disk (backed): the model's own "
                            "preparation needs it in memory; read it without backed (anndata.read_h5ad(path)), or "
                            "prepare it first (genodae.pp.prepare / genodae prepare) and embed the prepared .h5ad")
        counts = _model_counts(adata, self.genes) if with_counts else None
        if self.layer is not None and PREP_KEY in adata.uns and self.layer not in adata.layers:
            raise UserError(f"the model was trained on layers[{self.layer!r}] of prepared data, and this prepared "
                            f"AnnData has no layers[{self.layer!r}] (its X holds other values): add that layer, or "
                            "pass the raw data (the model applies its own preparation)")
        if self.layer is not None and self.layer in adata.layers:  # as trained; without it, X of new (raw) data
            adata = AnnData(X=adata.layers[self.layer], obs=adata.obs[[]], var=adata.var[[]],
                            uns={PREP_KEY: adata.uns[PREP_KEY]} if PREP_KEY in adata.uns else {})
        X, missing = prepared_matrix(adata, self.genes, self.prep, allow_missing=allow_missing_genes)
        return self._source(X, missing, counts=counts, obs=obs)

    def embed(self, adata: AnnData, *, allow_missing_genes: bool = False) -> np.ndarray:
        """Cells × n_latent embedding of ``adata`` (raw or prepared; genes aligned by name), float32.

        In the model's reported basis: with ``rotation="varimax"`` (default) an orthogonal rotation of the
        bottleneck activations centred on the cells given to fit, so distances between cells are those of the
        trained bottleneck (what ``sc.pp.neighbors(use_rep="X_dae")`` needs), each column a node of
        :meth:`gene_weights`; with ``"sparse"`` the oblique sparse nodes (each node's spread = the part of the
        bottleneck's variance it carries; nodes may correlate, distances change); with ``"none"`` the bottleneck
        activations as trained."""
        self._check_fitted()
        return self._readable(embed(self.module, self._input(adata, allow_missing_genes)))

    def gene_weights(self, *, decoder: bool = False) -> pd.DataFrame:
        """Per-gene weights, genes used × nodes, labelled (``node0``, ``node1`` …), float32.

        Default (``rotation="varimax"``): each gene's Pearson correlation (−1 … 1, on every likelihood) between
        its clean model input (log1p-normalised counts, or the log values of log-scale input) and the node's
        activity over the cells given to fit (validation cells included), with the nodes rotated (Kaiser's
        varimax, orthogonal) so that each has few high-weight genes: readable as "this gene rises (falls) with
        this node". Same basis as :meth:`embed`. ``rotation="sparse"``: the oblique sparse-coding nodes
        (:func:`genodae.rotation.sparse_rotation`) that :func:`genodae.tl.signatures` reads signatures from by
        default (more accurate signatures on planted programs and bulk pathways, ``bench/results/readable.md``;
        the embedding's distances change).

        ``decoder=True`` (or ``rotation="none"``, where both are the same): the decoder's own weights in that
        basis (the mean Jacobian of an MLP decoder). With a count likelihood they are log-scale loadings: a
        unit step along node k multiplies gene g's expected share of the library by about ``exp(w_gk)`` (before
        the softmax renormalises), as LDVAE's; with ``normal``/``bernoulli``, loadings on the scaled input.
        """
        self._check_fitted()
        W = self.decoder_weights if decoder else self.weights
        return pd.DataFrame(W, index=self.genes, columns=node_names(self.config.n_latent))

    def annotate(self, adata: AnnData, *, key_added: str | None = None, denoised: bool = False,
                 denoised_scale: str = "auto", transform_batch: str | None = None, allow_missing_genes: bool = False,
                 r2_rows: np.ndarray | None = None, key: str | None = None) -> None:
        """Write the embedding, gene weights, reconstruction scores and parameters into ``adata``.

        Adds ``obsm[f"X_{key}"]`` (cells × n_latent), ``varm[f"{key}_weights"]`` (genes × n_latent, zero rows
        for genes the model does not use), ``obs[f"{key}_recon_error"]`` (per-cell mean negative
        log-likelihood of the clean data under the model's likelihood: an anomaly score),
        ``var[f"{key}_recon_r2"]`` (per-gene R² of the scaled input, or for count likelihoods the fraction of
        Poisson deviance explained; NaN for genes not used) and ``uns[key]``; with ``denoised``, also
        ``layers[f"{key}_denoised"]`` on ``denoised_scale`` (see :meth:`denoise`; genes the model does not
        use keep their input values on that scale; with ``transform_batch``, every cell as if from that batch).
        ``key_added`` is that prefix (default ``"dae"``); ``key`` is its deprecated name (a ``FutureWarning``).
        """
        key = _keys.resolve_key_added(key_added, key, where="DAE.annotate")
        t0 = time.perf_counter()
        ann = self._annotations(adata, key=key, denoised=denoised, denoised_scale=denoised_scale,
                                transform_batch=transform_batch, allow_missing_genes=allow_missing_genes,
                                r2_rows=r2_rows)
        _keys.drop_stale_readouts(adata, key, model_fingerprint(ann["uns"]),
                                  model_fingerprint(adata.uns.get(_keys.params_key(key))), network_fingerprint(ann["uns"]))
        adata.obsm[_keys.embedding_key(key)] = ann["obsm"]
        for name, value in ann["varm"].items():
            adata.varm[name] = value
        adata.var[_keys.recon_r2_key(key)] = ann["var"]
        adata.obs[_keys.recon_error_key(key)] = ann["obs"]
        if denoised:
            adata.layers[_keys.denoised_key(key)] = self._denoised_layer(adata, *ann["denoised"])
        adata.uns[_keys.params_key(key)] = ann["uns"]
        log.info("embedded %d cells in %.1fs; added %s", adata.n_obs, time.perf_counter() - t0, ", ".join(ann["added"]))

    def annotate_h5ad(self, path: str | Path, output: str | Path, *, key_added: str | None = None,
                      denoised: bool = False, denoised_scale: str = "auto", transform_batch: str | None = None,
                      allow_missing_genes: bool = False, r2_rows: np.ndarray | None = None,
                      key: str | None = None) -> None:
        """:meth:`annotate` from file to file, in chunks: ``output`` is a copy of the .h5ad ``path`` with the
        annotations added, written atomically. Neither X, the layers nor the denoised layer are ever held in
        memory whole: rows are read from ``path`` chunk by chunk and the denoised layer is written to ``output``
        chunk by chunk (dense float32 cells × genes, as :meth:`annotate` stores it). For a prepared .h5ad (or any
        .h5ad whose genes include the model's); other inputs: read them and use :meth:`annotate`. ``key_added``:
        as there (``key`` is its deprecated name).
        """
        import shutil

        import h5py
        from anndata.io import write_elem

        from .io import atomic_path, read_backed

        key = _keys.resolve_key_added(key_added, key, where="DAE.annotate_h5ad")
        t0 = time.perf_counter()
        adata = read_backed(path)
        try:
            ann = self._annotations(adata, key=key, denoised=denoised, denoised_scale=denoised_scale,
                                    transform_batch=transform_batch, allow_missing_genes=allow_missing_genes,
                                    r2_rows=r2_rows)
            obs, var = adata.obs.copy(), adata.var.copy()
            obs[_keys.recon_error_key(key)] = ann["obs"]
            var[_keys.recon_r2_key(key)] = ann["var"]
            new, old = model_fingerprint(ann["uns"]), model_fingerprint(adata.uns.get(_keys.params_key(key)))
            stale = _keys.stale_readouts(adata, key, new, old, network_fingerprint(ann["uns"]))
            _keys.warn_ensembles_of(adata, key, new, old)
            with atomic_path(output) as tmp:
                shutil.copyfile(path, tmp)
                with h5py.File(tmp, "r+") as f:
                    for group, name in stale:  # another model's read-outs (see _keys.stale_readouts)
                        if group in f and name in f[group]:
                            del f[group][name]
                    if stale:
                        log.info("removed the read-outs of the model stored under %r before: %s", key,
                                 ", ".join(f"{w}[{n!r}]" for w, n in stale))
                    items = [("obsm", _keys.embedding_key(key), ann["obsm"]),
                             *(("varm", n, v) for n, v in ann["varm"].items()), ("uns", _keys.params_key(key), ann["uns"])]
                    for group, name, value in items:
                        if group not in f:
                            write_elem(f, group, {})
                        if name in f[group]:
                            del f[group][name]
                        write_elem(f[group], name, value)
                    write_elem(f, "obs", obs)
                    write_elem(f, "var", var)
                    if denoised:
                        if "layers" not in f:
                            write_elem(f, "layers", {})
                        name = _keys.denoised_key(key)
                        if name in f["layers"]:
                            del f["layers"][name]
                        ds = f["layers"].create_dataset(name, shape=(adata.n_obs, adata.n_vars), dtype=np.float32,
                                                        chunks=(min(max(adata.n_obs, 1), 256), min(adata.n_vars, 4096)))
                        ds.attrs["encoding-type"], ds.attrs["encoding-version"] = "array", "0.2.0"
                        for s, block in self._denoised_blocks(adata, *ann["denoised"]):
                            ds[s : s + len(block)] = block
        finally:
            adata.file.close()
        log.info("embedded %d cells in %.1fs, reading and writing in chunks; added %s", adata.n_obs,
                 time.perf_counter() - t0, ", ".join(ann["added"]))

    def _annotations(self, adata: AnnData, *, key: str, denoised: bool, denoised_scale: str,
                     transform_batch: str | None, allow_missing_genes: bool, r2_rows: np.ndarray | None) -> dict:
        """What :meth:`annotate` adds (small arrays; the denoised layer as the arguments of its writer)."""
        self._check_fitted()
        if transform_batch is not None and not denoised:
            raise UserError("transform_batch changes only the denoised layer: add denoised=True (--denoised)")
        self._batch_code(transform_batch)  # an unknown batch is refused before anything is written
        if denoised_scale not in DENOISED_SCALES:
            raise UserError(f"denoised_scale must be one of {', '.join(DENOISED_SCALES)}, not {denoised_scale!r}")
        scale = self._denoised_scale(denoised_scale) if denoised else None  # refused before anything is written
        source = self._input(adata, allow_missing_genes, with_counts=True)
        all_rows = np.arange(adata.n_obs)
        Z = self._readable(embed(self.module, source))
        err, r2_all = reconstruction_scores(self.module, source, all_rows)
        n_empty = int(np.isnan(err).sum())
        if n_empty:
            log.warning("%d cell(s) have no counts in the model's %d genes: their %s is NaN (nothing to "
                        "score) and their denoised values are 0", n_empty, len(self.genes), _keys.recon_error_key(key))
        rows = r2_rows if r2_rows is not None and len(r2_rows) else all_rows
        _, r2 = reconstruction_scores(self.module, source, rows) if rows is not all_rows else (None, r2_all)
        W = np.zeros((adata.n_vars, self.config.n_latent), dtype=np.float32)
        R2 = np.full(adata.n_vars, np.nan, dtype=np.float32)
        pos = adata.var_names.get_indexer(self.genes)
        ok = pos >= 0
        W[pos[ok]] = self.weights[ok]
        R2[pos[ok]] = r2[ok]
        D = np.zeros_like(W)
        D[pos[ok]] = self.decoder_weights[ok]
        record = self.params_record(r2_on="validation cells" if rows is not all_rows else "all cells")
        added = _keys.model_keys_added(key)
        ann = {"obsm": Z, "varm": {_keys.weights_key(key): W, _keys.decoder_weights_key(key): D}, "var": R2,
               "obs": err.astype(np.float32), "uns": record, "added": added}
        if denoised:
            self._transform(source, transform_batch)
            ann["denoised"] = (source, pos, ok, scale)
            record["denoised_scale"] = scale
            if transform_batch is not None:
                record["transform_batch"] = str(transform_batch)
            added += _keys.keys_added(key, "layers")
        return ann

    def _denoised_scale(self, scale: str) -> str:
        """Resolve ``auto`` and refuse scales the model's data cannot give."""
        if scale not in DENOISED_SCALES:
            raise UserError(f"scale must be one of {', '.join(DENOISED_SCALES)}, not {scale!r}")
        if scale == "auto":
            return "normalized" if self.module.counts else "input"
        if self.module.counts and scale == "input":
            return "log1p"  # the input of a count model is log1p of normalised counts
        if not self.module.counts and scale != "input" and self.prep.get("input_kind") != "counts":
            raise UserError(f"denoised scale {scale!r} needs a model trained on counts; this one was trained on "
                            "log-scale values: use the input scale (denoised_scale='input', --denoised-scale input; "
                            "scale='input' in DAE.denoise)")
        return scale

    def _batch_code(self, batch: str | None) -> int | None:
        """The code of ``batch`` among the training batches; an unknown one is a UserError."""
        if batch is None:
            return None
        if not self.config.batch_key:
            raise UserError("transform_batch needs a model trained with batch_key (--batch-key)")
        levels = self.covariates["categorical"][self.config.batch_key]
        if str(batch) not in levels:
            raise UserError(f"transform_batch {batch!r} is not a batch of the model; its batches ({self.config.batch_key}): "
                            f"{', '.join(levels[:10])}")
        return levels.index(str(batch))

    def _transform(self, source: BatchSource, batch: str | None) -> None:
        """Make the decoder of ``source``'s cells see ``batch`` (the encoder still sees each cell's own)."""
        code = self._batch_code(batch)
        if code is not None:
            dec = np.array(source.cats, copy=True)
            dec[:, 0] = code
            source.decode_cats = dec

    def denoise(self, adata: AnnData, *, scale: str = "auto", transform_batch: str | None = None,
                allow_missing_genes: bool = False, batch_size: int = 4096) -> np.ndarray:
        """Denoised expression of ``adata``'s cells in the model's genes (columns in the order of ``self.genes``).

        Count likelihoods (DCA/scVI style): the model's expected share of each cell's library per gene.
        ``scale``:

        - ``"normalized"`` (``auto`` for count models): normalised to ``target_sum`` counts per cell like
          ``X`` before its log1p, i.e. expected count ÷ the cell's total count over all genes × target_sum;
        - ``"counts"``: expected counts at each cell's observed library size (its total over the model's
          genes);
        - ``"log1p"``: log1p of ``"normalized"``, the scale of a prepared ``X``;
        - ``"input"`` (``auto`` for ``normal``/``bernoulli`` models): the reconstruction mapped back from the
          model's scaled input to the scale of the prepared ``X`` (log1p of normalised counts, or the
          values of log-scale input), clipped to each gene's training range under min-max scaling. Such
          models give ``counts``/``normalized`` only for count input, by undoing the log1p.

        ``transform_batch``: the expression of every cell as if it came from this training batch (the decoder
        sees that batch, the encoder the cell's own; scvi-tools' ``transform_batch``). Without it, a model with a
        batch decodes each cell in its own batch (cells of unseen batches with the mean of the batch offsets).

        Returns cells × genes used, float32, dense. Needs ``adata`` raw counts or prepared from counts for
        every scale but ``input``.

        Raises
        ------
        UserError
            Unknown scale or batch, a scale the model's data cannot give, or genes/counts missing.
        """
        self._check_fitted()
        scale = self._denoised_scale(scale)
        self._batch_code(transform_batch)
        source = self._input(adata, allow_missing_genes, with_counts=scale != "input")
        self._transform(source, transform_batch)
        out = np.empty((source.n_obs, len(self.genes)), dtype=np.float32)
        totals = _cell_totals(adata) if scale in ("normalized", "log1p") or (
            scale == "counts" and not self.module.counts) else None
        for s, block in denoise_chunks(self.module, source, batch_size=batch_size):
            out[s : s + len(block)] = self._rescale(block, source, np.arange(s, s + len(block)), scale, totals)
        return out

    def _rescale(self, block: np.ndarray, source: BatchSource, rows: np.ndarray, scale: str,
                 totals: np.ndarray | None) -> np.ndarray:
        """A block of :func:`denoise_chunks` output on ``scale`` (see :meth:`denoise`)."""
        target_sum = float(self.prep["params"]["target_sum"])
        if self.module.counts:
            lib = library_size(source.target(rows)).cpu().numpy()[:, None]
            mu = block * lib  # expected counts at the cell's library
            if scale == "counts":
                return mu
            norm = mu / np.maximum(totals[rows, None], 1e-12) * target_sum
            return np.log1p(norm) if scale == "log1p" else norm
        if self.prep["params"]["scaling"] == "minmax":
            block = np.clip(block, 0.0, 1.0)  # a linear output can overshoot: keep the gene's observed range
        vals = block * self.scale + self.offset
        if float(self.prep.get("evidence", {}).get("min", -np.inf)) >= 0:
            vals = np.maximum(vals, 0.0)  # non-negative input (log1p of intensities, log-normalised counts) stays so
        if scale in ("input", "log1p"):
            return vals
        norm = np.expm1(np.maximum(vals, 0.0))
        return norm if scale == "normalized" else norm * totals[rows, None] / target_sum

    def _denoised_layer(self, adata: AnnData, source: BatchSource, pos: np.ndarray, ok: np.ndarray,
                        scale: str) -> np.ndarray:
        """The denoised values on ``scale`` in the model's genes; the other genes keep their input on that scale.

        Dense cells × genes (float32) in memory: refused with the size it would take when that is more than
        the memory available (write it to a file in chunks instead: ``genodae embed --denoised`` on a prepared
        .h5ad)."""
        need = adata.n_obs * adata.n_vars * 4
        avail = _available_memory()
        if avail is not None and need > 0.8 * avail:
            raise UserError(f"the dense denoised layer of {adata.n_obs:,} cells × {adata.n_vars:,} genes would take "
                            f"{need / 2**30:.1f} GiB, more than the {avail / 2**30:.1f} GiB of memory available; "
                            "embed a prepared .h5ad with genodae embed --denoised (the layer is then written to the "
                            "file in chunks), or denoise a subset of cells")
        out = np.empty((adata.n_obs, adata.n_vars), dtype=np.float32)
        for s, block in self._denoised_blocks(adata, source, pos, ok, scale):
            out[s : s + len(block)] = block
        return out

    def _denoised_blocks(self, adata: AnnData, source: BatchSource, pos: np.ndarray, ok: np.ndarray, scale: str,
                         chunk: int = 4096):
        """Yield ``(start, block)``: the denoised layer (see :meth:`_denoised_layer`) ``chunk`` cells at a time,
        dense float32 over all genes of ``adata``; ``adata`` may be backed (rows read from the file)."""
        target_sum = float(self.prep["params"]["target_sum"])
        M, transform = _base_on_scale(adata, self.layer, scale, self.prep.get("input_kind"))
        totals = _cell_totals(adata) if scale != "input" else None
        for s in range(0, adata.n_obs, chunk):
            e = min(s + chunk, adata.n_obs)
            out = _base_rows(M, s, e, transform, target_sum)
            for s2, block in denoise_chunks(self.module, source, np.arange(s, e), batch_size=1024):
                rows = np.arange(s + s2, s + s2 + len(block))
                out[s2 : s2 + len(block), pos[ok]] = self._rescale(block, source, rows, scale, totals)[:, ok]
            yield s, out

    def params_record(self, r2_on: str = "validation cells") -> dict[str, Any]:
        """What ``uns[key]`` holds: settings, preparation, loss history, genes, version (h5ad-safe types)."""
        h = self.history or History()
        return {
            "params": _h5_safe({**self.config.to_dict(), "epochs": self.config.epochs or "auto",
                                "rotation": self.config.rotation if self.readout is not None else "none"}),
            "gene_likelihood": str(self.gene_likelihood),  # what auto resolved to
            "preset": self.preset,  # the named starting point of params ("" when given as a DAEConfig)
            "prepare": _h5_safe(self.prep),
            "layer": self.layer or "X",
            "genes_used": np.asarray(self.genes, dtype=str),
            # the model's own input scaling of genes_used (x - offset) / scale: the preparation's, unless the model
            # min-max scaled z-scored data itself (a 0-1 likelihood or output activation)
            "input_offset": np.asarray(self.offset, dtype=np.float32),
            "input_scale": np.asarray(self.scale, dtype=np.float32),
            "covariates": {kind: {k: np.asarray(v) for k, v in d.items()} for kind, d in self.covariates.items()},
            "history": {
                "train_loss": np.asarray(h.train_loss, dtype=np.float64),
                "val_loss": np.asarray(h.val_loss, dtype=np.float64),
                "best_epoch": int(h.best_epoch),
                "epochs_run": int(h.epochs_run),
                "max_epochs": int(h.max_epochs),
                "stopped_early": bool(h.stopped_early),
                "seconds": float(h.seconds),
                "device": str(h.device),
            },
            "recon_r2_on": r2_on,
            "version": __version__,
        }

    # --- persistence: safetensors + JSON, never pickle -----------------------------------------------

    def save(self, path: str | Path) -> None:
        """Save to a folder: ``model.safetensors`` (weights, scaling) and ``model.json`` (everything else)."""
        from safetensors.torch import save_file

        from .io import atomic_path

        self._check_fitted()
        tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        tensors["genodae.offset"] = torch.from_numpy(np.ascontiguousarray(self.offset, np.float32))
        tensors["genodae.scale"] = torch.from_numpy(np.ascontiguousarray(self.scale, np.float32))
        tensors["genodae.gene_weights"] = torch.from_numpy(np.ascontiguousarray(self.weights, np.float32))
        tensors["genodae.decoder_weights"] = torch.from_numpy(np.array(self.decoder_weights, np.float32))  # own memory
        if self.readout is not None:
            for name, v in self.readout.items():
                tensors[f"genodae.readout_{name}"] = torch.from_numpy(np.ascontiguousarray(v, np.float64))
        h = self.history or History()
        meta = {
            "format": "genodae-model",
            "format_version": FORMAT_VERSION,
            "genodae_version": __version__,
            "config": self.config.to_dict(),
            "preset": self.preset,
            "output_activation": self.module.output_activation,
            "gene_likelihood": self.gene_likelihood,
            "prepare": _json_safe(self.prep),
            "layer": self.layer,
            "genes": list(map(str, self.genes)),
            "covariates": self.covariates,
            "mapping": _json_safe(self.mapping),
            "history": _json_safe(h.__dict__),
        }
        with atomic_path(path) as tmp:  # the whole folder appears at once, or not at all
            tmp.mkdir()
            save_file(tensors, str(tmp / WEIGHTS_FILE))
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> DAE:
        """Load a saved model folder. Only safetensors and JSON are read: nothing is unpickled."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        wfile, mfile = path / WEIGHTS_FILE, path / META_FILE
        if not path.is_dir():
            raise UserError(f"model {path} is not a folder; give the folder written by 'genodae train'")
        for f in (wfile, mfile):
            if not f.is_file():
                raise UserError(f"model folder {path} has no {f.name}; give the folder written by 'genodae train'")
        try:
            meta = json.loads(mfile.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{mfile} is not valid JSON ({e}); the model folder is damaged") from None
        if not isinstance(meta, dict) or meta.get("format") != "genodae-model":
            raise UserError(f"{mfile} is not a genodae model description")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise UserError(f"model format {meta['format_version']} is newer than this genodae "
                            f"({__version__}) reads; upgrade genodae")
        try:
            tensors = load_file(str(wfile))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{wfile} is not a valid safetensors file ({e}); genodae never unpickles model "
                            "files, so a pickle or a damaged file is refused") from None
        try:
            cfg = dict(meta["config"])
            if device is not None:
                cfg["device"] = device
            cfg["num_threads"] = 0  # the machine's, not the model's: auto unless the caller sets it
            old_loss = cfg.pop("loss", None)  # format 1: loss mse/bce, now gene_likelihood normal/bernoulli
            cfg.setdefault("corruption_rescale", False)  # format 1 masked without rescaling
            likelihood = meta.get("gene_likelihood") or {"bce": "bernoulli"}.get(old_loss, "normal")
            cfg.setdefault("gene_likelihood", likelihood)
            if "genodae.readout_transform" not in tensors:
                cfg["rotation"] = "none"  # formats 1-3, or a model whose cells were too few for a readable basis
            elif cfg.get("rotation") == "varimax" and meta.get("format_version", 0) < 6:
                log.warning("%s was saved before model format 6: its varimax nodes rotate the whitened bottleneck "
                            "(uncorrelated nodes; distances between cells are not those of the trained network, as "
                            "they are for models saved since); it embeds as it did when saved. Retrain for "
                            "distance-keeping nodes", path)
            cfg = {k: v for k, v in cfg.items() if k in DAEConfig.__dataclass_fields__}  # older/newer fields
            self = cls(DAEConfig(**cfg))
            self.gene_likelihood = likelihood
            self.preset = str(meta.get("preset", ""))  # "" also for folders saved before it was recorded
            self.genes = pd.Index(meta["genes"])
            self.prep, self.layer = meta["prepare"], meta["layer"]
            self.offset = tensors.pop("genodae.offset").numpy()
            self.scale = tensors.pop("genodae.scale").numpy()
            self.weights = tensors.pop("genodae.gene_weights").numpy()
            self.decoder_weights = tensors.pop("genodae.decoder_weights", torch.from_numpy(self.weights)).numpy()
            if "genodae.readout_transform" in tensors:
                self.readout = {n: tensors.pop(f"genodae.readout_{n}").numpy() for n in ("mean", "transform")}
            self.covariates = meta.get("covariates") or {"categorical": {}, "continuous": {}}
            self.mapping = meta.get("mapping", [])
            self.module = self._build(meta["output_activation"], likelihood)
        except (KeyError, TypeError) as e:
            raise UserError(f"model folder {path} is incomplete or damaged (missing {e}); retrain or re-copy it") from None
        try:
            self.module.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("module.")})
        except RuntimeError as e:
            raise UserError(f"{wfile} does not match {mfile}: {str(e).splitlines()[0]}") from None
        self.device = resolve_device(self.config.device, warn=False)
        self.module.to(self.device).eval()
        hist = History()
        for k, v in meta.get("history", {}).items():
            setattr(hist, k, v)
        self.history = hist
        return self


def _load_grown(module: torch.nn.Module, reference: dict[str, torch.Tensor]) -> dict[str, int]:
    """Load ``reference`` into ``module``, whose per-level tables may have more rows (new levels appended): their
    first rows get the reference's, the new rows the mean of the reference rows (the "unknown level" value, a
    neutral start). Returns ``{name: number of reference rows}`` of the tables that grew."""
    grown = {}
    state = module.state_dict()
    with torch.no_grad():
        for name, ref in reference.items():
            cur = state[name]
            if cur.shape == ref.shape:
                cur.copy_(ref)
            elif cur.dim() == ref.dim() and cur.shape[1:] == ref.shape[1:] and cur.shape[0] > ref.shape[0]:
                cur[: ref.shape[0]].copy_(ref)
                cur[ref.shape[0]:].copy_(ref.mean(0, keepdim=True).expand_as(cur[ref.shape[0]:]))
                grown[name] = int(ref.shape[0])
            else:
                raise ValueError(f"cannot grow {name} from {tuple(ref.shape)} to {tuple(cur.shape)}")
    return grown


def node_names(n: int) -> list[str]:
    return _keys.node_names(n)


def _training_input(adata: AnnData, layer: str | None):
    """(X, genes, offset, scale, prep record) for training, from a prepared (or log-scale) AnnData."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise UserError(f"the matrix is empty ({adata.n_obs} × {adata.n_vars}); check the input")
    if layer is not None and adata.isbacked:
        raise UserError(f"training from disk (backed, --backed) reads X, not layers[{layer!r}]; train on the layer "
                        "in memory (without --backed), or prepare the file from that layer (prepare --layer)")
    if layer is not None and layer not in adata.layers:
        raise UserError(f"layer {layer!r} not found; available layers: {', '.join(adata.layers) or 'none'}")
    prepared = PREP_KEY in adata.uns
    if prepared:
        prep = dict(adata.uns[PREP_KEY])
        prep["params"] = dict(prep["params"])
        used = adata.var[_keys.HIGHLY_VARIABLE].to_numpy(bool)
    else:  # warned below, once the input is known not to be raw counts
        prep = {"params": PrepareConfig().__dict__ | {"scaling": "minmax"}, "input_kind": "log",
                "n_genes_used": 0, "version": __version__}
        if _keys.HIGHLY_VARIABLE in adata.var:
            used = adata.var[_keys.HIGHLY_VARIABLE].to_numpy(bool)
        else:
            used = np.ones(adata.n_vars, dtype=bool)
    if used.sum() == 0:
        raise UserError("no genes are marked for use (var['highly_variable'] is all False); run prepare again")
    genes = adata.var_names[used]
    columns = None
    if adata.isbacked and layer is None:
        if not prepared:
            raise UserError("a backed .h5ad must be prepared (genodae prepare) before training from disk")
        X, columns = adata.X, np.flatnonzero(used)  # read chunk by chunk during training; checked at prepare
        log.info("training from disk (backed .h5ad): rows are read in chunks")
    elif layer is None and adata.X is None:
        if not prepared or not str(prep.get("transform", "")).endswith("normalize_total+log1p") \
                or "counts" not in adata.layers:
            raise UserError("adata.X is empty (None): give data with X, or data prepared from counts by genodae "
                            "prepare, whose input is computed from layers['counts']")
        X = None  # computed from the counts one minibatch at a time (_input_from_counts)
    else:
        X = adata.layers[layer] if layer is not None else adata.X
        if not prepared and raw_counts(X):
            what = f"layers[{layer!r}]" if layer else "X"
            raise UserError(f"{what} holds raw counts (non-negative integers) and the data were not prepared: run "
                            "genodae prepare (genodae.pp.prepare) first, which normalises and log-transforms them")
        if not prepared:
            log.warning("adata was not prepared with genodae.pp.prepare: using %s as log-scale input as it is, "
                        "with min-max scaling", f"layers[{layer!r}]" if layer else "X")
        if not used.all():  # a column subset copies the matrix: only when some genes are left out
            X = X[:, np.flatnonzero(used)]
        X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
        check_finite(X, f"layers[{layer!r}]" if layer else "X")
    if prepared and layer is None:
        offset = adata.var[_keys.OFFSET].to_numpy(np.float32)[used]
        scale = adata.var[_keys.SCALE].to_numpy(np.float32)[used]
    else:
        offset, scale = scaling_params(X, prep["params"]["scaling"])
    prep["n_genes_used"] = int(len(genes))
    return X, genes, offset, scale, prep, columns


def _input_from_counts(adata: AnnData, prep: dict, genes: pd.Index, counts):
    """The model input of data read without X (:func:`genodae.io.read_sharing` with ``x_from_counts``):
    ``log1p(counts / (cell total / target_sum))`` of the model's genes, the totals over every gene as
    :func:`genodae.pp.prepare` normalised them, computed one minibatch at a time from the counts the likelihood
    scores (the same matrix: no copy)."""
    if counts is None:
        counts = _model_counts(adata, genes)
    C = adata.layers["counts"]
    totals = np.zeros(C.shape[0])
    for s in range(0, C.shape[0], 65536):
        totals[s : s + 65536] = np.asarray(C[s : s + 65536].sum(axis=1, dtype=np.float64)).ravel()
    totals[totals <= 0] = 1.0  # a cell without counts has no stored values: its input is 0, as in X
    X = LogNormalizedCounts(counts, totals / float(prep["params"]["target_sum"]))
    return X, X.counts  # the counts in the canonical form the input is computed from


def _training_counts(adata: AnnData, layer: str | None, prep: dict, likelihood: str, genes: pd.Index,
                     columns: np.ndarray | None):
    """The raw counts of the model's genes (cells × genes) that a count likelihood reconstructs (unprepared data
    were refused by ``DAE.fit`` already)."""
    if prep.get("input_kind") != "counts" or not _has_counts(adata):
        what = "log-scale values" if prep.get("input_kind") == "log" else "no layers['counts']"
        raise UserError(f"gene_likelihood={likelihood!r} needs raw counts, but the data hold {what}; prepare raw "
                        "counts with genodae prepare (they are kept in layers['counts']), or use "
                        "gene_likelihood='normal' (--gene-likelihood normal) for log-scale data")
    if layer is not None:
        log.warning("training on layers[%r] as input; the count target is layers['counts']", layer)
    if columns is not None:  # backed: read the counts chunk by chunk from the file as well
        return _backed_counts(adata)
    return _model_counts(adata, genes)


def _backed_counts(adata: AnnData):
    """layers['counts'] of a backed .h5ad as an on-disk matrix (rows read on demand), all genes."""
    from .io import backed_layer

    return backed_layer(adata, _keys.COUNTS_LAYER)


def _has_counts(adata: AnnData) -> bool:
    """Whether ``adata`` has ``layers["counts"]`` (in memory, or in the file of a backed AnnData)."""
    if adata.isbacked:
        return _backed_counts(adata) is not None
    return _keys.COUNTS_LAYER in adata.layers


def _available_memory() -> int | None:
    """Bytes of memory available to this process: MemAvailable, or less under a cgroup limit (None: unknown)."""
    avail = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for path, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                       ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = open(path).read().strip()
            if limit != "max" and int(limit) < 2**60:
                free = int(limit) - int(open(used).read().strip())
                avail = free if avail is None else min(avail, free)
        except (OSError, ValueError):
            continue
    return avail


def _model_counts(adata: AnnData, genes: pd.Index):
    """Raw counts of ``genes`` (in that order; absent genes 0) as float32 CSR, from ``layers["counts"]`` of
    prepared data or from ``X`` of raw counts."""
    from .pp import (
        VALUE_KINDS,
        _describe,
        _round,
        decide_value_kind,
        genes_in_order,
        value_evidence,
    )

    if PREP_KEY in adata.uns:
        if _keys.COUNTS_LAYER not in adata.layers:
            raise UserError("this model scores raw counts, but the prepared data have no layers['counts']; give "
                            "the raw counts, or data prepared from counts by genodae prepare")
        M = adata.layers[_keys.COUNTS_LAYER]
    else:
        M = adata.X
        if not is_counts(M):
            ev = value_evidence(M)
            kind = decide_value_kind(ev)
            if kind not in ("estimated_counts", "linear"):  # those are rounded, as at training
                raise UserError(f"the model was trained on raw counts, but these data hold {VALUE_KINDS[kind]} "
                                f"({_describe(ev)}); give raw counts, or data prepared from them (genodae prepare)")
            M = _round(M)
    return genes_in_order(M, adata.var_names, genes)  # absent genes: zero counts (their input is 0 too)


def _cell_totals(adata: AnnData, chunk: int = 65536) -> np.ndarray:
    """Each cell's total count over all genes (the library normalize_total divides by), float64; a backed
    AnnData's counts are summed chunk by chunk."""
    if PREP_KEY in adata.uns and not _has_counts(adata):
        raise UserError("normalised denoised values need each cell's total count, but the prepared data have no "
                        "layers['counts']; use scale='input'")
    M = _backed_counts(adata) if PREP_KEY in adata.uns else adata.X
    if not adata.isbacked:
        return np.asarray(M.sum(axis=1), dtype=np.float64).ravel()
    return np.concatenate([np.asarray(M[s : s + chunk].sum(axis=1), dtype=np.float64).ravel()
                           for s in range(0, adata.n_obs, chunk)] or [np.zeros(0)])


def _base_on_scale(adata: AnnData, layer: str | None, scale: str, input_kind: str | None):
    """(matrix, transform): the input values of every gene on ``scale`` are ``transform`` (``none``,
    ``normalize`` or ``normalize+log1p``, see :func:`_base_rows`) of the matrix's rows: what genes the model does
    not use keep in the denoised layer. The matrix may be on disk (a backed AnnData).

    Raw data get the model's own preparation (counts: normalise to ``target_sum`` and log1p for the
    ``input``/``log1p`` scales), so that every gene of the layer is on one scale."""
    from .io import backed_layer

    prepared = PREP_KEY in adata.uns
    if scale == "input" and (prepared or input_kind != "counts"):
        return (backed_layer(adata, layer) if layer and prepared else adata.X), "none"
    if scale == "input":
        scale = "log1p"  # raw counts into a model trained on counts: its input scale is log1p(normalised)
    if scale == "log1p" and prepared and layer is None:
        return adata.X, "none"
    counts = _backed_counts(adata) if prepared else adata.X
    if scale == "counts":
        return counts, "none"
    return counts, "normalize+log1p" if scale == "log1p" else "normalize"


def _base_rows(M, start: int, stop: int, transform: str, target_sum: float) -> np.ndarray:
    """Rows ``start:stop`` of ``M`` (in memory or on disk) as dense float32, normalised to ``target_sum`` per row
    and log1p-transformed as ``transform`` says (scanpy's normalize_total and log1p, row by row as on the whole
    matrix)."""
    block = M[start:stop]
    block = sp.csr_matrix(block, dtype=np.float32) if sp.issparse(block) else np.array(block, dtype=np.float32)
    if transform != "none":
        import scanpy as sc

        tmp = AnnData(X=block)
        sc.pp.normalize_total(tmp, target_sum=target_sum)
        if transform == "normalize+log1p":
            sc.pp.log1p(tmp)
        block = tmp.X
    return block.toarray() if sp.issparse(block) else np.asarray(block, dtype=np.float32)


def _numeric_column(obs: pd.DataFrame, key: str) -> np.ndarray:
    try:
        v = pd.to_numeric(obs[key], errors="raise").to_numpy(np.float64)
    except (ValueError, TypeError):
        raise UserError(f"continuous covariate {key!r} holds non-numeric values (e.g. {obs[key].iloc[0]!r}); give a "
                        "numeric obs column, or list it in categorical_covariate_keys") from None
    if not np.isfinite(v).all():
        raise UserError(f"continuous covariate {key!r} has {int((~np.isfinite(v)).sum())} missing or infinite "
                        "value(s); fill or drop those cells first")
    return v


def _fit_covariates(adata: AnnData, cfg: DAEConfig) -> dict[str, dict[str, list]]:
    """The levels of each categorical covariate (batch first; category order, else sorted) and the mean and sd of
    each continuous one, checked: columns present, no missing values, every batch with at least 2 cells."""
    out: dict[str, dict[str, list]] = {"categorical": {}, "continuous": {}}
    for key in (*cfg.categorical_keys(), *cfg.continuous_covariate_keys):
        if key not in adata.obs.columns:
            what = "batch_key" if key == cfg.batch_key else "covariate"
            raise UserError(f"{what} {key!r} is not an obs column; obs columns: "
                            f"{', '.join(map(str, adata.obs.columns[:20])) or 'none'}")
    if cfg.batch_key:
        check_batches(adata, cfg.batch_key)  # the checks of prepare: no missing value, at least 2 cells per batch
    for key in cfg.categorical_keys():
        col = adata.obs[key]
        if col.isna().any():
            raise UserError(f"obs column {key!r} has {int(col.isna().sum())} missing value(s) (e.g. cell "
                            f"{adata.obs_names[col.isna().to_numpy()][0]!r}); give every cell a level or drop those cells")
        levels = [str(c) for c in col.cat.categories if (col == c).any()] if hasattr(col, "cat") else sorted(
            map(str, col.unique()))
        sizes = col.astype(str).value_counts()
        if key == cfg.batch_key:
            if len(levels) == 1:
                log.warning("batch_key %r has a single level (%s): nothing to correct", key, levels[0])
            log.info("conditioning on %s %r: %d levels (%s)", "batch" if key == cfg.batch_key else "covariate", key,
                     len(levels), ", ".join(f"{lv}: {int(sizes[lv])}" for lv in levels[:8]))
        out["categorical"][key] = levels
    for key in cfg.continuous_covariate_keys:
        v = _numeric_column(adata.obs, key)
        sd = float(v.std())
        out["continuous"][key] = [float(v.mean()), sd if sd > 0 else 1.0]
    return out


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _h5_safe(obj: Any) -> Any:
    """uns values h5ad can write: no None, tuples as arrays."""
    if isinstance(obj, dict):
        return {str(k): _h5_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return np.asarray(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
