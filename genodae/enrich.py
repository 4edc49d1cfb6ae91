"""Gene-set enrichment of signatures: GMT files, identifier mapping, one-sided over-representation.

The test is gseapy's offline hypergeometric test (``gseapy.stats.calc_pvalues``, the engine of
``gseapy.enrich`` for local gene sets, called directly to skip its per-call logger and plotting set-up):
P(X ≥ overlap), i.e. the one-sided Fisher exact test, with an explicit background — the genes the model used;
gene sets and signatures are restricted to the background first, as gseapy does. Multiple testing is corrected here rather than by gseapy, for two reasons: eADAGE corrects
per *node* (both tails of a node together), and gseapy drops the gene sets with no overlap before its
Benjamini–Hochberg step, which undercounts the tests made; here every gene set of admissible size counts,
with p = 1 where the overlap is 0.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import UserError

log = logging.getLogger("genodae")

GeneSets = Mapping[str, Sequence[str]]


def read_gmt(path: str | Path, *, description: bool = True) -> dict[str, list[str]]:
    """Read a GMT file: one gene set per line, ``name<TAB>description<TAB>gene<TAB>gene…``.

    Duplicate genes within a set are dropped; a repeated set name is an error; empty lines are skipped; a UTF-8
    byte-order mark is ignored. ``description=False`` reads lines written without the description field
    (``name<TAB>gene<TAB>gene…``, common in hand-made files), which the GMT format does not allow: read as GMT,
    such a line loses its first gene (:func:`enrich` warns when a set's description is one of the model's genes).

    Raises :class:`~genodae.UserError` when the file is missing, not text, JSON (read it with
    :func:`read_gene_sets`), or has a line without name, description and a gene.
    """
    return _read_gmt(path, description=description)[0]


def read_gene_sets(path: str | Path) -> dict[str, list[str]]:
    """Read a gene-set file: GMT (see :func:`read_gmt`) or JSON, told apart by the content.

    A JSON file must hold one object mapping each set name to its list of genes,
    ``{"SET_A": ["GENE1", "GENE2"], …}``. Raises :class:`~genodae.UserError` for a malformed file.
    """
    return _read_sets(path)[0]


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"gene-set file {path} not found")
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark would otherwise start the first set's name
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text gene-set file (GMT or JSON)") from None


def _is_json(text: str) -> bool:
    return text.lstrip().startswith(("{", "["))


def _read_sets(path: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The sets of a GMT or JSON file, and the description of each GMT set (none for JSON)."""
    path = Path(path)
    text = _read_text(path)
    if not _is_json(text):
        return _read_gmt(path, text=text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}); a JSON gene-set file maps each set "
                        'name to its genes: {"SET_A": ["GENE1", "GENE2"]}') from None
    return _as_gene_sets(data, f"JSON file {path}"), {}


def _read_gmt(path: str | Path, *, description: bool = True,
              text: str | None = None) -> tuple[dict[str, list[str]], dict[str, str]]:
    path = Path(path)
    text = _read_text(path) if text is None else text
    if _is_json(text):
        raise UserError(f"{path} is JSON, not GMT: read it with genodae.enrich.read_gene_sets (GMT or JSON "
                        "name → genes), or pass the path to genodae.enrich.enrich / genodae.tl.enrich / genodae enrich")
    first = 2 if description else 1
    sets: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) < first + 1:
            raise UserError(f"{path}, line {i}: a GMT line needs name, {'description and ' if description else ''}"
                            "at least one gene, separated by tabs")
        name = fields[0].strip()
        if name in sets:
            raise UserError(f"{path}, line {i}: gene set {name!r} appears twice")
        genes = list(dict.fromkeys(g.strip() for g in fields[first:] if g.strip()))
        if genes:
            sets[name] = genes
            if description:
                descriptions[name] = fields[1].strip()
    if not sets:
        raise UserError(f"{path} holds no gene sets")
    log.info("read %d gene sets from %s", len(sets), path)
    return sets, descriptions


def _as_gene_sets(gene_sets: object, where: str = "gene_sets") -> dict[str, list[str]]:
    """``{name: [genes]}`` from a mapping whose values are collections of genes; anything else is a UserError."""
    if not isinstance(gene_sets, Mapping):
        raise UserError(f"{where} must map each set name to its list of genes ({{'SET_A': ['GENE1', 'GENE2']}}), "
                        f"not be a {type(gene_sets).__name__}")
    sets: dict[str, list[str]] = {}
    for name, genes in gene_sets.items():
        if isinstance(genes, (str, bytes, Mapping)) or not isinstance(genes, Iterable):
            raise UserError(f"gene set {name!r} of {where} is a {type(genes).__name__}, not a list of genes: give "
                            f"each set as a list, e.g. {{{str(name)!r}: ['GENE1', 'GENE2']}}")
        genes = list(dict.fromkeys(str(g).strip() for g in genes if str(g).strip()))
        if genes:
            sets[str(name)] = genes
    if not sets:
        raise UserError(f"{where} holds no gene sets")
    return sets


def _gene_sets_arg(gene_sets: object) -> tuple[dict[str, list[str]], dict[Path, dict[str, str]]]:
    """``enrich``'s ``gene_sets`` as ``{name: [genes]}``, and the descriptions of the sets read from each GMT file."""
    if isinstance(gene_sets, Mapping):
        return _as_gene_sets(gene_sets), {}
    paths = [gene_sets] if isinstance(gene_sets, (str, Path)) else gene_sets
    usage = ("gene_sets takes a GMT or JSON file path, a list of such paths, or a dict mapping each set name to "
             "its list of genes ({'SET_A': ['GENE1', 'GENE2']})")
    if not isinstance(paths, (list, tuple)) or not paths:
        raise UserError(f"{usage}, not {'an empty ' if isinstance(paths, (list, tuple)) else 'a '}"
                        f"{type(paths).__name__}")
    other = [p for p in paths if not isinstance(p, (str, Path))]
    if other:
        raise UserError(f"{usage}, not a {type(paths).__name__} of {type(other[0]).__name__}s")
    if len(paths) > 1 and not any(Path(p).is_file() for p in paths):
        raise UserError(f"none of the {len(paths)} paths in gene_sets is a file (e.g. {str(paths[0])!r}); {usage}")
    sets: dict[str, list[str]] = {}
    descriptions: dict[Path, dict[str, str]] = {}
    for p in paths:
        file_sets, descriptions[Path(p)] = _read_sets(p)
        for name, genes in file_sets.items():
            if name in sets:
                raise UserError(f"gene set {name!r} appears in more than one gene-set file; rename it in one of them")
            sets[name] = genes
    return sets, descriptions


def _warn_missing_descriptions(descriptions: dict[Path, dict[str, str]], background: set[str]) -> None:
    """Warn about GMT files where a set's description field is one of the model's genes (and not the set's name):
    real descriptions (a URL, a sentence, 'na', the name) never are, while a line written without the field has
    its first gene there, which is then not counted."""
    for path, desc in descriptions.items():
        suspect = [name for name, d in desc.items() if d in background and d != name]
        if suspect:
            log.warning("%s: the description field (2nd column) of %d of its %d gene sets is a gene of the model "
                        "(e.g. set %s: %s), so that gene is not counted; if the file has no description column, "
                        "add one after each set name (e.g. 'na'), or read it with genodae.enrich.read_gmt(path, "
                        "description=False) and pass the dict", path, len(suspect), len(desc), suspect[0],
                        desc[suspect[0]])


def read_id_map(path: str | Path, *, source: str | None = None, target: str | None = None) -> pd.Series:
    """Read an identifier map (e.g. Ensembl ID → symbol) from a CSV/TSV with a header.

    ``source``/``target`` name the columns; by default the first two. Rows with an empty target are
    dropped; a source mapped to several targets keeps the first. Returns a Series indexed by source.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"identifier map {path} not found")
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    bad: list[list[str]] = []

    def skip(line: list[str]) -> None:  # a malformed line (e.g. a header pasted mid-file) is left out
        bad.append(line)

    try:
        df = pd.read_csv(path, sep=sep, dtype=str, engine="python", on_bad_lines=skip)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"identifier map {path} cannot be read: {str(e).splitlines()[0]}") from None
    if bad:
        log.warning("identifier map %s: %d malformed line(s) skipped (e.g. %s)", path, len(bad),
                    "\t".join(bad[0])[:80])
    if df.shape[1] < 2:
        raise UserError(f"identifier map {path} needs at least two columns (from, to) separated by "
                        f"{'commas' if sep == ',' else 'tabs'}")
    source = source or df.columns[0]
    target = target or df.columns[1]
    for c in (source, target):
        if c not in df.columns:
            raise UserError(f"identifier map {path} has no column {c!r}; columns: {', '.join(df.columns)}")
    df = df[[source, target]].dropna()
    df = df[df[target].str.strip() != ""]
    return df.drop_duplicates(source).set_index(source)[target]


def map_ids(genes: Sequence[str], mapping: pd.Series | Mapping[str, str]) -> pd.Series:
    """Map gene identifiers; identifiers not in the map keep their own name. Returns a Series old → new."""
    mapping = pd.Series(mapping) if not isinstance(mapping, pd.Series) else mapping
    genes = pd.Index(list(map(str, genes)))
    mapped = pd.Series(genes.map(mapping), index=genes)
    hit = mapped.notna()
    log.info("mapped %d of %d identifiers", int(hit.sum()), len(genes))
    return mapped.where(hit, pd.Series(genes, index=genes))


def _signature_sets(signatures: pd.DataFrame | GeneSets) -> pd.DataFrame:
    """(node, direction, signature, genes) rows from a signatures table or a dict of named gene lists."""
    if isinstance(signatures, pd.DataFrame):
        need = {"node", "direction", "gene"}
        if not need <= set(signatures.columns):
            raise UserError(f"signatures table needs columns {', '.join(sorted(need))}; got "
                            f"{', '.join(map(str, signatures.columns))}")
        rows = []
        for (node, direction), g in signatures.groupby(["node", "direction"], observed=True, sort=False):
            rows.append((str(node), str(direction), f"{node}{'+' if direction == 'pos' else '-'}",
                         list(map(str, g["gene"]))))
        return pd.DataFrame(rows, columns=["node", "direction", "signature", "genes"])
    for k, v in signatures.items():
        if isinstance(v, (str, bytes)):
            raise UserError(f"signature {k!r} is a string, not a list of genes: give each signature as a list, "
                            f"e.g. {{{str(k)!r}: ['GENE1', 'GENE2']}}")
    return pd.DataFrame([(str(k), "", str(k), list(map(str, v))) for k, v in signatures.items()],
                        columns=["node", "direction", "signature", "genes"])


def enrich(
    signatures: pd.DataFrame | GeneSets,
    gene_sets: GeneSets | str | Path | Sequence[str | Path],
    *,
    background: Sequence[str],
    id_map: pd.Series | Mapping[str, str] | None = None,
    min_size: int = 5,
    max_size: int = 1000,
    correction: str = "node",
) -> pd.DataFrame:
    """One-sided over-representation of gene sets in each signature, against the model's genes.

    Parameters
    ----------
    signatures
        A :func:`genodae.tl.signatures` table (node, direction, gene …) or a dict ``name → genes``.
    gene_sets
        Dict ``term → list of genes``, or the path of a GMT or JSON file (see :func:`read_gene_sets`), or a list of
        such paths (a set name must not repeat across them). A GMT set whose description field is one of the
        background's genes (and not the set's name) is reported in a warning: the line was probably written
        without a description, and its first gene is not counted (see :func:`read_gmt`).
    background
        The genes the model used (``adata.var_names[genodae.signatures.genes_used(adata)]``): the universe
        of the test. Signatures and gene sets are restricted to it.
    id_map
        Maps the model's identifiers to those of the gene sets (e.g. from :func:`read_id_map`); applied to
        signatures and background alike, duplicates after mapping collapse.
    min_size, max_size
        Gene sets with fewer/more genes in the background are not tested (and not counted); whole numbers,
        ``1 <= min_size <= max_size``.
    correction
        Benjamini–Hochberg over all (tail, term) tests of each ``node`` (eADAGE), or per ``signature``
        (each tail alone), or ``all`` (one family).

    Raises
    ------
    UserError
        For ``gene_sets`` of another kind or a set given as a string, an unreadable gene-set file, invalid
        ``min_size``/``max_size``/``correction``, signature genes outside the background, and when no gene set
        has an admissible size in the background (the message says whether the identifiers, the id map or the
        size limits are the cause).

    Returns
    -------
    One row per (signature, gene set) with an overlap: ``node``, ``direction``, ``signature``, ``term``,
    ``overlap``, ``signature_size``, ``set_size``, ``background_size``, ``odds_ratio`` (with gseapy's
    Haldane–Anscombe +0.5), ``pvalue``, ``fdr``, ``genes`` (the overlap, ``;``-separated); sorted by node and
    p-value. Signatures of an ensemble's consensus nodes (a table with ``near_copy_of``) keep that column.

    Examples
    --------
    >>> sig = genodae.tl.signatures(adata)
    >>> bg = adata.var_names[genodae.signatures.genes_used(adata, "dae_sparse")]
    >>> res = genodae.enrich.enrich(sig, "h.all.v7.0.symbols.gmt", background=bg)
    """
    from gseapy.stats import calc_pvalues

    if correction not in ("node", "signature", "all"):
        raise UserError(f"correction must be node, signature or all, not {correction!r}")
    whole = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (min_size, max_size))
    if not whole or min_size < 1 or max_size < min_size:
        raise UserError(f"min_size and max_size must be whole numbers with min_size >= 1 and max_size >= min_size "
                        f"(got min_size={min_size!r}, max_size={max_size!r})")
    t0 = time.perf_counter()
    gene_sets, descriptions = _gene_sets_arg(gene_sets)
    sigs = _signature_sets(signatures)
    if not len(sigs):
        log.warning("no signatures to test: the enrichment table is empty (signatures read from a model: no gene is "
                    "beyond the cutoff of any node; a lower sd_cutoff, genodae enrich --sd-cutoff, gives some)")
    model_ids = pd.Index(list(map(str, background)))
    bg, n_mapped = model_ids, None
    if id_map is not None:
        id_map = id_map if isinstance(id_map, pd.Series) else pd.Series(id_map, dtype=object)
        n_mapped = int(model_ids.isin(id_map.index).sum())
        m = map_ids(model_ids, id_map)
        sigs["genes"] = [list(dict.fromkeys(m.get(g, g) for g in genes)) for genes in sigs["genes"]]
        bg = pd.Index(m.to_numpy())
    bg = pd.Index(pd.unique(bg))
    bg_set = set(bg)
    if len(bg_set) == 0:
        raise UserError("the background (genes the model used) is empty")
    _warn_missing_descriptions(descriptions, bg_set)
    outside = {g for genes in sigs["genes"] for g in genes} - bg_set
    if outside:
        raise UserError(f"{len(outside)} signature gene(s) are not in the background (e.g. {sorted(outside)[:3]}); "
                        "the background must be the genes the model used")
    sets = {t: [g for g in dict.fromkeys(map(str, genes)) if g in bg_set] for t, genes in gene_sets.items()}
    tested = {t: g for t, g in sets.items() if min_size <= len(g) <= max_size}
    if not tested:
        example_bg = ", ".join(list(bg[:3]))
        example_set = ", ".join(next(iter(gene_sets.values()))[:3]) if gene_sets else ""
        sizes = [len(g) for g in sets.values()]
        best = max(sizes, default=0)
        head = f"none of the {len(gene_sets)} gene sets has {min_size}-{max_size} genes among the model's {len(bg_set)} genes"
        if best == 0 or best < min(min_size, 3):  # (next to) no overlap at all: the identifiers do not match
            if n_mapped == 0:
                raise UserError(f"{head}: {_unmatched_map(model_ids, id_map)}")
            found = (f"model genes look like {example_bg}" if n_mapped is None else
                     f"the id map matched {n_mapped} of {len(model_ids)} model IDs, giving {example_bg}")
            fix = ("map identifiers with an id map (id_map=, genodae enrich --id-map)" if n_mapped is None else
                   "check that the map's target column (read_id_map's target=, genodae enrich --id-to) holds the "
                   "gene sets' kind of identifiers")
            raise UserError(f"{head} (largest overlap {best}; {found}, set genes like {example_set}); {fix} or use "
                            "matching gene sets")
        if best < min_size:
            raise UserError(f"{head}: the largest overlap is {best} genes, below min_size={min_size}; lower min_size "
                            "(genodae enrich --min-size) or train on more genes")
        raise UserError(f"{head}: every overlapping set has more than max_size={max_size} genes (smallest "
                        f"{min(x for x in sizes if x >= min_size)}); raise max_size (genodae enrich --max-size)")
    if n_mapped == 0:  # the sets match the unmapped IDs: the map did nothing
        log.warning("%s; the gene sets were matched to the model's own IDs", _unmatched_map(model_ids, id_map))
    rows = []
    n_tests: dict[str, int] = {}
    for s in sigs.itertuples(index=False):
        n_tests[s.signature] = len(tested)
        if not s.genes:
            continue
        res = list(calc_pvalues(query=set(s.genes), gene_sets=tested, background=bg_set))
        if not res:  # no gene set overlaps this signature
            continue
        for term, p, orr, k, m, hits in zip(*res, strict=True):
            rows.append((s.node, s.direction, s.signature, term, int(k), len(s.genes), int(m), len(bg_set),
                         float(orr), float(p), ";".join(sorted(map(str, hits)))))
    cols = ["node", "direction", "signature", "term", "overlap", "signature_size", "set_size", "background_size",
            "odds_ratio", "pvalue", "genes"]
    df = pd.DataFrame(rows, columns=cols)
    df["fdr"] = np.nan
    family = {"node": "node", "signature": "signature", "all": None}[correction]
    groups = [(None, df)] if family is None else df.groupby(family, sort=False)
    for name, g in groups:
        if family is None:
            m = sum(n_tests.values())
        elif family == "signature":
            m = n_tests[name]
        else:
            m = sum(n for sg, n in n_tests.items() if sg in set(sigs.loc[sigs["node"] == name, "signature"]))
        df.loc[g.index, "fdr"] = bh(g["pvalue"].to_numpy(), n_tests=m)
    df = df.sort_values(["node", "pvalue"], kind="stable").reset_index(drop=True)
    df = df[["node", "direction", "signature", "term", "overlap", "signature_size", "set_size", "background_size",
             "odds_ratio", "pvalue", "fdr", "genes"]]
    if isinstance(signatures, pd.DataFrame) and "near_copy_of" in signatures.columns:  # an ensemble's signatures
        first = signatures.drop_duplicates("node")
        marks = pd.Series(first["near_copy_of"].fillna("").astype(str).to_numpy(), index=first["node"].astype(str))
        df["near_copy_of"] = df["node"].map(marks).fillna("")
    log.info("enrichment of %d signatures against %d gene sets (%d tested; background %d genes) in %.1fs: "
             "%d signature-set pairs with FDR < 0.05", len(sigs), len(gene_sets), len(tested), len(bg_set),
             time.perf_counter() - t0, int((df["fdr"] < 0.05).sum()))
    return df


def _unmatched_map(model_ids: pd.Index, id_map: pd.Series) -> str:
    """What to say when an identifier map matches none of the model's identifiers."""
    text = (f"the id map matched 0 of the model's {len(model_ids)} gene IDs (model IDs look like "
            f"{', '.join(model_ids[:3])}; the map's like {', '.join(map(str, id_map.index[:3]))})")
    versioned = r"^ENS[A-Z]*\d{6,}\.\d+$"  # an Ensembl ID with its version suffix: ENSG00000141510.5
    model_v = model_ids.str.match(versioned).mean() > 0.5
    map_v = pd.Index(id_map.index.astype(str)).str.match(versioned).mean() > 0.5
    if model_v != map_v:
        text += (f"; the {'model' if model_v else 'map'}'s Ensembl IDs carry version suffixes (.N) and the "
                 f"{'map' if model_v else 'model'}'s do not")
    return text + ("; the map's first column (or the column named by read_id_map's source= / genodae enrich "
                   "--id-from) must hold the model's IDs exactly as they are")


def bh(pvalues: np.ndarray, *, n_tests: int | None = None) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values; ``n_tests`` ≥ len(pvalues) counts tests not listed (p = 1).

    scipy's :func:`scipy.stats.false_discovery_control` (``method="bh"``), on the p-values padded with ones for
    the tests not listed (which is what counting them means: their p is 1, so they rank last). NaN p-values give
    NaN throughout, as before."""
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=np.float64)
    n = len(p)
    m = n if n_tests is None else int(n_tests)
    if m < n:
        raise ValueError("n_tests must be at least the number of p-values")
    if n == 0:
        return p
    if np.isnan(p).any():
        return np.full(n, np.nan)
    padded = np.concatenate([np.clip(p, 0.0, 1.0), np.ones(m - n)])
    return false_discovery_control(padded, method="bh")[:n]


__all__ = ["bh", "enrich", "map_ids", "read_gene_sets", "read_gmt", "read_id_map"]
