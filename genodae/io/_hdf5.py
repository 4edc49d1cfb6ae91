"""The HDF5 family: ``.h5ad`` (also opened backed, :func:`read_backed`), ``.loom`` and 10x Genomics
``.h5`` matrices, with damaged or mislabelled files reported as :class:`~genodae.errors.UserError`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anndata

from ..errors import UserError
from ._common import SUPPORTED_FORMATS

logger = logging.getLogger("genodae")


def _read_h5ad(path: Path) -> anndata.AnnData:
    _check_hdf5(path, "h5ad")
    try:
        adata = anndata.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for damaged files
        raise _corrupt(path, "h5ad", err) from err
    if adata.X is None:
        raise UserError(f"{path} has no X matrix (only layers/metadata): store the expression values in X.")
    return adata


def read_backed(path: str | os.PathLike) -> anndata.AnnData:
    """Open an .h5ad backed (``mode="r"``): X stays on disk and is read in pieces (data larger than RAM).

    Only the file's integrity is checked here; values were checked when the file was prepared.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Input file not found: {path}. Check the path in your command or config.")
    if path.suffix.lower() != ".h5ad":
        raise UserError(f"{path}: backed reading needs an .h5ad file (write one with genodae prepare).")
    _check_hdf5(path, "h5ad")
    try:
        return anndata.read_h5ad(path, backed="r")
    except Exception as err:  # h5py/anndata raise many types for damaged files
        raise _corrupt(path, "h5ad", err) from err


def _check_hdf5(path: Path, what: str) -> None:
    import h5py

    try:
        ok = h5py.is_hdf5(path)
    except OSError as err:
        raise _corrupt(path, what, err) from err
    if not ok:
        raise UserError(
            f"{path} is not an HDF5 file, so not a valid .{what}: it is corrupt or truncated, or has the "
            "wrong extension. Re-copy or re-export it."
        )


def _corrupt(path: Path, what: str, err: Exception) -> UserError:
    detail = " ".join(str(err).split())[:200]
    return UserError(
        f"{path} is corrupt or truncated: could not read it as .{what} ({type(err).__name__}: {detail}). "
        "Re-copy or re-export the file."
    )


def _read_loom(path: Path) -> anndata.AnnData:
    import h5py

    _check_hdf5(path, "loom")
    try:
        with h5py.File(path, "r") as f:
            col_keys = set(f["col_attrs"].keys()) if "col_attrs" in f else set()
            row_keys = set(f["row_attrs"].keys()) if "row_attrs" in f else set()
        obs_key = next(
            (k for k in ("CellID", "obs_names", "cell_names", "Cell", "cell") if k in col_keys), "CellID"
        )
        var_key = next((k for k in ("Gene", "var_names", "gene_names", "Accession") if k in row_keys), "Gene")
        adata = anndata.io.read_loom(
            path, sparse=True, cleanup=False, X_name="", obs_names=obs_key, var_names=var_key
        )
    except Exception as err:
        raise _corrupt(path, "loom", err) from err
    return adata


def _read_10x_h5(path: Path) -> anndata.AnnData:
    import h5py

    _check_hdf5(path, "h5")
    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            legacy = any(isinstance(f[k], h5py.Group) and "barcodes" in f[k] for k in keys)
    except Exception as err:
        raise _corrupt(path, "h5", err) from err
    if "matrix" not in keys and not legacy:
        if {"X", "obs", "var"} <= keys:
            logger.info("%s is an AnnData file with an .h5 extension: reading it as .h5ad", path)
            adata = _read_h5ad(path)
            adata.uns["_genodae_format"] = "h5ad"
            return adata
        raise UserError(
            f"{path} is an HDF5 file but not a 10x Genomics .h5 matrix (no 'matrix' group; found "
            f"{', '.join(sorted(keys)) or 'nothing'}). Supported: {SUPPORTED_FORMATS}."
        )
    import scanpy as sc

    try:
        adata = sc.read_10x_h5(path)
    except Exception as err:
        raise _corrupt(path, "h5 (10x)", err) from err
    return adata
