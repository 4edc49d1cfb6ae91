"""Probe (issue 16): the baselines of bench/readable.py over more seeds, to compare with a 10-seed genodae run
(`readable.py synthetic --seeds 10 --generators G --no-cnmf --variants genodae --suffix _G10`), whose F1 can
differ from the 3-seed main table's by more than the margins between methods.

    python bench/probes/baseline_seeds.py [--seeds N] [generators]   # results/readable_probe_baselines.tsv

Per generator and seed: PCA, ICA and NMF scores of a 90 % subsample (seed = random_state and subsample, as in
readable.py's main table), raw and with readable.py's correlation + varimax read-out, scored against the planted
modules; the table gives mean, SD, min and max of F1 over the seeds (AUROC mean), beside genodae's rows of the
10-seed run's per-seed file (``readable_synthetic_per_seed_<generator>10.tsv``) where present.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: readable.py, _common.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/probes/: cnmf_seeds.py (its per-seed summary)

import _common as C  # noqa: E402
import readable as R  # noqa: E402
from cnmf_seeds import per_seed_rows, spread  # noqa: E402

import genodae  # noqa: E402
from genodae import signatures as S  # noqa: E402


def main(gens, seeds):
    rows = []
    for gen in gens:
        adata = R.make(gen)
        modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
        prep = genodae.pp.prepare(adata, copy=True)
        X, genes = S.model_input(prep)
        Xb = X if prep.uns["genodae_prepare"]["params"]["scaling"] == "minmax" else R.baseline_input(adata)
        for seed in range(seeds):
            for method in R.BASELINES:
                L, sc = C.factor_loadings(Xb, genes, method, 32, seed=seed, subsample=0.9)
                for label, W in ((f"{method} (raw)", L), (f"{method} (corr+varimax)", R.corr_varimax(Xb, sc, genes))):
                    rows.append({"generator": gen, "method": label, "seed": seed, **R.score(W, modules)})
            print(gen, seed, flush=True)
        rows += per_seed_rows(f"readable_synthetic_per_seed_{gen}10.tsv", gen, ["genodae"])
    t = spread(rows)
    out = R.OUT / "readable_probe_baselines.tsv"
    t.to_csv(out, sep="\t", index=False, float_format="%.4f")
    print(t.round(4).to_string(index=False))
    print(out)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("generators", nargs="*", choices=list(R.GENERATORS), default=["sizes"])
    p.add_argument("--seeds", type=int, default=10)
    args = p.parse_args()
    main(args.generators, args.seeds)
