"""GSEA ``.cls`` phenotype files (categorical and ``#numeric``), and finding one next to an expression
file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ._common import _GZIP_ERRORS, _examples
from ._text import _open_text

logger = logging.getLogger("genodae")


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
