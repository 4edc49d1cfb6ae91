"""``genodae train``, ``embed`` and ``map``: the commands that fit a model or apply a saved one (they need torch)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import UserError
from ._common import (
    check_denoised_flags,
    check_output,
    denoised_scale_arg,
    make_model,
    model_args,
    read,
    read_h5ad,
    saved_model_options,
    settings,
    settings_arg,
    use_threads,
)

log = logging.getLogger("genodae")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a DAE on a prepared .h5ad and save the model folder")
    p.add_argument("input", help="prepared .h5ad (from genodae prepare)")
    p.add_argument("-o", "--output", required=True, help="model folder to write")
    p.add_argument("--layer", help="train on this layer instead of X")
    p.add_argument("--backed", action="store_true",
                   help="read the prepared .h5ad from disk in chunks instead of loading it (data larger than RAM)")
    settings_arg(p)
    model_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="project data (raw or prepared) onto a saved model; write an annotated .h5ad")
    p.add_argument("input", help="any readable matrix; raw data get the model's own preparation")
    p.add_argument("model", help="model folder (from genodae train)")
    p.add_argument("-o", "--output", required=True, help="annotated .h5ad")
    p.add_argument("--key", default="dae", help="prefix of the keys written (default: dae)")
    p.add_argument("--denoised", action="store_true", help="also write layers['<key>_denoised'] (dense)")
    denoised_scale_arg(p)
    saved_model_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("map", help="reference mapping: extend a model trained with --batch-key to new batches, "
                       "training only their parameters (scArches), and save the mapped model")
    p.add_argument("input", help="query cells (any readable matrix) with the model's batch column in obs (--obs)")
    p.add_argument("model", help="reference model folder (from genodae train with --batch-key)")
    p.add_argument("-o", "--output", required=True, help="mapped model folder to write (then: genodae embed QUERY OUTPUT)")
    p.add_argument("--epochs", type=int, default=None, help="epochs for the new batches' parameters (default: the model's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's)")
    saved_model_options(p)
    p.set_defaults(func=cmd_map)


def cmd_train(args: argparse.Namespace) -> None:
    from ..train import check_checkpoint_dir, remove_checkpoint

    out = check_output(args.output, folder=True)
    _, dae = settings(args)
    model = make_model(dae)
    use_threads(model)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.name + ".ckpt")
    if args.checkpoint_every or args.resume:
        check_checkpoint_dir(ckpt, "remove it, or give another folder with --checkpoint-dir")
    if args.backed:
        from ..io import read_backed

        adata = read_backed(args.input)
    else:
        adata = read_h5ad(args.input, sharing=True, layer=args.layer)
    model.fit(adata, layer=args.layer, checkpoint_dir=ckpt if args.checkpoint_every or args.resume else None,
              checkpoint_every=args.checkpoint_every, resume=args.resume)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # launched by torchrun: rank 0 writes
        rank = dist.get_rank()
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return
    model.save(out)
    remove_checkpoint(ckpt)  # the finished model supersedes the checkpoint
    log.info("wrote model to %s", out)


def cmd_embed(args: argparse.Namespace) -> None:
    from ..io import write_h5ad
    from ..model import DAE

    out = check_output(args.output, inputs=(args.input,), suffix=".h5ad")
    check_denoised_flags(args)
    model = DAE.load(args.model, device=args.device)
    use_threads(model, args.num_threads)
    opts = dict(key_added=args.key, denoised=args.denoised, denoised_scale=args.denoised_scale,
                transform_batch=args.transform_batch, allow_missing_genes=args.allow_missing_genes)
    if _streams(args, model):  # a prepared .h5ad: read and written in chunks, never whole in memory
        model.annotate_h5ad(args.input, out, **opts)
        return
    adata = read(args)
    model.annotate(adata, **opts)
    write_h5ad(adata, out)


def _streams(args: argparse.Namespace, model) -> bool:
    """Whether ``genodae embed`` can read and write the input .h5ad in chunks: a prepared .h5ad holding every gene
    of a model trained on X, with nothing to join (no --obs, --cls)."""
    if not str(args.input).endswith(".h5ad") or args.obs or args.cls or model.layer is not None:
        return False
    from ..io import read_backed
    from ..pp import PREP_KEY

    try:
        adata = read_backed(args.input)
    except UserError:
        return False  # the in-memory reader says what is wrong
    try:
        return PREP_KEY in adata.uns and bool(model.genes.isin(adata.var_names).all()) and adata.var_names.is_unique
    finally:
        adata.file.close()


def cmd_map(args: argparse.Namespace) -> None:
    from ..model import DAE

    out = check_output(args.output, folder=True)
    if Path(args.model).exists() and out.exists() and out.resolve() == Path(args.model).resolve():
        raise UserError(f"output {out} is the reference model: write the mapped model to another folder")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, not {args.epochs}")
    model = DAE.load(args.model, device=args.device)
    use_threads(model, args.num_threads)
    adata = read(args)
    mapped = model.map_query(adata, epochs=args.epochs, lr=args.lr, allow_missing_genes=args.allow_missing_genes)
    mapped.save(out)
    log.info("wrote the mapped model to %s; embed the query with: genodae embed QUERY %s -o OUT.h5ad", out, out)
