"""Peak resident memory of every CLI step, each in a fresh process, on generated counts.

    python bench/memory.py --label after --cells 10000 100000 300000               # this tree
    git archive b8dbff8 genodae | tar -x -C /tmp/genodae_before                     # the code before, to compare
    python bench/memory.py --label before --src /tmp/genodae_before --git b8dbff8 --cells 300000
    python bench/memory.py --label limited --cells 1000000 --backed --limit-gib 1.5 # larger than the memory given

Data: ``--cells`` × ``--genes`` generated counts (10 % non-zeros per row, float32 CSR, seed 0), written once per size
to ``--workdir`` (under /tmp, never the repository) and reused. Each step is one fresh ``python -m genodae STEP``
process and its peak RSS is the kernel's ``ru_maxrss`` of that process (``os.wait4``): ``prepare``, ``train``
(``--epochs``, one torch thread), ``embed`` (the prepared file through the model), ``export`` (the three TSVs),
``signatures``, and ``run`` (prepare → train → embed → export in one process). ``baseline`` is
``python -c "import genodae, torch, anndata, scanpy"``: what the interpreter and imports cost before any data.
A child's ``ru_maxrss`` includes what it inherited at fork time, so this script stays small: it imports no numpy
and generates the data in a subprocess.

``--backed``: ``prepare --backed`` and ``train --backed`` (the larger-than-RAM route); ``--limit-gib``: every step
in a cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, root only; removed afterwards) with that memory
limit, page cache included, so a step that needs more is killed (reported as such).

Results are appended to ``--out`` (JSON, one record per step and size, keyed by label) and the markdown table is
rewritten from all records (``--md``) with the machine, versions, thread count and the load average per step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # standard library only at import: this process stays small

CG_NAME = "genodae-bench-mem"
STEPS = ("baseline", "prepare", "train", "embed", "export", "signatures", "run")
MiB = 2**20


def counts_file(path: Path, cells: int, genes: int, density: float = 0.1, seed: int = 0) -> int:
    """Write generated counts (``_common.generated_counts``: float32 CSR, ``density`` non-zeros per row) as .h5ad;
    return the CSR's bytes."""
    X = C.generated_counts(cells, genes, density, seed)
    a = C.as_anndata(X)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.h5ad")
    a.write_h5ad(tmp)
    tmp.rename(path)
    return csr_bytes(X)


def csr_bytes(X) -> int:
    return int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)


class MemoryLimit(C.Cgroup):
    """A cgroup with a memory limit (v2 ``memory.max``, else v1 ``memory.limit_in_bytes``, without swap), created
    below this process's own cgroup; ``join`` (in the child, before exec) moves a process into it."""

    def __init__(self, limit: int):
        v2 = Path("/sys/fs/cgroup")
        if (v2 / "cgroup.controllers").exists():
            base = v2 / C.own_cgroup("")
            if "memory" not in (base / "cgroup.subtree_control").read_text().split():
                (base / "cgroup.subtree_control").write_text("+memory")
            self.dir = base / CG_NAME
            self.dir.mkdir(exist_ok=True)
            (self.dir / "memory.max").write_text(str(limit))
            (self.dir / "memory.swap.max").write_text("0") if (self.dir / "memory.swap.max").exists() else None
            self.kind, self.peak_file = "cgroup v2 memory.max", "memory.peak"
        else:
            self.dir = Path("/sys/fs/cgroup/memory") / C.own_cgroup("memory").lstrip("/") / CG_NAME
            self.dir.mkdir(exist_ok=True)
            (self.dir / "memory.limit_in_bytes").write_text(str(limit))
            self.kind, self.peak_file = "cgroup v1 memory.limit_in_bytes", "memory.max_usage_in_bytes"

    def reset_peak(self) -> None:
        if self.peak_file == "memory.max_usage_in_bytes":
            (self.dir / self.peak_file).write_text("0")

    def peak(self) -> int | None:
        f = self.dir / self.peak_file
        return int(f.read_text()) if f.exists() else None


def measure(cmd: list[str], env: dict, limit: MemoryLimit | None, log: Path, timeout: float) -> dict:
    """Run ``cmd`` in a fresh process; its peak RSS (ru_maxrss), wall time and exit status."""
    if limit is not None:
        limit.reset_peak()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd="/tmp",
                             preexec_fn=limit.join if limit else None)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                status = -9
                break
            time.sleep(0.2)
    p.returncode = os.waitstatus_to_exitcode(status) if status != -9 else -9
    rec = {"peak_rss_mib": ru.ru_maxrss / 1024, "seconds": time.perf_counter() - t0, "rc": p.returncode}
    if limit is not None:
        rec["cgroup_peak_mib"] = (limit.peak() or 0) / MiB
    return rec


def versions(env: dict) -> str:
    code = ("import genodae, torch, anndata, scanpy, numpy, scipy, h5py, sys; print(f'genodae {genodae.__version__}, "
            "torch {torch.__version__}, anndata {anndata.__version__}, scanpy {scanpy.__version__}, numpy "
            "{numpy.__version__}, scipy {scipy.__version__}, h5py {h5py.__version__}, Python {sys.version.split()[0]}')")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()


def steps(a, data: Path, work: Path) -> dict[str, list[str]]:
    g = [sys.executable, "-m", "genodae", "-q"]
    prep, model, emb = work / "prepared.h5ad", work / "model", work / "embedded.h5ad"
    threads = ["--num-threads", str(a.threads)]
    backed = ["--backed"] if a.backed else []
    return {
        "baseline": [sys.executable, "-c", "import genodae, torch, anndata, scanpy"],
        "prepare": [*g, "prepare", str(data), "-o", str(prep), *backed],
        "train": [*g, "train", str(prep), "-o", str(model), "--epochs", str(a.epochs), "--device", "cpu",
                  "--num-threads", str(a.threads), *backed],
        "embed": [*g, "embed", str(prep), str(model), "-o", str(emb), "--device", "cpu", *threads],
        "export": [*g, "export", str(emb), "--embedding", str(work / "embedding.tsv"), "--weights",
                   str(work / "weights.tsv"), "--genes", str(work / "genes.tsv")],
        "signatures": [*g, "signatures", str(emb), "-o", str(work / "signatures.tsv")],
        "run": [*g, "run", str(data), "-o", str(work / "run"), "--epochs", str(a.epochs), "--device", "cpu",
                "--num-threads", str(a.threads)],
    }


def write_md(records: list[dict], path: Path) -> None:
    lines = [
        "# Peak memory per step",
        "",
        "Generated by `bench/memory.py` (see its docstring). Each row is one fresh `python -m genodae STEP` process; "
        "peak RSS is its `ru_maxrss`. `baseline` = `python -c 'import genodae, torch, anndata, scanpy'`. "
        "`over baseline` = peak − baseline of the same label and size; `÷ CSR` = that over the input CSR's bytes "
        "(the issue's target: ≤ 2). Load: the 1-minute load average before the step (other jobs share the "
        "machine). Data: generated counts, 2,000 genes, 10 % non-zeros per row, float32 CSR.",
        "",
    ]
    metas = {}
    for r in records:
        metas.setdefault((r["label"], r["git"]), r["meta"])
    for (label, git), meta in metas.items():
        lines.append(f"- **{label}** ({git}): {meta['machine']}; {meta['versions']}; {meta['threads']} torch "
                     f"thread(s), OMP_NUM_THREADS=1; {meta['epochs']} epoch(s); {meta['options']}")
    lines += ["", "| label | cells | CSR (MiB) | file (MiB) | step | peak RSS (MiB) | over baseline (MiB) | ÷ CSR | "
              "seconds | load | result |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    base = {(r["label"], r["cells"]): r["peak_rss_mib"] for r in records if r["step"] == "baseline"}
    for r in records:
        b = base.get((r["label"], r["cells"]))
        over = r["peak_rss_mib"] - b if b is not None and r["step"] != "baseline" else None
        ratio = f"{over / r['csr_mib']:.2f}" if over is not None else ""
        res = "ok" if r["rc"] == 0 else ("killed (memory limit)" if r["rc"] in (-9, 137) else f"exit {r['rc']}")
        if "cgroup_peak_mib" in r:
            res += f"; cgroup peak {r['cgroup_peak_mib']:,.0f} MiB (page cache included) of {r['limit_mib']:,.0f}"
        lines.append(f"| {r['label']} | {r['cells']:,} | {r['csr_mib']:,.0f} | {r['file_mib']:,.0f} | {r['step']} | "
                     f"{r['peak_rss_mib']:,.0f} | {'' if over is None else f'{over:,.0f}'} | {ratio} | "
                     f"{r['seconds']:,.0f} | {r['load']:.2f} | {res} |")
    C.write_keeping_notes(path, "\n".join(lines) + "\n")  # hand-written notes below the table are kept


def main() -> None:
    p = C.parser(__doc__, full=True)
    C.add_source_tree(p)
    p.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    p.add_argument("--backed", action="store_true", help="prepare --backed and train --backed")
    p.add_argument("--limit-gib", type=float, default=None, help="run every step under this cgroup memory limit")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per step")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/genodae_mem"))
    p.add_argument("--keep", action="store_true", help="keep the step outputs (default: removed after each size)")
    p.add_argument("--out", type=Path, default=C.RESULTS / "memory.json")
    p.add_argument("--md", type=Path, default=C.RESULTS / "memory.md")
    p.add_argument("--generate", nargs=3, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.generate:
        path, cells, genes = Path(a.generate[0]), int(a.generate[1]), int(a.generate[2])
        nbytes = counts_file(path, cells, genes)
        path.with_suffix(".json").write_text(json.dumps({"csr_bytes": nbytes}))
        return
    env = {**os.environ, "PYTHONPATH": str(a.src.resolve()), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    git = C.measured_version(a, a.src.resolve())
    opts = ", ".join(x for x in ("prepare/train --backed" if a.backed else "in memory",
                                 f"memory limit {a.limit_gib:g} GiB" if a.limit_gib else "") if x)
    meta = {"machine": C.machine_line("GiB RAM, no swap"), "versions": versions(env), "threads": a.threads, "epochs": a.epochs, "options": opts}
    records = json.loads(a.out.read_text()) if a.out.exists() else []
    limit = MemoryLimit(int(a.limit_gib * 2**30)) if a.limit_gib else None
    if limit:
        meta["options"] += f" ({limit.kind})"
    try:
        for cells in a.cells:
            data = a.workdir / f"counts_{cells}x{a.genes}.h5ad"
            sizes = a.workdir / f"counts_{cells}x{a.genes}.json"
            if not data.exists() or not sizes.exists():
                print(f"generating {data}", flush=True)
                subprocess.run([sys.executable, __file__, "--generate", str(data), str(cells), str(a.genes)], check=True)
            csr = json.loads(sizes.read_text())["csr_bytes"]
            work = a.workdir / f"{a.label}_{cells}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            cmds = steps(a, data, work)
            for step in a.steps:
                ld = os.getloadavg()[0]
                rec = measure(cmds[step], env, limit if step != "baseline" else None, work / f"{step}.log", a.timeout)
                rec.update(label=a.label, git=git, cells=cells, genes=a.genes, step=step, load=ld,
                           csr_mib=csr / MiB, file_mib=data.stat().st_size / MiB, meta=meta,
                           command=" ".join(map(str, cmds[step][1:])).replace(sys.executable, "python"),
                           time=C.utc_now())
                if step == "prepare" and (work / "prepared.h5ad").exists():
                    rec["prepared_mib"] = (work / "prepared.h5ad").stat().st_size / MiB
                if limit:
                    rec["limit_mib"] = a.limit_gib * 1024
                if rec["rc"]:
                    rec["log_tail"] = (work / f"{step}.log").read_text()[-1500:]
                records = [r for r in records if (r["label"], r["cells"], r["step"]) != (a.label, cells, step)]
                records.append(rec)
                print({k: v for k, v in rec.items() if k not in ("meta", "log_tail")}, flush=True)
                if rec["rc"]:
                    print(rec["log_tail"], flush=True)
                a.out.write_text(json.dumps(records, indent=1) + "\n")
                write_md(records, a.md)
            if not a.keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if limit:
            limit.remove()


if __name__ == "__main__":
    main()
