"""Writing outputs atomically: :func:`atomic_path` (a temporary name in the target folder, renamed
into place on success), :func:`write_h5ad` and :func:`write_table` (CSV/TSV, optionally reproducibly
gzipped).

:func:`write_h5ad` first makes obs/var columns and uns values storable (what a sample sheet or a user's
code can bring and anndata's writer refuses with a traceback: booleans or integers with blanks, mixed
types, dates, tuples, non-string names, sets ...), logged once; what still cannot be written is a
one-line :class:`~genodae.errors.UserError`, and no file is left behind."""

from __future__ import annotations

import errno
import gzip
import io
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import anndata
import numpy as np
import pandas as pd

from .._files import default_mode
from ..errors import StorageFull, UserError
from ._common import _COMPRESSED, _TABLE_EXTS, _split_ext

logger = logging.getLogger("genodae")


def _final_suffix(name: str) -> str:
    suffixes = Path(name).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSED:
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name sits in the same folder (so the rename is atomic on one filesystem) and
    keeps the extension (so writers that look at it, e.g. for ``.gz``, still work). On any
    exception, including KeyboardInterrupt, the temporary file or folder is removed and ``path`` is
    left as it was. Missing parent folders are created. The block may also write a folder (e.g. a
    saved model); an existing folder at ``path`` is then replaced. A file never replaces a folder, nor
    a folder a file: that is a :class:`~genodae.errors.UserError`, and ``path`` is left as it was.

    Parameters
    ----------
    path
        The final output path.

    Examples
    --------
    >>> with atomic_path("results/embedding.npy") as tmp:  # doctest: +SKIP
    ...     np.save(tmp, embedding)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _final_suffix(path.name)
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{base}.tmp-{uuid.uuid4().hex[:10]}{suffix}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        raise FileNotFoundError(f"nothing was written to the temporary file {tmp} for {path}")
    if tmp.is_file() and path.is_dir():
        _remove(tmp)
        raise UserError(f"Cannot write {path}: it is an existing folder. Give a file name, or remove the folder.")
    if tmp.is_dir() and path.exists() and not path.is_dir():
        _remove(tmp)
        raise UserError(
            f"Cannot write the folder {path}: a file of that name exists. Give another name, or remove the file."
        )
    default_mode(tmp)  # temp writers may create 0600 files: give the umask's permissions
    if tmp.is_dir() and path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:10]}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _check_file_target(path: str | os.PathLike) -> None:
    """Fail before any work when the output file's path is an existing folder."""
    if Path(path).is_dir():
        raise UserError(f"Cannot write {path}: it is an existing folder. Give a file name, or remove the folder.")


def write_h5ad(
    adata: anndata.AnnData, path: str | os.PathLike, *, compression: Literal["gzip", "lzf"] | None = None
) -> None:
    """Write ``adata`` to ``path`` atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    adata
        The AnnData to save.
    path
        Output ``.h5ad`` path; parent folders are created.
    compression
        HDF5 compression of the datasets (``None``, ``"gzip"`` or ``"lzf"``).

    Examples
    --------
    >>> write_h5ad(adata, "results/pbmc/embedded.h5ad")  # doctest: +SKIP
    """
    _write_h5ad(adata, path, compression=compression)
    logger.info("Wrote %s (%d × %d)", path, adata.n_obs, adata.n_vars)


def _write_h5ad(adata: anndata.AnnData, path: str | os.PathLike, *, compression: Literal["gzip", "lzf"] | None = None,
                shown_as: str | os.PathLike | None = None) -> None:
    """:func:`write_h5ad` without its "Wrote" line, for a file that is only a first part (the chunked prepare
    writes obs/var/uns this way, then the matrices); ``shown_as`` = the name its messages give the file."""
    _check_file_target(path)
    name = shown_as or path
    notes: list[str] = []
    obs = _storable_frame(adata.obs, "obs", notes)
    var = _storable_frame(adata.var, "var", notes)
    uns = _storable(dict(adata.uns), "uns", notes)
    if notes:
        shown = "; ".join(notes[:6]) + (f"; and {len(notes) - 6} more" if len(notes) > 6 else "")
        logger.warning("%s: converted for .h5ad (anndata cannot store them as they were): %s", name, shown)
        if adata.is_view:
            adata = adata.copy()
    saved = (adata.obs, adata.var, adata.uns) if notes else None
    try:
        if saved:  # the converted copies are written; the caller's object is left as it was
            adata.obs, adata.var, adata.uns = obs, var, uns
        with atomic_path(path) as tmp:
            try:
                adata.write_h5ad(tmp, compression=compression)
            except OSError as e:
                if full := storage_full(e, name):
                    raise full from None
                raise UserError(f"Cannot write {name}: {e.strerror or e}; check the free space and permissions of its "
                                "folder") from None
            except Exception as e:  # anndata's writer: whatever the conversions above did not cover
                if full := storage_full(e, name):
                    raise full from None
                raise UserError(f"Cannot write {name}: anndata cannot store {_writer_where(e)} "
                                f"({_first_line(e)}); convert it to text or numbers, or remove it") from None
    finally:
        if saved:
            adata.obs, adata.var, adata.uns = saved


_STORAGE_MESSAGES = ("no space left on device", "file write failed", "file too large", "disk quota exceeded",
                     "can't close file", "unable to flush")


def storage_full(e: BaseException, name) -> StorageFull | None:
    """The :class:`~genodae.errors.StorageFull` naming ``name`` when ``e`` is really the disk (full, quota, file-size
    limit; h5py raises these as RuntimeError/ValueError as well as OSError), else None."""
    text = str(e).lower()
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or any(m in text for m in _STORAGE_MESSAGES):
        return StorageFull(f"Cannot write {name}: the disk refused the write (full, over a quota or a file-size "
                           "limit); free space or write it elsewhere")
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _writer_where(e: BaseException) -> str:
    """The element anndata's writer stopped at (its notes say "... writing key 'x' of ... to /obs")."""
    import re

    for note in [*getattr(e, "__notes__", []), str(e)]:
        m = re.search(r"key '([^']*)' of .* to (/\S*)", note)
        if m:
            return f"{m.group(2).strip('/') or 'the file'} key {m.group(1)!r}"
    return "a value"


def _is_missing(v) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and np.isnan(v)


def _storable_column(col: pd.Series) -> tuple[pd.Series, str | None]:
    """``col`` in a type anndata writes (the same column when it already is), and what was done."""
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories
        if cats.dtype == object and not all(isinstance(c, str) for c in cats):
            return col.cat.rename_categories([str(c) for c in cats]), "categories of mixed types → text"
        if not (cats.dtype.kind in "biufO" or isinstance(cats.dtype, pd.StringDtype)):
            return col.astype(str).where(col.notna()).astype("category"), f"{cats.dtype} categories → text"
        return col, None
    if dtype.kind in "mM" or isinstance(dtype, (pd.DatetimeTZDtype, pd.PeriodDtype)) or \
            (isinstance(dtype, pd.IntervalDtype)):
        text = col.astype(str).where(col.notna())
        return text.astype("category"), f"{dtype} → text"
    if not pd.api.types.is_object_dtype(dtype):
        return col, None
    values = [v for v in col.to_numpy() if not _is_missing(v)]
    has_missing = len(values) < len(col)
    if not values:
        return pd.Series(np.nan, index=col.index, dtype=float), "empty → missing numbers"
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return col.astype("boolean"), "booleans" + (" with blanks" if has_missing else "") + " → nullable boolean"
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
        return col.astype("Int64"), "integers with blanks → nullable integer"
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
           for v in values):
        return col.astype(float), "numbers → float"
    if all(isinstance(v, str) for v in values):
        return col, None  # anndata writes text with blanks as a categorical
    text = col.map(lambda v: v if _is_missing(v) else _text(v))
    kinds = sorted({type(v).__name__ for v in values})
    return text.where(col.map(lambda v: not _is_missing(v))).astype("category"), f"{'/'.join(kinds)} → text"


def _text(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _storable_frame(df: pd.DataFrame, where: str, notes: list[str]) -> pd.DataFrame:
    """A copy of ``df`` with storable column names and columns (``df`` itself when nothing changes)."""
    names = [c if isinstance(c, str) else str(c) for c in df.columns]
    changed = {}
    for i, c in enumerate(df.columns):
        if not isinstance(c, str):
            notes.append(f"{where} column name {c!r} ({type(c).__name__}) → text")
        new, what = _storable_column(df.iloc[:, i])
        if what:
            notes.append(f"{where}[{names[i]!r}]: {what}")
            changed[i] = new
    if len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{where} has several columns named {dup!r} (as text); rename them so that each name is "
                        "unique before writing the .h5ad")
    if not changed and names == list(df.columns):
        return df
    out = pd.DataFrame({n: changed.get(i, df.iloc[:, i]) for i, n in enumerate(names)}, index=df.index)
    return out


def _storable(value, where: str, notes: list[str]):
    """``value`` (a uns entry) in types anndata writes; what is converted is added to ``notes``."""
    import scipy.sparse as sp

    if value is None or isinstance(value, (str, bool, int, float, np.bool_, np.integer, np.floating, bytes)):
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = k if isinstance(k, str) else str(k)
            if "/" in key:
                key = key.replace("/", "_")
            if key != k:
                notes.append(f"{where} key {k!r} → {key!r}")
            if key in out:
                raise UserError(f"{where} has several keys named {key!r} (as text); rename them before writing the "
                                ".h5ad")
            out[key] = _storable(v, f"{where}[{key!r}]", notes)
        return out
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufcU" or (value.dtype.kind == "S"):
            return value
        if value.dtype.kind in "mM":
            notes.append(f"{where}: dates → text")
            return value.astype(str)
        if value.dtype == object and all(isinstance(v, str) for v in value.ravel()):
            return value
        notes.append(f"{where}: array of mixed objects → text")
        return np.vectorize(_text, otypes=[object])(value) if value.size else value.astype(str)
    if sp.issparse(value) or isinstance(value, anndata.AnnData):
        return value
    if isinstance(value, pd.DataFrame):
        return _storable_frame(value, where, notes)
    if isinstance(value, pd.Series):
        notes.append(f"{where}: Series → table")
        return _storable_frame(value.to_frame(name=str(value.name or "value")), where, notes)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        if not isinstance(value, list):
            notes.append(f"{where}: {type(value).__name__} → list")
        if items and all(isinstance(v, dict) for v in items):
            notes.append(f"{where}: list of dicts → dict keyed '0', '1', ...")
            return {str(i): _storable(v, f"{where}[{i}]", notes) for i, v in enumerate(items)}
        try:
            arr = np.asarray(items)
        except ValueError:  # ragged
            arr = np.asarray([None])
        if arr.dtype.kind in "biufU" and arr.ndim >= 1:
            return arr
        if not items:
            return np.zeros(0)
        notes.append(f"{where}: list of mixed values → text")
        return np.asarray([_text(v) for v in items], dtype=object)
    if isinstance(value, (pd.Timestamp, np.datetime64)) or hasattr(value, "isoformat"):
        notes.append(f"{where}: {type(value).__name__} → text")
        return _text(value) if not isinstance(value, np.datetime64) else str(value)
    notes.append(f"{where}: {type(value).__name__} → text")
    return _text(value)


def write_table(df: pd.DataFrame, path: str | os.PathLike, **to_csv_kwargs) -> None:
    """Write a DataFrame as CSV/TSV atomically; the separator follows the extension.

    ``.csv`` uses commas, ``.tsv``, ``.tab`` and ``.txt`` tabs; a ``.gz`` suffix gzips the file
    (with a fixed timestamp, so equal tables give equal bytes).

    Parameters
    ----------
    df
        Table to write.
    path
        Output path, e.g. ``results/x/signatures.tsv`` or ``….csv.gz``.
    **to_csv_kwargs
        Passed on to :meth:`pandas.DataFrame.to_csv` (``sep`` overrides the extension's).

    Examples
    --------
    >>> write_table(signatures, "results/pbmc/signatures.tsv")  # doctest: +SKIP
    """
    path = Path(path)
    ext, comp = _split_ext(path)
    if ext not in _TABLE_EXTS:
        raise UserError(
            f"Cannot write a table to {path}: use a .csv, .tsv, .tab or .txt extension (optionally .gz)."
        )
    _check_file_target(path)
    to_csv_kwargs.setdefault("sep", _TABLE_EXTS[ext])
    with atomic_path(path) as tmp:
        if comp == ".gz" and "compression" not in to_csv_kwargs:
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                with io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
                    df.to_csv(text, **to_csv_kwargs)
        else:
            df.to_csv(tmp, **to_csv_kwargs)
    logger.info("Wrote %s (%d rows)", path, len(df))
