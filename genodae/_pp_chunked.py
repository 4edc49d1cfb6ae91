"""Prepare from file to file in row chunks (``genodae prepare --backed``, :func:`genodae.pp.prepare_h5ad`): data larger
than RAM.

The same decisions and the same output as :func:`genodae.pp.prepare` followed by writing the .h5ad, computed from
a backed .h5ad a chunk of rows at a time, so that memory holds a few chunks and per-gene and per-cell vectors,
never the matrix:

1. the values' evidence (range, integers, zeros, negatives, sample totals: :func:`genodae.pp.value_evidence`'s
   numbers; the same million stored values are sampled) and the finite check;
2. after the transform (rounding, ``normalize_total`` + ``log1p`` row by row, as on the whole matrix): per gene the
   cells detected, the minimum and maximum, the float64 mean and variance (pooled across chunks), and for
   ``seurat_v3`` the mean and variance of the counts in each batch;
3. ``seurat_v3`` only: scanpy's loess fit on those summary statistics, then one more pass for the clipped sums;
4. the output written chunk by chunk: X (the prepared values) and ``layers["counts"]``, other layers copied row by
   row; obs, var, obsm, varm and uns as in memory.

Gene selection supports ``seurat_v3`` (counts) and ``none``; ``seurat``/``cell_ranger`` (log-scale data) need the
in-memory :func:`genodae.pp.prepare`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import __version__, _keys
from .config import PrepareConfig
from .errors import UserError

log = logging.getLogger("genodae")

class Unsupported(UserError):
    """Settings or data the chunked preparation does not handle (the in-memory :func:`genodae.pp.prepare` does)."""


CHUNK = 16384  # rows per chunk: 16,384 cells × 2,000 genes at 10 % non-zeros is about 26 MB of CSR


def supports(cfg: PrepareConfig, kind: str | None = None) -> str:
    """'' when :func:`prepare_h5ad` can prepare with ``cfg``, else why not."""
    if cfg.hvg_flavor in ("seurat", "cell_ranger"):
        return f"hvg_flavor={cfg.hvg_flavor!r} (chunked preparation selects genes with seurat_v3 on counts, or none)"
    if kind == "log" and cfg.hvg_flavor == "auto" and cfg.n_top_genes:
        return ("log-scale input with hvg_flavor='auto' (seurat; chunked preparation selects genes with seurat_v3 on "
                "counts, or none: --hvg-flavor none)")
    return ""


def _rows(M, s: int, e: int):
    B = M[s:e]
    return sp.csr_matrix(B) if sp.issparse(B) else np.asarray(B)


def _flat(B) -> np.ndarray:
    return B.data if sp.issparse(B) else B.ravel()


class _Moments:
    """Per-column float64 count, mean and M2 pooled over chunks (Chan et al.), implicit zeros included."""

    def __init__(self, g: int):
        self.n, self.mean, self.m2 = 0, np.zeros(g), np.zeros(g)

    def add(self, B) -> None:
        k = B.shape[0]
        if k == 0:
            return
        if sp.issparse(B):
            B64 = sp.csr_matrix(B, dtype=np.float64)
            mean = np.asarray(B64.sum(axis=0)).ravel() / k
            dev = B64.data - mean[B64.indices]  # stored entries; the implicit zeros add (k - nnz) * mean²
            m2 = np.bincount(B64.indices, weights=dev * dev, minlength=B.shape[1])
            nnz = np.bincount(B64.indices, minlength=B.shape[1])
            m2 += (k - nnz) * mean**2
        else:
            B64 = np.asarray(B, dtype=np.float64)
            mean = B64.mean(axis=0)
            m2 = np.square(B64 - mean).sum(axis=0)
        n = self.n + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / n)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * k / n)
        self.n = n

    @property
    def var(self) -> np.ndarray:  # population variance (ddof 0), as sklearn's mean_variance_axis
        return self.m2 / max(self.n, 1)


class _Sums:
    """Per-column float64 sums of x and x² (exact for counts), per batch: scanpy's seurat_v3 mean and variance."""

    def __init__(self, n_batches: int, g: int):
        self.n = np.zeros(n_batches, dtype=np.int64)
        self.s1, self.s2 = np.zeros((n_batches, g)), np.zeros((n_batches, g))

    def add(self, B, codes: np.ndarray) -> None:
        for b in np.unique(codes):
            sub = B[codes == b] if len(codes) != B.shape[0] or not (codes == b).all() else B
            sub = sp.csr_matrix(sub, dtype=np.float64) if sp.issparse(sub) else np.asarray(sub, dtype=np.float64)
            self.n[b] += sub.shape[0]
            if sp.issparse(sub):
                self.s1[b] += np.bincount(sub.indices, weights=sub.data, minlength=sub.shape[1])
                self.s2[b] += np.bincount(sub.indices, weights=sub.data * sub.data, minlength=sub.shape[1])
            else:
                self.s1[b] += sub.sum(axis=0)
                self.s2[b] += np.square(sub).sum(axis=0)

    def mean_var(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.n[b]
        mean = self.s1[b] / n
        var = self.s2[b] / n - mean**2
        if n != 1:
            var *= n / (n - 1)
        return mean, var


def gene_stats(M, transform=None, chunk: int = CHUNK, moments: bool = False):
    """(detected, min, max[, moments]) per column of ``M`` (in memory or on disk; ``transform`` applied to each chunk
    of rows first), read ``chunk`` rows at a time: never a copy of the matrix (scipy's sparse min/max converts
    to CSC, ``X != 0`` builds a boolean matrix)."""
    n, g = M.shape
    detected = np.zeros(g, dtype=np.int64)
    lo, hi = np.full(g, np.inf), np.full(g, -np.inf)
    mom = _Moments(g) if moments else None
    dtype = M.dtype if np.issubdtype(M.dtype, np.floating) else np.float32
    for s in range(0, n, chunk):
        B = _rows(M, s, min(s + chunk, n))
        if transform is not None:
            B = transform(B, s)
            dtype = B.dtype
        if B.shape[0] == 0:
            continue
        if sp.issparse(B):
            nz = B.data != 0
            detected += np.bincount(B.indices[nz], minlength=g)
            lo = np.minimum(lo, np.asarray(B.min(axis=0).todense()).ravel())
            hi = np.maximum(hi, np.asarray(B.max(axis=0).todense()).ravel())
        else:
            detected += (B != 0).sum(axis=0)
            lo, hi = np.minimum(lo, B.min(axis=0)), np.maximum(hi, B.max(axis=0))
        if mom is not None:
            mom.add(B)
    lo, hi = lo.astype(dtype), hi.astype(dtype)
    return (detected, lo, hi, mom) if moments else (detected, lo, hi)


def evidence(M, chunk: int = CHUNK, rounded: bool = True) -> tuple[dict, dict]:
    """:func:`genodae.pp.value_evidence`'s numbers read in chunks (the same stored values sampled), and what the
    chunked preparation needs besides: row totals (of the rounded values too), the first negative and the first
    non-finite entry."""
    from ._values import _SAMPLE

    n, g = M.shape
    n_total = n * g
    n_stored = _n_stored(M)
    pick = None
    if n_stored > _SAMPLE:
        pick = np.sort(np.random.default_rng(0).choice(n_stored, _SAMPLE, replace=False))
    sample, totals, rtotals = [], np.zeros(n), np.zeros(n)
    lo, hi, n_nonzero, n_negative, offset = np.inf, -np.inf, 0, 0, 0
    first_negative = first_bad = None
    mom = None
    gene_max = np.full(g, -np.inf)  # stored values; implicit zeros below
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        B = _rows(M, s, e)
        data = _flat(B)
        if data.size:
            finite = np.isfinite(data)
            if not finite.all():
                pos = int(np.flatnonzero(~finite)[0])
                first_bad = first_bad or (*_where(B, pos, s), int(np.isnan(data).sum()), int((~finite).sum()))
                continue
            lo, hi = min(lo, float(data.min())), max(hi, float(data.max()))
            n_nonzero += int(np.count_nonzero(data))
            neg = data < 0
            if neg.any():
                n_negative += int(neg.sum())
                if first_negative is None:
                    first_negative = _where(B, int(np.flatnonzero(neg)[0]), s)
        if pick is None:
            sample.append(np.asarray(data, dtype=np.float64))
        else:
            i0, i1 = np.searchsorted(pick, [offset, offset + data.size])
            sample.append(np.asarray(data[pick[i0:i1] - offset], dtype=np.float64))
        offset += data.size
        totals[s:e] = np.asarray(B.sum(axis=1), dtype=np.float64).ravel()
        if e > s:
            bmax = B.max(axis=0).toarray() if sp.issparse(B) else np.max(B, axis=0)
            gene_max = np.maximum(gene_max, np.asarray(bmax, dtype=np.float64).ravel())
        if rounded:
            R = B.copy()
            if sp.issparse(R):
                R.data = np.rint(R.data)
            else:
                R = np.rint(R)
            rtotals[s:e] = np.asarray(R.sum(axis=1), dtype=np.float64).ravel()
        if lo < 0:  # only then can the values be z-scores (per-gene mean and sd)
            if mom is None:
                mom = _Moments(g)
                mom_from = s
            mom.add(B)
    if first_bad is not None:
        return {}, {"first_bad": first_bad}
    if mom is not None and mom_from > 0:  # negatives appeared late: the moments need every row
        mom = gene_stats(M, chunk=chunk, moments=True)[3]
    data_s = np.concatenate(sample) if sample else np.zeros(0)
    nonzero = data_s[data_s != 0]
    n_implicit = n_total - n_stored
    if n_stored:
        lo = min(lo, 0.0) if n_implicit else lo
        hi = max(hi, 0.0) if n_implicit else hi
    else:
        lo = hi = 0.0
    ev = {
        "min": float(lo), "max": float(hi),
        "p99_nonzero": float(np.percentile(np.abs(nonzero), 99)) if nonzero.size else 0.0,
        "fraction_integer": float(np.mean(np.mod(nonzero, 1) == 0)) if nonzero.size else 1.0,
        "fraction_zero": float((n_implicit + n_stored - n_nonzero) / max(n_total, 1)),
        "fraction_negative": float(n_negative / max(n_total, 1)),
    }
    pos = totals[totals > 0]
    q10, q90 = (np.percentile(pos, [10, 90]) if pos.size else (0.0, 0.0))
    ev["library_fold_q90_q10"] = float(q90 / q10) if q10 > 0 else 0.0
    if mom is not None:
        from ._values import zscore_evidence

        ev.update(zscore_evidence(mom.mean, mom.var, gene_max, hi, n))
    return ev, {"totals": totals, "rounded_totals": rtotals, "first_negative": first_negative}


def _n_stored(M) -> int:
    if hasattr(M, "group") and "data" in M.group:  # anndata's on-disk CSR
        return int(M.group["data"].shape[0])
    if sp.issparse(M):
        return int(M.nnz)
    return int(np.prod(M.shape))


def _where(B, pos: int, start: int) -> tuple[int, int]:
    if sp.issparse(B):
        row = int(np.searchsorted(B.indptr, pos, side="right") - 1)
        return start + row, int(B.indices[pos])
    return start + pos // B.shape[1], pos % B.shape[1]


def seurat_v3(M, counts, kept, eligible: np.ndarray, codes: np.ndarray, n_batches: int, n_top_genes: int,
              spans=(0.3, 0.6, 1.0), chunk: int = CHUNK, src: str = "") -> np.ndarray:
    """scanpy's ``highly_variable_genes(flavor="seurat_v3", layer="counts", batch_key=...)`` on the eligible
    genes, from summary statistics: per-batch means and variances (one pass), the loess fit of log variance on
    log mean, then the clipped sums (a second pass); genes ranked as scanpy ranks them. ``counts(B, s)``: the counts
    of the kept cells of the chunk of rows ``B`` starting at ``s``; ``kept(s, k)``: their positions among the kept
    cells (to index ``codes``, the batch of each kept cell). Returns the mask over the eligible genes. When the loess
    fit fails, wider spans are tried (as in memory)."""
    from skmisc.loess import loess

    cols = np.flatnonzero(eligible)
    sums = _Sums(n_batches, len(cols))
    for s in range(0, M.shape[0], chunk):
        B = counts(_rows(M, s, min(s + chunk, M.shape[0])), s)
        sums.add(B[:, cols], codes[kept(s, B.shape[0])])
    last = None
    for span in spans:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clip, means, reg_std = [], [], []
                for b in range(n_batches):
                    mean, var = sums.mean_var(b)
                    not_const = var > 0
                    estimat_var = np.zeros(len(cols), dtype=np.float64)
                    model = loess(np.log10(mean[not_const]), np.log10(var[not_const]), span=span, degree=2)
                    model.fit()
                    estimat_var[not_const] = model.outputs.fitted_values
                    std = np.sqrt(10**estimat_var)
                    clip.append(std * np.sqrt(sums.n[b]) + mean)
                    means.append(mean)
                    reg_std.append(std)
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError) as e:
            last = e
            continue
        if span != spans[0]:
            why = last.args[0] if last.args else type(last).__name__
            why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
            log.warning("%sprepare: seurat_v3 gene selection failed (%s); used a loess span of %s instead", src,
                        why.splitlines()[0], span)
        break
    else:
        raise UserError(f"{src}highly variable gene selection failed ({last}); choose all genes with "
                        "hvg_flavor='none' (--hvg-flavor none) or fewer genes with n_top_genes")
    c1, c2 = np.zeros((n_batches, len(cols))), np.zeros((n_batches, len(cols)))
    for s in range(0, M.shape[0], chunk):
        B = counts(_rows(M, s, min(s + chunk, M.shape[0])), s)
        B = sp.csr_matrix(B[:, cols]) if sp.issparse(B) else np.asarray(B)[:, cols]
        bc = codes[kept(s, B.shape[0])]
        for b in np.unique(bc):
            sub = B[bc == b]
            if sp.issparse(sub):
                x = np.minimum(sub.data.astype(np.float64), clip[b][sub.indices])
                c1[b] += np.bincount(sub.indices, weights=x, minlength=len(cols))
                c2[b] += np.bincount(sub.indices, weights=x * x, minlength=len(cols))
            else:
                x = np.minimum(sub.astype(np.float64), clip[b])
                c1[b] += x.sum(axis=0)
                c2[b] += np.square(x).sum(axis=0)
    norm_gene_vars = np.stack([
        (1 / ((sums.n[b] - 1) * np.square(reg_std[b]))) * (sums.n[b] * np.square(means[b]) + c2[b] - 2 * c1[b] * means[b])
        for b in range(n_batches)])
    # scanpy's ranking (SelectIntegrationFeatures in Seurat v3): median rank over batches, then batches
    ranked = np.argsort(np.argsort(-norm_gene_vars, axis=1), axis=1).astype(np.float32)
    n_high = np.sum((ranked < n_top_genes).astype(int), axis=0)
    ranked[ranked >= n_top_genes] = np.nan
    median_ranked = np.ma.median(np.ma.masked_invalid(ranked), axis=0).filled(np.nan)
    df = pd.DataFrame({"highly_variable_rank": median_ranked, "highly_variable_nbatches": n_high})
    order = df.sort_values(["highly_variable_rank", "highly_variable_nbatches"], ascending=[True, False],
                           na_position="last").index
    hv = np.zeros(len(cols), dtype=bool)
    hv[np.asarray(order[: int(n_top_genes)])] = True
    return hv


class _Transform:
    """What prepare does to a chunk of rows: drop the cells without counts, round, normalise and log1p.
    ``counts(B, s)`` gives the counts kept (counts input), ``__call__(B, s)`` the prepared values."""

    def __init__(self, kind: str, transform: str, keep: np.ndarray, target_sum: float):
        self.kind, self.transform, self.keep, self.target_sum = kind, transform, keep, target_sum

    def kept(self, s: int, k: int) -> np.ndarray:
        """Positions (among the kept cells) of the kept cells of rows ``s`` … of this chunk: for per-cell vectors
        over kept cells, the slice of this chunk."""
        before = int(self.keep[:s].sum())
        return np.arange(before, before + k)

    def counts(self, B, s: int):
        keep = self.keep[s : s + B.shape[0]]
        if not keep.all():
            B = B[keep]
        if sp.issparse(B):
            B = sp.csr_matrix(B, dtype=np.float32, copy=True)
            if self.transform.startswith("round"):
                B.data = np.rint(B.data)
                B.eliminate_zeros()
        else:
            B = np.array(B, dtype=np.float32)
            if self.transform.startswith("round"):
                B = np.rint(B)
        return B

    def __call__(self, B, s: int):
        from anndata import AnnData

        from ._values import _log1p, normalize_log

        if self.kind == "counts":
            tmp = AnnData(X=self.counts(B, s))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                normalize_log(tmp, self.target_sum)
            return tmp.X
        if self.transform == "log1p":
            return _log1p(B)
        return sp.csr_matrix(B, dtype=np.float32) if sp.issparse(B) else np.asarray(B, dtype=np.float32)


def _write_rows(group, name: str, M, fn, chunk: int) -> None:
    """``group[name]`` = ``fn(rows, start)`` of every chunk of rows of ``M``, appended chunk by chunk in anndata's
    encodings (CSR group, or dense array) to resizable HDF5 datasets with large chunks (a resizable dataset created
    empty gets HDF5 chunks of 1,024 values, and millions of them cost hundreds of MB of index). Index arrays are
    int32 while ``M``'s stored values fit (as scipy makes them: scipy upcasts int32 indices beside an int64 indptr,
    a copy of the whole matrix's indices on every row selection), else int64."""
    n, g = M.shape
    stored = _n_stored(M)
    idx = np.int32 if stored < np.iinfo(np.int32).max else np.int64
    out = None
    for s in range(0, n, chunk):
        B = fn(_rows(M, s, min(s + chunk, n)), s)
        if out is None:
            if sp.issparse(B):
                out = group.create_group(name)
                out.attrs["encoding-type"], out.attrs["encoding-version"] = "csr_matrix", "0.1.0"
                size = (min(1 << 18, max(stored, 1)),)  # HDF5 allocates whole chunks: none larger than the data
                out.create_dataset("data", shape=(0,), maxshape=(None,), dtype=B.dtype, chunks=size)
                out.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=idx, chunks=size)
                out.create_dataset("indptr", data=np.zeros(1, idx), maxshape=(None,), chunks=(1 << 16,))
                rows = 0
            else:
                out = group.create_dataset(name, shape=(0, g), maxshape=(None, g), dtype=B.dtype,
                                           chunks=(min(max(n, 1), 256), min(g, 4096)))
                out.attrs["encoding-type"], out.attrs["encoding-version"] = "array", "0.2.0"
        if sp.issparse(B):
            B = sp.csr_matrix(B)
            data, indices, indptr = out["data"], out["indices"], out["indptr"]
            nnz = data.shape[0]
            data.resize((nnz + B.nnz,))
            data[nnz:] = B.data
            indices.resize((nnz + B.nnz,))
            indices[nnz:] = B.indices
            k = indptr.shape[0]
            indptr.resize((k + B.shape[0],))
            indptr[k:] = B.indptr[1:].astype(np.int64) + nnz  # cast to idx by h5py
            rows += B.shape[0]
            out.attrs["shape"] = (rows, g)
        else:
            k = out.shape[0]
            out.resize(k + B.shape[0], axis=0)
            out[k:] = B


def _check_free_space(output, needed: int) -> None:
    """Refuse before writing when the output's filesystem cannot hold it: a disk that fills in the middle of an
    HDF5 write leaves h5py unable to close the file (and the process may crash on exit)."""
    import shutil

    folder = Path(output).resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"Cannot write {output}: it needs about {needed / 1e6:,.0f} MB and {folder} has "
                        f"{free / 1e6:,.0f} MB free; free space or write it elsewhere")


def _rows_of(value, keep: np.ndarray):
    """The kept cells of an ``obsm`` entry: a DataFrame stays a DataFrame (as the in-memory prepare keeps it)."""
    if isinstance(value, pd.DataFrame):
        return value.iloc[keep]
    return np.asarray(value)[keep]


@contextmanager
def _naming(tmp: Path, output) -> Iterator[None]:
    """Errors while writing the temporary file name the output; a failed write (disk full) is a one-line error."""
    try:
        yield
    except UserError as e:  # (StorageFull stays StorageFull)
        raise type(e)(str(e).replace(str(tmp), str(output)).replace(Path(tmp).name, Path(output).name)) from None
    except (OSError, RuntimeError, ValueError) as e:  # h5py reports a full disk as any of these
        from .io._write import storage_full

        if full := storage_full(e, output):
            raise full from None
        if isinstance(e, OSError):
            raise UserError(f"Cannot write {output}: {e.strerror or e}; check the free space and permissions of its "
                            "folder") from None
        raise


def prepare_h5ad(path: str | Path, output: str | Path, *, chunk_size: int = CHUNK, **settings) -> None:
    """Prepare the .h5ad ``path`` into ``output`` without loading its matrix (data larger than RAM).

    What :func:`genodae.pp.prepare` does to an AnnData, followed by writing it, computed a chunk of
    ``chunk_size`` rows at a time from the file (opened backed) and written chunk by chunk; ``settings`` are those
    of :class:`~genodae.config.PrepareConfig`. The output is the same (up to float64 rounding of the z-score
    scaling's variance), except that ``obsp`` and ``raw`` are not carried over. Gene selection: ``seurat_v3``
    (counts) or ``none``.

    Examples
    --------
    >>> genodae.pp.prepare_h5ad("atlas.h5ad", "prepared.h5ad")  # doctest: +SKIP
    """
    import h5py
    from anndata.io import write_elem

    from ._values import (
        PREP_KEY,
        VALUE_KINDS,
        _decide,
        _describe,
        _eligible,
        _fmt,
        _samples_with_counts,
        _unusable_message,
        check_batches,
        check_preparable,
        decide_value_kind,
        negative_counts,
        negative_counts_message,
        resolve_scaling,
        scaling_from_stats,
    )
    from .io import atomic_path, backed_layer, read_backed
    from .io._write import _check_file_target

    cfg = PrepareConfig(**settings)
    why = supports(cfg)
    if why:
        raise Unsupported(f"prepare --backed cannot use {why}; prepare in memory (without --backed)")
    t0 = time.perf_counter()
    path = Path(path)
    _check_file_target(output)
    adata = read_backed(path)
    src = f"{path}: "
    try:
        check_preparable(adata, src)
        for axis, names in (("sample", adata.obs_names), ("gene", adata.var_names)):
            if not names.is_unique:
                dup = names[names.duplicated()].unique()
                raise UserError(f"{src}{len(dup)} duplicate {axis} name(s) (e.g. {', '.join(map(repr, dup[:3]))}): "
                                "make them unique in the file, or prepare in memory (without --backed), which makes "
                                "them unique by appending -1, -2…")
        source, M = "X", adata.X
        if cfg.layer is not None:
            M = backed_layer(adata, cfg.layer)
            if M is None:
                layers = list(adata.file._file["layers"].keys()) if "layers" in adata.file._file else []
                raise UserError(f"{src}layer {cfg.layer!r} not found; layers: {', '.join(layers) or 'none'}")
            source = f"layers[{cfg.layer!r}]"
        if cfg.batch_key is not None:
            check_batches(adata, cfg.batch_key, src)
        ev, extra = evidence(M, chunk_size)
        if "first_bad" in extra:
            r, c, n_nan, n_bad = extra["first_bad"]
            raise UserError(f"{src}{source} holds NaN or infinite value(s) (e.g. gene {adata.var_names[c]!r} in sample "
                            f"{adata.obs_names[r]!r}); read it with missing='drop' or 'impute' (--missing drop/impute) "
                            "for NaN, and remove infinite values from the file")
        detected = decide_value_kind(ev)
        if cfg.input_kind == "auto" and negative_counts(ev):
            r, c = extra["first_negative"]
            n_neg = round(ev["fraction_negative"] * adata.n_obs * adata.n_vars)
            raise UserError(negative_counts_message(src, source, ev, f"{n_neg} value(s), e.g. gene "
                                                    f"{adata.var_names[c]!r} in sample {adata.obs_names[r]!r}"))
        counts_layer = backed_layer(adata, _keys.COUNTS_LAYER) if cfg.layer is None else None
        if cfg.input_kind == "auto" and detected == "zscore" and counts_layer is not None:  # as in memory
            ev_c, extra_c = evidence(counts_layer, chunk_size)
            if "first_bad" not in extra_c and decide_value_kind(ev_c) == "counts":
                log.warning("%sprepare: X holds %s (%s), not expression on a usable scale; using layers['counts'] "
                            "(raw counts) instead", src, VALUE_KINDS[detected], _describe(ev))
                M, source, ev, extra, detected = counts_layer, "layers['counts']", ev_c, extra_c, "counts"
        if cfg.input_kind == "auto" and detected == "zscore":  # in memory: refused too (no counts layer)
            raise Unsupported(f"{src}{source} holds {VALUE_KINDS[detected]} ({_describe(ev)}) and the file has no "
                              "layers['counts'] of raw counts: give the raw counts, or the values these were computed "
                              "from")
        if cfg.input_kind == "auto" and detected == "linear_negative":
            raise UserError(_unusable_message(adata, src, source, detected, ev, []))
        if ev["min"] < 0 and cfg.input_kind in ("counts", "linear"):
            r, c = extra["first_negative"]
            raise UserError(f"{src}input_kind={cfg.input_kind!r} but {source} holds negative values (e.g. gene "
                            f"{adata.var_names[c]!r} in sample {adata.obs_names[r]!r}; minimum {_fmt(ev['min'])}); "
                            "use input_kind='log' (--input-kind log) for already-transformed data")
        counts_in = cfg.input_kind == "counts" or (cfg.input_kind == "auto" and detected in ("counts", "estimated_counts"))
        why = supports(cfg, "counts" if counts_in else "log")
        if why:
            raise Unsupported(f"prepare --backed cannot use {why}; prepare in memory (without --backed)")
        kind, transform = _decide(cfg.input_kind, detected, ev, adata, src, source)
        ev = {k: float(v) for k, v in ev.items()}
        keep = np.ones(adata.n_obs, dtype=bool)
        if kind == "counts":
            totals = extra["rounded_totals"] if transform.startswith("round") else extra["totals"]
            keep = _samples_with_counts(totals, adata, src)
        T = _Transform(kind, transform, keep, cfg.target_sum)
        n_kept = int(keep.sum())
        scaling = resolve_scaling(cfg.scaling, kind, src)
        stats = gene_stats(M, T, chunk_size, moments=scaling == "zscore")
        det, lo, hi, mom = (*stats, None)[:4]
        eligible, flavor = _eligible(det, lo, hi, kind, cfg, adata.var_names, src)
        used = eligible.copy()
        if flavor != "none" and cfg.n_top_genes and eligible.sum() > cfg.n_top_genes:
            codes, n_batches = np.zeros(n_kept, dtype=np.int64), 1
            if cfg.batch_key is not None:
                col = adata.obs[cfg.batch_key].astype(str).to_numpy()[keep]
                levels, codes = np.unique(col, return_inverse=True)
                n_batches = len(levels)
            hv = seurat_v3(M, T.counts, T.kept, eligible, codes, n_batches, cfg.n_top_genes, chunk=chunk_size,
                           src=src)
            used[np.flatnonzero(eligible)] = hv
            log.info("prepare: %d highly variable genes (%s%s) of %d", int(used.sum()), flavor,
                     f", within each batch of {cfg.batch_key!r}" if cfg.batch_key else "", int(eligible.sum()))
        else:
            log.info("prepare: using all %d genes that vary", int(used.sum()))
        offset, scale = scaling_from_stats(scaling, lo[used], hi[used], mom.mean[used] if mom else None,
                                           mom.var[used] if mom else None)
        obs = adata.obs[keep] if not keep.all() else adata.obs
        var = adata.var.copy()
        var[_keys.HIGHLY_VARIABLE] = used
        var[_keys.OFFSET] = np.nan
        var[_keys.SCALE] = np.nan
        var.loc[used, _keys.OFFSET] = offset
        var.loc[used, _keys.SCALE] = scale
        uns = dict(adata.uns)
        uns.setdefault(_keys.READ, {"path": str(path), "format": "h5ad", "orientation": "samples_by_genes",
                                        "orientation_reason": "h5ad files store samples × genes"})
        uns[PREP_KEY] = {
            "params": {**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "scaling": scaling},  # as resolved
            "scaling_auto": cfg.scaling == "auto",  # as in memory (genodae.pp.prepare)
            "input_kind": kind, "value_kind": detected, "transform": transform, "source": source, "evidence": ev,
            "n_genes_used": int(used.sum()), "version": __version__,
        }
        from anndata import AnnData

        from .io._write import _write_h5ad

        skeleton = AnnData(obs=obs, var=var, uns=uns, obsm={k: _rows_of(v, keep) for k, v in adata.obsm.items()},
                           varm=dict(adata.varm))
        in_file = adata.file._file
        layer_names = list(in_file["layers"].keys()) if "layers" in in_file else []
        matrices = 1 + (kind == "counts") + len([n for n in layer_names if not (n == _keys.COUNTS_LAYER and kind == "counts")])
        per_entry = 8 if (sp.issparse(M) or hasattr(M, "group")) else 4  # float32 values (+ int32 indices)
        _check_free_space(output, matrices * _n_stored(M) * per_entry)
        with atomic_path(output) as tmp, _naming(tmp, output):
            _write_h5ad(skeleton, tmp, shown_as=output)  # obs, var, uns … made storable as in memory; then the matrices, by chunks
            with h5py.File(tmp, "r+") as f:
                _write_rows(f, "X", M, T, chunk_size)
                if "layers" not in f:
                    write_elem(f, "layers", {})
                if kind == "counts":
                    _write_rows(f["layers"], _keys.COUNTS_LAYER, M, T.counts, chunk_size)
                for name in layer_names:
                    if name == _keys.COUNTS_LAYER and kind == "counts":
                        continue  # replaced by the counts prepared from X (or from the layer prepared)
                    _write_rows(f["layers"], name, backed_layer(adata, name),
                                lambda B, s: B[keep[s : s + B.shape[0]]] if not keep.all() else B, chunk_size)
        for name in ("obsp", "raw"):
            if name in in_file and len(in_file[name]):
                log.warning("%sprepare --backed: %s not carried over to the prepared file", src, name)
    finally:
        adata.file.close()
    log.info("prepare: %d samples × %d genes, %d used by the model (%s scaling) in %.1fs, in chunks of %d rows; "
             "wrote %s", n_kept, adata.n_vars, int(used.sum()), scaling, time.perf_counter() - t0, chunk_size,
             output)
