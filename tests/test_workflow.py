"""The Snakemake workflow, run for real on copies of the repository in tmp_path (CPU, tiny settings).

Every test works in a fresh copy of the files a clone has (Snakefile, workflow/, config/, profiles/,
genodae/), so nothing is written into the checkout. Snakemake runs in a subprocess with --cores 2 and a
bounded timeout. The settings are made tiny through the copy's config/config.yaml (few epochs, small
layers) so each run takes seconds; the session-scoped example run is shared by the tests that only read it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from genodae.config import (
    ACTIVATIONS,
    DECODERS,
    GENE_LIKELIHOODS,
    HVG_FLAVORS,
    INPUT_KINDS,
    LOSS_ON,
    NORMS,
    OPTIMIZERS,
    PRESETS,
    SCALINGS,
    DAEConfig,
    PrepareConfig,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
# Copied into each test's working folder: what a fresh clone holds (minus tests, docs, CI).
CLONE = ["Snakefile", "workflow", "config", "profiles", "genodae", "pyproject.toml"]
# DAEConfig fields the workflow sets itself instead of taking them from config `model`.
NOT_IN_MODEL_SCHEMA = {"num_threads": "the rule's threads (resources.train.threads) set it",
                       "batch_key": "the dataset sheet's batch_key column sets it, per dataset"}
# PrepareConfig fields the workflow sets itself instead of taking them from config `prepare`.
NOT_IN_PREPARE_SCHEMA = {"batch_key": "the dataset sheet's batch_key column sets it, per dataset"}
# Tiny settings: a few epochs of a small network.
FAST_MODEL = {"epochs": 3, "hidden": [16], "batch_size": 64, "patience": 0}
TIMEOUT = 300  # seconds for one snakemake call; every wait in these tests is bounded


# ---- helpers -----------------------------------------------------------------------------------------


def make_clone(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake")
    for name in CLONE:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def edit_config(workdir: Path, **sections) -> dict:
    """Update sections of the copy's config/config.yaml (dicts are merged one level deep)."""
    path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def snakemake(workdir: Path, *args: str, timeout: float = TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake in `workdir` (a new process group, killed as a whole on timeout)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` = this venv
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"snakemake {' '.join(args)} did not finish in {timeout}s:\n{out[-4000:]}")
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, "")
    if check and proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake {' '.join(args)} failed (rc {proc.returncode}):\n{out[-6000:]}\n{logs}")
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """{rule: count} from the 'Job stats' table of a snakemake (dry) run."""
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        jobs[parts[0]] = int(parts[1])
    jobs.pop("total", None)
    return jobs


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def write_synthetic(folder: Path, n_cells: int = 60, n_genes: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """A cells x genes counts CSV with two planted groups, and a sample sheet with the group labels."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n_cells)
    mu = rng.lognormal(0.5, 0.8, n_genes)[None, :] * np.where(
        (group[:, None] == 1) & (np.arange(n_genes)[None, :] < n_genes // 4), 6.0, 1.0
    )
    counts = rng.poisson(mu)
    cells = [f"cell{i:03d}" for i in range(n_cells)]
    genes = [f"GENE{j:03d}" for j in range(n_genes)]
    folder.mkdir(parents=True, exist_ok=True)
    matrix = folder / "synth_counts.csv"
    with matrix.open("w") as fh:
        fh.write("cell," + ",".join(genes) + "\n")
        for name, row in zip(cells, counts, strict=True):
            fh.write(name + "," + ",".join(map(str, row)) + "\n")
    sheet = folder / "synth_samples.tsv"
    sheet.write_text("sample\tgroup\n" + "".join(f"{c}\tg{g}\n" for c, g in zip(cells, group, strict=True)))
    return matrix, sheet


def use_synthetic(workdir: Path) -> None:
    """Point the copy's dataset sheet at a tiny synthetic dataset (CSV counts + sample sheet)."""
    matrix, sheet = write_synthetic(workdir / "data")
    (workdir / "config" / "datasets.tsv").write_text(
        "name\tpath\tsample_sheet\toptions\tlabels\n"
        f"synth\t{matrix.relative_to(workdir)}\t{sheet.relative_to(workdir)}\torientation=samples_by_genes\tgroup\n"
    )


def write_two_batches(folder: Path) -> dict[str, Path]:
    """Two plates of one experiment as two count CSVs (cells x genes) with colliding cell names, a plate
    effect (gene-wise scale factors) on the second, one extra gene in the first, and a sample sheet per plate
    with a planted group label."""
    rng = np.random.default_rng(1)
    n_genes = 40
    genes = [f"GENE{j:03d}" for j in range(n_genes)]
    base = rng.lognormal(0.5, 0.8, n_genes)
    files = {}
    for plate, n_cells, effect in (("plateA", 50, np.ones(n_genes)), ("plateB", 40, rng.lognormal(0, 0.7, n_genes))):
        group = rng.integers(0, 2, n_cells)
        mu = base[None, :] * effect[None, :] * np.where(
            (group[:, None] == 1) & (np.arange(n_genes)[None, :] < n_genes // 4), 6.0, 1.0)
        counts = rng.poisson(mu)
        names = [f"cell{i:03d}" for i in range(n_cells)]  # the same barcodes on both plates
        plate_genes = genes + (["EXTRA"] if plate == "plateA" else [])
        if plate == "plateA":
            counts = np.column_stack([counts, rng.poisson(1.0, n_cells)])
        folder.mkdir(parents=True, exist_ok=True)
        matrix = folder / f"{plate}.csv"
        with matrix.open("w") as fh:
            fh.write("cell," + ",".join(plate_genes) + "\n")
            for name, row in zip(names, counts, strict=True):
                fh.write(name + "," + ",".join(map(str, row)) + "\n")
        sheet = folder / f"{plate}_samples.tsv"
        sheet.write_text("sample\tgroup\n" + "".join(f"{c}\tg{g}\n" for c, g in zip(names, group, strict=True)))
        files[plate] = matrix
        files[f"{plate}_samples"] = sheet
    return files


def use_two_batches(workdir: Path, how: str = "paths") -> None:
    """Point the copy's dataset sheet at the two plates: `paths` (a;b with one sample sheet each) or `sheet`
    (a batches sheet)."""
    f = {k: v.relative_to(workdir).as_posix() for k, v in write_two_batches(workdir / "data").items()}
    header = "name\tpath\tsample_sheet\toptions\tlabels\tbatch_key\n"
    if how == "paths":
        row = (f"plates\t{f['plateA']};{f['plateB']}\t{f['plateA_samples']};{f['plateB_samples']}\t"
               "orientation=samples_by_genes; n_top_genes=0\tgroup\tplate\n")
    else:
        (workdir / "data" / "batches.tsv").write_text(
            "path\tbatch\tobs\tprotocol\nplateA.csv\tA\tplateA_samples.tsv\tx\nplateB.csv\tB\tplateB_samples.tsv\ty\n")
        row = "plates\tbatches:data/batches.tsv\t\torientation=samples_by_genes; n_top_genes=0\tgroup\tplate\n"
    (workdir / "config" / "datasets.tsv").write_text(header + row)


def run_dirs(results: Path, dataset: str) -> list[Path]:
    return sorted(p.parent.parent for p in (results / dataset).glob("k*/seed*/model/model.json"))


# ---- the config schema is derived from genodae.config ------------------------------------------------


def test_schema_model_section_matches_daeconfig():
    props = SCHEMA["properties"]["model"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(DAEConfig)}
    defaults = DAEConfig().to_dict()
    assert set(props) - {"preset"} <= set(fields), "schema has model keys DAEConfig does not know"
    assert set(fields) - set(props) == set(NOT_IN_MODEL_SCHEMA), "DAEConfig fields missing from the schema"
    for name in set(props) - {"preset"}:
        assert props[name]["default"] == defaults[name], f"default of model.{name} differs from DAEConfig"
        assert type(props[name]["default"]) is type(defaults[name]), f"type of model.{name} default"
        assert props[name].get("description"), f"model.{name} has no description"
    assert props["preset"]["default"] == "default"
    assert props["preset"]["enum"] == list(PRESETS)
    for key, choices in {
        "activation": ACTIVATIONS, "latent_activation": ACTIVATIONS, "output_activation": ("auto", *ACTIVATIONS),
        "norm": NORMS, "decoder": DECODERS, "gene_likelihood": GENE_LIKELIHOODS, "loss_on": LOSS_ON, "optimizer": OPTIMIZERS,
    }.items():
        assert props[key]["enum"] == list(choices), f"choices of model.{key} differ from genodae.config"
    # every sweepable setting is a model setting
    sweep = SCHEMA["properties"]["sweep"]["properties"]
    assert set(sweep) == set(props) - {"preset", "device", "amp", "data_placement"}


def test_schema_prepare_section_matches_prepareconfig():
    props = SCHEMA["properties"]["prepare"]["properties"]
    defaults = {k: v for k, v in dataclasses.asdict(PrepareConfig()).items() if k not in NOT_IN_PREPARE_SCHEMA}
    assert set(props) == set(defaults)
    for name, value in defaults.items():
        assert props[name]["default"] == value and type(props[name]["default"]) is type(value), name
    assert props["scaling"]["enum"] == list(SCALINGS)
    assert props["hvg_flavor"]["enum"] == list(HVG_FLAVORS)
    assert props["input_kind"]["enum"] == list(INPUT_KINDS)


def test_config_yaml_lists_schema_defaults():
    """config/config.yaml shows every key with its default value, and nothing else."""
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    props = SCHEMA["properties"]
    assert set(cfg) == set(props)
    for section in ("prepare", "model", "train", "embed", "plots", "signatures"):
        expected = {k: v["default"] for k, v in props[section]["properties"].items()}
        if section == "signatures":  # a nested section: shown with its own defaults
            expected["survival"] = {k: v["default"] for k, v in
                                    props[section]["properties"]["survival"]["properties"].items()}
        assert cfg[section] == expected, section
    for rule, res in cfg["resources"].items():
        assert res == {k: v["default"] for k, v in props["resources"]["properties"][rule]["properties"].items()}
    assert cfg["sweep"] == {}


def test_every_rule_declares_log_benchmark_conda_threads_resources():
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=rule \w+:)", text)[1:]:
            name = block.split(":", 1)[0]
            for directive in ("log:", "benchmark:", "conda:", "threads:", "resources:", "mem_mb=", "runtime="):
                assert directive in block, f"rule {name} in {smk.name} lacks {directive}"
    # gpu (and nodes, tasks, mpi, gres for several nodes) from resources.train, through workflow/launch.py
    assert '**launch.train_resources(config["resources"]["train"])' in (REPO / "workflow/rules/train.smk").read_text()


# ---- planning ----------------------------------------------------------------------------------------


def test_bare_dry_run_in_fresh_clone_plans_every_step(tmp_path):
    """`snakemake -n` with nothing edited plans the whole example (rule all is the default target)."""
    work = make_clone(tmp_path / "clone")
    out = snakemake(work, "-n").stdout
    jobs = planned_jobs(out)
    # signatures of the one run and the association of its nodes with the sheet's label column; no gene sets,
    # one seed and one latent size: no enrichment, ensemble or sweep summary
    assert jobs == {"example": 1, "prepare": 1, "train": 1, "embed": 1, "export": 1, "plot": 1,
                    "gather_runs": 1, "signatures": 1, "associate": 1, "all": 1}, out[-3000:]


def test_lint_is_clean(tmp_path):
    work = make_clone(tmp_path / "clone")
    out = snakemake(work, "--lint").stdout
    assert "Congratulations, your workflow is in a good condition!" in out, out
    assert "Lints for" not in out


def test_slurm_profile_parses_and_requests_the_rule_resources(tmp_path):
    """profiles/slurm is a valid profile: the site placeholders and the config's resources reach every job."""
    work = make_clone(tmp_path / "clone")
    out = snakemake(work, "-n", "--profile", "profiles/slurm").stdout
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"\nrule (\w+):\n(.*?)(?=\n\n|\Z)", out, re.S)}
    assert set(blocks) >= {"example", "prepare", "train", "embed", "export", "plot"}, out[-3000:]
    for rule, block in blocks.items():
        assert "slurm_account=CHANGE-ME" in block and "slurm_partition=CHANGE-ME" in block, rule
    assert re.search(r"runtime=240\b", blocks["train"]) and "mem_mb=8000" in blocks["train"]
    assert "gpu=0" in blocks["train"] and "threads: 2" in blocks["train"]
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert "slurm-status-command" not in profile, "a real cluster keeps the plugin's default status command"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ('model={"corruption": 1.5}', "model.corruption"),
        ('model={"epochs": 0}', "model.epochs"),
        ('model={"activation": "swish"}', "model.activation"),
        ('model={"epoch": 3}', "model.epoch"),
        ('model={"loss": "bce"}', "model.loss is now gene_likelihood (mse → normal, bce → bernoulli"),
        ('resources={"train": {"gpu": -1}}', "resources.train.gpu"),
        ('resources={"train": {"nodes": 0}}', "resources.train.nodes"),
        ('sweep={"n_latent": []}', "sweep.n_latent"),
        ('signatures={"gene_sets": ["no/such.gmt"]}', "signatures.gene_sets.0: GMT file 'no/such.gmt' not found"),
        ('signatures={"survival": {"duration": "os_months"}}', "signatures.survival: set both duration and event"),
    ],
)
def test_invalid_config_value_fails_fast_naming_the_key(tmp_path, override, expected):
    work = make_clone(tmp_path / "clone")
    start = time.monotonic()
    res = snakemake(work, "--cores", "2", "--config", override, check=False)
    assert res.returncode != 0
    assert "invalid config" in res.stdout and expected in res.stdout, res.stdout
    assert not (work / "results").exists() and not (work / "resources").exists(), "jobs ran despite the error"
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(
    ("sheet", "expected"),
    [
        ("name\tpath\nbad\tno/such/file.h5ad\n", "path 'no/such/file.h5ad' not found"),
        ("name\tpath\nx\texample\nx\texample\n", "appears twice"),
        ("name\tpath\tcolour\nx\texample\tred\n", "unknown column(s) colour"),
        ("name\tpath\toptions\nx\texample\tmissing=ignore\n", "option missing must be one of"),
        ("name\tpath\toptions\nx\texample\tn_top=5\n", "unknown option 'n_top'"),
        ("name\tpath\nbad name\texample\n", "column name"),
        ("name\tpath\nx\texample;no/such.csv\n", "path 'no/such.csv' not found"),
        ("name\tpath\nx\texample;\n", "has an empty entry"),
        ("name\tpath\tsample_sheet\nx\tconfig/config.yaml;Snakefile\tSnakefile\n",
         "sample_sheet lists 1 sheet(s) for 2 file(s)"),
        ("name\tpath\nx\tbatches:no/such.tsv\n", "batches sheet 'no/such.tsv' not found"),
        ("name\tpath\nx\tbatches:config/README.md\n", "has no 'path' column"),
        ("name\tpath\toptions\nx\texample\tbatch_key=plate\n", "batch_key is a column of its own"),
        ("# a comment\nname\tpath\n\n# another\nbad name\texample\n", "line 5 (bad name)"),
    ],
)
def test_bad_dataset_sheet_fails_with_a_clear_message(tmp_path, sheet, expected):
    work = make_clone(tmp_path / "clone")
    (work / "config" / "datasets.tsv").write_text(sheet)
    res = snakemake(work, "-n", check=False)
    assert res.returncode != 0
    assert "dataset sheet config/datasets.tsv" in res.stdout and expected in res.stdout, res.stdout


def test_sweep_paths_and_train_options_in_dry_run(tmp_path):
    """Swept settings other than n_latent/seed get their own folder; every run gets its own settings."""
    work = make_clone(tmp_path / "clone")
    edit_config(work, model={"preset": "default", "epochs": 7},
                sweep={"n_latent": [4, 8], "corruption": [0.1, 0.3], "hidden": [[16], []]})
    out = snakemake(work, "-n", "--forceall", "-p").stdout
    assert planned_jobs(out)["train"] == 8
    for k in (4, 8):
        for c in (0.1, 0.3):
            for h, flag in (("16", "--hidden=16"), ("none", "--hidden=''")):
                run = f"k{k}/seed0/corruption{c}_hidden{h}"
                line = next(x for x in out.splitlines() if f"results/pbmc68k/{run}/model " in x)
                assert f"--n-latent {k}" in line and f"--corruption {c}" in line and flag in line
                assert "--epochs 7" in line and "--seed 0" in line and "--device cpu" in line
    # settings left at their default are not passed (so a preset can fill them)
    assert "--activation" not in out and "--lr" not in out


# ---- real runs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def example_run(tmp_path_factory) -> Path:
    """The default config (built-in example) with tiny training settings, run to completion once."""
    work = make_clone(tmp_path_factory.mktemp("example") / "clone")
    edit_config(work, model=FAST_MODEL)
    start = time.monotonic()
    snakemake(work, "--cores", "2")
    (work / "wall_time.txt").write_text(f"{time.monotonic() - start:.1f}\n")
    return work


def test_example_run_writes_every_output(example_run):
    res, run = example_run / "results" / "pbmc68k", example_run / "results" / "pbmc68k" / "k32" / "seed0"
    for rel in ("model/model.safetensors", "model/model.json", "embedded.h5ad", "embedding.tsv",
                "gene_weights.tsv", "figures/loss.png", "figures/umap.png"):
        assert (run / rel).stat().st_size > 0, rel
    assert (res / "prepared.h5ad").is_file() and (example_run / "resources/example/pbmc68k.h5ad").is_file()
    assert not (run / "model.ckpt").exists(), "the checkpoint outlived the finished model"
    for png in run.glob("figures/*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    emb = read_tsv(run / "embedding.tsv")
    assert len(emb) == 700 and len(emb[0]) == 1 + 32
    weights = read_tsv(run / "gene_weights.tsv")
    assert 0 < len(weights) <= 765 and len(weights[0]) == 1 + 32
    meta = json.loads((run / "model/model.json").read_text())
    assert meta["config"]["n_latent"] == 32 and meta["config"]["seed"] == 0 and meta["config"]["epochs"] == 3
    assert meta["config"]["device"] == "cpu" and meta["config"]["hidden"] == [16]
    (row,) = read_tsv(res / "runs.tsv")
    assert row["run"] == "k32/seed0" and row["epochs_run"] == "3"
    assert float(row["final_val_loss"]) > 0
    # signatures (sparse nodes), the heatmap, the transform, and the association with bulk_labels
    sig = run / "signatures"
    for rel in ("signatures.tsv", "weights.tsv", "activities.tsv", "transform.json", "heatmap.png",
                "association_bulk_labels.tsv", "association_bulk_labels.png"):
        assert (sig / rel).stat().st_size > 0, rel
    table = read_tsv(sig / "signatures.tsv")
    assert table and {r["direction"] for r in table} <= {"pos", "neg"}
    assert {r["node"] for r in table} <= {f"vnode{j}" for j in range(32)}
    assert all(abs(float(r["zscore"])) > 2.5 for r in table if r["beyond_cutoff"] == "True")
    assert len(read_tsv(sig / "activities.tsv")) == 700
    assoc = read_tsv(sig / "association_bulk_labels.tsv")
    assert len(assoc) == 32 and {r["test"] for r in assoc} == {"kruskal"}
    assert all(0 <= float(r["fdr"]) <= 1 for r in assoc)
    assert json.loads((sig / "transform.json").read_text())["format"] == "genodae-transform"
    assert not list(res.glob("**/enrichment.tsv")) and not (res / "sweep").exists()
    assert not list(res.glob("k*/ensemble"))
    for rule in ("prepare", "k32/seed0/train", "k32/seed0/embed", "k32/seed0/export", "k32/seed0/plot",
                 "k32/seed0/signatures", "k32/seed0/associate_bulk_labels"):
        assert (example_run / "logs/pbmc68k" / f"{rule}.log").is_file(), rule
        assert (example_run / "benchmarks/pbmc68k" / f"{rule}.tsv").is_file(), rule


def test_dry_run_after_complete_run_has_nothing_to_do(example_run):
    out = snakemake(example_run, "-n").stdout
    assert "Nothing to be done" in out, out[-3000:]


def test_changing_a_training_parameter_reruns_training_and_downstream_only(example_run, tmp_path):
    work = tmp_path / "clone"
    shutil.copytree(example_run, work, symlinks=True)  # copy2 keeps the mtimes; .snakemake comes along
    run = work / "results/pbmc68k/k32/seed0"
    before = {p: p.stat().st_mtime_ns for p in (work / "results/pbmc68k/prepared.h5ad", run / "model/model.json")}
    edit_config(work, model={"lr": 0.01})
    out = snakemake(work, "-n").stdout
    jobs = planned_jobs(out)
    assert jobs == {"train": 1, "embed": 1, "export": 1, "plot": 1, "gather_runs": 1, "signatures": 1,
                    "associate": 1, "all": 1}, out[-3000:]
    # re-train for real (into the existing model folder), then only the downstream steps are left
    snakemake(work, "--cores", "2", str(run.relative_to(work) / "model/model.json"))
    assert (work / "results/pbmc68k/prepared.h5ad").stat().st_mtime_ns == before[work / "results/pbmc68k/prepared.h5ad"]
    assert (run / "model/model.json").stat().st_mtime_ns != before[run / "model/model.json"]
    assert json.loads((run / "model/model.json").read_text())["config"]["lr"] == 0.01
    assert planned_jobs(snakemake(work, "-n").stdout) == {
        "embed": 1, "export": 1, "plot": 1, "gather_runs": 1, "signatures": 1, "associate": 1, "all": 1}
    # and a preparation setting reruns everything from prepare on
    edit_config(work, prepare={"n_top_genes": 500})
    assert planned_jobs(snakemake(work, "-n").stdout)["prepare"] == 1


def _processes_in(folder: Path, *words: str) -> list[int]:
    """Ids of processes whose working folder is `folder` and whose command line holds all `words`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if Path(os.readlink(proc / "cwd")) == folder and all(w in cmd for w in words):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc to find the training process")
def test_killed_training_job_resumes_from_its_checkpoint(tmp_path):
    """A training job killed mid-way (as a cluster kills a job over its time limit) is retried by Snakemake
    and continues from its checkpoint instead of starting again."""
    work = make_clone(tmp_path / "clone").resolve()
    use_synthetic(work)
    edit_config(work, model={**FAST_MODEL, "epochs": 1500, "hidden": [8]}, train={"checkpoint_every": 20},
                resources={"train": {"threads": 1, "mem_mb": 500, "runtime": 10, "gpu": 0}})
    target = "results/synth/k32/seed0/model/model.json"
    ckpt = work / "results/synth/k32/seed0/model.ckpt/checkpoint.safetensors"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--retries", "1", target],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert ckpt.exists(), "no checkpoint appeared"
        victims = _processes_in(work, "genodae", "train")
        assert victims, "training process not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, out[-4000:]
    assert "Trying to restart job" in out or "attempt: 2" in out or "attempt 2" in out, out[-4000:]
    log = (work / "logs/synth/k32/seed0/train.log").read_text()
    resumed = re.search(r"resumed from \S+ at epoch (\d+)", log)
    assert resumed and int(resumed.group(1)) >= 20, log[-2000:]
    meta = json.loads((work / target).read_text())
    assert meta["history"]["epochs_run"] == 1500 and len(meta["history"]["train_loss"]) == 1500
    assert not ckpt.parent.exists()


@pytest.mark.slow
def test_report_collects_figures_and_tables(example_run, tmp_path):
    work = tmp_path / "clone"
    shutil.copytree(example_run, work, symlinks=True)
    snakemake(work, "--report", "report.html")
    html = (work / "report.html").read_text(errors="replace")
    assert len(html) > 10_000
    for name in ("loss.png", "umap.png", "runs.tsv", "embedding.tsv", "gene_weights.tsv", "signatures.tsv",
                 "heatmap.png", "association_bulk_labels.tsv"):
        assert name in html, name


def write_gmt(path: Path) -> Path:
    """Gene sets for the synthetic data: the planted module (GENE000-009, up in group g1) and a random set."""
    path.write_text("PLANTED\tplanted module\t" + "\t".join(f"GENE{j:03d}" for j in range(10)) + "\n"
                    "OTHER\tunplanted genes\t" + "\t".join(f"GENE{j:03d}" for j in range(20, 30)) + "\n")
    return path


# The signature outputs the sweep fixture asks for (besides runs.tsv): a run's enrichment, an ensemble's
# signatures and the sweep summary; together they need every training and embedding of the sweep.
SWEEP_SIGNATURE_TARGETS = ("results/synth/k2/seed0/signatures/enrichment.tsv",
                           "results/synth/k2/ensemble/signatures/signatures.tsv",
                           "results/synth/sweep/summary.tsv")


@pytest.fixture(scope="session")
def synthetic_sweep(tmp_path_factory) -> Path:
    """A 2 latent sizes x 2 seeds sweep on the tiny synthetic CSV with a GMT file, run to its runs table and
    its signature outputs (the ensemble and the sweep summary included)."""
    work = make_clone(tmp_path_factory.mktemp("sweep") / "clone")
    use_synthetic(work)
    gmt = write_gmt(work / "data" / "sets.gmt")
    # 40 genes: few pass 2.5 SD, so read signatures at 1 SD; no association tests (the example run has them)
    edit_config(work, model=FAST_MODEL, sweep={"n_latent": [2, 3], "seed": [0, 1]},
                signatures={"gene_sets": [str(gmt.relative_to(work))], "sd_cutoff": 1.0, "groupby": []},
                resources={"train": {"threads": 1, "mem_mb": 500, "runtime": 10, "gpu": 0}})
    start = time.monotonic()
    snakemake(work, "--cores", "2", "results/synth/runs.tsv", *SWEEP_SIGNATURE_TARGETS)
    (work / "wall_time.txt").write_text(f"{time.monotonic() - start:.1f}\n")
    return work


def test_two_seed_two_latent_sweep_on_synthetic_data(synthetic_sweep):
    """A 2 x 2 sweep on a tiny CSV dataset: four runs in k{n}/seed{s} folders, gathered in runs.tsv."""
    work = synthetic_sweep
    res = work / "results" / "synth"
    assert [p.relative_to(res).as_posix() for p in run_dirs(work / "results", "synth")] == [
        "k2/seed0", "k2/seed1", "k3/seed0", "k3/seed1"]
    rows = read_tsv(res / "runs.tsv")
    assert sorted((r["n_latent"], r["seed"]) for r in rows) == [("2", "0"), ("2", "1"), ("3", "0"), ("3", "1")]
    for r in rows:
        meta = json.loads((res / r["run"] / "model/model.json").read_text())
        assert (meta["config"]["n_latent"], meta["config"]["seed"]) == (int(r["n_latent"]), int(r["seed"]))
    seed0, seed1 = ((res / f"k2/seed{s}/model/model.safetensors").read_bytes() for s in (0, 1))
    assert seed0 != seed1, "different seeds gave identical models"


def test_signature_rules_on_two_seed_two_latent_sweep(synthetic_sweep):
    """Signatures, enrichment, the 2-seed ensemble and the sweep summary of a 2 x 2 sweep, read back."""
    res = synthetic_sweep / "results" / "synth"
    genes = {f"GENE{j:03d}" for j in range(40)}
    # a run: signatures at 1 SD of its sparse nodes, and their enrichment against the GMT
    sig = res / "k2/seed0/signatures"
    table = read_tsv(sig / "signatures.tsv")
    assert table and {r["gene"] for r in table} <= genes and {r["node"] for r in table} <= {"vnode0", "vnode1"}
    assert all(abs(float(r["zscore"])) > 1.0 for r in table)
    assert (sig / "heatmap.png").read_bytes()[:4] == b"\x89PNG" and (sig / "enrichment.png").stat().st_size > 0
    enr = read_tsv(sig / "enrichment.tsv")
    assert {r["term"] for r in enr} <= {"PLANTED", "OTHER"} and all(0 <= float(r["fdr"]) <= 1 for r in enr)
    assert all(r["background_size"] == "40" and r["set_size"] == "10" for r in enr)
    # the planted module is found: some signature of the run is enriched for it
    assert min(float(r["fdr"]) for r in enr if r["term"] == "PLANTED") < 0.05, enr
    # the ensemble of seeds 0 and 1 at k=2: consensus weights, support, stability, consensus h5ad
    ens = res / "k2/ensemble"
    support = read_tsv(ens / "support.tsv")
    members = {Path(r["model"]).parent.name for r in support}
    assert members == {"seed0", "seed1"} and all(1 <= int(r["support"]) <= 2 for r in support)
    clusters = sorted({r["cluster"] for r in support})
    weights = read_tsv(ens / "consensus_weights.tsv")
    assert len(weights) == 40 and sorted(weights[0])[:-1] == clusters  # gene + one column per consensus node
    (pair,) = read_tsv(ens / "stability.tsv")
    assert -1 <= float(pair["stability"]) <= 1
    assert len(read_tsv(ens / "consensus_activities.tsv")) == 60 and (ens / "consensus.h5ad").stat().st_size > 0
    # ... and the signatures of its consensus nodes
    csig = read_tsv(ens / "signatures/signatures.tsv")
    assert csig and {r["node"] for r in csig} <= set(clusters)
    assert (ens / "signatures/heatmap.png").stat().st_size > 0
    # the sweep summary: one row per latent size, two seeds each
    summary = read_tsv(res / "sweep/summary.tsv")
    assert [(r["n_latent"], r["n_models"]) for r in summary] == [("2", "2"), ("3", "2")]
    for r in summary:
        assert -1 <= float(r["stability"]) <= 1 and float(r["n_enriched_sets"]) >= 0
    assert (res / "sweep/summary.png").read_bytes()[:4] == b"\x89PNG"
    for log in ("k2/seed0/signatures", "k2/seed0/enrich", "k2/ensemble/ensemble", "k2/ensemble/signatures",
                "sweep/sweep_summary"):
        assert (synthetic_sweep / "logs/synth" / f"{log}.log").is_file(), log
        assert (synthetic_sweep / "benchmarks/synth" / f"{log}.tsv").is_file(), log


def test_signature_jobs_planned_only_when_configured(tmp_path):
    """Enrichment needs gene sets, an ensemble >= 2 seeds, a sweep summary >= 2 latent sizes, survival its
    columns (and only on the datasets named); the switches turn each off."""
    work = make_clone(tmp_path / "clone")
    use_synthetic(work)
    with (work / "config" / "datasets.tsv").open("a") as fh:
        fh.write("pbmc68k\texample\t\t\tbulk_labels\n")
    gmt = write_gmt(work / "data" / "sets.gmt")
    edit_config(work, sweep={"n_latent": [2, 3], "seed": [0, 1]},
                signatures={"gene_sets": [str(gmt.relative_to(work))], "min_support": 2,
                            "survival": {"duration": "time", "event": "status", "event_value": "dead",
                                         "covariates": ["age"], "datasets": ["synth"]}})
    out = snakemake(work, "-n", "-p").stdout
    per_dataset = {"prepare": 1, "train": 4, "embed": 4, "export": 4, "plot": 4, "gather_runs": 1,
                   "signatures": 4, "ensemble": 2, "ensemble_signatures": 2, "enrich": 6, "associate": 6,
                   "sweep_summary": 1}
    assert planned_jobs(out) == {**{k: 2 * v for k, v in per_dataset.items()}, "survival": 6, "example": 1,
                                 "all": 1}, out[-3000:]
    lines = out.splitlines()
    ens = next(x for x in lines if "genodae ensemble" in x and "results/synth/k3/ensemble" in x)
    assert "results/synth/k3/seed0/embedded.h5ad results/synth/k3/seed1/embedded.h5ad" in ens
    assert "--min-support 2" in ens and "--rotation sparse" in ens
    enrich = [x for x in lines if "genodae enrich" in x]
    assert all("--gene-sets data/sets.gmt" in x for x in enrich)
    assert any("k2/ensemble/consensus.h5ad" in x and "--key dae_ensemble" in x for x in enrich)
    assert any("k2/seed1/embedded.h5ad" in x and "--key dae_sparse" in x for x in enrich)
    surv = [x for x in lines if "genodae survival" in x]
    assert len(surv) == 6 and all("results/synth/" in x for x in surv)
    assert all("--duration time --event status --event-value dead --covariates age" in x for x in surv)
    assert {x.split("--groupby ")[1].split()[0] for x in lines if "genodae associate" in x} == {"group", "bulk_labels"}
    # the sample sheet (where group and survival columns come from) is an input of prepare: editing it re-runs
    prep = re.search(r"rule prepare:\n\s+input: (.*)\n\s+output: results/synth/prepared.h5ad", out)
    assert prep and "data/synth_samples.tsv" in prep.group(1), out[:3000]
    # the switches: no gene sets, no ensemble, no sweep summary, no association or survival
    off = ('signatures={"gene_sets": [], "ensemble": false, "sweep_summary": false, "groupby": [], '
           '"survival": {"duration": null, "event": null}}')
    jobs = planned_jobs(snakemake(work, "-n", "--config", off).stdout)
    assert jobs["signatures"] == 8
    assert not {"enrich", "ensemble", "ensemble_signatures", "sweep_summary", "associate", "survival"} & set(jobs)


@pytest.mark.slow
def test_parallel_sweep_many_jobs_on_two_cores(tmp_path):
    """--cores 2 --jobs 8 over a 12-job sweep (6 trainings + 6 embeddings): every output right, none clobbered."""
    import anndata

    work = make_clone(tmp_path / "clone")
    use_synthetic(work)
    edit_config(work, model=FAST_MODEL, sweep={"n_latent": [2, 3], "seed": [0, 1, 2]},
                resources={"train": {"threads": 1, "mem_mb": 500, "runtime": 10, "gpu": 0}})
    targets = [f"results/synth/k{k}/seed{s}/embedded.h5ad" for k in (2, 3) for s in (0, 1, 2)]
    out = snakemake(work, "--cores", "2", "--jobs", "8", *targets, "results/synth/runs.tsv").stdout
    assert planned_jobs(out) == {"prepare": 1, "train": 6, "embed": 6, "gather_runs": 1}, out[-3000:]
    res = work / "results" / "synth"
    assert len(read_tsv(res / "runs.tsv")) == 6
    weights = set()
    for k in (2, 3):
        for s in (0, 1, 2):
            run = res / f"k{k}" / f"seed{s}"
            meta = json.loads((run / "model/model.json").read_text())
            assert (meta["config"]["n_latent"], meta["config"]["seed"]) == (k, s)
            adata = anndata.read_h5ad(run / "embedded.h5ad")
            assert adata.obsm["X_dae"].shape == (60, k)
            assert np.isfinite(adata.obsm["X_dae"]).all()
            weights.add((run / "model/model.safetensors").read_bytes())
    assert len(weights) == 6, "two runs wrote the same model"
    leftovers = [p for p in res.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    assert "Nothing to be done" in snakemake(work, "-n", *targets, "results/synth/runs.tsv").stdout


# ---- several files as one dataset: batches --------------------------------------------------------------


@pytest.mark.parametrize("how", ["paths", "sheet"])
def test_multi_batch_dataset_commands_in_dry_run(tmp_path, how):
    """A dataset of two files: prepare reads both with --batch-key (and a sample sheet per file), train
    conditions on the batch, the UMAP is coloured by label and batch, and an integration table is planned."""
    work = make_clone(tmp_path / "clone")
    use_two_batches(work, how)
    out = snakemake(work, "-n", "-p").stdout
    jobs = planned_jobs(out)
    assert jobs["integration"] == 1 and jobs["prepare"] == 1, jobs
    prepare = next(x for x in out.splitlines() if "genodae prepare" in x)
    if how == "paths":
        assert "data/plateA.csv data/plateB.csv -o results/plates/prepared.h5ad" in prepare
        assert "--obs data/plateA_samples.tsv --obs data/plateB_samples.tsv" in prepare
    else:
        assert "--batches data/batches.tsv" in prepare and "--obs" not in prepare
    assert "--batch-key plate" in prepare
    assert "--batch-key plate" in next(x for x in out.splitlines() if "genodae train" in x)
    assert "--color group plate" in next(x for x in out.splitlines() if "genodae plot" in x)


def test_example_has_no_batch_and_no_integration_table(tmp_path):
    work = make_clone(tmp_path / "clone")
    out = snakemake(work, "-n", "-p").stdout
    assert "integration" not in planned_jobs(out)
    assert "--batch-key" not in out


def test_batch_settings_without_a_batch_column_fail_fast(tmp_path):
    work = make_clone(tmp_path / "clone")
    res = snakemake(work, "-n", "--config", 'model={"dispersion": "gene-batch"}', check=False)
    assert res.returncode != 0
    assert "model.dispersion gene-batch needs a batch column, but dataset pbmc68k has no batch_key" in res.stdout


@pytest.mark.slow
def test_two_plate_dataset_runs_with_umap_and_integration_table(tmp_path):
    """Two count CSVs (colliding barcodes, a plate effect) as one dataset: the workflow runs to its end, the
    model is conditioned on the plate, and the integration table's scores are in range."""
    import anndata

    work = make_clone(tmp_path / "clone")
    use_two_batches(work, "paths")
    edit_config(work, model={**FAST_MODEL, "n_latent": 4}, signatures={"enabled": False},
                resources={"train": {"threads": 1, "mem_mb": 500, "runtime": 10, "gpu": 0}})
    snakemake(work, "--cores", "2")
    res = work / "results" / "plates"
    run = res / "k4" / "seed0"
    assert (run / "figures" / "umap.png").stat().st_size > 0
    prepared = anndata.read_h5ad(res / "prepared.h5ad", backed="r")
    assert prepared.obs["plate"].value_counts().to_dict() == {"plateA": 50, "plateB": 40}
    assert prepared.obs_names.is_unique and "cell000-plateB" in prepared.obs_names  # barcodes collided
    assert "EXTRA" not in prepared.var_names and set(prepared.obs["group"]) == {"g0", "g1"}
    prepared.file.close()
    meta = json.loads((run / "model" / "model.json").read_text())
    assert json.dumps(meta).count('"plate"') >= 1, "the model does not name its batch column"
    rows = read_tsv(res / "integration.tsv")
    assert len(rows) == 1
    row = rows[0]
    assert row["run"] == "k4/seed0" and row["batch_key"] == "plate" and row["label_key"] == "group"
    assert int(row["n_cells"]) == 90 and int(row["n_batches"]) == 2
    assert float(row["batch_chance"]) == pytest.approx(50 / 90, abs=1e-3)
    for key in ("knn_batch_accuracy", "knn_label_accuracy", "silhouette_batch"):
        assert 0.0 <= float(row[key]) <= 1.0, (key, row)
    assert 0.5 <= float(row["label_chance"]) <= 1.0
    assert row["silhouette_method"] in ("scib_metrics", "sklearn (scib definition)")
    assert row["silhouette_groups"] == "per label"
    # a second look has nothing to do
    assert "Nothing to be done" in snakemake(work, "-n").stdout


def test_integration_scores_on_planted_embeddings(tmp_path):
    """The integration script's scores: separated batches give batch accuracy 1 and silhouette near 0;
    mixed batches give accuracy near chance and silhouette near 1."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("integration", REPO / "workflow/scripts/integration.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    n = 200
    batch = np.repeat([0, 1], n // 2)
    label = np.tile([0, 1], n // 2)
    separated = rng.normal(size=(n, 3)) + np.c_[20 * batch, 20 * label, np.zeros(n)]
    mixed = rng.normal(size=(n, 3)) + np.c_[np.zeros(n), 20 * label, np.zeros(n)]
    assert mod.knn_accuracy(separated, batch) == 1.0
    assert mod.knn_accuracy(mixed, batch) < 0.75
    assert mod.knn_accuracy(mixed, label) == 1.0
    sil_sep, method = mod.silhouette_batch(separated, label, batch)
    sil_mix, _ = mod.silhouette_batch(mixed, label, batch)
    assert sil_sep < 0.2 < 0.8 < sil_mix <= 1.0, (sil_sep, sil_mix, method)
