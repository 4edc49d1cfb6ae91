"""``genodae run``: prepare → train → embed → export (and plots) in one go, through files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import PrepareConfig
from ..errors import UserError
from ._common import (
    add_dataclass_flags,
    check_denoised_flags,
    check_output,
    denoised_scale_arg,
    input_paths,
    inputs,
    make_model,
    model_args,
    read,
    read_h5ad,
    read_options,
    settings,
    settings_arg,
    use_threads,
)
from ._prepare import prepare_chunked

log = logging.getLogger("genodae")


def register(sub) -> None:
    p = sub.add_parser("run", help="prepare, train, embed and export in one go")
    p.add_argument("input", nargs="*", help="any readable matrix; several files become one dataset with a batch "
                   "column (--batch-key)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--color", nargs="*", action="extend", default=[], help="obs columns to colour the UMAP by (plots when given)")
    p.add_argument("--denoised", action="store_true", help="also write layers['dae_denoised'] (dense)")
    denoised_scale_arg(p)
    read_options(p, several=True)
    settings_arg(p)
    add_dataclass_flags(p, PrepareConfig, "preparation settings")
    model_args(p, skip=("batch_key",))  # one --batch-key: the preparation's, also the model's
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> None:
    """prepare → train → embed → export, each step as its own command does it, through files: the prepared
    .h5ad is written (under a temporary name) and the in-memory data freed before training, and the embedding
    streams from the prepared file to the embedded one, so the peak memory is that of the largest step, not their
    sum. Outputs get their names only when everything succeeded."""
    import os
    import uuid

    from .. import pl
    from ..io import write_h5ad
    from ..pp import prepare
    from ..train import remove_checkpoint

    out = check_output(args.output, folder=True)
    if out.suffix.lower() == ".h5ad":
        raise UserError(f"output {out} ends in .h5ad, but genodae run writes a folder of results (prepared.h5ad, "
                        f"model/, embedded.h5ad, tables, plots): give a folder name, e.g. {out.with_suffix('')}")
    _check_inputs_not_written(args, out, inputs(args))
    if args.checkpoint_every or args.resume:
        from ..train import check_checkpoint_dir

        check_checkpoint_dir(out / "model.ckpt", f"remove {out / 'model.ckpt'} (genodae run keeps its checkpoints "
                             "there), or give another output folder (-o)")
    check_denoised_flags(args)
    prep, dae = settings(args)
    _check_transform_batch(args, prep, dae)
    model = make_model(dae)
    use_threads(model)
    _fixed_mmap_threshold()
    chunked = prepare_chunked(args, prep)  # one .h5ad: prepared from disk in chunks, as genodae prepare does
    if chunked:
        from ..io import read_backed

        adata = read_backed(args.input[0])  # obs only: the labels are checked before anything long
        adata.file.close()
    else:
        adata = read(args, prep)
    if prep.get("batch_key") and model.config.batch_key is None:  # several inputs: their batch column
        model = make_model({**dae, "batch_key": prep["batch_key"]})
    _check_transform_batch(args, prep, dae, model.config.batch_key, adata.obs)
    pl._check_labels(adata, args.color, added=("dae_recon_error",))  # before a long training run, not after
    if not chunked:
        prepare(adata, **prep)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:10]
    tmp = {name: out / f".{name}.run-{tag}.h5ad" for name in ("prepared", "embedded")}
    try:
        if chunked:
            from .._pp_chunked import Unsupported
            from ..pp import prepare_h5ad

            try:
                prepare_h5ad(args.input[0], tmp["prepared"], **prep)
            except Unsupported as e:
                log.info("prepare: %s; preparing in memory", e)
                chunked = False
                adata = read(args, prep)
                prepare(adata, **prep)
        if not chunked:
            write_h5ad(adata, tmp["prepared"])
        del adata
        _release_memory()
        adata = read_h5ad(tmp["prepared"], sharing=True)
        model.fit(adata, checkpoint_dir=out / "model.ckpt" if args.checkpoint_every or args.resume else None,
                  checkpoint_every=args.checkpoint_every, resume=args.resume)
        del adata
        _release_memory()
        model.annotate_h5ad(tmp["prepared"], tmp["embedded"], denoised=args.denoised,
                            denoised_scale=args.denoised_scale, transform_batch=args.transform_batch,
                            r2_rows=model.val_idx)
        # everything computed: now the outputs get their names
        os.replace(tmp["prepared"], out / "prepared.h5ad")
        model.save(out / "model")
        remove_checkpoint(out / "model.ckpt")
        os.replace(tmp["embedded"], out / "embedded.h5ad")
    except BaseException:
        if created and not any(out.iterdir()) or created and all(p in tmp.values() for p in out.iterdir()):
            for path in tmp.values():
                path.unlink(missing_ok=True)
            out.rmdir()  # a failed run leaves no output folder behind
        raise
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    _tables_and_plots(out, args.color)
    log.info("wrote %s: prepared.h5ad, model/, embedded.h5ad, embedding.tsv, gene_weights.tsv, genes.tsv, plots",
             out)


RUN_OUTPUTS = ("prepared.h5ad", "embedded.h5ad", "model", "model.ckpt", "embedding.tsv", "gene_weights.tsv",
               "genes.tsv", "loss.png", "umap.png")  # what genodae run writes into its output folder


def _check_inputs_not_written(args: argparse.Namespace, out: Path, files: list[str]) -> None:
    """Before any work: no input (data, sample sheet, batches sheet and the files and sample sheets it names, settings
    file; ``files``: :func:`inputs`) is a file genodae run writes into ``out`` (e.g. ``genodae run out/prepared.h5ad
    -o out`` would replace its own input). Raises UserError."""
    written = [(out / name).resolve() for name in RUN_OUTPUTS]
    for v, where in input_paths(args, extra=files):
        hit = next((w for w in written if where == w or w in where.parents), None)
        if hit is not None:
            raise UserError(f"input {v} is {hit.name} of the output folder {out}, which genodae run rewrites: give "
                            "another output folder (-o), or copy the input elsewhere first")


def _check_transform_batch(args: argparse.Namespace, prep: dict, dae: dict, batch_key: str | None = None,
                           obs=None) -> None:
    """Before any work: ``--transform-batch`` needs a model trained with a batch column (``--batch-key``, or the
    ``batch`` column of several inputs) and, once the data are read (``obs``), names one of its batches.
    Raises UserError."""
    batch = args.transform_batch
    if batch is None:
        return
    several = bool(getattr(args, "batches", None)) or len(args.input) > 1
    if not (prep.get("batch_key") or dae.get("batch_key") or several):
        raise UserError(f"--transform-batch {batch} needs a model trained with a batch column: add --batch-key "
                        "COLUMN (the obs column of each cell's batch), or leave out --transform-batch")
    if obs is not None and batch_key is not None and batch_key in obs.columns:
        levels = sorted(map(str, obs[batch_key].dropna().unique()))
        if str(batch) not in levels:
            raise UserError(f"--transform-batch {batch} is not a batch of {batch_key!r}; its batches: "
                            f"{', '.join(levels[:20])}{' …' if len(levels) > 20 else ''}")


def _fixed_mmap_threshold() -> None:
    """Keep large arrays in their own memory mappings, handed back to the system when freed. glibc raises its mmap
    threshold to the size of every large block freed (up to 32 MiB); blocks below it then come from the heap, where
    what an earlier step of ``run`` freed leaves holes (measured at 300,000 cells: 250 MiB more during training
    than ``genodae train`` alone). Setting the threshold (1 MiB) turns that adjustment off."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _release_memory() -> None:
    """Free what the previous step of ``run`` no longer needs: collect garbage, then hand the C heap's free pages
    back to the system (glibc's ``malloc_trim``; freed small blocks otherwise stay in the process, and each step's
    leftovers would add up)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _tables_and_plots(out: Path, color: list[str]) -> None:
    """What ``genodae export`` writes (embedding.tsv, gene_weights.tsv, genes.tsv), then loss.png (and umap.png
    when ``color`` is given) of ``out/embedded.h5ad``, read without X or layers."""
    from .. import pl
    from ..io import atomic_path, read_backed, write_table
    from ..tables import export_tables

    adata = read_backed(out / "embedded.h5ad")
    try:
        tables = export_tables(adata, key="dae", source=out / "embedded.h5ad")
        for name, file in (("embedding", "embedding.tsv"), ("weights", "gene_weights.tsv"), ("genes", "genes.tsv")):
            write_table(tables[name], out / file, sep="\t")
        with atomic_path(out / "loss.png") as tmp:
            pl.loss(adata, save=tmp)
        if color:
            with atomic_path(out / "umap.png") as tmp:
                pl.umap(adata, color=color, save=tmp)
    finally:
        adata.file.close()
