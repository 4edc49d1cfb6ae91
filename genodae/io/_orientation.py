"""Orientation: deciding from its identifiers whether a table is genes × samples or samples × genes
(Ensembl/probe IDs and gene symbols look like genes; barcodes, GSM/TCGA IDs and ``sample_3``-style
names look like samples), from which axis a sample sheet matches, or, when the names say nothing, from
the shape of a bulk table (a few samples, thousands of genes). A guess that none of these settles is an
:class:`OrientationWarning`, which the command line turns into an error (``--orientation``); library users
can do the same with ``warnings.simplefilter("error", genodae.io.OrientationWarning)``."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd

logger = logging.getLogger("genodae")

# (kind, score, pattern): +1 surely a gene/probe, -1 surely a sample/cell; weaker evidence scores less.
_ARRAY_FILE = r"(\.(CEL|cel|txt|TXT|gpr|GPR|idat|IDAT|CHP|chp|bam|BAM))?(\.gz)?"
_LABEL_PATTERNS: list[tuple[str, float, re.Pattern]] = [
    # samples first where a gene pattern would also match (GSM208621.CEL is not a gene symbol)
    ("GEO sample IDs", -1.0, re.compile(r"GSM\d+([_.\-]\w+)*" + _ARRAY_FILE, re.I)),
    ("array/sequence files", -1.0, re.compile(r"[\w.\-]+\.(CEL|gpr|idat|CHP|bam|cram|fastq|fq)(\.gz)?", re.I)),
    ("1000 Genomes/Coriell sample IDs", -1.0, re.compile(r"(HG|NA|GM)\d{5}")),
    ("Ensembl IDs", 1.0, re.compile(r"ENS[A-Z]*[GT]\d{6,}(\.\d+)?([_|:].*)?")),
    ("model-organism gene IDs", 1.0, re.compile(
        r"FBgn\d{7}|WBGene\d{8}|ZDB-GENE-\d+-\d+|MGI:\d+|HGNC:\d+|AT[1-5CM]G\d{5}(\.\d+)?"
        r"|Y[A-P][LR]\d{3}[WC](-[A-Z])?|Q\d{4}|Smp_\d{6}(\.\d+)?|LOC\d+|Os\d{2}g\d{7}|GRMZM\w+|Solyc\d+g\d+(\.\d+)*",
        re.I)),
    ("Affymetrix probe IDs", 1.0, re.compile(r"AFFX-\S+|\d+(_[a-z]+)*_at")),
    ("ERCC spike-ins", 1.0, re.compile(r"ERCC-\d+")),
    ("Illumina/Agilent probe IDs", 1.0, re.compile(r"ILMN_\d+|A_\d+_P\d+")),
    ("RefSeq IDs", 1.0, re.compile(r"[NX][MR]_\d+(\.\d+)?")),
    ("TCGA barcodes", -1.0, re.compile(r"TCGA-\w{2}-\w{4}.*", re.I)),
    ("SRA/BioSample IDs", -1.0, re.compile(r"[SED]R[RXSP]\d{5,}|SAM[NED]A?\d{6,}", re.I)),
    ("cell barcodes", -1.0, re.compile(r"([\w.\-]*[_:#.\-])?[ACGTN]{8,}([-_.]\d+)?")),
    # shortened or synthetic barcodes with a GEM-well suffix (AAACCTG0000-1): not gene symbols
    ("cell barcodes", -1.0, re.compile(r"([\w.\-]*[_:#.\-])?[ACGTN]{6,}\d*-\d{1,2}")),
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
    # bacterial/archaeal locus tags: PA0001, b0001, Rv0001c, BSU00010, PA14_00010, SAOUHSC_00001, STM0001
    # (after the sample patterns: S0001, P0001, C0001 are samples)
    ("locus tags", 1.0, re.compile(r"[A-Za-z]{1,8}(\d{1,3})?_?\d{4,6}(\.\d)?[a-zA-Z]?")),
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


class OrientationWarning(UserWarning):
    """A table's orientation was guessed (genes × samples assumed): neither its identifiers, a sample
    sheet nor its shape settled it. The command line turns it into an error (``--orientation``); do the
    same with ``warnings.simplefilter("error", genodae.io.OrientationWarning)``. ``detail`` holds the
    evidence, ``path`` the file."""

    def __init__(self, message: str, path: str = "", detail: str = ""):
        super().__init__(message)
        self.path = path
        self.detail = detail


# a bulk table's shape: a few samples and many genes (used only when the names say nothing)
_SHAPE_RATIO = 20
_SHAPE_MAX_SAMPLES = 200


def _decide_orientation(
    rows: pd.Index, cols: pd.Index, sheet: pd.DataFrame | None, path: Path | str = ""
) -> tuple[str, str]:
    """Decide from the identifiers (or a sample sheet, or a bulk table's shape) whether rows are genes
    (genes_by_samples) or samples."""
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
    n_rows, n_cols = len(rows), len(cols)
    if n_rows >= _SHAPE_RATIO * n_cols and n_cols <= _SHAPE_MAX_SAMPLES:
        return "genes_by_samples", f"{n_rows} rows × {n_cols} columns: a bulk table's shape (names undecided; {detail})"
    if n_cols >= _SHAPE_RATIO * n_rows and n_rows <= _SHAPE_MAX_SAMPLES:
        return "samples_by_genes", f"{n_rows} rows × {n_cols} columns: a bulk table's shape (names undecided; {detail})"
    of = f" of {path}" if path else ""
    msg = (
        f"Cannot tell whether the rows or the columns{of} are genes, from the identifiers or the shape "
        f"({n_rows} rows × {n_cols} columns; {detail}); assuming genes × samples. Pass orientation='genes_by_samples' or "
        "'samples_by_genes' (--orientation on the command line), or a sample sheet, to be sure."
    )
    warnings.warn(OrientationWarning(msg, str(path), detail), stacklevel=4)  # first: the CLI makes it an error
    logger.warning(msg)  # reached only when it stays a warning, so an error is never preceded by a contradicting line
    return "genes_by_samples", f"undecided, assumed; {detail}"


def _warn_if_transposed(adata: anndata.AnnData, path: Path) -> None:
    obs_score, _ = _gene_score(adata.obs_names)
    var_score, _ = _gene_score(adata.var_names)
    if obs_score >= 0.8 and obs_score - var_score > 0.8:
        logger.warning(
            "%s: the observation names look like genes and the variable names do not; if the file was "
            "saved genes × samples, read it with orientation='genes_by_samples' (--orientation genes_by_samples)",
            path,
        )
