"""Gather the runs of one dataset into a table: run folder, swept settings, epochs and losses.

Snakemake `script:` for rule gather_runs. Reads only the model.json of each run (plain JSON), so it needs
nothing beyond the standard library.
"""

import csv
import json
import math
import os
import sys
from pathlib import Path


def _history(meta: dict) -> dict:
    """The loss history in model.json, wherever the writer put it."""
    for key in ("history", "loss_history"):
        if isinstance(meta.get(key), dict):
            return meta[key]
    for sub in ("training", "train", "fit"):
        if isinstance(meta.get(sub), dict) and isinstance(meta[sub].get("history"), dict):
            return meta[sub]["history"]
    return {}


def _settings(meta: dict) -> dict:
    for key in ("settings", "config", "params"):
        if isinstance(meta.get(key), dict):
            return meta[key]
    return {}


def _last(values):
    values = [v for v in (values or []) if v is not None]
    return values[-1] if values else math.nan


def _best(values):
    values = [v for v in (values or []) if v is not None and not math.isnan(v)]
    return min(values) if values else math.nan


def main(inputs, output, runs, swept, dataset):
    named = [k for k in swept if k not in ("n_latent", "seed")]
    columns = ["dataset", "run", "n_latent", "seed", *named]
    columns += ["epochs_run", "stopped_early", "best_epoch", "final_train_loss", "final_val_loss",
                "best_val_loss", "seconds", "device", "model_dir"]
    rows = []
    for run, meta_path in zip(runs, inputs, strict=True):
        meta = json.loads(Path(meta_path).read_text())
        settings, history = _settings(meta), _history(meta)
        train, val = history.get("train_loss", []), history.get("val_loss", [])
        row = {"dataset": dataset, "run": run, "model_dir": str(Path(meta_path).parent)}
        for key in ("n_latent", "seed", *named):
            value = settings.get(key, "")
            row[key] = ",".join(map(str, value)) if isinstance(value, list) else value
        row.update(
            epochs_run=history.get("epochs_run", len(train)),
            stopped_early=history.get("stopped_early", ""),
            best_epoch=history.get("best_epoch", ""),
            final_train_loss=_last(train),
            final_val_loss=_last(val),
            best_val_loss=history.get("best_loss", _best(val)),
            seconds=history.get("seconds", ""),
            device=history.get("device", settings.get("device", "")),
        )
        rows.append(row)
    tmp = f"{output}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, output)
    print(f"wrote {len(rows)} runs to {output}", file=sys.stderr)


if "snakemake" in globals():
    sm = snakemake  # noqa: F821 - injected by Snakemake
    with open(sm.log[0], "w") as log:
        sys.stderr = log
        main(list(sm.input), sm.output[0], sm.params.runs, sm.params.swept, sm.wildcards.dataset)
