"""Format detection and dispatch of one file: :func:`read_file` checks its options, detects the format from the
path, calls that format's reader, and applies orientation, cleaning, ``.cls`` phenotypes and the sample sheet.
:func:`genodae.io.read` (``_dispatch``) sends one path here and several to :func:`~genodae.io.read_many`."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Literal

import anndata
from scipy import sparse

from .. import _keys
from ..errors import UserError
from ._clean import _as_float32, _handle_duplicates, _handle_nonfinite
from ._cls import _find_cls, read_cls
from ._common import _TABLE_EXTS, SUPPORTED_FORMATS, _split_ext
from ._gct import _read_gct
from ._hdf5 import _h5mu_error, _hdf5_kind, _r_object_error, _read_10x_h5, _read_h5ad, _read_loom, _read_zarr
from ._mtx import _read_mtx_source
from ._orientation import _warn_if_transposed
from ._sheets import _join_sample_sheet, _read_sample_sheet
from ._table import _is_pipeline_table, _read_text_table
from ._text import _EXCEL_EXTS, HDF5_MAGIC, _binary_content_error, _excel_error, _holds_text

logger = logging.getLogger("genodae")

Orientation = Literal["auto", "genes_by_samples", "samples_by_genes"]
ORIENTATIONS = ("auto", "genes_by_samples", "samples_by_genes")
MISSING = ("error", "drop", "impute")
DUPLICATES = ("make_unique", "error")


def read_file(
    path: str | os.PathLike,
    *,
    orientation: Orientation = "auto",
    sample_sheet: str | os.PathLike | None = None,
    cls: str | os.PathLike | None = None,
    missing: Literal["error", "drop", "impute"] = "error",
    duplicates: Literal["make_unique", "error"] = "make_unique",
    delimiter: str | None = None,
    decimal: str | None = None,
    genome: str | None = None,
) -> anndata.AnnData:
    """Read one expression-matrix file (or 10x folder) into AnnData: :func:`genodae.io.read` for one path."""
    _check_choice("orientation", orientation, ORIENTATIONS)
    _check_choice("missing", missing, MISSING)
    _check_choice("duplicates", duplicates, DUPLICATES)
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(
            f"Input file not found: {path} (relative paths start from {Path.cwd()}). Check the path in "
            "your command or config."
        )
    fmt = _detect_format(path)
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes): re-create or re-download it.")

    sheet = _read_sample_sheet(sample_sheet) if sample_sheet is not None else None
    info: dict = {"path": str(path), "format": fmt}

    with warnings.catch_warnings():  # duplicate names are reported (once) by _handle_duplicates
        warnings.filterwarnings("ignore", message=".*names are not unique", category=UserWarning)
        if genome is not None and fmt not in ("10x_h5", "10x_mtx", "h5ad", "loom", "zarr"):
            raise UserError(f"genome={genome!r} applies to 10x .h5 files and Cell Ranger matrix folders; {path} is a "
                            f"{fmt} file: leave out --genome.")
        if fmt in ("table", "gsea"):
            adata, fmt, how, why = _read_text_table(path, orientation, sheet, delimiter, decimal)
        elif fmt == "gct":
            adata, how, why = _read_gct(path, orientation)
        else:
            if fmt in ("10x_h5", "10x_mtx"):
                adata = (_read_10x_h5 if fmt == "10x_h5" else _read_mtx_source)(path, genome)
            else:
                adata = {"h5ad": _read_h5ad, "loom": _read_loom, "zarr": _read_zarr}[fmt](path)
            fmt = adata.uns.pop("_genodae_format", fmt)
            info.update(adata.uns.pop("_genodae_notes", {}))
            if genome is not None and fmt not in ("10x_h5", "10x_mtx"):
                raise UserError(f"genome={genome!r} applies to 10x .h5 files and Cell Ranger matrix folders; "
                                f"{path} is {fmt}: leave out --genome.")
            how, why = "samples_by_genes", f"{fmt} files store samples × genes"
            if orientation == "genes_by_samples":
                adata = adata.T.copy()
                how, why = "genes_by_samples", "orientation='genes_by_samples' given: transposed"
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise UserError(
            f"{path} holds an empty matrix ({adata.n_obs} samples × {adata.n_vars} genes): "
            "check that it is the right file and was written completely."
        )
    if fmt in ("h5ad", "loom", "zarr", "10x_h5", "10x_mtx") and orientation == "auto":
        _warn_if_transposed(adata, path)
    info.update(format=fmt, orientation=how, orientation_reason=why)
    logger.info("Orientation of %s: %s (%s)", path, how.replace("_", " "), why)

    adata.X = _as_float32(adata.X)
    _handle_nonfinite(adata, path, missing, info)
    _handle_duplicates(adata, path, duplicates)

    if cls is None and fmt in ("gsea", "gct"):
        cls = _find_cls(path)
    if cls is not None:
        pheno = read_cls(cls)
        if len(pheno) != adata.n_obs:
            raise UserError(
                f"{cls} has {len(pheno)} phenotype labels but {path} has {adata.n_obs} samples: "
                "use the .cls file that belongs to this expression file (one label per sample, in order)."
            )
        for col in pheno.columns:
            adata.obs[col] = pheno[col].array  # keeps the categorical dtype and its class order
        info["cls"] = str(cls)
        logger.info("Phenotypes from %s stored in obs[%s]", cls, ", ".join(map(repr, pheno.columns)))

    if sheet is not None:
        _join_sample_sheet(adata, sheet, path)
        info["sample_sheet"] = str(sheet.attrs["path"])

    adata.uns[_keys.READ] = info
    logger.info(
        "Read %s (%s): %d samples × %d genes, %s X",
        path,
        fmt,
        adata.n_obs,
        adata.n_vars,
        "sparse" if sparse.issparse(adata.X) else "dense",
    )
    return adata


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name}={value!r} is not valid: choose one of {', '.join(choices)}.")


_R_FILES = {
    ".rds": "an R object (.rds; Seurat or SingleCellExperiment)",
    ".rda": "an R workspace (.rda)",
    ".rdata": "an R workspace (.RData)",
    ".h5seurat": "an h5Seurat file (SeuratDisk)",
}


def _detect_format(path: Path) -> str:
    """The format of ``path`` from its markers: folders by their layout (read by ``_mtx``, or zarr), HDF5 files
    by their groups (h5ad, loom, 10x; h5Seurat/h5mu refused), and other files by their extension."""
    if path.is_dir():
        if (path / ".zgroup").is_file() or (path / "zarr.json").is_file():
            return "zarr"
        return "10x_mtx"
    name = path.name.lower()
    if name.endswith((".mtx", ".mtx.gz")):
        return "10x_mtx"
    ext, comp = _split_ext(path)
    if (ext in _R_FILES and not comp) or (ext, comp) == (".rds", ".gz"):
        raise _r_object_error(path, _R_FILES[ext])
    if ext == ".h5mu":
        raise _h5mu_error(path)
    if name == "quants_mat.gz":
        raise UserError(
            f"{path} is salmon alevin's binary count matrix, which genodae cannot read: re-run salmon alevin with "
            "--dumpMtx (it writes quants_mat.mtx.gz) and give its alevin/ folder."
        )
    if ext in _EXCEL_EXTS:
        if path.is_file() and _holds_text(path):  # a table saved as text under a spreadsheet's name
            raise UserError(f"{path} is named as a spreadsheet ({ext}) but holds text: rename it to end in .csv, "
                            ".tsv or .txt (the delimiter is detected) and give that file.")
        raise _excel_error(path, f"an Excel workbook ({ext})" if ext != ".ods" else "an OpenDocument spreadsheet (.ods)")
    if ext not in (".h5ad", ".loom", ".h5", ".hdf5") and path.is_file() and path.stat().st_size:
        _check_text_content(path)
    if not comp and ext in (".h5ad", ".loom") and path.stat().st_size:
        kind = _sniff_hdf5(path)
        if kind in ("10x_v3", "10x_legacy"):
            logger.info("%s is a 10x Genomics .h5 matrix with a %s extension: reading it as 10x .h5", path, ext)
            return "10x_h5"
    if not comp:
        if ext == ".h5ad":
            return "h5ad"
        if ext == ".loom":
            return "loom"
        if ext in (".h5", ".hdf5"):
            return "10x_h5"
    if comp in ("", ".gz"):
        if ext == ".gct":
            return "gct"
        if ext in _TABLE_EXTS:
            return "table"
    if _is_pipeline_table(path):
        return "table"
    shown = "".join(path.suffixes[-2:]) or "none"
    raise UserError(
        f"Cannot tell the format of {path} from its extension ({shown}). Supported: {SUPPORTED_FORMATS}. "
        "Rename the file to the right extension."
    )


_HDF5_EXTS = {"10x_v3": (".h5", "a 10x Genomics .h5 matrix"), "10x_legacy": (".h5", "a 10x Genomics .h5 matrix"),
              "h5ad": (".h5ad", "an AnnData .h5ad file"), "loom": (".loom", "a .loom file")}


def _check_text_content(path: Path) -> None:
    """Refuse a file named as a text table (or with no known extension) whose first bytes say it is something
    else: compressed without ``.gz``, HDF5 (naming the extension of what it holds), an Excel workbook, a zip."""
    with open(path, "rb") as fh:
        head = fh.read(len(HDF5_MAGIC))
    if head == HDF5_MAGIC:
        ext, what = _HDF5_EXTS.get(_sniff_hdf5(path) or "", ("", ""))
        if ext:
            raise UserError(f"{path} is {what} (HDF5), not a text table: rename it to end in {ext}.")
    err = _binary_content_error(path)
    if err is not None:
        raise err


def _sniff_hdf5(path: Path) -> str | None:
    """What an HDF5 file holds (see ``_hdf5._hdf5_kind``), or None when it cannot be opened (then its reader
    reports the damage)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return _hdf5_kind(f)
    except Exception:  # not HDF5, truncated: the format's own reader says so
        return None
