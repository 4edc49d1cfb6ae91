"""The workflow's planning logic (workflow/plan.py) and its config schema (workflow/schema.py), without Snakemake:
config checks and defaults, the dataset sheet, sweep expansion, command options, signature planning and the list
of final outputs. tests/test_workflow.py runs the same through `snakemake`; here, only a dry run and one tiny job
check how the rules start genodae.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genodae.config import DAEConfig, PrepareConfig
from genodae.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"genodae_workflow_{name}", ROOT / "workflow" / f"{name}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


plan = _load("plan")
schema_gen = _load("schema")
SCHEMA = plan.load_schema()
DEFAULT_SHEET = "name\tpath\tsample_sheet\toptions\tlabels\tbatch_key\npbmc68k\texample\t\t\tbulk_labels\t\n"


def make_plan(folder: Path, monkeypatch, sheet: str = DEFAULT_SHEET, **sections):
    """A Plan of a config with `sections` (merged one level deep into an empty config) and `sheet`, in `folder`."""
    monkeypatch.chdir(folder)
    (folder / "config").mkdir(exist_ok=True)
    (folder / "config" / "datasets.tsv").write_text(sheet)
    return plan.Plan(copy.deepcopy(sections))


def config_error(folder, monkeypatch, sheet=DEFAULT_SHEET, **sections) -> str:
    with pytest.raises(plan.ConfigError) as info:
        make_plan(folder, monkeypatch, sheet, **sections)
    return str(info.value)


# ---- the module stands alone -------------------------------------------------------------------------


def test_plan_imports_and_plans_the_example_without_snakemake():
    """workflow/plan.py needs no Snakemake: with snakemake unimportable it plans the committed config."""
    code = (
        "import sys, importlib.abc, importlib.util, yaml\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'snakemake': raise ImportError('no snakemake here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "spec = importlib.util.spec_from_file_location('p', 'workflow/plan.py')\n"
        "p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p)\n"
        "print(len(p.Plan(yaml.safe_load(open('config/config.yaml'))).final_outputs()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert int(out.stdout) == 13  # the default example: one run, 13 final outputs (listed below)


# ---- config: checks and defaults ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({"model": {"corruption": 1.5}}, "invalid config: model.corruption: 1.5 is greater than or equal to"),
        ({"model": {"epochs": 0}}, "invalid config: model.epochs: 0 is less than the minimum of 1"),
        ({"model": {"activation": "swish"}}, "invalid config: model.activation: 'swish' is not one of"),
        ({"model": {"epoch": 3}}, "invalid config: unknown key model.epoch (known here: activation, amp,"),
        ({"modle": {}}, "invalid config: unknown key modle (known here: datasets, embed,"),
        ({"model": {"loss": "bce"}}, "invalid config: model.loss is now gene_likelihood (mse → normal"),
        ({"resources": {"train": {"gpu": -1}}}, "invalid config: resources.train.gpu: -1 is less than"),
        ({"sweep": {"n_latent": []}}, "invalid config: sweep.n_latent: [] should be non-empty"),
        ({"sweep": {"device": ["cpu"]}}, "unknown key sweep.device"),
        ({"sweep": {"hidden": [[0]]}}, "invalid config: sweep.hidden.0.0: 0 is less than the minimum of 1"),
        ({"signatures": {"groupby": ["a/b"]}},
         "invalid config: signatures.groupby.0: 'a/b' is not allowed here: an obs column name, without '/'"),
        ({"model": {"device": "gpu"}}, "model.device: 'gpu' is not allowed here: auto = cuda when"),
        ({"model": {"device": "cuda\n"}}, "model.device: 'cuda\\n' is not allowed here: auto = cuda when"),
        ({"signatures": {"groupby": ["cell_type\n"]}}, "signatures.groupby.0: 'cell_type\\n' is not allowed here"),
        ({"signatures": {"groupby": [""]}}, "invalid config: signatures.groupby.0: '' should be non-empty"),
    ],
)
def test_invalid_config_names_the_key(cfg, expected):
    with pytest.raises(plan.ConfigError) as info:
        plan.validate_config(cfg)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)  # one problem, one line (also where a value breaks two rules)
    assert isinstance(info.value, ValueError)


def test_every_problem_is_one_line():
    with pytest.raises(plan.ConfigError) as info:
        plan.validate_config({"model": {"lr": 0, "seed": -1}, "train": {"checkpoint_every": "x"}})
    lines = str(info.value).splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["model.lr", "model.seed", "train.checkpoint_every"]


def test_command_line_strings_are_coerced_as_the_schema_asks():
    """snakemake --config hands nested values over as strings: numbers, lists, null, booleans follow YAML."""
    cfg = {"model": {"epochs": "20", "hidden": "[16, 8]", "tied": "false", "lr": "0.01", "device": "cpu"},
           "sweep": {"seed": "[0, 1]"},
           "signatures": {"min_support": "null", "groupby": "~", "survival": {"event_value": "1"}}}
    plan.validate_config(cfg)
    assert cfg["model"]["epochs"] == 20 and cfg["model"]["hidden"] == [16, 8] and cfg["model"]["tied"] is False
    assert cfg["model"]["lr"] == 0.01 and cfg["model"]["device"] == "cpu" and cfg["sweep"]["seed"] == [0, 1]
    assert cfg["signatures"]["min_support"] is None and cfg["signatures"]["groupby"] is None
    assert cfg["signatures"]["survival"]["event_value"] == "1"  # a string is a valid event value: kept


def test_defaults_are_filled_in_place_as_snakemake_does():
    """validate_config fills every section's defaults, the same as snakemake's validate(set_default=True)."""
    snakemake_utils = pytest.importorskip("snakemake.utils")
    for cfg in ({}, {"model": {"n_latent": 8}, "signatures": {"survival": {"duration": "t", "event": "e"}}},
                {"resources": {"train": {"gpu": 1}}, "sweep": {"seed": [0, 1]}}):
        ours, theirs = copy.deepcopy(cfg), copy.deepcopy(cfg)
        assert plan.validate_config(ours) is ours
        snakemake_utils.validate(theirs, str(plan.SCHEMA_PATH))
        assert ours == theirs
    filled = plan.validate_config({})
    assert filled["model"] == {k: v["default"] for k, v in SCHEMA["properties"]["model"]["properties"].items()}
    assert filled["signatures"]["survival"]["datasets"] == [] and filled["resources"]["train"]["nodes"] == 1
    filled["plots"]["color"].append("x")  # defaults are copies: the next config starts clean
    assert plan.validate_config({})["plots"]["color"] == []


# ---- the dataset sheet -------------------------------------------------------------------------------


def test_sheet_rows_options_labels_and_batches(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    for name in ("a.csv", "b.csv", "a_obs.tsv", "c.csv", "c_obs.tsv"):
        (tmp_path / "data" / name).write_text("x\n")
    (tmp_path / "data" / "batches.tsv").write_text("path\tbatch\tobs\nc.csv\tC\tc_obs.tsv\na.csv\tA\t\n")
    sheet = ("\ufeff# a comment line\nname\tpath\tsample_sheet\toptions\tlabels\tbatch_key\n"
             "ex\texample\t\tn_top_genes=500; target_sum=1000, orientation=genes_by_samples\tcell_type\t\n"
             "two\tdata/a.csv; data/b.csv\tdata/a_obs.tsv;\tmissing=drop\tgroup, plate\tplate\n"
             "\n"
             "sheet\tbatches:data/batches.tsv\t\t\t\t\n")
    p = make_plan(tmp_path, monkeypatch, sheet, plots={"color": ["plate", "donor"]})
    ex, two, sh = p.datasets["ex"], p.datasets["two"], p.datasets["sheet"]
    assert ex == dict(files=[plan.EXAMPLE_PATH], sample_sheets=[None], batches=None, batch_key=None,
                      options={"n_top_genes": 500, "target_sum": 1000.0, "orientation": "genes_by_samples"},
                      labels=["cell_type", "plate", "donor"])
    assert isinstance(ex["options"]["target_sum"], float)  # a number option is a float, as the schema says
    assert two["files"] == ["data/a.csv", "data/b.csv"] and two["sample_sheets"] == ["data/a_obs.tsv", None]
    assert two["batch_key"] == "plate" and two["labels"] == ["group", "plate", "donor"]
    assert two["options"] == {"missing": "drop"}
    # a batches sheet: its files and sample sheets relative to its folder; the batch column defaults to `batch`
    assert sh["batches"] == "data/batches.tsv" and sh["batch_key"] == plan.DEFAULT_BATCH_KEY
    assert sh["files"] == ["data/c.csv", "data/a.csv"] and sh["sample_sheets"] == ["data/c_obs.tsv"]
    assert p.dataset_input("sheet") == ["data/batches.tsv", "data/c.csv", "data/a.csv"]
    assert p.prepare_inputs("sheet") == "--batches data/batches.tsv" and p.prepare_inputs("two") == "data/a.csv data/b.csv"
    assert p.dataset_sample_sheet("two") == ["data/a_obs.tsv"]
    assert p.integration_datasets() == ["two", "sheet"]
    assert p.integration_label("two") == "group" and p.integration_label("sheet") == "plate"


@pytest.mark.parametrize(
    ("sheet", "expected"),
    [
        ("name\tpath\nbad\tno/such/file.h5ad\n", "line 2 (bad): path 'no/such/file.h5ad' not found"),
        ("name\tpath\nx\texample\nx\texample\n", "line 3 (x): dataset name 'x' appears twice"),
        ("name\tpath\tcolour\nx\texample\tred\n", "unknown column(s) colour; the columns are name, path,"),
        ("name\nx\n", "missing column(s) path"),
        ("name,path\nx,example\n", "is not tab-separated (its header line is 'name,path'): separate the columns"),
        ("name\tpath\n", "lists no datasets"),
        ("name\tpath\nx\texample\tsurplus\n", "line 2: more cells than columns (use tabs)"),
        ("name\tpath\toptions\nx\texample\tmissing=ignore\n", "option missing must be one of error, drop, impute"),
        ("name\tpath\toptions\nx\texample\tn_top=5\n", "unknown option 'n_top' (known: orientation,"),
        ("name\tpath\toptions\nx\texample\tn_top_genes=-5\n", "option n_top_genes: -5 is less than the minimum"),
        ("name\tpath\toptions\nx\texample\tscaling\n", "option 'scaling' is not key=value"),
        ("name\tpath\toptions\nx\texample\tbatch_key=plate\n", "batch_key is a column of its own"),
        ("name\tpath\nbad name\texample\n", "line 2 (bad name): column name: 'bad name' is not allowed here: "
         "Unique dataset name; becomes results/{name}/ (ASCII letters, digits, _ . -, starting with a letter or digit)"),
        ("name\tpath\tbatch_key\nx\texample\ta/b\n", "column batch_key: 'a/b' is not allowed here: Optional obs "
         "column (a name without '/') of the dataset's batches (plates, samples, technologies)."),
        ("name\tpath\nx\texample;\n", "has an empty entry"),
        ("name\tpath\nx\tconfig/datasets.tsv;config/datasets.tsv\n", "names a file twice"),
        ("name\tpath\tsample_sheet\nx\tconfig/datasets.tsv\tno/such.tsv\n", "sample_sheet 'no/such.tsv' not found"),
        ("name\tpath\nx\tbatches:no/such.tsv\n", "batches sheet 'no/such.tsv' not found"),
        ("name\tpath\nx\tbatches:config/cells.tsv\n", "has no 'path' column (columns: cell, group)"),
        ("# a comment\nname\tpath\n\n# another\nbad name\texample\n", "line 5 (bad name)"),
    ],
)
def test_bad_sheet_is_one_clear_error(tmp_path, monkeypatch, sheet, expected):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "cells.tsv").write_text("cell\tgroup\nc1\tg1\n")
    message = config_error(tmp_path, monkeypatch, sheet)
    assert message.startswith("dataset sheet config/datasets.tsv") and expected in message, message


def test_a_long_rule_is_stated_by_its_first_sentence(tmp_path, monkeypatch):
    message = config_error(tmp_path, monkeypatch, "name\tpath\tbatch_key\nx\texample\ta/b\n")
    assert message.endswith("(plates, samples, technologies).") and "With several files" not in message, message


def test_every_missing_file_of_a_batches_sheet_is_named(tmp_path, monkeypatch):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "s.csv").write_text("path,obs\none.csv,\ntwo.csv,two_obs.csv\n,\n")
    message = config_error(tmp_path, monkeypatch, "name\tpath\nx\tbatches:b/s.csv\n")
    assert message.splitlines() == [
        "dataset sheet config/datasets.tsv, line 2 (x): batches sheet b/s.csv, line 2: file 'b/one.csv' not found "
        "(paths in a batches sheet are relative to the sheet's folder)",
        "dataset sheet config/datasets.tsv, line 2 (x): batches sheet b/s.csv, line 3: file 'b/two.csv' not found "
        "(paths in a batches sheet are relative to the sheet's folder)",
        "dataset sheet config/datasets.tsv, line 2 (x): batches sheet b/s.csv, line 3: sample sheet (obs) "
        "'b/two_obs.csv' not found",
        "dataset sheet config/datasets.tsv, line 2 (x): batches sheet b/s.csv, line 4: no path",
    ]


def test_missing_sheet_names_the_config_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(plan.ConfigError, match=r"dataset sheet nowhere.tsv \(config key 'datasets'\) not found"):
        plan.Plan({"datasets": "nowhere.tsv"})


# ---- sweep -------------------------------------------------------------------------------------------


def test_sweep_is_the_cartesian_product_named_by_the_swept_settings():
    model = plan.validate_config({})["model"]
    runs = plan.expand_sweep(model, {"n_latent": [4, 8], "corruption": [0.1, 0.3], "hidden": [[16, 8], []],
                                     "tied": [False]})
    assert len(runs) == 8
    assert list(runs)[:2] == ["k4/seed0/corruption0.1_hidden16-8_tiedfalse", "k4/seed0/corruption0.1_hiddennone_tiedfalse"]
    settings = runs["k8/seed0/corruption0.3_hidden16-8_tiedfalse"]
    assert settings == {**model, "n_latent": 8, "corruption": 0.3, "hidden": [16, 8], "tied": False}
    assert list(plan.expand_sweep(model, {})) == ["k32/seed0"]
    assert list(plan.expand_sweep(model, {"seed": [0, 1], "lr": [1e-5]})) == ["k32/seed0/lr1e-05", "k32/seed1/lr1e-05"]
    assert list(plan.expand_sweep(model, {"device": ["cuda:1"]})) == ["k32/seed0/devicecuda-1"]


def test_long_run_names_become_a_stable_hash():
    model = plan.validate_config({})["model"]
    sweep = {"categorical_covariate_keys": [["donor_identifier", "sequencing_technology", "collection_site_name"]],
             "continuous_covariate_keys": [["pct_counts_mt"]]}
    (run,) = plan.expand_sweep(model, sweep)
    assert run.startswith("k32/seed0/p") and len(run.split("/")[2]) == 11
    assert plan.expand_sweep(dict(model), dict(sweep)).keys() == {run}  # the same settings, the same folder


# ---- command options ---------------------------------------------------------------------------------


def test_flag_renders_booleans_lists_and_quotes():
    assert plan.flag("tied", True) == "--tied" and plan.flag("tied", False) == "--no-tied"
    assert plan.flag("hidden", [512, 128]) == "--hidden=512,128" and plan.flag("hidden", []) == "--hidden=''"
    assert plan.flag("batch_key", "my plate") == "--batch-key 'my plate'"
    assert plan.flag("lr", 0.01) == "--lr 0.01"


def test_train_flags_pass_only_what_differs_from_the_defaults(tmp_path, monkeypatch):
    sheet = DEFAULT_SHEET + "plates\texample\t\t\t\tplate\n"
    p = make_plan(tmp_path, monkeypatch, sheet, model={"preset": "adage", "lr": 0.01, "hidden": [], "tied": True},
                  sweep={"n_latent": [4], "corruption_rescale": [False]})
    (run,) = p.runs
    assert run == "k4/seed0/corruption_rescalefalse"
    # the config's keys first, then the defaults filled in; the swept values in their place
    assert p.train_flags("pbmc68k", run) == ("--preset adage --lr 0.01 --hidden='' --tied --n-latent 4 "
                                             "--no-corruption-rescale --seed 0 --device cpu")
    assert p.train_flags("plates", run).startswith("--preset adage --batch-key plate --lr 0.01 ")
    # device auto: CUDA when the training jobs get a GPU; an explicit device as it is
    gpu = make_plan(tmp_path, monkeypatch, resources={"train": {"gpu": 1}})
    assert gpu.train_flags("pbmc68k", "k32/seed0") == "--preset default --n-latent 32 --seed 0 --device cuda"
    assert make_plan(tmp_path, monkeypatch, model={"device": "cuda:1"}).device_for_training() == "cuda:1"


def test_prepare_flags_merge_config_and_sheet_options(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    for name in ("a.csv", "b.csv", "b obs.tsv"):
        (tmp_path / "d" / name).write_text("x\n")
    sheet = ("name\tpath\tsample_sheet\toptions\tlabels\tbatch_key\n"
             "two\td/a.csv;d/b.csv\t;d/b obs.tsv\tn_top_genes=0; orientation=samples_by_genes\tgroup\t\n")
    p = make_plan(tmp_path, monkeypatch, sheet, prepare={"scaling": "zscore", "layer": None})
    assert p.prepare_flags("two") == (
        "--scaling zscore --n-top-genes 0 --hvg-flavor auto --input-kind auto --target-sum 10000.0 --min-cells 1 "
        "--orientation samples_by_genes --batch-key batch --obs '' --obs 'd/b obs.tsv' --require-obs group")
    assert "--layer counts" in make_plan(tmp_path, monkeypatch, sheet, prepare={"layer": "counts"}).prepare_flags("two")
    assert p.plot_colors("two") == "--color group batch"
    # the label columns and signatures.groupby are checked when the data are read, not at the plot after training
    assert make_plan(tmp_path, monkeypatch, signatures={"groupby": ["donor"]}).prepare_flags("pbmc68k").endswith(
        "--require-obs bulk_labels donor")
    assert make_plan(tmp_path, monkeypatch, plots={"color": ["a b"]}).plot_colors("pbmc68k") == "--color bulk_labels 'a b'"


def test_cross_section_checks_name_the_dataset(tmp_path, monkeypatch):
    message = config_error(tmp_path, monkeypatch, model={"dispersion": "gene-batch"}, sweep={"seed": [0, 1]})
    assert message == ("invalid config: model.dispersion gene-batch needs a batch column, but dataset pbmc68k has "
                       "no batch_key (dataset sheet)")  # once, not once per run
    assert "model.encode_covariates needs covariates" in config_error(tmp_path, monkeypatch,
                                                                      model={"encode_covariates": True})
    make_plan(tmp_path, monkeypatch, DEFAULT_SHEET + "b\texample\t\t\t\tplate\n", model={"encode_covariates": True},
              sweep={"categorical_covariate_keys": [["donor"]]})  # covariates to encode: fine
    message = config_error(tmp_path, monkeypatch, DEFAULT_SHEET.replace("bulk_labels", "a/b"),
                           signatures={"gene_sets": ["no.gmt"], "id_map": "no.tsv", "survival": {"duration": "t",
                                                                                             "datasets": ["other"]}})
    assert message.splitlines()[:-1] == [
        "invalid config: signatures.gene_sets.0: GMT file 'no.gmt' not found",
        "invalid config: signatures.id_map: identifier map 'no.tsv' not found",
        "invalid config: signatures.survival: set both duration and event (or neither)",
        "invalid config: signatures.survival.datasets: unknown dataset(s) other (the sheet has pbmc68k)",
        "invalid config: dataset pbmc68k: label column(s) a/b contain '/', which cannot name an association table; "
        "set signatures.groupby",
    ]
    assert message.splitlines()[-1].startswith("(the paths are relative to the working directory ")


# ---- signatures and the final outputs ----------------------------------------------------------------


def _run_files(d):
    return [f"{d}/embedded.h5ad", f"{d}/embedding.tsv", f"{d}/gene_weights.tsv", f"{d}/figures/loss.png",
            f"{d}/figures/umap.png"]


def test_final_outputs_of_the_default_example(tmp_path, monkeypatch):
    p = make_plan(tmp_path, monkeypatch)
    sig = "results/pbmc68k/k32/seed0/signatures"
    assert p.final_outputs() == [
        *_run_files("results/pbmc68k/k32/seed0"), "results/pbmc68k/runs.tsv",
        f"{sig}/signatures.tsv", f"{sig}/weights.tsv", f"{sig}/activities.tsv", f"{sig}/heatmap.png",
        f"{sig}/transform.json", f"{sig}/association_bulk_labels.tsv", f"{sig}/association_bulk_labels.png",
    ]
    assert p.ensembles == {} and p.sweeps == {} and p.signature_sources() == ["k32/seed0"]
    assert p.signature_options() == "--sd-cutoff 2.5 --rotation sparse --min-genes 0 --n-genes 5"
    assert p.source_key("k32/seed0") == "dae_sparse" and p.gene_set_flags() == "" and p.survival_flags() == ""
    # no signatures: the run's files and its table only
    off = make_plan(tmp_path, monkeypatch, signatures={"enabled": False}, sweep={"seed": [0, 1], "n_latent": [2, 3]})
    assert off.ensembles == off.sweeps == {} and off.groupby_columns("pbmc68k") == []
    assert off.final_outputs() == [*(f for r in off.runs for f in _run_files(f"results/pbmc68k/{r}")),
                                   "results/pbmc68k/runs.tsv"]


def test_signature_plan_of_a_sweep_with_gene_sets_and_survival(tmp_path, monkeypatch):
    (tmp_path / "sets.gmt").write_text("S\td\tA\n")
    (tmp_path / "map.tsv").write_text("a\tb\n")
    sheet = DEFAULT_SHEET + "other\texample\t\t\t\t\n"
    p = make_plan(tmp_path, monkeypatch, sheet, sweep={"n_latent": [2, 3], "seed": [0, 1], "lr": [0.01]},
                  signatures={"gene_sets": ["sets.gmt"], "id_map": "map.tsv", "id_to": "b", "min_support": 2,
                              "rotation": "none", "groupby": ["group"],
                              "survival": {"duration": "os time", "event": "status", "event_value": 1,
                                           "covariates": ["age", "stage"], "datasets": ["other"]}})
    assert p.ensembles == {"k2/ensemble/lr0.01": ["k2/seed0/lr0.01", "k2/seed1/lr0.01"],
                           "k3/ensemble/lr0.01": ["k3/seed0/lr0.01", "k3/seed1/lr0.01"]}
    assert p.sweeps == {"sweep/lr0.01": list(p.runs)}
    assert p.signature_sources() == [*p.runs, *p.ensembles]
    assert p.source_h5ad("other", "k2/ensemble/lr0.01") == "results/other/k2/ensemble/lr0.01/consensus.h5ad"
    assert p.source_h5ad("other", "k2/seed1/lr0.01") == "results/other/k2/seed1/lr0.01/embedded.h5ad"
    assert p.source_key("k2/ensemble/lr0.01") == "dae_ensemble" and p.source_key("k2/seed1/lr0.01") == "dae"
    assert p.embedded("other", p.ensembles["k3/ensemble/lr0.01"]) == [
        "results/other/k3/seed0/lr0.01/embedded.h5ad", "results/other/k3/seed1/lr0.01/embedded.h5ad"]
    assert p.gene_set_flags() == "--gene-sets sets.gmt --id-map map.tsv --id-to b"
    assert p.gene_set_flags(for_sweep=True) == ""  # sweep-summary cannot map by named columns: no set counts
    assert p.gene_set_inputs() == ["sets.gmt", "map.tsv"]
    assert p.survival_flags() == "--duration 'os time' --event status --event-value 1 --covariates age stage"
    assert not p.survival_on("pbmc68k") and p.survival_on("other")
    assert p.ensemble_options() == "--rotation none --min-support 2"  # min_corr null: genodae picks it by rotation
    assert p.signature_options(rotate=False) == "--sd-cutoff 2.5 --min-genes 0 --n-genes 5 --rotation none"
    assert p.enrich_options() == "--min-size 5 --max-size 1000 --correction node"
    assert p.sweep_summary_options() == "--rotation none --fdr 0.05" and p.swept_keys() == ["n_latent", "seed", "lr"]
    outputs = p.final_outputs()
    assert len(outputs) == len(set(outputs))
    per_source = ["signatures.tsv", "weights.tsv", "activities.tsv", "heatmap.png", "enrichment.tsv",
                  "enrichment.png", "association_group.tsv", "association_group.png"]  # no transform: rotation none
    for dataset, survival in (("pbmc68k", []), ("other", ["survival.tsv", "km.png"])):
        mine = [f for f in outputs if f.startswith(f"results/{dataset}/")]
        expected = [*(f for r in p.runs for f in _run_files(f"results/{dataset}/{r}")), f"results/{dataset}/runs.tsv"]
        expected += [f"results/{dataset}/{s}/signatures/{name}" for s in p.signature_sources()
                     for name in per_source + survival]
        expected += [f"results/{dataset}/{e}/{name}" for e in p.ensembles for name in
                     ("consensus_weights.tsv", "consensus_activities.tsv", "support.tsv", "stability.tsv",
                      "consensus.h5ad")]
        expected += [f"results/{dataset}/sweep/lr0.01/summary.tsv", f"results/{dataset}/sweep/lr0.01/summary.png"]
        assert mine == expected, dataset
    # the switches turn ensembles and sweep summaries off; one seed or one size plans neither
    assert make_plan(tmp_path, monkeypatch, sheet, sweep={"n_latent": [2, 3], "seed": [0, 1]},
                     signatures={"ensemble": False, "sweep_summary": False}).ensembles == {}
    one = make_plan(tmp_path, monkeypatch, sheet, sweep={"n_latent": [2, 3]})
    assert one.ensembles == {} and one.sweeps == {"sweep": ["k2/seed0", "k3/seed0"]}


# ---- the config schema is generated from the settings dataclasses -------------------------------------


def test_committed_schema_is_the_generated_one():
    """Edit genodae.config (or workflow/schema.py), then run `python -m workflow.schema`."""
    assert plan.SCHEMA_PATH.read_text() == schema_gen.render(schema_gen.config_schema()), (
        "workflow/schemas/config.schema.yaml is stale: run python -m workflow.schema")


def test_schema_check_command_fails_on_a_stale_schema(tmp_path, capsys):
    stale = tmp_path / "schema.yaml"
    assert schema_gen.main(["-o", str(stale)]) == 0 and schema_gen.main(["--check", "-o", str(stale)]) == 0
    stale.write_text(stale.read_text().replace("default: 32", "default: 16"))
    assert schema_gen.main(["--check", "-o", str(stale)]) == 1
    assert "is stale" in capsys.readouterr().err


def test_schema_sections_come_from_the_dataclasses():
    """Defaults, descriptions and keys: DAEConfig/PrepareConfig's own, minus what the workflow sets itself."""
    for section, cls in (("model", DAEConfig), ("prepare", PrepareConfig)):
        props = SCHEMA["properties"][section]["properties"]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(props) - {"preset"} == set(fields) - set(schema_gen.NOT_IN_CONFIG[section])
        defaults = json.loads(json.dumps(dataclasses.asdict(cls())))  # tuples as lists
        for name in set(props) - {"preset"}:
            assert props[name]["default"] == defaults[name] and type(props[name]["default"]) is type(defaults[name])
            assert props[name]["description"] in (fields[name].metadata["help"],
                                                  schema_gen.WORKFLOW_DESCRIPTIONS.get(f"{section}.{name}"))


def _values_around(prop):
    """(accepted, refused) values of a schema property's bounds and choices."""
    ok, bad = [], []
    if "enum" in prop:
        ok += prop["enum"]
        bad.append("no-such-choice")
    integer = "integer" in (prop["type"] if isinstance(prop["type"], list) else [prop["type"]])
    step = 1 if integer else 0.01
    if "minimum" in prop:
        ok.append(prop["minimum"])
        bad.append(prop["minimum"] - step)
    if "exclusiveMinimum" in prop:
        ok.append(prop["exclusiveMinimum"] + step)
        bad.append(prop["exclusiveMinimum"])
    if "exclusiveMaximum" in prop:
        ok.append(prop["exclusiveMaximum"] - step)
        bad.append(prop["exclusiveMaximum"])
    if "pattern" in prop:
        ok += ["cuda:3", "cpu"]
        bad += ["gpu", "cu", "cuda\n", "cpu\n"]  # a trailing line break too (Python's $ matches before it)
    if prop.get("items", {}).get("minimum") is not None:
        ok.append([prop["items"]["minimum"]])
        bad.append([prop["items"]["minimum"] - 1])
    return ok, bad


@pytest.mark.parametrize("section", ["model", "prepare"])
def test_schema_bounds_and_choices_are_what_the_dataclasses_accept(section):
    """Every choice and bound the schema states, checked against the dataclass's own validation: a value the
    schema accepts builds the settings, a value just outside is refused by both."""
    cls = DAEConfig if section == "model" else PrepareConfig
    props = {k: v for k, v in SCHEMA["properties"][section]["properties"].items() if k != "preset"}
    validator = __import__("jsonschema").Draft202012Validator
    checked = 0
    for name, prop in props.items():
        ok, bad = _values_around(prop)
        for value in ok:
            extra = {"batch_key": "b"} if (name, value) == ("dispersion", "gene-batch") else {}
            assert validator(prop).is_valid(value), (name, value)
            cls(**{name: value}, **extra)
            checked += 1
        for value in bad:
            assert not validator(prop).is_valid(value), (name, value)
            with pytest.raises(UserError):
                cls(**{name: value})
            checked += 1
    assert checked > (60 if section == "model" else 15)


def test_config_yaml_shows_the_dataclass_defaults():
    """config/config.yaml (commented for users) lists every prepare and model key with its dataclass default."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    dae = json.loads(json.dumps(DAEConfig().to_dict()))
    prepare = dataclasses.asdict(PrepareConfig())
    assert cfg["model"] == {"preset": "default", **{k: v for k, v in dae.items()
                                                    if k not in schema_gen.NOT_IN_CONFIG["model"]}}
    assert cfg["prepare"] == {k: v for k, v in prepare.items() if k not in schema_gen.NOT_IN_CONFIG["prepare"]}
    assert plan.validate_config(copy.deepcopy(cfg)) == cfg  # and nothing else is missing from it


# ---- how the rules start genodae -----------------------------------------------------------------------


def _snakemake_without_venv_on_path(tmp_path, *args) -> subprocess.CompletedProcess:
    """snakemake of this interpreter (as `.venv/bin/snakemake` runs it) in a copy of the workflow, with a bare PATH:
    no `python` of this venv on it (a `python` there, if any, lacks genodae's dependencies)."""
    work = tmp_path / "clone"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles", "genodae", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
        else:
            shutil.copy2(src, work / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH="/usr/bin:/bin", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)


def test_rules_run_genodae_with_the_interpreter_of_snakemake(tmp_path):
    """Every rule starts genodae with the Python running Snakemake (quoted), not the first `python` on PATH."""
    res = _snakemake_without_venv_on_path(tmp_path, "-n", "-p", "--forceall")
    assert res.returncode == 0, res.stdout + res.stderr
    calls = [line.strip().removeprefix("Shell command:").strip() for line in (res.stdout + res.stderr).splitlines()
             if "-m genodae " in line]
    steps = {line.split("-m genodae ", 1)[1].split()[0] for line in calls}
    assert {"example", "prepare", "train", "embed", "export", "plot", "signatures"} <= steps, steps
    python = shlex.quote(sys.executable)
    assert all(line.startswith(f"{python} -m genodae ") for line in calls), calls


def test_a_job_runs_without_the_venv_on_path(tmp_path):
    """A real job (the example data set) succeeds from the venv's snakemake alone."""
    res = _snakemake_without_venv_on_path(tmp_path, "--cores", "1", plan.EXAMPLE_PATH)
    log = tmp_path / "clone" / "logs" / "example.log"
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:] + (log.read_text() if log.exists() else "")
    assert (tmp_path / "clone" / plan.EXAMPLE_PATH).is_file()


@pytest.mark.parametrize(("train", "expected"), [
    ({"nodes": 1, "gpu": 0}, "{py} -m genodae"),
    ({"nodes": 1, "gpu": 4}, "{py} -m torch.distributed.run --standalone --nproc-per-node 4 -m genodae"),
    ({"nodes": 2, "gpu": 0}, "--kill-on-bad-exit=1 {py} -m torch.distributed.run --nnodes 2"),
])
def test_training_launcher_uses_the_given_interpreter_for_torchrun(train, expected):
    launch = _load("launch")
    py = shlex.quote("/opt/my env/bin/python")
    assert expected.format(py=py) in launch.train_launcher({"threads": 2, **train}, python=py)
