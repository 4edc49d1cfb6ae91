"""Training throughput with default threads vs one thread, under a CPU quota and side by side.

    sudo .venv/bin/python bench/threads.py --label after            # this tree
    git archive f1204f3 genodae | tar -x -C /tmp/genodae_before      # the code before, to compare with
    sudo .venv/bin/python bench/threads.py --label before --src /tmp/genodae_before --git f1204f3

Data: generated counts (``--cells`` × ``--genes``, 10 % non-zeros), prepared once with ``genodae.pp.prepare``
defaults and reused. Each measurement is a fresh process training ``genodae.DAE(epochs=E, patience=0,
device="cpu")`` with library defaults (``num_threads`` 0) or ``num_threads=1``; throughput is training cells × epochs
over the training loop's seconds (``History.seconds``). Scenarios:

- ``quota``: the process alone in a cgroup with a CPU quota of ``--quota`` CPUs (cgroup v2 ``cpu.max`` when the
  cpu controller is on the v2 hierarchy, else v1 ``cpu.cfs_quota_us``; needs root; removed afterwards);
- ``side``: two trainings started together on the whole machine; their summed throughput.

Results are appended to ``--out`` (JSON, one record per run, keyed by label) and the markdown table is rewritten
from all records (``--md``), with the machine and the load average before each scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CG_NAME = "genodae-bench"


def write_prepared(path: Path, cells: int, genes: int, seed: int = 0) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    import genodae

    rng = np.random.default_rng(seed)
    k = genes // 10
    indices = np.sort(np.argpartition(rng.random((cells, genes), dtype=np.float32), k, axis=1)[:, :k], axis=1)
    mu = rng.gamma(0.6, 3.0, size=genes)
    data = rng.poisson(mu[indices] * rng.gamma(2.0, 0.5, size=(cells, 1))) + 1
    X = sp.csr_matrix((data.ravel().astype(np.float32), indices.ravel().astype(np.int32),
                       np.arange(0, cells * k + 1, k)), shape=(cells, genes))
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(cells)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(genes)]))
    genodae.pp.prepare(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    a.write_h5ad(path)


def worker(path: str, epochs: int, threads: int) -> None:
    """One training run; prints a JSON line."""
    import anndata as ad
    import torch

    import genodae

    a = ad.read_h5ad(path)
    m = genodae.DAE(epochs=epochs, patience=0, device="cpu", num_threads=threads, seed=0).fit(a)
    h = m.history
    n_train = a.n_obs - len(m.val_idx)
    print(json.dumps({"cells_per_s": n_train * h.epochs_run / h.seconds, "seconds": h.seconds,
                      "torch_threads": torch.get_num_threads(), "genodae_file": genodae.__file__}), flush=True)


class Quota:
    """A cgroup with a CPU quota; ``join(pid)`` moves a process into it."""

    def __init__(self, cpus: float):
        v2 = Path("/sys/fs/cgroup")
        if (v2 / "cgroup.controllers").exists():
            if "cpu" not in (v2 / "cgroup.subtree_control").read_text().split():
                (v2 / "cgroup.subtree_control").write_text("+cpu")
            self.dir = v2 / CG_NAME
            self.dir.mkdir(exist_ok=True)
            (self.dir / "cpu.max").write_text(f"{int(cpus * 100_000)} 100000")
            self.kind = "cgroup v2 cpu.max"
        else:
            self.dir = Path("/sys/fs/cgroup/cpu") / CG_NAME
            self.dir.mkdir(exist_ok=True)
            (self.dir / "cpu.cfs_period_us").write_text("100000")
            (self.dir / "cpu.cfs_quota_us").write_text(str(int(cpus * 100_000)))
            self.kind = "cgroup v1 cpu.cfs_quota_us"

    def join(self) -> None:  # in the child, before exec
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def launch(a, threads: int, quota: Quota | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(a.src), "PYTHONWARNINGS": "ignore"}
    env.pop("OMP_NUM_THREADS", None)
    return subprocess.Popen([sys.executable, __file__, "--worker", str(a.data), "--epochs", str(a.epochs),
                             "--threads", str(threads)], env=env, stdout=subprocess.PIPE, text=True,
                            preexec_fn=quota.join if quota else None, cwd="/tmp")


def result(p: subprocess.Popen) -> dict:
    out, _ = p.communicate()
    if p.returncode:
        raise SystemExit(f"worker failed ({p.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def load() -> float:
    return os.getloadavg()[0]


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}"


def write_md(records: list[dict], path: Path, meta: dict) -> None:
    lines = [
        "# Threads: default vs one thread, under a CPU quota and side by side",
        "",
        f"Generated by `bench/threads.py` (see its docstring). Machine: {meta['machine']}. Data: {meta['data']}. "
        "Each row is one fresh process training `genodae.DAE(epochs=E, patience=0, device='cpu')` with library "
        "defaults (`num_threads` 0) or `num_threads=1`; cells/s = training cells × epochs / training-loop seconds. "
        "`before`: genodae at the commit named (torch's default threads, which follow only affinity: 2 here); "
        "`after`: with `genodae/_threads.py`. Load: the 1-minute load average just before the run (other "
        "engineers' jobs share the 2 cores).",
        "",
        "| label | git | scenario | settings | torch threads | cells/s (each run) | load before |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(f"| {r['label']} | {r['git']} | {r['scenario']} | {r['settings']} | {r['torch_threads']} | "
                     f"{r['cells_per_s']} | {r['load']:.2f} |")
    notes = ""
    if path.exists() and "\n## Reading" in path.read_text():  # hand-written notes below the table are kept
        notes = "\n## Reading" + path.read_text().split("\n## Reading", 1)[1]
    path.write_text("\n".join(lines) + "\n" + notes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="after")
    p.add_argument("--src", type=Path, default=ROOT, help="folder holding the genodae package to measure")
    p.add_argument("--git", default=None, help="what to record as the measured version (default: HEAD of this tree)")
    p.add_argument("--data", type=Path, default=Path("/tmp/genodae_threads/prepared.h5ad"))
    p.add_argument("--cells", type=int, default=20_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quota", type=float, nargs="+", default=[1.0], help="CPU quotas to measure under")
    p.add_argument("--quota-threads", type=int, nargs="+", default=[0, 1],
                   help="num_threads settings measured under each quota (0 = default)")
    p.add_argument("--scenarios", nargs="+", default=["quota", "side"])
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/threads.json")
    p.add_argument("--md", type=Path, default=ROOT / "bench/results/threads.md")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker, a.epochs, a.threads)
    if not a.data.exists():
        write_prepared(a.data, a.cells, a.genes)
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    git = a.git or (git if a.src == ROOT else f"{git} (--src {a.src})")
    records = json.loads(a.out.read_text()) if a.out.exists() else []
    name = {0: "default", 1: "num_threads=1"}

    def add(scenario, threads, res, ld):
        rec = {"label": a.label, "git": git, "scenario": scenario,
               "settings": name.get(threads, f"num_threads={threads}"),
               "torch_threads": "/".join(str(r["torch_threads"]) for r in res),
               "cells_per_s": " + ".join(f"{r['cells_per_s']:,.0f}" for r in res)
               + (f" = {sum(r['cells_per_s'] for r in res):,.0f}" if len(res) > 1 else ""),
               "load": ld, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        records.append(rec)
        print(rec, flush=True)

    for _ in range(a.repeats):
        if "quota" in a.scenarios:
            for q in a.quota:
                quota = Quota(q)
                try:
                    for t in a.quota_threads:
                        ld = load()
                        add(f"quota {q:g} CPU ({quota.kind})", t, [result(launch(a, t, quota))], ld)
                finally:
                    quota.remove()
        if "side" in a.scenarios:
            for t in (0, 1):
                ld = load()
                procs = [launch(a, t) for _ in range(2)]
                add("two side by side, no quota", t, [result(pr) for pr in procs], ld)
    a.out.write_text(json.dumps(records, indent=1) + "\n")
    meta = {"machine": machine(), "data": f"{a.cells:,} cells × {a.genes:,} genes of generated counts (10 % "
            f"non-zeros), genodae.pp.prepare defaults; {a.epochs} epochs"}
    write_md(records, a.md, meta)


if __name__ == "__main__":
    main()
