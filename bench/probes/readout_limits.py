"""Probe (issue 16, not in the library): where the remaining F1 gaps of the default signatures come from, on the
planted-program generators of bench/readable.py (tl.signatures' sparse nodes, ±2.5 SD signatures, 32 nodes).

    python bench/probes/readout_limits.py variants [generators]   # 3 model seeds each, ~3 min per generator here
    python bench/probes/readout_limits.py refit groups bulk_like  # 2 seeds
    python bench/probes/readout_limits.py pca                     # PCA scores read out like genodae's nodes
    python bench/probes/readout_limits.py training bulk_like      # 2 seeds per training setting
    python bench/probes/readout_limits.py learning [generators]   # 2 seeds per setting, ~8 min per generator
    python bench/probes/readout_limits.py schedule groups sizes bulk_like   # 2 seeds, ~5 min per generator
    python bench/probes/readout_limits.py updates [generators]  # 2 seeds per budget, ~10 min per generator
    python bench/probes/readout_limits.py scaling [generators]  # 2 seeds per input scaling
    python bench/probes/readout_limits.py scaling_none [generators]  # the same with scaling="none"
    python bench/probes/readout_limits.py refine [generators]   # 3 seeds, ~1 min per generator
    python bench/probes/readout_limits.py corruption [generators]   # 2 seeds per masking level, ~8 min per generator

Parts (results of 2026-12-07 on the 2-core AMD EPYC VM, 1 torch thread, in bench/results/readable.md, "Probe:
where the remaining gaps come from"):

- ``variants``: other read-outs of the same sparse activities ``A`` (cells × nodes): the one-sided, usage-like
  activity max(a − median(a), 0) for every node (``relu all``, the earlier nonneg_readout probe) or only for nodes
  that look like a discrete population (bimodality coefficient above 5/9, Pfister et al. 2013; |skewness| > 1;
  the one-sided activity explaining more gene variance); the oblique pattern matrix (correlations times the
  inverse correlation of the nodes; factor analysis' pattern against structure loadings); activities averaged over
  each cell's 15 or 30 nearest neighbours in the whitened nodes (kNN smoothing, as metacells/MAGIC).
- ``refit``: the embedding re-estimated from the decoder (per cell, the code that maximises the model's own
  likelihood with the decoder fixed: multinomial/Poisson for counts, least squares for ``normal``; LBFGS started at
  the encoder's code), then the same sparse read-out; R² = mean over programs of the planted activities' R² from a
  least-squares fit on the 32 nodes.
- ``pca``: 32 principal components of the same model input in place of the bottleneck, read out by tl.rotate's
  sparse rotation: separates the read-out from what the embedding carries.
- ``training``: the default network on the bulk-like generator with more updates (``epochs`` 2000 instead of the
  auto budget, ~740 epochs for 300 samples) and a linear encoder (``hidden=()``).
- ``learning``: which part of the ``signatures`` preset helps on groups and overlap: the default network with
  lr 3e-3 or 1e-2 (default 1e-3), or with a linear encoder alone.
- ``updates``: the auto epoch budget with its floor of minibatch updates (``genodae.config.MIN_STEPS``, 2,000)
  raised to 6,000 (bulk-like also 12,000): does the default stop before the validation loss stops falling?
- ``scaling``: the model input scaled per gene to z-scores (``pp.prepare(scaling="zscore")``: a masked entry
  becomes the gene's mean) instead of the default 0-1 range (a masked entry becomes the gene's minimum, as in
  ADAGE); the read-out is the same (correlations do not depend on a gene's scale). Also on ``bulk_counts``
  (``EXTRA``: deep negative-binomial counts of 300 samples, bulk RNA-seq-like, few zeros) and ``groups_lognorm``
  (the groups counts log-normalised, without the counts: the model sees log values, as from a processed file),
  not readable.py generators.
- ``refine``: the gene step of the iterative signature algorithm (Ihmels, Friedman & Barkai 2002) on the default
  signatures: each node's activity re-estimated as the mean z-scored expression of its ±2.5 SD genes (negative tail
  subtracted), every gene's correlation with it (a signature gene left out of the score it is correlated with),
  once or three times. Does a cleaner activity than the embedding's lift recall where programs are weak?
- ``corruption``: the default network with masking noise 0.1 (ADAGE's level) and 0.4 beside the default 0.2: does
  the denoising strength move what the bottleneck carries of weak programs?
- ``schedule``: the default network with a larger starting rate that decays along a cosine to 0 over the training
  (the optimizer patched for the probe only).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: readable.py and _common.py

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import readable as R  # noqa: E402
from scipy.stats import kurtosis, skew  # noqa: E402

import genodae  # noqa: E402
from genodae import signatures as S  # noqa: E402

GENERATORS = ["groups", "gradients", "overlap", "sizes", "bulk_like"]


# not one of readable.py's generators: bulk RNA-seq-like counts (deep, few zeros), for the scaling part only
EXTRA = {"bulk_counts": dict(activity="continuous", module_sizes=(20, 40, 40, 60, 80), n_cells=300, n_genes=2000,
                             effect=0.4, mean_log_expression=5.0, dispersion=10.0, library_sd=0.3)}


def load(gen, **prepare):
    if gen == "groups_lognorm":  # the groups counts as log-normalised values without the counts (a processed file)
        import scanpy as sc

        adata = R.make("groups")
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        adata.uns.pop("log1p", None)
        prepare = {"input_kind": "log", **prepare}
    else:
        adata = (genodae.synthetic.program_mixture(**EXTRA[gen], seed=1000) if gen in EXTRA else R.make(gen))
    modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
    prep = genodae.pp.prepare(adata, copy=True, **prepare)
    X, genes = S.model_input(prep)
    return adata, prep, modules, np.asarray(X, np.float64), genes


def r2(Z, act):
    """Mean over programs of the R² of the planted activities from a least-squares fit on the columns of Z."""
    Zc = np.c_[Z - Z.mean(0), np.ones(len(Z))]
    coef, *_ = np.linalg.lstsq(Zc, act, rcond=None)
    return float(np.mean(1 - (act - Zc @ coef).var(0) / act.var(0)))


def sparse_readout(a, Z=None):
    """tl.rotate's sparse nodes of ``a`` (with ``Z`` in place of its embedding): genes used × nodes, activities."""
    b = a.copy()
    if Z is not None:
        b.obsm["X_dae"] = np.asarray(Z, np.float32)
    genodae.tl.rotate(b, method="sparse")
    used = S.genes_used(b, "dae")
    return (pd.DataFrame(b.varm["dae_sparse_weights"][used], index=b.var_names[used]),
            np.asarray(b.obsm["X_dae_sparse"], np.float64))


def one_sided(A):
    A = A * np.where(skew(A, axis=0) < 0, -1, 1)
    return np.maximum(A - np.median(A, axis=0), 0)


def bimodality(A):
    n = A.shape[0]
    return (skew(A, axis=0, bias=False) ** 2 + 1) / (kurtosis(A, axis=0, bias=False) + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def default_models(gens, seeds=3):
    """Per generator and seed: a default model's sparse read-out (weights, activities) with its data."""
    for gen in gens:
        _, prep, modules, X, genes = load(gen)
        for seed in range(seeds):
            a = prep.copy()
            genodae.tl.dae(a, seed=seed, n_latent=32, num_threads=1)
            yield gen, seed, modules, X, genes, *sparse_readout(a)


def variants(gens):
    from sklearn.neighbors import NearestNeighbors

    rows = []
    for gen, seed, modules, X, genes, W0, A in default_models(gens):
        def corr(act, X=X, genes=genes, index=W0.index):
            return pd.DataFrame(S._corr_cols(X, act), index=genes).reindex(index).to_numpy()

        Wc, Wr = corr(A), corr(one_sided(A))
        gain = (Wr ** 2).sum(0) > (Wc ** 2).sum(0)
        Az = (A - A.mean(0)) / A.std(0)
        found = {"default": W0.to_numpy(), "relu all": Wr,
                 "relu if BC > 5/9": np.where(bimodality(A) > 5 / 9, Wr, Wc),
                 "relu if abs(skew) > 1": np.where(np.abs(skew(A, axis=0)) > 1, Wr, Wc),
                 "relu if it explains more": np.where(gain, Wr, Wc),
                 "pattern matrix": Wc @ np.linalg.pinv(np.corrcoef(Az, rowvar=False))}
        for k in (15, 30):
            idx = NearestNeighbors(n_neighbors=k).fit(Az).kneighbors(Az, return_distance=False)
            found[f"kNN {k} smoothed"] = corr(A[idx].mean(axis=1))
        for name, W in found.items():
            rows.append({"generator": gen, "seed": seed, "readout": name,
                         **R.score(pd.DataFrame(W, index=W0.index), modules)})
        print(gen, seed, "nodes with BC > 5/9:", int((bimodality(A) > 5 / 9).sum()), flush=True)
    return rows


def refit(gens):
    import torch

    rows = []
    for gen in gens:
        adata, prep, modules, X, genes = load(gen)
        act = np.asarray(adata.obsm["program_activity"], np.float64)
        for seed in range(2):
            a = prep.copy()
            model = genodae.DAE(seed=seed, n_latent=32, num_threads=1).fit(prep)
            model.annotate(a)  # what tl.dae writes, from the same (one) training
            mod = model.module.eval()
            x = torch.tensor(X, dtype=torch.float32)
            with torch.no_grad():
                z0 = mod.encode(x)
            y = None
            if mod.counts:
                from genodae.model import _model_counts

                C = _model_counts(prep, genes)
                y = torch.tensor(np.asarray(C.toarray() if hasattr(C, "toarray") else C, np.float32))
            z = decoder_refit(mod, x, z0, y)
            for name, Z in (("encoder", z0.numpy()), ("decoder refit", z)):
                Wn, _ = sparse_readout(a, Z)
                rows.append({"generator": gen, "seed": seed, "readout": name, "r2_activity": r2(Z, act),
                             **R.score(Wn, modules)})
                print(rows[-1], flush=True)
    return rows


def decoder_refit(mod, x, z0, counts=None):
    """Per cell, the code that maximises the model's likelihood with the (linear) decoder fixed: multinomial for
    ``counts`` (the Poisson likelihood given the library size), least squares of the scaled input ``x`` otherwise."""
    import torch

    W, b = mod.decoder.weight.detach(), mod.decoder.bias.detach()
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([z], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def closure():
        opt.zero_grad()
        out = z @ W.T + b
        value = (-(counts * torch.log_softmax(out, dim=-1)).sum() if counts is not None
                 else 0.5 * ((out - x) ** 2).sum())
        value.backward()
        return value

    opt.step(closure)
    return z.detach().numpy()


def pca(gens):
    from sklearn.decomposition import PCA

    rows = []
    for gen in gens:
        adata, prep, modules, X, _ = load(gen)
        a = prep.copy()
        genodae.tl.dae(a, seed=0, n_latent=32, num_threads=1, epochs=1)  # only for its keys; the nodes are replaced
        Z = PCA(32, random_state=0).fit_transform(X)
        W, _ = sparse_readout(a, Z)
        rows.append({"generator": gen, "seed": 0, "readout": "32 PCs, sparse read-out",
                     "r2_activity": r2(Z, np.asarray(adata.obsm["program_activity"], np.float64)), **R.score(W, modules)})
        print(rows[-1], flush=True)
    return rows


def training(gens, settings=None):
    settings = settings or {"default": {}, "epochs 2000": dict(epochs=2000), "hidden ()": dict(hidden=()),
                            "hidden (), epochs 2000": dict(hidden=(), epochs=2000)}
    rows = []
    for gen in gens:
        adata, prep, modules, _, _ = load(gen)
        act = np.asarray(adata.obsm["program_activity"], np.float64)
        for name, kw in settings.items():
            for seed in range(2):
                a = prep.copy()
                genodae.tl.dae(a, seed=seed, n_latent=32, num_threads=1, **kw)
                W, _ = sparse_readout(a)
                rows.append({"generator": gen, "seed": seed, "readout": name,
                             "r2_activity": r2(np.asarray(a.obsm["X_dae"], np.float64), act), **R.score(W, modules)})
                print(rows[-1], flush=True)
    return rows


def learning(gens):
    """What of the ``signatures`` preset (a linear encoder, lr 0.01) lifts groups and overlap: the default network
    with a larger learning rate, or with a linear encoder alone (2 seeds per setting)."""
    return training(gens, {"default": {}, "lr 3e-3": dict(lr=3e-3), "lr 1e-2": dict(lr=1e-2),
                           "hidden ()": dict(hidden=())})


def schedule(gens):
    """The lead of ``learning``: a larger learning rate that decays. The default network with Adam whose rate falls
    from lr0 to 0 along a cosine over the whole training (Loshchilov & Hutter 2017, without restarts), lr0 = 3e-3 or
    1e-2; not a library setting: ``genodae.train.make_optimizer`` is patched here for the probe's models only."""
    import math

    import genodae.train as T

    plain = T.make_optimizer

    def cosine(lr0, n_train):
        def make(module, config):
            opt = plain(module, config)
            total = config.max_epochs(n_train) * max(1, -(-n_train // config.batch_size))
            step = opt.step

            def stepped(*args, _t=[0], **kwargs):  # noqa: B006 (a counter kept by the closure)
                for group in opt.param_groups:
                    group["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * min(_t[0], total) / total))
                _t[0] += 1
                return step(*args, **kwargs)

            opt.step = stepped
            return opt
        return make

    rows = []
    for gen in gens:
        adata, prep, modules, _, _ = load(gen)
        act = np.asarray(adata.obsm["program_activity"], np.float64)
        n_train = prep.n_obs - int(round(prep.n_obs * genodae.DAEConfig().val_fraction))
        for name, lr0 in (("default", None), ("cosine from 3e-3", 3e-3), ("cosine from 1e-2", 1e-2)):
            T.make_optimizer = plain if lr0 is None else cosine(lr0, n_train)
            try:
                for seed in range(2):
                    a = prep.copy()
                    genodae.tl.dae(a, seed=seed, n_latent=32, num_threads=1)
                    W, _ = sparse_readout(a)
                    rows.append({"generator": gen, "seed": seed, "readout": name,
                                 "r2_activity": r2(np.asarray(a.obsm["X_dae"], np.float64), act),
                                 **R.score(W, modules)})
                    print(rows[-1], flush=True)
            finally:
                T.make_optimizer = plain
    return rows


def updates(gens):
    """The lead of ``training``: more minibatch updates for every generator. The auto epoch budget
    (``DAEConfig.max_epochs``: at least 100 epochs and ``genodae.config.MIN_STEPS`` updates, 2,000) with the floor
    raised to 6,000 or 12,000 updates (patched here for the probe's models only); the best validation epoch is kept
    as always (``patience`` 0)."""
    import genodae.config as G

    plain, rows = G.MIN_STEPS, []
    for gen in gens:
        adata, prep, modules, _, _ = load(gen)
        act = np.asarray(adata.obsm["program_activity"], np.float64)
        for steps in (plain, 6000, 12000)[:3 if gen == "bulk_like" else 2]:
            G.MIN_STEPS = steps
            try:
                for seed in range(2):
                    a = prep.copy()
                    genodae.tl.dae(a, seed=seed, n_latent=32, num_threads=1)
                    W, _ = sparse_readout(a)
                    rows.append({"generator": gen, "seed": seed, "readout": f"{steps} updates",
                                 "epochs": a.uns["dae"]["history"]["epochs_run"],
                                 "best_epoch": a.uns["dae"]["history"]["best_epoch"] + 1,
                                 "r2_activity": r2(np.asarray(a.obsm["X_dae"], np.float64), act),
                                 **R.score(W, modules)})
                    print(rows[-1], flush=True)
            finally:
                G.MIN_STEPS = plain
    return rows


def scaling(gens, names=("minmax", "zscore")):
    """The default network on the model input scaled 0-1 per gene or to z-scores (2 seeds each)."""
    rows = []
    for gen in gens:
        for name in names:
            adata, prep, modules, _, _ = load(gen, scaling=name)
            act = np.asarray(adata.obsm["program_activity"], np.float64)
            for seed in range(2):
                a = prep.copy()
                genodae.tl.dae(a, seed=seed, n_latent=32, num_threads=1)
                W, _ = sparse_readout(a)
                rows.append({"generator": gen, "seed": seed, "readout": f"scaling {name}",
                             "r2_activity": r2(np.asarray(a.obsm["X_dae"], np.float64), act), **R.score(W, modules)})
                print(rows[-1], flush=True)
    return rows


def corruption(gens, levels=(0.1, 0.2, 0.4)):
    """The default network with other masking-noise levels (``corruption``; default 0.2, ADAGE 0.1), 2 seeds each."""
    return training(gens, {f"corruption {level}": dict(corruption=level) for level in levels})


def scaling_none(gens):
    """``scaling``'s third setting: the log-normalised values as they are (``scaling="none"``; scVI's encoder reads
    log1p counts unscaled), on count generators."""
    return scaling(gens, ("none",))


def signature_refit(X, W, cutoff=2.5, iters=1):
    """The iterative signature algorithm's gene step (Ihmels, Friedman & Barkai 2002), on each node: the node's
    activity re-estimated as the mean z-scored expression of its ±``cutoff`` SD genes (negative tail subtracted),
    then every gene's correlation with it, leaving a signature gene out of the score it is correlated with (else
    each signature gene would keep itself in). ``X``: cells × genes (the genes of ``W``, same order)."""
    Xz = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    n = len(Xz)
    W = np.asarray(W, np.float64).copy()
    for _ in range(iters):
        Z = (W - W.mean(0)) / np.where(W.std(0) > 0, W.std(0), np.inf)
        s = np.where(Z > cutoff, 1.0, np.where(Z < -cutoff, -1.0, 0.0))
        k = np.abs(s).sum(0)
        keep = k > 0
        w = s[:, keep] / k[keep]                      # genes × nodes: signed weights of the score
        a = Xz @ w                                    # cells × nodes
        a -= a.mean(0)
        cov = Xz.T @ a / n                            # cov(z_g, a)
        va = (a ** 2).mean(0)
        cov_loo = cov - w                             # cov(z_g, a - w_g z_g)
        var_loo = va - 2 * w * cov + w ** 2
        W[:, keep] = cov_loo / np.sqrt(np.maximum(var_loo, 1e-12))
    return W


def refine(gens):
    """Default models' sparse nodes, then ``signature_refit`` once and three times (3 seeds)."""
    rows = []
    for gen, seed, modules, X, genes, W0, _ in default_models(gens):
        Xg = pd.DataFrame(X, columns=genes)[W0.index].to_numpy()
        found = {"default": W0.to_numpy(), "signature refit 1": signature_refit(Xg, W0),
                 "signature refit 3": signature_refit(Xg, W0, iters=3)}
        for name, W in found.items():
            rows.append({"generator": gen, "seed": seed, "readout": name,
                         **R.score(pd.DataFrame(W, index=W0.index), modules)})
            print(rows[-1], flush=True)
    return rows


def write(part: str, rows: list[dict]) -> Path:
    """Means over seeds into bench/results/readable_probe_<part>.tsv (rows of other generators already there are
    kept, so generators can run in separate processes); readable.py's report puts it in readable.md."""
    cols = [c for c in ("epochs", "best_epoch", "r2_activity", "auroc", "precision", "recall", "f1") if c in rows[0]]
    t = pd.DataFrame(rows).groupby(["generator", "readout"], sort=False).agg(
        seeds=("seed", "nunique"), **{c: (c, "mean") for c in cols}).reset_index()
    out = Path(__file__).resolve().parents[1] / "results" / f"readable_probe_{part.split('_')[0]}.tsv"  # scaling_none
    if out.is_file():  # rows of other generators, or of other settings of the same generator, are kept
        old = pd.read_csv(out, sep="\t")
        new = pd.MultiIndex.from_frame(t[["generator", "readout"]])
        t = pd.concat([old[~pd.MultiIndex.from_frame(old[["generator", "readout"]]).isin(new)], t], ignore_index=True)
    t.to_csv(out, sep="\t", index=False, float_format="%.4f")
    print(t.round(3).to_string(index=False))
    return out


if __name__ == "__main__":
    part, gens = sys.argv[1], sys.argv[2:] or GENERATORS
    print(write(part, {"variants": variants, "refit": refit, "pca": pca, "training": training,
                      "learning": learning, "schedule": schedule, "updates": updates,
                      "scaling": scaling, "scaling_none": scaling_none, "refine": refine, "corruption": corruption}[part](gens)))
