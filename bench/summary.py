#!/usr/bin/env python
"""One page from the committed benchmark JSONs: bench/results/SUMMARY.md.

Reads what the individual scripts wrote (baselines, denoise, mcv, speed, throughput_cpu[_backed], loader,
workflow_time, quality, gpu, and integration.tsv); a missing file is named as missing, never filled in. Run by ``bench/run_cpu.sh`` at the end,
or alone: ``python bench/summary.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common as C

HERE = C.HERE


def load(results: Path, name: str) -> dict | None:
    f = results / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else None


def pm(r: dict, m: str, nd: int = 3) -> str:
    return C.pm(r, m, nd, blank="–")


def when(d: dict) -> str:
    m = d.get("machine", {})
    return f"{d.get('date', '?')}, {m.get('cpu', '?')}, {m.get('cores', '?')} cores"


def embeddings(d: dict) -> list[str]:
    rows = d["summary"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    by = {(r["dataset"], r["method"]): r for r in rows}
    out = [f"## Embedding quality ([`baselines.md`](baselines.md); `{d['command']}`; {when(d)})", "",
           "Mean ± sd over seeds " + ", ".join(map(str, d["seeds"])) + ". 15-NN accuracy / Leiden ARI at resolution "
           "1.0 / ARI* at the best-NMI resolution (scib). Best mean per dataset in **bold**.", ""]
    for metric, label in (("knn_acc", "15-NN accuracy"), ("ari", "ARI (resolution 1.0)"),
                          ("ari_opt", "ARI* (best-NMI resolution)")):
        out += [f"### {label}", "", "| dataset | " + " | ".join(methods) + " |",
                "|---|" + "---|" * len(methods)]
        for ds in datasets:
            vals = [by.get((ds, m), {}).get(f"{metric}_mean") for m in methods]
            best = max((v for v in vals if v is not None), default=None)
            cells = []
            for m, v in zip(methods, vals, strict=True):
                c = pm(by[(ds, m)], metric) if (ds, m) in by else "–"
                cells.append(f"**{c}**" if v is not None and best is not None and abs(v - best) < 1e-12 else c)
            out.append(f"| {ds} | " + " | ".join(cells) + " |")
        for scope, keep in (("mean, single-cell sets", lambda ds: ds != "tcga_brca"), ("mean, all sets", None)):
            means = []
            for m in methods:
                vs = [by[(ds, m)][f"{metric}_mean"] for ds in datasets
                      if (keep is None or keep(ds)) and (ds, m) in by and f"{metric}_mean" in by[(ds, m)]]
                complete = len(vs) == sum(1 for ds in datasets if keep is None or keep(ds))
                means.append(f"{sum(vs) / len(vs):.3f}" if vs and complete else "–")
            out.append(f"| *{scope}* | " + " | ".join(means) + " |")
        out.append("")
    return out


def denoising(d: dict) -> list[str]:
    rows = d["summary"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = [f"## Denoising ([`denoise.md`](denoise.md); `{d['command']}`; {when(d)})", "",
           f"{d['fraction']:.0%} of the non-zero counts hidden; per-gene Pearson r at the hidden entries (r_within: "
           "does the method know which cells express the gene more?) / MSE on the log scale.", "",
           "| dataset | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    by = {(r["dataset"], r["method"]): r for r in rows}
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        cells = []
        for m in methods:
            r = by.get((ds, m))
            cells.append("–" if r is None else f"{pm(r, 'r_within')} / {pm(r, 'mse', 2)}")
        out.append(f"| {ds} | " + " | ".join(cells) + " |")
    return out + [""]


def mcv(d: dict) -> list[str]:
    """Molecular cross-validation: Poisson NLL of held-out molecules, datasets × methods (and the known-truth check)."""
    real = [r for r in d["summary"] if r.get("kind", "real") == "real"]
    methods = list(dict.fromkeys(r["method"] for r in real))
    datasets = list(dict.fromkeys(r["dataset"] for r in real))
    by = {(r["dataset"], r["method"]): r for r in real}
    out = [f"## Molecular cross-validation ([`mcv.md`](mcv.md); `{d['command']}`; {when(d)})", "",
           "Counts split 90/10 by binomial thinning; each method denoises the 90 % (2,000 HVGs) and is scored by the "
           "Poisson NLL per entry of the held-out 10 % (lower is better; log-scale MSE and seconds in mcv.md). Mean "
           "over seeds " + ", ".join(map(str, d["seeds"])) + "; best per dataset in **bold**.", "",
           "| dataset | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for ds in datasets:
        vals = [by.get((ds, m), {}).get("nll_mean") for m in methods]
        ok = [v for v in vals if v is not None and v == v]
        best = min(ok, default=None)
        cells = ["–" if v is None or v != v else (f"**{v:.4f}**" if abs(v - best) < 5e-5 else f"{v:.4f}")
                 for v in vals]
        out.append(f"| {ds} | " + " | ".join(cells) + " |")
    sim = sorted((r for r in d["summary"] if r.get("kind") == "known_truth"), key=lambda r: r["nll_mean"])
    if sim:
        by_mse = sorted(sim, key=lambda r: r["mse_mean"])
        out += ["", "Known truth (simulated from pbmc4k's cluster proportions): ranking by NLL "
                + " < ".join(f"`{r['method']}`" for r in sim) + "; by log MSE "
                + " < ".join(f"`{r['method']}`" for r in by_mse) + "."]
    return out + [""]


def speed(d: dict) -> list[str]:
    s = d["summary"]
    return [f"## genodae vs scVI speed ([`speed.md`](speed.md); `{d['command']}`; {when(d)})", "",
            f"{d['dataset']}, {d['epochs']} epochs, batch {d['batch_size']}, {d['threads']} torch thread, same "
            f"data, alternating runs: genodae {s['genodae']['cells_per_s']:,.0f} cells/s, scVI "
            f"{s['scvi']['cells_per_s']:,.0f} cells/s: **{s['ratio_cells_per_s']:.2f}×**; peak RSS "
            f"{s['genodae']['peak_rss_mb']:.0f} vs {s['scvi']['peak_rss_mb']:.0f} MB.", ""]


def throughput(ds: list[dict]) -> list[str]:
    out = ["## Scaling on generated sparse data (CPU)", "",
           "| input | cells | hidden | batch | epochs | cells/s per epoch | peak RSS (GB) | CSR (GB) |",
           "|---|---:|---|---:|---:|---:|---:|---:|"]
    for d in ds:
        for r in d.get("results", []):
            out.append(f"| {r['input']} | {r['cells']:,} | {r.get('hidden')} | {r['batch_size']} | {r['epochs']} | "
                       f"{r['cells_per_s_per_epoch']:,.0f} | {r['peak_rss_bytes'] / 1e9:.2f} | "
                       f"{r['csr_bytes'] / 1e9:.2f} |")
    out.append("")
    out += [f"`{d.get('command', '?')}` ({when(d)})" + ("  " if i < len(ds) - 1 else "") for i, d in enumerate(ds)]
    return out + [""]


def loader(d: dict) -> list[str]:
    """bench/loader.py: loader-only cells/s (dense float32 batches, no model) per method and page-cache state."""
    out = [f"## Loading alone ([`loader.md`](loader.md); {when(d)})", "",
           "| method | page cache | cells/s | peak RSS (GB) |", "|---|---|---:|---:|"]
    for r in d.get("results", []):
        out.append(f"| {r['method']} | {r['cache']} | {r['median_cells_per_s']:,.0f} | "
                   f"{r['peak_rss_bytes'] / 1e9:.2f} |")
    conv = d.get("data", {}).get("conversion")
    if conv:
        out += ["", f"annbatch's zarr conversion of the {d['data']['cells']:,}-cell file: {conv['seconds']:.0f} s, "
                    f"peak RSS {conv['peak_rss_bytes'] / 1e9:.1f} GB."]
    return out + [""]


def tuning(d: dict) -> list[str]:
    """Means over the core datasets of bench/quality.py: the defaults before and after tuning, vs PCA."""
    core = [r for r in d["summary"] if not r["dataset"].endswith(("_thin20",))]
    out = [f"## Defaults before and after tuning ([`quality.md`](quality.md); `{d['command']}`; {when(d)})", "",
           "Mean over " + ", ".join(sorted({r['dataset'] for r in core})) + " of the per-dataset means (seeds "
           + ", ".join(map(str, d["seeds"])) + ").", "",
           "| method | 15-NN acc | ARI | ARI* |", "|---|---|---|---|"]
    for m in dict.fromkeys(r["method"] for r in core):
        rs = [r for r in core if r["method"] == m]
        vals = [sum(r.get(f"{k}_mean", float("nan")) for r in rs) / len(rs) for k in ("knn_acc", "ari", "ari_opt")]
        out.append(f"| {m} | " + " | ".join("–" if v != v else f"{v:.3f}" for v in vals) + " |")
    return out + [""]


def integration(results: Path) -> list[str] | None:
    """Means over seeds of bench/integration.py's scib totals (integration.tsv: a '# {json}' line, then rows)."""
    import csv

    f = results / "integration.tsv"
    if not f.exists():
        return None
    lines = f.read_text().splitlines()
    meta = json.loads(lines[0][2:]) if lines and lines[0].startswith("# ") else {}
    rows = list(csv.DictReader([ln for ln in lines if not ln.startswith("#")], delimiter="\t"))
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))

    def mean(ds: str, m: str, k: str) -> str:
        v = [float(r[k]) for r in rows if r["dataset"] == ds and r["method"] == m and r.get(k) not in (None, "")]
        return f"{sum(v) / len(v):.3f}" if v else "–"

    m = meta.get("machine", {})
    out = [f"## Integration of batches ([`integration.md`](integration.md); scib-metrics total = 0.6 bio + 0.4 batch, "
           f"mean over seeds; {meta.get('date', '?')}, {m.get('cpu', '?') if isinstance(m, dict) else m})", "",
           "| set | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    out += [f"| {ds} | " + " | ".join(mean(ds, mt, "total") for mt in methods) + " |" for ds in sets]
    return out + [""]


def workflow(d: dict) -> list[str]:
    return [f"## Workflow on the built-in example ([`workflow_time.md`](workflow_time.md); {when(d)})", "",
            f"`snakemake --cores {d['cores']}` in a fresh copy: **{d['wall_seconds']:.0f} s** for "
            f"{d['jobs_finished']} jobs (load average {d.get('load_start')} at the start).", ""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=HERE / "results")
    a = p.parse_args(argv)
    lines = ["# Benchmark summary", "",
             "Generated by `python bench/summary.py` from the JSON files in this folder; each section names the "
             "command, date and machine of its own run. Regenerate everything with `make bench` "
             "(= `bash bench/run_cpu.sh`).", ""]
    missing = []
    base, presets = load(a.results, "baselines"), load(a.results, "baselines_presets")
    if base is None:
        missing.append("baselines.json")
    else:
        if presets is not None:  # genodae's other presets, run separately (slower): same metrics, same seeds
            base = {**base, "summary": base["summary"] + presets["summary"],
                    "command": f"{base['command']}` + `{presets['command']}"}
        lines += embeddings(base)
    for name, fn in (("quality", tuning), ("denoise", denoising), ("mcv", mcv), ("speed", speed),
                     ("workflow_time", workflow)):
        d = load(a.results, name)
        if d is None:
            missing.append(f"{name}.json")
        else:
            lines += fn(d)
    integ = integration(a.results)
    if integ is None:
        missing.append("integration.tsv")
    else:
        lines += integ
    tps = [d for d in (load(a.results, "throughput_cpu"), load(a.results, "throughput_cpu_backed")) if d]
    if tps:
        lines += throughput(tps)
    else:
        missing.append("throughput_cpu.json")
    ld = load(a.results, "loader")
    if ld is None:
        missing.append("loader.json")
    else:
        lines += loader(ld)
    gpu = load(a.results, "gpu")
    lines += ["## GPU", "", "See [`gpu.json`](gpu.json)." if gpu else
              "Not run: no GPU has been lent to this project's sessions so far (`bench/gpu.sh` is ready).", ""]
    if missing:
        lines += ["Missing (not run yet): " + ", ".join(missing), ""]
    (a.results / "SUMMARY.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
