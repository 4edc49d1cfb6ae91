"""What the values of an expression matrix are, and the checks and transforms that both preparations share.

:func:`genodae.pp.prepare` (in memory) and :mod:`genodae._pp_chunked` (file to file, in chunks) import these from
here, so neither imports the other's module: value evidence and the decision it leads to (counts, estimated
counts, linear, log, z-scores), the checks (finite values, batches, samples with counts, genes that vary),
library-size normalisation and the per-gene scaling from statistics. ``genodae.pp`` re-exports every name.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from . import _keys
from .config import PrepareConfig
from .errors import UserError

log = logging.getLogger("genodae")

PREP_KEY = _keys.PREP


def is_counts(X) -> bool:
    """True when every stored value is a non-negative integer (raw counts)."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return True
    if np.issubdtype(data.dtype, np.integer):
        return bool(data.min() >= 0)
    return bool(data.min() >= 0 and np.all(np.mod(data, 1) == 0))


def raw_counts(X) -> bool:
    """Whether ``X`` holds counts (non-negative integers beyond 0/1, which may be binary input) in its first
    100,000 stored values: unprepared data that must not be read as log-scale input."""
    data = X.data[:100_000] if sp.issparse(X) else np.asarray(X).ravel()[:100_000]
    return data.size > 0 and float(data.max()) > 1 and is_counts(data)


# --- what the values are -------------------------------------------------------------------------------
# Thresholds, each from what the scale can hold (not fitted to a data set):
LOG_MAX = 50.0  # log-scale expression stays below ~20 (log2 of a million); 50 on a log scale would be 2**50
LIBRARY_FOLD = 2.0  # estimated counts: sample totals differ (90th vs 10th percentile) at least this much;
#                     TPM/CPM sum to the same total per sample, microarray intensities are scaled to one target
ZSCORE_MEAN, ZSCORE_SD, ZSCORE_GENES = 0.05, 0.1, 0.9  # z-scores: |mean| < 0.05 and |sd - 1| < 0.1 in 90 % of genes
LINEAR_NEGATIVE = 100.0  # negative values beside a 99th percentile of |x| above 100: neither counts nor log
NEGATIVE_COUNTS_SHARE = 0.01  # integers with negatives in at most 1 % of entries: counts with bad entries. Log-scale
#                             values and z-scores are not all integers, and log values below 0 (below 1 before the
#                             log) or z-scores below the mean are far more than 1 % of a matrix
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
        gene_max = X.max(axis=0).toarray() if sp.issparse(X) else np.max(X, axis=0)
        ev.update(zscore_evidence(mean, var, gene_max, hi, X.shape[0]))
    return ev


def zscore_evidence(mean: np.ndarray, var: np.ndarray, gene_max: np.ndarray, hi: float, n: int) -> dict:
    """How many genes look z-scored (mean 0, sd 1), from per-gene moments (population variance) and maxima.

    The sample sd (ddof=1) of a z-scored gene is 1 for scanpy's ``scale`` and sqrt(n/(n-1)) for others. scanpy's
    ``scale(max_value=...)`` clips: a rare gene's z-scores exceed the cap and its mean and sd move off 0 and 1,
    so genes that reach the matrix's maximum, when two or more do (a cap, not one largest value), are judged
    by the other genes, as long as those are at least half of the genes that vary."""
    mean, var = np.asarray(mean, dtype=np.float64).ravel(), np.asarray(var, dtype=np.float64).ravel()
    gene_max = np.asarray(gene_max, dtype=np.float64).ravel()
    sd = np.sqrt(np.clip(var, 0, None))
    varies = sd > 0
    unit = np.minimum(np.abs(sd - 1), np.abs(sd * np.sqrt(n / max(n - 1, 1)) - 1)) < ZSCORE_SD
    ok = (np.abs(mean) < ZSCORE_MEAN) & unit & varies
    at_max = gene_max >= hi
    capped = varies & at_max if np.count_nonzero(at_max) >= 2 else np.zeros_like(varies)
    judged = varies & ~capped
    if judged.sum() < 0.5 * varies.sum():
        judged = varies
    return {"fraction_genes_mean0_sd1": float((ok & judged).sum() / max(judged.sum(), 1)),
            "fraction_genes_capped": float(capped.sum() / max(varies.sum(), 1))}


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


def negative_counts(ev: dict) -> bool:
    """Whether the values are integer counts with a few negative entries (a bad value, not a log scale): every
    value an integer, and negatives in at most :data:`NEGATIVE_COUNTS_SHARE` of the entries."""
    return (ev["min"] < 0 and ev["fraction_integer"] == 1.0 and ev["max"] > 1
            and ev["fraction_negative"] <= NEGATIVE_COUNTS_SHARE)


def negative_counts_message(src: str, source: str, ev: dict, where: str, *, log_option: bool = True) -> str:
    """The error for :func:`negative_counts` data; ``where`` names the entries (``_first_bad``'s text);
    ``log_option``: offer input_kind='log' (where the caller honours it: prepare)."""
    text = (f"{src}{source} holds integer counts (up to {_fmt(ev['max'])}) with negative values ({where}; minimum "
            f"{_fmt(ev['min'])}): counts cannot be negative; correct those entries in the file")
    if log_option:
        text += ", or use input_kind='log' (--input-kind log) if these really are log-scale values"
    return text


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
    info = adata.uns.get(_keys.READ)
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


def resolve_scaling(scaling: str, kind: str, src: str = "") -> str:
    """What ``scaling="auto"`` means for model input of ``kind`` (``counts`` or ``log``, from :func:`_decide`):
    ``minmax`` for counts (the model reads the counts through a count likelihood; a masked entry becomes the gene's
    minimum, 0, "not detected", as in DCA and ADAGE), ``zscore`` otherwise (log-scale or linear intensities,
    log-normalised values: the model reconstructs the scaled values under a normal likelihood, so the scaling
    weighs each gene's errors; z-scores weigh every gene alike and mask an entry to the gene's mean). Other values
    are returned as they are. Measured: bench/results/readable.md, "Probe: the input scaling"."""
    if scaling != "auto":
        return scaling
    chosen = "minmax" if kind == "counts" else "zscore"
    log.info("%sprepare: %s scaling (scaling='auto', for %s)", src, chosen,
             "count input" if kind == "counts" else "input without counts")
    return chosen


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


def normalize_log(adata: AnnData, target_sum: float) -> None:
    """Library-size normalise to ``target_sum`` and log1p, in place, keeping sparsity."""
    import scanpy as sc

    adata.uns.pop("log1p", None)  # scanpy's marker of an earlier log1p (of the values X held before): else its stray
    #                               "adata.X seems to be already log-transformed" warning; ours is uns["genodae_prepare"]
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    adata.uns.pop("log1p", None)


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


def check_preparable(adata: AnnData, src: str) -> None:
    """The refusals both preparations (in memory and in chunks) make first: data already prepared, an empty
    matrix, a single sample."""
    if PREP_KEY in adata.uns:
        raise UserError("this AnnData is already prepared (uns['genodae_prepare'] exists); prepare raw data")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise UserError(f"{src}the matrix is empty ({adata.n_obs} samples × {adata.n_vars} genes); "
                        "check the input file")
    if adata.n_obs < 2:
        raise UserError(f"{src}only 1 sample ({adata.obs_names[0]!r}): preparing and training need at least 2 "
                        "(genes are chosen and scaled across samples); to embed a single sample, use a saved "
                        "model (genodae embed SAMPLE MODEL, or DAE.load(MODEL).embed(adata))")


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
