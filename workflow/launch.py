"""How a training job starts: one process, torchrun on one node, or torchrun on every node of a SLURM job.

Plain Python (no Snakemake): ``rules/common.smk`` loads it for the train rule, and the tests import it to
check the commands it renders. The inputs are the config's ``resources.train`` section (validated by the
schema: ``nodes`` >= 1, ``gpu`` >= 0, ``threads`` >= 1).

- ``nodes: 1``, ``gpu`` 0 or 1: ``python -m genodae train ...``, one process (``python``: the interpreter that runs
  Snakemake, see ``rules/common.smk``; torchrun below is that interpreter's ``-m torch.distributed.run``).
- ``nodes: 1``, ``gpu: G > 1``: ``torchrun --standalone --nproc-per-node G``, one DistributedDataParallel rank
  per GPU.
- ``nodes: N > 1``: a SLURM job of N nodes; the job's shell runs ``srun`` with one task per node, and each task
  is a ``torchrun`` agent starting ``max(G, 1)`` ranks (one per GPU, or one CPU rank). The agents meet through
  torchrun's c10d rendezvous on the job's first node (``scontrol show hostnames $SLURM_JOB_NODELIST``), at a
  port derived from the job id so that two jobs sharing a first node do not collide. The command refuses to
  start outside a SLURM job, with a one-line message.

Resources for the SLURM executor plugin (snakemake-executor-plugin-slurm >= 2.0; checked with 2.8.0, see its
``submit_string.py`` and the jobstep plugin): ``nodes`` becomes ``--nodes``; ``mpi`` marks a job that starts
its own ``srun`` (without it, the plugin runs the job's shell inside ``srun -n1``, where a second ``srun``
could not spread over the nodes); ``tasks`` becomes ``--ntasks`` (one per node). The plugin turns ``gpu`` into
``--gpus``, which counts the GPUs of the whole job: SLURM may then split them unevenly over the nodes, so a
job of several nodes asks for its GPUs per node with ``gres: gpu:G`` instead, and ``tasks_per_gpu: 0`` keeps the
plugin from adding ``--ntasks-per-gpu`` (it would otherwise reuse ``tasks`` for it).
"""

from __future__ import annotations

import shlex

RDZV_BASE_PORT = 29500
"""The c10d rendezvous listens on RDZV_BASE_PORT + (SLURM job id mod RDZV_PORT_SPAN) on the first node."""
RDZV_PORT_SPAN = 10000

NOT_IN_SLURM = ("genodae: resources.train.nodes is {nodes}, which needs a SLURM job (it starts torchrun on every "
                "node with srun): run the workflow with the SLURM executor (snakemake --profile profiles/slurm) "
                "or set resources.train.nodes: 1")


def ranks_per_node(train: dict) -> int:
    """DistributedDataParallel ranks on each node: one per GPU, or one CPU process."""
    return max(int(train.get("gpu", 0)), 1)


def world_size(train: dict) -> int:
    return int(train.get("nodes", 1)) * ranks_per_node(train)


def rank_threads(train: dict, threads: int | None = None) -> int:
    """torch threads of each rank: the job's threads on a node (``threads``, else ``train["threads"]``) shared
    among the node's ranks, at least 1."""
    return max(1, int(train["threads"] if threads is None else threads) // ranks_per_node(train))


def train_resources(train: dict) -> dict:
    """The train rule's Snakemake resources besides ``threads``, ``mem_mb`` and ``runtime`` (which the rule
    takes from ``resources.train`` as every rule does): ``gpu``, and for several nodes the keys above."""
    nodes, gpu = int(train.get("nodes", 1)), int(train.get("gpu", 0))
    out = {"gpu": gpu}
    if nodes > 1:
        out.update(nodes=nodes, tasks=nodes, mpi="srun")
        if gpu:
            out.update(gpu=0, gres=f"gpu:{gpu}", tasks_per_gpu=0)
    return out


def train_launcher(train: dict, python: str = "python") -> str:
    """The shell words that start ``genodae`` for training; ``train ...`` and its options follow them.

    ``python``: the interpreter, as shell words (the workflow passes the one running Snakemake, quoted). torchrun
    is then that interpreter's ``-m torch.distributed.run`` (what the ``torchrun`` script runs), so no other
    torchrun on PATH is used; with the default ``python``, the ``torchrun`` on PATH."""
    nodes, ranks = int(train.get("nodes", 1)), ranks_per_node(train)
    torchrun_cmd = "torchrun" if python == "python" else f"{python} -m torch.distributed.run"
    if nodes < 1:
        raise ValueError(f"resources.train.nodes must be at least 1, got {nodes}")
    if nodes == 1:
        if ranks == 1:
            return f"{python} -m genodae"
        return f"{torchrun_cmd} --standalone --nproc-per-node {ranks} -m genodae"
    guard = f'test -n "${{SLURM_JOB_ID:-}}" || {{ echo {shlex.quote(NOT_IN_SLURM.format(nodes=nodes))} >&2; exit 1; }}'
    first_node = 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1'
    port = f"$(( {RDZV_BASE_PORT} + SLURM_JOB_ID % {RDZV_PORT_SPAN} ))"
    # srun no longer inherits --cpus-per-task from the job (SLURM >= 22.05): ask again for the job's threads
    srun = (f"srun --nodes {nodes} --ntasks {nodes} --ntasks-per-node 1 --cpus-per-task {int(train['threads'])} "
            "--kill-on-bad-exit=1")
    torchrun = (f"{torchrun_cmd} --nnodes {nodes} --nproc-per-node {ranks} --rdzv-backend c10d "
                f'--rdzv-endpoint "$({first_node}):{port}" --rdzv-id "genodae-$SLURM_JOB_ID"')
    return f"{guard}; {srun} {torchrun} -m genodae"
