#!/usr/bin/env python
"""Readable gene weights (issue 16): planted programs on several generators, and pathway coverage on bulk data.

Part ``synthetic``: five generators from ``genodae.synthetic.program_mixture`` that differ in how programs
combine (see ``GENERATORS``): discrete groups, continuous gradients, overlapping mixed-sign modules, modules
of different sizes with library-size spread, low dispersion and dropout, and bulk-like log2 microarray
values. Every method gets the same prepared input (``genodae.pp.prepare`` defaults: log1p of
library-normalised counts, or the log2 values as they are, min–max scaled) and the same number of nodes
(``--n-latent``, default: the library default 32).

Methods: ``genodae`` = ``tl.dae`` defaults, read out as users get signatures (``tl.signatures``' default
read-out: the sparse nodes of ``tl.rotate``; since 2026-12-07, when the model's own basis became the distance-keeping
varimax; before, ``varm["dae_weights"]``, which then held the same sparse nodes), as the model's own weights
(``genodae (model weights)``, ``varm["dae_weights"]``) and as the raw decoder weights (``varm["dae_decoder_weights"]``); PCA, FastICA and NMF (scikit-learn) with
their loadings raw and with genodae's read-out (correlation with whitened scores, varimax); cNMF (the
``cnmf`` package, Kotliar et al. 2019: 20 NMF replicates, consensus, gene-spectra z-scores) where installed.

Metrics (``genodae.signatures.module_recovery``, averaged over modules): ``auroc`` = best node's AUROC of
|weight| for membership; ``f1`` (precision, recall) of the best-matching ±2.5 SD signature; ``stab`` = mean
pairwise best-match |r| of weight vectors across seeds (baselines: random_state and a 90 % subsample of
cells, as the DAE's seed changes its 90 % training split); ``stab_programs`` = the same for the nodes that carry
the planted programs only (each module's best-AUROC node in one model, best match among all nodes of the other;
both directions): do seeds agree on the programs, whatever the nodes without one do; ``ens_*`` = eADAGE consensus of the seeds (4+
seeds: each half's consensus scored, ``ens_stab`` = best-match |r| between the two halves' consensus nodes; nodes
cluster at ``tl.ensemble``'s cut for their read-out, ``genodae.config.ENSEMBLE_MIN_CORR``: 0.6 for sparse, 0.5 for
varimax and raw weights, 0.5 for every table before 2026-12-07).
``oracle (true activities)``: each gene's correlation with the planted activities, the read-out's ceiling.
Per module (``readable_synthetic_modules.tsv``): which modules no method recovers.

Part ``bulk``: eADAGE's pathway coverage on the bulk sets of ../shared/data (``GENODAE_SHARED_DATA``
overrides) with Hallmark and GO BP: ±2.5 SD signatures per node, one-sided Fisher test, BH per node
(``genodae.enrich``), coverage = gene sets significant (FDR < 0.05) for at least one signature; share of
signatures enriched for at least one set; ``*_pos``: the same for the positive tails alone (NMF's loadings are
non-negative, so its signatures are positive tails only). ``--sets`` adds real single-cell counts with gene
symbols (``COUNT_SETS``: PBMC3k CD8/CD14, the three CEL-seq2 plates). Probe ``genodae one-sided read-out``: the
default model's sparse activities made usage-like (``one_sided_weights``).

python bench/readable.py synthetic --seeds 3       # bench/results/readable_synthetic{,_modules}.tsv (main tables)
python bench/readable.py bulk --seeds 3            # bench/results/readable_bulk.tsv (main table)
(the first comparison's main tables, of the 2026-12-04 default, are kept as readable_*_2026-12-04.tsv)
python bench/readable.py bulk --seeds 10 --suffix _seeds10   # + ens_stab: consensus of seeds 0-4 vs 5-9
python bench/readable.py bulk --seeds 3 --sets pbmc3k_cd8_cd14 celseq2_3plates --variants genodae "genodae nb" \
    "genodae signatures preset" "genodae one-sided read-out" --suffix _singlecell   # real single-cell counts
python bench/readable.py rank --seeds 3            # probe: n_latent = the signal rank (readable_rank.tsv)
python bench/readable.py synthetic --seeds 3 --variants "genodae patience 0" --suffix _patience   # the default now
python bench/readable.py synthetic --seeds 6 --generators groups bulk_like --no-cnmf \
    --variants "genodae nb" "genodae signatures preset" "genodae signatures preset patience 30"     # (+ the other 3
                                                    # generators with --seeds 3) -> readable_synthetic_presets.tsv
python bench/readable.py synthetic --seeds 10 --generators groups --no-cnmf --variants "genodae patience 0" \
    --suffix _ens10     # (+ bulk_like sizes; + groups with "genodae signatures preset"): ensemble size, 5 vs 5 seeds
python bench/readable.py readouts --seeds 3        # probe: other read-outs of the same models (readable_readouts.tsv)
python bench/readable.py readouts --seeds 3 --generators groups --preset signatures --suffix _signatures
python bench/readable.py twins --seeds 2           # probe: nodes that are near copies (readable_twins.tsv)
python bench/readable.py consensus --seeds 10      # ensembles: one node per model vs plain average linkage

Part ``readouts`` (a probe: where the default read-out loses, and what else was tried): per generator and seed
the default model is trained once and its embedding read out several ways, each scored as above. ``varimax``:
the library's read-out (correlation with the whitened embedding, varimax), here over all cells where the stored
weights use the training cells (F1 within 0.004 of the ``genodae`` rows of the same seeds). ``varimax, 10 starts``: the same criterion, the best of the identity start and 9
random orthogonal ones (varimax has local optima; Nguyen & Waller 2022 recommend random starts).
``geomin``/``oblimin`` (oblique; ``factor_analyzer.rotator.Rotator``, Kaiser-normalised; weights = structure
loadings, the genes' correlations with the oblique factors). ``fastica``: scikit-learn FastICA of the whitened
embedding (cells), the genes' correlations with its components. Two ceilings that use the planted activities
(unknown in practice): ``linear projection`` (the genes' correlations with the least-squares prediction of each
activity from the embedding: the best any linear read-out of this embedding could do) and ``nearest
orthogonal`` (the orthonormal basis of the whitened embedding nearest those directions: the best an orthogonal
rotation such as varimax could do). ``r2_activity``: mean R² of that least-squares prediction (how much of the
planted activities the embedding carries linearly).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import _common as C
import numpy as np
import pandas as pd

OUT = C.RESULTS
SHARED = C.shared_data_dir()

warnings.filterwarnings("ignore")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import genodae  # noqa: E402
import genodae.config as G  # noqa: E402
from genodae import signatures as S  # noqa: E402
from genodae import synthetic  # noqa: E402
from genodae._keys import DEFAULT_ROTATION  # noqa: E402
from genodae.config import ENSEMBLE_MIN_CORR  # noqa: E402

log = logging.getLogger("bench.readable")

GENERATORS = {
    "groups": dict(activity="groups"),
    "gradients": dict(activity="continuous"),
    "overlap": dict(activity="mixed", overlap=0.25, negative_fraction=0.25),
    "sizes": dict(activity="mixed", module_sizes=(10, 20, 40, 80, 160), library_sd=0.8, dispersion=1.5,
                  dropout=0.2),
    "bulk_like": dict(activity="continuous", module_sizes=(20, 40, 40, 60, 80), bulk=True, noise_sd=0.5,
                      effect=0.4, n_cells=300, n_genes=2000),
}
BASELINES = ("pca", "ica", "nmf")


COMMON = dict(n_cells=1500, n_genes=1500, effect=0.6, mean_log_expression=-0.5)  # weak programs, sparse counts


def make(name: str, data_seed: int = 1000):
    """One dataset per generator: the seeds vary the models (stability and ensembles need the same data)."""
    kw = dict(COMMON)
    kw.update(GENERATORS[name])
    kw["seed"] = data_seed
    return synthetic.program_mixture(**kw)


def corr_varimax(X, scores: np.ndarray, genes) -> pd.DataFrame:
    """genodae's read-out applied to any factorisation: correlation with whitened scores, then varimax."""
    mu, M = S.whitening(scores)
    L = S.activity_loadings(X, (scores - mu) @ M)
    L = L @ S.varimax(L)
    return pd.DataFrame(L, index=pd.Index(genes), columns=[f"f{j}" for j in range(L.shape[1])])


def cnmf_loadings(adata, k: int, seed: int, genes) -> pd.DataFrame | None:
    try:
        from cnmf import cNMF
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        raw = adata.copy()
        raw.X = raw.X.toarray() if hasattr(raw.X, "toarray") else np.asarray(raw.X)
        raw.X = np.clip(raw.X, 0, None)
        raw = raw[:, list(genes)].copy()
        path = Path(tmp) / "counts.h5ad"
        raw.write_h5ad(path)
        c = cNMF(output_dir=tmp, name="run")
        c.prepare(counts_fn=str(path), components=[k], n_iter=20, seed=seed, num_highvar_genes=len(genes))
        c.factorize(worker_i=0, total_workers=1)
        c.combine()
        c.consensus(k=k, density_threshold=0.5, show_clustering=False)
        _, scores, _, _ = c.load_results(K=k, density_threshold=0.5)
    W = scores.T if scores.shape[0] == k else scores  # genes × components
    return W.reindex(pd.Index(genes)).fillna(0.0)


ONE_SIDED = "genodae one-sided read-out"  # a read-out probe of the default model (bulk part)
VARIANTS = {  # label → tl.dae settings; "genodae" = the library defaults, as users get them
    "genodae": {},
    "genodae nb": {"gene_likelihood": "nb"},
    "genodae signatures preset": {"preset": "signatures"},
}
PROBES = {  # run only when named with --variants (not part of the default comparison)
    "genodae patience 0": {"patience": 0},  # no early stopping: the whole epoch budget, best validation epoch kept
    "genodae signatures preset patience 30": {"preset": "signatures", "patience": 30},  # the preset before 2026-12-04
    "genodae varimax": {"rotation": "varimax"},  # the model basis (whitened varimax until 2026-12-07, distance-keeping since)
    "genodae signatures preset varimax": {"preset": "signatures", "rotation": "varimax"},
    # the default model's sparse activities made one-sided, usage-like (bench/probes/readout_limits.py "relu all"):
    # each gene's correlation with max(a - median(a), 0), a's sign turned so that its skew is positive
    ONE_SIDED: {},
    # the auto epoch budget with a floor of 6,000 minibatch updates instead of genodae.config.MIN_STEPS (2,000), as
    # explicit epochs (min_steps_epochs):
    # on the generators the best validation epoch lay beyond the 2,000-update budget (readout_limits.py updates)
    "genodae 6000 updates": {"min_steps": 6000},
    # the model input's scaling asked for instead of prepare's scaling="auto" (minmax for counts, zscore otherwise;
    # readout_limits.py scaling): "genodae minmax" is the former default (until 2026-12-08) on log-scale input
    "genodae zscore": {"prepare": {"scaling": "zscore"}},
    "genodae minmax": {"prepare": {"scaling": "minmax"}},
    "genodae none": {"prepare": {"scaling": "none"}},  # log-normalised values unscaled (scVI's encoder input)
    # a larger learning rate (readout_limits.py learning: groups/overlap up on 2 seeds, sizes down on 2 seeds)
    "genodae lr 3e-3": {"lr": 3e-3},
}


VARIMAX_READOUT = "genodae (varimax read-out)"  # the default models' nodes rotated by varimax instead (tl.rotate)
MODEL_WEIGHTS = "genodae (model weights)"  # varm["dae_weights"] of a default model: its distance-keeping varimax nodes
ENSEMBLE_CUTS = (0.5, 0.55, 0.6, 0.65, 0.7)  # consensus min_corr values compared (10+ seeds; readable.md)


def genodae_weights(adata, seed: int, n_latent: int, variants=VARIANTS, raw=None) -> dict[str, pd.DataFrame]:
    """Weights of genodae's variants trained on the prepared ``adata``; a variant with ``prepare`` settings is
    trained on ``raw`` prepared with them instead (the same genes: gene selection does not depend on the scaling)."""
    out = {}
    shared = ONE_SIDED in variants and any(not kw and label != ONE_SIDED for label, kw in variants.items())
    for label, kw in variants.items():
        if kw.get("gene_likelihood") == "nb" and "counts" not in adata.layers:
            continue  # bulk: no counts
        if label == ONE_SIDED and shared:
            continue  # read from the default model below, not trained twice
        kw = dict(kw)
        prepare = kw.pop("prepare", None)
        if prepare and raw is None:
            raise SystemExit(f"{label}: this part does not pass the raw data its prepare settings need")
        a = genodae.pp.prepare(raw, copy=True, **prepare) if prepare else adata.copy()
        steps = kw.pop("min_steps", None)
        if steps:  # the auto budget (DAEConfig.max_epochs) with another floor of updates, as explicit epochs
            kw["epochs"] = min_steps_epochs(adata.n_obs, steps)
        genodae.tl.dae(a, seed=seed, n_latent=n_latent, num_threads=1, **kw)
        used = S.genes_used(a, "dae")
        genes = a.var_names[used]
        if label == ONE_SIDED:  # a read-out of the default model: trained here only without the "genodae" variant
            out[label] = one_sided_weights(a)
            continue
        if "rotation" in kw or kw.get("preset") == "signatures":  # the model's own nodes, as set
            out[label] = pd.DataFrame(a.varm["dae_weights"][used], index=genes)
        else:  # the signatures users get: tl.signatures' default read-out (sparse nodes; model's basis irrelevant)
            genodae.tl.rotate(a, method=DEFAULT_ROTATION)
            out[label] = pd.DataFrame(a.varm[f"dae_{DEFAULT_ROTATION}_weights"][used], index=genes)
        if not kw and steps is None and not prepare:
            out[MODEL_WEIGHTS] = pd.DataFrame(a.varm["dae_weights"][used], index=genes)
            out["genodae (decoder weights)"] = pd.DataFrame(a.varm["dae_decoder_weights"][used], index=genes)
            genodae.tl.rotate(a, method="varimax")  # the same model read out with orthogonal whitened nodes
            out[VARIMAX_READOUT] = pd.DataFrame(a.varm["dae_varimax_weights"][used], index=genes)
            if shared:
                out[ONE_SIDED] = one_sided_weights(a)
    return out


def baseline_input(raw):
    """The input PCA, ICA, NMF and cNMF get: the genes genodae uses, min-max scaled (0-1 per gene; what genodae
    itself trained on before ``scaling="auto"``, 2026-12-08, and what NMF needs: non-negative). Fixed, so the
    baselines' numbers do not move with genodae's own scaling."""
    return S.model_input(genodae.pp.prepare(raw, copy=True, scaling="minmax"))[0]


def min_steps_epochs(n_obs: int, steps: int) -> int:
    """The epochs ``DAEConfig.max_epochs`` gives ``n_obs`` cells (less the validation cells) when its floor of
    minibatch updates (``genodae.config.MIN_STEPS``, 2,000) is ``steps``."""
    cfg = genodae.DAEConfig()
    n_train = n_obs - int(round(n_obs * cfg.val_fraction))
    return max(G.AUTO_EPOCHS, -(-steps // max(1, -(-n_train // cfg.batch_size))))


def one_sided_weights(a) -> pd.DataFrame:
    """``ONE_SIDED``: tl.rotate's sparse activities A of ``a``'s model, each node's sign turned so that its skew is
    positive, made usage-like (max(A − median(A), 0), as cNMF's usages are non-negative), and each gene's
    correlation with them (the genes the model used × nodes)."""
    from scipy.stats import skew

    from genodae.kernels import _corr_cols

    genodae.tl.rotate(a, method="sparse")
    used = S.genes_used(a, "dae")
    A = np.asarray(a.obsm["X_dae_sparse"], np.float64)
    A = A * np.where(skew(A, axis=0) < 0, -1.0, 1.0)
    X, genes = S.model_input(a)
    W = pd.DataFrame(_corr_cols(X, np.maximum(A - np.median(A, axis=0), 0.0)), index=genes)
    return W.reindex(a.var_names[used]).fillna(0.0)


def score(weights: pd.DataFrame, modules, recovery: pd.DataFrame | None = None) -> dict:
    """Module means of ``module_recovery`` (pass ``recovery`` when it is already computed)."""
    r = S.module_recovery(weights, modules) if recovery is None else recovery
    return {m: float(r[m].mean()) for m in ("auroc", "precision", "recall", "f1")}


def oracle_loadings(adata, X, genes) -> pd.DataFrame:
    """The ceiling of the read-out: each gene's correlation with the *true* program activities (known only for
    planted data). What any method's signatures could reach if it found the programs exactly."""
    act = np.asarray(adata.obsm["program_activity"], dtype=np.float64)
    L = S.activity_loadings(X, (act - act.mean(axis=0)) / act.std(axis=0))
    return pd.DataFrame(L, index=pd.Index(genes), columns=[f"P{k}" for k in range(L.shape[1])])


def run_synthetic(args) -> None:
    """Per generator and seed: every method's weights scored against the planted modules (module means in
    ``readable_synthetic``, each module in ``readable_synthetic_modules``). Stability over the seeds; with 4 or
    more seeds the seeds are also split in two halves and each half's eADAGE consensus is scored (``ens_auroc``,
    ``ens_f1``: mean of the halves) and compared with the other's (``ens_stab``: can two independent ensembles
    agree?). Fewer seeds: the consensus of all seeds, no ``ens_stab``."""
    rows, module_rows, weights_by, program_nodes = [], [], {}, {}
    if args.cnmf and not args.variants and importlib.util.find_spec("cnmf") is None:
        log.warning("cNMF skipped: this Python has no cnmf package (the bench venv has it: make .bench-venv/.installed, "
                    "then .bench-venv/bin/python bench/readable.py ...; --no-cnmf skips it without this warning)")
    for gen in args.generators:
        adata = make(gen)
        modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
        prep = genodae.pp.prepare(adata, copy=True)
        X, genes = S.model_input(prep)
        Xb = X if prep.uns["genodae_prepare"]["params"]["scaling"] == "minmax" else baseline_input(adata)
        rank, _, _ = signal_rank(Xb)
        variants = {v: {**VARIANTS, **PROBES}[v] for v in args.variants} if args.variants else VARIANTS
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            found = genodae_weights(prep, seed, args.n_latent, variants, raw=adata)
            for method in BASELINES if not args.variants else ():
                L, sc = C.factor_loadings(Xb, genes, method, args.n_latent, seed=seed, subsample=0.9)
                found[f"{method} (raw)"] = L
                found[f"{method} (corr+varimax)"] = corr_varimax(Xb, sc, genes)
            if args.cnmf and not args.variants and seed == 0:  # cNMF's own 20 replicates are its seeds; one run per generator (time)
                W = cnmf_loadings(adata, args.n_latent, seed, genes)
                if W is not None:
                    found["cnmf (spectra scores)"] = W
            if seed == 0:
                found["oracle (true activities)"] = oracle_loadings(adata, X, genes)
            for method, W in found.items():
                per_module = S.module_recovery(W, modules)
                program_nodes.setdefault((gen, method), []).append(sorted(set(per_module["auroc_node"])))
                rows.append({"generator": gen, "seed": seed, "method": method, **score(W, modules, per_module)})
                module_rows += [{"generator": gen, "seed": seed, "method": method, "module": r.module,
                                 "size": len(modules[r.module]), "auroc": r.auroc, "f1": r.f1, "signal_rank": rank}
                                for r in per_module.itertuples()]
                if not method.startswith("oracle"):
                    weights_by.setdefault((gen, method), []).append(W)
            log.info("%s seed %d: %.0fs; %s", gen, seed, time.perf_counter() - t0,
                     ", ".join(f"{r['method']} {r['auroc']:.3f}/{r['f1']:.2f}" for r in rows[-len(found):]))
    per_seed = pd.DataFrame(rows)
    summary = per_seed.groupby(["generator", "method"], sort=False)[["auroc", "precision", "recall", "f1"]].mean()
    stab, stab_programs, ens, by_size, by_cut = {}, {}, {}, [], []
    for (gen, method), Ws in weights_by.items():
        if len(Ws) > 1:
            stab[(gen, method)] = float(S.stability(Ws)["stability"].mean())
            stab_programs[(gen, method)] = program_stability(Ws, program_nodes[(gen, method)])
            modules = {k: list(v) for k, v in make(gen).uns["synthetic"]["modules"].items()}
            ens[(gen, method)] = ensemble_scores(Ws, modules, consensus_cut(method))
            for n in range(2, len(Ws) // 2 + 1) if len(Ws) >= 6 else ():  # how many seeds an ensemble needs
                by_size.append({"generator": gen, "method": method, "n_models": n,
                                **ensemble_scores(Ws[:n] + Ws[len(Ws) // 2:len(Ws) // 2 + n], modules,
                                                  consensus_cut(method))})
            if len(Ws) >= 10 and method in ("genodae", VARIMAX_READOUT):  # which cut (tl.ensemble's min_corr)
                by_cut += ensemble_cuts(Ws, modules, gen, method)
    summary["stab"] = [stab.get(i, np.nan) for i in summary.index]
    summary["stab_programs"] = [stab_programs.get(i, np.nan) for i in summary.index]
    for col in ("ens_auroc", "ens_f1", "ens_stab"):
        summary[col] = [ens.get(i, {}).get(col, np.nan) for i in summary.index]
    summary = summary.reset_index()
    by_module = (pd.DataFrame(module_rows).groupby(["generator", "method", "module"], sort=False)
                 [["size", "signal_rank", "auroc", "f1"]].mean().reset_index())
    OUT.mkdir(parents=True, exist_ok=True)
    per_seed.to_csv(OUT / f"readable_synthetic_per_seed{args.suffix}.tsv", sep="\t", index=False)
    summary.to_csv(OUT / f"readable_synthetic{args.suffix}.tsv", sep="\t", index=False, float_format="%.4f")
    by_module.to_csv(OUT / f"readable_synthetic_modules{args.suffix}.tsv", sep="\t", index=False,
                     float_format="%.4f")
    if by_size:  # consensus of seeds 0..n-1 against that of seeds h..h+n-1 (h = half the seeds)
        pd.DataFrame(by_size).to_csv(OUT / f"readable_synthetic_ensemble_size{args.suffix}.tsv", sep="\t",
                                     index=False, float_format="%.4f")
    if by_cut:  # two independent halves' consensus at each min_corr
        pd.DataFrame(by_cut).to_csv(OUT / f"readable_synthetic_ensemble_cut{args.suffix}.tsv", sep="\t",
                                    index=False, float_format="%.4f")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


def program_stability(Ws: list[pd.DataFrame], nodes: list[list]) -> float:
    """Mean over ordered pairs of models (a, b) of the best-match |r| with b's nodes of each of a's program nodes
    (``nodes[a]``: the columns, as ``module_recovery`` names them (``str``), that are some module's best node)."""
    vals = []
    for a, b in ((a, b) for a in range(len(Ws)) for b in range(len(Ws)) if a != b):
        common = Ws[a].index.intersection(Ws[b].index, sort=False)
        names = [str(c) for c in Ws[a].columns]
        A = Ws[a].loc[common].iloc[:, [names.index(n) for n in nodes[a]]].to_numpy(dtype=np.float64)
        B = Ws[b].loc[common].to_numpy(dtype=np.float64)
        r = np.corrcoef(A.T, B.T)[: A.shape[1], A.shape[1]:]  # a's program nodes × b's nodes
        vals.append(np.nanmax(np.abs(r), axis=1).mean())
    return float(np.mean(vals))


def consensus_cut(method: str) -> float:
    """The consensus's ``min_corr`` for a method's weights, as ``tl.ensemble`` picks it by read-out
    (``genodae.config.ENSEMBLE_MIN_CORR``): sparse for genodae variants read out by default, else the varimax/raw cut."""
    kw = {**VARIANTS, **PROBES}.get(method)
    rotation = kw.get("rotation", "sparse") if kw is not None else "varimax"  # an explicit rotation wins over a preset
    return ENSEMBLE_MIN_CORR[rotation]


def ensemble_cuts(Ws: list[pd.DataFrame], modules, gen: str, method: str, n_splits: int = 8) -> list[dict]:
    """Which consensus cut: for each ``ENSEMBLE_CUTS`` value, the seeds split into two halves ``n_splits`` times
    (seeds 0..h-1 against h..2h-1, then random splits, numpy seed 0); per split each half's consensus is scored
    and compared with the other's (``ensemble_scores``). Mean over the splits, and the lowest agreement."""
    rng = np.random.default_rng(0)
    splits = [np.arange(len(Ws))] + [rng.permutation(len(Ws)) for _ in range(n_splits - 1)]
    rows = []
    for cut in ENSEMBLE_CUTS:
        per = pd.DataFrame([ensemble_scores([Ws[i] for i in p], modules, cut) for p in splits])
        rows.append({"generator": gen, "method": method, "min_corr": cut, "n_models": len(Ws) // 2,
                     "splits": len(splits), **per.mean().to_dict(), "ens_stab_min": float(per["ens_stab"].min())})
    return rows


def ensemble_scores(Ws: list[pd.DataFrame], modules, min_corr: float) -> dict:
    """eADAGE consensus read-out of several seeds' weights (nodes cluster at |r| >= ``min_corr``): its module
    recovery, and (4+ seeds) the agreement of the consensus of one half of the seeds with that of the other half."""
    def scored(W):
        return score(W, modules) if W.shape[1] else {"auroc": 0.5, "f1": 0.0}

    if len(Ws) < 4:
        s = scored(S.consensus(Ws, min_corr=min_corr)["weights"])
        return {"ens_auroc": s["auroc"], "ens_f1": s["f1"]}
    h = len(Ws) // 2
    A, B = (S.consensus(Ws[:h], min_corr=min_corr)["weights"],
            S.consensus(Ws[h:2 * h], min_corr=min_corr)["weights"])
    sa, sb = scored(A), scored(B)
    both = A.shape[1] and B.shape[1]
    return {"ens_auroc": (sa["auroc"] + sb["auroc"]) / 2, "ens_f1": (sa["f1"] + sb["f1"]) / 2,
            "ens_stab": float(S.stability([A, B])["stability"].mean()) if both else 0.0}


def signal_rank(X, seed: int = 0) -> tuple[int, np.ndarray, float]:
    """Horn's parallel analysis: how many eigenvalues of the genes' correlation matrix exceed the largest one of
    the same data with every gene permuted across cells independently. Returns (rank, top eigenvalues, null top)."""
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)
    X = X - X.mean(axis=0)
    sd = X.std(axis=0)
    X = X[:, sd > 0] / sd[sd > 0]
    n = X.shape[0]
    ev = np.linalg.eigvalsh(X.T @ X / n)[::-1]
    rng = np.random.default_rng(seed)
    P = np.column_stack([rng.permutation(X[:, j]) for j in range(X.shape[1])])
    null = float(np.linalg.eigvalsh(P.T @ P / n)[-1])
    return int((ev > null).sum()), ev[:12], null


def run_rank(args) -> None:
    """Probe: is the DAE better with as many nodes as the data have programs above the noise (parallel analysis)
    instead of the default 32? The default and the nb model at that n_latent, seeds 0 … --seeds-1."""
    rows = []
    for gen in args.generators:
        adata = make(gen)
        modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
        prep = genodae.pp.prepare(adata, copy=True)
        X, genes = S.model_input(prep)
        k, ev, null = signal_rank(X)
        k = max(k, 2)
        log.info("%s: %d eigenvalues above the permutation null %.2f (top: %s)", gen, k, null,
                 ", ".join(f"{v:.2f}" for v in ev))
        variants = {"genodae": {}, "genodae nb": {"gene_likelihood": "nb"}}
        Ws = {}
        for seed in range(args.seeds):
            for label, W in genodae_weights(prep, seed, k, variants).items():
                Ws.setdefault(label, []).append(W)
                rows.append({"generator": gen, "n_latent": k, "null_top": null, "seed": seed, "method": label,
                             **score(W, modules)})
        for label, W in Ws.items():
            if len(W) > 1:
                stab = float(S.stability(W)["stability"].mean())
                for r in rows:
                    if r["generator"] == gen and r["method"] == label:
                        r["stab"] = stab
    per_seed = pd.DataFrame(rows)
    summary = per_seed.groupby(["generator", "n_latent", "method"], sort=False)[["auroc", "f1", "stab"]].mean()
    per_seed.to_csv(OUT / f"readable_rank_per_seed{args.suffix}.tsv", sep="\t", index=False)
    summary.reset_index().to_csv(OUT / f"readable_rank{args.suffix}.tsv", sep="\t", index=False, float_format="%.4f")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


def _skewed(L: np.ndarray) -> np.ndarray:
    """Columns flipped to positive skew (the library's sign convention for rotated nodes)."""
    from scipy.stats import skew

    sign = np.sign(np.nan_to_num(skew(L, axis=0)))
    sign[sign == 0] = 1
    return L * sign


def varimax_starts(L: np.ndarray, starts: int, seed: int = 0) -> np.ndarray:
    """The library's varimax (``genodae.rotation.varimax``) from the identity and from ``starts - 1`` random
    orthogonal starts ``Q`` (varimax of ``L @ Q``: the same search started at ``Q``); the rotation whose Kaiser-
    normalised loadings have the largest varimax criterion."""
    h = np.sqrt((L**2).sum(axis=1, keepdims=True))
    h[h == 0] = 1.0
    k = L.shape[1]
    rng = np.random.default_rng(seed)
    best, best_crit = None, -np.inf
    for i in range(starts):
        Q = np.eye(k) if i == 0 else np.linalg.qr(rng.standard_normal((k, k)))[0]
        R = Q @ S.varimax(L @ Q)
        B = L @ R / h
        crit = (B**4).sum() - ((B**2).sum(axis=0) ** 2).sum() / len(B)
        if crit > best_crit:
            best, best_crit = R, crit
    return best


def readouts_of(E: np.ndarray, X, act: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], float]:
    """genes × nodes weights of each read-out of the embedding ``E`` (see the module docstring), and the mean R²
    of the least-squares prediction of the planted activities ``act`` from ``E``."""
    mu, M = S.whitening(E)
    Zw = (E - mu) @ M
    L = S.activity_loadings(X, Zw)
    out = {"varimax": L @ S.varimax(L), "varimax, 10 starts": L @ varimax_starts(L, 10, seed)}
    try:
        from factor_analyzer.rotator import Rotator
    except ImportError:
        log.warning("factor_analyzer is not installed: no oblique read-outs (pip install factor_analyzer)")
    else:
        for method in ("geomin_obl", "oblimin"):
            rot = Rotator(method=method, normalize=True, max_iter=1000)
            pattern = rot.fit_transform(L)
            out[method.replace("_obl", "")] = _skewed(pattern @ rot.phi_)  # structure loadings
    from sklearn.decomposition import FastICA

    Y = FastICA(whiten=False, random_state=seed, max_iter=1000).fit_transform(Zw)
    out["fastica"] = _skewed(S.activity_loadings(X, (Y - Y.mean(axis=0)) / Y.std(axis=0)))
    A = act - act.mean(axis=0)
    B = np.linalg.lstsq(Zw, A, rcond=None)[0]
    r2 = float(np.mean(1 - ((A - Zw @ B) ** 2).sum(axis=0) / (A**2).sum(axis=0)))
    B = B / np.linalg.norm(B, axis=0)
    u, _, vt = np.linalg.svd(B, full_matrices=False)
    out["ceiling: linear projection"] = S.activity_loadings(X, Zw @ B)
    out["ceiling: nearest orthogonal"] = S.activity_loadings(X, Zw @ (u @ vt))
    return out, r2


def run_readouts(args) -> None:
    """The ``readouts`` probe: one default model per generator and seed, read out every way of
    :func:`readouts_of` (``readable_readouts.tsv``)."""
    rows, by = [], {}
    for gen in args.generators:
        adata = make(gen)
        modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
        act = np.asarray(adata.obsm["program_activity"], dtype=np.float64)
        prep = genodae.pp.prepare(adata, copy=True)
        X, genes = S.model_input(prep)
        for seed in range(args.seeds):
            a = prep.copy()
            genodae.tl.dae(a, seed=seed, n_latent=args.n_latent, num_threads=1, preset=args.preset)
            found, r2 = readouts_of(np.asarray(a.obsm["X_dae"], dtype=np.float64), X, act, seed)
            for name, W in found.items():
                W = pd.DataFrame(W, index=genes)
                rows.append({"generator": gen, "seed": seed, "readout": name, "r2_activity": r2, **score(W, modules)})
                by.setdefault((gen, name), []).append(W)
            log.info("%s seed %d: %s", gen, seed, ", ".join(f"{r['readout']} {r['f1']:.3f}" for r in rows[-len(found):]))
    t = pd.DataFrame(rows).groupby(["generator", "readout"], sort=False)[
        ["r2_activity", "auroc", "precision", "recall", "f1"]].mean()
    t["stab"] = [float(S.stability(by[i])["stability"].mean()) if len(by[i]) > 1 else np.nan for i in t.index]
    t = t.reset_index()
    OUT.mkdir(parents=True, exist_ok=True)
    t.to_csv(OUT / f"readable_readouts{args.suffix}.tsv", sep="\t", index=False, float_format="%.4f")
    print(t.to_string(float_format=lambda v: f"{v:.3f}"))


def machine() -> dict:
    return {**C.machine(), "threads": 1, "torch": torch.__version__, "genodae": genodae.__version__,
            "load": os.getloadavg()}


def main() -> None:
    p = C.parser(__doc__, full=True)
    p.add_argument("part", choices=["synthetic", "bulk", "embedding", "rank", "readouts", "twins", "consensus",
                                    "report"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-latent", type=int, default=32)
    p.add_argument("--generators", nargs="+", default=list(GENERATORS))
    p.add_argument("--no-cnmf", dest="cnmf", action="store_false")
    p.add_argument("--suffix", default="")
    p.add_argument("--preset", default="default", help="readouts, embedding: the models' preset (default: the library "
                   "default)")
    p.add_argument("--variants", nargs="+", choices=[*VARIANTS, *PROBES], default=None,
                   help="synthetic: only these genodae settings (no baselines), e.g. the probe 'genodae patience 0'; "
                   "bulk: these genodae settings (with the baselines)")
    p.add_argument("--sets", nargs="+", choices=[*BULK, *COUNT_SETS, *TWIN_SETS], default=None,
                   help="bulk: these sets (default: the bulk sets; COUNT_SETS are real single-cell counts); twins: "
                   "these sets (default: TWIN_SETS; celseq2_3plates with gene symbols, so with coverage)")
    p.add_argument("--cache", default=None, help="consensus: a folder for the trained models' weights (<set>.pkl), "
                   "reused when present")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("genodae").setLevel(logging.WARNING)
    log.info("machine %s", json.dumps(machine()))
    if args.part == "synthetic":
        run_synthetic(args)
    elif args.part == "bulk":
        run_bulk(args)
    elif args.part == "embedding":
        run_embedding(args)
    elif args.part == "rank":
        run_rank(args)
    elif args.part == "readouts":
        run_readouts(args)
    elif args.part == "twins":
        run_twins(args)
    elif args.part == "consensus":
        run_consensus(args)
    else:
        report(args)


BULK = {
    # name: (reader, id note); each returns raw AnnData (samples × genes, gene symbols)
    "nci60_p53": "bulk/p53_nci60/P53.txt",
    "tcga_brca": "bulk/tcga_brca_mixomics",
}
GENE_SETS = {"hallmark": "genesets/h.all.v7.0.symbols.gmt", "go_bp": "genesets/enrichr.GO_Biological_Process_2021.gmt"}


COUNT_SETS = ("pbmc3k_cd8_cd14", "celseq2_3plates")  # bulk part, --sets: real single-cell counts, gene symbols
ID_MAP = "genesets/hsapiens_gene_ensembl.background.genes.txt"  # Ensembl ID -> symbol (CEL-seq2 has Ensembl IDs)


def read_set(name: str):
    """Raw AnnData of a bulk set (``read_bulk``) or of a single-cell count set with gene symbols as var_names:
    PBMC3k CD8/CD14 as it is; the three CEL-seq2 plates (``_common.load_celseq2_plates``, bench/integration.py's ``celseq2_3plates``: singlets,
    no ERCC, genes of all plates; the plate effect left in, as every method gets the same input) with their
    Ensembl IDs mapped to symbols by ``ID_MAP`` (IDs without a symbol, and every symbol several IDs share, dropped)."""
    if name in BULK:
        return read_bulk(name)
    if name == "pbmc3k_cd8_cd14":
        return C.load_raw(name, SHARED)
    from genodae import enrich

    raw = C.load_celseq2_plates(SHARED)
    if raw is None:
        return None
    symbols = pd.Series(raw.var_names.map(enrich.read_id_map(SHARED / ID_MAP)), index=raw.var_names)
    keep = symbols.notna() & ~symbols.duplicated(keep=False)
    raw = raw[:, keep.to_numpy()].copy()
    raw.var_names = pd.Index(symbols[keep].astype(str).to_numpy())
    return raw


def read_bulk(name: str):
    path = SHARED / BULK[name]
    if name == "tcga_brca":
        frames = [pd.read_csv(path / f"data.{part}.mrna.csv", index_col=0) for part in ("train", "test")]
        import anndata

        return anndata.AnnData(pd.concat(frames).astype(np.float32))
    return genodae.read(path)


def coverage(weights: pd.DataFrame, gene_sets: dict, background) -> dict:
    """eADAGE: ±2.5 SD signatures, one-sided Fisher + BH per node; covered sets and enriched signature share."""
    from genodae import enrich

    sig = S.high_weight_genes(weights, sd_cutoff=2.5)
    out = {}
    for tails, part in (("", sig), ("_pos", sig[sig["direction"] == "pos"])):
        n_sig = int(part.groupby(["node", "direction"], observed=True).ngroups)
        covered = enriched = 0
        if n_sig:
            res = enrich.enrich(part, gene_sets, background=background, min_size=5, max_size=500)
            hit = res[res["fdr"] < 0.05]
            covered, enriched = int(hit["term"].nunique()), int(hit["signature"].nunique())
        out.update({f"covered{tails}": covered, f"signatures{tails}": n_sig, f"enriched{tails}": enriched,
                    f"enriched_share{tails}": enriched / n_sig if n_sig else 0.0})
    return out


def run_bulk(args) -> None:
    from genodae import enrich

    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found (set GENODAE_SHARED_DATA)")
        return
    sets = {k: enrich.read_gmt(SHARED / v) for k, v in GENE_SETS.items()}
    rows, weights_by = [], {}
    variants = {v: {**VARIANTS, **PROBES}[v] for v in args.variants} if args.variants else VARIANTS
    other = [n for n in args.sets or () if n not in BULK and n not in COUNT_SETS]
    if other:
        raise SystemExit(f"bulk: --sets takes {', '.join([*BULK, *COUNT_SETS])}, not {', '.join(other)}")
    for name in args.sets or BULK:
        raw = read_set(name)
        if raw is None:
            continue
        prep = genodae.pp.prepare(raw, copy=True)
        X, genes = S.model_input(prep)
        Xb = X if prep.uns["genodae_prepare"]["params"]["scaling"] == "minmax" else baseline_input(raw)
        k = min(args.n_latent, prep.n_obs // 2)
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            found = genodae_weights(prep, seed, k, variants, raw=raw)
            for method in BASELINES:
                L, sc = C.factor_loadings(Xb, genes, method, k, seed=seed, subsample=0.9)
                found[f"{method} (raw)"] = L
                found[f"{method} (corr+varimax)"] = corr_varimax(Xb, sc, genes)
            for method, W in found.items():
                weights_by.setdefault((name, method), []).append(W)
                for gs, gmt in sets.items():
                    rows.append({"set": name, "n_latent": k, "gene_sets": gs, "seed": seed, "method": method,
                                 **coverage(W, gmt, genes)})
            log.info("%s seed %d (%d × %d, %d nodes): %.0fs", name, seed, prep.n_obs, len(genes), k,
                     time.perf_counter() - t0)
    per_seed = pd.DataFrame(rows)
    summary = per_seed.groupby(["set", "n_latent", "gene_sets", "method"], sort=False)[
        ["covered", "enriched_share", "signatures", "covered_pos", "enriched_share_pos"]].mean().reset_index()
    stab = {key: float(S.stability(Ws)["stability"].mean()) for key, Ws in weights_by.items() if len(Ws) > 1}
    summary["stab"] = [stab.get((r.set, r.method), np.nan) for r in summary.itertuples()]
    ens = {}  # eADAGE: consensus nodes of the seeds, read out the same way
    for (name, method), Ws in weights_by.items():
        if len(Ws) > 1:
            W = S.consensus(Ws, min_corr=consensus_cut(method))["weights"]
            for gs, gmt in sets.items():
                ens[(name, gs, method)] = coverage(W, gmt, W.index) if W.shape[1] else {}
    for col in ("covered", "enriched_share", "signatures"):
        summary[f"ens_{col}"] = [ens.get((r.set, r.gene_sets, r.method), {}).get(col, np.nan)
                                 for r in summary.itertuples()]
    if args.seeds >= 4:  # can two independent ensembles agree? consensus of one half of the seeds vs the other's
        halves = {}
        for key, Ws in weights_by.items():
            h = len(Ws) // 2
            cut = consensus_cut(key[1])
            A, B = S.consensus(Ws[:h], min_corr=cut)["weights"], S.consensus(Ws[h:2 * h], min_corr=cut)["weights"]
            halves[key] = float(S.stability([A, B])["stability"].mean()) if A.shape[1] and B.shape[1] else 0.0
        summary["ens_stab"] = [halves.get((r.set, r.method), np.nan) for r in summary.itertuples()]
    OUT.mkdir(parents=True, exist_ok=True)
    per_seed.to_csv(OUT / f"readable_bulk_per_seed{args.suffix}.tsv", sep="\t", index=False)
    summary.to_csv(OUT / f"readable_bulk{args.suffix}.tsv", sep="\t", index=False, float_format="%.4f")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


EMBEDDING_SETS = ("pbmc4k", "mouse_bladder", "pbmc3k_cd8_cd14", "celseq2_5cl", "tcga_brca")


def run_embedding(args) -> None:
    """Does the readable basis cost the embedding anything? The same trained model's bottleneck as trained
    (``rotation="none"``) and in the readable basis, scored by ``_common.score_embedding`` (bench/quality.py's score) (5-fold 15-NN label
    accuracy, Leiden ARI/NMI at resolution 1 and cluster-optimal, silhouette) on the labelled sets."""
    from genodae.rotation import readable_basis
    from genodae.train import embed, input_correlations

    rows = []
    for name in EMBEDDING_SETS:
        raw = C.load_raw(name, SHARED)
        if raw is None:
            continue
        prep = genodae.pp.prepare(raw, copy=True)
        for seed in range(args.seeds):
            model = genodae.DAE(preset=args.preset, seed=seed, num_threads=1).fit(prep)
            readable = model.embed(prep)
            source = model._input(prep, False)
            trained = embed(model.module, source)
            bases = [("trained (rotation none)", trained),
                     (f"readable ({model.config.rotation}, the {args.preset} preset's)", readable)]
            for method in ("varimax", "sparse"):  # the same model's other basis (over all cells)
                if method != model.config.rotation:
                    vb = readable_basis(trained, lambda mean, M, s=source, z=trained: input_correlations(s, z, mean, M),
                                        method)
                    bases.append((f"{method} (same model)", (trained - vb["mean"]) @ vb["transform"]))
            for basis, Z in bases:
                rows.append({"set": name, "seed": seed, "basis": basis, **C.score_embedding(Z, prep.obs["label"], seed)})
                log.info("%s seed %d %s: %s", name, seed, basis, {k: round(v, 3) for k, v in rows[-1].items()
                                                                   if isinstance(v, float)})
    t = pd.DataFrame(rows)
    summary = t.groupby(["set", "basis"], sort=False)[["knn_acc", "ari", "nmi", "ari_opt", "nmi_opt",
                                                        "silhouette"]].mean().reset_index()
    t.to_csv(OUT / f"readable_embedding_per_seed{args.suffix}.tsv", sep="\t", index=False)
    summary.to_csv(OUT / f"readable_embedding{args.suffix}.tsv", sep="\t", index=False, float_format="%.4f")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


TWIN_SETS = ("celseq2_5cl", "pbmc3k_cd8_cd14", "nci60_p53", "tcga_brca", "groups")


def twin_scores(W: pd.DataFrame) -> dict:
    """How redundant are a model's nodes? ``twin_07``/``twin_09`` = share of nodes whose weights correlate with
    another node's at |r| > 0.7 / 0.9 (genes with any non-zero weight); ``jaccard_09`` = mean Jaccard index of the
    positive ±2.5 SD signatures of each such |r| > 0.9 node and its closest node (NaN when there is none)."""
    W = W.loc[(W != 0).any(axis=1)]
    R = np.abs(np.nan_to_num(np.corrcoef(W.to_numpy(dtype=np.float64).T)))
    np.fill_diagonal(R, 0.0)
    best, twin = R.max(axis=0), R.argmax(axis=0)
    sig = S.high_weight_genes(W, sd_cutoff=2.5)
    pos = {str(n): set(g["gene"]) for n, g in sig[sig["direction"] == "pos"].groupby("node", observed=True)}
    jac = []
    for i in np.flatnonzero(best > 0.9):
        a, b = pos.get(str(W.columns[i]), set()), pos.get(str(W.columns[twin[i]]), set())
        jac.append(len(a & b) / len(a | b) if a | b else np.nan)
    return {"twin_07": float((best > 0.7).mean()), "twin_09": float((best > 0.9).mean()),
            "jaccard_09": float(np.nanmean(jac)) if jac and not np.isnan(jac).all() else np.nan}


DEDUP = "genodae (copies at abs(r) > 0.9 replaced)"


def without_copies(adata, max_r: float = 0.9) -> pd.DataFrame:
    """The probe of a fix that was not adopted: the signatures' sparse nodes of ``adata``'s default model (after
    ``tl.rotate``), each node whose weights correlate at |r| > ``max_r`` with a node of larger variance dropped, and
    the dropped directions replaced by the varimax rotation of the whitened space orthogonal to the nodes kept (the
    map stays invertible). Genes used × k."""
    from scipy.linalg import null_space

    from genodae.rotation import varimax

    used = S.genes_used(adata, "dae")
    W = np.asarray(adata.varm["dae_sparse_weights"][used], dtype=np.float64)
    T = np.asarray(adata.uns["dae_sparse"]["rotation"], dtype=np.float64)  # whitened activities -> sparse nodes
    L = W @ np.linalg.inv(T)  # the genes' correlations with the whitened activities
    R = np.abs(np.nan_to_num(np.corrcoef(W.T)))
    kept = []
    for j in np.argsort(-W.var(axis=0), kind="stable"):
        if all(R[j, i] <= max_r for i in kept):
            kept.append(j)
    kept = sorted(kept)
    Tk = T[:, kept]
    B = null_space(Tk.T)  # directions orthogonal to every node kept
    if B.shape[1] > 1:
        B = B @ varimax(L @ B)
    return pd.DataFrame(L @ np.c_[Tk, B], index=adata.var_names[used])


def run_twins(args) -> None:
    """Probe: are nodes near copies of one another? Default models (seeds 0 … --seeds-1) of the real sets with
    several discrete populations or a bulk cohort, and the groups generator, read out as the signatures (sparse),
    as the model's own weights and as the whitened varimax read-out (``twin_scores``); and the probe of a fix,
    ``without_copies``, with the pathway coverage of each (Hallmark, GO BP; sets named by gene symbols)."""
    from genodae import enrich

    sets = {k: enrich.read_gmt(SHARED / v) for k, v in GENE_SETS.items()} if SHARED.is_dir() else {}
    rows = []
    for name in args.sets or TWIN_SETS:
        if name in GENERATORS:
            raw = make(name)
        elif name in BULK or name in COUNT_SETS:
            raw = read_set(name) if SHARED.is_dir() else None
        else:
            raw = C.load_raw(name, SHARED)
        if raw is None:
            continue
        prep = genodae.pp.prepare(raw, copy=True)
        k = min(25 if name == "nci60_p53" else args.n_latent, prep.n_obs // 2)
        symbols = name in ("pbmc3k_cd8_cd14", "nci60_p53", "tcga_brca", "celseq2_3plates")  # celseq2_5cl: Ensembl IDs
        for seed in range(args.seeds):
            a = prep.copy()
            genodae.tl.dae(a, seed=seed, n_latent=k, num_threads=1)
            used = S.genes_used(a, "dae")
            genes = a.var_names[used]
            genodae.tl.rotate(a, method="sparse")
            found = {"genodae": pd.DataFrame(a.varm["dae_sparse_weights"][used], index=genes),
                     DEDUP: without_copies(a),
                     MODEL_WEIGHTS: pd.DataFrame(a.varm["dae_weights"][used], index=genes)}
            genodae.tl.rotate(a, method="varimax")
            found[VARIMAX_READOUT] = pd.DataFrame(a.varm["dae_varimax_weights"][used], index=genes)
            for method, W in found.items():
                row = {"set": name, "n_latent": k, "seed": seed, "method": method, **twin_scores(W)}
                for gs, gmt in sets.items() if symbols else ():
                    c = coverage(W, gmt, genes)
                    row[f"{gs}_covered"], row[f"{gs}_share"] = c["covered"], c["enriched_share"]
                rows.append(row)
                log.info("%s seed %d: %s", name, seed, row)
    per_seed = pd.DataFrame(rows)
    cols = [c for c in per_seed.columns if c not in ("set", "n_latent", "seed", "method")]
    summary = per_seed.groupby(["set", "n_latent", "method"], sort=False)[cols].mean().reset_index()
    per_seed.to_csv(OUT / f"readable_twins_per_seed{args.suffix}.tsv", sep="\t", index=False)
    summary.to_csv(OUT / f"readable_twins{args.suffix}.tsv", sep="\t", index=False, float_format="%.4f")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


_md = C.md_table


def _average_linkage_consensus(Ws: list[pd.DataFrame], min_corr: float, min_support: int) -> pd.DataFrame:
    """tl.ensemble's consensus before 2026-12-07: plain average linkage (scipy), two nodes of one model may share a
    cluster; otherwise as ``genodae.kernels.consensus`` (unit-SD nodes, signs aligned to the most central member,
    mean, support = distinct models)."""
    from unittest import mock

    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    def plain(D, owner, *, max_dist):
        D = D.copy()
        np.fill_diagonal(D, 0)
        return fcluster(linkage(squareform(D, checks=False), method="average"), t=max_dist, criterion="distance")

    with mock.patch("genodae.kernels.one_node_per_model_clusters", plain):
        return S.consensus(Ws, min_corr=min_corr, min_support=min_support)["weights"]


CONSENSUS_CUTS = (0.5, 0.6, 0.7)


def run_consensus(args) -> None:
    """Ensembles (eADAGE consensus) of ``--seeds`` default models (the signatures' sparse nodes) per bulk set and
    generator, clustered two ways on the same weights: ``one node per model`` (tl.ensemble since 2026-12-07) and
    ``average linkage`` (before: two nodes of one model could be merged), at min_corr 0.5, 0.6 (the default for
    sparse nodes) and 0.7, min_support = half the models. Bulk: coverage and enriched share of the consensus of all
    seeds; synthetic: module recovery of the consensus of each half of the seeds (mean); both: ens_stab = agreement
    of the two halves' consensus nodes."""
    import pickle

    from genodae import enrich

    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found (set GENODAE_SHARED_DATA)")
        return
    cache = Path(args.cache) if args.cache else None
    sets = {k: enrich.read_gmt(SHARED / v) for k, v in GENE_SETS.items()}

    def weights(name, prep, k):
        path = cache / f"{name}.pkl" if cache else None
        if path is not None and path.is_file():
            Ws = pickle.load(open(path, "rb"))
            if len(Ws) >= args.seeds:
                return Ws[:args.seeds]
        Ws = [genodae_weights(prep, seed, k, {"genodae": {}})["genodae"] for seed in range(args.seeds)]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            pickle.dump(Ws, open(path, "wb"))
        return Ws

    ways = {"one node per model": lambda Ws, mc, ms: S.consensus(Ws, min_corr=mc, min_support=ms)["weights"],
            "average linkage": _average_linkage_consensus}
    rows = []
    h = args.seeds // 2
    for name in BULK:
        prep = genodae.pp.prepare(read_bulk(name), copy=True)
        Ws = weights(name, prep, min(args.n_latent, prep.n_obs // 2))
        for i, W in enumerate(Ws[:3]):
            for gs, gmt in sets.items():
                rows.append({"set": name, "clustering": f"single model (seed {i})", "gene_sets": gs,
                             "nodes": W.shape[1], **coverage(W, gmt, W.index)})
        for way, fn in ways.items():
            for mc in CONSENSUS_CUTS:
                W = fn(Ws, mc, int(np.ceil(len(Ws) / 2)))
                A, B = fn(Ws[:h], mc, int(np.ceil(h / 2))), fn(Ws[h:2 * h], mc, int(np.ceil(h / 2)))
                stab = float(S.stability([A, B])["stability"].mean()) if A.shape[1] and B.shape[1] else 0.0
                for gs, gmt in sets.items():
                    rows.append({"set": name, "clustering": way, "min_corr": mc, "gene_sets": gs, "nodes": W.shape[1],
                                 **coverage(W, gmt, W.index), "ens_stab": stab})
        log.info("consensus %s done", name)
    for gen in args.generators:
        adata = make(gen)
        modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
        Ws = weights(gen, genodae.pp.prepare(adata, copy=True), args.n_latent)
        single = pd.DataFrame([score(W, modules) for W in Ws])[["auroc", "f1"]].mean()
        rows.append({"set": gen, "clustering": "single models (mean)", "auroc": single["auroc"], "f1": single["f1"],
                     "ens_stab": float(S.stability(Ws)["stability"].mean())})
        for way, fn in ways.items():
            for mc in CONSENSUS_CUTS:
                A, B = fn(Ws[:h], mc, int(np.ceil(h / 2))), fn(Ws[h:2 * h], mc, int(np.ceil(h / 2)))
                sa, sb = score(A, modules), score(B, modules)
                rows.append({"set": gen, "clustering": way, "min_corr": mc, "nodes": (A.shape[1] + B.shape[1]) / 2,
                             "auroc": (sa["auroc"] + sb["auroc"]) / 2, "f1": (sa["f1"] + sb["f1"]) / 2,
                             "ens_stab": float(S.stability([A, B])["stability"].mean())})
        log.info("consensus %s done", gen)
    out = pd.DataFrame(rows)
    order = ["set", "clustering", "min_corr", "gene_sets", "nodes", "covered", "enriched_share", "signatures", "auroc",
             "f1", "ens_stab"]
    out = out[[c for c in order if c in out.columns]]
    OUT.mkdir(parents=True, exist_ok=True)
    out.to_csv(OUT / f"readable_consensus{args.suffix}.tsv", sep="\t", index=False, float_format="%.4f")
    print(out.to_string(float_format=lambda v: f"{v:.3f}"))


EXTRA_TABLES = [  # (file stem, heading) of the follow-up runs in the report, in this order
    ("readable_synthetic_patience",
     "## The default since 2026-12-04: `patience` 0 (3 model seeds; `--variants \"genodae patience 0\" "
     "--suffix _patience`). The `genodae` and `genodae nb` rows above were measured with the former "
     "default, `patience` 10, and the `genodae signatures preset` rows with the preset's former "
     "`patience` 30 (its current setting: the next section; the baselines have none)"),
    ("readable_synthetic_patience6",
     "## The default (`patience` 0), 6 model seeds: ens_stab = agreement of the consensus of seeds 0-2 "
     "with that of seeds 3-5 (`--seeds 6 --variants \"genodae patience 0\" --generators groups "
     "bulk_like sizes --no-cnmf --suffix _patience6`)"),
    ("readable_synthetic_presets",
     "## The `signatures` preset since 2026-12-04: `patience` 0 (all 300 epochs; `genodae signatures "
     "preset`) against its former `patience` 30, and `gene_likelihood=\"nb\"` with the current "
     "default's `patience` 0. groups and bulk_like: 6 model seeds (`--seeds 6 --generators groups "
     "bulk_like`), the others 3 (`--seeds 3 --generators gradients overlap sizes`); both with "
     "`--no-cnmf --variants \"genodae nb\" \"genodae signatures preset\" \"genodae signatures preset "
     "patience 30\"`, then concatenated (`--suffix _presets`)"),
    ("readable_synthetic_ens10",
     "## Ensembles of 10 model seeds: the default on groups, bulk_like and sizes, the `signatures` preset "
     "on groups (`--seeds 10 --no-cnmf --variants \"genodae patience 0\"` resp. `\"genodae signatures "
     "preset\"`, `--suffix _ens10`, one run per generator set, concatenated); ens_* = consensus of seeds "
     "0-4 and of seeds 5-9"),
    ("readable_synthetic_ensemble_size_ens10",
     "### How many seeds an ensemble needs: the consensus of seeds 0..n-1 against that of seeds 5..4+n "
     "(ens_stab) and their mean recovery (min_support = half the models, rounded up)"),
    ("readable_synthetic_ensemble_size_ens14",
     "### More seeds: the `signatures` preset on groups, 14 seeds (`--seeds 14 --generators groups "
     "--no-cnmf --variants \"genodae signatures preset\" --suffix _ens14`); consensus of seeds 0..n-1 "
     "against that of seeds 7..6+n"),
    ("readable_synthetic_stabprog",
     "## Stability of the program nodes (`synthetic --seeds 3 --no-cnmf --suffix _stabprog`, generators in two runs, "
     "concatenated): stab_programs = best-match |r| across seeds of the nodes that carry a planted module (each "
     "module's best-AUROC node), against stab over all nodes"),
    ("readable_readouts",
     "## Probe: other read-outs of the same default models (`readouts --seeds 3`; definitions in the docstring; "
     "the two ceilings use the planted activities and are not available in practice)"),
    ("readable_readouts_signatures",
     "### The same for the `signatures` preset on groups (`readouts --seeds 3 --generators groups --preset "
     "signatures --suffix _signatures`)"),
    ("readable_synthetic_sparse",
     "## The sparse read-out (`rotation=\"sparse\"`, the model default 2026-12-06 to 2026-12-07, since then "
     "tl.signatures' default read-out) against varimax (`synthetic "
     "--seeds 3 --no-cnmf --variants genodae \"genodae varimax\" --suffix _sparse`; Intel Xeon; the same data "
     "as above, so the baselines' and cNMF's rows above apply)"),
    ("readable_synthetic_sparse_signatures",
     "### The `signatures` preset on groups, sparse against varimax (`synthetic --seeds 3 --generators groups "
     "--no-cnmf --variants \"genodae signatures preset\" \"genodae signatures preset varimax\" --suffix "
     "_sparse_signatures`)"),
    ("readable_synthetic_sparse_signatures_more",
     "### The `signatures` preset (its sparse nodes) on the other four generators (`synthetic --seeds 3 --generators "
     "gradients overlap sizes bulk_like --no-cnmf --variants \"genodae signatures preset\" --suffix "
     "_sparse_signatures_more`; AMD EPYC; 2026-12-07; ens_* = consensus of the 3 seeds)"),
    ("readable_synthetic_ens10_signatures_sparse",
     "### Ensembles of the `signatures` preset, 10 seeds (`synthetic --seeds 10 --generators groups overlap --no-cnmf "
     "--variants \"genodae signatures preset\" --suffix _ens10_signatures_sparse`; AMD EPYC; 2026-12-07): ens_* = "
     "consensus of seeds 0-4 and of seeds 5-9 (tl.ensemble, one node per model, cut 0.6)"),
    ("readable_synthetic_ensemble_size_ens10_signatures_sparse",
     "#### How many seeds, the `signatures` preset: the consensus of seeds 0..n-1 against that of seeds 5..4+n"),
    ("readable_bulk_sparse_signatures",
     "### The `signatures` preset on the bulk sets (`bulk --seeds 3 --variants \"genodae signatures preset\" "
     "--suffix _sparse_signatures`; AMD EPYC; 2026-12-07; the baselines' single-model columns equal the `_sparse` bulk "
     "table's, their ens_* columns come from tl.ensemble's clustering of 2026-12-07, one node per model)"),
    ("readable_bulk_singlecell",
     "## Real single-cell counts: pathway coverage (`bulk --seeds 3 --sets pbmc3k_cd8_cd14 celseq2_3plates --variants "
     "genodae \"genodae nb\" \"genodae signatures preset\" \"genodae one-sided read-out\" --suffix _singlecell`; AMD "
     "EPYC; 2026-12-07): PBMC3k CD8/CD14 (787 cells × 946 genes) and the three CEL-seq2 plates (571 singlets of 5 "
     "cell lines, 2,000 prepared genes, plate effect left in, Ensembl IDs mapped to symbols); Hallmark and GO BP "
     "as for the bulk sets; `*_pos` = positive tails only (NMF's signatures are positive tails); ens_* = consensus "
     "of the 3 seeds"),
    ("readable_bulk_tails",
     "### The bulk sets again, with positive-tail columns (`bulk --seeds 3 --variants genodae --suffix _tails`; AMD "
     "EPYC; 2026-12-07): the same code as the Intel Xeon `_geo` table below gives other genodae models on this CPU "
     "(P53 seed 1: 43 GO BP sets here, 87 there; the baselines are equal to 3 decimals)"),
    ("readable_bulk_seeds10_amd",
     "### Bulk sets, 10 seeds on the AMD EPYC (`bulk --seeds 10 --variants genodae --suffix _seeds10_amd`; "
     "2026-12-07; compare the Intel Xeon `_seeds10_sparse` table below)"),
    ("readable_probe_celseq2_nmf",
     "### Probe: why raw NMF covers more gene sets on the CEL-seq2 lines (`python bench/probes/celseq2_nmf.py`; "
     "AMD EPYC; 2026-12-07; GO BP; twins_07/09 = nodes with another at |r| > 0.7 / 0.9, pos_tail_median = median "
     "genes of a positive ±2.5 SD tail, pos_genes = distinct genes in all positive tails, of 2,000)"),
    ("readable_twins_celseq2_3plates",
     "### The near-copy probe on the three CEL-seq2 plates with gene symbols (`twins --seeds 2 --sets celseq2_3plates "
     "--suffix _celseq2_3plates`; AMD EPYC; 2026-12-07; columns as in the twins table below)"),
    ("readable_bulk_sparse",
     "## Pathway coverage on bulk sets with the sparse read-out (`bulk --seeds 3 --variants genodae \"genodae "
     "varimax\" --suffix _sparse`; Intel Xeon; ens_* = consensus of the 3 seeds)"),
    ("readable_synthetic_ens10_sparse",
     "## Ensembles of 10 model seeds with the sparse read-out (`synthetic --seeds 10 --generators groups bulk_like "
     "--no-cnmf --variants genodae --suffix _ens10_sparse`; Intel Xeon; 2026-12-07); ens_* = consensus of seeds 0-4 "
     "and of seeds 5-9 at tl.ensemble's cut for the read-out (min_corr 0.6 sparse, 0.5 varimax and raw; "
     "`genodae (varimax read-out)` = the same models' nodes rotated by varimax)"),
    ("readable_synthetic_ens10_sparse_more",
     "### The other three generators (`synthetic --seeds 10 --generators gradients overlap sizes --no-cnmf "
     "--variants genodae --suffix _ens10_sparse_more`)"),
    ("readable_synthetic_ensemble_size_ens10_sparse",
     "### How many seeds, sparse read-out: the consensus of seeds 0..n-1 against that of seeds 5..4+n"),
    ("readable_synthetic_ensemble_size_ens10_sparse_more",
     "### How many seeds, the other three generators"),
    ("readable_synthetic_ensemble_cut_ens10_sparse",
     "## Ensemble threshold: two 5-seed consensus sets at each min_corr (average-linkage cut), sparse nodes "
     "(`genodae`) and the same models' varimax nodes; mean over 8 splits of the 10 seeds into halves (seeds 0-4 vs "
     "5-9, then 7 random splits), ens_stab_min = the lowest split; tl.ensemble's defaults "
     "(genodae.config.ENSEMBLE_MIN_CORR) are sparse 0.6, varimax 0.5"),
    ("readable_synthetic_ensemble_cut_ens10_sparse_more",
     "### The other three generators"),
    ("readable_bulk_seeds10_sparse",
     "## Pathway coverage and ensembles on bulk sets, sparse read-out, 10 seeds (`bulk --seeds 10 --variants genodae "
     "--suffix _seeds10_sparse`; Intel Xeon; 2026-12-07): ens_* = consensus of the 10 seeds, ens_stab = agreement of "
     "the consensus of seeds 0-4 with that of seeds 5-9, at tl.ensemble's cut for each read-out (sparse 0.6, "
     "varimax and raw 0.5)"),
    ("readable_embedding_sparse",
     "## The embedding in the sparse basis vs as trained (`embedding --seeds 2 --suffix _sparse`)"),
    ("readable_synthetic_geo",
     "## The default since 2026-12-07: the model reports distance-keeping varimax nodes, signatures are read from "
     "the sparse nodes (`synthetic --seeds 3 --no-cnmf --variants genodae --suffix _geo`; Intel Xeon; the same data "
     "and model seeds as above). `genodae` = tl.signatures' default read-out (tl.rotate sparse of the model's "
     "nodes; its single-model columns equal the `_sparse` table's `genodae` rows to 4 decimals; its ens_* columns "
     "differ where the `_sparse` table's consensus used the former cut 0.5), `genodae (model weights)` = "
     "varm[\"dae_weights\"] (an orthogonal varimax rotation of the bottleneck), `genodae (decoder weights)` = the "
     "decoder's weights in that basis, `genodae (varimax read-out)` = tl.rotate(method=\"varimax\") (whitened)"),
    ("readable_bulk_geo",
     "### Bulk sets with the 2026-12-07 default (`bulk --seeds 3 --variants genodae --suffix _geo`; rows as in the "
     "table above; `genodae` equal to the `_sparse` bulk table's)"),
    ("readable_twins",
     "## Probe: nodes that are near copies of one another (`twins --seeds 2`; Intel Xeon; 2026-12-07): twin_07 / "
     "twin_09 = share of a model's nodes whose weights correlate with another node's at |r| > 0.7 / 0.9, "
     "jaccard_09 = mean Jaccard index of the positive ±2.5 SD signatures of each |r| > 0.9 node and its closest node; "
     "`genodae` = the signatures' sparse nodes"),
    ("readable_consensus",
     "## Consensus with one node per model (`consensus --seeds 10 --generators groups bulk_like sizes gradients "
     "overlap`; Intel Xeon; 2026-12-07): ensembles of 10 default models (the signatures' sparse nodes, 32 nodes; "
     "P53 25), clustered on the same weights by tl.ensemble since 2026-12-07 (`one node per model`: average "
     "linkage that never merges two nodes of one model) and before (`average linkage`); min_support = half the "
     "models. Bulk rows: the consensus of all 10 (covered, enriched_share, signatures) and ens_stab = agreement of "
     "the consensus of seeds 0-4 with that of seeds 5-9; synthetic rows: auroc/f1 = mean of the two halves' "
     "consensus; single-model rows for comparison"),
    ("readable_synthetic_l1",
     "## Probe: a sparsity penalty on the decoder in training (not in the library: `git apply "
     "bench/probes/training_penalties.patch`, then `synthetic --seeds 2 --generators groups bulk_like sizes overlap "
     "--no-cnmf --variants genodae \"genodae l1 0.03\" \"genodae l1 0.1\" \"genodae l1 0.3\" --suffix _l1`; Intel "
     "Xeon; 2026-12-07). `genodae l1 λ` adds λ · recon · Σ_k sd(z_k) · mean_g |W_gk| to the loss (W = the linear "
     "decoder's loadings, z = the minibatch's code; the sd factor makes it blind to rescaling a node; recon = the "
     "reconstruction loss, detached, so λ means the same on every likelihood, as batch_mmd); signatures read as "
     "users get them (tl.signatures' sparse nodes)"),
    ("readable_synthetic_decov",
     "## Probe: a decorrelation penalty on the code in training (DeCov, Cogswell et al. 2016; not in the library: the "
     "same patch, `--variants genodae \"genodae decov 1\" \"genodae decov 10\" --generators groups sizes overlap "
     "bulk_like --seeds 2 --no-cnmf --suffix _decov`). `genodae decov λ` adds λ · recon · the mean squared "
     "off-diagonal correlation between nodes in each minibatch"),
    ("readable_embedding_signatures",
     "## Which basis for the `signatures` preset's embedding: its sparse nodes (its X_dae) against the varimax basis "
     "of the same network (`embedding --seeds 2 --preset signatures --suffix _signatures`; AMD EPYC; 2026-12-07; "
     "bench/quality.py's scores, mean of 2 seeds)"),
    ("readable_probe_preset_basis",
     "### The same on the three CEL-seq2 plates (real batch effect, no correction; `python "
     "bench/probes/preset_basis.py --seeds 3`): KMeans ARI/NMI (k = 5), label silhouette rescaled as scib's, "
     "15-NN label accuracy, with scikit-learn; the default model's X_dae for comparison"),
    ("readable_probe_variants",
     "## Probe: where the remaining gaps come from, other read-outs of the same sparse activities (`python "
     "bench/probes/readout_limits.py variants`; 3 model seeds, default models; AMD EPYC; 2026-12-07; definitions "
     "in the script's docstring): `relu all` = each gene's correlation with the one-sided activity "
     "max(a − median(a), 0) of every node; `relu if …` = only for the nodes that pass the test (bimodality "
     "coefficient > 5/9, |skewness| > 1, or more gene variance explained one-sided), the others as `default`; "
     "`pattern matrix` = oblique pattern loadings (correlations × inverse node correlation); `kNN k smoothed` = "
     "activities averaged over each cell's k nearest neighbours"),
    ("readable_probe_refit",
     "### The embedding re-estimated from the decoder (`readout_limits.py refit groups bulk_like`; 2 seeds): per "
     "cell the code of highest likelihood with the decoder fixed, then the same sparse read-out; r2_activity = mean "
     "R² of the planted activities from a least-squares fit on the 32 nodes"),
    ("readable_probe_pca",
     "### 32 principal components of the same input read out like genodae's nodes (`readout_limits.py pca`; "
     "tl.rotate's sparse rotation of the PC scores): the read-out on another embedding"),
    ("readable_probe_learning",
     "### What of the `signatures` preset helps: the default network with a larger learning rate, or a linear "
     "encoder alone (`readout_limits.py learning`; 2 seeds; AMD EPYC; 2026-12-07; the default lr is 1e-3)"),
    ("readable_probe_schedule",
     "### A larger rate that decays: the default network with Adam's rate falling from 3e-3 or 1e-2 to 0 along a "
     "cosine over the training (`readout_limits.py schedule groups sizes bulk_like`; 2 seeds; AMD EPYC; 2026-12-07; "
     "a probe patch, not a library setting)"),
    ("readable_probe_training",
     "### Longer training and a linear encoder on the bulk-like generator (`readout_limits.py training bulk_like`; "
     "2 seeds; `default` = the auto budget, about 740 epochs = 2,000 updates for 300 samples)"),
    ("readable_probe_updates",
     "### More minibatch updates: the auto epoch budget's floor of 2,000 updates (`genodae.config.MIN_STEPS`) raised "
     "to 6,000 or 12,000 (`readout_limits.py updates`; 2 seeds; AMD EPYC; 2026-12-07; epochs = the budget, "
     "best_epoch = the validation-best epoch the model keeps, both means of the seeds)"),
    ("readable_bulk_updates",
     "### More minibatch updates on the bulk sets (`bulk --seeds 3 --variants genodae \"genodae 6000 updates\" "
     "--suffix _updates`; AMD EPYC; 2026-12-07; the auto budget with a floor of 6,000 updates instead of 2,000)"),
    ("readable_bulk_updates_sc",
     "### More minibatch updates on real single-cell counts (`bulk --seeds 3 --sets pbmc3k_cd8_cd14 celseq2_3plates "
     "--variants genodae \"genodae 6000 updates\" --suffix _updates_sc`; AMD EPYC; 2026-12-07)"),
    ("readable_probe_scaling",
     "### Probe: the input scaling. The default network on the model input scaled 0-1 per gene (`minmax`, a masked "
     "entry becomes the gene's minimum) or to z-scores (`zscore`, the gene's mean) (`readout_limits.py scaling "
     "[generators]`; 2 seeds; AMD EPYC; 2026-12-07). `bulk_counts` (deep counts of 300 samples, bulk RNA-seq-like) "
     "and `groups_lognorm` (the groups counts log-normalised, counts dropped: the model reads log values under a "
     "normal likelihood) are the probe's own; on counts the model reads the counts (Poisson), elsewhere it "
     "reconstructs the scaled values. Hence `scaling=\"auto\"` (2026-12-08): minmax for counts, zscore otherwise. "
     "`scaling none` rows: the log-normalised values unscaled (scVI's encoder input; `readout_limits.py scaling_none "
     "groups overlap sizes`), not adopted (next table)"),
    ("readable_synthetic_zscore",
     "### The scaling on the bulk-like generator (`synthetic --seeds 3 --generators bulk_like --no-cnmf --variants "
     "genodae \"genodae zscore\" --suffix _zscore`; AMD EPYC; 2026-12-07, before `scaling=\"auto\"`: `genodae` = "
     "min-max)"),
    ("readable_bulk_zscore",
     "### The scaling on the bulk sets (`bulk --seeds 3 --variants genodae \"genodae zscore\" --suffix _zscore`; AMD "
     "EPYC; 2026-12-07, before `scaling=\"auto\"`: `genodae` = min-max; baselines on the min-max input)"),
    ("readable_synthetic_ens10_zscore",
     "### The bulk-like generator with the default since 2026-12-08 (z-scored input), 10 seeds (`synthetic --seeds 10 "
     "--generators bulk_like --no-cnmf --variants genodae --suffix _ens10_zscore`; AMD EPYC; ens = consensus of seeds "
     "0-4 and of 5-9, ens_stab = their agreement)"),
    ("readable_bulk_none_sc",
     "### Counts with unscaled log-normalised input (`scaling=\"none\"`, scVI's encoder input) on real single-cell "
     "counts (`bulk --seeds 3 --sets pbmc3k_cd8_cd14 celseq2_3plates --variants genodae \"genodae none\" --suffix "
     "_none_sc`; AMD EPYC; 2026-12-07; `genodae` = min-max, as `auto` gives counts)"),
    ("readable_bulk_zscore_seeds10",
     "### The scaling on NCI-60 P53, 10 seeds (`bulk --seeds 10 --sets nci60_p53 --variants genodae \"genodae "
     "zscore\" --suffix _zscore_seeds10`; AMD EPYC; 2026-12-07, before `scaling=\"auto\"`: `genodae` = min-max; "
     "since then `--variants \"genodae minmax\" genodae` measures the same)"),
    ("readable_probe_refine",
     "### Probe: signatures re-estimated from their own genes, the gene step of the iterative signature algorithm "
     "(Ihmels et al. 2002; `readout_limits.py refine`; 3 seeds, default models; AMD EPYC; 2026-12-08): per node, "
     "the activity = mean z-scored expression of its ±2.5 SD genes (negative tail subtracted), then every gene's "
     "correlation with it (leave-one-out for the signature's own genes), once or three times. Not adopted: +0.009 "
     "on overlap and +0.003 on bulk-like, nothing on groups, −0.005 on gradients and −0.08 on sizes"),
    ("readable_probe_corruption",
     "### Probe: the masking level (`readout_limits.py corruption`; 2 seeds; AMD EPYC; 2026-12-08): the default network "
     "with `corruption` 0.1 (ADAGE's level) and 0.4 beside the default 0.2; r2_activity = mean R² of the planted "
     "activities from the bottleneck. Not adopted: 0.2 is best or within 0.003 of the best on every generator but "
     "gradients (0.4: +0.003)"),
    ("readable_synthetic_sizes10",
     "### The default on sizes over 10 model seeds (`synthetic --seeds 10 --generators sizes --no-cnmf --variants "
     "genodae --suffix _sizes10`; AMD EPYC; 2026-12-08): seeds 0-2 are the main table's; ens_* = consensus of seeds "
     "0-4 and of seeds 5-9, ens_stab = their agreement"),
    ("readable_probe_baselines",
     "### The baselines on sizes over 10 seeds (`bench/probes/baseline_seeds.py sizes`; AMD EPYC; 2026-12-08), beside "
     "the default's 10 seeds of the table above: f1_sd = SD over seeds (the main table has 3)"),
    ("readable_synthetic_sizes10_lr",
     "### A larger learning rate on sizes over 10 seeds (`synthetic --seeds 10 --generators sizes --no-cnmf --variants "
     "\"genodae lr 3e-3\" --suffix _sizes10_lr`; AMD EPYC; 2026-12-08): is the 2-seed loss of `readout_limits.py "
     "learning` (0.583 → 0.547) more than the seed spread? Compare with the default's 10 seeds two tables above"),
    ("readable_synthetic_bulk_lr",
     "### The same larger rate on the bulk-like generator with z-scored input (`synthetic --seeds 3 --generators "
     "bulk_like --no-cnmf --variants \"genodae lr 3e-3\" --suffix _bulk_lr`; AMD EPYC; 2026-12-08): the `learning` "
     "probe's loss there (0.979 → 0.964) was on min-max input; the default's 3 seeds: the main table"),
]


HISTORY = "_2026-12-04"  # the first comparison's tables, kept under this suffix when the main tables were re-run


def _generator_tables(t: pd.DataFrame) -> list[str]:
    """A ``synthetic`` summary as one markdown table per generator."""
    return [f"### {gen}: {GENERATORS[gen]}\n\n" + _md(g.drop(columns="generator")) + "\n"
            for gen, g in t.groupby("generator", sort=False)]


def _bulk_tables(t: pd.DataFrame) -> list[str]:
    """A ``bulk`` summary as one markdown table per set and gene-set collection."""
    return [f"### {name}, {gs}\n\n" + _md(g.drop(columns=["set", "gene_sets"])) + "\n"
            for (name, gs), g in t.groupby(["set", "gene_sets"], sort=False)]


def report(args) -> None:
    """bench/results/readable.md from the TSVs (tables only; the reading of them is in the README): first the main
    tables (``synthetic``, ``bulk``: the current default against the baselines), then the history in the order it
    was measured (the first comparison, then ``EXTRA_TABLES``)."""
    parts = ["# Readable gene weights (issue 16)\n\nGenerated by `python bench/readable.py report`; method and metric "
             "definitions: the docstring of `bench/readable.py`. Machine: a shared 2-core VM (24 GiB, no GPU; AMD "
             "EPYC, except the tables of 2026-12-06 (stab_programs, the read-out probe, the sparse read-out) and "
             "those headed Intel Xeon), torch CPU, 1 thread; accuracy numbers do "
             "not depend on load. The first three sections are the library's current default against the "
             "baselines; the history after them keeps every earlier table, each headed with what it measured.\n"]
    syn = OUT / f"readable_synthetic{args.suffix}.tsv"
    if syn.is_file():
        parts.append("## Planted programs, the current default (2026-12-08: `python bench/readable.py synthetic --seeds "
                     "3`, run as one process per generator, `--generators G --suffix _cur_G`, and concatenated; AMD "
                     "EPYC). Mean of 3 model seeds; `genodae` = `tl.signatures`' default read-out (sparse nodes), "
                     "`genodae (model weights)` = `varm[\"dae_weights\"]` (distance-keeping varimax), `genodae "
                     "(varimax read-out)` = `tl.rotate(method=\"varimax\")`; baselines on the min-max input "
                     "(`baseline_input`; genodae's bulk-like input is z-scored, `scaling=\"auto\"`); cNMF, which needs "
                     "the bench venv, in the table after this one; stab = mean best-match |r| between seeds over all nodes, "
                     "stab_programs = the same for the nodes that carry a planted module; ens = consensus of the 3 "
                     "seeds\n")
        t = pd.read_csv(syn, sep="\t")
        parts += _generator_tables(t)
    cnmf = OUT / "readable_probe_cnmf.tsv"
    if cnmf.is_file():
        parts.append("### cNMF over its seeds (`.bench-venv/bin/python bench/probes/cnmf_seeds.py`; 2026-12-08; AMD EPYC): "
                     "cNMF (k = 32, 20 replicates each) with 5 seeds on groups and overlap (`cnmf_seeds.py groups overlap`), "
                     "one on the others (`--seeds 1 gradients sizes bulk_like`: the main table's cNMF row), beside "
                     "genodae's default and `signatures` preset from the table above (3 model seeds); f1_sd = SD over "
                     "seeds\n\n"
                     + _md(pd.read_csv(cnmf, sep="\t")) + "\n")
    bulk = OUT / f"readable_bulk{args.suffix}.tsv"
    if bulk.is_file():
        parts.append("## Pathway coverage on bulk sets, the current default (2026-12-08: `python bench/readable.py bulk "
                     "--seeds 3 --suffix _cur`, moved to the main name; AMD EPYC; eADAGE: ±2.5 SD, Fisher + BH per "
                     "node, FDR < 0.05; `*_pos` = positive tails only; ens = consensus of the 3 seeds)\n")
        t = pd.read_csv(bulk, sep="\t")
        parts += _bulk_tables(t)
    mods = OUT / f"readable_synthetic_modules{args.suffix}.tsv"
    if mods.is_file():
        t = pd.read_csv(mods, sep="\t")
        keep = [m for m in ("oracle (true activities)", "genodae", "genodae nb", "genodae signatures preset",
                            "pca (corr+varimax)", "ica (corr+varimax)", "nmf (corr+varimax)", "cnmf (spectra scores)")
                if m in set(t["method"])]
        t[["size", "signal_rank"]] = t[["size", "signal_rank"]].round().astype(int)
        wide = t[t["method"].isin(keep)].pivot_table(index=["generator", "module", "size", "signal_rank"],
                                                     columns="method", values="auroc", sort=False)[keep]
        parts.append("## Each module, the current default: best-node AUROC (mean of seeds; oracle = correlation with "
                     "the true activities, the read-out's ceiling; signal_rank = eigenvalues of the input's gene "
                     "correlation above a permutation null, Horn's parallel analysis)\n\n" + _md(wide.reset_index())
                     + "\n")
    parts.append("# History, in the order measured\n")
    old = OUT / f"readable_synthetic{HISTORY}.tsv"
    if old.is_file():
        t = pd.read_csv(old, sep="\t")
        parts.append("## Planted programs, the first comparison (2026-11-29 to 2026-12-04, `synthetic --seeds 3` then; "
                     "the default then: the whitened varimax read-out, `patience` 10, min-max input; mean of seeds; ens "
                     "= consensus of the seeds)\n")
        parts += _generator_tables(t)
    for name, heading in EXTRA_TABLES:  # the follow-up runs, each a table of its own when present
        path = OUT / f"{name}{args.suffix}.tsv"
        if path.is_file():
            parts.append(heading + "\n\n" + _md(pd.read_csv(path, sep="\t")) + "\n")
    draws = OUT / "readable_synthetic_dataseeds.tsv"
    if draws.is_file():
        t = pd.read_csv(draws, sep="\t")[["generator", "method", "auroc", "precision", "recall", "f1"]]
        parts.append("## Planted programs over three data draws (data seeds 1000-1002, model seed = draw; from a run "
                     "of this script before the data seed was fixed per generator; stability columns of that run "
                     "compared different data and are dropped)\n")
        for gen, g in t.groupby("generator", sort=False):
            parts.append(f"### {gen}\n\n" + _md(g.drop(columns="generator")) + "\n")
    old = OUT / f"readable_bulk{HISTORY}.tsv"
    if old.is_file():
        t = pd.read_csv(old, sep="\t")
        parts.append("## Pathway coverage on bulk sets, the first comparison (2026-12-04; the default then: whitened "
                     "varimax read-out, min-max input; eADAGE: ±2.5 SD, Fisher + BH per node, FDR < 0.05)\n")
        parts += _bulk_tables(t)
    b10 = OUT / f"readable_bulk_seeds10{args.suffix}.tsv"
    if b10.is_file():
        t = pd.read_csv(b10, sep="\t")
        t = t[t["gene_sets"] == "hallmark"].drop(columns="gene_sets")
        parts.append("## Bulk sets, 10 seeds (`bulk --seeds 10 --suffix _seeds10`; Hallmark; the 2026-12-04 default): "
                     "stab = mean pairwise best-match |r| of single models; ens_* = consensus of all 10; ens_stab = "
                     "consensus of seeds 0-4 vs that of seeds 5-9 (baselines: random_state and 90 % subsamples as "
                     "their seeds)\n\n" + _md(t) + "\n")
    rank = OUT / f"readable_rank{args.suffix}.tsv"
    if rank.is_file():
        parts.append("## Probe: as many nodes as the data have programs above the noise (`rank` part; Horn's parallel "
                     "analysis on the prepared input, 3 seeds; compare with the 32-node rows of the first "
                     "comparison)\n\n" + _md(pd.read_csv(rank, sep="\t")) + "\n")
    emb = OUT / f"readable_embedding{args.suffix}.tsv"
    if emb.is_file():
        parts.append("## The embedding in the readable basis vs as trained (same models; bench/quality.py's scores, "
                     "mean of seeds)\n\n" + _md(pd.read_csv(emb, sep="\t")) + "\n")
    (OUT / f"readable{args.suffix}.md").write_text("\n".join(parts))
    print(OUT / f"readable{args.suffix}.md")


if __name__ == "__main__":
    main()
