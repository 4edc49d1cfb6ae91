"""10x Genomics matrix folders: ``matrix.mtx[.gz]`` with ``features``/``genes.tsv[.gz]`` and
``barcodes.tsv[.gz]`` (a folder, or its ``matrix.mtx`` file; prefixed file names too)."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata
import pandas as pd
from scipy import sparse

from ..errors import UserError
from ._common import _GZIP_ERRORS
from ._text import _gzip_error, _read_csv

logger = logging.getLogger("genodae")


def _find_10x_files(path: Path) -> tuple[Path, Path, Path]:
    """(matrix, features, barcodes) of a 10x directory, or of the directory of a matrix.mtx file."""
    if path.is_dir():
        folder = path
        found = sorted(p for p in folder.iterdir() if p.name.endswith(("matrix.mtx", "matrix.mtx.gz")))
        if not found:
            raise UserError(
                f"{path} is a directory but not a 10x matrix directory: missing matrix.mtx(.gz). A 10x directory "
                "needs matrix.mtx(.gz), features.tsv(.gz) or genes.tsv(.gz), and barcodes.tsv(.gz)."
            )
        matrix = next((p for p in found if p.name in ("matrix.mtx.gz", "matrix.mtx")), found[0])
    else:
        folder, matrix = path.parent, path
    name = matrix.name
    prefix = name[: len(name) - len("matrix.mtx.gz" if name.endswith(".gz") else "matrix.mtx")]

    def first(*names: str) -> Path | None:
        return next((folder / n for n in names if (folder / n).is_file()), None)

    p = prefix
    features = first(f"{p}features.tsv.gz", f"{p}features.tsv", f"{p}genes.tsv.gz", f"{p}genes.tsv")
    barcodes = first(f"{p}barcodes.tsv.gz", f"{p}barcodes.tsv")
    for what, found_path in (
        ("features.tsv(.gz) or genes.tsv(.gz)", features),
        ("barcodes.tsv(.gz)", barcodes),
    ):
        if found_path is None:
            raise UserError(
                f"10x directory {folder} is missing {p}{what}: a 10x directory needs {p}matrix.mtx(.gz), "
                f"{p}features.tsv(.gz) or {p}genes.tsv(.gz), and {p}barcodes.tsv(.gz). Copy the missing file."
            )
    return matrix, features, barcodes  # type: ignore[return-value]


def _read_10x_mtx(path: Path) -> anndata.AnnData:
    matrix, features_path, barcodes_path = _find_10x_files(path)
    for p in (matrix, features_path, barcodes_path):
        if p.stat().st_size == 0:
            raise UserError(f"{p} is empty (0 bytes): re-copy the 10x directory.")
    try:
        genes_by_cells = anndata.io.read_mtx(matrix)
    except _GZIP_ERRORS as err:
        raise _gzip_error(matrix, err) from err
    except Exception as err:
        raise UserError(
            f"{matrix} is not a valid Matrix Market file ({type(err).__name__}: {' '.join(str(err).split())[:200]}): "
            "it is corrupt or truncated; re-copy it."
        ) from err
    feats = _read_csv(features_path, sep="\t", header=None, dtype=str, keep_default_na=False)
    bars = _read_csv(barcodes_path, sep="\t", header=None, dtype=str, keep_default_na=False)
    n_genes, n_cells = genes_by_cells.shape
    if len(feats) != n_genes or len(bars) != n_cells:
        raise UserError(
            f"10x directory {matrix.parent}: {matrix.name} is {n_genes} genes × {n_cells} cells but "
            f"{features_path.name} has {len(feats)} rows and {barcodes_path.name} has {len(bars)}: "
            "the files do not belong together or one is truncated."
        )
    gene_ids = feats[0].to_numpy()
    symbols = feats[1].to_numpy() if feats.shape[1] > 1 else gene_ids
    var = pd.DataFrame({"gene_ids": gene_ids}, index=pd.Index(symbols.astype(str)))
    if feats.shape[1] > 2:
        var["feature_types"] = feats[2].to_numpy()
    adata = anndata.AnnData(
        sparse.csr_matrix(genes_by_cells.X.T), obs=pd.DataFrame(index=pd.Index(bars[0].to_numpy())), var=var
    )
    if "feature_types" in var and (var["feature_types"] == "Gene Expression").any():
        gex = (var["feature_types"] == "Gene Expression").to_numpy()
        if not gex.all():
            logger.info(
                "Keeping the %d 'Gene Expression' features of %d (as scanpy's gex_only)", gex.sum(), gex.size
            )
            adata = adata[:, gex].copy()
    return adata
