"""What the command groups share: flags derived from the settings dataclasses, the input
options, the settings precedence, reading inputs and checking outputs.

Imports only the standard library, :mod:`genodae.config` and :mod:`genodae.errors` at module level: building
the parser never loads torch, anndata or scanpy; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing
import warnings
from pathlib import Path
from typing import Any

from .. import _keys as K
from ..config import (
    DENOISED_SCALES,
    PRESETS,
    DAEConfig,
    PrepareConfig,
    read_settings_file,
    split_settings,
)
from ..errors import UserError

log = logging.getLogger("genodae")


# --- flags ------------------------------------------------------------------------------------------------


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


def add_dataclass_flags(p: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = ()) -> None:
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


def read_options(p: argparse.ArgumentParser, several: bool = False) -> None:
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


def saved_model_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that apply a saved model to data (embed, map): genes, device, threads, reading."""
    p.add_argument("--allow-missing-genes", action="store_true",
                   help="fill model genes absent from the data (model input 0) instead of failing")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: the model's)")
    threads_arg(p)
    read_options(p)


def settings_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", metavar="FILE", help="YAML or JSON file of settings; flags given explicitly win")


def threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-threads", type=int, default=0, metavar="N",
                   help="torch CPU threads (default: 0, auto: the CPUs this process is given, from its affinity, a "
                        "cgroup quota, SLURM_CPUS_PER_TASK and OMP_NUM_THREADS)")


def model_args(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, help="named starting point (default: default)")
    add_dataclass_flags(p, DAEConfig, "model and training settings", skip=skip)
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="write a checkpoint every N epochs (default: 0, none)")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="where checkpoints go (default: OUTPUT.ckpt beside the output); kept until training ends")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint when there is one")


def denoised_scale_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transform-batch", metavar="BATCH", default=None,
                   help="denoise every cell as if it came from this training batch (a model trained with --batch-key)")
    p.add_argument("--denoised-scale", choices=DENOISED_SCALES, default="auto",
                   help="scale of the denoised layer: normalized (per target_sum counts; auto for count "
                        "likelihoods), counts (expected counts at each cell's library), log1p, or input (the "
                        "prepared X's scale; auto for normal/bernoulli)")


def check_denoised_flags(args: argparse.Namespace) -> None:
    if args.denoised_scale != "auto" and not args.denoised:
        raise UserError(f"--denoised-scale {args.denoised_scale} has no effect without --denoised; add --denoised "
                        "to write the denoised layer")
    if getattr(args, "transform_batch", None) is not None and not args.denoised:
        raise UserError(f"--transform-batch {args.transform_batch} changes only the denoised layer; add --denoised")


def readout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--readout", choices=("correlation", "weights"), default="correlation",
                   help="gene weight of a node before rotation: correlation with its whitened activity (default) "
                        "or the model's stored weights (varm <key>_weights: a default model's correlations, decoder "
                        "weights for models trained with rotation none)")


def key_arg(p: argparse.ArgumentParser, default: str = "dae") -> None:
    p.add_argument("--key", default=default, help=f"prefix of the model's keys in the .h5ad (default: {default})")


# --- settings and the model -------------------------------------------------------------------------------


def settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
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


def make_model(dae: dict[str, Any]):
    from ..model import DAE

    dae = dict(dae)
    preset = dae.pop("preset", "default")
    if "hidden" in dae and isinstance(dae["hidden"], (list, tuple)):
        dae["hidden"] = tuple(dae["hidden"])
    try:
        return DAE(preset=preset, **dae)
    except TypeError as e:
        raise UserError(f"invalid model setting: {e}") from None


def use_threads(model, num_threads: int | None = None) -> None:
    """Set the process's torch and BLAS threads before the heavy work (logged once)."""
    from .._threads import configure

    if num_threads is not None:
        if num_threads < 0:
            raise UserError(f"--num-threads must be >= 0, not {num_threads}")
        model.config.num_threads = num_threads
    configure(model.config.num_threads, blas=True)


# --- inputs -----------------------------------------------------------------------------------------------


def inputs(args: argparse.Namespace) -> list[str]:
    """Every file the command reads (for the output check): the inputs, or the batches sheet, its files and their
    sample sheets."""
    if isinstance(args.input, str):
        return [args.input]
    batches = getattr(args, "batches", None)
    if batches and args.input:
        raise UserError(f"give the input files either as INPUT ({' '.join(args.input)}) or in --batches {batches}, "
                        "not both")
    if batches:
        from ..io import _parse_batches_sheet

        paths, _, sheets, _ = _parse_batches_sheet(batches)
        return [batches, *map(str, paths), *(str(p) for p in sheets if p is not None)]
    if not args.input:
        raise UserError("no input: give one or more input files, or --batches SHEET")
    return list(args.input)


def read(args: argparse.Namespace, prep: dict[str, Any] | None = None):
    """Read the input(s); several files (or --batches) are concatenated with a batch column in obs.

    With several inputs the batch column is ``--batch-key`` (or the settings file's ``batch_key``); when none
    was given it is ``batch``, and it is set into ``prep`` so that preparation is batch-aware too. A table
    whose orientation could only be guessed is an error here (a warning that scrolls past is not enough for
    a transposed result): ``--orientation`` or ``--obs`` settles it.
    """
    from ..io import OrientationWarning

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
    from ..io import read, read_batches_sheet, read_many

    opts = dict(orientation=args.orientation, cls=args.cls, missing=args.missing, duplicates=args.duplicates,
                genome=getattr(args, "genome", None),
                delimiter=getattr(args, "delimiter", None), decimal=getattr(args, "decimal", None))
    paths = [args.input] if isinstance(args.input, str) else list(args.input)
    batches = getattr(args, "batches", None)
    sheets = args.obs if isinstance(args.obs, list) else [args.obs]
    if not batches and len(paths) == 1:
        if len(sheets) > 1:
            raise UserError(f"--obs given {len(sheets)} times for one input: give one sample sheet")
        return read(paths[0], sample_sheet=sheets[0] or None, **opts)
    inputs(args)  # one of INPUT and --batches, not both
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
    if args.obs and len(args.obs) != len(paths):
        raise UserError(f"--obs given {len(args.obs)} time(s) for {len(paths)} inputs: give one per input, in the "
                        "same order ('' for an input without one), or use --batches SHEET")
    sample_sheets = [s or None for s in args.obs] if args.obs else None
    return read_many(paths, batch_key=key, sample_sheets=sample_sheets, **opts)


def read_h5ad(path: str | Path, backed: bool = False, sharing: bool = False, layer: str | None = None):
    """An .h5ad written by genodae; ``backed``: X and the layers stay on disk (:func:`genodae.io.read_backed`);
    ``sharing``: in memory, layers with X's sparsity structure share its index arrays, and X of a file prepared
    from counts is not read (the model computes it from the counts; read-only use: training)."""
    from ..io import read, read_backed, read_sharing

    if not str(path).endswith(".h5ad"):
        raise UserError(f"{path}: expected an .h5ad written by genodae")
    if sharing:  # training on a layer needs that layer: X is left out only when training reads X
        return read_sharing(path, x_from_counts=layer is None)
    return read_backed(path) if backed else read(path)


def read_embedded(path: str | Path, sheet: str | None = None, backed: bool = False):
    """An embedded .h5ad (for the signature commands); ``backed``: X and the layers stay on disk (read in chunks
    when needed)."""
    from ..io import read, read_backed

    path = Path(path)
    if not str(path).endswith(".h5ad"):
        raise UserError(f"{path}: expected an .h5ad written by genodae embed or run")
    if not path.is_file():
        raise UserError(f"{path} not found")
    return read_backed(path) if backed and sheet is None else read(path, sample_sheet=sheet)


# --- outputs ----------------------------------------------------------------------------------------------


def check_output(path: str | Path, *, folder: bool = False, inputs: tuple = (), suffix: str | None = None) -> Path:
    """The output path: never one of ``inputs``; a folder (a model) or a file as asked, ending in ``suffix`` when
    given. Its parent folder is made by the writer (:func:`genodae.io.atomic_path`), only when there is something
    to write: a failed command leaves no empty folder behind."""
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
    if suffix and not path.name.endswith(suffix):
        raise UserError(f"output {path} must end in {suffix} (genodae writes an AnnData .h5ad); e.g. "
                        f"{path.with_name(path.name.split('.')[0] + suffix)}")
    return path


OUTPUT_OPTIONS = ("output", "embedding", "weights", "genes", "support", "stability", "h5ad", "heatmap", "plot", "km",
                  "dotplot")  # the options that name files or folders a command writes (argparse dests)


INPUT_OPTIONS = ("input", "inputs", "model", "batches", "cls", "obs", "gene_sets", "id_map", "settings", "signatures",
                 "transform")  # the options that name files or folders a command reads (argparse dests)


def input_paths(args, *, extra=(), skip=()) -> list[tuple[str, Path]]:
    """(as given, resolved) of every existing file or folder the options in ``INPUT_OPTIONS`` (less ``skip``) and
    ``extra`` name."""
    values = [getattr(args, dest, None) for dest in INPUT_OPTIONS if dest not in skip] + [list(extra)]
    out = []
    for value in values:
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, str | Path) and v and Path(v).exists():
                out.append((str(v), Path(v).resolve()))
    return out


def check_outputs(args) -> None:
    """Before a command runs: no output it names (``OUTPUT_OPTIONS``, and ``--transform`` of ``genodae
    signatures``, which writes it) is a file or folder one of its inputs names (``INPUT_OPTIONS``, e.g.
    ``genodae ensemble a.h5ad b.h5ad --h5ad a.h5ad``), and no two outputs are the same path. Raises UserError."""
    writes_transform = getattr(args, "command", None) == "signatures"
    dests = [*OUTPUT_OPTIONS, *(("transform",) if writes_transform else ())]
    outputs = {d: Path(v) for d in dests if isinstance(v := getattr(args, d, None), str | Path)}
    named = [where for _, where in input_paths(args, skip=("transform",) if writes_transform else ())]
    seen: dict[Path, str] = {}
    for dest, path in outputs.items():
        flag = "-o/--output" if dest == "output" else f"--{dest.replace('_', '-')}"
        where = path.resolve()
        if where in named:
            raise UserError(f"output {path} ({flag}) is the input file: write to another file (genodae never "
                            "overwrites its input)")
        if where in seen:
            raise UserError(f"{flag} and {seen[where]} name the same file {path}: give each output its own name")
        seen[where] = flag
        if dest in FIGURE_OPTIONS:
            check_figure_path(path, flag)


FIGURE_OPTIONS = ("heatmap", "plot", "km", "dotplot")  # the OUTPUT_OPTIONS that name one figure file


def check_figure_path(path: Path, flag: str) -> None:
    """A figure file must have an extension matplotlib writes here (png, pdf, svg …): checked before anything is
    written, so that a table written first is not left without its figure. Raises UserError."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = set(FigureCanvasBase.get_supported_filetypes()) & FIGURE_FORMATS
    ext = path.suffix.lower().lstrip(".")
    if ext not in formats:
        example = "figure.png" if path.name.startswith(".") else path.with_suffix(".png").name
        raise UserError(f"{flag} {path}: a figure needs one of the extensions {', '.join(sorted(formats))} ("
                        f"{'none given' if not ext else f'not .{ext}'}), e.g. {example}")


# figure formats matplotlib writes without external programs or optional codecs (pgf needs LaTeX, avif a Pillow
# plugin; raw/rgba are no image files)
FIGURE_FORMATS = {"png", "pdf", "svg", "svgz", "jpg", "jpeg", "tif", "tiff", "eps", "ps"}


def distinct_inputs(paths) -> None:
    """Models of an ensemble or a sweep are given once each: the same file twice would count one model twice
    (stability 1.0, support 2). Raises UserError."""
    seen: dict[Path, str] = {}
    for p in paths:
        where = Path(p).resolve()
        if where in seen:
            raise UserError(f"{p} is given twice (as {seen[where]}): give each model's file once")
        seen[where] = str(p)


def output_file(path: str | Path) -> Path:
    """A file output of the signature commands (not a folder; its parent is not made)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name")
    return path


def write_tsv(df, path, **kw) -> None:
    from ..io import write_table

    write_table(df, output_file(path), sep="\t", **kw)


def write_png(path, plot) -> None:
    from ..io import atomic_path

    with atomic_path(output_file(path)) as tmp:
        plot(tmp)


# --- the signature commands' inputs -----------------------------------------------------------------------


def ensure_key(adata, key: str, need: str = "varm") -> None:
    """Make ``key`` available: a ``<model>_sparse`` (``<model>_varimax``) key is computed from ``<model>`` when
    absent.

    ``need``: ``varm`` (gene weights) or ``obsm`` (activities only, for association tests).
    """
    from ..signatures import rotate

    if K.weights_key(key) in adata.varm or (need == "obsm" and K.embedding_key(key) in adata.obsm):
        return
    source = K.rotated_source(key)
    if source is not None and K.weights_key(source[0]) in adata.varm:
        try:
            rotate(adata, key=source[0], method=source[1], key_added=key)
        except UserError as e:
            if "raw counts" not in str(e):
                raise
            raise UserError(f"{key!r} is read from the prepared expression, and this file's X holds raw counts (a raw "
                            "file embedded with genodae embed): give the embedded prepared .h5ad (genodae prepare, "
                            f"then embed), or read the model's own nodes with --key {source[0]}") from None
        return
    have = sorted(K.weights_keys(adata.varm))
    raise UserError(f"no model {key!r} in the file (varm[{K.weights_key(key)!r}] missing); available keys: "
                    f"{', '.join(have + [K.rotated_key(h, m) for h in have if K.rotated_source(h) is None for m in K.ROTATION_METHODS if K.rotated_key(h, m) not in have]) or 'none'}")


def gene_sets(paths: list[str]) -> dict[str, list[str]]:
    from ..enrich import read_gene_sets

    sets: dict[str, list[str]] = {}
    for p in paths:
        for k, v in read_gene_sets(p).items():
            if k in sets:
                raise UserError(f"gene set {k!r} appears in more than one gene-set file")
            sets[k] = v
    return sets


def id_map(args: argparse.Namespace):
    if not getattr(args, "id_map", None):
        return None
    from ..enrich import read_id_map

    return read_id_map(args.id_map, source=getattr(args, "id_from", None), target=getattr(args, "id_to", None))
