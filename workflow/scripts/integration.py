"""How well the runs of one dataset mix its batches: one row per run of results/{dataset}/integration.tsv.

Snakemake `script:` for rule integration (datasets with a batch_key). On each run's obsm["X_dae"]:

- knn_batch_accuracy: leave-one-out 15-NN vote predicting each cell's batch (lower = better mixed; compare
  with batch_chance = the largest batch's share, what a perfectly mixed embedding scores).
- knn_label_accuracy: the same vote predicting the label column, when one is configured (higher = the
  biology kept; label_chance = the largest label's share). Cells without a label are left out.
- silhouette_batch: scib's batch silhouette (Luecken et al. 2022): within each label, every cell's
  silhouette width with the batches as clusters, 1 - |s| averaged per label, then over the labels (labels
  with a single batch are skipped); 1 = batches mixed, 0 = separated. Without a label column all cells form
  one group. scib_metrics.silhouette_batch when scib-metrics is installed, else the same definition with
  scikit-learn's silhouette_samples (column silhouette_method says which).

Needs numpy, pandas, anndata and scikit-learn (genodae's own dependencies); also runs by hand:
python workflow/scripts/integration.py OUT.tsv BATCH_KEY LABEL_KEY|- run=embedded.h5ad ...
"""

import csv
import os
import sys

import numpy as np
import pandas as pd

K = 15  # neighbours of the kNN votes (as in the bench's 15-NN accuracy)
MAX_SILHOUETTE_CELLS = 50_000  # silhouette is quadratic in the cells: a seeded random subset beyond this


def knn_accuracy(x: np.ndarray, y: np.ndarray, k: int = K) -> float:
    """Leave-one-out k-NN majority vote accuracy of the categories `y` (codes 0..m-1) on the rows of `x`."""
    from sklearn.neighbors import NearestNeighbors

    n = len(y)
    k = min(k, n - 1)
    if k < 1:
        return float("nan")
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    # drop each cell itself (not always the first neighbour when cells coincide)
    own = idx == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    neighbours = idx[keep].reshape(n, k)
    votes = np.zeros((n, int(y.max()) + 1))
    np.add.at(votes, (np.repeat(np.arange(n), k), y[neighbours].ravel()), 1)
    return float(np.mean(votes.argmax(axis=1) == y))


def silhouette_batch(x: np.ndarray, labels: np.ndarray, batch: np.ndarray) -> tuple[float, str]:
    """scib's batch silhouette (rescaled: 1 = mixed) and the implementation used."""
    try:
        import scib_metrics

        return float(scib_metrics.silhouette_batch(x, labels, batch, rescale=True)), "scib_metrics"
    except ImportError:
        pass
    from sklearn.metrics import silhouette_samples

    per_label = []
    for label in np.unique(labels):
        mask = labels == label
        n_batches = len(np.unique(batch[mask]))
        if n_batches < 2 or n_batches >= mask.sum():  # silhouette undefined
            continue
        s = silhouette_samples(x[mask], batch[mask])
        per_label.append(np.mean(1 - np.abs(s)))
    return (float(np.mean(per_label)) if per_label else float("nan")), "sklearn (scib definition)"


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, mask of cells with a value) of a column as categories."""
    cat = pd.Categorical(values.astype("object").where(values.notna(), None))
    return cat.codes.astype(int), cat.codes >= 0


def score(path: str, batch_key: str, label_key: str | None, seed: int = 0) -> dict:
    import anndata

    adata = anndata.read_h5ad(path, backed="r")
    try:
        x = np.asarray(adata.obsm["X_dae"], dtype=np.float64)
        obs = adata.obs.copy()
    finally:
        adata.file.close()
    for key in (batch_key, label_key):
        if key and key not in obs.columns:
            raise SystemExit(f"{path}: obs has no column {key!r} (columns: {', '.join(map(str, obs.columns))})")
    batch, has_batch = _codes(obs[batch_key])
    x, batch, obs = x[has_batch], batch[has_batch], obs[has_batch]
    row = dict(n_cells=len(batch), n_batches=len(np.unique(batch)),
               batch_chance=np.bincount(batch).max() / len(batch),
               knn_batch_accuracy=knn_accuracy(x, batch), label_key=label_key or "",
               label_chance=float("nan"), knn_label_accuracy=float("nan"))
    if label_key:
        label, has_label = _codes(obs[label_key])
        if has_label.sum() > 1:
            row.update(label_chance=np.bincount(label[has_label]).max() / has_label.sum(),
                       knn_label_accuracy=knn_accuracy(x[has_label], label[has_label]))
        x, batch = x[has_label], batch[has_label]
        groups = label[has_label]
    else:
        groups = np.zeros(len(batch), dtype=int)
    if len(batch) > MAX_SILHOUETTE_CELLS:
        pick = np.sort(np.random.default_rng(seed).choice(len(batch), MAX_SILHOUETTE_CELLS, replace=False))
        x, batch, groups = x[pick], batch[pick], groups[pick]
    sil, method = silhouette_batch(x, groups, batch)
    row.update(silhouette_batch=sil, silhouette_method=method,
               silhouette_groups="per label" if label_key else "all cells as one group",
               silhouette_cells=len(batch))
    return row


COLUMNS = ["dataset", "run", "n_cells", "n_batches", "batch_key", "knn_batch_accuracy", "batch_chance",
           "label_key", "knn_label_accuracy", "label_chance", "silhouette_batch", "silhouette_method",
           "silhouette_groups", "silhouette_cells"]


def main(inputs, output, runs, dataset, batch_key, label_key):
    rows = []
    for run, path in zip(runs, inputs, strict=True):
        row = dict(dataset=dataset, run=run, batch_key=batch_key, **score(path, batch_key, label_key))
        rows.append({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
        print(f"{run}: {row}", file=sys.stderr)
    tmp = f"{output}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, output)


if "snakemake" in globals():
    sm = snakemake  # noqa: F821 - injected by Snakemake
    with open(sm.log[0], "w") as log:
        sys.stderr = log
        main(list(sm.input), sm.output[0], sm.params.runs, sm.wildcards.dataset, sm.params.batch_key,
             sm.params.label_key)
elif __name__ == "__main__":
    out, key, label, *pairs = sys.argv[1:]
    runs, paths = zip(*(p.split("=", 1) for p in pairs), strict=True)
    main(list(paths), out, list(runs), "-", key, None if label == "-" else label)
