"""Cleaning of values and names after reading: a table's cells as numbers (naming the first
non-numeric one), ``X`` as float32 (CSR when sparse), NaN handling (``missing="error"/"drop"/"impute"``,
infinities always an error) and duplicate sample or gene names (``duplicates=``)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import UserError
from ._common import _examples

logger = logging.getLogger("genodae")


def _numeric_values(df: pd.DataFrame, path: Path) -> np.ndarray:
    """The table's values as float64, or a UserError naming the first non-numeric cell."""
    dtypes = df.dtypes
    is_num = np.array(
        [pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in dtypes], dtype=bool
    )
    if is_num.all():
        return df.to_numpy(dtype=np.float64)
    out = np.empty(df.shape, dtype=np.float64)
    if is_num.any():
        out[:, is_num] = df.iloc[:, np.flatnonzero(is_num)].to_numpy(dtype=np.float64)
    bad_at: tuple[int, int, object] | None = None
    for j in np.flatnonzero(~is_num):
        series = df.iloc[:, j]
        if pd.api.types.is_bool_dtype(series):
            bad = np.ones(len(series), dtype=bool)
        else:
            coerced = pd.to_numeric(series, errors="coerce")
            bad = (coerced.isna() & series.notna()).to_numpy()
            if not bad.any():  # e.g. numbers quoted as text
                out[:, j] = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
                continue
        i = int(np.argmax(bad))
        if bad_at is None or i < bad_at[0]:
            bad_at = (i, int(j), series.iloc[i])
    if bad_at is not None:
        i, j, value = bad_at
        raise UserError(
            f"{path}: non-numeric value {value!r} at row {df.index[i]!r} (data row {i + 1}), column "
            f"{df.columns[j]!r}. Expression values must be numbers (empty or NA for missing); remove "
            "annotation columns other than the first (identifier) column."
        )
    return out


def _as_float32(X):
    if sparse.issparse(X):
        X = X.tocsr() if X.format != "csr" else X
        return X.astype(np.float32, copy=False) if X.dtype != np.float32 else X
    try:  # C order: tables are transposed views, and downstream code expects row-major cells
        return np.ascontiguousarray(X, dtype=np.float32)
    except Exception as err:
        raise UserError(
            f"X of type {type(X).__name__} is not supported: store a numpy array or scipy sparse matrix."
        ) from err


def _handle_nonfinite(adata: anndata.AnnData, path: Path, missing: str, info: dict) -> None:
    X = adata.X
    values = X.data if sparse.issparse(X) else X
    if np.isfinite(values).all():
        return

    def where(mask_values: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        if sparse.issparse(X):
            row_of_entry = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
            rows, cols = row_of_entry[mask_values], X.indices[mask_values]
        else:
            rows, cols = np.nonzero(mask_values)
        return len(rows), rows, cols

    n_inf, rows, cols = where(np.isinf(values))
    if n_inf:
        raise UserError(
            f"{path}: {n_inf} infinite value(s) (inf/-inf), e.g. gene {adata.var_names[cols[0]]!r} in sample "
            f"{adata.obs_names[rows[0]]!r}. Fix them in the file (genodae does not impute infinities)."
        )
    n_nan, rows, cols = where(np.isnan(values))
    # a sample with no value at all was not measured: dropped (as a gene with no value is), never imputed
    empty = np.bincount(rows, minlength=adata.n_obs) == adata.n_vars
    if empty.all():
        raise UserError(f"{path}: every value is missing (NaN): check that it is the right file and was written "
                        "completely.")
    if empty.any() and missing != "error":
        msg = (f"{path}: dropped {int(empty.sum())} sample(s) with no values at all (every gene NaN: "
               f"{_examples(adata.obs_names[empty])}) (missing={missing!r})")
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
        adata._inplace_subset_obs(~empty)
        _handle_nonfinite(adata, path, missing, info)  # the NaN left in the other samples, if any
        info["missing"] = {"n_nan": int(n_nan), "action": missing,
                           "n_genes_dropped": info.get("missing", {}).get("n_genes_dropped", 0),
                           "n_samples_dropped": int(empty.sum())}
        return
    genes = np.unique(cols)
    gene_names = adata.var_names[genes]
    where_txt = (
        f"in {len(genes)} gene(s) ({_examples(gene_names)}) and {len(np.unique(rows))} sample(s) "
        f"({_examples(adata.obs_names[np.unique(rows)])})"
    )
    if empty.any():
        where_txt += (f", {int(empty.sum())} of them with no values at all ({_examples(adata.obs_names[empty])}; "
                      "dropped by missing='drop' or 'impute')")
    if missing == "error":
        raise UserError(
            f"{path}: {n_nan} missing value(s) (NaN) {where_txt}. Fill them in the file, or pass missing='drop' "
            "(--missing drop) to drop those genes or missing='impute' (--missing impute) to fill each with that "
            "gene's mean across samples."
        )
    keep = np.ones(adata.n_vars, dtype=bool)
    if missing == "drop":
        keep[genes] = False
        action = f"dropped {len(genes)} gene(s) with missing values ({_examples(gene_names)})"
    else:
        # counts stay counts: a mean imputed into an integer table is rounded, so prepare still sees counts
        finite = X.data[np.isfinite(X.data)] if sparse.issparse(X) else X[np.isfinite(X)]
        integer_counts = finite.size > 0 and finite.min() >= 0 and bool(np.all(np.mod(finite, 1) == 0))
        if sparse.issparse(X):
            nan_data = np.isnan(X.data)
            X.data[nan_data] = 0.0
            sums = np.asarray(X.sum(axis=0)).ravel()
            n_nan_per_gene = np.bincount(cols, minlength=adata.n_vars)
            n_valid = adata.n_obs - n_nan_per_gene
            with np.errstate(invalid="ignore", divide="ignore"):
                means = (sums / n_valid).astype(np.float32)
            if integer_counts:
                means = np.rint(means)
            X.data[nan_data] = means[X.indices[nan_data]]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN genes
                means = np.nanmean(X, axis=0)
            if integer_counts:
                means = np.rint(means)
            X[rows, cols] = means[cols]
        all_nan = ~np.isfinite(means)
        keep[all_nan] = False
        action = (f"imputed {n_nan} missing value(s) {where_txt} with each gene's mean across samples"
                  + (" (rounded: the table holds counts)" if integer_counts else ""))
        if all_nan.any():
            action += f"; dropped {int(all_nan.sum())} gene(s) with no values at all"
    if not keep.any():
        raise UserError(f"{path}: every gene has missing values, nothing is left after missing={missing!r}.")
    if not keep.all():
        adata._inplace_subset_var(keep)
    logger.warning("%s: %s (missing=%r)", path, action, missing)
    info["missing"] = {"n_nan": int(n_nan), "action": missing, "n_genes_dropped": int((~keep).sum())}


def _handle_duplicates(adata: anndata.AnnData, path: Path, duplicates: str) -> None:
    for axis, names in (("sample", adata.obs_names), ("gene", adata.var_names)):
        if names.is_unique:
            continue
        dup = names[names.duplicated()].unique()
        what = f"{path}: {len(dup)} duplicate {axis} name(s) (e.g. {_examples(dup)})"
        if duplicates == "error":
            raise UserError(
                f"{what}. Make the names unique in the file, or pass duplicates='make_unique' (--duplicates "
                "make_unique, the default) to append -1, -2…"
            )
        msg = f"{what}: made unique by appending -1, -2…"
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
        if axis == "sample":
            adata.obs_names_make_unique()
        else:
            adata.var_names_make_unique()
