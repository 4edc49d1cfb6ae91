"""Probe (issue 16): how much cNMF's own F1 varies with its seed, on every generator (genodae's default is below it
on groups and overlap). bench/readable.py runs cNMF once per generator (seed 0; its 20 replicates are its
own ensemble), so its row has no seed spread to compare with the 3 model seeds of genodae's rows.

    python bench/probes/cnmf_seeds.py [--seeds N] [generators]   # N cNMF seeds each (5); results/readable_probe_cnmf.tsv

(in the bench venv, which has the ``cnmf`` package: ``make .bench-venv/.installed``; generators may run in separate
processes: the rows of the others already in the table are kept)

Per generator and seed: cNMF (k = 32, 20 replicates, density threshold 0.5, the same call as readable.py) on the
genes genodae uses, its spectra scores read as ±2.5 SD signatures and scored against the planted modules; the
table gives the mean and SD over seeds, beside the rows of genodae's default, its ``signatures`` preset and the
best other baseline from the main table's per-seed file (``readable_synthetic_per_seed.tsv``) where present.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: readable.py

import pandas as pd  # noqa: E402
import readable as R  # noqa: E402

import genodae  # noqa: E402
from genodae import signatures as S  # noqa: E402


def per_seed_rows(name: str, gen: str, methods) -> list[dict]:
    """The rows of ``methods`` on ``gen`` in a readable.py per-seed file (``bench/results/<name>``), if it exists."""
    path = R.OUT / name
    if not path.is_file():
        return []
    t = pd.read_csv(path, sep="\t")
    t = t[t["generator"].eq(gen) & t["method"].isin(methods)]
    return t[["generator", "method", "seed", "auroc", "precision", "recall", "f1"]].to_dict("records")


def spread(rows: list[dict]) -> pd.DataFrame:
    """Per generator and method: seeds, mean AUROC, and F1's mean, SD, min and max over the seeds."""
    return pd.DataFrame(rows).groupby(["generator", "method"], sort=False).agg(
        seeds=("seed", "nunique"), auroc=("auroc", "mean"), f1=("f1", "mean"), f1_sd=("f1", "std"),
        f1_min=("f1", "min"), f1_max=("f1", "max")).reset_index()


def main(gens, seeds=5):
    rows = []
    for gen in gens:
        adata = R.make(gen)
        modules = {k: list(v) for k, v in adata.uns["synthetic"]["modules"].items()}
        _, genes = S.model_input(genodae.pp.prepare(adata, copy=True))
        for seed in range(seeds):
            W = R.cnmf_loadings(adata, 32, seed, genes)
            if W is None:
                raise SystemExit("cnmf is not installed (pip install cnmf)")
            rows.append({"generator": gen, "method": "cnmf (spectra scores)", "seed": seed, **R.score(W, modules)})
            print(rows[-1], flush=True)
        rows += per_seed_rows("readable_synthetic_per_seed.tsv", gen, ["genodae", "genodae signatures preset"])
    t = spread(rows)
    out = R.OUT / "readable_probe_cnmf.tsv"
    if out.is_file():  # rows of other generators (another process) are kept
        old = pd.read_csv(out, sep="\t")
        t = pd.concat([old[~old["generator"].isin(t["generator"])], t], ignore_index=True)
    t.to_csv(out, sep="\t", index=False, float_format="%.4f")
    print(t.round(4).to_string(index=False))
    print(out)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("generators", nargs="*", choices=list(R.GENERATORS), default=list(R.GENERATORS))
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    main(args.generators, args.seeds)
