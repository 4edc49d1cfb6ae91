"""Several files into one AnnData: :func:`read_many` (a list of files, a batch column, the genes
common to all) and :func:`read_batches_sheet` (a table of files, batch names, sample sheets and per-batch
metadata)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata
import numpy as np
import pandas as pd

from .. import _keys
from ..errors import UserError
from ._common import (
    _TABLE_EXTS,
    STRIP_VERSIONS,
    _ensembl_version_mismatch,
    _examples,
    _split_ext,
    _strip_versions,
    _versioned_ensembl,
)
from ._read import read_file
from ._sheets import _open_sheet
from ._text import _read_csv

logger = logging.getLogger("genodae")

_BATCH_SHEET_COLUMNS = ("path", "batch", "obs")


def read_many(
    paths: Sequence[str | os.PathLike],
    *,
    batch_key: str = "batch",
    batch_names: Sequence[str] | None = None,
    sample_sheets: Sequence[str | os.PathLike | None] | None = None,
    **read_kwargs,
) -> anndata.AnnData:
    """Read several expression files (samples, plates, technologies) into one AnnData with a batch column.

    Every file is read by :func:`read` (any supported format, the same ``read_kwargs``), its own
    sample sheet joined first (barcodes often repeat between plates, so each plate's sheet is
    keyed by its own barcodes). Then:

    - genes: only those present in every file are kept (matched by name, in the first file's
      order); how many each file lost is logged. No gene in common is an error that shows example
      names of each file (e.g. Ensembl IDs in one, symbols in another).
    - samples: ``obs[batch_key]`` (categorical, levels in input order) names each file's batch.
      When any sample name occurs in more than one file, every name gets the suffix
      ``-<batch>`` (as ``anndata.concat(..., index_unique="-")``) and this is logged; otherwise
      names are kept.
    - ``obs`` columns of all files are kept (missing values where a file lacks one); layers and
      ``obsm`` entries only when every file has them; ``var`` columns only when equal in all files.
    - ``uns["genodae_read"]`` records the files, their batch names, formats and sample sheets.

    The files must be of one kind: all raw integer counts, or all not (log-scale, normalised).

    Parameters
    ----------
    paths
        Two or more files or 10x directories, in order. They are never modified.
    batch_key
        Name of the ``obs`` column of batch names. An input that already has this column with
        other values is refused (choose another ``batch_key``).
    batch_names
        One name per file; several files may share a batch. By default the file names without
        folders and extensions (``plate1.csv.gz`` → ``plate1``), made unique with ``-1``, ``-2``…
        when two coincide.
    sample_sheets
        One sample sheet (or None) per file, joined into that file's ``obs`` as in :func:`read`.
    **read_kwargs
        Passed to :func:`read` for every file: ``orientation``, ``missing``, ``duplicates``,
        ``delimiter`` (``cls`` files are found next to GSEA/GCT files; an explicit one belongs to one
        file and is refused here).

    Returns
    -------
    One AnnData, all files' samples × the genes common to all files.

    Raises
    ------
    UserError
        Fewer than two paths; a missing file; no gene in common; counts mixed with non-counts;
        an existing ``batch_key`` column with other values; mismatched ``batch_names`` or
        ``sample_sheets``; or any problem :func:`read` reports.

    See Also
    --------
    read_batches_sheet : the same from a table of files, batch names, sample sheets and per-batch metadata.

    Examples
    --------
    >>> import genodae
    >>> adata = genodae.read_many(  # doctest: +SKIP
    ...     ["p1.count.csv.gz", "p2.count.csv.gz"], batch_key="plate",
    ...     sample_sheets=["p1.metadata.csv.gz", "p2.metadata.csv.gz"],
    ... )
    >>> adata.obs["plate"].cat.categories  # doctest: +SKIP
    Index(['p1.count', 'p2.count'], dtype='object')
    """
    return _read_many(paths, batch_key=batch_key, batch_names=batch_names, sample_sheets=sample_sheets,
                      read_kwargs=read_kwargs)


def read_batches_sheet(
    sheet: str | os.PathLike, *, batch_key: str = "batch", **read_kwargs
) -> anndata.AnnData:
    """Read the files listed in a batches sheet into one AnnData, as :func:`read_many` does.

    The sheet is a CSV/TSV table (optionally ``.gz``), one row per file, with the columns

    - ``path`` (required): the file, relative to the sheet's folder (or absolute);
    - ``batch`` (optional): its batch name (default, and where empty: the file name without
      extensions); several files may share a batch;
    - ``obs`` (optional): that file's sample sheet, relative to the sheet's folder;
    - any further columns: per-batch metadata (technology, donor, date…), set in ``obs`` for every
      sample of that row's file.

    Parameters
    ----------
    sheet
        Path of the batches sheet.
    batch_key
        Name of the ``obs`` column of batch names (the sheet's ``batch`` column goes there).
    **read_kwargs
        Passed to :func:`read` for every file.

    Returns
    -------
    One AnnData (see :func:`read_many`); ``uns["genodae_read"]["batches_sheet"]`` names the sheet.

    Examples
    --------
    ``batches.csv``::

        path,batch,obs,technology
        p1.count.csv.gz,plate1,p1.metadata.csv.gz,CEL-seq2
        p2.count.csv.gz,plate2,p2.metadata.csv.gz,CEL-seq2
        tenx.h5ad,10x,,10x Chromium

    >>> adata = genodae.io.read_batches_sheet("batches.csv", batch_key="plate")  # doctest: +SKIP
    """
    paths, names, sheets, metadata = _parse_batches_sheet(sheet, batch_key=batch_key)
    for name in dict.fromkeys(n for n in names if names.count(n) > 1):
        shared = [p.name for p, n in zip(paths, names, strict=True) if n == name]
        logger.warning("Batches sheet %s: %s share the batch %r: their samples get one label in obs[%r]; give each "
                       "file its own batch name if they are separate batches", sheet, ", ".join(shared), name, batch_key)
    return _read_many(paths, batch_key=batch_key, batch_names=names, sample_sheets=sheets,
                      read_kwargs=read_kwargs, metadata=metadata, batches_sheet=Path(sheet).expanduser())


# names that pipelines give every sample's folders and files alike: a batch is named after the first folder above them
_GENERIC_NAMES = {
    "outs", "filtered_feature_bc_matrix", "raw_feature_bc_matrix", "filtered_gene_bc_matrices",
    "raw_gene_bc_matrices", "sample_filtered_feature_bc_matrix", "count", "counts_unfiltered", "counts_filtered",
    "cells_x_genes", "solo.out", "gene", "genefull", "filtered", "raw", "alevin", "af_quant", "quants_mat", "matrix",
}


def _batch_name_from_path(path: Path) -> str:
    """``dir/plate1.count.csv.gz`` → ``plate1.count``; pipeline outputs whose folder and file names are the same for
    every sample (``sampleA/outs/filtered_feature_bc_matrix.h5``, ``run1/Solo.out/Gene/filtered``, ``…/matrix.mtx.gz``)
    → the first folder above them that is not such a name (``sampleA``, ``run1``)."""
    parts = list(path.parts)
    while parts:
        last = Path(parts[-1])
        ext, comp = _split_ext(last)
        cut = len(ext) + len(comp)
        name = last.name
        if ext in (*_TABLE_EXTS, ".gct", ".h5ad", ".loom", ".h5", ".hdf5", ".mtx") and cut < len(name):
            name = name[: len(name) - cut]
        if name.lower() not in _GENERIC_NAMES or len(parts) == 1:
            return name or str(path)
        parts.pop()
    return str(path)


def _unique_names(names: list[str]) -> list[str]:
    """Append ``-1``, ``-2``… to repeats (the first keeps its name), avoiding names already used."""
    seen = set(names)
    counts: dict[str, int] = {}
    out = []
    for name in names:
        if name not in counts:
            counts[name] = 0
            out.append(name)
            continue
        while True:
            counts[name] += 1
            candidate = f"{name}-{counts[name]}"
            if candidate not in seen:
                break
        seen.add(candidate)
        out.append(candidate)
    return out


def _per_file(value, n: int, what: str, paths: list[Path]) -> list:
    if value is None:
        return [None] * n
    if isinstance(value, (str, os.PathLike)) or not isinstance(value, Sequence):
        raise UserError(
            f"{what} must be a list with one entry per file ({n} files: {_examples(p.name for p in paths)}), "
            f"not a single {type(value).__name__}."
        )
    if len(value) != n:
        raise UserError(
            f"{len(value)} {what} for {n} files ({_examples([p.name for p in paths], n)}): give one per file, "
            "in the same order (None where a file has none)."
        )
    return list(value)


def _read_many(
    paths,
    *,
    batch_key: str,
    batch_names,
    sample_sheets,
    read_kwargs: dict,
    metadata: list[dict] | None = None,
    batches_sheet: Path | None = None,
) -> anndata.AnnData:
    if isinstance(paths, (str, os.PathLike)) or not isinstance(paths, Sequence):
        raise UserError(
            f"read_many needs a list of paths, not a single {type(paths).__name__} ({paths!r}); "
            "for one file use genodae.read."
        )
    paths = [Path(p).expanduser() for p in paths]
    if len(paths) < 2:
        shown = f" ({paths[0]})" if paths else ""
        raise UserError(
            f"read_many needs at least 2 files, got {len(paths)}{shown}: read one file with genodae.read."
        )
    if not isinstance(batch_key, str) or not batch_key.strip():
        raise UserError(f"batch_key must be the name of an obs column, not {batch_key!r}.")
    for key in ("sample_sheet", "cls"):
        if read_kwargs.get(key) is not None:
            hint = "sample_sheets=[…] (one per file, None where a file has none)" if key == "sample_sheet" else (
                "a .cls file next to each GSEA/GCT file (found automatically)")
            raise UserError(f"read_many: {key}= belongs to one file; with several files use {hint}.")
        read_kwargs.pop(key, None)
    absent = [p for p in paths if not p.exists()]
    if absent:
        raise UserError(
            f"Input file(s) not found: {', '.join(map(str, absent))} (relative paths start from {Path.cwd()}). "
            "Check the paths."
        )
    seen: dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:
            raise UserError(f"{p} is given twice (also as {seen[p.resolve()]}): every cell would be read twice; give "
                            "each file once")
        seen[p.resolve()] = p
    n = len(paths)
    names = _per_file(batch_names, n, "batch names", paths)
    if batch_names is None:
        names = _unique_names([_batch_name_from_path(p) for p in paths])
    else:
        bad = [x for x in names if not isinstance(x, str) or not x.strip()]
        if bad:
            raise UserError(f"batch names must be non-empty strings, not {bad[0]!r}.")
    sheets = _per_file(sample_sheets, n, "sample sheets", paths)
    metadata = metadata or [{} for _ in paths]

    adatas = [read_file(p, sample_sheet=sh, **read_kwargs) for p, sh in zip(paths, sheets, strict=True)]
    prepared = [p for a, p in zip(adatas, paths, strict=True) if _keys.PREP in a.uns]
    if prepared:  # concatenating would drop uns and read the prepared values as raw data
        raise UserError(f"{prepared[0]} is already prepared (uns[{_keys.PREP!r}]); give the raw files to combine "
                        "them, or embed prepared files one at a time")
    _check_same_kind(adatas, paths)
    for a, p, name, meta in zip(adatas, paths, names, metadata, strict=True):
        if batch_key in a.obs.columns:
            values = a.obs[batch_key].astype(str)
            other = values[values != name].unique()
            if len(other):
                raise UserError(
                    f"{p} already has an obs column {batch_key!r} with other values ({_examples(other)}) than its "
                    f"batch name {name!r}: choose another batch key (batch_key=, --batch-key), or name the batches "
                    "after that column (batch_names=, or a batch column in a batches sheet)."
                )
        a.obs[batch_key] = name
        for col, value in meta.items():
            if col in a.obs.columns and col != batch_key:
                logger.warning("%s: obs column %r replaced by the batches sheet's per-batch value %r", p, col, value)
            a.obs[col] = value

    common = _common_genes(adatas, paths)
    obs_names = pd.Index(np.concatenate([a.obs_names.to_numpy(dtype=object) for a in adatas]))
    suffixed = not obs_names.is_unique
    if suffixed:
        clash = obs_names[obs_names.duplicated()].unique()
        logger.info(
            "%d sample name(s) occur in more than one file (e.g. %s): every name gets the suffix -<batch>",
            len(clash), _examples(clash),
        )
        for a, name in zip(adatas, names, strict=True):
            a.obs_names = [f"{x}-{name}" for x in a.obs_names]
    formats = [str(a.uns.get(_keys.READ, {}).get("format", "")) for a in adatas]
    _drop_unshared(adatas, "layers")
    _drop_unshared(adatas, "obsm")
    for a in adatas:
        for attr in ("obsp", "varp", "uns"):
            getattr(a, attr).clear()
    subsets = [a if a.var_names.equals(common) else a[:, common] for a in adatas]
    with warnings.catch_warnings():  # the obs names are handled above; concat's own advice is noise here
        warnings.filterwarnings("ignore", message=".*not unique", category=UserWarning)
        out = anndata.concat(subsets, join="outer", merge="same")
    if not out.obs_names.is_unique:  # names that only clash once suffixed (e.g. 'a-b' in c and 'a' in b-c)
        out.obs_names_make_unique()
        logger.warning("Some sample names still repeated after the -<batch> suffix: made unique with -1, -2…")
    levels = list(dict.fromkeys(names))
    out.obs[batch_key] = pd.Categorical(out.obs[batch_key].astype(str), categories=levels)
    for col in {c for meta in metadata for c in meta}:
        if col != batch_key and out.obs[col].dtype == object:
            out.obs[col] = pd.Categorical(out.obs[col])
    info: dict = {
        "path": ", ".join(map(str, paths)),
        "format": "several",
        "files": [str(p) for p in paths],
        "batch_key": batch_key,
        "batches": list(names),
        "formats": formats,
        "sample_sheets": ["" if sh is None else str(sh) for sh in sheets],
        "n_obs": [int(a.n_obs) for a in adatas],
        "n_vars": [int(a.n_vars) for a in adatas],
        "n_vars_common": int(len(common)),
        "obs_names_suffixed": bool(suffixed),
    }
    if batches_sheet is not None:
        info["batches_sheet"] = str(batches_sheet)
    out.uns[_keys.READ] = info
    logger.info(
        "Read %d files into %d samples × %d genes; batches in obs[%r]: %s",
        n, out.n_obs, out.n_vars, batch_key, ", ".join(levels),
    )
    return out


def _check_same_kind(adatas: list[anndata.AnnData], paths: list[Path]) -> None:
    from .._values import _first_bad, is_counts, negative_counts, negative_counts_message, value_evidence

    kinds = [bool(is_counts(a.X)) for a in adatas]
    if len(set(kinds)) > 1:
        for a, p, k in zip(adatas, paths, kinds, strict=True):
            ev = value_evidence(a.X) if not k else None
            if ev is not None and negative_counts(ev):
                raise UserError(negative_counts_message(f"{p}: ", "X", ev, _first_bad(a, lambda v: v < 0),
                                                        log_option=False))
        counts = [p.name for p, k in zip(paths, kinds, strict=True) if k]
        other = [p.name for p, k in zip(paths, kinds, strict=True) if not k]
        raise UserError(
            f"The files hold different kinds of values: raw integer counts in {', '.join(counts)}, but "
            f"non-integer (log-scale or normalised) values in {', '.join(other)}. Combine files of one kind "
            "(e.g. the raw counts of every file)."
        )


def _common_genes(adatas: list[anndata.AnnData], paths: list[Path]) -> pd.Index:
    common = adatas[0].var_names
    for a in adatas[1:]:
        common = common[common.isin(a.var_names)]
    # Ensembl IDs whose version suffixes differ between files (.5 in one, .6 or none in another) are the same genes
    stripped = _strip_versions(adatas[0].var_names)
    for a in adatas[1:]:
        stripped = stripped[stripped.isin(_strip_versions(a.var_names))]
    lost_to_versions = len(stripped) - len(common)
    versioned_vs_plain = len(common) == 0 and any(
        _ensembl_version_mismatch(adatas[0].var_names, a.var_names) for a in adatas[1:])
    if len(common) == 0 and lost_to_versions > 0 and not versioned_vs_plain:
        shown = "; ".join(f"{p} ({_examples(a.var_names)})" for p, a in zip(paths, adatas, strict=True))
        raise UserError(
            f"No gene is in every file: {shown}. The files' Ensembl IDs differ only in their version suffixes (.N; "
            f"{lost_to_versions} genes would match without them): remove the suffixes from every file's gene IDs (in "
            f"Python, after genodae.read: {STRIP_VERSIONS}) so that every file uses the same IDs."
        )
    if len(common) and lost_to_versions > max(10, 0.05 * len(common)):
        msg = (f"{lost_to_versions} genes are left out only because their Ensembl version suffixes (.N) differ "
               f"between the files (e.g. {_examples(stripped[~stripped.isin(_strip_versions(common))])}): remove the "
               f"suffixes from every file's gene IDs (in Python, after genodae.read: {STRIP_VERSIONS}) to keep them")
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=4)
    if len(common) == 0:
        shown = "; ".join(f"{p} ({_examples(a.var_names)})" for p, a in zip(paths, adatas, strict=True))
        if versioned_vs_plain:
            versioned = [p.name for p, a in zip(paths, adatas, strict=True) if _versioned_ensembl(a.var_names)]
            plain = [p.name for p, a in zip(paths, adatas, strict=True) if _versioned_ensembl(a.var_names) is False]
            raise UserError(
                f"No gene is in every file: {shown}. The Ensembl IDs in {', '.join(versioned)} carry version "
                f"suffixes (.N) and those in {', '.join(plain)} do not: remove the suffixes from the gene IDs in "
                f"{', '.join(versioned)} (in Python, after genodae.read: {STRIP_VERSIONS}) so that every file uses "
                "the same IDs."
            )
        raise UserError(
            f"No gene is in every file: {shown}. Use the same kind of gene identifiers in every file "
            "(e.g. all Ensembl IDs or all symbols)."
        )
    for p, a in zip(paths, adatas, strict=True):
        dropped = a.n_vars - len(common)
        if dropped:
            lost = a.var_names[~a.var_names.isin(common)]
            logger.info("%s: %d of %d genes dropped (not in every file; e.g. %s)", p, dropped, a.n_vars,
                        _examples(lost))
    logger.info("%d genes are in every file", len(common))
    return common


def _drop_unshared(adatas: list[anndata.AnnData], attr: str) -> None:
    shared = set.intersection(*(set(getattr(a, attr).keys()) for a in adatas))
    for a in adatas:
        for key in [k for k in getattr(a, attr).keys() if k not in shared]:
            logger.info("%s[%r] is not in every file: left out", attr, key)
            del getattr(a, attr)[key]


def _parse_batches_sheet(
    sheet: str | os.PathLike, *, batch_key: str = "batch"
) -> tuple[list[Path], list[str], list[Path | None], list[dict]]:
    """(paths, batch names, sample sheets, per-file metadata) of a batches sheet."""
    path, sep, _ = _open_sheet(sheet, "Batches sheet", 1)
    df = _read_csv(path, sep=sep, dtype=str, keep_default_na=True)
    df.columns = [str(c).strip() for c in df.columns]
    lower = {c.lower(): c for c in df.columns}
    if "path" not in lower:
        raise UserError(
            f"Batches sheet {path} has no 'path' column (columns: {', '.join(df.columns)}): add one with each "
            "file's path, relative to the sheet's folder; optional columns: batch, obs (that file's sample "
            "sheet), and per-batch metadata."
        )
    if df.empty:
        raise UserError(f"Batches sheet {path} has a header but no rows.")
    df = df.rename(columns={lower[k]: k for k in _BATCH_SHEET_COLUMNS if k in lower})
    if df["path"].isna().any():
        rows = [int(i) + 2 for i in np.flatnonzero(df["path"].isna())]
        raise UserError(f"Batches sheet {path}: line(s) {', '.join(map(str, rows))} have no path.")
    base = path.parent
    folder = "the current folder" if str(base) == "." else str(base)

    def resolve(value: str) -> Path:
        p = Path(value.strip()).expanduser()
        return p if p.is_absolute() else base / p

    paths = [resolve(v) for v in df["path"]]
    for i, (value, p) in enumerate(zip(df["path"], paths, strict=True)):
        if p.exists() and p.resolve() == path.resolve():
            raise UserError(
                f"Batches sheet {path}, line {i + 2}: path {value.strip()!r} is the batches sheet itself (paths are "
                f"relative to the sheet's folder, {folder}): list the expression files there."
            )
    absent = [(i + 2, p) for i, p in enumerate(paths) if not p.exists()]
    if absent:
        shown = ", ".join(f"{p} (line {line})" for line, p in absent[:5]) + (" …" if len(absent) > 5 else "")
        raise UserError(
            f"Input file(s) not found: {shown} of batches sheet {path}: paths are relative to the sheet's folder "
            f"({folder}); check them."
        )
    defaults = _unique_names([_batch_name_from_path(p) for p in paths])
    if "batch" in df.columns:
        names = [d if pd.isna(b) or not str(b).strip() else str(b).strip()
                 for b, d in zip(df["batch"], defaults, strict=True)]
    else:
        names = defaults
    sheets = [None if pd.isna(v) or not str(v).strip() else resolve(str(v)) for v in df["obs"]] \
        if "obs" in df.columns else [None] * len(paths)
    extra = [c for c in df.columns if c not in _BATCH_SHEET_COLUMNS]
    if batch_key in extra:
        raise UserError(
            f"Batches sheet {path}: column {batch_key!r} is the batch key; put the batch names in a column "
            "named 'batch' (they are stored in obs[batch_key])."
        )
    columns = {}
    for c in extra:
        try:
            columns[c] = pd.to_numeric(df[c]).tolist()  # numbers stay numbers
        except (ValueError, TypeError):
            columns[c] = df[c].tolist()
    metadata = [{c: columns[c][i] for c in extra} for i in range(len(df))]
    logger.info("Batches sheet %s: %d file(s), per-batch columns: %s", path, len(paths), ", ".join(extra) or "none")
    return paths, names, sheets, metadata
