"""``genodae associate`` and ``genodae survival``: node activities against sample groups and outcomes (no torch)."""

from __future__ import annotations

import argparse

from .. import _keys as K
from ..errors import UserError
from ._common import ensure_key, key_arg, read_embedded, write_png, write_tsv


def register(sub) -> None:
    p = sub.add_parser("associate", help="node activities against sample groups (tests, effect sizes, FDR)")
    p.add_argument("input", help="embedded .h5ad")
    p.add_argument("-o", "--output", required=True, help="association TSV, one row per node")
    key_arg(p, default=K.DEFAULT_ROTATED)
    p.add_argument("--obs", metavar="SHEET", help="CSV/TSV of sample metadata keyed by sample name, joined into obs")
    p.add_argument("--groupby", required=True, help="obs column of sample groups")
    p.add_argument("--groups", nargs="+", help="groups to compare, in order (default: all)")
    p.add_argument("--test", choices=("auto", "mannwhitney", "ttest", "kruskal", "anova"), default="auto",
                   help="auto: Mann-Whitney for two groups, Kruskal-Wallis for more")
    p.add_argument("--plot", metavar="PNG", help="also plot the activity of the most associated nodes")
    p.set_defaults(func=cmd_associate)

    p = sub.add_parser("survival", help="Cox model per node (HR per SD, FDR) and Kaplan-Meier high vs low")
    p.add_argument("input", help="embedded .h5ad")
    p.add_argument("-o", "--output", required=True, help="Cox TSV, one row per node")
    key_arg(p, default=K.DEFAULT_ROTATED)
    p.add_argument("--obs", metavar="SHEET", help="CSV/TSV of clinical data keyed by sample name, joined into obs")
    p.add_argument("--duration", required=True, help="obs column of follow-up time (numbers >= 0 in one unit; empty = missing)")
    p.add_argument("--event", required=True, help="obs column of the event (0/1, or see --event-value)")
    p.add_argument("--event-value", help="value of --event that means the event happened (e.g. Dead)")
    p.add_argument("--covariates", nargs="+", help="obs columns added to every Cox model")
    p.add_argument("--km", metavar="PNG", help="also plot Kaplan-Meier curves of the top node (or --km-node)")
    p.add_argument("--km-node", help="node for the --km plot (default: smallest Cox p); needs --km")
    p.set_defaults(func=cmd_survival)


def cmd_associate(args: argparse.Namespace) -> None:
    from .. import pl
    from ..assoc import associate

    adata = read_embedded(args.input, args.obs)
    ensure_key(adata, args.key, need="obsm")
    res = associate(adata, key=args.key, groupby=args.groupby, groups=args.groups, test=args.test)
    write_tsv(res, args.output, index=False)
    if args.plot:
        top = res.sort_values("pvalue")["node"].head(3).tolist()
        write_png(args.plot, lambda tmp: pl.node_activity(adata, key=args.key, nodes=top, groupby=args.groupby,
                                                          save=tmp))


def cmd_survival(args: argparse.Namespace) -> None:
    from .. import pl
    from ..assoc import cox

    if args.km_node and not args.km:
        raise UserError("--km-node chooses the node of the Kaplan-Meier plot: give the plot's file with --km PNG too")
    adata = read_embedded(args.input, args.obs)
    ensure_key(adata, args.key, need="obsm")
    res = cox(adata, key=args.key, duration=args.duration, event=args.event, event_value=args.event_value,
              covariates=args.covariates)
    node = args.km_node or res["node"].iloc[0]
    if args.km_node and args.km_node not in set(res["node"]):
        raise UserError(f"--km-node {args.km_node!r} is not a node of {args.key}")
    write_tsv(res, args.output, index=False)
    if args.km:
        write_png(args.km, lambda tmp: pl.km(adata, key=args.key, node=node, duration=args.duration, event=args.event,
                                             event_value=args.event_value, save=tmp))
