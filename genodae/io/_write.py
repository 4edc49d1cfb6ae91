"""Writing outputs atomically: :func:`atomic_path` (a temporary name in the target folder, renamed
into place on success), :func:`write_h5ad` and :func:`write_table` (CSV/TSV, optionally reproducibly
gzipped)."""

from __future__ import annotations

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
import pandas as pd

from .._files import default_mode
from ..errors import UserError
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
    _check_file_target(path)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression=compression)
    logger.info("Wrote %s (%d × %d)", path, adata.n_obs, adata.n_vars)


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
