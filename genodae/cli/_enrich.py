"""``genodae enrich``: gene-set over-representation of each signature (no torch)."""

from __future__ import annotations

import argparse
import math
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
    import pandas as pd

    from .. import pl
    from ..enrich import enrich
    from ..signatures import gene_weights, genes_used, high_weight_genes

    if args.sd_cutoff is not None and args.signatures:
        raise UserError("--sd-cutoff reads the signatures from the model, --signatures gives them: use one of the two")
    sd_cutoff = 2.5 if args.sd_cutoff is None else args.sd_cutoff
    if not (math.isfinite(sd_cutoff) and sd_cutoff > 0):
        raise UserError(f"--sd-cutoff must be a number > 0, not {sd_cutoff}")
    adata = read_embedded(args.input)
    ensure_key(adata, args.key)
    if args.signatures:
        path = Path(args.signatures)
        if not path.is_file():
            raise UserError(f"signatures table {path} not found")
        table = pd.read_csv(path, sep="\t")
        check_table_key(table, gene_weights(adata, args.key), args.key, path)
    else:
        table = high_weight_genes(gene_weights(adata, args.key), sd_cutoff=sd_cutoff)
    res = enrich(table, args.gene_sets, background=adata.var_names[genes_used(adata, args.key)], id_map=id_map(args),
                 min_size=args.min_size, max_size=args.max_size, correction=args.correction)
    write_tsv(res, args.output, index=False)
    if args.dotplot:
        write_png(args.dotplot, lambda tmp: pl.enrichment_dotplot(adata, table=res, save=tmp))


def check_table_key(table, weights, key: str, path) -> None:
    """A signatures table given with ``--signatures`` must be one of ``--key``'s read-outs: its nodes are nodes of
    ``key`` and, where it has a ``weight`` column (``genodae signatures`` writes one), its weights are ``key``'s
    (to the 4 significant digits a TSV keeps at least). Otherwise the table's genes would be tested against another
    model's background, or the enrichment filed under nodes of a model the table was not read from."""
    import numpy as np

    if "node" not in table.columns or "gene" not in table.columns:
        return  # enrich names the missing columns
    nodes = list(map(str, weights.columns))
    other = sorted(set(map(str, table["node"])) - set(nodes))
    if other:
        raise UserError(f"signatures table {path} has nodes that --key {key} does not have ({', '.join(other[:3])}"
                        f"{' …' if len(other) > 3 else ''}; {key}'s nodes: {nodes[0]} … {nodes[-1]}): pass the --key "
                        "the table was made from")
    if "weight" not in table.columns:
        return
    t = table[table["gene"].astype(str).isin(weights.index)]
    if not len(t):
        return  # genes outside the background: enrich names them
    w = pd_lookup(weights, t["gene"].astype(str).to_numpy(), t["node"].astype(str).to_numpy())
    given = np.asarray(t["weight"], dtype=np.float64)
    if not np.allclose(given, w, rtol=1e-3, atol=1e-6 * max(1.0, float(np.nanmax(np.abs(w))))):
        raise UserError(f"signatures table {path} has other weights than --key {key} for the same genes and nodes "
                        "(it was read from another model or read-out): pass the --key the table was made from")


def pd_lookup(weights, genes, nodes):
    """``weights.loc[gene, node]`` for each (gene, node) pair."""
    rows = weights.index.get_indexer(genes)
    cols = weights.columns.astype(str).get_indexer(nodes)
    return weights.to_numpy(dtype=float)[rows, cols]
