"""The entry point :func:`read`: one path → :func:`._read.read_file`, several → :func:`._multi.read_many`.

Kept apart from both, so that ``_multi`` (which reads each of several files with ``read_file``) and ``_read``
never import each other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import anndata

from ._multi import read_many
from ._read import Orientation, read_file


def read(
    path: str | os.PathLike | Sequence[str | os.PathLike],
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
        each with that gene's mean across samples. A sample with no value at all is dropped by both (with a
        warning naming it), never imputed. Infinite values are always an error.
    duplicates
        Duplicate sample or gene names: ``"make_unique"`` (warn, then append ``-1``, ``-2``…)
        or ``"error"``.
    delimiter
        Field separator of a CSV/TSV table (one character, or ``"comma"``, ``"semicolon"``, ``"tab"``,
        ``"space"``, ``"pipe"``); by default from the extension and the header line (``;`` is detected).
    decimal
        Decimal mark of a table's numbers, ``"."`` or ``","`` (``"point"``/``"comma"``); by default ``","``
        when a ``;``-separated table writes numbers like ``1,5`` (European Excel CSV), else ``"."``.

    genome
        Which genome of a 10x ``.h5`` (or Cell Ranger 1–2 ``*_gene_bc_matrices/`` folder) holding several, e.g.
        ``"GRCh38"`` of a human–mouse mix. By default all are read as one matrix with ``var["genome"]`` (as Cell
        Ranger 3+ writes mixed species); a file of one genome just reads.

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
                             duplicates=duplicates, genome=genome, delimiter=delimiter, decimal=decimal)
        path = path[0]
    return read_file(path, orientation=orientation, sample_sheet=sample_sheet, cls=cls, missing=missing,
                     duplicates=duplicates, delimiter=delimiter, decimal=decimal, genome=genome)
