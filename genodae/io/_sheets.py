"""Sample sheets: reading one (CSV/TSV, keyed by its first column, a ``sample``/``barcode``/``cell``/
``obs_names`` column, or R ``write.csv`` row names) and left-joining it into ``obs``. Keys are text
(``0001`` stays ``0001``); a byte-order mark is dropped; every column is given a type that ``.h5ad``
stores (booleans or integers with blanks become nullable ``boolean``/``Int64``, mixed types text, dates
ISO text)."""

from __future__ import annotations

import csv
import logging
import os
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd

from ..errors import UserError
from ._common import _TABLE_EXTS, _examples, _split_ext
from ._text import _EXCEL_EXTS, _excel_error, _head_lines, _read_csv, _sniff_sep

logger = logging.getLogger("genodae")

_SHEET_KEYS = ("sample", "barcode", "cell", "obs_names")


def _open_sheet(sheet_path: str | os.PathLike, what: str, n_lines: int) -> tuple[Path, str, list[str]]:
    """``(path, separator, first lines)`` of a CSV/TSV sheet (``what``: "Sample sheet", "Batches sheet"), checked:
    it exists, has a table extension (optionally .gz) and a header line."""
    path = Path(sheet_path).expanduser()
    if not path.is_file():
        raise UserError(f"{what} not found: {path}. Check the path.")
    ext, comp = _split_ext(path)
    if ext in _EXCEL_EXTS:
        raise _excel_error(path, f"{what[0].lower()}{what[1:]} in an Excel workbook ({ext})")
    if ext not in _TABLE_EXTS or comp not in ("", ".gz"):
        raise UserError(f"{what} {path} should be a .csv or .tsv/.txt table (optionally .gz).")
    lines = _head_lines(path, n_lines)
    if not lines or not lines[0].strip():
        raise UserError(f"{what} {path} is empty (no header line).")
    return path, _sniff_sep(lines[0], _TABLE_EXTS[ext]), lines


def _read_sample_sheet(sheet_path: str | os.PathLike) -> pd.DataFrame:
    path = Path(sheet_path).expanduser()
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"Sample sheet {path} is empty (0 bytes).")
    path, sep, lines = _open_sheet(path, "Sample sheet", 2)
    fields = [next(csv.reader([ln], delimiter=sep)) for ln in lines]
    if len(fields) == 2 and len(fields[1]) == len(fields[0]) + 1:
        # R's write.csv layout: the header has no name for the row-name column, which holds the keys
        sheet = _read_csv(path, sep=sep, header=None, skiprows=1, dtype={0: str}, keep_default_na=True,
                          low_memory=False)
        key = "row names"
        keys = sheet.pop(0)
        sheet.columns = [c.strip() for c in fields[0]]
    else:
        columns = list(_read_csv(path, sep=sep, nrows=0).columns)
        lower = {str(c).strip().lower(): c for c in columns}
        key = next((lower[k] for k in _SHEET_KEYS if k in lower), columns[0])
        sheet = _read_csv(path, sep=sep, dtype={key: str}, keep_default_na=True, low_memory=False)
        if sheet.empty:
            raise UserError(f"Sample sheet {path} has a header but no rows.")
        keys = sheet.pop(key)
    if keys.isna().any():
        raise UserError(
            f"Sample sheet {path}: {int(keys.isna().sum())} row(s) have no key in column {key!r}."
        )
    sheet.index = pd.Index(keys.astype(str).str.strip(), name=None)
    for col in list(sheet.columns):  # an unnamed index column that repeats the key column
        if str(col).startswith("Unnamed:") and sheet[col].astype(str).tolist() == sheet.index.tolist():
            sheet = sheet.drop(columns=col)
    if not sheet.index.is_unique:
        dup = sheet.index[sheet.index.duplicated()].unique()
        raise UserError(
            f"Sample sheet {path}: {len(dup)} duplicate key(s) in column {key!r} (e.g. {_examples(dup)}); "
            "each sample must appear once."
        )
    sheet.columns = [str(c).strip() for c in sheet.columns]
    sheet = _storable_columns(sheet)
    sheet.attrs["path"] = str(path)
    sheet.attrs["key"] = str(key)
    return sheet


def _storable_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Every column in a type ``.h5ad`` stores and that says what it holds: booleans with blanks →
    nullable ``boolean``; whole numbers with blanks → nullable ``Int64``; mixed types → text (blanks
    stay missing); dates and times → ISO text."""
    out = {}
    for col in df.columns:
        series = df[col]
        values = series.dropna()
        if pd.api.types.is_datetime64_any_dtype(series):
            out[col] = series.dt.strftime("%Y-%m-%dT%H:%M:%S").where(series.notna(), None).astype(object)
        elif pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            if (pd.api.types.is_float_dtype(series) and len(values) and series.isna().any()
                    and np.all(np.mod(values, 1) == 0) and np.abs(values).max() < 2**53):
                out[col] = series.astype("Int64")
            else:
                out[col] = series
        elif len(values) and all(isinstance(v, (bool, np.bool_)) for v in values):
            out[col] = series.astype("boolean")
        elif len(values) and not all(isinstance(v, str) for v in values):
            out[col] = series.map(lambda v: v if v is None or (isinstance(v, float) and np.isnan(v))
                                  else (v.isoformat() if hasattr(v, "isoformat") else str(v)))
        else:
            out[col] = series
    return pd.DataFrame(out, index=df.index)


def _join_sample_sheet(adata: anndata.AnnData, sheet: pd.DataFrame, path: Path) -> None:
    sheet_path = sheet.attrs["path"]
    matched = adata.obs_names.isin(sheet.index)
    n_match = int(matched.sum())
    if n_match == 0:
        raise UserError(
            f"Sample sheet {sheet_path}: none of its {len(sheet)} keys (column {sheet.attrs['key']!r}, e.g. "
            f"{_examples(sheet.index)}) match the {adata.n_obs} sample names of {path} (e.g. "
            f"{_examples(adata.obs_names)}). Key the sheet by the sample names in its first column, or in a "
            "column named sample, barcode, cell or obs_names."
        )
    if n_match < adata.n_obs:
        msg = (
            f"Sample sheet {sheet_path}: {adata.n_obs - n_match} of {adata.n_obs} samples have no metadata "
            f"(e.g. {_examples(adata.obs_names[~matched])}); their columns are NaN."
        )
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
    unused = len(sheet) - n_match
    if unused:
        logger.info("Sample sheet %s: %d row(s) match no sample and were ignored", sheet_path, unused)
    joined = sheet.reindex(adata.obs_names)
    for col in joined.columns:
        if col in adata.obs.columns:
            logger.warning("Sample sheet %s: column %r replaces the existing obs column", sheet_path, col)
        adata.obs[str(col)] = joined[col].array
    logger.info(
        "Joined %d column(s) from %s into obs (%d of %d samples matched)",
        joined.shape[1],
        sheet_path,
        n_match,
        adata.n_obs,
    )
