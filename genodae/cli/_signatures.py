"""``genodae signatures``, ``ensemble``, ``score`` and ``sweep-summary``: the nodes of embedded models read as gene
signatures. Every command reads .h5ad files written by ``genodae embed``/``run`` and writes TSV/PNG atomically,
after all computation succeeded; only ``score`` (which applies a saved model) loads torch."""

from __future__ import annotations

import argparse

from .. import _keys as K
from ..config import ENSEMBLE_MIN_CORR, ROTATIONS
from ..errors import UserError
from ._common import (
    check_output,
    distinct_inputs,
    ensure_key,
    gene_sets,
    id_map,
    key_arg,
    output_file,
    read_embedded,
    readout_arg,
    write_png,
    write_tsv,
)


def register(sub) -> None:
    p = sub.add_parser("signatures", help="high-weight genes of every node (sparse read-out by default) as TSV")
    p.add_argument("input", help="embedded .h5ad (genodae embed / run)")
    p.add_argument("-o", "--output", required=True, help="signatures TSV (node, direction, gene, weight, zscore, rank, beyond_cutoff; near_copy_of for an ensemble's consensus nodes read with --rotation none)")
    key_arg(p)
    p.add_argument("--sd-cutoff", type=float, default=2.5, help="high-weight: beyond mean ± this many SD (default: 2.5)")
    p.add_argument("--rotation", choices=ROTATIONS, default=K.DEFAULT_ROTATION,
                   help="read nodes after a rotation of the whitened node activities: sparse (default; varimax, "
                   "then oblique sparse coding), varimax (orthogonal, uncorrelated nodes), or none (the nodes as the "
                   "model stored them: a default model's distance-keeping varimax nodes)")
    readout_arg(p)
    p.add_argument("--min-genes", type=int, default=0, help="fill each tail up to this many top genes (default: 0)")
    p.add_argument("--transform", metavar="JSON", help="also write the activity transform (mean, whitening, "
                   "rotation) for 'genodae score --transform'")
    p.add_argument("--weights", metavar="TSV", help="also write the (rotated) gene weights, genes × nodes")
    p.add_argument("--embedding", metavar="TSV", help="also write the (rotated) node activities, cells × nodes")
    p.add_argument("--heatmap", metavar="PNG", help="also plot the top genes per node")
    p.add_argument("--n-genes", type=int, default=5, help="genes per tail in the heatmap (default: 5)")
    p.set_defaults(func=cmd_signatures)

    p = sub.add_parser("ensemble", help="consensus nodes of several models (seeds, sizes) of the same cells")
    p.add_argument("inputs", nargs="+", help="embedded .h5ad files, one model each, same cells")
    p.add_argument("-o", "--output", required=True, help="consensus gene weights TSV (genes × consensus nodes)")
    key_arg(p)
    p.add_argument("--rotation", choices=ROTATIONS, default=K.DEFAULT_ROTATION,
                   help="rotate each model before clustering its nodes: sparse (default), varimax (of the whitened "
                        "activities) or none (the nodes as stored: a default model's distance-keeping varimax nodes)")
    readout_arg(p)
    p.add_argument("--min-corr", type=float,
                   help="nodes cluster when their weights correlate with |r| >= this (default: by the nodes' read-out: "
                        f"sparse {ENSEMBLE_MIN_CORR['sparse']}, varimax {ENSEMBLE_MIN_CORR['varimax']}, raw decoder "
                        f"weights {ENSEMBLE_MIN_CORR['none']}; with --rotation none, the read-out the models were "
                        f"stored with: {ENSEMBLE_MIN_CORR['varimax']} for default models, "
                        f"{ENSEMBLE_MIN_CORR['sparse']} for rotation sparse)")
    p.add_argument("--min-support", type=int, help="models a consensus node needs (default: half, rounded up)")
    p.add_argument("--embedding", metavar="TSV", help="also write consensus activities, cells × consensus nodes")
    p.add_argument("--support", metavar="TSV", help="also write support and members of each consensus node")
    p.add_argument("--stability", metavar="TSV", help="also write the pairwise stability of the models")
    p.add_argument("--h5ad", metavar="FILE", help="also write the first input with the consensus added (key dae_ensemble)")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("score", help="node (signature) activities of new samples projected onto a saved model")
    p.add_argument("input", help="new samples in any readable format (raw or prepared)")
    p.add_argument("model", help="model folder (genodae train / run)")
    p.add_argument("-o", "--output", required=True, help="activities TSV, samples × nodes")
    p.add_argument("--rotation", choices=ROTATIONS, default=K.DEFAULT_ROTATION,
                   help="rotate as 'genodae signatures' does: sparse (default), varimax or none")
    p.add_argument("--transform", metavar="JSON", help="the transform written by 'genodae signatures --transform' "
                   "(default: recompute the rotation from the model's weights)")
    p.add_argument("--allow-missing-genes", action="store_true", help="fill model genes absent from the data")
    p.add_argument("--missing", choices=("error", "drop", "impute"), default="error", help="NaN values (default: error)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("sweep-summary", help="reconstruction, stability and enriched sets per n_latent")
    p.add_argument("inputs", nargs="+", help="embedded .h5ad files of a sweep (sizes × seeds, same cells)")
    p.add_argument("-o", "--output", required=True, help="summary TSV, one row per n_latent")
    key_arg(p)
    p.add_argument("--rotation", choices=ROTATIONS, default=K.DEFAULT_ROTATION,
                   help="read-out: sparse (default), varimax or none")
    readout_arg(p)
    p.add_argument("--gene-sets", nargs="+", metavar="GMT", help="count distinct enriched gene sets (FDR < --fdr)")
    p.add_argument("--id-map", metavar="TABLE", help="CSV/TSV mapping gene IDs to those of the gene sets")
    p.add_argument("--fdr", type=float, default=0.05, help="(default: 0.05)")
    p.add_argument("--plot", metavar="PNG", help="also plot the summary against n_latent")
    p.set_defaults(func=cmd_sweep_summary)


def cmd_signatures(args: argparse.Namespace) -> None:
    import pandas as pd

    from ..signatures import gene_weights, signatures

    adata = read_embedded(args.input, backed=True)  # the correlation read-out reads X in row chunks
    ensure_key(adata, args.key)
    table = signatures(adata, key=args.key, sd_cutoff=args.sd_cutoff, rotation=args.rotation,
                       readout=args.readout, min_genes=args.min_genes)
    key = table.attrs["key"]
    if args.transform and args.rotation == "none":
        raise UserError("--transform needs a rotation (--rotation sparse or varimax)")
    W = gene_weights(adata, key)
    emb = None
    if args.embedding:
        from ..assoc import activities

        emb = activities(adata, key)
    write_tsv(table, args.output, index=False)
    if args.weights:
        write_tsv(W.rename_axis("gene"), args.weights)
    if emb is not None:
        write_tsv(pd.DataFrame(emb).rename_axis("cell"), args.embedding)
    if args.transform:
        import json

        from ..io import atomic_path
        from ..tables import transform_record

        doc = transform_record(adata, key, source_key=args.key, readout=args.readout)
        with atomic_path(output_file(args.transform)) as tmp:
            tmp.write_text(json.dumps(doc))
    if args.heatmap:
        write_png(args.heatmap, lambda tmp: _heatmap_or_note(adata, table, key, args.n_genes, tmp))


def _heatmap_or_note(adata, table, key: str, n_genes: int, save) -> None:
    """The heatmap, or a figure that says why there is none: the tables are already written, so an empty
    signature (no gene beyond the cutoff) must not fail the command."""
    from .. import pl

    try:
        pl.signature_heatmap(adata, table=table, key=key, n_genes=n_genes, save=save)
    except UserError as e:
        plt = pl._plt()
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no heatmap: {e}", ha="center", va="center", wrap=True)
        fig.savefig(save, dpi=100, format="png")
        plt.close(fig)


def cmd_ensemble(args: argparse.Namespace) -> None:
    import pandas as pd

    from ..assoc import activities
    from ..signatures import ensemble, gene_weights, stability
    from ..tables import ensemble_support

    if len(args.inputs) < 2:
        raise UserError("an ensemble needs at least 2 models (embedded .h5ad files)")
    distinct_inputs(args.inputs)
    if args.h5ad:
        check_output(args.h5ad, suffix=".h5ad")
    adatas = [read_embedded(p) for p in args.inputs]
    for a, p in zip(adatas, args.inputs, strict=True):
        if K.weights_key(args.key) not in a.varm:
            models = [m for m in K.weights_keys(a.varm) if not m.endswith("_decoder")]
            raise UserError(f"{p} has no model {args.key!r} (varm[{K.weights_key(args.key)!r}]); " + (
                f"pass the right --key (its models: {', '.join(models)})" if models else
                "it holds no model at all: embed it first (genodae embed FILE MODEL -o embedded.h5ad, or genodae run)"))
    target = ensemble(adatas, keys=[args.key] * len(adatas), rotation=args.rotation, readout=args.readout,
                      min_corr=args.min_corr,
                      min_support=args.min_support, key_added="dae_ensemble")
    W = gene_weights(target, "dae_ensemble")
    if W.shape[1] == 0:
        raise UserError(f"no node is shared by enough models (|r| >= {target.uns['dae_ensemble']['min_corr']}, support >= "
                        f"{args.min_support or 'half the models'}); lower --min-corr or --min-support")
    support = ensemble_support(target, "dae_ensemble", args.inputs)
    stab = stability([gene_weights(a, args.key) for a in adatas], labels=args.inputs)
    write_tsv(W.rename_axis("gene"), args.output)
    if args.embedding:
        write_tsv(pd.DataFrame(activities(target, "dae_ensemble")).rename_axis("cell"), args.embedding)
    if args.support:
        write_tsv(support, args.support, index=False)
    if args.stability:
        write_tsv(stab, args.stability, index=False)
    if args.h5ad:
        from ..io import write_h5ad

        write_h5ad(target, output_file(args.h5ad))


def cmd_score(args: argparse.Namespace) -> None:
    from ..io import read
    from ..model import DAE
    from ..tables import read_transform
    from ..tl import score

    transform = read_transform(args.transform) if args.transform else None
    model = DAE.load(args.model)
    adata = read(args.input, missing=args.missing)
    act = score(adata, model=model, rotation=args.rotation, transform=transform,
                allow_missing_genes=args.allow_missing_genes)
    write_tsv(act.rename_axis("sample"), args.output)


def cmd_sweep_summary(args: argparse.Namespace) -> None:
    import pandas as pd

    from ..pl import plot_sweep
    from ..signatures import sweep_summary
    from ..tables import sweep_run

    distinct_inputs(args.inputs)
    if not 0 < args.fdr <= 1:
        raise UserError(f"--fdr must be in (0, 1], not {args.fdr}")
    sets = gene_sets(args.gene_sets) if args.gene_sets else None
    idm = id_map(args)
    runs, enr = [], []
    for p in args.inputs:
        row, e = sweep_run(read_embedded(p), run=p, key=args.key, rotation=args.rotation, readout=args.readout,
                           gene_sets=sets, id_map=idm)
        runs.append(row)
        if e is not None:
            enr.append(e)
    table = sweep_summary(pd.DataFrame(runs), enrichment=pd.concat(enr) if enr else None, fdr=args.fdr)
    write_tsv(table, args.output, index=False)
    if args.plot:
        write_png(args.plot, lambda tmp: plot_sweep(table, save=tmp))
