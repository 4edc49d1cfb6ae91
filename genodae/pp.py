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

from . import __version__
from .config import PrepareConfig
from .errors import UserError

log = logging.getLogger("genodae")

# The helpers below serve genodae.model; the public API is prepare() (AnnData in, scanpy's conventions) and
# prepare_h5ad() (file to file, in chunks), which is outside __all__ as it takes paths, not an AnnData.
__all__ = ["prepare"]

_D = PrepareConfig()
PREP_KEY = "genodae_prepare"


def is_counts(X) -> bool:
    """True when every stored value is a non-negative integer (raw counts)."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return True
    if np.issubdtype(data.dtype, np.integer):
        return bool(data.min() >= 0)
    return bool(data.min() >= 0 and np.all(np.mod(data, 1) == 0))


# --- what the values are -------------------------------------------------------------------------------
# Thresholds, each from what the scale can hold (not fitted to a data set):
LOG_MAX = 50.0  # log-scale expression stays below ~20 (log2 of a million); 50 on a log scale would be 2**50
LIBRARY_FOLD = 2.0  # estimated counts: sample totals differ (90th vs 10th percentile) at least this much;
#                     TPM/CPM sum to the same total per sample, microarray intensities are scaled to one target
ZSCORE_MEAN, ZSCORE_SD, ZSCORE_GENES = 0.05, 0.1, 0.9  # z-scores: |mean| < 0.05 and |sd - 1| < 0.1 in 90 % of genes
LINEAR_NEGATIVE = 100.0  # negative values beside a 99th percentile of |x| above 100: neither counts nor log
VALUE_KINDS = {
    "counts": "raw counts",
    "estimated_counts": "estimated counts (as from salmon, RSEM or kallisto)",
    "linear": "linear-scale values (intensities or TPM/FPKM)",
    "log": "log-scale values",
    "zscore": "per-gene z-scores",
    "linear_negative": "linear-scale values with negatives",
}
_SAMPLE = 1_000_000  # stored values looked at for the percentiles and integer fraction


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def value_evidence(X) -> dict:
    """Numbers that tell the value kinds apart (all plain floats, written to uns['genodae_prepare'])."""
    n_total = X.shape[0] * X.shape[1]
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    n_implicit = n_total - data.size
    if data.size > _SAMPLE:
        data_s = data[np.random.default_rng(0).choice(data.size, _SAMPLE, replace=False)]
    else:
        data_s = data
    data_s = np.asarray(data_s, dtype=np.float64)
    nonzero = data_s[data_s != 0]
    lo = float(min(data.min(), 0) if n_implicit else data.min()) if data.size else 0.0
    hi = float(max(data.max(), 0) if n_implicit else data.max()) if data.size else 0.0
    ev = {
        "min": lo, "max": hi,
        "p99_nonzero": float(np.percentile(np.abs(nonzero), 99)) if nonzero.size else 0.0,
        "fraction_integer": float(np.mean(np.mod(nonzero, 1) == 0)) if nonzero.size else 1.0,
        "fraction_zero": float((n_implicit + data.size - np.count_nonzero(data)) / max(n_total, 1)),
        "fraction_negative": float(np.count_nonzero(data < 0) / max(n_total, 1)),
    }
    totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    pos = totals[totals > 0]
    q10, q90 = (np.percentile(pos, [10, 90]) if pos.size else (0.0, 0.0))
    ev["library_fold_q90_q10"] = float(q90 / q10) if q10 > 0 else 0.0
    if lo < 0:  # only then can the values be z-scores
        if sp.issparse(X):
            from sklearn.utils.sparsefuncs import mean_variance_axis

            mean, var = mean_variance_axis(sp.csr_matrix(X, dtype=np.float64), axis=0)
        else:
            X64 = np.asarray(X, dtype=np.float64)
            mean, var = X64.mean(axis=0), X64.var(axis=0)
        sd = np.sqrt(np.clip(var, 0, None))
        varies = sd > 0
        # the sample sd (ddof=1) of a z-scored gene is 1 for scanpy's scale (ddof=1) and sqrt(n/(n-1)) otherwise
        n = X.shape[0]
        unit = np.minimum(np.abs(sd - 1), np.abs(sd * np.sqrt(n / max(n - 1, 1)) - 1)) < ZSCORE_SD
        ok = (np.abs(mean) < ZSCORE_MEAN) & unit & varies
        ev["fraction_genes_mean0_sd1"] = float(ok.sum() / max(varies.sum(), 1))
    return ev


def decide_value_kind(ev: dict) -> str:
    """One of :data:`VALUE_KINDS` from :func:`value_evidence`'s numbers."""
    if ev["min"] >= 0 and ev["fraction_integer"] == 1.0:
        return "counts"
    if ev["min"] < 0:
        if ev.get("fraction_genes_mean0_sd1", 0.0) >= ZSCORE_GENES:
            return "zscore"
        return "linear_negative" if ev["p99_nonzero"] > LINEAR_NEGATIVE else "log"
    if ev["max"] <= LOG_MAX:
        return "log"
    return "estimated_counts" if ev["library_fold_q90_q10"] >= LIBRARY_FOLD else "linear"


def _describe(ev: dict) -> str:
    text = (f"values {_fmt(ev['min'])} to {_fmt(ev['max'])}, 99th percentile {_fmt(ev['p99_nonzero'])}, "
            f"{ev['fraction_integer']:.0%} integers")
    if ev["min"] >= 0 and ev["max"] > LOG_MAX:
        text += f", sample totals differing {ev['library_fold_q90_q10']:.1f}-fold (90th/10th percentile)"
    if "fraction_genes_mean0_sd1" in ev:
        text += f", {ev['fraction_genes_mean0_sd1']:.0%} of genes with mean 0 and sd 1"
    return text


def _counts_layers(adata: AnnData) -> list[str]:
    return [k for k in adata.layers.keys() if is_counts(adata.layers[k])]


def _source(adata: AnnData) -> str:
    """``"<file>: "`` when ``adata`` was read by :func:`genodae.read` (so messages name the file), else ``""``."""
    info = adata.uns.get("genodae_read")
    path = info.get("path") if isinstance(info, dict) else None
    return f"{path}: " if path else ""


def _first_bad(adata: AnnData, bad_values) -> str:
    """``"e.g. gene 'X' in sample 'Y'"`` for the first stored entry where ``bad_values(data)`` is True."""
    X = adata.X
    if sp.issparse(X):
        X = X.tocsr()
        pos = np.flatnonzero(bad_values(X.data))
        if not pos.size:
            return ""
        row = int(np.searchsorted(X.indptr, pos[0], side="right") - 1)
        col = int(X.indices[pos[0]])
        n = pos.size
    else:
        mask = bad_values(np.asarray(X))
        n = int(mask.sum())
        if not n:
            return ""
        row, col = (int(i[0]) for i in np.nonzero(mask))
    return f"{n} value(s), e.g. gene {adata.var_names[col]!r} in sample {adata.obs_names[row]!r}"


def check_finite(X, what: str = "the matrix") -> None:
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size and not np.all(np.isfinite(data)):
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - np.isfinite(data).sum() - n_nan)
        raise UserError(
            f"{what} holds {n_nan} NaN and {n_inf} infinite value(s); read it with missing='drop' or "
            "'impute' (--missing drop/impute) for NaN, and remove infinite values from the file"
        )


def check_batches(adata: AnnData, batch_key: str, src: str = "") -> None:
    """A batch column must exist, have no missing values, and give every batch at least 2 cells."""
    if batch_key not in adata.obs.columns:
        raise UserError(f"{src}batch_key {batch_key!r} is not an obs column; obs columns: "
                        f"{', '.join(map(str, adata.obs.columns[:20])) or 'none'} (join a sample sheet with --obs, "
                        "or give several input files, one per batch)")
    col = adata.obs[batch_key]
    if col.isna().any():
        raise UserError(f"{src}obs column {batch_key!r} has {int(col.isna().sum())} missing value(s); give every cell "
                        "a batch or drop those cells")
    sizes = col.astype(str).value_counts()
    if (sizes < 2).any():
        raise UserError(f"{src}batch {sizes.index[-1]!r} of {batch_key!r} has only 1 cell: a batch needs at least 2 cells; "
                        "merge it with another batch or drop it")


def scaling_params(X, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene (offset, scale) so that model input = (x - offset) / scale. Never densifies or copies X: the
    statistics are gathered a chunk of rows at a time."""
    from ._pp_chunked import gene_stats

    if scaling == "none":
        return scaling_from_stats(scaling, None, None, None, None, n_vars=X.shape[1])
    stats = gene_stats(X, moments=scaling == "zscore")
    lo, hi, mom = stats[1], stats[2], stats[3] if scaling == "zscore" else None
    return scaling_from_stats(scaling, lo, hi, mom.mean if mom else None, mom.var if mom else None)


def scaling_from_stats(scaling: str, lo, hi, mean, var, n_vars: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scaling_params` from per-gene statistics: minimum and maximum (``minmax``), float64 mean and
    population variance (``zscore``; E[x²]-mean² in float32 would lose the scale of high-mean, low-variance genes)."""
    if scaling == "none":  # the log-normalised values as they are (what scanpy's PCA sees, uncentred)
        n = n_vars if n_vars is not None else len(lo)
        lo, rng = np.zeros(n), np.ones(n)
    elif scaling == "minmax":
        rng = hi - lo
    else:
        lo, rng = mean, np.sqrt(np.clip(var, 0, None))
    rng = np.where(rng > 0, rng, 1.0)  # constant genes: input 0, never divide by 0
    return np.asarray(lo).astype(np.float32), np.asarray(rng).astype(np.float32)


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


def normalize_log(adata: AnnData, target_sum: float) -> None:
    """Library-size normalise to ``target_sum`` and log1p, in place, keeping sparsity."""
    import scanpy as sc

    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    adata.uns.pop("log1p", None)  # scanpy's own marker; ours is uns["genodae_prepare"]


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
        ``minmax`` (0–1 per gene, as in ADAGE: masking to 0 means "not expressed"), ``zscore``, or
        ``none`` (the log values as they are: offset 0, scale 1).
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
    if PREP_KEY in adata.uns:
        raise UserError("this AnnData is already prepared (uns['genodae_prepare'] exists); prepare raw data")
    src = _source(adata)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise UserError(f"{src}the matrix is empty ({adata.n_obs} samples × {adata.n_vars} genes); "
                        "check the input file")
    if adata.n_obs < 2:
        raise UserError(f"{src}only 1 sample ({adata.obs_names[0]!r}): preparing and training need at least 2 "
                        "(genes are chosen and scaled across samples); to embed a single sample, use a saved "
                        "model (genodae embed SAMPLE MODEL, or DAE.load(MODEL).embed(adata))")
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
    if cfg.input_kind == "auto" and detected in ("zscore", "linear_negative"):
        usable = [k for k in _counts_layers(adata) if f"layers[{k!r}]" != source]
        if detected == "zscore" and "counts" in usable and cfg.layer is None:
            log.warning("%sprepare: X holds %s (%s), not expression on a usable scale; using layers['counts'] "
                        "(raw counts) instead", src, VALUE_KINDS[detected], _describe(ev))
            adata.X = adata.layers["counts"].copy()
            source = "layers['counts']"
            ev = value_evidence(adata.X)
            detected = decide_value_kind(ev)
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
        adata.layers["counts"] = adata.X.copy()
        normalize_log(adata, cfg.target_sum)
    elif transform == "log1p":
        adata.X = _log1p(adata.X)
    elif not np.issubdtype(adata.X.dtype, np.floating):
        adata.X = adata.X.astype(np.float32)

    used = _select_genes(adata, cfg, kind, src)
    offset, scale = scaling_params(adata.X, cfg.scaling)  # every gene, chunk by chunk: no column copy of X
    offset, scale = offset[used], scale[used]
    adata.var["genodae_offset"] = np.nan
    adata.var["genodae_scale"] = np.nan
    adata.var.loc[used, "genodae_offset"] = offset
    adata.var.loc[used, "genodae_scale"] = scale
    adata.uns[PREP_KEY] = {
        "params": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
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
             adata.n_obs, adata.n_vars, int(used.sum()), cfg.scaling, time.perf_counter() - t0, PREP_KEY,
             ", layers['counts']" if kind == "counts" else "")
    return adata if copy else None


def _log1p(X):
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        X.data = np.log1p(X.data)
        return X
    return np.log1p(np.asarray(X, dtype=np.float32))


def _unusable_message(adata: AnnData, src: str, source: str, detected: str, ev: dict, count_layers: list[str]) -> str:
    what = f"{src}{source} holds {VALUE_KINDS[detected]} ({_describe(ev)})"
    if detected == "zscore":
        what += ": each gene's level was removed, so this is not expression on a usable scale"
        if count_layers:
            k = count_layers[0]
            return f"{what}; prepare the raw counts in layers[{k!r}] instead: layer={k!r} (--layer {k})"
        if adata.raw is not None:
            return (f"{what}; give the raw counts, or prepare adata.raw.to_adata() (the values before scaling) in "
                    "Python")
        return f"{what}; give the raw counts (or the log-scale values) these were computed from"
    return (f"{what}; give raw counts or log-scale values, or use input_kind='log' (--input-kind log) to use them "
            "as they are")


def _samples_with_counts(totals: np.ndarray, adata: AnnData, src: str) -> np.ndarray:
    """Mask of the samples with a non-zero total; the others are dropped with a warning, all-zero data refused."""
    empty = totals <= 0
    if empty.all():
        raise UserError(f"{src}every sample has zero counts ({adata.n_obs} samples × {adata.n_vars} genes, "
                        "all zeros): check that this is the right file and that it was exported completely")
    if empty.any():
        msg = (f"{src}dropping {int(empty.sum())} sample(s) with zero counts (e.g. "
               f"{adata.obs_names[empty][0]}); they cannot be normalised")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    return ~empty


def _decide(input_kind: str, detected: str, ev: dict, adata: AnnData, src: str, source: str) -> tuple[str, str]:
    """(input_kind for the model: counts or log, what is done to the values), logged in one line."""
    desc = f"{VALUE_KINDS[detected]} ({_describe(ev)})"
    if input_kind == "counts":
        if ev["min"] < 0:
            what = "negative values (" + _first_bad(adata, lambda v: v < 0) + ")"
            raise UserError(f"{src}input_kind='counts' but {source} holds {what}; give raw counts, or use "
                            "input_kind='log' (--input-kind log) for already-transformed data")
        if detected == "log":
            raise UserError(f"{src}input_kind='counts' but {source} holds {desc}: rounding them would not give "
                            "counts; give raw counts, or use input_kind='log' (--input-kind log) for log-scale data")
        if detected == "counts":
            log.info("%sprepare: %s holds raw counts (as requested)", src, source)
            return "counts", "normalize_total+log1p"
        log.warning("%sprepare: %s holds %s; rounded to integers and used as counts (input_kind='counts')",
                    src, source, desc)
        return "counts", "round+normalize_total+log1p"
    if input_kind == "log":
        if detected != "log":
            log.warning("%sprepare: %s looks like %s; used as log-scale values as they are (input_kind='log')",
                        src, source, desc)
        else:
            log.info("%sprepare: %s holds log-scale values (as requested)", src, source)
        return "log", "none"
    if input_kind == "linear":
        if ev["min"] < 0:
            what = "negative values (" + _first_bad(adata, lambda v: v < 0) + ")"
            raise UserError(f"{src}input_kind='linear' but {source} holds {what}: log1p needs non-negative values; "
                            "use input_kind='log' (--input-kind log) for data already on a log scale")
        if detected == "log":
            log.warning("%sprepare: %s looks like %s already; log1p-transformed as requested (input_kind='linear')",
                        src, source, desc)
        else:
            log.info("%sprepare: %s log1p-transformed (input_kind='linear'; %s)", src, source, desc)
        return "log", "log1p"
    if detected == "counts":
        log.info("%sprepare: %s holds %s (detected)", src, source, desc)
        return "counts", "normalize_total+log1p"
    if detected == "estimated_counts":
        log.warning("%sprepare: %s holds %s (detected); rounded to integers and used as counts (input_kind='linear' "
                    "log-transforms them instead)", src, source, desc)
        return "counts", "round+normalize_total+log1p"
    if detected == "linear":
        log.warning("%sprepare: %s holds %s (detected); log1p-transformed (input_kind='counts' rounds them and "
                    "uses them as counts instead)", src, source, desc)
        return "log", "log1p"
    log.info("%sprepare: %s holds %s (detected); used as they are", src, source, desc)
    return "log", "none"


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
        sub = AnnData(X=sub.X, layers={"counts": sub.layers["counts"]} if kind == "counts" else None,
                      obs=obs, var=pd.DataFrame(index=sub.var_names))
        hv = _hvg_with_fallback(sub, cfg, flavor, src)
        used[np.flatnonzero(eligible)] = np.asarray(hv["highly_variable"], dtype=bool)
        log.info("prepare: %d highly variable genes (%s%s) of %d", int(used.sum()), flavor,
                 f", within each batch of {cfg.batch_key!r}" if cfg.batch_key else "", int(eligible.sum()))
    else:
        log.info("prepare: using all %d genes that vary", int(used.sum()))
    adata.var["highly_variable"] = used
    return used


def _eligible(detected: np.ndarray, lo: np.ndarray, hi: np.ndarray, kind: str, cfg: PrepareConfig,
              var_names: pd.Index, src: str = "") -> tuple[np.ndarray, str]:
    """(genes the model may use, the gene selection flavour) from each gene's cells detected, minimum and maximum."""
    # A gene varies when its values are not all equal: compared exactly, since a float32 variance of equal
    # values is not always 0.
    min_cells = max(cfg.min_cells, 1)
    varies = hi > lo
    eligible = (detected >= min_cells) & varies if kind == "counts" else varies
    if eligible.sum() < 2:
        n_const = int((~varies).sum())
        n_few = int((varies & (detected < min_cells)).sum()) if kind == "counts" else 0
        why = [f"{n_const} have the same value in every sample"] if n_const else []
        why += [f"{n_few} are detected in fewer than min_cells={min_cells} cells"] if n_few else []
        raise UserError(f"{src}only {int(eligible.sum())} of {len(var_names)} gene(s) can be used ({'; '.join(why)}): "
                        "nothing to learn from; check the input file, or lower min_cells (--min-cells)")
    flavor = cfg.hvg_flavor
    if flavor == "auto":
        flavor = "seurat_v3" if kind == "counts" else "seurat"
    if flavor == "seurat_v3" and kind != "counts":
        raise UserError("hvg_flavor='seurat_v3' needs raw counts; use 'seurat' or 'none' for log-scale data")
    n_drop = int((~eligible).sum())
    if n_drop:  # after the errors above, so that a failing run prints one line
        log.warning("%sprepare: %d of %d gene(s) are constant or detected in fewer than %d cells (e.g. %s); "
                    "not used by the model", src, n_drop, len(var_names), min_cells, var_names[~eligible][0])
    return eligible, flavor


def _hvg_with_fallback(sub: AnnData, cfg: PrepareConfig, flavor: str, src: str = "") -> pd.DataFrame:
    """scanpy's highly_variable_genes; when seurat_v3's loess fit fails (very sparse genes, or a small batch: scanpy
    raises "svddc failed" / "reciprocal condition number"), retry with a wider loess span, then with the ``seurat``
    flavour on the log data, and say so. Gene selection never ends a run with a traceback."""
    import scanpy as sc

    tries = [(flavor, 0.3)] + ([(flavor, 0.6), (flavor, 1.0), ("seurat", None)] if flavor == "seurat_v3" else [])
    last = None
    for fl, span in tries:
        kwargs = dict(span=span, layer="counts") if fl == "seurat_v3" else {}
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
