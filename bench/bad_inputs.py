"""Run every bad-input case of tests/test_bad_input.py through the real CLI and tabulate what a user sees.

    python bench/bad_inputs.py                      # writes bench/results/bad_inputs.md (about 2 min on 2 cores)
    python bench/bad_inputs.py --jobs 4 --out x.md

The test module is the one source of the cases, and this script imports nothing from tests/: it runs the test
``test_cases_export_for_the_bench`` in a pytest process with ``$GENODAE_BAD_INPUTS_EXPORT`` set to a scratch
folder, which builds the inputs there (``build_inputs``, on the 300 × 200 synthetic counts of tests/conftest.py)
and writes the cases, resolved on them, to ``cases.json`` beside them. Each case then runs as
``python -m genodae -q …`` in its own process (as a user or a Snakemake rule would run it). The table records
the exit code, the exact stderr (``<in>`` = the inputs folder, ``<out>`` = the output path that must not
appear), whether an output was left behind, and whether the inputs stayed byte-identical. A second table shows
the recoverable oddities: exit code 0, what the output holds, and their warnings; it ends with the inputs of
issue 13 (``ODDITIES`` of the test module).
Resource errors are included: an absent CUDA device asked for by name (on a machine without CUDA), and GPU
out-of-memory, produced by a torch forward pre-hook (torch's global, public one; genodae itself is not patched)
that raises ``torch.OutOfMemoryError`` in the first forward pass, i.e. in the first training step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import _common

REPO = _common.REPO
CASES_TEST = "tests/test_bad_input.py::test_cases_export_for_the_bench"  # run by pytest, never imported
EXPORT_ENV = "GENODAE_BAD_INPUTS_EXPORT"

# `python -m genodae ARGS` in which torch raises OOM in the first forward pass (the first training step of
# `genodae train`), through torch's global forward pre-hook: genodae itself is not patched
OOM_RUNNER = (
    "import runpy, sys, torch\n"
    "def oom(module, args): raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')\n"
    "torch.nn.modules.module.register_module_forward_pre_hook(oom)\n"
    "sys.argv[0] = 'genodae'\n"
    "runpy.run_module('genodae', run_name='__main__', alter_sys=True)\n"
)


def _export_cases(work: Path) -> dict:
    """The cases of the test module and their inputs, built in ``work/in`` by pytest; the contents of cases.json."""
    env = {**os.environ, EXPORT_ENV: str(work), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CASES_TEST],
                       capture_output=True, text=True, env=env, timeout=1800, cwd=REPO)
    if r.returncode != 0 or not (work / "cases.json").exists():
        sys.exit(f"pytest {CASES_TEST} failed (exit code {r.returncode}):\n{r.stdout[-4000:]}{r.stderr[-4000:]}")
    return json.loads((work / "cases.json").read_text())


def _snapshot(folder: Path) -> dict[str, str]:
    """md5 of every file under ``folder`` (names included): any write, rename or leftover shows."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _run(argv: list[str], runner: str | None = None) -> tuple[int, str, float]:
    cmd = [sys.executable, "-c", runner, *argv] if runner else [sys.executable, "-m", "genodae", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    return r.returncode, r.stderr, time.perf_counter() - t0


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _result(out_dir: Path) -> str:
    """What an .h5ad output holds: samples × genes, the first sample names, and prepare's value-kind decision."""
    path = out_dir / "out.h5ad"
    if not path.exists():
        return "—"
    import anndata

    a = anndata.read_h5ad(path)
    text = f"{a.n_obs} × {a.n_vars} ({', '.join(map(str, a.obs_names[:2]))}, …)"
    rec = a.uns.get("genodae_prepare", {})
    if "value_kind" in rec:
        text += f"; {rec['value_kind']} from {rec.get('source', 'X')}, {rec.get('transform', '?')}"
    if "genome" in a.var:
        text += f"; var['genome']: {', '.join(sorted(map(str, a.var['genome'].unique())))}"
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bad_inputs.md"))
    ap.add_argument("--jobs", type=int, default=2, help="cases run in parallel (default 2)")
    args = ap.parse_args()

    import anndata
    import torch

    import genodae

    work = Path(tempfile.mkdtemp(prefix="genodae-bad-inputs-"))
    exported = _export_cases(work)
    inp = {k: Path(v) for k, v in exported["inputs"].items()}
    shared = exported["shared_data"]

    def at(argv: list[str], out_dir: Path) -> list[str]:
        return [a.replace("{out}", str(out_dir / "out")) for a in argv]

    FAST = exported["fast"]
    jobs: list[tuple[str, list[str], Path, str | None, str]] = []  # name, argv, out dir, runner, note
    for i, case in enumerate(exported["cases"]):
        out_dir = work / f"out{i:02d}"
        out_dir.mkdir()
        jobs.append((case["name"], at(case["argv"], out_dir), out_dir, None,
                     "known gap: " + case["gap"] if case["gap"] else ""))
    extra = [
        ("CUDA device asked for by name, none present",
         ["train", str(inp["prepared.h5ad"]), "-o", "{out}", *FAST, "--device", "cuda"], None,
         "" if not torch.cuda.is_available() else "this machine has CUDA: the case does not apply"),
        ("GPU out of memory in training (torch made to raise torch.OutOfMemoryError in the first training step)",
         ["train", str(inp["prepared.h5ad"]), "-o", "{out}", *FAST], OOM_RUNNER, ""),
    ]
    for j, (name, argv, runner, note) in enumerate(extra):
        out_dir = work / f"extra{j}"
        out_dir.mkdir()
        jobs.append((name, at(argv, out_dir), out_dir, runner, note))

    zero = anndata.read_h5ad(inp["counts.h5ad"])  # the synthetic counts of the tests, as build_inputs wrote them
    X = zero.X.tolil()
    X[:, [3, 50, 120]] = 0
    X[[7, 8], :] = 0
    zero.X = X.tocsr()
    genodae.io.write_h5ad(zero, inp["dir"] / "zero_genes_cells.h5ad")
    before = _snapshot(inp["dir"])
    d = inp["dir"]
    recoverable = [
        ("NaN with --missing drop", ["prepare", f"{d}/nan.csv", "-o", "{out}.h5ad", "--missing", "drop"]),
        ("NaN with --missing impute", ["prepare", f"{d}/nan.csv", "-o", "{out}.h5ad", "--missing", "impute"]),
        ("sample sheet matching some samples",
         ["prepare", f"{d}/table.csv", "-o", "{out}.h5ad", "--obs", f"{d}/sheet_some.csv"]),
        ("duplicate gene and sample names (default make_unique)", ["prepare", f"{d}/duplicates.csv", "-o", "{out}.h5ad"]),
        ("some all-zero genes and cells",
         ["run", f"{d}/zero_genes_cells.h5ad", "-o", "{out}", "--n-top-genes", "0", *FAST]),
        ("a single sample embedded with a saved model (.h5ad)", ["embed", f"{d}/single.h5ad", f"{d}/model", "-o", "{out}.h5ad"]),
        ("a single sample embedded with a saved model (.csv)",
         ["embed", f"{d}/single.csv", f"{d}/model", "-o", "{out}.h5ad"]),
        ("model genes absent, with --allow-missing-genes",
         ["embed", f"{d}/partial.h5ad", f"{d}/model", "-o", "{out}.h5ad", "--allow-missing-genes"]),
    ]
    # issue 13: what users really have (those whose inputs exist: the shared data may be absent)
    recoverable += [(odd["name"], odd["argv"]) for odd in exported["oddities"]]
    rec_jobs = []
    for k, (name, argv) in enumerate(recoverable):
        out_dir = work / f"ok{k}"
        out_dir.mkdir()
        rec_jobs.append((name, at(argv, out_dir), out_dir, None, ""))

    def go(job):
        name, argv, out_dir, runner, note = job
        rc, err, secs = _run(["-q", *argv], runner)
        return job, rc, err, secs, sorted(p.name for p in out_dir.iterdir())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(go, jobs + rec_jobs))
    wall = time.perf_counter() - t0
    unchanged = _snapshot(inp["dir"]) == before

    def shown(text: str, out_dir: Path) -> str:
        return (text.replace(str(out_dir / "out"), "<out>").replace(str(inp["dir"]), "<in>")
                .replace(shared, "<shared>"))

    lines = [
        "# Bad inputs: what the CLI says",
        "",
        f"Generated by `python bench/bad_inputs.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} "
        f"(genodae {genodae.__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.machine()}; CUDA {'available' if torch.cuda.is_available() else 'absent'}); "
        f"{len(results)} processes in {wall:.0f} s with {args.jobs} in parallel.",
        "",
        "Each case runs as `python -m genodae -q ARGS` in its own process. `<in>` is the folder of inputs built by "
        "`build_inputs` in tests/test_bad_input.py, `<out>` the output path. *Lines* counts non-empty stderr "
        "lines (the promise: 1, no traceback). *Output* lists what the command left in its output folder (the "
        "promise: nothing). The same cases are tests (library and CLI) in tests/test_bad_input.py; rows marked "
        "*known gap* are strict xfails there, with the fix named in the note.",
        "",
        f"Inputs byte-identical after all {len(results)} runs: **{'yes' if unchanged else 'NO'}**.",
        "",
        "## Errors (exit code 2, one line)",
        "",
        "| # | case | command | exit | lines | output | stderr |",
        "|---|---|---|---|---|---|---|",
    ]
    n_ok = 0
    for i, ((name, argv, out_dir, runner, note), rc, err, _secs, left) in enumerate(results[: len(jobs)], 1):
        err_lines = [ln for ln in err.splitlines() if ln.strip()]
        good = rc == 2 and len(err_lines) == 1 and "Traceback" not in err and not left
        n_ok += good
        text = err_lines[0] if len(err_lines) == 1 else ("… " + err_lines[-1] if err_lines else "(nothing)")
        if "Traceback" in err:
            text = f"TRACEBACK … {err_lines[-1]}"
        command = "genodae " + " ".join(shown(a, out_dir) for a in argv)
        if runner:
            command += " *(torch made to raise OOM in the first training step)*"
        case_cell = name + (f" — *{note}*" if note else "")
        lines.append(f"| {i} | {_cell(case_cell)} | `{_cell(command)}` | {rc} | {len(err_lines)} | "
                     f"{_cell(', '.join(left)) or '—'} | `{_cell(shown(text, out_dir))}` |")
    lines += [
        "",
        f"{n_ok} of {len(jobs)} cases keep every promise (exit 2, one line, no traceback, no output).",
        "",
        "## Recoverable oddities (exit code 0, a warning)",
        "",
        "With `-q` only warnings reach stderr: the `genodae:` lines are shown, and any other line (from a library "
        "genodae calls) as *(not genodae)*. `<shared>` is the shared real-data folder. *Result* is what the output .h5ad holds: samples × genes, the first "
        "sample names, and prepare's decision (value kind, source, transform). Rows from *10x .h5 of 2 genomes* on "
        "are the inputs of issue 13 (`ODDITIES` in tests/test_bad_input.py, each a test there).",
        "",
        "| # | case | command | exit | outputs | result | warnings on stderr |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, ((name, argv, out_dir, _runner, _note), rc, err, _secs, left) in enumerate(results[len(jobs):], 1):
        warn = [shown(ln, out_dir) for ln in err.splitlines() if ln.startswith("genodae:")]
        other = [shown(ln, out_dir) for ln in err.splitlines() if ln.strip() and not ln.startswith("genodae:")]
        if other:
            warn.append("*(not genodae)* " + other[0] + (f" (+{len(other) - 1} more)" if len(other) > 1 else ""))
        command = "genodae " + " ".join(shown(a, out_dir) for a in argv)
        lines.append(f"| {i} | {_cell(name)} | `{_cell(command)}` | {rc} | {_cell(', '.join(left))} | "
                     f"{_cell(_result(out_dir))} | {_cell(chr(10).join(warn)) or '—'} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}: {n_ok}/{len(jobs)} error cases keep every promise; inputs unchanged: {unchanged}; "
          f"{wall:.0f} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if unchanged else 1


if __name__ == "__main__":
    sys.exit(main())
