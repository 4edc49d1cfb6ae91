"""Text tables: CSV/TSV/``.txt`` (optionally gzipped, either orientation), GSEA expression ``.txt``
files (``NAME``/``DESCRIPTION`` header, genes × samples) and the count tables of common pipelines:
featureCounts (its ``#`` program line, ``Geneid Chr Start End Strand Length`` and one column per BAM
file), HTSeq-count (``gene<TAB>count`` without a header, or merged; its ``__no_feature``… counter rows
are dropped and logged). A featureCounts ``.summary`` or a STAR ``ReadsPerGene.out.tab`` is refused
with what to give instead. Identifiers are always text (``30085``, ``0001``), never numbers. European
Excel CSV (``;`` with decimal commas) is detected. Integer count tables that are mostly zeros become CSR."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import UserError
from ._clean import _numeric_values
from ._common import _TABLE_EXTS, _split_ext
from ._orientation import _decide_orientation
from ._text import (
    _delimiter_advice,
    _head_lines,
    _header_fields,
    _parse_decimal,
    _parse_delimiter,
    _read_csv,
    _restore_header,
    _sniff_decimal,
    _sniff_sep,
)

logger = logging.getLogger("genodae")

# HTSeq-count's counters of reads not assigned to a gene (its last five lines): not genes
HTSEQ_COUNTERS = ("__no_feature", "__ambiguous", "__too_low_aQual", "__not_aligned", "__alignment_not_unique")
_FEATURECOUNTS_HEADER = ("geneid", "chr", "start", "end", "strand", "length")
_STAR_COUNTERS = ("N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous")
# header words of an identifier column: a first line starting with one of these is a header
_ID_HEADERS = {"gene", "genes", "gene_id", "geneid", "gene_name", "gene_symbol", "symbol", "id", "name", "feature",
               "feature_id", "ensembl", "ensembl_id", "probe", "probe_id", "id_ref", "target_id", "transcript_id", ""}
# what a file name carries after the sample's name (sampleA.sorted.bam, s1.htseq.counts.txt)
_NAME_SUFFIXES = re.compile(
    r"([._\-](sorted|sort|sortedbycoord|aligned|aligned\.sortedbycoord\.out|aligned\.out|out|dedup|markdup|"
    r"rmdup|filtered|primary|uniq|unique|bam|sam|cram|htseq|htseq-count|htseq_count|counts?|featurecounts|tab|txt))+$",
    re.I,
)


_PIPELINE_EXTS = (".counts", ".count", ".htseq", ".featurecounts")  # tab-separated count tables


def _is_pipeline_table(path: Path) -> bool:
    """Whether a file with an extension that is not a table's is a pipeline's count table (HTSeq-count's
    ``sample.counts``, ``.htseq``), read as a TSV. A featureCounts ``.summary`` given for its counts is
    refused with what to give instead."""
    ext, comp = _split_ext(path)
    if not path.is_file() or comp not in ("", ".gz"):
        return False
    if ext == ".summary":
        lines = _head_lines(path, 2)
        if lines and lines[0].split("\t")[0] == "Status":
            _refuse_featurecounts_summary(path)
    return ext in _PIPELINE_EXTS


def _refuse_featurecounts_summary(path: Path) -> None:
    name = path.name
    counts = path.with_name(name[: name.lower().rindex(".summary")]) if ".summary" in name.lower() else None
    there = f" ({counts}, next to it)" if counts is not None and counts.is_file() else ""
    raise UserError(
        f"{path} is a featureCounts summary (read-assignment statistics per BAM file, not gene counts): give "
        f"the counts file featureCounts wrote with it{there}, the one with columns Geneid, Chr, Start, End, "
        "Strand, Length and one per BAM file."
    )


def _sample_name_from_file(name: str) -> str:
    """``/data/run1/sampleA.sorted.bam`` → ``sampleA``; ``s1.htseq.counts.txt.gz`` → ``s1``."""
    base = re.split(r"[\\/]", str(name).strip())[-1]
    base = re.sub(r"\.gz$", "", base, flags=re.I)
    stripped = _NAME_SUFFIXES.sub("", base)
    return stripped or base


def _names_from_files(files: list[str]) -> list[str]:
    """Sample names from file paths: without folders and pipeline suffixes when that keeps them unique,
    else without folders, else the paths as given."""
    for candidate in (
        [_sample_name_from_file(f) for f in files],
        [re.split(r"[\\/]", f.strip())[-1] for f in files],
    ):
        if len(set(candidate)) == len(candidate):
            return candidate
    return list(files)


_FILE_NAME = re.compile(r".*\.(csv|tsv|tab|txt|gct|h5ad|loom|h5|hdf5|mtx|counts?)(\.gz)?$|.*[\\/].*", re.I)


def _is_batches_sheet(header: list[str], rows: list[str], sep: str) -> bool:
    """Whether a table is a batches sheet (see ``read_batches_sheet``): a first column named ``path`` whose values
    are file names or paths, and no column of numbers besides."""
    if not header or header[0].strip().lower() != "path":
        return False
    firsts = [_header_fields(r, sep)[:1] for r in rows if r.strip()]
    values = [f[0].strip() for f in firsts if f]
    return bool(values) and all(_FILE_NAME.fullmatch(v) for v in values)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_text_table(
    path: Path, orientation: str, sheet: pd.DataFrame | None, delimiter: str | None, decimal: str | None = None
) -> tuple[anndata.AnnData, str, str, str]:
    delimiter, decimal = _parse_delimiter(delimiter), _parse_decimal(decimal)
    lines = _head_lines(path, 50)
    if not lines or not "".join(lines).strip():
        raise UserError(f"{path} is empty (no header line): re-create or re-download it.")
    n_comments = 0
    if lines[0].startswith("# Program:featureCounts"):
        while n_comments < len(lines) and lines[n_comments].startswith("#"):
            n_comments += 1
    lines = lines[n_comments:]
    if not lines or not lines[0].strip():
        raise UserError(f"{path} is empty (no header line): re-create or re-download it.")
    first = lines[0]
    ext, _ = _split_ext(path)
    sep = delimiter if delimiter is not None else _sniff_sep(first, _TABLE_EXTS.get(ext, "\t"))
    header = _header_fields(first, sep)
    if header and header[0] == "Status" and len(lines) > 1 and lines[1].split(sep)[0] == "Assigned":
        _refuse_featurecounts_summary(path)
    if header and header[0] in _STAR_COUNTERS and len(header) == 4:
        raise UserError(
            f"{path} is a STAR ReadsPerGene.out.tab: its columns 2-4 are one sample's counts for an unstranded, "
            "forward-stranded and reverse-stranded library, not three samples. Make a genes × samples table "
            "from the column that matches your library (e.g. with the N_* lines removed), or use featureCounts/"
            "HTSeq-count output."
        )
    if len(lines) < 2 or not "".join(lines[1:]).strip():
        raise UserError(f"{path} has a header but no data rows: check that it was written completely.")
    if _is_batches_sheet(header, lines[1:], sep):
        raise UserError(
            f"{path} is a batches sheet (columns {', '.join(header[:4])}{' …' if len(header) > 4 else ''}: one file "
            "per row), not an expression matrix: give it with --batches (genodae prepare or run; genodae.io.read_batches_sheet in Python)."
        )
    if decimal is None:
        decimal = _sniff_decimal(lines, sep)
        if decimal == ",":
            logger.info("%s: ';'-separated with decimal commas (European Excel CSV): read 1,5 as 1.5 "
                        "(--delimiter/--decimal to say otherwise)", path)
    if decimal == sep:
        raise UserError(
            f"{path}: the decimal mark and the delimiter are both {sep!r}: leave out --decimal comma "
            "(decimal= in genodae.read), or give the file's real delimiter (--delimiter semicolon)."
        )
    featurecounts = [h.strip().lower() for h in header[:6]] == list(_FEATURECOUNTS_HEADER)
    headerless = (
        not featurecounts
        and len(header) == 2
        and header[0].strip().lower() not in _ID_HEADERS
        and _is_number(header[1])
        and not re.fullmatch(r"0\d+", header[1].strip())
    )
    is_gsea = (
        len(header) >= 2
        and header[0].strip().upper() == "NAME"
        and header[1].strip().upper() == "DESCRIPTION"
    )

    df = _read_csv(path, sep=sep, index_col=0, header=None if headerless else 0, skiprows=n_comments,
                   dtype={0: str}, decimal=decimal, low_memory=False)
    if headerless:
        df.columns = pd.Index([_sample_name_from_file(path.name)])
    else:
        _restore_header(df, header)
    if df.shape[0] == 0:
        raise UserError(f"{path} has a header but no data rows: check that it was written completely.")
    df = _drop_unnamed_rows(df, path)
    df.index = pd.Index([str(x).strip() for x in df.index])
    df.columns = pd.Index([str(x).strip() for x in df.columns])

    if featurecounts:
        return _featurecounts(df, path)

    if is_gsea:
        description = df.iloc[:, 0].astype(str).to_numpy()
        values = _numeric_values(df.iloc[:, 1:], path)
        if values.shape[1] == 0:
            raise UserError(f"{path} (GSEA format) has no sample columns after NAME and DESCRIPTION.")
        if orientation == "samples_by_genes":
            raise UserError(
                f"{path} is a GSEA expression file (NAME/DESCRIPTION header), which is genes × samples by "
                "definition: leave orientation='auto' (--orientation auto, the default)."
            )
        var = pd.DataFrame({"description": description}, index=df.index.copy())
        adata = anndata.AnnData(values.T, obs=pd.DataFrame(index=df.columns[1:].copy()), var=var)
        return adata, "gsea", "genes_by_samples", "GSEA expression file (NAME/DESCRIPTION header)"

    if df.shape[1] == 0:
        raise UserError(
            f"{path} has only one column (identifiers) and no values: check the delimiter "
            f"({_delimiter_advice(sep)})."
        )
    df, counters_on = _drop_htseq_counters(df, path)
    df, annotation = _split_annotation_columns(df, path)
    values = _numeric_values(df, path)
    if headerless:
        how, why = "genes_by_samples", "HTSeq-count output (gene, count; no header): one sample"
        if orientation == "samples_by_genes":
            raise UserError(
                f"{path} is one sample's HTSeq-count output (gene<TAB>count), genes × 1 sample by definition: "
                "leave orientation='auto' (--orientation auto, the default)."
            )
    elif orientation != "auto":
        how, why = orientation, f"orientation={orientation!r} given"
    elif counters_on is not None:
        how = "genes_by_samples" if counters_on == "rows" else "samples_by_genes"
        why = f"HTSeq-count's __no_feature/__ambiguous… counters are among the {counters_on}' labels"
    else:
        how, why = _decide_orientation(df.index, df.columns, sheet, path)
    if how == "genes_by_samples":
        adata = anndata.AnnData(
            values.T, obs=pd.DataFrame(index=df.columns), var=pd.DataFrame(index=df.index)
        )
    else:
        adata = anndata.AnnData(values, obs=pd.DataFrame(index=df.index), var=pd.DataFrame(index=df.columns))
    if annotation is not None:  # they describe the identifiers: genes (var) or samples (obs)
        (adata.var if how == "genes_by_samples" else adata.obs)[list(annotation.columns)] = annotation.to_numpy()
    adata.X = _maybe_sparse_counts(adata.X)
    return adata, "table", how, why


def _split_annotation_columns(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Leading columns after the identifiers that hold only text (no value is a number), such as nf-core/rnaseq's
    ``gene_id  gene_name  S1 S2 …`` or an export's ``symbol``/``description`` columns: not samples, kept as
    annotation of the identifiers (and logged). Text inside a value column stays an error (``_numeric_values``)."""
    n = 0
    for i in range(df.shape[1]):
        col = df.iloc[:, i]  # by position: names may repeat
        if col.dtype != object or not col.notna().any() or pd.to_numeric(col, errors="coerce").notna().any():
            break
        n += 1
    if n == 0 or n == df.shape[1]:
        return df, None
    annotation = df.iloc[:, :n].astype(str).where(df.iloc[:, :n].notna(), "")
    logger.info("%s: column(s) %s hold text, not values: kept as annotation of the identifiers", path,
                ", ".join(map(repr, annotation.columns)))
    return df.iloc[:, n:], annotation


def _drop_unnamed_rows(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rows with an empty identifier (an Entrez ID column with a blank) are dropped and logged: they
    cannot be matched to anything."""
    missing = np.asarray(df.index.isna()) | np.array([str(x).strip() == "" for x in df.index])
    if not missing.any():
        return df
    if missing.all():
        raise UserError(f"{path}: the first column (identifiers) is empty on every row: check the file.")
    rows = [int(i) + 1 for i in np.flatnonzero(missing)]
    shown = ", ".join(map(str, rows[:5])) + ("…" if len(rows) > 5 else "")
    logger.warning("%s: dropped %d row(s) with no identifier in the first column (data row(s) %s)",
                   path, len(rows), shown)
    return df.loc[~missing]


def _drop_htseq_counters(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, str | None]:
    """Drop HTSeq-count's counter rows (or columns) and log their totals; say on which axis they were."""
    for axis, labels in (("rows", df.index), ("columns", df.columns)):
        is_counter = np.array([x in HTSEQ_COUNTERS for x in labels], dtype=bool)
        if not is_counter.any():
            continue
        counters = df.loc[is_counter] if axis == "rows" else df.loc[:, is_counter].T
        totals = pd.to_numeric(counters.stack(), errors="coerce").groupby(level=0).sum()
        shown = ", ".join(f"{name} {totals.get(name, 0):,.0f}" for name in labels[is_counter])
        logger.warning(
            "%s: dropped HTSeq-count's %d counter %s (reads not assigned to a gene, not genes): %s (totals over "
            "all samples)", path, int(is_counter.sum()), axis, shown,
        )
        kept = df.loc[~is_counter] if axis == "rows" else df.loc[:, ~is_counter]
        return kept, axis
    return df, None


def _featurecounts(df: pd.DataFrame, path: Path) -> tuple[anndata.AnnData, str, str, str]:
    """featureCounts output: Geneid (index), Chr, Start, End, Strand, Length, [extra attributes], one
    column per BAM file. Length (and extra attributes) go to var, the BAM paths to obs["file"]."""
    rest = df.columns[5:]
    is_file = np.array([bool(re.search(r"\.(bam|sam|cram)$", c, re.I)) for c in rest], dtype=bool)
    samples = rest[is_file] if is_file.any() else rest
    extra = [c for c in rest if c not in set(samples)]
    if len(samples) == 0:
        raise UserError(f"{path} (featureCounts output) has no sample columns after Geneid … Length.")
    values = _numeric_values(df[samples], path)
    length = pd.to_numeric(df.iloc[:, 4], errors="coerce")
    var = pd.DataFrame(index=df.index.copy())
    var["length"] = length.astype("Int64").to_numpy() if length.notna().all() else length.to_numpy()
    for c in extra:
        var[c] = df[c].astype(str).to_numpy()
    names = _names_from_files(list(samples))
    obs = pd.DataFrame({"file": list(samples)}, index=pd.Index(names))
    adata = anndata.AnnData(values.T, obs=obs, var=var)
    adata.X = _maybe_sparse_counts(adata.X)
    logger.info(
        "%s: featureCounts output: %d genes × %d BAM files; sample names from the file names (e.g. %s → %r); "
        "Chr/Start/End/Strand not read, Length in var['length']", path, adata.n_vars, adata.n_obs,
        samples[0], names[0],
    )
    return adata, "featurecounts", "genes_by_samples", "featureCounts output (Geneid, Chr … Length, one column per BAM)"


def _maybe_sparse_counts(X: np.ndarray):
    """Integer-valued tables with more than half zeros become CSR (counts tables are mostly zeros)."""
    if not np.isfinite(X).all() or X.size == 0:
        return X
    if (X == 0).mean() > 0.5 and np.array_equal(X, np.round(X)):
        return sparse.csr_matrix(X.astype(np.float32))
    return X
