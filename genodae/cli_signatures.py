"""Subcommands for molecular signatures: ``signatures``, ``ensemble``, ``enrich``, ``associate``, ``survival``,
``score`` and ``sweep-summary``.

``register(subparsers)`` adds them to ``genodae``'s parser (``genodae.cli.build_parser`` calls it); every
command reads .h5ad files written by ``genodae embed``/``run`` and writes TSV/PNG atomically, after all
computation succeeded. User errors raise :class:`genodae.errors.UserError` (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import UserError

log = logging.getLogger("genodae")

COMMANDS = ("signatures", "ensemble", "enrich", "associate", "survival", "score", "sweep-summary")


def register(subparsers) -> None:
    """Add the signature subcommands to an ``argparse`` subparsers object (``parser.add_subparsers()``)."""
    p = subparsers.add_parser("signatures", help="high-weight genes of every node (varimax read-out by default) as TSV")
    p.add_argument("input", help="embedded .h5ad (genodae embed / run)")
    p.add_argument("-o", "--output", required=True, help="signatures TSV (node, direction, gene, weight, zscore, rank)")
    _key(p)
    p.add_argument("--sd-cutoff", type=float, default=2.5, help="high-weight: beyond mean ± this many SD (default: 2.5)")
    p.add_argument("--rotation", choices=("varimax", "none"), default="varimax",
                   help="read nodes after a varimax rotation (default) or as trained")
    _readout(p)
    p.add_argument("--min-genes", type=int, default=0, help="fill each tail up to this many top genes (default: 0)")
    p.add_argument("--transform", metavar="JSON", help="also write the activity transform (mean, whitening, "
                   "rotation) for 'genodae score --transform'")
    p.add_argument("--weights", metavar="TSV", help="also write the (rotated) gene weights, genes × nodes")
    p.add_argument("--embedding", metavar="TSV", help="also write the (rotated) node activities, cells × nodes")
    p.add_argument("--heatmap", metavar="PNG", help="also plot the top genes per node")
    p.add_argument("--n-genes", type=int, default=5, help="genes per tail in the heatmap (default: 5)")
    p.set_defaults(func=cmd_signatures)

    p = subparsers.add_parser("ensemble", help="consensus nodes of several models (seeds, sizes) of the same cells")
    p.add_argument("inputs", nargs="+", help="embedded .h5ad files, one model each, same cells")
    p.add_argument("-o", "--output", required=True, help="consensus gene weights TSV (genes × consensus nodes)")
    _key(p)
    p.add_argument("--rotation", choices=("varimax", "none"), default="varimax",
                   help="rotate each model before clustering its nodes (default: varimax)")
    _readout(p)
    p.add_argument("--min-corr", type=float, default=0.5, help="nodes cluster when |r| >= this (default: 0.5)")
    p.add_argument("--min-support", type=int, help="models a consensus node needs (default: half, rounded up)")
    p.add_argument("--embedding", metavar="TSV", help="also write consensus activities, cells × consensus nodes")
    p.add_argument("--support", metavar="TSV", help="also write support and members of each consensus node")
    p.add_argument("--stability", metavar="TSV", help="also write the pairwise stability of the models")
    p.add_argument("--h5ad", metavar="FILE", help="also write the first input with the consensus added (key dae_ensemble)")
    p.set_defaults(func=cmd_ensemble)

    p = subparsers.add_parser("enrich", help="gene-set over-representation of each signature (GMT), BH per node")
    p.add_argument("input", help="embedded .h5ad (its model's genes are the background)")
    p.add_argument("-o", "--output", required=True, help="enrichment TSV")
    p.add_argument("--gene-sets", nargs="+", required=True, metavar="GMT", help="one or more GMT files")
    _key(p, default="dae_varimax")
    p.add_argument("--signatures", metavar="TSV", help="signatures table (default: read from the model at --sd-cutoff)")
    p.add_argument("--sd-cutoff", type=float, default=2.5, help="when no signatures table is given (default: 2.5)")
    p.add_argument("--id-map", metavar="TABLE", help="CSV/TSV mapping the model's gene IDs to those of the gene sets")
    p.add_argument("--id-from", help="column of the model's IDs in --id-map (default: first)")
    p.add_argument("--id-to", help="column of the gene-set IDs in --id-map (default: second)")
    p.add_argument("--min-size", type=int, default=5, help="smallest gene set tested, within the background (default: 5)")
    p.add_argument("--max-size", type=int, default=1000, help="largest gene set tested (default: 1000)")
    p.add_argument("--correction", choices=("node", "signature", "all"), default="node",
                   help="Benjamini-Hochberg family (default: node, both tails together)")
    p.add_argument("--dotplot", metavar="PNG", help="also plot the enriched sets")
    p.set_defaults(func=cmd_enrich)

    p = subparsers.add_parser("associate", help="node activities against sample groups (tests, effect sizes, FDR)")
    p.add_argument("input", help="embedded .h5ad")
    p.add_argument("-o", "--output", required=True, help="association TSV, one row per node")
    _key(p, default="dae_varimax")
    p.add_argument("--obs", metavar="SHEET", help="CSV/TSV of sample metadata keyed by sample name, joined into obs")
    p.add_argument("--groupby", required=True, help="obs column of sample groups")
    p.add_argument("--groups", nargs="+", help="groups to compare, in order (default: all)")
    p.add_argument("--test", choices=("auto", "mannwhitney", "ttest", "kruskal", "anova"), default="auto",
                   help="auto: Mann-Whitney for two groups, Kruskal-Wallis for more")
    p.add_argument("--plot", metavar="PNG", help="also plot the activity of the most associated nodes")
    p.set_defaults(func=cmd_associate)

    p = subparsers.add_parser("survival", help="Cox model per node (HR per SD, FDR) and Kaplan-Meier high vs low")
    p.add_argument("input", help="embedded .h5ad")
    p.add_argument("-o", "--output", required=True, help="Cox TSV, one row per node")
    _key(p, default="dae_varimax")
    p.add_argument("--obs", metavar="SHEET", help="CSV/TSV of clinical data keyed by sample name, joined into obs")
    p.add_argument("--duration", required=True, help="obs column of follow-up time")
    p.add_argument("--event", required=True, help="obs column of the event (0/1, or see --event-value)")
    p.add_argument("--event-value", help="value of --event that means the event happened (e.g. Dead)")
    p.add_argument("--covariates", nargs="+", help="obs columns added to every Cox model")
    p.add_argument("--km", metavar="PNG", help="also plot Kaplan-Meier curves of the top node (or --km-node)")
    p.add_argument("--km-node", help="node for the Kaplan-Meier plot (default: smallest Cox p)")
    p.set_defaults(func=cmd_survival)

    p = subparsers.add_parser("score", help="node (signature) activities of new samples projected onto a saved model")
    p.add_argument("input", help="new samples in any readable format (raw or prepared)")
    p.add_argument("model", help="model folder (genodae train / run)")
    p.add_argument("-o", "--output", required=True, help="activities TSV, samples × nodes")
    p.add_argument("--rotation", choices=("varimax", "none"), default="varimax",
                   help="rotate as 'genodae signatures' does (default: varimax)")
    p.add_argument("--transform", metavar="JSON", help="the transform written by 'genodae signatures --transform' "
                   "(default: recompute the rotation from the model's weights)")
    p.add_argument("--allow-missing-genes", action="store_true", help="fill model genes absent from the data")
    p.add_argument("--missing", choices=("error", "drop", "impute"), default="error", help="NaN values (default: error)")
    p.set_defaults(func=cmd_score)

    p = subparsers.add_parser("sweep-summary", help="reconstruction, stability and enriched sets per n_latent")
    p.add_argument("inputs", nargs="+", help="embedded .h5ad files of a sweep (sizes × seeds, same cells)")
    p.add_argument("-o", "--output", required=True, help="summary TSV, one row per n_latent")
    _key(p)
    p.add_argument("--rotation", choices=("varimax", "none"), default="varimax", help="read-out (default: varimax)")
    _readout(p)
    p.add_argument("--gene-sets", nargs="+", metavar="GMT", help="count distinct enriched gene sets (FDR < --fdr)")
    p.add_argument("--id-map", metavar="TABLE", help="CSV/TSV mapping gene IDs to those of the gene sets")
    p.add_argument("--fdr", type=float, default=0.05, help="(default: 0.05)")
    p.add_argument("--plot", metavar="PNG", help="also plot the summary against n_latent")
    p.set_defaults(func=cmd_sweep_summary)


def _readout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--readout", choices=("correlation", "weights"), default="correlation",
                   help="gene weight of a node before rotation: correlation with its whitened activity (default) "
                        "or the decoder weight")


def _key(p: argparse.ArgumentParser, default: str = "dae") -> None:
    p.add_argument("--key", default=default, help=f"prefix of the model's keys in the .h5ad (default: {default})")


# --- helpers ----------------------------------------------------------------------------------------------


def _out(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name")
    return path


def _h5ad(path: str | Path, sheet: str | None = None, backed: bool = False):
    """An embedded .h5ad; ``backed``: X and the layers stay on disk (read in chunks when needed)."""
    from .io import read, read_backed

    path = Path(path)
    if not str(path).endswith(".h5ad"):
        raise UserError(f"{path}: expected an .h5ad written by genodae embed or run")
    if not path.is_file():
        raise UserError(f"{path} not found")
    return read_backed(path) if backed and sheet is None else read(path, sample_sheet=sheet)


def _ensure_key(adata, key: str, need: str = "varm") -> None:
    """Make ``key`` available: a ``<model>_varimax`` key is computed from ``<model>`` when absent.

    ``need``: ``varm`` (gene weights) or ``obsm`` (activities only, for association tests).
    """
    from .signatures import rotate

    if f"{key}_weights" in adata.varm or (need == "obsm" and f"X_{key}" in adata.obsm):
        return
    if key.endswith("_varimax") and f"{key[:-8]}_weights" in adata.varm:
        rotate(adata, key=key[:-8], key_added=key)
        return
    have = sorted(k[:-8] for k in adata.varm if k.endswith("_weights"))
    raise UserError(f"no model {key!r} in the file (varm['{key}_weights'] missing); available keys: "
                    f"{', '.join(have + [h + '_varimax' for h in have]) or 'none'}")


def _write(df, path, **kw) -> None:
    from .io import write_table

    write_table(df, _out(path), sep="\t", **kw)


def _png(path, plot) -> None:
    from .io import atomic_path

    with atomic_path(_out(path)) as tmp:
        plot(tmp)


def _gene_sets(paths: list[str]) -> dict[str, list[str]]:
    from .enrich import read_gmt

    sets: dict[str, list[str]] = {}
    for p in paths:
        for k, v in read_gmt(p).items():
            if k in sets:
                raise UserError(f"gene set {k!r} appears in more than one GMT file")
            sets[k] = v
    return sets


def _id_map(args):
    if not getattr(args, "id_map", None):
        return None
    from .enrich import read_id_map

    return read_id_map(args.id_map, source=getattr(args, "id_from", None), target=getattr(args, "id_to", None))


# --- commands ---------------------------------------------------------------------------------------------


def cmd_signatures(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    from .signatures import gene_weights, signatures

    adata = _h5ad(args.input, backed=True)  # the correlation read-out reads X in row chunks
    _ensure_key(adata, args.key)
    table = signatures(adata, key=args.key, sd_cutoff=args.sd_cutoff, rotation=args.rotation,
                       readout=args.readout, min_genes=args.min_genes)
    key = table.attrs["key"]
    if args.transform and args.rotation == "none":
        raise UserError("--transform needs a rotation (--rotation varimax)")
    W = gene_weights(adata, key)
    emb = None
    if args.embedding:
        from .assoc import activities

        emb = activities(adata, key)
    _write(table, args.output, index=False)
    if args.weights:
        _write(W.rename_axis("gene"), args.weights)
    if emb is not None:
        _write(pd.DataFrame(emb).rename_axis("cell"), args.embedding)
    if args.transform:
        import json

        info = adata.uns[key]
        doc = {"format": "genodae-transform", "source_key": args.key, "readout": args.readout,
               **{n: np.asarray(info[n]).tolist() for n in ("mean", "whitening", "rotation")},
               "node_names": list(map(str, info["node_names"]))}
        from .io import atomic_path

        with atomic_path(_out(args.transform)) as tmp:
            tmp.write_text(json.dumps(doc))
    if args.heatmap:
        _png(args.heatmap, lambda tmp: _heatmap_or_note(adata, table, key, args.n_genes, tmp))


def _heatmap_or_note(adata, table, key: str, n_genes: int, save) -> None:
    """The heatmap, or a figure that says why there is none: the tables are already written, so an empty
    signature (no gene beyond the cutoff) must not fail the command."""
    from . import pl

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

    from .assoc import activities
    from .signatures import ensemble, gene_weights, stability

    if len(args.inputs) < 2:
        raise UserError("an ensemble needs at least 2 models (embedded .h5ad files)")
    adatas = [_h5ad(p) for p in args.inputs]
    for a, p in zip(adatas, args.inputs, strict=True):
        if f"{args.key}_weights" not in a.varm:
            raise UserError(f"{p} has no model {args.key!r} (varm['{args.key}_weights']); pass the right --key")
    target = ensemble(adatas, keys=[args.key] * len(adatas), rotation=args.rotation, readout=args.readout,
                      min_corr=args.min_corr,
                      min_support=args.min_support, key_added="dae_ensemble")
    W = gene_weights(target, "dae_ensemble")
    if W.shape[1] == 0:
        raise UserError(f"no node is shared by enough models (|r| >= {args.min_corr}, support >= "
                        f"{args.min_support or 'half the models'}); lower --min-corr or --min-support")
    info = target.uns["dae_ensemble"]
    support = info["members"].merge(info["support"], left_on="cluster", right_index=True)
    support["model"] = [args.inputs[int(m[5:])] if str(m).startswith("model") else m for m in support["model"]]
    stab = stability([gene_weights(a, args.key) for a in adatas], labels=args.inputs)
    _write(W.rename_axis("gene"), args.output)
    if args.embedding:
        _write(pd.DataFrame(activities(target, "dae_ensemble")).rename_axis("cell"), args.embedding)
    if args.support:
        _write(support, args.support, index=False)
    if args.stability:
        _write(stab, args.stability, index=False)
    if args.h5ad:
        from .io import write_h5ad

        write_h5ad(target, _out(args.h5ad))


def cmd_enrich(args: argparse.Namespace) -> None:
    import pandas as pd

    from . import pl
    from .enrich import enrich
    from .signatures import gene_weights, genes_used, high_weight_genes

    adata = _h5ad(args.input)
    _ensure_key(adata, args.key)
    sets = _gene_sets(args.gene_sets)
    if args.signatures:
        path = Path(args.signatures)
        if not path.is_file():
            raise UserError(f"signatures table {path} not found")
        table = pd.read_csv(path, sep="\t")
    else:
        table = high_weight_genes(gene_weights(adata, args.key), sd_cutoff=args.sd_cutoff)
    res = enrich(table, sets, background=adata.var_names[genes_used(adata, args.key)], id_map=_id_map(args),
                 min_size=args.min_size, max_size=args.max_size, correction=args.correction)
    _write(res, args.output, index=False)
    if args.dotplot:
        _png(args.dotplot, lambda tmp: pl.enrichment_dotplot(adata, table=res, save=tmp))


def cmd_associate(args: argparse.Namespace) -> None:
    from . import pl
    from .assoc import associate

    adata = _h5ad(args.input, args.obs)
    _ensure_key(adata, args.key, need="obsm")
    res = associate(adata, key=args.key, groupby=args.groupby, groups=args.groups, test=args.test)
    _write(res, args.output, index=False)
    if args.plot:
        top = res.sort_values("pvalue")["node"].head(3).tolist()
        _png(args.plot, lambda tmp: pl.node_activity(adata, key=args.key, nodes=top, groupby=args.groupby,
                                                     save=tmp))


def cmd_survival(args: argparse.Namespace) -> None:
    from . import pl
    from .assoc import cox

    adata = _h5ad(args.input, args.obs)
    _ensure_key(adata, args.key, need="obsm")
    res = cox(adata, key=args.key, duration=args.duration, event=args.event, event_value=args.event_value,
              covariates=args.covariates)
    node = args.km_node or res["node"].iloc[0]
    if args.km_node and args.km_node not in set(res["node"]):
        raise UserError(f"--km-node {args.km_node!r} is not a node of {args.key}")
    _write(res, args.output, index=False)
    if args.km:
        _png(args.km, lambda tmp: pl.km(adata, key=args.key, node=node, duration=args.duration, event=args.event,
                                        event_value=args.event_value, save=tmp))


def cmd_score(args: argparse.Namespace) -> None:
    from .io import read
    from .model import DAE
    from .tl import score

    transform = None
    if args.transform:
        import json

        path = Path(args.transform)
        try:
            transform = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"transform {path} cannot be read ({e}); give the file of 'genodae signatures "
                            "--transform'") from None
        if not isinstance(transform, dict) or transform.get("format") != "genodae-transform":
            raise UserError(f"{path} is not a transform written by 'genodae signatures --transform'")
    model = DAE.load(args.model)
    adata = read(args.input, missing=args.missing)
    act = score(adata, model=model, rotation=args.rotation, transform=transform,
                allow_missing_genes=args.allow_missing_genes)
    _write(act.rename_axis("sample"), args.output)


def cmd_sweep_summary(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    from .enrich import enrich
    from .signatures import gene_weights, high_weight_genes, plot_sweep, rotate, sweep_summary

    sets = _gene_sets(args.gene_sets) if args.gene_sets else None
    idm = _id_map(args)
    runs, enr = [], []
    for p in args.inputs:
        a = _h5ad(p)
        if f"{args.key}_weights" not in a.varm or args.key not in a.uns:
            raise UserError(f"{p} has no model {args.key!r}; pass the right --key")
        info = a.uns[args.key]
        key = args.key
        if args.rotation != "none":
            rotate(a, key=args.key, method=args.rotation, readout=args.readout)
            key = f"{args.key}_varimax"
        W = gene_weights(a, key)
        r2 = a.var.get(f"{args.key}_recon_r2")
        hist = info.get("history", {})
        val = np.asarray(hist.get("val_loss", []), dtype=float)
        runs.append(dict(run=p, n_latent=int(info["params"]["n_latent"]), seed=int(info["params"]["seed"]),
                         weights=W, recon_r2=float(np.nanmean(r2)) if r2 is not None else np.nan,
                         val_loss=float(val.min()) if val.size else np.nan))
        if sets is not None:
            e = enrich(high_weight_genes(W), sets, background=W.index, id_map=idm)
            e["run"] = p
            enr.append(e)
    runs = pd.DataFrame(runs)
    table = sweep_summary(runs, enrichment=pd.concat(enr) if enr else None, fdr=args.fdr)
    _write(table, args.output, index=False)
    if args.plot:
        _png(args.plot, lambda tmp: plot_sweep(table, save=tmp))


# --- standalone entry point (until genodae.cli registers these commands itself) --------------------------


def main(argv: list[str] | None = None) -> int:
    """``genodae`` with the signature subcommands registered (same behaviour as ``genodae.cli.main``)."""
    from . import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "signatures" not in sub.choices:
        register(sub)
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="genodae: %(message)s", stream=sys.stderr)
    logging.getLogger("genodae").setLevel(level)
    try:
        args.func(args)
    except UserError as e:
        print(f"genodae {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
