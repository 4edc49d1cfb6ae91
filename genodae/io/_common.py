"""Shared by every module of :mod:`genodae.io`: the supported formats and table extensions, the
errors that mean a damaged gzip file, file-name extensions and the short lists of examples that error
messages show. Imports nothing else from the package."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

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


_ENSEMBL_VERSIONED = r"^ENS[A-Z]*\d{6,}\.\d+$"  # an Ensembl ID with its version suffix: ENSG00000141510.5
_ENSEMBL_PLAIN = r"^ENS[A-Z]*\d{6,}$"
STRIP_VERSIONS = "adata.var_names = adata.var_names.str.replace(r'\\.\\d+$', '', regex=True)"


def _versioned_ensembl(names) -> bool | None:
    """True when most names are Ensembl IDs with a version suffix, False when most are Ensembl IDs without one,
    None otherwise."""
    names = pd.Index([str(x) for x in names])
    if len(names) == 0:
        return None
    if names.str.match(_ENSEMBL_VERSIONED).mean() > 0.5:
        return True
    if names.str.match(_ENSEMBL_PLAIN).mean() > 0.5:
        return False
    return None


def _ensembl_version_mismatch(a, b) -> int:
    """1 when the names ``a`` are versioned Ensembl IDs and ``b`` the same IDs without versions, -1 for the
    reverse, 0 otherwise (the IDs must match once the suffixes are stripped)."""
    va, vb = _versioned_ensembl(a), _versioned_ensembl(b)
    if va is None or vb is None or va == vb:
        return 0
    strip = pd.Index([str(x) for x in (a if va else b)]).str.replace(r"\.\d+$", "", regex=True)
    other = pd.Index([str(x) for x in (b if va else a)])
    if not strip.isin(other).any():
        return 0
    return 1 if va else -1


def _strip_versions(names) -> pd.Index:
    """The names with the version suffix of Ensembl IDs removed (``ENSG00000141510.5`` → ``ENSG00000141510``);
    other names unchanged."""
    names = pd.Index([str(x) for x in names])
    versioned = names.str.match(_ENSEMBL_VERSIONED)
    return pd.Index(np.where(versioned, names.str.replace(r"\.\d+$", "", regex=True), names))
