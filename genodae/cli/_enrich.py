"""``genodae enrich``: gene-set over-representation of each signature (no torch)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path

from .. import _keys as K
from ..errors import UserError
from ._common import ensure_key, id_map, key_arg, read_embedded, write_png, write_tsv


def register(sub) -> None:
    p = sub.add_parser("enrich", help="gene-set over-representation of each signature (GMT), BH per node")
    p.add_argument("input", help="embedded .h5ad (its model's genes are the background)")
    p.add_argument("-o", "--output", required=True, help="enrichment TSV")
    p.add_argument("--gene-sets", nargs="+", required=True, metavar="FILE",
                   help="one or more gene-set files: GMT, or JSON mapping each set name to its list of genes")
    key_arg(p, default=K.DEFAULT_ROTATED)
    p.add_argument("--signatures", metavar="TSV", help="signatures table (default: read from the model at --sd-cutoff)")
    p.add_argument("--sd-cutoff", type=float, help="when no signatures table is given (default: 2.5)")
    p.add_argument("--id-map", metavar="TABLE", help="CSV/TSV mapping the model's gene IDs to those of the gene sets")
    p.add_argument("--id-from", help="column of the model's IDs in --id-map (default: first)")
    p.add_argument("--id-to", help="column of the gene-set IDs in --id-map (default: second)")
    p.add_argument("--min-size", type=int, default=5, help="smallest gene set tested, within the background (default: 5)")
    p.add_argument("--max-size", type=int, default=1000, help="largest gene set tested (default: 1000)")
    p.add_argument("--correction", choices=("node", "signature", "all"), default="node",
                   help="Benjamini-Hochberg family (default: node, both tails together)")
    p.add_argument("--dotplot", metavar="PNG", help="also plot the enriched sets")
    p.set_defaults(func=cmd_enrich)


def cmd_enrich(args: argparse.Namespace) -> None:
    from .. import pl
    from ..enrich import enrich
    from ..signatures import gene_weights, genes_used, high_weight_genes, with_near_copies

    if args.sd_cutoff is not None and args.signatures:
        raise UserError("--sd-cutoff reads the signatures from the model, --signatures gives them: use one of the two")
    sd_cutoff = 2.5 if args.sd_cutoff is None else args.sd_cutoff
    if not (math.isfinite(sd_cutoff) and sd_cutoff > 0):
        raise UserError(f"--sd-cutoff must be a number > 0, not {sd_cutoff}")
    adata = read_embedded(args.input)
    ensure_key(adata, args.key)
    if args.signatures:
        table = read_signatures_table(args.signatures)
        check_table_key(table, adata, args.key, args.signatures)
    else:
        table = with_near_copies(high_weight_genes(gene_weights(adata, args.key), sd_cutoff=sd_cutoff), adata, args.key)
        if not len(table) and args.sd_cutoff is not None:
            raise UserError(f"no gene of {args.key} is beyond ±{sd_cutoff:g} SD of its node's weights: no signatures "
                            "to test; lower --sd-cutoff")
    res = enrich(table, args.gene_sets, background=adata.var_names[genes_used(adata, args.key)], id_map=id_map(args),
                 min_size=args.min_size, max_size=args.max_size, correction=args.correction)
    write_tsv(res, args.output, index=False)
    if args.dotplot:
        write_png(args.dotplot, lambda tmp: pl.enrichment_dotplot(adata, table=res, save=tmp))


def read_signatures_table(path):
    """The ``--signatures`` table (tab-separated, as ``genodae signatures`` writes it; .gz read too). Raises
    UserError for a file that is no such table."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        raise UserError(f"signatures table {path} is a folder; give the TSV file genodae signatures wrote")
    if not path.is_file():
        raise UserError(f"signatures table {path} not found")
    try:
        table = pd.read_csv(path, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"signatures table {path} is not a readable tab-separated table ({type(e).__name__}): give "
                        "the TSV genodae signatures wrote (columns node, direction, gene …)") from None
    if not len(table):
        raise UserError(f"signatures table {path} has no rows (no signatures to test)")
    if len(table.columns) == 1 and "," in str(table.columns[0]):
        raise UserError(f"signatures table {path} looks comma-separated: give it tab-separated (as genodae "
                        "signatures writes it), with columns node, direction, gene")
    if "direction" in table.columns:
        bad = sorted(set(map(str, table["direction"].dropna())) - {"pos", "neg"})
        if bad:
            raise UserError(f"signatures table {path}: direction must be pos or neg, not {', '.join(bad[:3])}")
    if "weight" in table.columns:
        w = pd.to_numeric(table["weight"], errors="coerce")
        bad = table["weight"][w.isna() & table["weight"].notna()]
        if len(bad):
            raise UserError(f"signatures table {path}: the weight column holds non-numbers (e.g. {bad.iloc[0]!r}); "
                            "write decimals with a point, or drop the column")
        table = table.assign(weight=w)
    return table


def check_table_key(table, adata, key: str, path) -> None:
    """A signatures table given with ``--signatures`` must be one of ``--key``'s read-outs: its nodes are nodes of
    ``key`` and, where it has a ``weight`` column (``genodae signatures`` writes one), its weights are those of
    ``key`` (rounded to 3 decimals at worst, as a spreadsheet may write them; rows without a weight are not
    compared) in either read-out, correlation or decoder weights (``genodae signatures --readout``). Otherwise the
    enrichment would be filed under nodes of a model the table was not read from. The error names the key whose
    weights the table does match, among the file's models and their sparse and varimax rotations, if one does.
    Raises UserError."""
    from ..signatures import gene_weights

    if "node" not in table.columns or "gene" not in table.columns:
        return  # enrich names the missing columns
    weights = gene_weights(adata, key)
    if _matches(table, weights):
        return
    found = []
    for name, readout, W in _readouts(adata, skip=key):
        if _matches(table, W):
            if name == key:
                return  # key's other read-out (genodae signatures --readout weights)
            found.append(name + ("" if readout == "correlation" else " (read out with --readout weights)"))
    found = list(dict.fromkeys(found))
    drop = " (or, for a table edited by hand, remove its weight column)" if "weight" in table.columns else ""
    fix = (f"pass --key {found[0]}" if len(found) == 1 else
           f"pass the --key it was read from ({', '.join(found)})" if found else
           f"pass the .h5ad and --key it was read from{drop}")
    nodes = list(map(str, weights.columns))
    other = sorted(set(map(str, table["node"])) - set(nodes))
    what = (f"has nodes that --key {key} does not have ({', '.join(other[:3])}{' …' if len(other) > 3 else ''}; "
            f"{key}'s nodes: {nodes[0]} … {nodes[-1]})" if other else
            f"has other weights than --key {key} for the same genes and nodes (it was read from another model or "
            "read-out)")
    raise UserError(f"signatures table {path} {what}: {fix}")


def _readouts(adata, skip: str):
    """(key, readout, genes × nodes weights) of every read-out a table of ``adata`` may come from: the weights
    stored under each key (but ``skip``, already compared), and for each model key its sparse and varimax rotations
    in the read-outs not stored (computed on a temporary key, then removed; only when a table does not match
    ``--key`` as given)."""
    from ..signatures import gene_weights, rotate

    stored = K.weights_keys(adata.varm)
    for k in stored:
        rec = adata.uns.get(k)
        readout = str(rec.get("readout", "correlation")) if isinstance(rec, Mapping) else "correlation"
        if k != skip:
            yield k, readout, gene_weights(adata, k)
    for k in stored:
        if K.rotated_source(k) is not None and K.rotated_source(k)[0] in stored:
            continue  # a rotation of a model of this file: its own rotations are not tables' sources
        for method in K.ROTATION_METHODS:
            rec = adata.uns.get(K.rotated_key(k, method))
            have = str(rec.get("readout")) if isinstance(rec, Mapping) and K.rotated_key(k, method) in stored else None
            for readout in [r for r in ("correlation", "weights") if r != have]:  # the stored one is compared above
                tmp = f"_check_{K.rotated_key(k, method)}_{readout}"  # in memory only; enrich writes no .h5ad
                try:
                    rotate(adata, key=k, method=method, readout=readout, key_added=tmp)
                    W = gene_weights(adata, tmp)
                except UserError:
                    continue  # e.g. the correlation read-out of a file whose X holds raw counts
                finally:
                    adata.uns.pop(tmp, None)
                    adata.obsm.pop(K.embedding_key(tmp), None)
                    if K.weights_key(tmp) in adata.varm:
                        del adata.varm[K.weights_key(tmp)]
                yield K.rotated_key(k, method), readout, W


def _matches(table, weights) -> bool:
    """The table's nodes are columns of ``weights`` and its weights (where given) are theirs, to 3 decimals."""
    import numpy as np

    nodes = list(map(str, weights.columns))
    if not set(map(str, table["node"])) <= set(nodes):
        return False
    if "weight" not in table.columns:
        return True
    t = table[table["gene"].astype(str).isin(weights.index) & table["weight"].notna()]
    if not len(t):
        return True  # genes outside the background: enrich names them
    rows = weights.index.get_indexer(t["gene"].astype(str).to_numpy())
    cols = weights.columns.astype(str).get_indexer(t["node"].astype(str).to_numpy())
    w = weights.to_numpy(dtype=float)[rows, cols]
    scale = float(np.nanmax(np.abs(w))) if len(w) else 1.0
    return bool(np.allclose(np.asarray(t["weight"], dtype=np.float64), w, rtol=1e-3, atol=max(6e-4, 1e-3 * scale)))
