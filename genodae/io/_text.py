"""Low-level access to (optionally gzipped) text files: opening, the first lines, the field
separator and decimal mark, the header fields, and ``pandas.read_csv`` with its failures turned into
:class:`~genodae.errors.UserError`. Used by the table, GCT, 10x mtx, ``.cls`` and sheet readers.

Every text file is read as ``utf-8-sig``: a UTF-8 byte-order mark (Excel's "CSV UTF-8" export) is
dropped as if absent, never glued to the first name."""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ._common import _GZIP_ERRORS

TEXT_ENCODING = "utf-8-sig"  # UTF-8 that drops a leading byte-order mark (Excel exports)

# names a delimiter or decimal mark can be given by (the workflow sheet's options cannot hold ';' or ',')
DELIMITER_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "space": " ", "pipe": "|"}
DECIMAL_NAMES = {"point": ".", "dot": ".", "period": ".", "comma": ","}
_DECIMAL_COMMA = re.compile(r'"?-?\d+,\d+"?')


def _open_text(path: Path):
    path = Path(path)
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding=TEXT_ENCODING, newline="")
    return open(path, encoding=TEXT_ENCODING, newline="")


def _strip_bom(text: str) -> str:
    """``text`` without a leading UTF-8 byte-order mark (for names read by other means)."""
    return text[1:] if text.startswith("\ufeff") else text


def _parse_delimiter(value: str | None) -> str | None:
    """A delimiter given as a character or a name (comma, semicolon, tab, space, pipe)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UserError(f"delimiter={value!r} is not valid: give one character (',', ';', '\\t', '|') or "
                        "a name (comma, semicolon, tab, space, pipe).")
    value = DELIMITER_NAMES.get(value.lower(), value)
    if len(value) != 1 or value in "\"'\n\r" or value.isalnum() or value == ".":
        raise UserError(f"delimiter={value!r} is not valid: give one character (',', ';', '\\t', '|') or "
                        "a name (comma, semicolon, tab, space, pipe).")
    return value


def _parse_decimal(value: str | None) -> str | None:
    """A decimal mark given as '.'/',' or a name (point, comma)."""
    if value is None:
        return None
    out = DECIMAL_NAMES.get(str(value).lower(), value)
    if out not in (".", ","):
        raise UserError(f"decimal={value!r} is not valid: give '.' (point) or ',' (comma).")
    return out


_EXCEL_EXTS = (".xlsx", ".xlsm", ".xls", ".ods")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _excel_error(path: Path, what: str) -> UserError:
    return UserError(
        f"{path} is {what}, which genodae does not read: save the sheet as CSV or TSV (in Excel: File > Save As > "
        "CSV UTF-8) and give that file."
    )


def _binary_content_error(path: Path) -> UserError | None:
    """A UserError saying what a file that should be text really is, from its first bytes (gzip, bzip2, xz,
    zstd, HDF5, an Excel workbook, a zip archive), or None when its start says nothing."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    name = Path(path).name
    compressed = {b"\x1f\x8b": ("gzip", ".gz"), b"BZh": ("bzip2", ".bz2"), b"\xfd7zXZ\x00": ("xz", ".xz"),
                  b"\x28\xb5\x2f\xfd": ("zstd", ".zst")}
    for magic, (kind, ext) in compressed.items():
        if head.startswith(magic):
            if name.lower().endswith(ext):
                return None  # named as it is: the reader of that compression reports any damage
            fix = f"rename it to {name}{ext}" if kind == "gzip" else f"decompress it (it could be named {name}{ext})"
            return UserError(f"{path} is {kind}-compressed, but its name does not end in {ext}: {fix}.")
    if head.startswith(HDF5_MAGIC):
        return UserError(f"{path} is an HDF5 file (.h5ad, .loom or a 10x .h5), not a text table: give it the "
                         "extension of what it holds.")
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return _excel_error(path, "an Excel 97-2003 workbook (.xls)")
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if any(n.startswith("xl/") for n in names):
            return _excel_error(path, "an Excel workbook (.xlsx)")
        if "content.xml" in names and "mimetype" in names:  # OpenDocument (LibreOffice Calc)
            return _excel_error(path, "an OpenDocument spreadsheet (.ods)")
        return UserError(f"{path} is a zip archive, not a text table: unzip it and give the table inside.")
    return None


def _undecodable(path: Path, err: UnicodeDecodeError) -> UserError:
    return _binary_content_error(path) or UserError(
        f"{path} is not a UTF-8 text table (binary or another encoding; {err.reason} at byte {err.start}). "
        "Check the file and its extension."
    )


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
        raise _undecodable(path, err) from err


def _holds_text(path: Path) -> bool:
    """Whether the file's first 4 KiB are UTF-8 text without NUL bytes (no spreadsheet, archive, gzip or HDF5 file
    starts so)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if not head or b"\0" in head or head.startswith(b"\x1f\x8b"):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at 4 KiB is still text
        return e.start >= len(head) - 3
    return True


def _gzip_error(path: Path, err: Exception) -> UserError:
    if _holds_text(path):  # a plain text table under a .gz name
        name = Path(path).name
        return UserError(f"{path} is not gzip-compressed but plain text: rename it without .gz "
                         f"({name[:-3] if name.lower().endswith('.gz') else name}).")
    return UserError(
        f"{path} is a corrupt or truncated gzip file ({type(err).__name__}: {err}). "
        "Re-download or re-compress it (`gzip -t` checks a file)."
    )


def _sniff_sep(first_line: str, default: str) -> str:
    """The field separator from the header line: the extension's, unless the line has none of it and
    has tabs, commas or semicolons (European Excel CSV) instead."""
    tabs, commas, semis = first_line.count("\t"), first_line.count(","), first_line.count(";")
    if default == "," and tabs and not commas:
        return "\t"
    if default == "\t" and commas and not tabs:
        return ","
    if default in (",", "\t") and semis and not tabs and not commas:
        return ";"
    return default


def _sniff_decimal(lines: list[str], sep: str) -> str:
    """',' when a ';'-separated table writes its numbers with decimal commas (``1,5``), else '.'."""
    if sep != ";":
        return "."
    for line in lines[1:]:
        fields = line.split(";")[1:]
        if any(_DECIMAL_COMMA.fullmatch(f.strip()) for f in fields):
            return ","
    return "."


def _delimiter_advice(sep: str) -> str:
    shown = {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space", "|": "pipe"}.get(sep, repr(sep))
    return (f"{shown} was used; give the right one with --delimiter on the command line (comma, semicolon, "
            "tab, pipe), delimiter= in genodae.read, or delimiter=NAME in the workflow sheet's options")


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` with its failures turned into UserErrors naming the file."""
    kwargs.setdefault("encoding", TEXT_ENCODING)
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as err:
        raise UserError(f"{path} is empty (no header, no data): re-create or re-download it.") from err
    except pd.errors.ParserError as err:
        msg = str(err).strip().splitlines()[-1]
        sep = kwargs.get("sep", ",")
        raise UserError(
            f"{path} is not a well-formed table ({msg}): check that every row has the same number of fields "
            f"and the delimiter ({_delimiter_advice(sep)})."
        ) from err
    except _GZIP_ERRORS as err:
        raise _gzip_error(path, err) from err
    except UnicodeDecodeError as err:
        raise _undecodable(path, err) from err


def _header_fields(line: str, sep: str) -> list[str]:
    return next(csv.reader([line], delimiter=sep)) if line else []


def _restore_header(df: pd.DataFrame, header: list[str]) -> None:
    """Undo pandas' renaming of duplicate column names ('a', 'a.1') so duplicates can be handled."""
    if len(header) == df.shape[1] + 1:
        df.columns = pd.Index(header[1:])
    elif len(header) == df.shape[1]:  # R-style header without a field for the row names
        df.columns = pd.Index(header)
