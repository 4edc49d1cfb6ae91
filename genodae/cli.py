"""``genodae <step>``: one subcommand per step of the data flow; each Snakemake rule calls one.

User errors print one line and exit with code 2, with no traceback and no output file (every output
is written atomically, after all computation succeeded).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
import warnings
from pathlib import Path
from typing import Any

from . import __version__
from .config import PRESETS, DAEConfig, PrepareConfig, make_config, read_settings_file, split_settings
from .errors import UserError
from .train import remove_checkpoint

log = logging.getLogger("genodae")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        # no abbreviations: a retired flag (--loss) must not silently become another one (--loss-on)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_hidden(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none", "[]"):
        return ()
    try:
        return tuple(int(x) for x in text.replace(" ", "").strip("[]()").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden sizes must be integers separated by commas, not {text!r}") from None


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _parse_epochs(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"  # DAEConfig turns it into None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"epochs must be a whole number or auto, not {text!r}") from None


def _add_dataclass_flags(p: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = ()) -> None:
    """One flag per dataclass field, default None (= preset/settings file/dataclass default), help shows the default."""
    g = p.add_argument_group(title)
    defaults = cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if default is None and f.name != "epochs" or default == ():
            shown = "none"  # an obs column name, or a list of them: not set
        help_ = f"{f.metadata.get('help', '')} (default: {shown})"
        hint = hints[f.name]
        if hint is bool:
            g.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif f.name == "epochs":
            g.add_argument(_flag(f.name), dest=f.name, type=_parse_epochs, default=None, metavar="N|auto",
                           help=help_.replace("(default: None)", "(default: auto)"))
        elif f.name == "hidden":
            g.add_argument(_flag(f.name), dest=f.name, type=_parse_hidden, default=None, metavar="N,N,...",
                           help=help_ + "; '' for none")
        elif hint == (str | None):
            g.add_argument(_flag(f.name), dest=f.name, type=str, default=None, metavar=f.name.upper(), help=help_)
        elif typing.get_origin(hint) is tuple:  # names of obs columns, comma-separated
            g.add_argument(_flag(f.name), dest=f.name, type=_parse_names, default=None, metavar="NAME,NAME,...",
                           help=help_)
        else:
            g.add_argument(_flag(f.name), dest=f.name, type=hint, default=None, metavar=f.name.upper(), help=help_)


def _read_options(p: argparse.ArgumentParser, several: bool = False) -> None:
    g = p.add_argument_group("reading the input")
    if several:
        g.add_argument("--obs", metavar="SHEET", action="append",
                       help="CSV/TSV of sample metadata keyed by sample name, joined into obs; with several inputs, "
                            "once per input in the same order ('' for none)")
        g.add_argument("--batches", metavar="SHEET",
                       help="CSV/TSV listing the input files instead of INPUT: columns path (relative to the sheet), "
                            "batch, obs (that file's sample sheet) and per-batch metadata")
    else:
        g.add_argument("--obs", metavar="SHEET", help="CSV/TSV of sample metadata keyed by sample name, joined into obs")
    g.add_argument("--orientation", choices=("auto", "genes_by_samples", "samples_by_genes"), default="auto",
                   help="layout of a CSV/TSV/GCT table (default: auto, from the identifiers)")
    g.add_argument("--missing", choices=("error", "drop", "impute"), default="error",
                   help="NaN values: error, drop the genes that have them, or impute each gene's mean (default: error)")
    g.add_argument("--cls", metavar="FILE", help="GSEA .cls phenotype file (default: found next to a GSEA .txt/.gct)")
    g.add_argument("--duplicates", choices=("make_unique", "error"), default="make_unique",
                   help="duplicate sample or gene names (default: make_unique, with a warning)")
    g.add_argument("--genome", metavar="NAME",
                   help="which genome of a 10x .h5 (or Cell Ranger *_gene_bc_matrices/ folder) holding several, e.g. "
                        "GRCh38 (default: all, one matrix with var['genome'])")
    g.add_argument("--delimiter", metavar="SEP",
                   help="field separator of CSV/TSV tables: a character or comma, semicolon, tab, space, pipe "
                        "(default: from the extension and the header line)")
    g.add_argument("--decimal", metavar="MARK",
                   help="decimal mark of a table's numbers: . or , (point, comma; default: comma when a "
                        "semicolon-separated table writes 1,5)")


def _saved_model_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that apply a saved model to data (embed, map): genes, device, threads, reading."""
    p.add_argument("--allow-missing-genes", action="store_true",
                   help="fill model genes absent from the data (model input 0) instead of failing")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: the model's)")
    _threads_arg(p)
    _read_options(p)


def _settings_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", metavar="FILE", help="YAML or JSON file of settings; flags given explicitly win")


def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-threads", type=int, default=0, metavar="N",
                   help="torch CPU threads (default: 0, auto: the CPUs this process is given, from its affinity, a "
                        "cgroup quota, SLURM_CPUS_PER_TASK and OMP_NUM_THREADS)")


def _use_threads(model, num_threads: int | None = None) -> None:
    """Set the process's torch and BLAS threads before the heavy work (logged once)."""
    from ._threads import configure

    if num_threads is not None:
        if num_threads < 0:
            raise UserError(f"--num-threads must be >= 0, not {num_threads}")
        model.config.num_threads = num_threads
    configure(model.config.num_threads, blas=True)


def _model_args(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, help="named starting point (default: default)")
    _add_dataclass_flags(p, DAEConfig, "model and training settings", skip=skip)
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="write a checkpoint every N epochs (default: 0, none)")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="where checkpoints go (default: OUTPUT.ckpt beside the output); kept until training ends")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint when there is one")


def _check_denoised_flags(args: argparse.Namespace) -> None:
    if args.denoised_scale != "auto" and not args.denoised:
        raise UserError(f"--denoised-scale {args.denoised_scale} has no effect without --denoised; add --denoised "
                        "to write the denoised layer")
    if getattr(args, "transform_batch", None) is not None and not args.denoised:
        raise UserError(f"--transform-batch {args.transform_batch} changes only the denoised layer; add --denoised")


def _denoised_scale_arg(p: argparse.ArgumentParser) -> None:
    from .model import DENOISED_SCALES

    p.add_argument("--transform-batch", metavar="BATCH", default=None,
                   help="denoise every cell as if it came from this training batch (a model trained with --batch-key)")
    p.add_argument("--denoised-scale", choices=DENOISED_SCALES, default="auto",
                   help="scale of the denoised layer: normalized (per target_sum counts; auto for count "
                        "likelihoods), counts (expected counts at each cell's library), log1p, or input (the "
                        "prepared X's scale; auto for normal/bernoulli)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="genodae", description="Masking-noise denoising autoencoders for gene expression.")
    parser.add_argument("--version", action="version", version=f"genodae {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    # -v/-q also after the subcommand; SUPPRESS keeps a subparser from resetting what came before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, parents=[common], **k)
    sub.required = True

    p = sub.add_parser("example", help="write the built-in example dataset (700 PBMCs, raw counts) as .h5ad")
    p.add_argument("-o", "--output", required=True, help="output .h5ad")
    p.set_defaults(func=cmd_example)

    p = sub.add_parser("prepare", help="read any supported matrix, normalise, select genes, compute scaling")
    p.add_argument("input", nargs="*", help="h5ad, loom, 10x dir/.h5, CSV/TSV(.gz), GCT or GSEA .txt; several files "
                   "(samples, plates, technologies) become one dataset with a batch column (--batch-key)")
    p.add_argument("-o", "--output", required=True, help="prepared .h5ad")
    _read_options(p, several=True)
    p.add_argument("--backed", action="store_true",
                   help="read an .h5ad from disk and write the prepared file in chunks, never holding the matrix "
                        "(data larger than RAM; seurat_v3 or no gene selection). Without it, a single .h5ad is "
                        "prepared this way too when the settings allow, else in memory")
    _settings_arg(p)
    _add_dataclass_flags(p, PrepareConfig, "preparation settings")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a DAE on a prepared .h5ad and save the model folder")
    p.add_argument("input", help="prepared .h5ad (from genodae prepare)")
    p.add_argument("-o", "--output", required=True, help="model folder to write")
    p.add_argument("--layer", help="train on this layer instead of X")
    p.add_argument("--backed", action="store_true",
                   help="read the prepared .h5ad from disk in chunks instead of loading it (data larger than RAM)")
    _settings_arg(p)
    _model_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="project data (raw or prepared) onto a saved model; write an annotated .h5ad")
    p.add_argument("input", help="any readable matrix; raw data get the model's own preparation")
    p.add_argument("model", help="model folder (from genodae train)")
    p.add_argument("-o", "--output", required=True, help="annotated .h5ad")
    p.add_argument("--key", default="dae", help="prefix of the keys written (default: dae)")
    p.add_argument("--denoised", action="store_true", help="also write layers['<key>_denoised'] (dense)")
    _denoised_scale_arg(p)
    _saved_model_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("map", help="reference mapping: extend a model trained with --batch-key to new batches, "
                       "training only their parameters (scArches), and save the mapped model")
    p.add_argument("input", help="query cells (any readable matrix) with the model's batch column in obs (--obs)")
    p.add_argument("model", help="reference model folder (from genodae train with --batch-key)")
    p.add_argument("-o", "--output", required=True, help="mapped model folder to write (then: genodae embed QUERY OUTPUT)")
    p.add_argument("--epochs", type=int, default=None, help="epochs for the new batches' parameters (default: the model's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's)")
    _saved_model_options(p)
    p.set_defaults(func=cmd_map)

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

    p = sub.add_parser("run", help="prepare, train, embed and export in one go")
    p.add_argument("input", nargs="*", help="any readable matrix; several files become one dataset with a batch "
                   "column (--batch-key)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--color", nargs="*", action="extend", default=[], help="obs columns to colour the UMAP by (plots when given)")
    p.add_argument("--denoised", action="store_true", help="also write layers['dae_denoised'] (dense)")
    _denoised_scale_arg(p)
    _read_options(p, several=True)
    _settings_arg(p)
    _add_dataclass_flags(p, PrepareConfig, "preparation settings")
    _model_args(p, skip=("batch_key",))  # one --batch-key: the preparation's, also the model's
    p.set_defaults(func=cmd_run)

    from .cli_signatures import (
        register,  # signatures, ensemble, enrich, associate, survival, score, sweep-summary
    )

    register(sub)
    return parser


# --- settings -----------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(prepare kwargs, model kwargs): dataclass defaults < preset < settings file < explicit flags."""
    from_file = read_settings_file(args.settings) if getattr(args, "settings", None) else {}
    prep, dae = split_settings(from_file)
    for f in dataclasses.fields(PrepareConfig):
        if getattr(args, f.name, None) is not None:
            prep[f.name] = getattr(args, f.name)
    for f in dataclasses.fields(DAEConfig):
        if getattr(args, f.name, None) is not None:
            dae[f.name] = getattr(args, f.name)
    if getattr(args, "preset", None):
        dae["preset"] = args.preset
    try:
        PrepareConfig(**prep)
    except TypeError as e:
        raise UserError(f"invalid preparation setting: {e}") from None
    return prep, dae


def _make_model(dae: dict[str, Any]):
    from .model import DAE

    dae = dict(dae)
    preset = dae.pop("preset", "default")
    if "hidden" in dae and isinstance(dae["hidden"], (list, tuple)):
        dae["hidden"] = tuple(dae["hidden"])
    try:
        return DAE(make_config(preset, **dae))
    except TypeError as e:
        raise UserError(f"invalid model setting: {e}") from None


def _inputs(args: argparse.Namespace) -> list[str]:
    """Every file the command reads (for the output check): the inputs, or the batches sheet and its files."""
    if isinstance(args.input, str):
        return [args.input]
    batches = getattr(args, "batches", None)
    if batches and args.input:
        raise UserError(f"give the input files either as INPUT ({' '.join(args.input)}) or in --batches {batches}, "
                        "not both")
    if batches:
        from .io import _parse_batches_sheet

        return [batches, *map(str, _parse_batches_sheet(batches)[0])]
    if not args.input:
        raise UserError("no input: give one or more input files, or --batches SHEET")
    return list(args.input)


def _read(args: argparse.Namespace, prep: dict[str, Any] | None = None):
    """Read the input(s); several files (or --batches) are concatenated with a batch column in obs.

    With several inputs the batch column is ``--batch-key`` (or the settings file's ``batch_key``); when none
    was given it is ``batch``, and it is set into ``prep`` so that preparation is batch-aware too. A table
    whose orientation could only be guessed is an error here (a warning that scrolls past is not enough for
    a transposed result): ``--orientation`` or ``--obs`` settles it.
    """
    from .io import OrientationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", OrientationWarning)
        try:
            return _read_inputs(args, prep)
        except OrientationWarning as w:
            raise UserError(
                f"{w.path}: cannot tell whether its rows or its columns are genes ({w.detail}). Give "
                "--orientation genes_by_samples (rows are genes) or --orientation samples_by_genes (rows are "
                "samples), or --obs SHEET keyed by the sample names"
            ) from None


def _read_inputs(args: argparse.Namespace, prep: dict[str, Any] | None = None):
    from .io import read, read_batches_sheet, read_many

    opts = dict(orientation=args.orientation, cls=args.cls, missing=args.missing, duplicates=args.duplicates,
                genome=getattr(args, "genome", None),
                delimiter=getattr(args, "delimiter", None), decimal=getattr(args, "decimal", None))
    inputs = [args.input] if isinstance(args.input, str) else list(args.input)
    batches = getattr(args, "batches", None)
    sheets = args.obs if isinstance(args.obs, list) else [args.obs]
    if not batches and len(inputs) == 1:
        if len(sheets) > 1:
            raise UserError(f"--obs given {len(sheets)} times for one input: give one sample sheet")
        return read(inputs[0], sample_sheet=sheets[0] or None, **opts)
    _inputs(args)  # one of INPUT and --batches, not both
    if args.cls:
        raise UserError("--cls belongs to one file: with several inputs, put each .cls next to its GSEA/GCT file")
    key = (prep or {}).get("batch_key") or getattr(args, "batch_key", None)
    if not key:
        key = "batch"
        if prep is not None and "batch_key" in {f.name for f in dataclasses.fields(PrepareConfig)}:
            prep["batch_key"] = key
        log.info("several inputs: their batches go to obs['batch'] (--batch-key to name the column)")
    del opts["cls"]
    if batches:
        if args.obs:
            raise UserError("--obs and --batches: put each file's sample sheet in the batches sheet's obs column")
        return read_batches_sheet(batches, batch_key=key, **opts)
    if args.obs and len(args.obs) != len(inputs):
        raise UserError(f"--obs given {len(args.obs)} time(s) for {len(inputs)} inputs: give one per input, in the "
                        "same order ('' for an input without one), or use --batches SHEET")
    sample_sheets = [s or None for s in args.obs] if args.obs else None
    return read_many(inputs, batch_key=key, sample_sheets=sample_sheets, **opts)


def _check_output(path: str | Path, *, folder: bool = False, inputs: tuple = ()) -> Path:
    path = Path(path)
    for given in inputs:
        if given is not None and Path(given).exists() and path.exists() and path.resolve() == Path(given).resolve():
            raise UserError(f"output {path} is the input file: write to another file (genodae never overwrites "
                            "its input)")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"output {path} exists and is not a folder: give a folder name (a model is a folder), "
                        "or remove the file")
    if not folder and path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- subcommands --------------------------------------------------------------------------------------


def cmd_example(args: argparse.Namespace) -> None:
    from .datasets import pbmc68k_counts
    from .io import write_h5ad

    out = _check_output(args.output)
    write_h5ad(pbmc68k_counts(), out)


def cmd_prepare(args: argparse.Namespace) -> None:
    from .io import write_h5ad
    from .pp import prepare

    out = _check_output(args.output, inputs=tuple(_inputs(args)))
    prep, _ = _settings(args)
    if _prepare_chunked(args, prep):
        from ._pp_chunked import Unsupported
        from .pp import prepare_h5ad

        try:
            prepare_h5ad(args.input[0], out, **prep)
            return
        except Unsupported as e:
            if args.backed:
                raise
            log.info("prepare: %s; preparing in memory", e)
    adata = _read(args, prep)
    prepare(adata, **prep)
    write_h5ad(adata, out)


def _prepare_chunked(args: argparse.Namespace, prep: dict[str, Any]) -> bool:
    """Whether ``genodae prepare`` prepares in chunks from disk: with ``--backed`` (refused when the input cannot be),
    and by default for one .h5ad with nothing to join (no --obs, --batches) and settings the chunked path supports
    (the same output, far less memory)."""
    from ._pp_chunked import supports

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
    from .io import read_backed

    try:
        adata = read_backed(args.input[0])
    except UserError:
        return False  # the in-memory reader says what is wrong
    try:  # names the in-memory reader would make unique (or refuse) go through it
        return bool(adata.obs_names.is_unique and adata.var_names.is_unique and adata.n_obs and adata.n_vars)
    finally:
        adata.file.close()


def cmd_train(args: argparse.Namespace) -> None:
    out = _check_output(args.output, folder=True)
    _, dae = _settings(args)
    model = _make_model(dae)
    _use_threads(model)
    if args.backed:
        from .io import read_backed

        adata = read_backed(args.input)
    else:
        adata = _read_h5ad(args.input, sharing=True)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.name + ".ckpt")
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
    from .io import write_h5ad
    from .model import DAE

    out = _check_output(args.output, inputs=(args.input,))
    _check_denoised_flags(args)
    model = DAE.load(args.model, device=args.device)
    _use_threads(model, args.num_threads)
    opts = dict(key_added=args.key, denoised=args.denoised, denoised_scale=args.denoised_scale,
                transform_batch=args.transform_batch, allow_missing_genes=args.allow_missing_genes)
    if _streams(args, model):  # a prepared .h5ad: read and written in chunks, never whole in memory
        model.annotate_h5ad(args.input, out, **opts)
        return
    adata = _read(args)
    model.annotate(adata, **opts)
    write_h5ad(adata, out)


def _streams(args: argparse.Namespace, model) -> bool:
    """Whether ``genodae embed`` can read and write the input .h5ad in chunks: a prepared .h5ad holding every gene
    of a model trained on X, with nothing to join (no --obs, --cls)."""
    if not str(args.input).endswith(".h5ad") or args.obs or args.cls or model.layer is not None:
        return False
    from .io import read_backed
    from .pp import PREP_KEY

    try:
        adata = read_backed(args.input)
    except UserError:
        return False  # the in-memory reader says what is wrong
    try:
        return PREP_KEY in adata.uns and bool(model.genes.isin(adata.var_names).all()) and adata.var_names.is_unique
    finally:
        adata.file.close()


def cmd_map(args: argparse.Namespace) -> None:
    from .model import DAE

    out = _check_output(args.output, folder=True)
    if Path(args.model).exists() and out.exists() and out.resolve() == Path(args.model).resolve():
        raise UserError(f"output {out} is the reference model: write the mapped model to another folder")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, not {args.epochs}")
    model = DAE.load(args.model, device=args.device)
    _use_threads(model, args.num_threads)
    adata = _read(args)
    mapped = model.map_query(adata, epochs=args.epochs, lr=args.lr, allow_missing_genes=args.allow_missing_genes)
    mapped.save(out)
    log.info("wrote the mapped model to %s; embed the query with: genodae embed QUERY %s -o OUT.h5ad", out, out)


def cmd_export(args: argparse.Namespace) -> None:
    import pandas as pd

    from .io import write_table
    from .model import node_names

    if not (args.embedding or args.weights or args.genes):
        raise UserError("nothing to export: give --embedding, --weights and/or --genes")
    adata = _read_h5ad(args.input, backed=True)  # only obs, var, obsm, varm and uns are read
    key = args.key
    if f"X_{key}" not in adata.obsm or f"{key}_weights" not in adata.varm:
        raise UserError(f"{args.input} has no obsm['X_{key}'] / varm['{key}_weights']; run genodae embed first "
                        "(or pass the right --key)")
    Z, W = adata.obsm[f"X_{key}"], adata.varm[f"{key}_weights"]
    nodes = node_names(Z.shape[1])
    used = adata.var_names.isin(list(adata.uns[key]["genes_used"])) if key in adata.uns else (W != 0).any(1)
    tables = {
        args.embedding: pd.DataFrame(Z, index=adata.obs_names.rename("cell"), columns=nodes),
        args.weights: pd.DataFrame(W[used], index=adata.var_names[used].rename("gene"), columns=nodes),
        args.genes: pd.DataFrame({
            "used": used,
            "recon_r2": adata.var.get(f"{key}_recon_r2"),
            "offset": adata.var.get("genodae_offset"),
            "scale": adata.var.get("genodae_scale"),
        }, index=adata.var_names.rename("gene")),
    }
    for path, df in tables.items():
        if path:
            write_table(df, _check_output(path), sep="\t")
    adata.file.close()


def cmd_plot(args: argparse.Namespace) -> None:
    from . import pl
    from .io import atomic_path

    out = _check_output(args.output, folder=True)
    adata = _read_h5ad(args.input)
    pl._check_labels(adata, args.color)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)

    with atomic_path(out / "loss.png") as tmp:
        pl.loss(adata, key=args.key, save=tmp)
    with atomic_path(out / "umap.png") as tmp:
        pl.umap(adata, key=args.key, color=args.color, save=tmp)
    log.info("wrote %s/loss.png and umap.png", out)


def cmd_run(args: argparse.Namespace) -> None:
    """prepare → train → embed → export, each step as its own command does it, through files: the prepared
    .h5ad is written (under a temporary name) and the in-memory data freed before training, and the embedding
    streams from the prepared file to the embedded one, so the peak memory is that of the largest step, not their
    sum. Outputs get their names only when everything succeeded."""
    import os
    import uuid

    from . import pl
    from .io import write_h5ad
    from .pp import prepare

    out = _check_output(args.output, folder=True)
    _check_denoised_flags(args)
    _inputs(args)
    prep, dae = _settings(args)
    model = _make_model(dae)
    _use_threads(model)
    chunked = _prepare_chunked(args, prep)  # one .h5ad: prepared from disk in chunks, as genodae prepare does
    if chunked:
        from .io import read_backed

        adata = read_backed(args.input[0])  # obs only: the labels are checked before anything long
        adata.file.close()
    else:
        adata = _read(args, prep)
    if prep.get("batch_key") and model.config.batch_key is None:  # several inputs: their batch column
        model = _make_model({**dae, "batch_key": prep["batch_key"]})
    pl._check_labels(adata, args.color, added=("dae_recon_error",))  # before a long training run, not after
    if not chunked:
        prepare(adata, **prep)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:10]
    tmp = {name: out / f".{name}.run-{tag}.h5ad" for name in ("prepared", "embedded")}
    try:
        if chunked:
            from ._pp_chunked import Unsupported
            from .pp import prepare_h5ad

            try:
                prepare_h5ad(args.input[0], tmp["prepared"], **prep)
            except Unsupported as e:
                log.info("prepare: %s; preparing in memory", e)
                chunked = False
                adata = _read(args, prep)
                prepare(adata, **prep)
        if not chunked:
            write_h5ad(adata, tmp["prepared"])
        del adata
        _release_memory()
        adata = _read_h5ad(tmp["prepared"], sharing=True)
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
    ns = argparse.Namespace(input=str(out / "embedded.h5ad"), key="dae", embedding=str(out / "embedding.tsv"),
                            weights=str(out / "gene_weights.tsv"), genes=str(out / "genes.tsv"))
    cmd_export(ns)
    _run_plots(out, args.color)
    log.info("wrote %s: prepared.h5ad, model/, embedded.h5ad, embedding.tsv, gene_weights.tsv, genes.tsv, plots",
             out)


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


def _run_plots(out: Path, color: list[str]) -> None:
    """loss.png (and umap.png when ``color`` is given) of ``out/embedded.h5ad``, read without X or layers."""
    from . import pl
    from .io import atomic_path, read_backed

    adata = read_backed(out / "embedded.h5ad")
    try:
        with atomic_path(out / "loss.png") as tmp:
            pl.loss(adata, save=tmp)
        if color:
            with atomic_path(out / "umap.png") as tmp:
                pl.umap(adata, color=color, save=tmp)
    finally:
        adata.file.close()


def _read_h5ad(path: str | Path, backed: bool = False, sharing: bool = False):
    """An .h5ad written by genodae; ``backed``: X and the layers stay on disk (:func:`genodae.io.read_backed`);
    ``sharing``: in memory, layers with X's sparsity structure share its index arrays (read-only use: training)."""
    from .io import read, read_backed, read_sharing

    if not str(path).endswith(".h5ad"):
        raise UserError(f"{path}: expected an .h5ad written by genodae")
    if sharing:
        return read_sharing(path)
    return read_backed(path) if backed else read(path)


# --- entry point --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="genodae: %(message)s", stream=sys.stderr)
    logging.getLogger("genodae").setLevel(level)
    try:
        with warnings.catch_warnings():  # restored afterwards: library callers in the same process still get them
            warnings.filterwarnings("ignore", category=UserWarning, module=r"genodae\b")  # logged as "genodae: …"
            args.func(args)
    except UserError as e:
        print(f"genodae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if type(e).__name__ != "OutOfMemoryError":  # torch.OutOfMemoryError outside training (embed, weights)
            raise
        print(f"genodae {args.command}: error: out of GPU memory ({str(e).splitlines()[0]}); use a smaller "
              "--batch-size, --data-placement host, or --device cpu", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genodae: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
