"""Scale paths: device-resident and chunked (backed) data, torchrun DDP on CPU (gloo), pure-torch imports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import genodae
from genodae.config import DAEConfig
from genodae.train import (
    BatchSource,
    ChunkedSource,
    DeviceSource,
    build_module,
    fit,
    make_source,
    read_rows,
    split_cells,
)

ROOT = Path(__file__).resolve().parents[1]


def _csr(n=300, g=50, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, g, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    X.data = np.log1p(X.data * 20).astype(np.float32)
    return X


def test_sources_agree_on_every_row():
    X = _csr()
    lo = np.zeros(X.shape[1], np.float32)
    hi = np.asarray(X.max(axis=0).todense()).ravel().astype(np.float32)
    dev = torch.device("cpu")
    rows = np.array([5, 0, 299, 17, 150])
    host = BatchSource(X, lo, hi, dev, clip=True)(rows)
    expect = torch.from_numpy(X[rows].toarray() / hi).clamp(0, 1)
    assert torch.allclose(host, expect, atol=1e-6)
    # device-resident copy is float16: ~3 significant digits
    resident = DeviceSource(X, lo, hi, dev, clip=True)
    assert resident.data.dtype == torch.float16 and resident.X is None
    assert torch.allclose(resident(torch.as_tensor(rows)), expect, atol=2e-3)
    # chunked reader over a plain CSR (anything with X[a:b]); chunk boundaries inside the batch
    chunked = ChunkedSource(X, lo, hi, dev, clip=True, columns=np.arange(X.shape[1]), chunk=64)
    assert torch.allclose(chunked(rows), expect, atol=1e-6)
    # column subset
    cols = np.array([3, 1, 40])
    sub = ChunkedSource(X, lo[cols], hi[cols], dev, clip=True, columns=cols, chunk=64)(rows)
    assert torch.allclose(sub, expect[:, cols], atol=1e-6)


def test_chunked_source_reads_a_backed_h5ad_like_memory(tmp_path):
    """ChunkedSource over a backed .h5ad reads each chunk straight from X's indptr/indices/data (read_rows):
    the rows equal anndata's own slicing and the in-memory CSR, for batches inside one chunk, across chunks,
    the last short chunk and a column subset."""
    X = _csr(n=300, g=50)
    path = tmp_path / "x.h5ad"
    ad.AnnData(X=X).write_h5ad(path)
    backed = genodae.io.read_backed(path).X
    for a, b in [(0, 64), (256, 300), (7, 8), (100, 100)]:
        block = read_rows(backed, a, b)
        assert sp.isspmatrix_csr(block) and block.shape == (b - a, 50) and block.dtype == np.float32
        np.testing.assert_array_equal(block.toarray(), backed[a:b].toarray())
    lo, hi = np.zeros(50, np.float32), np.ones(50, np.float32)
    dev = torch.device("cpu")
    chunked = ChunkedSource(backed, lo, hi, dev, columns=np.arange(50), chunk=64)
    assert chunked.columns is None  # every gene in order: no per-chunk column copy
    for rows in (np.array([70, 65, 127]), np.array([5, 0, 299, 17, 150]), np.array([299, 256])):
        np.testing.assert_array_equal(chunked(rows).numpy(), X[rows].toarray())
    cols = np.array([3, 1, 40])
    sub = ChunkedSource(backed, lo[cols], hi[cols], dev, columns=cols, chunk=64)
    np.testing.assert_array_equal(sub(np.array([5, 0, 299])).numpy(), X[[5, 0, 299]][:, cols].toarray())


def test_auto_placement_is_host_on_cpu():
    X = _csr()
    src = make_source(X, np.zeros(50, np.float32), np.ones(50, np.float32), torch.device("cpu"))
    assert src.placement == "host"


def test_chunked_epoch_order_is_a_permutation_with_contiguous_chunks():
    X = _csr(n=1000)
    src = ChunkedSource(X, np.zeros(50, np.float32), np.ones(50, np.float32), torch.device("cpu"),
                        columns=np.arange(50), chunk=100)
    rows = torch.arange(0, 1000, 3)
    order = src.epoch_order(rows, torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == rows.tolist()
    chunk_ids = (order // 100).tolist()
    # each chunk is visited in one run: the number of chunk changes is (chunks - 1)
    changes = sum(a != b for a, b in zip(chunk_ids[:-1], chunk_ids[1:], strict=True))
    assert changes == len(set(chunk_ids)) - 1
    assert order.tolist() != rows.tolist()  # actually shuffled


def test_training_on_device_resident_data_matches_host_closely():
    X = _csr(n=400, g=40)
    lo = np.zeros(40, np.float32)
    hi = np.asarray(X.max(axis=0).todense()).ravel().astype(np.float32)
    cfg = DAEConfig(n_latent=4, hidden=(16,), epochs=3, patience=0, batch_size=64, num_threads=1, device="cpu")
    tr, va = split_cells(400, 0.1, 0)
    out = []
    for placement in ("host", "device"):
        torch.manual_seed(0)
        m = build_module(40, cfg, "sigmoid")
        src = make_source(X, lo, hi, torch.device("cpu"), clip=True, placement=placement)
        h = fit(m, src, cfg, train_idx=tr, val_idx=va, progress=False)
        out.append((h.val_loss[-1], m.decoder.weight.detach().clone()))
    assert abs(out[0][0] - out[1][0]) < 1e-3 * out[0][0]
    assert torch.allclose(out[0][1], out[1][1], atol=1e-3)


def test_backed_h5ad_trains_and_embeds_like_memory(tmp_path, counts_adata):
    genodae.pp.prepare(counts_adata, n_top_genes=100)
    path = tmp_path / "prep.h5ad"
    counts_adata.write_h5ad(path)
    backed = genodae.io.read_backed(path)
    model = genodae.DAE(n_latent=4, hidden=(32,), epochs=4, num_threads=1, patience=0).fit(backed)
    assert model.gene_likelihood in ("poisson", "nb", "zinb")  # the count target is read from layers/counts in chunks
    assert model.history.val_loss[-1] < model.history.val_loss[0]
    z_backed = model.embed(backed)
    z_memory = model.embed(ad.read_h5ad(path))
    np.testing.assert_array_equal(z_backed, z_memory)


def test_nn_and_train_import_without_anndata():
    """The GPU machine has torch/numpy/scipy only: nn.py and train.py must not need anndata or scanpy."""
    code = ("import sys; sys.modules['anndata'] = None; sys.modules['scanpy'] = None\n"
            "import genodae.nn, genodae.train, genodae.config\n"
            "assert 'anndata' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


DDP_ARGS = ["--epochs", "4", "--batch-size", "32", "--n-latent", "5", "--hidden", "32", "--num-threads", "1",
            "--device", "cpu", "-q"]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


@pytest.fixture(scope="module")
def ddp_single(tmp_path_factory, _counts_adata_session):
    """A prepared file and the weights of one process trained on it (what every DDP launch must reach)."""
    from safetensors.torch import load_file

    tmp = tmp_path_factory.mktemp("ddp")
    adata = _counts_adata_session.copy()
    genodae.pp.prepare(adata, n_top_genes=100)
    prep = tmp / "prep.h5ad"
    adata.write_h5ad(prep)
    subprocess.run([sys.executable, "-m", "genodae", "train", str(prep), *DDP_ARGS, "-o", str(tmp / "single")],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    return prep, load_file(str(tmp / "single" / "model.safetensors"))


def _assert_same_weights(a: dict, model_dir: Path) -> float:
    from safetensors.torch import load_file

    b = load_file(str(model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    # and training did something: weights moved away from a fresh initialisation
    assert float((a["module.decoder.weight"]).abs().mean()) > 0
    return worst


@pytest.mark.slow
def test_ddp_two_processes_gloo_match_single_process(tmp_path, ddp_single):
    """torchrun with 2 CPU processes (gloo) reaches the single-process weights.

    Each rank trains on its half of every global batch and sees exactly the single-process noise, and
    gradients are averaged: only floating-point summation order differs. Tolerance: 1e-5 absolute.
    """
    prep, single = ddp_single
    subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--master-port", "29517", "-m", "genodae", "train", str(prep),
                    *DDP_ARGS, "-o", str(tmp_path / "ddp")], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   timeout=300)
    _assert_same_weights(single, tmp_path / "ddp")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_nodes_c10d_rendezvous_match_single_process(tmp_path, ddp_single):
    """Two torchrun agents, each a "node" with one CPU rank, meet through a c10d rendezvous on 127.0.0.1, as
    the workflow's resources.train.nodes: 2 starts them (one agent per node by srun, workflow/launch.py), and
    reach the single-process weights (tolerance 1e-5, as for one node). Both write to one model folder, as on a
    shared file system: only global rank 0 writes it."""
    prep, single = ddp_single
    endpoint = f"127.0.0.1:{_free_port()}"
    cmd = [TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
           "--rdzv-id", "genodae-test", "-m", "genodae", "train", str(prep), *DDP_ARGS, "-o", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"node{i}.log" for i in range(2)]
    procs = [subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0], "\n".join(log.read_text()[-2000:] for log in logs)
    _assert_same_weights(single, tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["model.json", "model.safetensors"]


def test_workflow_launches_one_ddp_rank_per_gpu(tmp_path):
    """resources.train.gpu > 1 makes the training rule start torchrun with one rank per GPU (dry run)."""
    work = tmp_path / "wf"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv", ".git", "results", "resources", "logs",
                                                              "benchmarks", ".snakemake", "*.egg-info"))
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    cfg = 'resources={"train": {"gpu": 2, "threads": 2, "mem_mb": 8000, "runtime": 60}}'
    out = subprocess.run([snakemake, "-n", "-p", "--config", cfg], cwd=work, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # torchrun is the workflow interpreter's own (python -m torch.distributed.run), never another on PATH
    assert re.search(r"\S*python\S* -m torch\.distributed\.run --standalone --nproc-per-node 2 -m genodae train",
                     out.stdout), out.stdout[-2000:]
    assert "--device cuda" in out.stdout
    single = subprocess.run([snakemake, "-n", "-p"], cwd=work, capture_output=True, text=True, timeout=120)
    assert "python -m genodae train" in single.stdout and "torchrun" not in single.stdout
    # several nodes: srun starts one torchrun agent per node, which meet on the job's first node (c10d)
    cfg = 'resources={"train": {"nodes": 2, "gpu": 0, "threads": 2, "mem_mb": 8000, "runtime": 60}}'
    multi = subprocess.run([snakemake, "-n", "-p", "--config", cfg], cwd=work, capture_output=True, text=True,
                           timeout=120)
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert re.search(r"srun --nodes 2 --ntasks 2 --ntasks-per-node 1 --cpus-per-task 2 --kill-on-bad-exit=1 \S*python\S* "
                     r"-m torch\.distributed\.run --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint",
                     multi.stdout), multi.stdout[-2000:]
    assert "-m genodae train" in multi.stdout and "--device cpu" in multi.stdout
    assert "nodes=2" in multi.stdout and "tasks=2" in multi.stdout and "mpi=srun" in multi.stdout


@pytest.mark.slow
def test_gpu_script_runs_with_the_cpu_standing_in(tmp_path):
    """bench/gpu.py has only ever run where there is no GPU: exercise every path of it on CPU, small."""
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--cells", "3000",
                           "--batch-sizes", "256", "--epochs", "1", "--check-cells", "2000", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    res = json.loads(out.read_text())
    c = res["correctness"]
    for lik in ("normal", "poisson", "nb", "zinb", "nb_batch"):  # every likelihood, and a batch-conditioned model
        assert c[f"{lik}_same_weights_loss_rel_err_fp32"] == 0 and c[f"{lik}_same_weights_embedding_rel_err_fp32"] == 0
        assert 0 < c[f"{lik}_same_weights_embedding_rel_err_bf16"] < 0.05  # bf16 really ran, and stays close
        assert c[f"{lik}_same_weights_loss_rel_err_bf16"] < 0.05 and np.isfinite(c[f"{lik}_val_loss_cpu"])
    assert [r["likelihood"] for r in res["throughput"]] == ["normal", "nb"]
    for row in res["throughput"]:
        assert row["cells"] == 3000 and row["cells_per_s_per_epoch"] > 0 and np.isfinite(row["final_val_loss"])
    assert "| 3,000 | 2000 | nb | 256 |" in proc.stdout
