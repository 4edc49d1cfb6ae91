#!/usr/bin/env python
"""Do signatures recover planted gene modules? genodae's nodes next to PCA, ICA and NMF, in one run.

Data: ``genodae.synthetic.planted_programs`` (negative-binomial counts; K disjoint gene modules, each driving
one group of cells), prepared with ``genodae.pp.prepare(n_top_genes=0)`` (all genes, min-max scaled): every
method sees exactly the model input genodae trains on.

Methods (each with ``n_latent`` nodes/components, seeds 0…9):

- ``dae_default``: ``genodae.DAE()`` with the library defaults (MLP encoder 512-128, linear decoder).
- ``dae_signatures``: the ``signatures`` preset (linear encoder, lr 1e-2, up to 300 epochs).
- ``adage``: the ``adage`` preset (tied sigmoid layer, SGD, batch 10), epochs capped (``--adage-epochs``).
- ``dae_nonneg``: prototype, ``signatures`` preset + non-negative decoder weights (projected after each
  optimiser step; not in the library: set up through ``DAE.fit(init_module=...)`` and a torch optimiser hook).
- ``dae_zeroinit``: prototype of a model change, the *default* architecture with the linear decoder
  initialised at zero and trained for up to 300 epochs (lr 1e-3, patience 30, as the ``signatures`` preset then stopped).
- ``pca``, ``ica`` (FastICA), ``nmf``: scikit-learn on the same input; "seed" = random_state and a 90%
  subsample of cells (the DAE's own seed changes its 90% training split, so the baselines vary alike;
  PCA is otherwise deterministic).

Read-outs: ``raw`` (the weights/loadings as they are), ``varimax`` (weights rotated by
``genodae.signatures.varimax``) and ``corr_varimax`` (the default of ``genodae.tl.signatures`` until 2026-12-06, kept here so the results compare; since then the library adds a sparse-coding step, bench/readable.py: each gene's
correlation with the whitened activities/scores, then varimax).

Metrics (``genodae.signatures.module_recovery``, averaged over modules): ``auroc`` = best node's AUROC of
|weight| for module membership; ``precision``/``recall`` of the best-F1 high-weight tail (mean ± 2.5 SD);
``activity_r`` = best node's |Pearson r| between node activity and the planted program activity;
``stability`` = mean pairwise best-match |r| of node weight vectors across seeds 0–4.
Ensembles: ``genodae.signatures.consensus`` of seeds 0–4 (and of 5–9); ``stability`` of an ensemble =
best-match |r| between the two consensus sets.

Examples
--------
python bench/signatures.py synthetic                 # writes bench/results/signatures_synthetic*.tsv
python bench/signatures.py pbmc                      # PBMC3k CD14 vs CD8 + Hallmark enrichment
python bench/signatures.py luad                      # Shedden LUAD Cox per node + KM plot
python bench/signatures.py sweep                     # n_latent sweep on synthetic data
"""

from __future__ import annotations

import json
import logging
import time
import warnings

import _common as C
import numpy as np
import pandas as pd

OUT = C.RESULTS
SHARED = C.DATA_DIR

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

torch.set_num_threads(1)


import genodae  # noqa: E402
import genodae.assoc  # noqa: E402
from genodae import signatures as S  # noqa: E402
from genodae import synthetic  # noqa: E402
from genodae.config import ENSEMBLE_MIN_CORR  # noqa: E402

log = logging.getLogger("bench")


# --- prototypes of model changes (through DAE.fit(init_module=...); the library itself is not changed) ------


def _prototype(zero_init: bool = False, nonneg: bool = False):
    """(``init_module`` for ``DAE.fit``, a list that receives the torch hook handles to remove after training).

    ``zero_init``: the linear decoder's weights start at zero. ``nonneg``: after every optimiser step that updates
    the decoder's weights they are projected onto >= 0 (torch's global optimiser step post-hook)."""
    handles = []

    def init(module):
        dec = getattr(module, "decoder", None)
        if zero_init and isinstance(dec, torch.nn.Linear):
            torch.nn.init.zeros_(dec.weight)
        if nonneg:
            w = module.decoder.weight

            def project(optimizer, args, kwargs):
                if any(p is w for g in optimizer.param_groups for p in g["params"]):
                    with torch.no_grad():
                        w.clamp_(min=0)

            handles.append(register_optimizer_step_post_hook(project))

    return init, handles


def train_dae(adata, seed: int, n_latent: int, kind: str, adage_epochs: int):
    init, handles = _prototype(zero_init=kind == "dae_zeroinit", nonneg=kind == "dae_nonneg")
    try:
        if kind == "dae_default":
            m = genodae.DAE(n_latent=n_latent, seed=seed, num_threads=1)
        elif kind in ("dae_signatures", "dae_nonneg"):
            m = genodae.DAE(preset="signatures", n_latent=n_latent, seed=seed, num_threads=1)
        elif kind == "dae_zeroinit":
            m = genodae.DAE(n_latent=n_latent, seed=seed, num_threads=1, epochs=300, patience=30)
        elif kind == "adage":
            m = genodae.DAE(preset="adage", n_latent=n_latent, seed=seed, num_threads=1, epochs=adage_epochs)
        else:
            raise ValueError(kind)
        m.fit(adata, progress=False, init_module=init)
    finally:
        for h in handles:
            h.remove()
    return m.gene_weights(), m.embed(adata), m.history


def activity_r(Z: np.ndarray, truth: np.ndarray) -> float:
    if Z is None or np.asarray(Z).shape[1] == 0:
        return 0.0
    C = np.abs(S._corr_cols(np.asarray(Z, float), np.asarray(truth, float)))
    return float(C.max(axis=0).mean())


def run_synthetic(args) -> None:
    rows, ens_rows = [], []
    for setting in args.settings:
        params = SETTINGS[setting]
        adata = synthetic.planted_programs(**params, seed=args.data_seed)
        genodae.pp.prepare(adata, n_top_genes=0)
        mods = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
        truth_act = adata.obsm["program_activity"]
        X, genes = S.model_input(adata)
        seeds = list(range(args.n_seeds * 2))
        for method in args.methods:
            fits = []
            for s in seeds:
                t0 = time.perf_counter()
                if method in ("pca", "ica", "nmf"):
                    W, Z = C.factor_loadings(X, genes, method, args.n_latent, seed=s, subsample=0.9)
                    epochs = 0
                else:
                    W, Z, h = train_dae(adata, s, args.n_latent, method, args.adage_epochs)
                    epochs = h.epochs_run
                fits.append((W, Z, time.perf_counter() - t0, epochs))
                log.info("%s %s seed %d: %.1fs", setting, method, s, fits[-1][2])
            for readout in ("raw", "varimax", "corr_varimax"):
                Ws, Zs = [], []
                for W, Z, _, _ in fits:
                    if readout == "varimax":
                        R = S.varimax(W.to_numpy())
                        W = pd.DataFrame(W.to_numpy() @ R, index=W.index)
                        Z = Z @ R
                    elif readout == "corr_varimax":  # what genodae.tl.signatures does by default
                        mu, M = S.whitening(Z)
                        Zw = (Z - mu) @ M
                        L = S.activity_loadings(X, Zw)
                        R = S.varimax(L)
                        W = pd.DataFrame(L @ R, index=W.index)
                        Z = Zw @ R
                    Ws.append(W)
                    Zs.append(Z)
                first = list(range(args.n_seeds))
                stab = S.stability([Ws[i] for i in first])["stability"].mean()
                for i in first:
                    rec = S.module_recovery(Ws[i], mods)
                    rows.append(dict(setting=setting, method=method, readout=readout, seed=seeds[i],
                                     auroc=rec["auroc"].mean(), precision=rec["precision"].mean(),
                                     recall=rec["recall"].mean(), f1=rec["f1"].mean(),
                                     activity_r=activity_r(Zs[i], truth_act), stability=stab,
                                     seconds=fits[i][2], epochs=fits[i][3]))
                cons = []
                for half in (first, [i + args.n_seeds for i in first]):
                    cons.append(S.consensus([Ws[i] for i in half], embeddings=[Zs[i] for i in half],
                                            min_corr=ENSEMBLE_MIN_CORR["varimax"]))  # raw/varimax nodes' cut
                rec = S.module_recovery(cons[0]["weights"], mods)
                ens_rows.append(dict(
                    setting=setting, method=method, readout=readout, n_consensus=cons[0]["weights"].shape[1],
                    auroc=rec["auroc"].mean(), precision=rec["precision"].mean(), recall=rec["recall"].mean(),
                    f1=rec["f1"].mean(), activity_r=activity_r(cons[0]["embedding"], truth_act),
                    stability=S.best_match_correlation(cons[0]["weights"].to_numpy(),
                                                       cons[1]["weights"].to_numpy()),
                    median_support=float(cons[0]["support"].median())))
                log.info("%s %s %s: single auroc %.3f, ensemble auroc %.3f", setting, method, readout,
                         np.mean([r["auroc"] for r in rows[-args.n_seeds:]]), ens_rows[-1]["auroc"])
    per = pd.DataFrame(rows)
    ens = pd.DataFrame(ens_rows)
    OUT.mkdir(parents=True, exist_ok=True)
    per.to_csv(OUT / "signatures_synthetic_per_seed.tsv", sep="\t", index=False, float_format="%.4f")
    single = per.groupby(["setting", "method", "readout"], sort=False).agg(
        auroc=("auroc", "mean"), auroc_sd=("auroc", "std"), precision=("precision", "mean"),
        recall=("recall", "mean"), f1=("f1", "mean"), activity_r=("activity_r", "mean"),
        stability=("stability", "first"), seconds=("seconds", "mean"), epochs=("epochs", "mean")).reset_index()
    table = single.merge(ens, on=["setting", "method", "readout"], suffixes=("", "_ens"))
    table.to_csv(OUT / "signatures_synthetic.tsv", sep="\t", index=False, float_format="%.4f")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.round(3).to_string(index=False))


SETTINGS = {
    # six disjoint modules of 25 genes among 500, 1,000 cells, all genes up when the program is on
    "standard": dict(n_cells=1000, n_genes=500, n_programs=6, module_size=25, effect=1.2),
    # weaker programs, a third of each module's genes going down, more noise (lower NB dispersion)
    "hard": dict(n_cells=1000, n_genes=500, n_programs=6, module_size=25, effect=0.8, negative_fraction=0.3,
                 dispersion=2.0),
}


# --- real data ---------------------------------------------------------------------------------------------


def run_pbmc(args) -> None:
    from genodae import pl

    path = SHARED / "scrna" / "pbmc3k_cd8_cd14_mtx"
    adata = genodae.read(path, sample_sheet=path / "cells_metadata.csv")
    genodae.pp.prepare(adata, n_top_genes=0)
    gmt = SHARED / "genesets" / "h.all.v7.0.symbols.gmt"
    keys = [f"dae_s{s}" for s in range(args.n_seeds)]
    t0 = time.perf_counter()
    for s, key in enumerate(keys):
        genodae.tl.dae(adata, preset="signatures", n_latent=args.n_latent, seed=s, num_threads=1, key_added=key)
    log.info("pbmc: trained %d models in %.0fs", len(keys), time.perf_counter() - t0)
    genodae.tl.ensemble(adata, keys=keys, key_added="dae_ens", rotation="varimax")
    genodae.tl.signatures(adata, key="dae_s0", rotation="varimax")  # -> dae_s0_varimax
    genodae.tl.signatures(adata, key="dae_ens", rotation="none")
    summary = {}
    for tag, rkey in (("single", "dae_s0_varimax"), ("ensemble", "dae_ens")):
        grp = genodae.assoc.associate(adata, key=rkey, groupby="celltype")
        enr = genodae.tl.enrich(adata, gene_sets=gmt, key=rkey)
        grp.to_csv(OUT / f"signatures_pbmc_{tag}_celltype.tsv", sep="\t", index=False, float_format="%.4g")
        enr.to_csv(OUT / f"signatures_pbmc_{tag}_hallmark.tsv", sep="\t", index=False, float_format="%.4g")
        top = grp.reindex(grp["auc"].sub(0.5).abs().sort_values(ascending=False).index).head(4)
        print(f"== {tag} ({rkey}): nodes separating the cell types (Mann-Whitney; auc = P(CD8 > CD14))")
        print(top[["node", "auc", "cohens_d", "pvalue", "fdr"]].to_string(index=False))
        rows = []
        for node in top["node"]:
            e = enr[(enr["node"] == node) & (enr["fdr"] < 0.05)].sort_values("pvalue").head(4)
            sig = adata.uns[f"{rkey}_signatures"]
            genes = {d: list(map(str, sig[(sig.node == node) & (sig.direction == d)].sort_values("rank").gene.head(8)))
                     for d in ("pos", "neg")}
            rows.append({"node": node, "genes": genes,
                         "enriched": [(r.signature, r.term, f"{r.fdr:.2g}", int(r.overlap)) for r in e.itertuples()]})
            print(node, genes, rows[-1]["enriched"])
        hits = enr[enr["fdr"] < 0.05].merge(grp[["node", "auc", "fdr"]].rename(columns={"fdr": "fdr_celltype"}),
                                            on="node")
        print(f"-- {tag}: every signature x Hallmark set with FDR < 0.05")
        print(hits[["signature", "term", "overlap", "signature_size", "fdr", "auc", "fdr_celltype"]].to_string(index=False))
        summary[tag] = {"top_nodes": rows, "enriched": hits[["signature", "term", "overlap", "fdr", "auc"]].to_dict("records")}
    stab_corr = S.stability([S.gene_weights(adata, f"{k}_varimax") for k in keys])["stability"].mean()
    stab_raw = S.stability([S.gene_weights(adata, k) for k in keys])["stability"].mean()
    stab_v = S.stability([S.gene_weights(adata, k).to_numpy() @ S.varimax(S.gene_weights(adata, k).to_numpy())
                          for k in keys])["stability"].mean()
    summary["stability"] = {"dae_signatures_raw": stab_raw, "dae_signatures_varimax": stab_v,
                            "dae_signatures_corr_varimax": stab_corr, "ensemble_support":
                            adata.uns["dae_ens"]["support"]["support"].tolist()}
    X, genes = S.model_input(adata)
    for method in ("pca", "ica", "nmf"):
        Ls = [C.factor_loadings(X, genes, method, args.n_latent, seed=s, subsample=0.9)[0].to_numpy()
              for s in range(args.n_seeds)]
        summary["stability"][f"{method}_raw"] = S.stability(Ls)["stability"].mean()
        summary["stability"][f"{method}_varimax"] = S.stability([L @ S.varimax(L) for L in Ls])["stability"].mean()
        Cs = []
        for s in range(args.n_seeds):
            _, Zs = C.factor_loadings(X, genes, method, args.n_latent, seed=s, subsample=0.9)
            mu, M = S.whitening(Zs)
            L = S.activity_loadings(X, (Zs - mu) @ M)
            Cs.append(L @ S.varimax(L))
        summary["stability"][f"{method}_corr_varimax"] = S.stability(Cs)["stability"].mean()
    print(json.dumps(summary["stability"], indent=1))
    (OUT / "signatures_pbmc_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    best = summary["single"]["top_nodes"][0]["node"]
    pl.signature_heatmap(adata, key="dae_s0_varimax", save=OUT / "signatures_pbmc_heatmap.png")
    pl.enrichment_dotplot(adata, key="dae_s0_varimax", save=OUT / "signatures_pbmc_hallmark_dotplot.png")
    pl.node_activity(adata, key="dae_s0_varimax", nodes=[best, summary["single"]["top_nodes"][1]["node"]],
                     groupby="celltype",
                     save=OUT / "signatures_pbmc_node_activity.png")


def run_luad(args) -> None:
    from genodae import pl

    d = SHARED / "bulk" / "shedden2008_luad"
    adata = genodae.read(d / "shedden2008_lung_150probes_x_444.csv", missing="impute",
                         sample_sheet=d / "shedden2008_lung_clinical.csv")
    genodae.pp.prepare(adata, n_top_genes=0)
    keys = [f"dae_s{s}" for s in range(args.n_seeds)]
    for s, key in enumerate(keys):
        genodae.tl.dae(adata, preset="signatures", n_latent=args.n_latent, seed=s, num_threads=1, key_added=key)
    genodae.tl.signatures(adata, key="dae_s0", rotation="varimax")
    genodae.tl.ensemble(adata, keys=keys, key_added="dae_ens", rotation="varimax")
    genodae.tl.signatures(adata, key="dae_ens", rotation="none")
    surv = dict(duration="MONTHS_TO_LAST_CONTACT_OR_DEATH", event="VITAL_STATUS", event_value="Dead")
    summary = {"n_samples": int(adata.n_obs), "n_probes": int(adata.n_vars)}
    for tag, rkey in (("single", "dae_s0_varimax"), ("ensemble", "dae_ens")):
        cox = genodae.assoc.cox(adata, key=rkey, **surv)
        coxs = genodae.assoc.cox(adata, key=rkey, covariates=["PATHOLOGIC_N_STAGE"], **surv)
        cox.to_csv(OUT / f"signatures_luad_{tag}_cox.tsv", sep="\t", index=False, float_format="%.4g")
        coxs.to_csv(OUT / f"signatures_luad_{tag}_cox_adj_nstage.tsv", sep="\t", index=False, float_format="%.4g")
        print(f"== {tag} ({rkey}): Cox per node (HR per SD of activity)")
        print(cox.to_string(index=False))
        print("adjusted for N stage:")
        print(coxs[["node", "hr", "hr_lower", "hr_upper", "pvalue", "fdr"]].head(5).to_string(index=False))
        node = cox.iloc[0]["node"]
        km = genodae.assoc.km_split(adata, key=rkey, node=node, **surv)
        sig = adata.uns[f"{rkey}_signatures"]
        genes = {dd: list(map(str, sig[(sig.node == node) & (sig.direction == dd)].sort_values("rank").gene.head(8)))
                 for dd in ("pos", "neg")}
        w = S.gene_weights(adata, rkey)[node].sort_values()
        genes["top_pos_weight"] = [f"{g}:{v:.2f}" for g, v in w.iloc[::-1].head(8).items()]
        genes["top_neg_weight"] = [f"{g}:{v:.2f}" for g, v in w.head(4).items()]
        print(node, km["logrank"], km["median_survival"], genes)
        summary[tag] = {"top_node": node, "logrank": km["logrank"], "median_survival": km["median_survival"],
                        "genes": genes, "n_fdr05": int((cox["fdr"] < 0.05).sum())}
        pl.km(adata, key=rkey, node=node, save=OUT / f"signatures_luad_{tag}_km.png", **surv)
    (OUT / "signatures_luad_summary.json").write_text(json.dumps(summary, indent=1, default=str))


def run_sweep(args) -> None:

    adata = synthetic.planted_programs(**SETTINGS["standard"], seed=args.data_seed)
    genodae.pp.prepare(adata, n_top_genes=0)
    mods = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
    runs = []
    for n in args.sizes:
        for s in range(args.n_seeds):
            key = f"dae_k{n}_s{s}"
            genodae.tl.dae(adata, preset="signatures", n_latent=n, seed=s, num_threads=1, key_added=key)
            genodae.tl.rotate(adata, key=key, method="varimax")
            W = S.gene_weights(adata, f"{key}_varimax")
            rec = S.module_recovery(W, mods)
            runs.append(dict(run=key, n_latent=n, seed=s, weights=W,
                             recon_r2=float(np.nanmean(adata.var[f"{key}_recon_r2"])),
                             val_loss=float(adata.uns[key]["history"]["val_loss"].min()),
                             module_auroc=rec["auroc"].mean(), module_f1=rec["f1"].mean()))
    runs = pd.DataFrame(runs)
    # gene sets = the planted modules, so "distinct enriched sets" counts recovered modules
    from genodae import enrich

    enr = []
    for r in runs.itertuples():
        sig = S.high_weight_genes(r.weights)
        e = enrich.enrich(sig, mods, background=r.weights.index)
        e["run"] = r.run
        enr.append(e)
    table = S.sweep_summary(runs, enrichment=pd.concat(enr))
    table = table.merge(runs.groupby("n_latent")[["module_auroc", "module_f1"]].mean().reset_index(), on="n_latent")
    table.to_csv(OUT / "signatures_sweep.tsv", sep="\t", index=False, float_format="%.4f")
    genodae.pl.plot_sweep(table, save=OUT / "signatures_sweep.png")
    print(table.round(3).to_string(index=False))


def main() -> None:
    p = C.parser(__doc__, full=True)
    p.add_argument("part", choices=("synthetic", "pbmc", "luad", "sweep"))
    p.add_argument("--methods", default="dae_default,dae_signatures,adage,dae_nonneg,dae_zeroinit,pca,ica,nmf")
    p.add_argument("--settings", default="standard,hard")
    p.add_argument("--n-seeds", type=int, default=5)
    p.add_argument("--n-latent", type=int, default=10)
    p.add_argument("--adage-epochs", type=int, default=100)
    p.add_argument("--sizes", default="4,6,10,20,32")
    p.add_argument("--data-seed", type=int, default=0)
    args = p.parse_args()
    args.methods = args.methods.split(",")
    args.settings = args.settings.split(",")
    args.sizes = [int(x) for x in args.sizes.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("genodae").setLevel(logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    {"synthetic": run_synthetic, "pbmc": run_pbmc, "luad": run_luad, "sweep": run_sweep}[args.part](args)


if __name__ == "__main__":
    main()
