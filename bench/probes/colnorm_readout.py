"""Probe (issue 16, not in the library): sparse coding of column-normalised loadings, the lead against near-copy
nodes. tl.rotate's sparse rotation learns its atoms on the varimax loadings as they are, so directions that
explain much gene variance dominate the dictionary-learning objective; on data with a few strong discrete
populations the atoms split those directions into variants (near copies). Here each varimax column is scaled to
unit norm before the atoms are learnt (every direction weighs the same), then mapped back.

    python bench/probes/colnorm_readout.py celseq2_3plates|nci60_p53|pbmc3k_cd8_cd14|groups|bulk_like [seed]

Result (2026-12-07, AMD EPYC, seed 0, one default model per set, 1 thread; sparse → column-normalised):
CEL-seq2 plates: nodes with a near copy (|r| > 0.7) 72 % → 9 %, Hallmark 22 → 21 sets (42 → 30 % of signatures
enriched), GO BP 180 → 202 (47 → 30 %); NCI-60 P53: 48 % → 0 %, Hallmark 13 → 13 (23 → 21 %), GO BP 69 → 76 (21 →
19 %); PBMC3k CD8/CD14: 38 % → 0 %, Hallmark 12 → 11 (11 → 5 %), GO BP 84 → 69 (46 → 21 %); planted groups F1
0.850 → 0.841, bulk-like 0.975 → 0.986. Fewer near copies and, on two sets, more GO BP sets, but a much smaller
enriched share everywhere and a large loss on PBMC3k: not adopted.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: readable.py and _common.py

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import readable as R  # noqa: E402

import genodae  # noqa: E402
import genodae.rotation as ROT  # noqa: E402
from genodae import enrich  # noqa: E402
from genodae import signatures as S  # noqa: E402

PLAIN = ROT.sparse_rotation


def sparse_normalised(A, *, seed=0, threshold=2.0):
    """tl.rotate's sparse rotation learnt on A's columns scaled to unit norm, mapped back to unit-length atoms."""
    A = np.asarray(A, np.float64)
    n = np.linalg.norm(A, axis=0)
    s = np.where(n > 0, n, 1.0)
    T = PLAIN(A / s, seed=seed, threshold=threshold) / s[:, None]
    norms = np.linalg.norm(T, axis=0)
    T = T / np.where(norms > 0, norms, 1.0)
    return ROT._signed_by_variance(A[np.any(A != 0, axis=1)], T)


def weights(a, fn) -> pd.DataFrame:
    ROT.sparse_rotation = fn  # rotate_loadings looks it up at call time
    try:
        b = a.copy()
        genodae.tl.rotate(b, method="sparse")
    finally:
        ROT.sparse_rotation = PLAIN
    used = S.genes_used(b, "dae")
    return pd.DataFrame(b.varm["dae_sparse_weights"][used], index=b.var_names[used])


def main(which: str, seed: int) -> None:
    planted = which in R.GENERATORS
    raw = R.make(which) if planted else R.read_set(which)
    prep = genodae.pp.prepare(raw, copy=True)
    genodae.tl.dae(prep, seed=seed, n_latent=min(32, prep.n_obs // 2), num_threads=1)
    for name, fn in (("sparse", PLAIN), ("sparse col-normalised", sparse_normalised)):
        W = weights(prep, fn)
        twins = R.twin_scores(W)
        if planted:
            modules = {k: list(v) for k, v in raw.uns["synthetic"]["modules"].items()}
            print(which, seed, name, {k: round(v, 3) for k, v in R.score(W, modules).items()},
                  "twins07", round(twins["twin_07"], 2), flush=True)
            continue
        for gs, path in R.GENE_SETS.items():
            c = R.coverage(W, enrich.read_gmt(R.SHARED / path), W.index)
            print(which, seed, name, gs, c["covered"], round(c["enriched_share"], 3), "pos", c["covered_pos"],
                  round(c["enriched_share_pos"], 3), "twins07/09", round(twins["twin_07"], 2),
                  round(twins["twin_09"], 2), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
