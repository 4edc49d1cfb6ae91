"""The example workflow through a real (one-node, local) SLURM cluster and the executor plugin.

.ci/start_slurm.sh installs Debian's SLURM and munge when missing, starts munged, slurmctld and slurmd
on 127.0.0.1 and waits until the node is idle; it exits 77 where that cannot be done (not root, no
apt-get), and the test then skips. The cluster has no accounting, so the plugin's status checks use squeue
(--slurm-status-command squeue); MinJobAge keeps finished jobs visible to squeue for 300 s. Every wait is
bounded: the start script, the snakemake run (its process group is stopped on timeout, which makes
Snakemake cancel its SLURM jobs) and the squeue/scontrol queries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_workflow import FAST_MODEL, REPO, edit_config, make_clone, planned_jobs, read_tsv, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

START_TIMEOUT = 900  # installing the packages on a fresh machine included
RUN_TIMEOUT = 600
# The command line for a cluster without accounting (see .ci/start_slurm.sh); keep a real cluster's
# profile on the plugin's defaults.
SLURM_ARGS = [
    "--executor", "slurm",
    "--jobs", "4",
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "1",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
    "--latency-wait", "10",
]
RULES = ("example", "prepare", "train", "embed", "export", "plot", "signatures", "associate")  # gather_runs is local


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node cluster; stopped again afterwards if this fixture started it."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (packages, daemons)")
    if shutil.which("sinfo") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available")
    try:
        res = subprocess.run(["bash", str(REPO / ".ci" / "start_slurm.sh")], capture_output=True, text=True,
                             timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f".ci/start_slurm.sh did not finish in {START_TIMEOUT}s")
    if res.returncode == 77:
        pytest.skip(f"no local SLURM here: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, f".ci/start_slurm.sh failed:\n{res.stdout}\n{res.stderr}"
    yield res.stderr
    if "starting slurmctld" in res.stderr and not os.environ.get("GENODAE_KEEP_SLURM"):
        subprocess.run(["bash", str(REPO / ".ci" / "start_slurm.sh"), "stop"], capture_output=True, timeout=60)


def _query(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout


def test_example_workflow_runs_through_slurm(slurm_cluster, tmp_path):
    cpus = min(2, os.cpu_count() or 1)
    work = make_clone(tmp_path / "clone")
    # Small requests, so the jobs fit any CI machine's single node.
    small = {"threads": 1, "mem_mb": 1000, "runtime": 10}
    edit_config(work, model=FAST_MODEL, resources={
        **{rule: dict(small) for rule in ("example", "prepare", "embed", "export", "plot", "gather", "signatures",
                                          "associate")},
        "train": {**small, "threads": cpus, "gpu": 0},
    })
    out = snakemake(work, *SLURM_ARGS, timeout=RUN_TIMEOUT).stdout

    # every job was submitted with sbatch ...
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out))
    assert planned_jobs(out) == {**{rule: 1 for rule in RULES}, "gather_runs": 1, "all": 1}, out[-3000:]
    assert len(submitted) == len(RULES), out[-3000:]
    # ... left a SLURM log named by its SLURM job id under .snakemake/slurm_logs/rule_<rule>/ ...
    logs = {p.stem: p for p in (work / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(logs) == set(submitted.values()), (sorted(logs), submitted)
    assert {p.relative_to(work / ".snakemake" / "slurm_logs").parts[0] for p in logs.values()} == {
        f"rule_{rule}" for rule in RULES}
    # ... and is known to SLURM as a completed job that ran on this node
    for jobid in submitted.values():
        info = _query("scontrol", "show", "job", jobid)
        state = re.search(r"JobState=(\S+)", info)
        assert state and state.group(1) == "COMPLETED", info or f"scontrol knows no job {jobid}"
        assert f"WorkDir={work}" in info

    run = work / "results" / "pbmc68k" / "k32" / "seed0"
    for rel in ("model/model.safetensors", "embedded.h5ad", "embedding.tsv", "gene_weights.tsv",
                "figures/loss.png", "figures/umap.png"):
        assert (run / rel).stat().st_size > 0, rel
    assert len(read_tsv(run / "embedding.tsv")) == 700
    (row,) = read_tsv(work / "results" / "pbmc68k" / "runs.tsv")
    assert row["epochs_run"] == str(FAST_MODEL["epochs"]) and row["device"] == "cpu"
    # the training job got the CPUs it asked for
    train_log = next(p for p in logs.values() if "rule_train" in str(p))
    assert train_log.read_text()
    assert "Nothing to be done" in snakemake(work, "-n").stdout
    (Path(tmp_path) / "slurm_jobs.txt").write_text(f"{len(submitted)}\n")


def test_two_node_launcher_under_srun_reaches_single_process_weights(slurm_cluster, tmp_path, counts_adata):
    """The command resources.train.nodes: 2 renders (workflow/launch.py), run in a real SLURM job: the
    cluster has one node, so srun places the two tasks there (`--nodes 1 --ntasks-per-node 2` instead of
    `--nodes 2 --ntasks-per-node 1`); everything else is the rendered text: scontrol names the rendezvous
    host, the port follows the job id, two torchrun agents meet (c10d) and train one gloo rank each. Their
    weights equal one process's within 1e-5."""
    import importlib.util
    import sys

    from safetensors.torch import load_file

    import genodae

    spec = importlib.util.spec_from_file_location("genodae_workflow_launch", REPO / "workflow" / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    genodae.pp.prepare(counts_adata, n_top_genes=100)
    prep = tmp_path / "prep.h5ad"
    counts_adata.write_h5ad(prep)
    train = f"train {prep} --epochs 4 --batch-size 32 --n-latent 5 --hidden 32 --num-threads 1 --device cpu -q -o"
    args = f"{train} {tmp_path / 'two'}"
    rendered = launch.train_launcher({"nodes": 2, "gpu": 0, "threads": 1})
    one_node = rendered.replace("srun --nodes 2 --ntasks 2 --ntasks-per-node 1", "srun --nodes 1 --ntasks 2 "
                                "--ntasks-per-node 2")
    assert one_node != rendered
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nset -euo pipefail\nexport OMP_NUM_THREADS=1\n{one_node} {args}\n")
    bin_dir = str(Path(sys.executable).parent)  # torchrun and python of this venv
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    res = subprocess.run(["sbatch", "--wait", "--parsable", "--nodes", "1", "--ntasks", "2", "--cpus-per-task", "1",
                          "--mem", "3000", "-t", "10", "-o", str(tmp_path / "job.out"), str(script)],
                         env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    out = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert res.returncode == 0, f"{res.stderr}\n{out[-3000:]}"
    subprocess.run([sys.executable, "-m", "genodae", *train.split(), str(tmp_path / "single")], check=True,
                   env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    a = load_file(str(tmp_path / "single" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
