"""Probe (issue 16): which node basis should the ``signatures`` preset report in ``X_dae``? Its sparse nodes (the
preset's ``rotation="sparse"`` until 2026-12-07) or the distance-keeping varimax basis of the same network (the
library default since 2026-12-07)? tl.signatures/tl.ensemble read the sparse nodes either way, so only the
embedding differs.

Data: the three CellBench CEL-seq2 plates (bench/integration.py's ``celseq2_3plates``: 5 cell lines, plate =
batch, a real batch effect; no batch correction here). Per seed, one preset model; its embedding in the sparse
basis, in the varimax basis of the same network (genodae.rotation.readable_basis over the same cells), and as
trained; plus the default model's ``X_dae``. Scores: the parts of scib-metrics' bio conservation that moved
between the bases for the default model (bench/results/integration_genodae*_2026-12-07.md), computed with
scikit-learn: KMeans ARI/NMI against the cell lines (k = 5, 10 starts, as scib's KMeans scores), the label
silhouette rescaled to (s + 1) / 2 (scib's ``silhouette_label``), and leave-one-out 15-NN label accuracy.

    python bench/probes/preset_basis.py --seeds 3     # ~3 min here, 1 thread
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: integration.py and _common.py

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

import genodae  # noqa: E402
from genodae.rotation import readable_basis  # noqa: E402
from genodae.train import embed, input_correlations  # noqa: E402


def scores(Z: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    k = len(np.unique(labels))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(Z)
    idx = NearestNeighbors(n_neighbors=16).fit(Z).kneighbors(Z, return_distance=False)[:, 1:]
    votes = pd.DataFrame(labels[idx]).mode(axis=1)[0].to_numpy()
    return {"kmeans_ari": adjusted_rand_score(labels, km), "kmeans_nmi": normalized_mutual_info_score(labels, km),
            "silhouette_label": (silhouette_score(Z, labels) + 1) / 2, "knn15_acc": float((votes == labels).mean())}


def main() -> None:
    import _common as C
    import integration as I

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data-dir", default=str(C.shared_data_dir()), help="shared data (env GENODAE_SHARED_DATA)")
    args = p.parse_args()
    raw = I.load("celseq2_3plates", Path(args.data_dir))
    if raw is None:
        sys.exit(f"the CEL-seq2 plates are not in {args.data_dir}: pass --data-dir")
    prep = genodae.pp.prepare(raw, copy=True)
    labels = prep.obs["label"].astype(str).to_numpy()
    rows = []
    for seed in range(args.seeds):
        model = genodae.DAE(preset="signatures", rotation="sparse", seed=seed, num_threads=1).fit(prep)
        source = model._input(prep, False)
        trained = embed(model.module, source)
        vb = readable_basis(trained, lambda mean, M, s=source, z=trained: input_correlations(s, z, mean, M), "varimax")
        default = genodae.DAE(seed=seed, num_threads=1).fit(prep)
        for basis, Z in (("signatures preset: sparse nodes (its X_dae until 2026-12-07)", model.embed(prep)),
                         ("signatures preset: varimax basis of the same network", (trained - vb["mean"]) @ vb["transform"]),
                         ("signatures preset: as trained (rotation none)", trained),
                         ("default model: X_dae (varimax basis)", default.embed(prep))):
            rows.append({"seed": seed, "basis": basis, **scores(np.asarray(Z, np.float64), labels, seed)})
            print(rows[-1], flush=True)
    t = pd.DataFrame(rows).groupby("basis", sort=False).mean(numeric_only=True).drop(columns="seed")
    out = Path(__file__).resolve().parents[1] / "results" / "readable_probe_preset_basis.tsv"
    t.reset_index().to_csv(out, sep="\t", index=False, float_format="%.4f")
    print(t.round(3).to_string())
    print(out)


if __name__ == "__main__":
    main()
