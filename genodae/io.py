"""Read any supported expression matrix into AnnData; write outputs atomically.

:func:`read` returns cells/samples × genes (``obs × var``) whatever the file's layout. It reads
``.h5ad``, ``.loom``, 10x directories (``matrix.mtx[.gz]`` + ``features``/``genes.tsv[.gz]`` +
``barcodes.tsv[.gz]``) and 10x ``.h5``, CSV/TSV tables (optionally gzipped, either orientation),
GCT (#1.2, #1.3) and GSEA expression ``.txt`` files with their ``.cls`` phenotypes. Every problem
with the input becomes a one-line :class:`~genodae.errors.UserError` that names the file and says
what to do. Input files are only ever opened for reading.

:func:`write_h5ad`, :func:`write_table` and :func:`atomic_path` write to a temporary name in the
target folder and rename it into place on success, so an interrupted job (or a Snakemake rule that
fails half-way) never leaves a truncated output that looks finished.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import re
import shutil
import uuid
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

from ._files import default_mode
from .errors import UserError

logger = logging.getLogger("genodae")

__all__ = ["atomic_path", "read", "read_batches_sheet", "read_cls", "read_many", "write_h5ad", "write_table"]

Orientation = Literal["auto", "genes_by_samples", "samples_by_genes"]
ORIENTATIONS = ("auto", "genes_by_samples", "samples_by_genes")
MISSING = ("error", "drop", "impute")
DUPLICATES = ("make_unique", "error")

SUPPORTED_FORMATS = (
    ".h5ad; .loom; 10x directory (matrix.mtx[.gz] + features.tsv[.gz] or genes.tsv[.gz] + "
    "barcodes.tsv[.gz]) or its matrix.mtx[.gz]; 10x .h5; .csv/.tsv/.txt tables (optionally .gz); "
    ".gct; GSEA .txt (NAME/DESCRIPTION header)"
)
_TABLE_EXTS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
_SHEET_KEYS = ("sample", "barcode", "cell", "obs_names")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    orientation: Orientation = "auto",
    sample_sheet: str | os.PathLike | None = None,
    cls: str | os.PathLike | None = None,
    missing: Literal["error", "drop", "impute"] = "error",
    duplicates: Literal["make_unique", "error"] = "make_unique",
    delimiter: str | None = None,
) -> anndata.AnnData:
    """Read an expression matrix into AnnData, cells/samples × genes.

    The format is detected from the path: ``.h5ad``, ``.loom``, a 10x directory (or its
    ``matrix.mtx[.gz]``), a 10x ``.h5``, ``.gct``, a GSEA ``.txt`` (header ``NAME DESCRIPTION``)
    or a CSV/TSV table (``.csv``, ``.tsv``, ``.tab``, ``.txt``, each optionally ``.gz``) with a
    header row and a first column of identifiers. A table may be genes × samples or samples ×
    genes: the orientation is decided from the identifiers (Ensembl IDs, probe IDs and gene
    symbols look like genes; barcodes, GSM/TCGA IDs, ``sample_3``-style names and IDs sharing one
    scheme look like samples), or by which axis a ``sample_sheet`` matches.

    Parameters
    ----------
    path
        File or 10x directory to read. It is never modified. A list of several paths is read by
        :func:`read_many` (one AnnData, genes in every file, ``obs["batch"]`` naming each file's
        batch); a list of one path is that path.
    orientation
        ``"auto"`` detects the orientation of tables. ``"genes_by_samples"`` or
        ``"samples_by_genes"`` says how the file is laid out (for AnnData-native formats, which
        are samples × genes by definition, ``"genes_by_samples"`` transposes a file that was saved
        the wrong way round).
    sample_sheet
        CSV/TSV (optionally gzipped) of per-sample metadata, keyed by its first column or by a
        column named ``sample``, ``barcode``, ``cell`` or ``obs_names``; left-joined into ``obs``.
    cls
        GSEA ``.cls`` phenotype file, stored in ``obs["phenotype"]`` (categorical) or, for a
        continuous ``#numeric`` file, one float column per phenotype. Found automatically next
        to a GSEA ``.txt`` or ``.gct`` file with the same stem.
    missing
        What to do with NaN values: ``"error"``, ``"drop"`` genes that have any, or ``"impute"``
        each with that gene's mean across samples. Infinite values are always an error.
    duplicates
        Duplicate sample or gene names: ``"make_unique"`` (warn, then append ``-1``, ``-2``…)
        or ``"error"``.
    delimiter
        Field separator of a CSV/TSV table; by default from the extension (and the header line).

    Returns
    -------
    AnnData with ``X`` in float32 (CSR when the input is sparse, or an integer count table with
    more than half zeros) and provenance in ``uns["genodae_read"]`` (``path``, ``format``,
    ``orientation`` of the file and why).

    Raises
    ------
    UserError
        Missing, empty, truncated or corrupt file; unknown format; non-numeric, NaN or infinite
        values; duplicate names (with ``duplicates="error"``); a sample sheet or ``.cls`` that does
        not match the samples.

    Examples
    --------
    >>> import genodae
    >>> adata = genodae.read("counts.csv.gz", sample_sheet="samples.tsv")  # doctest: +SKIP
    >>> adata = genodae.read("P53.txt")  # GSEA format, P53.cls found next to it  # doctest: +SKIP
    >>> adata = genodae.read(["plate1.csv.gz", "plate2.csv.gz"])  # see read_many  # doctest: +SKIP
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return read_many(path, sample_sheets=sample_sheet, orientation=orientation, cls=cls, missing=missing,
                             duplicates=duplicates, delimiter=delimiter)
        path = path[0]
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
        if fmt in ("table", "gsea"):
            adata, fmt, how, why = _read_text_table(path, orientation, sheet, delimiter)
        elif fmt == "gct":
            adata, how, why = _read_gct(path, orientation)
        else:
            reader = {
                "h5ad": _read_h5ad,
                "loom": _read_loom,
                "10x_h5": _read_10x_h5,
                "10x_mtx": _read_10x_mtx,
            }
            adata = reader[fmt](path)
            fmt = adata.uns.pop("_genodae_format", fmt)
            how, why = "samples_by_genes", f"{fmt} files store samples × genes"
            if orientation == "genes_by_samples":
                adata = adata.T.copy()
                how, why = "genes_by_samples", "orientation='genes_by_samples' given: transposed"
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise UserError(
            f"{path} holds an empty matrix ({adata.n_obs} samples × {adata.n_vars} genes): "
            "check that it is the right file and was written completely."
        )
    if fmt in ("h5ad", "loom", "10x_h5", "10x_mtx") and orientation == "auto":
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

    adata.uns["genodae_read"] = info
    logger.info(
        "Read %s (%s): %d samples × %d genes, %s X",
        path,
        fmt,
        adata.n_obs,
        adata.n_vars,
        "sparse" if sparse.issparse(adata.X) else "dense",
    )
    return adata


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
    return _read_many(paths, batch_key=batch_key, batch_names=names, sample_sheets=sheets,
                      read_kwargs=read_kwargs, metadata=metadata, batches_sheet=Path(sheet).expanduser())


def _batch_name_from_path(path: Path) -> str:
    """``dir/plate1.count.csv.gz`` → ``plate1.count``; a 10x ``…/matrix.mtx.gz`` → its folder's name."""
    if path.is_dir():
        return path.name or str(path)
    name = path.name
    if name.lower().startswith("matrix.mtx"):
        return path.parent.name or name
    ext, comp = _split_ext(path)
    cut = len(ext) + len(comp)
    if ext in (*_TABLE_EXTS, ".gct", ".h5ad", ".loom", ".h5", ".hdf5", ".mtx") and cut < len(name):
        return name[: len(name) - cut]
    return name


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

    adatas = [read(p, sample_sheet=sh, **read_kwargs) for p, sh in zip(paths, sheets, strict=True)]
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
    formats = [str(a.uns.get("genodae_read", {}).get("format", "")) for a in adatas]
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
    out.uns["genodae_read"] = info
    logger.info(
        "Read %d files into %d samples × %d genes; batches in obs[%r]: %s",
        n, out.n_obs, out.n_vars, batch_key, ", ".join(levels),
    )
    return out


def _check_same_kind(adatas: list[anndata.AnnData], paths: list[Path]) -> None:
    from .pp import is_counts

    kinds = [bool(is_counts(a.X)) for a in adatas]
    if len(set(kinds)) > 1:
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
    if len(common) == 0:
        shown = "; ".join(f"{p} ({_examples(a.var_names)})" for p, a in zip(paths, adatas, strict=True))
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
    path = Path(sheet).expanduser()
    if not path.is_file():
        raise UserError(f"Batches sheet not found: {path}. Check the path.")
    ext, comp = _split_ext(path)
    if ext not in _TABLE_EXTS or comp not in ("", ".gz"):
        raise UserError(f"Batches sheet {path} should be a .csv or .tsv/.txt table (optionally .gz).")
    lines = _head_lines(path, 1)
    if not lines or not lines[0].strip():
        raise UserError(f"Batches sheet {path} is empty (no header line).")
    sep = _sniff_sep(lines[0], _TABLE_EXTS[ext])
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

    def resolve(value: str) -> Path:
        p = Path(value.strip()).expanduser()
        return p if p.is_absolute() else base / p

    paths = [resolve(v) for v in df["path"]]
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


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name}={value!r} is not valid: choose one of {', '.join(choices)}.")


def _split_ext(path: Path) -> tuple[str, str]:
    """Return (format extension, compression extension) of a file name, lower-case."""
    suffixes = [s.lower() for s in path.suffixes]
    comp = suffixes[-1] if suffixes and suffixes[-1] in _COMPRESSED else ""
    rest = suffixes[:-1] if comp else suffixes
    return (rest[-1] if rest else ""), comp


def _detect_format(path: Path) -> str:
    if path.is_dir():
        return "10x_mtx"
    name = path.name.lower()
    if name.endswith((".mtx", ".mtx.gz")):
        return "10x_mtx"
    ext, comp = _split_ext(path)
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
    shown = "".join(path.suffixes[-2:]) or "none"
    raise UserError(
        f"Cannot tell the format of {path} from its extension ({shown}). Supported: {SUPPORTED_FORMATS}. "
        "Rename the file to the right extension."
    )


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


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
        raise UserError(
            f"{path} is not a UTF-8 text table (binary or another encoding; {err.reason} at byte {err.start}). "
            "Check the file and its extension."
        ) from err


def _gzip_error(path: Path, err: Exception) -> UserError:
    return UserError(
        f"{path} is a corrupt or truncated gzip file ({type(err).__name__}: {err}). "
        "Re-download or re-compress it (`gzip -t` checks a file)."
    )


def _sniff_sep(first_line: str, default: str) -> str:
    tabs, commas = first_line.count("\t"), first_line.count(",")
    if default == "," and tabs and not commas:
        return "\t"
    if default == "\t" and commas and not tabs:
        return ","
    return default


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` with its failures turned into UserErrors naming the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as err:
        raise UserError(f"{path} is empty (no header, no data): re-create or re-download it.") from err
    except pd.errors.ParserError as err:
        msg = str(err).strip().splitlines()[-1]
        raise UserError(
            f"{path} is not a well-formed table ({msg}). Check the delimiter (pass delimiter=) and that "
            "every row has the same number of fields."
        ) from err
    except _GZIP_ERRORS as err:
        raise _gzip_error(path, err) from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not a UTF-8 text table ({err.reason}). Check the file.") from err


def _header_fields(line: str, sep: str) -> list[str]:
    return next(csv.reader([line], delimiter=sep)) if line else []


def _restore_header(df: pd.DataFrame, header: list[str]) -> None:
    """Undo pandas' renaming of duplicate column names ('a', 'a.1') so duplicates can be handled."""
    if len(header) == df.shape[1] + 1:
        df.columns = pd.Index(header[1:])
    elif len(header) == df.shape[1]:  # R-style header without a field for the row names
        df.columns = pd.Index(header)


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


def _maybe_sparse_counts(X: np.ndarray):
    """Integer-valued tables with more than half zeros become CSR (counts tables are mostly zeros)."""
    if not np.isfinite(X).all() or X.size == 0:
        return X
    if (X == 0).mean() > 0.5 and np.array_equal(X, np.round(X)):
        return sparse.csr_matrix(X.astype(np.float32))
    return X


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
            f"{path} is a GCT file, which is genes × samples by definition: leave orientation='auto'."
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


# --------------------------------------------------------------------------------------------
# orientation
# --------------------------------------------------------------------------------------------

# (kind, score, pattern): +1 surely a gene/probe, -1 surely a sample/cell; weaker evidence scores less.
_LABEL_PATTERNS: list[tuple[str, float, re.Pattern]] = [
    ("Ensembl IDs", 1.0, re.compile(r"ENS[A-Z]*[GT]\d{6,}(\.\d+)?([_|:].*)?")),
    ("Affymetrix probe IDs", 1.0, re.compile(r"AFFX-\S+|\d+(_[a-z]+)*_at")),
    ("ERCC spike-ins", 1.0, re.compile(r"ERCC-\d+")),
    ("Illumina/Agilent probe IDs", 1.0, re.compile(r"ILMN_\d+|A_\d+_P\d+")),
    ("RefSeq IDs", 1.0, re.compile(r"[NX][MR]_\d+(\.\d+)?")),
    ("TCGA barcodes", -1.0, re.compile(r"TCGA-\w{2}-\w{4}.*", re.I)),
    ("GEO sample IDs", -1.0, re.compile(r"GSM\d+", re.I)),
    ("SRA/BioSample IDs", -1.0, re.compile(r"[SED]R[RXSP]\d{5,}|SAM[NED]A?\d{6,}", re.I)),
    ("cell barcodes", -1.0, re.compile(r"([\w.\-]*[_:#.\-])?[ACGTN]{8,}([-_.]\d+)?")),
    (
        "sample/cell names",
        -1.0,
        re.compile(
            r"(cell|sample|smpl|patient|pat|pt|p|donor|subject|case|control|ctrl|rep|replicate|s|c|well|plate|run|lib"
            r"|library|tumou?r|normal|batch|id|obs|animal|mouse|individual|condition|cond|day|time|spot)"
            r"[\s_\-.#]?\d+([\s_\-.#]\w*)*",
            re.I,
        ),
    ),
    ("plate-well names", -1.0, re.compile(r"\w*?p(late)?\d+[_\-.][A-P]\d{1,2}", re.I)),
    ("numeric labels", -0.3, re.compile(r"\d+(\.0+)?")),
    ("human gene symbols", 0.5, re.compile(r"[A-Z][A-Z0-9]*(orf\d+)?[A-Z0-9]*([-.][A-Z0-9]+)*")),
    ("mouse gene symbols", 0.3, re.compile(r"[A-Z][a-z][a-z0-9]*(-[a-z0-9]+)*|Gm\d+")),
]
_MARGIN = 0.15  # scores closer than this are undecided


def _label_kind(label: str) -> tuple[str, float]:
    label = label.strip().strip('"')
    for kind, score, pattern in _LABEL_PATTERNS:
        if pattern.fullmatch(label):
            if kind == "human gene symbols" and sum(c.isalpha() for c in label) < 2:
                continue
            return kind, score
    return "other", 0.0


def _gene_score(labels: pd.Index) -> tuple[float, str]:
    """How gene-like a set of labels is (+1 genes … -1 samples), and a short reason."""
    labels = pd.Index(labels).astype(str)
    if len(labels) == 0:
        return 0.0, "no labels"
    if len(labels) > 2000:  # an even subsample is enough and keeps this fast
        labels = labels[np.linspace(0, len(labels) - 1, 2000).astype(int)]
    kinds = [_label_kind(x) for x in labels]
    counts = pd.Series([k for k, _ in kinds]).value_counts()
    score = float(np.mean([s for _, s in kinds]))
    strong_gene = sum(s >= 1.0 for _, s in kinds) / len(kinds)
    top = ", ".join(f"{100 * c / len(kinds):.0f}% {k}" for k, c in counts.head(2).items())
    reasons = [top]
    if strong_gene < 0.5 and len(labels) >= 5:
        # Sample IDs come from one naming scheme: same length, or one shared prefix. Gene lists don't.
        lengths = pd.Series([len(x) for x in labels])
        if lengths.value_counts(normalize=True).iloc[0] >= 0.9:
            score -= 0.4
            reasons.append("all of one length")
        firsts = pd.Series([x[:1].upper() for x in labels])
        if firsts.value_counts(normalize=True).iloc[0] >= 0.6:
            score -= 0.4
            reasons.append("a shared prefix")
    return score, "; ".join(reasons)


def _decide_orientation(rows: pd.Index, cols: pd.Index, sheet: pd.DataFrame | None) -> tuple[str, str]:
    """Decide from the identifiers whether rows are genes (genes_by_samples) or samples."""
    if sheet is not None:
        keys = set(sheet.index)
        in_rows, in_cols = len(keys.intersection(rows)), len(keys.intersection(cols))
        if in_rows != in_cols:
            how = "samples_by_genes" if in_rows > in_cols else "genes_by_samples"
            axis = "row" if in_rows > in_cols else "column"
            return how, f"the sample sheet's keys match {max(in_rows, in_cols)} {axis} labels"
    row_score, row_why = _gene_score(rows)
    col_score, col_why = _gene_score(cols)
    detail = (
        f"row labels: {row_why} (score {row_score:+.2f}); column labels: {col_why} (score {col_score:+.2f})"
    )
    if row_score - col_score > _MARGIN:
        return "genes_by_samples", f"rows look like genes; {detail}"
    if col_score - row_score > _MARGIN:
        return "samples_by_genes", f"columns look like genes; {detail}"
    msg = (
        f"Cannot tell from the identifiers whether rows or columns are genes ({detail}); assuming genes × "
        "samples. Pass orientation='genes_by_samples' or 'samples_by_genes', or a sample sheet, to be sure."
    )
    logger.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)
    return "genes_by_samples", f"undecided, assumed; {detail}"


def _warn_if_transposed(adata: anndata.AnnData, path: Path) -> None:
    obs_score, _ = _gene_score(adata.obs_names)
    var_score, _ = _gene_score(adata.var_names)
    if obs_score >= 0.8 and obs_score - var_score > 0.8:
        logger.warning(
            "%s: the observation names look like genes and the variable names do not; if the file was "
            "saved genes × samples, read it with orientation='genes_by_samples'",
            path,
        )


# --------------------------------------------------------------------------------------------
# values, names, metadata
# --------------------------------------------------------------------------------------------


def _examples(names, n: int = 3) -> str:
    names = [str(x) for x in list(names)[:n]]
    return ", ".join(repr(x) for x in names)


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
    genes = np.unique(cols)
    gene_names = adata.var_names[genes]
    where_txt = (
        f"in {len(genes)} gene(s) ({_examples(gene_names)}) and {len(np.unique(rows))} sample(s) "
        f"({_examples(adata.obs_names[np.unique(rows)])})"
    )
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


def _read_sample_sheet(sheet_path: str | os.PathLike) -> pd.DataFrame:
    path = Path(sheet_path).expanduser()
    if not path.is_file():
        raise UserError(f"Sample sheet not found: {path}. Check the path.")
    if path.stat().st_size == 0:
        raise UserError(f"Sample sheet {path} is empty (0 bytes).")
    ext, comp = _split_ext(path)
    if ext not in _TABLE_EXTS or comp not in ("", ".gz"):
        raise UserError(f"Sample sheet {path} should be a .csv or .tsv/.txt table (optionally .gz).")
    lines = _head_lines(path, 2)
    if not lines or not lines[0].strip():
        raise UserError(f"Sample sheet {path} is empty (no header line).")
    sep = _sniff_sep(lines[0], _TABLE_EXTS[ext])
    fields = [next(csv.reader([ln], delimiter=sep)) for ln in lines]
    if len(fields) == 2 and len(fields[1]) == len(fields[0]) + 1:
        # R's write.csv layout: the header has no name for the row-name column, which holds the keys
        sheet = _read_csv(path, sep=sep, header=None, skiprows=1, dtype={0: str}, keep_default_na=True)
        key = "row names"
        keys = sheet.pop(0)
        sheet.columns = [c.strip() for c in fields[0]]
    else:
        columns = list(_read_csv(path, sep=sep, nrows=0).columns)
        lower = {str(c).strip().lower(): c for c in columns}
        key = next((lower[k] for k in _SHEET_KEYS if k in lower), columns[0])
        sheet = _read_csv(path, sep=sep, dtype={key: str}, keep_default_na=True)
        if sheet.empty:
            raise UserError(f"Sample sheet {path} has a header but no rows.")
        keys = sheet.pop(key)
    if keys.isna().any():
        raise UserError(
            f"Sample sheet {path}: {int(keys.isna().sum())} row(s) have no key in column {key!r}."
        )
    sheet.index = pd.Index(keys.astype(str).str.strip(), name=None)
    for col in list(sheet.columns):  # an unnamed index column that repeats the key column
        if str(col).startswith("Unnamed:") and sheet[col].astype(str).tolist() == sheet.index.tolist():
            sheet = sheet.drop(columns=col)
    if not sheet.index.is_unique:
        dup = sheet.index[sheet.index.duplicated()].unique()
        raise UserError(
            f"Sample sheet {path}: {len(dup)} duplicate key(s) in column {key!r} (e.g. {_examples(dup)}); "
            "each sample must appear once."
        )
    sheet.attrs["path"] = str(path)
    sheet.attrs["key"] = str(key)
    return sheet


def _join_sample_sheet(adata: anndata.AnnData, sheet: pd.DataFrame, path: Path) -> None:
    sheet_path = sheet.attrs["path"]
    matched = adata.obs_names.isin(sheet.index)
    n_match = int(matched.sum())
    if n_match == 0:
        raise UserError(
            f"Sample sheet {sheet_path}: none of its {len(sheet)} keys (column {sheet.attrs['key']!r}, e.g. "
            f"{_examples(sheet.index)}) match the {adata.n_obs} sample names of {path} (e.g. "
            f"{_examples(adata.obs_names)}). Key the sheet by the sample names in its first column, or in a "
            "column named sample, barcode, cell or obs_names."
        )
    if n_match < adata.n_obs:
        msg = (
            f"Sample sheet {sheet_path}: {adata.n_obs - n_match} of {adata.n_obs} samples have no metadata "
            f"(e.g. {_examples(adata.obs_names[~matched])}); their columns are NaN."
        )
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
    unused = len(sheet) - n_match
    if unused:
        logger.info("Sample sheet %s: %d row(s) match no sample and were ignored", sheet_path, unused)
    joined = sheet.reindex(adata.obs_names)
    for col in joined.columns:
        if col in adata.obs.columns:
            logger.warning("Sample sheet %s: column %r replaces the existing obs column", sheet_path, col)
        adata.obs[str(col)] = joined[col].array
    logger.info(
        "Joined %d column(s) from %s into obs (%d of %d samples matched)",
        joined.shape[1],
        sheet_path,
        n_match,
        adata.n_obs,
    )


def _find_cls(path: Path) -> Path | None:
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem = name.rsplit(".", 1)[0]
    for candidate in (path.with_name(f"{stem}.cls"), path.with_name(f"{stem}.CLS")):
        if candidate.is_file():
            logger.info("Found phenotype file %s next to %s", candidate, path)
            return candidate
    return None


def read_cls(path: str | os.PathLike) -> pd.DataFrame:
    """Read a GSEA ``.cls`` phenotype file.

    Parameters
    ----------
    path
        A categorical ``.cls`` (``N K 1`` / ``# name1 name2 …`` / one label per sample) or a
        continuous one (``#numeric`` / ``#name`` / values …).

    Returns
    -------
    One row per sample, in file order: a categorical ``phenotype`` column (categories in the
    order of the names line) or one float column per continuous phenotype.

    Examples
    --------
    >>> read_cls("P53.cls")["phenotype"].value_counts()  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"Phenotype (.cls) file not found: {path}. Check the path.")
    text = ""
    if path.stat().st_size:
        try:
            with _open_text(path) as fh:
                text = fh.read()
        except (*_GZIP_ERRORS, UnicodeDecodeError) as err:
            raise UserError(
                f"{path} is not a readable .cls text file ({type(err).__name__}: {err})."
            ) from err
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"{path} is empty: a .cls file needs 3 lines ('N K 1', '# class names', labels).")
    if lines[0].lower().startswith("#numeric"):
        columns: dict[str, np.ndarray] = {}
        name = None
        for ln in lines[1:]:
            if ln.startswith("#"):
                name = ln[1:].strip() or f"phenotype_{len(columns) + 1}"
                continue
            try:
                columns[name or f"phenotype_{len(columns) + 1}"] = np.array(ln.split(), dtype=float)
            except ValueError as err:
                raise UserError(f"{path}: continuous phenotype values must be numbers ({err}).") from err
            name = None
        lengths = {len(v) for v in columns.values()}
        if not columns or len(lengths) != 1:
            raise UserError(
                f"{path}: continuous .cls needs '#name' lines each followed by one value per sample."
            )
        return pd.DataFrame(columns)
    if len(lines) < 3:
        raise UserError(
            f"{path} is not a categorical .cls file: it needs 3 lines ('N K 1', '# class names', labels), "
            f"found {len(lines)}."
        )
    try:
        n, k = (int(x) for x in lines[0].split()[:2])
    except ValueError as err:
        raise UserError(
            f"{path}: the first line should be 'N K 1' (samples, classes, 1), found {lines[0]!r}."
        ) from err
    if not lines[1].startswith("#"):
        raise UserError(
            f"{path}: the second line should start with '#' and name the classes, found {lines[1]!r}."
        )
    names = lines[1][1:].split()
    labels = " ".join(lines[2:]).split()
    if len(labels) != n:
        raise UserError(
            f"{path}: line 1 says {n} samples but line 3 has {len(labels)} labels; fix the .cls file."
        )
    uniq = list(dict.fromkeys(labels))
    if len(uniq) > k:
        raise UserError(
            f"{path}: line 1 says {k} classes but the labels hold {len(uniq)} ({_examples(uniq, 5)})."
        )
    if names and not set(uniq) <= set(names):
        if len(uniq) > len(names):
            raise UserError(
                f"{path}: labels {_examples(uniq, 5)} do not match the class names {_examples(names, 5)}."
            )
        mapping = dict(zip(uniq, names, strict=False))  # GSEA: the first label used is the first class named
        labels = [mapping[x] for x in labels]
    categories = names or uniq
    return pd.DataFrame({"phenotype": pd.Categorical(labels, categories=list(dict.fromkeys(categories)))})


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _final_suffix(name: str) -> str:
    suffixes = Path(name).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSED:
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name sits in the same folder (so the rename is atomic on one filesystem) and
    keeps the extension (so writers that look at it, e.g. for ``.gz``, still work). On any
    exception, including KeyboardInterrupt, the temporary file or folder is removed and ``path`` is
    left as it was. Missing parent folders are created. The block may also write a folder (e.g. a
    saved model); an existing folder at ``path`` is then replaced. A file never replaces a folder, nor
    a folder a file: that is a :class:`~genodae.errors.UserError`, and ``path`` is left as it was.

    Parameters
    ----------
    path
        The final output path.

    Examples
    --------
    >>> with atomic_path("results/embedding.npy") as tmp:  # doctest: +SKIP
    ...     np.save(tmp, embedding)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _final_suffix(path.name)
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{base}.tmp-{uuid.uuid4().hex[:10]}{suffix}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        raise FileNotFoundError(f"nothing was written to the temporary file {tmp} for {path}")
    if tmp.is_file() and path.is_dir():
        _remove(tmp)
        raise UserError(f"Cannot write {path}: it is an existing folder. Give a file name, or remove the folder.")
    if tmp.is_dir() and path.exists() and not path.is_dir():
        _remove(tmp)
        raise UserError(
            f"Cannot write the folder {path}: a file of that name exists. Give another name, or remove the file."
        )
    default_mode(tmp)  # temp writers may create 0600 files: give the umask's permissions
    if tmp.is_dir() and path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:10]}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _check_file_target(path: str | os.PathLike) -> None:
    """Fail before any work when the output file's path is an existing folder."""
    if Path(path).is_dir():
        raise UserError(f"Cannot write {path}: it is an existing folder. Give a file name, or remove the folder.")


def write_h5ad(
    adata: anndata.AnnData, path: str | os.PathLike, *, compression: Literal["gzip", "lzf"] | None = None
) -> None:
    """Write ``adata`` to ``path`` atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    adata
        The AnnData to save.
    path
        Output ``.h5ad`` path; parent folders are created.
    compression
        HDF5 compression of the datasets (``None``, ``"gzip"`` or ``"lzf"``).

    Examples
    --------
    >>> write_h5ad(adata, "results/pbmc/embedded.h5ad")  # doctest: +SKIP
    """
    _check_file_target(path)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression=compression)
    logger.info("Wrote %s (%d × %d)", path, adata.n_obs, adata.n_vars)


def write_table(df: pd.DataFrame, path: str | os.PathLike, **to_csv_kwargs) -> None:
    """Write a DataFrame as CSV/TSV atomically; the separator follows the extension.

    ``.csv`` uses commas, ``.tsv``, ``.tab`` and ``.txt`` tabs; a ``.gz`` suffix gzips the file
    (with a fixed timestamp, so equal tables give equal bytes).

    Parameters
    ----------
    df
        Table to write.
    path
        Output path, e.g. ``results/x/signatures.tsv`` or ``….csv.gz``.
    **to_csv_kwargs
        Passed on to :meth:`pandas.DataFrame.to_csv` (``sep`` overrides the extension's).

    Examples
    --------
    >>> write_table(signatures, "results/pbmc/signatures.tsv")  # doctest: +SKIP
    """
    path = Path(path)
    ext, comp = _split_ext(path)
    if ext not in _TABLE_EXTS:
        raise UserError(
            f"Cannot write a table to {path}: use a .csv, .tsv, .tab or .txt extension (optionally .gz)."
        )
    _check_file_target(path)
    to_csv_kwargs.setdefault("sep", _TABLE_EXTS[ext])
    with atomic_path(path) as tmp:
        if comp == ".gz" and "compression" not in to_csv_kwargs:
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                with io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
                    df.to_csv(text, **to_csv_kwargs)
        else:
            df.to_csv(tmp, **to_csv_kwargs)
    logger.info("Wrote %s (%d rows)", path, len(df))
