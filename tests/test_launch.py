"""How the workflow starts a training job (workflow/launch.py): the rendered commands and SLURM requests.

The two-"node" DistributedDataParallel run itself (two torchrun agents meeting through a c10d rendezvous on
127.0.0.1) is in tests/test_scale.py, next to the one-node DDP test.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("genodae_workflow_launch", ROOT / "workflow" / "launch.py")
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)


def _train(**kw):
    return {"threads": 2, "mem_mb": 8000, "runtime": 60, "gpu": 0, "nodes": 1, **kw}


def test_one_node_one_or_no_gpu_is_a_plain_process():
    for gpu in (0, 1):
        assert launch.train_launcher(_train(gpu=gpu)) == "python -m genodae"
        assert launch.train_resources(_train(gpu=gpu)) == {"gpu": gpu}
    assert launch.rank_threads(_train(threads=3)) == 3


def test_one_node_several_gpus_is_torchrun_standalone_sharing_the_threads():
    t = _train(gpu=4, threads=8)
    assert launch.train_launcher(t) == "torchrun --standalone --nproc-per-node 4 -m genodae"
    assert launch.train_resources(t) == {"gpu": 4}
    assert launch.rank_threads(t) == 2 and launch.rank_threads(t, threads=2) == 1  # at least one each
    assert launch.world_size(t) == 4


def test_two_nodes_srun_one_torchrun_agent_per_node_with_c10d_on_the_first_node():
    cmd = launch.train_launcher(_train(nodes=2, threads=4))
    guard, run = cmd.split("}; ", 1)
    assert guard.startswith('test -n "${SLURM_JOB_ID:-}" ||') and "resources.train.nodes is 2" in guard
    words = shlex.split(run)  # the command is valid shell quoting
    assert words[:11] == ["srun", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1", "--cpus-per-task", "4",
                          "--kill-on-bad-exit=1", "torchrun"]
    opts = dict(zip(words[11:-2:2], words[12:-2:2], strict=True))
    assert opts == {
        "--nnodes": "2",
        "--nproc-per-node": "1",  # CPU nodes: one gloo rank each
        "--rdzv-backend": "c10d",
        # (shlex drops the quotes around $SLURM_JOB_NODELIST inside the command substitution; bash keeps them)
        "--rdzv-endpoint": "$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):$(( 29500 + SLURM_JOB_ID % 10000 ))",
        "--rdzv-id": "genodae-$SLURM_JOB_ID",
    }
    assert words[-2:] == ["-m", "genodae"]
    assert launch.world_size(_train(nodes=2, gpu=4)) == 8
    assert "--nproc-per-node 4" in launch.train_launcher(_train(nodes=2, gpu=4))


def test_two_node_command_expands_in_a_slurm_job_and_refuses_outside_one(tmp_path):
    """Run the rendered words in bash with stand-ins for srun and scontrol: the rendezvous endpoint is the
    first node of the job's node list, the port follows the job id; outside a job: the one-line message."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames node[07-08]" ] && printf "node07\\nnode08\\n"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    cmd = launch.train_launcher(_train(nodes=2)) + " train in.h5ad -o model"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "node[07-08]"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], env=env, capture_output=True, text=True, check=True)
    args = out.stdout.splitlines()
    assert args[args.index("--rdzv-endpoint") + 1] == f"node07:{29500 + 123456 % 10000}"
    assert args[args.index("--rdzv-id") + 1] == "genodae-123456"
    assert args[-5:] == ["genodae", "train", "in.h5ad", "-o", "model"]
    outside = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], env={"PATH": env["PATH"]}, capture_output=True,
                             text=True)
    assert outside.returncode == 1 and outside.stdout == ""
    assert outside.stderr.strip().startswith("genodae: resources.train.nodes is 2, which needs a SLURM job")


@pytest.mark.parametrize("gpu", [0, 4])
def test_slurm_plugin_asks_for_the_nodes_one_task_each_and_gpus_per_node(gpu):
    """The resources of a two-node job, through the SLURM executor plugin's own sbatch builder."""
    plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command

    class Resources(dict):
        __getattr__ = dict.__getitem__

    class Job:
        threads = 8
        resources = Resources(mem_mb=8000, runtime=60, **launch.train_resources(_train(nodes=2, gpu=gpu, threads=8)))

    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "c", "account": "", "partition": "",
              "workdir": "."}
    call = get_submit_command(Job(), params) + plugin.set_gres_string(Job())
    flags = call.split()
    assert "--nodes=2" in flags and "--ntasks=2" in flags and "--mem" in flags and "--cpus-per-task=8" in flags
    assert not [f for f in flags if f.startswith(("--ntasks-per-gpu", "--ntasks-per-node"))]
    if gpu:
        assert "--gres=gpu:4" in flags and not [f for f in flags if f.startswith("--gpus")]
    else:
        assert not [f for f in flags if f.startswith(("--gres", "--gpus"))]
    # the job step runs the rule's shell as it is (no `srun -n1` around the rule's own srun)
    assert "mpi" in Job.resources
