"""Prepare: raw counts or log-scale values → normalised log data, highly variable genes, per-gene scaling.

Scanpy style: ``prepare(adata)`` works in place (or on a copy), keeps raw counts in ``layers["counts"]``
and records every decision in ``uns["genodae_prepare"]`` and ``var``, so a saved model can repeat the
same preparation on new samples.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from . import __version__, _keys
from ._values import (  # noqa: F401  (re-exported: genodae.pp is where they were, and are still found)
    _SAMPLE,
    LIBRARY_FOLD,
    LINEAR_NEGATIVE,
    LOG_MAX,
    PREP_KEY,
    VALUE_KINDS,
    ZSCORE_GENES,
    ZSCORE_MEAN,
    ZSCORE_SD,
    _counts_layers,
    _decide,
    _describe,
    _eligible,
    _first_bad,
    _fmt,
    _log1p,
    _samples_with_counts,
    _source,
    _unusable_message,
    check_batches,
    check_finite,
    check_preparable,
    decide_value_kind,
    is_counts,
    negative_counts,
    negative_counts_message,
    normalize_log,
    resolve_scaling,
    scaling_from_stats,
    value_evidence,
)
from .config import PrepareConfig
from .errors import UserError

log = logging.getLogger("genodae")

# The helpers below serve genodae.model; the public API is prepare() (AnnData in, scanpy's conventions) and
# prepare_h5ad() (file to file, in chunks), which is outside __all__ as it takes paths, not an AnnData.
__all__ = ["prepare"]

_D = PrepareConfig()


def scaling_params(X, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene (offset, scale) so that model input = (x - offset) / scale. Never densifies or copies X: the
    statistics are gathered a chunk of rows at a time."""
    from ._pp_chunked import gene_stats

    if scaling == "none":
        return scaling_from_stats(scaling, None, None, None, None, n_vars=X.shape[1])
    stats = gene_stats(X, moments=scaling == "zscore")
    lo, hi, mom = stats[1], stats[2], stats[3] if scaling == "zscore" else None
    return scaling_from_stats(scaling, lo, hi, mom.mean if mom else None, mom.var if mom else None)


def prepare_h5ad(path, output, *, chunk_size: int | None = None, **settings) -> None:
    """:func:`prepare` from an .h5ad file to another, a chunk of rows at a time: for data larger than RAM.

    The file is opened backed; statistics are gathered and the prepared matrix written chunk by chunk, so memory
    holds a few chunks, never the matrix. Same settings as :func:`prepare` (``seurat_v3`` or ``none`` gene
    selection); see :mod:`genodae._pp_chunked` for what it computes and how.

    Examples
    --------
    >>> genodae.pp.prepare_h5ad("atlas.h5ad", "prepared.h5ad", n_top_genes=3000)  # doctest: +SKIP
    """
    from ._pp_chunked import CHUNK
    from ._pp_chunked import prepare_h5ad as _prepare_h5ad

    _prepare_h5ad(path, output, chunk_size=chunk_size or CHUNK, **settings)


def prepare(
    adata: AnnData,
    *,
    n_top_genes: int = _D.n_top_genes,
    hvg_flavor: str = _D.hvg_flavor,
    input_kind: str = _D.input_kind,
    target_sum: float = _D.target_sum,
    scaling: str = _D.scaling,
    min_cells: int = _D.min_cells,
    batch_key: str | None = _D.batch_key,
    layer: str | None = _D.layer,
    copy: bool = False,
) -> AnnData | None:
    """Prepare an expression matrix for the autoencoder.

    Decides what ``X`` (or ``layers[layer]``) holds (``input_kind="auto"``, from the range, the fraction of
    integers, the sample totals and the per-gene means; logged, with the evidence in
    ``uns["genodae_prepare"]``): raw counts (non-negative integers) and estimated counts (salmon, RSEM,
    kallisto: non-integer, linear range, library sizes differing; rounded to integers) are kept in
    ``layers["counts"]``, normalised to ``target_sum`` per cell and log1p-transformed in ``X``; cells
    without counts are dropped. Linear-scale values (microarray intensities, TPM/FPKM) are log1p-transformed.
    Log-scale values (bulk microarray or RNA-seq cohorts, or log-normalised single-cell data) are used as
    they are. Per-gene z-scores (a processed .h5ad's X) are refused, or replaced by ``layers["counts"]``
    when there is one.
    Then ``n_top_genes`` highly variable genes are chosen (``seurat_v3`` on counts, ``seurat`` on log
    data; all genes when fewer) and the per-gene scaling for the model is computed.

    Parameters
    ----------
    adata
        Cells/samples × genes. Not modified when ``copy=True``.
    n_top_genes
        Genes to keep; ``0`` keeps every gene detected in ``min_cells`` cells.
    hvg_flavor
        ``auto``, ``seurat_v3``, ``seurat``, ``cell_ranger`` or ``none`` (use all genes).
    input_kind
        ``auto``, ``counts`` (checked; estimated counts are rounded), ``log`` (used as is) or ``linear``
        (log1p-transformed).
    target_sum
        Library size after normalisation (counts only).
    scaling
        ``auto`` (default): ``minmax`` for counts, ``zscore`` for other input (log-scale or linear intensities,
        log-normalised values), logged and recorded in ``uns["genodae_prepare"]["params"]["scaling"]``;
        ``minmax`` (0–1 per gene, as in ADAGE: masking sets an entry to the gene's minimum, "not expressed"
        where that is 0), ``zscore`` (mean 0, sd 1 per gene: masking sets an entry to the gene's mean), or
        ``none`` (the log values as they are: offset 0, scale 1). Without counts the model reconstructs the
        scaled values, so the scaling also weighs each gene's errors: z-scores weigh genes alike and let the
        bottleneck carry more of planted programs (bench/results/readable.md, "Probe: the input scaling").
    min_cells
        Genes detected (non-zero) in fewer cells are not used by the model.
    batch_key
        obs column of batches: highly variable genes are chosen within each batch and ranked by how many
        batches find them variable (scanpy's ``highly_variable_genes(batch_key=...)``), so that genes that only
        separate the batches are not favoured.
    layer
        Prepare ``layers[layer]`` (e.g. ``"counts"`` of a processed .h5ad) instead of ``X``; it replaces ``X``.
    copy
        Return a prepared copy instead of working in place.

    Returns
    -------
    The prepared copy when ``copy=True``, else ``None``. Adds ``layers["counts"]`` (counts input),
    ``var["highly_variable"]`` (genes the model uses), ``var["genodae_offset"]``,
    ``var["genodae_scale"]`` and ``uns["genodae_prepare"]``.

    Examples
    --------
    >>> import genodae
    >>> adata = genodae.read("counts.h5ad")
    >>> genodae.pp.prepare(adata)
    >>> genodae.tl.dae(adata)
    """
    cfg = PrepareConfig(n_top_genes=n_top_genes, hvg_flavor=hvg_flavor, input_kind=input_kind,
                        target_sum=target_sum, scaling=scaling, min_cells=min_cells, batch_key=batch_key, layer=layer)
    t0 = time.perf_counter()
    adata = adata.copy() if copy else adata
    src = _source(adata)
    check_preparable(adata, src)
    source = "X"
    if cfg.layer is not None:
        if cfg.layer not in adata.layers:
            raise UserError(f"{src}layer {cfg.layer!r} not found; layers: {', '.join(adata.layers) or 'none'}")
        adata.X = adata.layers[cfg.layer].copy()  # prepared in X; the layer itself is left as it was
        source = f"layers[{cfg.layer!r}]"
    check_finite(adata.X, f"{src}{source}".lstrip())
    if cfg.batch_key is not None:
        check_batches(adata, cfg.batch_key, src)

    ev = value_evidence(adata.X)
    detected = decide_value_kind(ev)
    if cfg.input_kind == "auto" and negative_counts(ev):
        raise UserError(negative_counts_message(src, source, ev, _first_bad(adata, lambda v: v < 0)))
    if cfg.input_kind == "auto" and detected in ("zscore", "linear_negative"):
        usable = [k for k in _counts_layers(adata) if f"layers[{k!r}]" != source]
        if detected == "zscore" and _keys.COUNTS_LAYER in usable and cfg.layer is None:
            log.warning("%sprepare: X holds %s (%s), not expression on a usable scale; using layers['counts'] "
                        "(raw counts) instead", src, VALUE_KINDS[detected], _describe(ev))
            adata.X = adata.layers[_keys.COUNTS_LAYER].copy()
            source = "layers['counts']"
            ev = value_evidence(adata.X)
            detected = decide_value_kind(ev)
            if negative_counts(ev):
                raise UserError(negative_counts_message(src, source, ev, _first_bad(adata, lambda v: v < 0)))
        else:
            raise UserError(_unusable_message(adata, src, source, detected, ev, usable))
    kind, transform = _decide(cfg.input_kind, detected, ev, adata, src, source)
    ev = {k: float(v) for k, v in ev.items()}

    if transform.startswith("round"):
        X = adata.X
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=np.float32, copy=True)
            X.data = np.rint(X.data)
            X.eliminate_zeros()
        else:
            X = np.rint(np.asarray(X, dtype=np.float32))
        adata.X = X
    if kind == "counts":
        keep = _samples_with_counts(np.asarray(adata.X.sum(axis=1)).ravel(), adata, src)
        if not keep.all():
            adata._inplace_subset_obs(keep)
        X = adata.X
        if not np.issubdtype(X.dtype, np.floating):
            adata.X = X.astype(np.float32)
        adata.layers[_keys.COUNTS_LAYER] = adata.X.copy()
        normalize_log(adata, cfg.target_sum)
    elif transform == "log1p":
        adata.X = _log1p(adata.X)
    elif not np.issubdtype(adata.X.dtype, np.floating):
        adata.X = adata.X.astype(np.float32)

    used = _select_genes(adata, cfg, kind, src)
    scaling = resolve_scaling(cfg.scaling, kind, src)
    offset, scale = scaling_params(adata.X, scaling)  # every gene, chunk by chunk: no column copy of X
    offset, scale = offset[used], scale[used]
    adata.var[_keys.OFFSET] = np.nan
    adata.var[_keys.SCALE] = np.nan
    adata.var.loc[used, _keys.OFFSET] = offset
    adata.var.loc[used, _keys.SCALE] = scale
    adata.uns[PREP_KEY] = {
        "params": {**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "scaling": scaling},  # as resolved
        "scaling_auto": cfg.scaling == "auto",  # chosen from the data: a 0-1 likelihood may re-scale to minmax
        "input_kind": kind,
        "value_kind": detected,  # what the values were (VALUE_KINDS), from the evidence below
        "transform": transform,  # what prepare did to them before gene selection
        "source": source,
        "evidence": ev,
        "n_genes_used": int(used.sum()),
        "version": __version__,
    }
    log.info("prepare: %d samples × %d genes, %d used by the model (%s scaling) in %.1fs; added "
             "var['highly_variable'], var['genodae_offset'/'genodae_scale'], uns['%s']%s",
             adata.n_obs, adata.n_vars, int(used.sum()), scaling, time.perf_counter() - t0, PREP_KEY,
             ", layers['counts']" if kind == "counts" else "")
    return adata if copy else None


def _select_genes(adata: AnnData, cfg: PrepareConfig, kind: str, src: str = "") -> np.ndarray:
    """Boolean mask of the genes the model uses; also written to ``var["highly_variable"]``."""

    from ._pp_chunked import gene_stats

    detected, lo, hi = gene_stats(adata.X)  # chunk by chunk: no boolean copy, no CSC copy of X
    eligible, flavor = _eligible(detected, lo, hi, kind, cfg, adata.var_names, src)
    used = eligible.copy()
    if flavor != "none" and cfg.n_top_genes and eligible.sum() > cfg.n_top_genes:
        sub = adata[:, eligible]
        obs = pd.DataFrame(index=adata.obs_names)
        if cfg.batch_key is not None:
            obs[cfg.batch_key] = adata.obs[cfg.batch_key].astype(str).to_numpy()
        sub = AnnData(X=sub.X, layers={_keys.COUNTS_LAYER: sub.layers[_keys.COUNTS_LAYER]} if kind == "counts" else None,
                      obs=obs, var=pd.DataFrame(index=sub.var_names))
        hv = _hvg_with_fallback(sub, cfg, flavor, src)
        used[np.flatnonzero(eligible)] = np.asarray(hv["highly_variable"], dtype=bool)
        log.info("prepare: %d highly variable genes (%s%s) of %d", int(used.sum()), flavor,
                 f", within each batch of {cfg.batch_key!r}" if cfg.batch_key else "", int(eligible.sum()))
    else:
        log.info("prepare: using all %d genes that vary", int(used.sum()))
    adata.var[_keys.HIGHLY_VARIABLE] = used
    return used


def _hvg_with_fallback(sub: AnnData, cfg: PrepareConfig, flavor: str, src: str = "") -> pd.DataFrame:
    """scanpy's highly_variable_genes; when seurat_v3's loess fit fails (very sparse genes, or a small batch: scanpy
    raises "svddc failed" / "reciprocal condition number"), retry with a wider loess span, then with the ``seurat``
    flavour on the log data, and say so. Gene selection never ends a run with a traceback."""
    import scanpy as sc

    tries = [(flavor, 0.3)] + ([(flavor, 0.6), (flavor, 1.0), ("seurat", None)] if flavor == "seurat_v3" else [])
    last = None
    for fl, span in tries:
        kwargs = dict(span=span, layer=_keys.COUNTS_LAYER) if fl == "seurat_v3" else {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hv = sc.pp.highly_variable_genes(sub, n_top_genes=cfg.n_top_genes, flavor=fl, inplace=False,
                                                 batch_key=cfg.batch_key, **kwargs)
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError) as e:
            last = e
            continue
        if (fl, span) != tries[0]:
            why = last.args[0] if last.args else type(last).__name__
            why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)  # scanpy's loess raises bytes
            log.warning("%sprepare: %s gene selection failed (%s); used %s instead", src, flavor, why.splitlines()[0],
                        f"a loess span of {span}" if fl == flavor else f"the {fl} flavour on the log data")
        return hv
    raise UserError(f"{src}highly variable gene selection failed ({last}); choose all genes with hvg_flavor='none' "
                    "(--hvg-flavor none) or fewer genes with n_top_genes")


def prepared_matrix(adata: AnnData, genes: pd.Index, prep: dict, *, allow_missing: bool = False):
    """Model-ready matrix (cells × ``genes``, log scale, unscaled) from raw or prepared ``adata``.

    Raw data get the saved model's own preparation (normalise + log1p for counts); genes are aligned by
    name. Missing genes are an error unless ``allow_missing`` (then they are filled with the training
    minimum / mean, i.e. model input 0). Returns (X, missing_mask).
    """
    if adata.n_obs == 0:
        raise UserError("no samples to embed: the matrix has 0 rows")
    missing = ~genes.isin(adata.var_names)
    src = _source(adata)
    if missing.all():
        from .io._common import STRIP_VERSIONS, _ensembl_version_mismatch

        versions = _ensembl_version_mismatch(adata.var_names, genes)
        if versions:
            data, model = ("the data's", "the model's") if versions > 0 else ("the model's", "the data's")
            fix = (f"remove the suffixes from the data's gene IDs (in Python: {STRIP_VERSIONS})" if versions > 0
                   else "give data with the versioned IDs the model was trained on, or train on IDs without versions")
            raise UserError(f"{src}none of the model's {len(genes)} genes (e.g. {', '.join(genes[:3])}) are in the data "
                            f"(genes e.g. {', '.join(map(str, adata.var_names[:3]))}): {data} Ensembl IDs carry "
                            f"version suffixes (.N) and {model} do not; {fix}")
        raise UserError(f"{src}none of the model's {len(genes)} genes (e.g. {', '.join(genes[:3])}) are in the data "
                        f"(genes e.g. {', '.join(map(str, adata.var_names[:3]))}): check that the data use the "
                        "same gene identifiers (symbols vs Ensembl IDs) and species as the training data")
    if missing.any() and not allow_missing:
        names = ", ".join(genes[missing][:5])
        raise UserError(f"{src}{int(missing.sum())} of the model's {len(genes)} genes are absent from the data "
                        f"(e.g. {names}); use allow_missing_genes (--allow-missing-genes) to fill them, or check "
                        "the gene identifiers")
    if not adata.var_names.is_unique:
        raise UserError("gene names are not unique; make them unique (adata.var_names_make_unique()) first")
    if PREP_KEY in adata.uns:
        X = adata.X
    else:
        check_finite(adata.X, "the data to embed")
        X = repeat_preparation(adata, prep, src)
    if missing.any():
        log.warning("%d model genes absent from the data; filled so that their model input is 0", int(missing.sum()))
    # absent genes are 0 before scaling (their offset is handled by the caller)
    return genes_in_order(X, adata.var_names, genes), np.asarray(missing)


def _trained_on(prep: dict) -> tuple[str, str]:
    """(value kind, transform) of a model's training input; models saved before these were recorded: from
    input_kind."""
    counts = prep.get("input_kind") == "counts"
    kind = prep.get("value_kind") or ("counts" if counts else "log")
    return kind, prep.get("transform") or ("normalize_total+log1p" if counts else "none")


def _round(X):
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        X.data = np.rint(X.data)
        X.eliminate_zeros()
        return X
    return np.rint(np.asarray(X, dtype=np.float32))


def repeat_preparation(adata: AnnData, prep: dict, src: str = ""):
    """``adata.X`` (raw, not prepared) through the saved preparation ``prep``; a warning line when the values
    are on another scale than the training input (an error when a count model is given anything but counts)."""
    trained, transform = _trained_on(prep)
    ev = value_evidence(adata.X)
    new = decide_value_kind(ev)
    if negative_counts(ev):
        raise UserError(negative_counts_message(src, "X", ev, _first_bad(adata, lambda v: v < 0), log_option=False))
    seen = prep.get("evidence") or {}
    was = VALUE_KINDS.get(trained, trained) + (f" up to {_fmt(seen['max'])}" if "max" in seen else "")
    differs = (f"{src}the model was trained on {was}, but these data hold {VALUE_KINDS[new]} "
               f"({_describe(ev)})")
    if prep["input_kind"] == "counts":
        # a model of estimated counts takes them from one sample too (no library sizes to compare: "linear")
        fractional = ("estimated_counts", "linear") if trained == "estimated_counts" else ("estimated_counts",)
        if new != "counts" and new not in fractional:
            raise UserError(f"{differs}; give raw counts, or data prepared from them (genodae prepare)")
        X = adata.X
        if new != "counts":
            if trained == "estimated_counts":
                log.info("%sestimated counts rounded to integers, as at training", src)
            else:
                log.warning("%s; rounded to integers and used as counts, as at training", differs)
            X = _round(X)
        tmp = AnnData(X=X.astype(np.float32), obs=pd.DataFrame(index=adata.obs_names),
                      var=pd.DataFrame(index=adata.var_names))
        normalize_log(tmp, prep["params"]["target_sum"])
        return tmp.X
    if transform == "log1p":
        if new in ("log", "zscore", "linear_negative"):
            log.warning("%s; log1p-transformed as the training input was: give values on the training scale", differs)
        if ev["min"] < 0:
            raise UserError(f"{differs}: log1p (the model's preparation) needs non-negative values; give values on "
                            "the training scale")
        return _log1p(adata.X)
    same = new == "log" or (trained == new)
    if not same:
        log.warning("%s; used as they are: give values on the training scale (e.g. log-transformed as the training "
                    "data were), or train on these", differs)
    return adata.X


def genes_in_order(X, var_names: pd.Index, genes: pd.Index):
    """Columns ``genes`` of ``X`` (cells × ``var_names``) in that order as float32 (CSR when sparse); genes absent
    from ``var_names`` become columns of zeros. Never densifies a sparse ``X``."""
    idx = var_names.get_indexer(genes)
    present = np.flatnonzero(idx >= 0)
    if len(idx) == X.shape[1] and (idx == np.arange(len(idx))).all():  # every gene, in order: no copy
        if sp.issparse(X) and X.dtype == np.float32:
            return X if sp.isspmatrix_csr(X) else sp.csr_matrix(X)
        if not sp.issparse(X):
            return np.asarray(X, dtype=np.float32)
    sub = X[:, idx[present]]
    sub = sp.csr_matrix(sub, dtype=np.float32) if sp.issparse(sub) else np.asarray(sub, dtype=np.float32)
    if len(present) == len(genes):
        return sub
    n = len(genes)
    if sp.issparse(sub):
        cols = sp.csr_matrix((np.ones(len(present), np.float32), (present, np.arange(len(present)))),
                             shape=(n, len(present)))
        return sp.csr_matrix(sp.csc_matrix(sub) @ cols.T)
    full = np.zeros((sub.shape[0], n), np.float32)
    full[:, present] = sub
    return full
