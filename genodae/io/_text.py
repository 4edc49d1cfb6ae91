"""Low-level access to (optionally gzipped) text files: opening, the first lines, the field
separator, the header fields, and ``pandas.read_csv`` with its failures turned into
:class:`~genodae.errors.UserError`. Used by the table, GCT, 10x mtx, ``.cls`` and sheet readers."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ._common import _GZIP_ERRORS


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _head_lines(path: Path, n: int) -> list[str]:
    """The first ``n`` lines of a (possibly gzipped) text file, with clear errors."""
    try:
        with _open_text(path) as fh:
            lines = []
            for line in fh:
                lines.append(line.rstrip("\r\n"))
                if len(lines) >= n:
                    break
            return lines
    except _GZIP_ERRORS as err:
        raise _gzip_error(path, err) from err
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path} is not a UTF-8 text table (binary or another encoding; {err.reason} at byte {err.start}). "
            "Check the file and its extension."
        ) from err


def _gzip_error(path: Path, err: Exception) -> UserError:
    return UserError(
        f"{path} is a corrupt or truncated gzip file ({type(err).__name__}: {err}). "
        "Re-download or re-compress it (`gzip -t` checks a file)."
    )


def _sniff_sep(first_line: str, default: str) -> str:
    tabs, commas = first_line.count("\t"), first_line.count(",")
    if default == "," and tabs and not commas:
        return "\t"
    if default == "\t" and commas and not tabs:
        return ","
    return default


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` with its failures turned into UserErrors naming the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as err:
        raise UserError(f"{path} is empty (no header, no data): re-create or re-download it.") from err
    except pd.errors.ParserError as err:
        msg = str(err).strip().splitlines()[-1]
        raise UserError(
            f"{path} is not a well-formed table ({msg}). Check the delimiter (pass delimiter=) and that "
            "every row has the same number of fields."
        ) from err
    except _GZIP_ERRORS as err:
        raise _gzip_error(path, err) from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not a UTF-8 text table ({err.reason}). Check the file.") from err


def _header_fields(line: str, sep: str) -> list[str]:
    return next(csv.reader([line], delimiter=sep)) if line else []


def _restore_header(df: pd.DataFrame, header: list[str]) -> None:
    """Undo pandas' renaming of duplicate column names ('a', 'a.1') so duplicates can be handled."""
    if len(header) == df.shape[1] + 1:
        df.columns = pd.Index(header[1:])
    elif len(header) == df.shape[1]:  # R-style header without a field for the row names
        df.columns = pd.Index(header)
