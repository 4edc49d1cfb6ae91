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
    else:
        table = high_weight_genes(gene_weights(adata, args.key), sd_cutoff=sd_cutoff)
    res = enrich(table, args.gene_sets, background=adata.var_names[genes_used(adata, args.key)], id_map=id_map(args),
                 min_size=args.min_size, max_size=args.max_size, correction=args.correction)
    write_tsv(res, args.output, index=False)
    if args.dotplot:
        write_png(args.dotplot, lambda tmp: pl.enrichment_dotplot(adata, table=res, save=tmp))
