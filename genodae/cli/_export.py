"""``genodae export`` and ``genodae plot``: tables and figures of an embedded .h5ad (no torch)."""

from __future__ import annotations

import argparse
import logging

from ..errors import UserError
from ._common import check_output, read_h5ad

log = logging.getLogger("genodae")


def register(sub) -> None:
    p = sub.add_parser("export", help="write the embedding and the gene weights of an embedded .h5ad as TSV")
    p.add_argument("input", help="embedded .h5ad (from genodae embed)")
    p.add_argument("--embedding", metavar="TSV", help="cells × nodes embedding table")
    p.add_argument("--weights", metavar="TSV", help="genes used × nodes gene-weight table")
    p.add_argument("--genes", metavar="TSV", help="per-gene table: used, reconstruction R², scaling")
    p.add_argument("--key", default="dae", help="prefix of the keys to read (default: dae)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="loss curves and a UMAP of the embedding")
    p.add_argument("input", help="embedded .h5ad")
    p.add_argument("-o", "--output", required=True, help="folder for loss.png and umap.png")
    p.add_argument("--color", nargs="*", action="extend", default=[], help="obs columns to colour the UMAP by")
    p.add_argument("--key", default="dae", help="prefix of the keys to read (default: dae)")
    p.set_defaults(func=cmd_plot)


def cmd_export(args: argparse.Namespace) -> None:
    from ..io import write_table
    from ..tables import export_tables

    if not (args.embedding or args.weights or args.genes):
        raise UserError("nothing to export: give --embedding, --weights and/or --genes")
    adata = read_h5ad(args.input, backed=True)  # only obs, var, obsm, varm and uns are read
    tables = export_tables(adata, key=args.key, source=args.input)
    for name in ("embedding", "weights", "genes"):
        path = getattr(args, name)
        if path:
            write_table(tables[name], check_output(path), sep="\t")
    adata.file.close()


def cmd_plot(args: argparse.Namespace) -> None:
    from .. import pl
    from ..io import atomic_path

    out = check_output(args.output, folder=True)
    adata = read_h5ad(args.input)
    pl._check_labels(adata, args.color)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)

    with atomic_path(out / "loss.png") as tmp:
        pl.loss(adata, key=args.key, save=tmp)
    with atomic_path(out / "umap.png") as tmp:
        pl.umap(adata, key=args.key, color=args.color, save=tmp)
    log.info("wrote %s/loss.png and umap.png", out)
