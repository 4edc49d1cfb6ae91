"""``genodae example`` and ``genodae prepare``: data in, model input out."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..config import PrepareConfig
from ..errors import UserError
from ._common import add_dataclass_flags, check_output, inputs, read, read_options, settings, settings_arg

log = logging.getLogger("genodae")


def register(sub) -> None:
    p = sub.add_parser("example", help="write the built-in example dataset (700 PBMCs, raw counts) as .h5ad")
    p.add_argument("-o", "--output", required=True, help="output .h5ad")
    p.set_defaults(func=cmd_example)

    p = sub.add_parser("prepare", help="read any supported matrix, normalise, select genes, compute scaling")
    p.add_argument("input", nargs="*", help="h5ad, loom, 10x dir/.h5, CSV/TSV(.gz), GCT or GSEA .txt; several files "
                   "(samples, plates, technologies) become one dataset with a batch column (--batch-key)")
    p.add_argument("-o", "--output", required=True, help="prepared .h5ad")
    read_options(p, several=True)
    p.add_argument("--backed", action="store_true",
                   help="read an .h5ad from disk and write the prepared file in chunks, never holding the matrix "
                        "(data larger than RAM; seurat_v3 or no gene selection). Without it, a single .h5ad is "
                        "prepared this way too when the settings allow, else in memory")
    p.add_argument("--require-obs", nargs="+", default=[], metavar="COLUMN",
                   help="obs columns the data must have (after joining sample sheets and batches): a missing one "
                        "is an error before any work (the workflow passes the sheet's labels, plots.color and "
                        "signatures.groupby)")
    settings_arg(p)
    add_dataclass_flags(p, PrepareConfig, "preparation settings")
    p.set_defaults(func=cmd_prepare)


def cmd_example(args: argparse.Namespace) -> None:
    from ..datasets import pbmc68k_counts
    from ..io import write_h5ad

    out = check_output(args.output)
    write_h5ad(pbmc68k_counts(), out)


def cmd_prepare(args: argparse.Namespace) -> None:
    from ..io import write_h5ad
    from ..pp import prepare

    out = check_output(args.output, inputs=tuple(inputs(args)), suffix=".h5ad")
    prep, _ = settings(args)
    if prepare_chunked(args, prep):
        from .._pp_chunked import Unsupported
        from ..io import read_backed
        from ..pp import prepare_h5ad

        if args.require_obs:  # only obs is read; the matrix stays on disk
            backed = read_backed(args.input[0])
            try:
                require_obs(backed.obs.columns, args.require_obs, args.input[0])
            finally:
                backed.file.close()
        try:
            prepare_h5ad(args.input[0], out, **prep)
            return
        except Unsupported as e:
            if args.backed:
                raise
            log.info("prepare: %s; preparing in memory", e)
    adata = read(args, prep)
    require_obs(adata.obs.columns, args.require_obs, ", ".join(map(str, inputs(args))))
    prepare(adata, **prep)
    write_h5ad(adata, out)


def require_obs(columns, required, source: str) -> None:
    """``--require-obs``: every required obs column is present, else one error naming them all and what exists."""
    missing = [c for c in dict.fromkeys(required) if c not in set(map(str, columns))]
    if missing:
        have = ", ".join(map(str, columns)) or "none"
        raise UserError(f"{source}: obs has no column {', '.join(map(repr, missing))} (asked for by --require-obs; "
                        f"its obs columns: {have}); fix the column name (in the workflow: the datasets sheet's "
                        "labels, plots.color or signatures.groupby) or add it with a sample sheet")


def prepare_chunked(args: argparse.Namespace, prep: dict[str, Any]) -> bool:
    """Whether ``genodae prepare`` prepares in chunks from disk: with ``--backed`` (refused when the input cannot be),
    and by default for one .h5ad with nothing to join (no --obs, --batches) and settings the chunked path supports
    (the same output, far less memory)."""
    from .._pp_chunked import supports

    single = (len(args.input) == 1 and str(args.input[0]).lower().endswith(".h5ad") and not args.batches
              and not args.obs and not args.cls and not getattr(args, "genome", None)
              and not getattr(args, "delimiter", None) and not getattr(args, "decimal", None))
    why = supports(PrepareConfig(**prep))
    if getattr(args, "backed", False):
        if not single:
            raise UserError("--backed prepares one .h5ad file (no --obs, --batches or several inputs); join sample "
                            "sheets and concatenate files first, or prepare in memory")
        if why:
            raise UserError(f"--backed cannot use {why}; prepare in memory (without --backed)")
        return True
    if not single or why or args.missing != "error" or args.orientation == "genes_by_samples":
        return False
    from ..io import read_backed

    try:
        adata = read_backed(args.input[0])
    except UserError:
        return False  # the in-memory reader says what is wrong
    try:  # names the in-memory reader would make unique (or refuse) go through it
        return bool(adata.obs_names.is_unique and adata.var_names.is_unique and adata.n_obs and adata.n_vars)
    finally:
        adata.file.close()
