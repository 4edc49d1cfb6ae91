"""Text tables: CSV/TSV/``.txt`` (optionally gzipped, either orientation) and GSEA expression ``.txt``
files (``NAME``/``DESCRIPTION`` header, genes × samples). Integer count tables that are mostly zeros
become CSR."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import UserError
from ._clean import _numeric_values
from ._common import _TABLE_EXTS, _split_ext
from ._orientation import _decide_orientation
from ._text import _head_lines, _header_fields, _read_csv, _restore_header, _sniff_sep


def _read_text_table(
    path: Path, orientation: str, sheet: pd.DataFrame | None, delimiter: str | None
) -> tuple[anndata.AnnData, str, str, str]:
    lines = _head_lines(path, 2)
    if not lines or not lines[0].strip():
        raise UserError(f"{path} is empty (no header line): re-create or re-download it.")
    first = lines[0]
    ext, _ = _split_ext(path)
    sep = delimiter if delimiter is not None else _sniff_sep(first, _TABLE_EXTS[ext])
    header = _header_fields(first, sep)
    if len(lines) < 2 or not "".join(lines[1:]).strip():
        raise UserError(f"{path} has a header but no data rows: check that it was written completely.")
    is_gsea = (
        len(header) >= 2
        and header[0].strip().upper() == "NAME"
        and header[1].strip().upper() == "DESCRIPTION"
    )

    df = _read_csv(path, sep=sep, index_col=0, header=0, low_memory=False)
    _restore_header(df, header)
    if df.shape[0] == 0:
        raise UserError(f"{path} has a header but no data rows: check that it was written completely.")
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)

    if is_gsea:
        description = df.iloc[:, 0].astype(str).to_numpy()
        values = _numeric_values(df.iloc[:, 1:], path)
        if values.shape[1] == 0:
            raise UserError(f"{path} (GSEA format) has no sample columns after NAME and DESCRIPTION.")
        if orientation == "samples_by_genes":
            raise UserError(
                f"{path} is a GSEA expression file (NAME/DESCRIPTION header), which is genes × samples by "
                "definition: leave orientation='auto'."
            )
        var = pd.DataFrame({"description": description}, index=df.index.copy())
        adata = anndata.AnnData(values.T, obs=pd.DataFrame(index=df.columns[1:].copy()), var=var)
        return adata, "gsea", "genes_by_samples", "GSEA expression file (NAME/DESCRIPTION header)"

    if df.shape[1] == 0:
        raise UserError(
            f"{path} has only one column (identifiers) and no values: check the delimiter "
            f"({sep!r} was used; pass delimiter=)."
        )
    values = _numeric_values(df, path)
    if orientation == "auto":
        how, why = _decide_orientation(df.index, df.columns, sheet)
    else:
        how, why = orientation, f"orientation={orientation!r} given"
    if how == "genes_by_samples":
        adata = anndata.AnnData(
            values.T, obs=pd.DataFrame(index=df.columns), var=pd.DataFrame(index=df.index)
        )
    else:
        adata = anndata.AnnData(values, obs=pd.DataFrame(index=df.index), var=pd.DataFrame(index=df.columns))
    adata.X = _maybe_sparse_counts(adata.X)
    return adata, "table", how, why


def _maybe_sparse_counts(X: np.ndarray):
    """Integer-valued tables with more than half zeros become CSR (counts tables are mostly zeros)."""
    if not np.isfinite(X).all() or X.size == 0:
        return X
    if (X == 0).mean() > 0.5 and np.array_equal(X, np.round(X)):
        return sparse.csr_matrix(X.astype(np.float32))
    return X
