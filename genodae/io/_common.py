"""Shared by every module of :mod:`genodae.io`: the supported formats and table extensions, the
errors that mean a damaged gzip file, file-name extensions and the short lists of examples that error
messages show. Imports nothing else from the package."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

SUPPORTED_FORMATS = (
    ".h5ad; .loom; 10x directory (matrix.mtx[.gz] + features.tsv[.gz] or genes.tsv[.gz] + "
    "barcodes.tsv[.gz]) or its matrix.mtx[.gz]; 10x .h5; .csv/.tsv/.txt tables (optionally .gz); "
    ".gct; GSEA .txt (NAME/DESCRIPTION header)"
)
_TABLE_EXTS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _split_ext(path: Path) -> tuple[str, str]:
    """Return (format extension, compression extension) of a file name, lower-case."""
    suffixes = [s.lower() for s in path.suffixes]
    comp = suffixes[-1] if suffixes and suffixes[-1] in _COMPRESSED else ""
    rest = suffixes[:-1] if comp else suffixes
    return (rest[-1] if rest else ""), comp


def _examples(names, n: int = 3) -> str:
    names = [str(x) for x in list(names)[:n]]
    return ", ".join(repr(x) for x in names)
