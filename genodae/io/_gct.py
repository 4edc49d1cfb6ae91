"""GCT files (#1.2 and #1.3, genes × samples, with their row and column metadata)."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pandas as pd

from ..errors import UserError
from ._clean import _numeric_values
from ._text import _head_lines, _header_fields, _read_csv, _restore_header


def _read_gct(path: Path, orientation: str) -> tuple[anndata.AnnData, str, str]:
    lines = _head_lines(path, 3)
    version = lines[0].strip().split("\t")[0] if lines else ""
    if version not in ("#1.2", "#1.3"):
        if not lines:
            raise UserError(f"{path} is empty: re-create or re-download it.")
        raise UserError(
            f"{path} is not a GCT file: its first line is {lines[0][:40]!r}, expected '#1.2' or '#1.3'. "
            "Rename it to .tsv/.txt if it is a plain table."
        )
    if len(lines) < 3:
        raise UserError(f"{path} (GCT) ends before its header line: the file is truncated.")
    if orientation == "samples_by_genes":
        raise UserError(
            f"{path} is a GCT file, which is genes × samples by definition: leave orientation='auto' (--orientation auto, the default)."
        )
    try:
        dims = [int(x) for x in lines[1].split()]
    except ValueError as err:
        raise UserError(f"{path} (GCT): line 2 should hold the dimensions, found {lines[1][:60]!r}.") from err
    n_rowmeta, n_colmeta = (dims[2], dims[3]) if version == "#1.3" and len(dims) >= 4 else (1, 0)
    header = _header_fields(lines[2], "\t")
    df = _read_csv(path, sep="\t", skiprows=2, header=0, index_col=0, dtype=str, keep_default_na=False)
    _restore_header(df, header)
    if df.shape[0] <= n_colmeta:
        raise UserError(f"{path} (GCT) has a header but no data rows: the file is truncated.")
    sample_names = df.columns[n_rowmeta:]
    rowmeta = df.iloc[n_colmeta:, :n_rowmeta]
    colmeta = df.iloc[:n_colmeta, n_rowmeta:]
    data = df.iloc[n_colmeta:, n_rowmeta:].replace({"": np.nan, "NA": np.nan, "NaN": np.nan, "nan": np.nan})
    values = _numeric_values(data.copy(), path)
    if len(dims) >= 2 and (dims[0], dims[1]) != values.shape:
        raise UserError(
            f"{path} (GCT) declares {dims[0]} rows × {dims[1]} samples on line 2 but holds "
            f"{values.shape[0]} × {values.shape[1]}: the file is truncated or was edited; fix line 2 or re-export it."
        )
    var = pd.DataFrame(index=pd.Index(data.index.astype(str)))
    for col in rowmeta.columns:
        key = "description" if str(col).lower() == "description" else str(col)
        var[key] = rowmeta[col].to_numpy()
    obs = pd.DataFrame(index=pd.Index(sample_names.astype(str)))
    for name, row in colmeta.iterrows():
        obs[str(name)] = row.to_numpy()
    adata = anndata.AnnData(values.T, obs=obs, var=var)
    return adata, "genes_by_samples", f"GCT {version[1:]} files are genes × samples"
