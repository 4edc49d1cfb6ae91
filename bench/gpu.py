"""One-GPU check and timing, pure torch + numpy/scipy (no anndata/scanpy, no network).

    PYTHONPATH=. python bench/gpu.py --out bench/results/gpu_<card>.json

1. Correctness against the CPU: the same trained weights evaluated on CPU and GPU (relative error of the
   loss and of the embedding, fp32 and bf16 autocast), and the final validation loss of the same training
   run on each device (their noise streams differ: CUDA and CPU generators give different numbers).
2. Throughput: cells per second per epoch at 100k and 1M cells × 2,000 genes, ~10% non-zeros, data
   resident on the GPU (float16), default architecture, for a few batch sizes (lr scaled by sqrt(batch/128)).
Prints a short table; everything within ~5 minutes on one H100.

``--device cpu`` runs the same code with the CPU standing in for the GPU (small sizes), so the script is
exercised where there is no GPU (tests/test_scale.py does this).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, make_csr, parser, utc_now

from genodae.config import DAEConfig
from genodae.nn import corrupt, noise_seed
from genodae.rotation import readable_basis
from genodae.train import (
    LogNormalizedCounts,
    build_module,
    embed,
    evaluate_loss,
    fit,
    input_correlations,
    library_size,
    make_source,
    split_cells,
)


def _scaling(X):
    lo = np.zeros(X.shape[1], np.float32)
    hi = np.asarray(X.max(axis=0).todense()).ravel().astype(np.float32)
    return lo, np.where(hi > 0, hi, 1).astype(np.float32)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


LIKELIHOODS = ("normal", "poisson", "nb", "zinb")


def _counts_and_input(n_cells: int, seed: int):
    """Integer counts (CSR, 1-20 at the non-zeros) and their log1p as the model input."""
    X = make_csr(n_cells, 2000, 0.1, seed=seed)
    C = X.copy()
    C.data = np.rint(C.data * 19) + 1
    L = C.copy()
    L.data = np.log1p(L.data)
    return C, L


def _step_nll(m, src, rows, xc, x):
    """Mean per-entry NLL of one batch (the training loss) with the module's likelihood."""
    cats, cont = src.covariates(rows)
    z, logits = m(xc, cats, cont)
    if m.counts:
        y = src.target(rows)
        return m.nll(z, logits, y, library_size(y), cats).mean().item()
    return m.nll(z, logits, x).mean().item()


def correctness(gpu: torch.device, n_cells: int = 20_000, likelihoods=LIKELIHOODS) -> dict:
    """Per likelihood: the same weights give the same loss and embedding on GPU (fp32, bf16) as on CPU, and
    three epochs trained on each end at about the same validation loss."""
    C, X = _counts_and_input(n_cells, seed=1)
    lo, hi = _scaling(X)
    tr, va = split_cells(X.shape[0], 0.1, 0)
    res = {}
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    batch = np.arange(X.shape[0]) % 3  # three batches: the conditioned model (decoder and encoder, per-batch θ, MMD)
    variants = [(lik, lik, {}) for lik in likelihoods] + [("nb_batch", "nb", dict(batch_key="batch", encode_covariates=True))]
    for key, lik, extra in variants:
        cfg = DAEConfig(epochs=3, patience=0, batch_size=256, seed=0, amp=False, gene_likelihood=lik, **extra)
        out = cfg.resolved_output_activation(lik)
        counts = C if lik != "normal" else None
        levels = (3,) if extra else ()

        def source(dev, counts=counts, extra=extra):
            src = make_source(X, lo, hi, dev, clip=True, counts=counts)
            if extra:
                src.cats = batch[:, None].astype(np.int64)
            return src

        runs = {}
        for name, dev, amp in (("cpu", torch.device("cpu"), False), ("gpu_fp32", gpu, False), ("gpu_bf16", gpu, True)):
            torch.manual_seed(0)
            m = build_module(2000, cfg, out, lik, n_cats_per_cov=levels)
            c = DAEConfig(**{**cfg.to_dict(), "hidden": cfg.hidden, "amp": amp})
            h = fit(m, source(dev), c, train_idx=tr, val_idx=va, progress=False)
            runs[name] = (m, h)
        m_cpu = runs["cpu"][0]
        src_cpu = source(torch.device("cpu"))
        z_cpu = embed(m_cpu, src_cpu, va)
        m_gpu = build_module(2000, cfg, out, lik, n_cats_per_cov=levels).to(gpu)
        m_gpu.load_state_dict(m_cpu.state_dict())
        src_gpu = source(gpu)
        z_gpu = embed(m_gpu, src_gpu, va)
        # the validation noise of a CUDA generator differs from the CPU's: compare the loss on the same noise
        rows = va[:2048]
        x = src_cpu(rows)
        g = torch.Generator().manual_seed(noise_seed(0, 7, 0))
        xc, _ = corrupt(x, cfg.corruption, 0.0, g, rescale=cfg.corruption_rescale)
        with torch.no_grad():
            lc = _step_nll(m_cpu, src_cpu, rows, xc, x)
            lg = _step_nll(m_gpu, src_gpu, rows, xc.to(gpu), x.to(gpu))
            with torch.autocast(gpu.type, dtype=torch.bfloat16):
                lb = _step_nll(m_gpu, src_gpu, rows, xc.to(gpu), x.to(gpu))
                zb = m_gpu.encode(src_gpu(va), *src_gpu.covariates(va)).float().cpu().numpy()
        res[f"{key}_same_weights_loss_rel_err_fp32"] = abs(lg - lc) / abs(lc)
        res[f"{key}_same_weights_loss_rel_err_bf16"] = abs(lb - lc) / abs(lc)
        res[f"{key}_same_weights_embedding_rel_err_fp32"] = rel(z_gpu, z_cpu)
        res[f"{key}_same_weights_embedding_rel_err_bf16"] = rel(zb, z_cpu)
        res[f"{key}_val_loss_cpu"] = evaluate_loss(m_cpu, src_cpu, va, cfg)
        if key == "nb":  # the readable basis (DAE.fit's last step) from the GPU: same gene weights as on CPU
            bases = {}
            for name, m, src in (("cpu", m_cpu, src_cpu), ("gpu", m_gpu, src_gpu)):
                Z = embed(m, src, batch_size=1024)
                # varimax: the device machine has no scikit-learn (the sparse step after it runs in numpy/sklearn on
                # the host either way; what the device changes is Z and the correlations)
                bases[name] = readable_basis(Z, lambda mean, M, src=src, Z=Z: input_correlations(src, Z, mean, M),
                                             "varimax")
            res["nb_readable_weights_max_abs_diff_gpu_vs_cpu"] = float(np.abs(bases["gpu"]["weights"]
                                                                             - bases["cpu"]["weights"]).max())
            # training input computed from the counts (what genodae train reads from a prepared file) on the GPU
            lognorm = make_source(LogNormalizedCounts(C, np.ones(C.shape[0])), lo, hi, gpu, clip=True, counts=C)
            res["counts_input_max_abs_diff_vs_x"] = float((lognorm(va) - src_gpu(va)).abs().max())
            res["counts_input_placement"] = lognorm.placement
        for name in ("cpu", "gpu_fp32", "gpu_bf16"):
            res[f"{key}_trained_final_val_loss_{name}"] = runs[name][1].val_loss[-1]
        v = {k: runs[k][1].val_loss[-1] for k in runs}
        res[f"{key}_trained_val_loss_rel_diff_gpu_fp32_vs_cpu"] = abs(v["gpu_fp32"] - v["cpu"]) / abs(v["cpu"])
        res[f"{key}_trained_val_loss_rel_diff_gpu_bf16_vs_cpu"] = abs(v["gpu_bf16"] - v["cpu"]) / abs(v["cpu"])
    return res


def throughput(gpu: torch.device, n_cells: int, batch_sizes: list[int], epochs: int,
               likelihood: str = "nb") -> list[dict]:
    t0 = time.perf_counter()
    C, X = _counts_and_input(n_cells, seed=0)
    t_gen = time.perf_counter() - t0
    lo, hi = _scaling(X)
    t0 = time.perf_counter()
    src = make_source(X, lo, hi, gpu, clip=True, counts=C if likelihood != "normal" else None)
    sync(gpu)
    t_upload = time.perf_counter() - t0
    del X, C
    rows = []
    for bs in batch_sizes:
        lr = 1e-3 * (bs / 128) ** 0.5  # documented rule: lr grows with sqrt(batch size) for Adam
        cfg = DAEConfig(epochs=epochs, patience=0, batch_size=bs, lr=lr, val_fraction=0.01, seed=0, amp=True,
                        gene_likelihood=likelihood)
        tr, va = split_cells(n_cells, cfg.val_fraction, 0)
        torch.manual_seed(0)
        m = build_module(2000, cfg, cfg.resolved_output_activation(likelihood), likelihood)
        # warm-up epoch (CUDA context, kernels, allocator), not timed
        fit(m, src, DAEConfig(**{**cfg.to_dict(), "hidden": cfg.hidden, "epochs": 1}), train_idx=tr[:200_000],
            val_idx=va, progress=False)
        sync(gpu)
        if gpu.type == "cuda":
            torch.cuda.reset_peak_memory_stats(gpu)
        h = fit(m, src, cfg, train_idx=tr, val_idx=va, progress=False)
        sync(gpu)
        rows.append({
            "cells": n_cells, "genes": 2000, "likelihood": likelihood, "batch_size": bs, "lr": lr, "epochs": h.epochs_run,
            "seconds": h.seconds, "cells_per_s_per_epoch": len(tr) * h.epochs_run / h.seconds,
            "final_train_loss": h.train_loss[-1], "final_val_loss": h.val_loss[-1],
            "placement": src.placement,
            "peak_gpu_mem_gb": torch.cuda.max_memory_allocated(gpu) / 1e9 if gpu.type == "cuda" else float("nan"),
            "data_gen_s": t_gen, "upload_s": t_upload,
        })
        print(f"  {n_cells:>9,} cells  {likelihood:>7}  batch {bs:>5}  {rows[-1]['cells_per_s_per_epoch']:>12,.0f} cells/s/epoch  "
              f"val {h.val_loss[-1]:.4f}", flush=True)
    del src
    if gpu.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    p = parser(__doc__, full=True)
    p.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--likelihoods", nargs="+", default=["normal", "nb"], choices=LIKELIHOODS,
                   help="gene likelihoods to time (every one is checked for correctness)")
    p.add_argument("--check-cells", type=int, default=20_000, help="cells of the correctness check")
    p.add_argument("--device", default="cuda", help="cuda, or cpu to exercise the script without a GPU")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    gpu = torch.device(args.device)
    if gpu.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script is for a GPU machine (--device cpu to exercise it)")
    name = torch.cuda.get_device_name(gpu) if gpu.type == "cuda" else "cpu (stand-in for a GPU)"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    check = correctness(gpu, args.check_cells)
    print("correctness (GPU vs CPU):")
    for k, v in check.items():
        print(f"  {k:48s} {v:.3g}" if isinstance(v, float) else f"  {k:48s} {v}")
    tp = []
    for n in args.cells:
        for lik in args.likelihoods:
            tp += throughput(gpu, n, args.batch_sizes, args.epochs, lik)
    print("\n| cells | genes | likelihood | batch | lr | epochs | cells/s per epoch | peak GPU mem (GB) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in tp:
        print(f"| {r['cells']:,} | {r['genes']} | {r['likelihood']} | {r['batch_size']} | {r['lr']:.2g} | {r['epochs']} | "
              f"{r['cells_per_s_per_epoch']:,.0f} | {r['peak_gpu_mem_gb']:.2f} |")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "date": utc_now(), "gpu": name,
            "torch": torch.__version__, "machine": machine(), "correctness": check, "throughput": tp,
        }, indent=1))


if __name__ == "__main__":
    main()
