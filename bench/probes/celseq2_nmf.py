"""Probe (issue 16, not in the library): why raw NMF loadings cover more gene sets than genodae's signatures on
the three CEL-seq2 plates (five cancer cell lines; bench/readable.py's ``celseq2_3plates``, gene symbols).

    python bench/probes/celseq2_nmf.py [--seeds 1]     # ~6 min per seed here (2-core VM, 1 torch thread)

For genodae's default model read as users get signatures (tl.signatures' sparse nodes) and for raw NMF loadings
(scikit-learn, the readable.py baseline), at 16, 32 (the default) and 64 nodes, the same prepared input: how many
nodes have another whose weights correlate at |r| > 0.7 / 0.9 (``twins_07``/``twins_09``), the median size of the
positive ±2.5 SD tails and how many distinct genes they hold together, and GO BP coverage (``covered``,
``enriched_share``: both tails; ``*_pos``: positive tails only, as NMF's signatures are), eADAGE's procedure
(readable.coverage). Writes bench/results/readable_probe_celseq2_nmf.tsv (means over seeds); readable.py's
report puts it in readable.md.

Result (2026-12-07, AMD EPYC, seed 0): at 32 nodes NMF's positive tails are larger (median 72.5 genes against 43)
and together hold 1,032 of the 2,000 genes against 556; 23 of genodae's 32 sparse nodes have another at
|r| > 0.7 (NMF 4). With 64 nodes genodae's positive tails cover more GO BP sets than NMF's (240 against 227),
with 16 fewer (162 against 183).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: readable.py and _common.py

import _common as C  # noqa: E402
import pandas as pd  # noqa: E402
import readable as R  # noqa: E402

import genodae  # noqa: E402
from genodae import enrich  # noqa: E402
from genodae import signatures as S  # noqa: E402


def describe(W: pd.DataFrame, gmt: dict) -> dict:
    W = W.loc[(W != 0).any(axis=1)]
    twins = R.twin_scores(W)  # shares of the nodes; counted here
    sig = S.high_weight_genes(W, sd_cutoff=2.5)
    pos = sig[sig["direction"] == "pos"]
    c = R.coverage(W, gmt, W.index)
    return {"twins_07": round(twins["twin_07"] * W.shape[1]), "twins_09": round(twins["twin_09"] * W.shape[1]),
            "pos_tail_median": float(pos.groupby("node", observed=True).size().median()),
            "pos_genes": int(pos["gene"].nunique()), "covered": c["covered"], "enriched_share": c["enriched_share"],
            "covered_pos": c["covered_pos"], "enriched_share_pos": c["enriched_share_pos"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1)
    args = p.parse_args()
    raw = R.read_set("celseq2_3plates")
    if raw is None:
        sys.exit(f"the CEL-seq2 plates are not in {R.SHARED} (set GENODAE_SHARED_DATA)")
    prep = genodae.pp.prepare(raw, copy=True)
    X, genes = S.model_input(prep)
    gmt = enrich.read_gmt(R.SHARED / R.GENE_SETS["go_bp"])
    rows = []
    for seed in range(args.seeds):
        for k in (16, 32, 64):
            found = {"genodae": R.genodae_weights(prep, seed, k, {"genodae": {}})["genodae"],
                     "nmf (raw)": C.factor_loadings(X, genes, "nmf", k, seed=seed, subsample=0.9)[0]}
            for method, W in found.items():
                rows.append({"method": method, "n_latent": k, "seed": seed, **describe(W, gmt)})
                print(rows[-1], flush=True)
    t = pd.DataFrame(rows).groupby(["method", "n_latent"], sort=False).mean(numeric_only=True).reset_index()
    t = t.rename(columns={"seed": "seeds"}).assign(seeds=args.seeds)
    out = Path(__file__).resolve().parents[1] / "results" / "readable_probe_celseq2_nmf.tsv"
    t.to_csv(out, sep="\t", index=False, float_format="%.4f")
    print(t.to_string())


if __name__ == "__main__":
    main()
