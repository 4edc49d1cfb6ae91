"""Writes workflow/schemas/config.schema.yaml: the `prepare` and `model` sections from the settings dataclasses
(genodae.config.PrepareConfig and DAEConfig: defaults, types, choices, descriptions = their `help`), the
sweep from the model section, and the keys only the workflow has (below).

    python -m workflow.schema           # rewrite the committed schema
    python -m workflow.schema --check   # exit 1 when the committed schema is not what the dataclasses give

Edit the dataclasses (or, for workflow-only keys, this file) and run it; tests/test_workflow_plan.py fails
while the committed schema is stale. The ranges and choices of each setting are those `__post_init__` checks
(CONSTRAINTS); the tests check them against the dataclasses too.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from genodae import config as gc

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

# JSON types of the dataclass annotations (strings: genodae.config uses `from __future__ import annotations`).
TYPES = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "str": {"type": "string"},
    "str | None": {"type": ["string", "null"]},
    "int | None": {"type": ["integer", "null"]},
    "tuple[int, ...]": {"type": "array", "items": {"type": "integer"}},
    "tuple[str, ...]": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
}
# What __post_init__ accepts, as JSON schema keywords (tests/test_workflow_plan.py probes each against it).
CONSTRAINTS = {
    # PrepareConfig
    "n_top_genes": {"minimum": 0},
    "hvg_flavor": {"enum": list(gc.HVG_FLAVORS)},
    "input_kind": {"enum": list(gc.INPUT_KINDS)},
    "target_sum": {"exclusiveMinimum": 0},
    "scaling": {"enum": list(gc.SCALINGS)},
    "min_cells": {"minimum": 0},
    # DAEConfig
    "n_latent": {"minimum": 1},
    "hidden": {"items": {"type": "integer", "minimum": 1}},
    "activation": {"enum": list(gc.ACTIVATIONS)},
    "latent_activation": {"enum": list(gc.ACTIVATIONS)},
    "dropout": {"minimum": 0, "exclusiveMaximum": 1},
    "norm": {"enum": list(gc.NORMS)},
    "decoder": {"enum": list(gc.DECODERS)},
    "rotation": {"enum": list(gc.ROTATIONS)},
    "output_activation": {"enum": ["auto", *gc.ACTIVATIONS]},
    "corruption": {"minimum": 0, "exclusiveMaximum": 1},
    "gaussian_noise": {"minimum": 0},
    "gene_likelihood": {"enum": list(gc.GENE_LIKELIHOODS)},
    "loss_on": {"enum": list(gc.LOSS_ON)},
    "optimizer": {"enum": list(gc.OPTIMIZERS)},
    "lr": {"exclusiveMinimum": 0},
    "weight_decay": {"minimum": 0},
    "batch_size": {"minimum": 1},
    "epochs": {"minimum": 1},
    "val_fraction": {"minimum": 0, "exclusiveMaximum": 1},
    "patience": {"minimum": 0},
    "grad_clip": {"minimum": 0},
    "seed": {"minimum": 0},
    "dispersion": {"enum": ["auto", "gene", "gene-batch"]},
    "batch_mmd": {"minimum": 0},
    "device": {"pattern": f"^({gc.DEVICE_PATTERN})$(?!\\n)"},  # (?!\n): Python's $ also matches before a final newline
    "data_placement": {"enum": ["auto", "device", "host"]},
}
# Dataclass fields the workflow sets itself instead of taking them from the config.
NOT_IN_CONFIG = {
    "prepare": {"batch_key": "the dataset sheet's batch_key column sets it, per dataset"},
    "model": {"batch_key": "the dataset sheet's batch_key column sets it, per dataset",
              "num_threads": "the rule's threads (resources.train.threads) set it"},
}
# Where a setting means more in the workflow than its `help` says (YAML null, the sheet, resources.train.gpu).
WORKFLOW_DESCRIPTIONS = {
    "prepare.layer": "Prepare this layer (e.g. counts of a processed .h5ad) instead of X; null = X.",
    "model.epochs": ("Maximum number of epochs; null = auto (100, more on small data so that training can make at "
                     "least 2,000 minibatch updates)."),
    "model.categorical_covariate_keys": (
        "Further categorical obs columns the decoder sees (e.g. [donor, sex]), for every dataset. The batch "
        "itself is not listed here: it is the dataset sheet's batch_key column (per dataset)."),
    "model.encode_covariates": (
        "The encoder sees the batch and covariates too; cells of batches unseen in training then need genodae "
        "map (reference mapping) before they can be embedded. Needs a batch_key or covariate keys."),
    "model.device": "auto = cuda when resources.train.gpu > 0, else cpu. Or cpu, cuda, cuda:N.",
}
NOT_SWEPT = ("preset", "device", "amp", "data_placement")


def settings_section(cls, section: str) -> dict:
    """The properties of one config section from a settings dataclass: type, choices and ranges, default
    (the dataclass's), description (its `help`, as `genodae --help` shows it, unless the workflow says more)."""
    defaults = cls().to_dict() if hasattr(cls, "to_dict") else dataclasses.asdict(cls())
    props = {}
    for f in dataclasses.fields(cls):
        if f.name in NOT_IN_CONFIG[section]:
            continue
        prop = {**TYPES[f.type], **CONSTRAINTS.get(f.name, {})}
        prop["default"] = list(defaults[f.name]) if isinstance(defaults[f.name], tuple) else defaults[f.name]
        prop["description"] = WORKFLOW_DESCRIPTIONS.get(f"{section}.{f.name}") or f.metadata["help"]
        props[f.name] = prop
    return props


def _section(description: str | None, properties: dict) -> dict:
    out = {"type": "object"}
    if description:
        out["description"] = description
    return {**out, "default": {}, "additionalProperties": False, "properties": properties}


def _key(type_, default, description: str, **constraints) -> dict:
    return {"type": type_, **constraints, "default": default, "description": description}


def _strings(description: str, item_description: str | None = None, **extra) -> dict:
    item = {"type": "string", "minLength": 1, **extra}
    if item_description:
        item["description"] = item_description
    return {"type": "array", "items": item, "uniqueItems": True, "default": [], "description": description}


# Threads, memory (MB) and runtime (minutes) of each rule's jobs.
RESOURCES = {
    "example": (1, 2000, 10), "prepare": (1, 4000, 30), "train": (2, 8000, 240), "embed": (1, 4000, 30),
    "export": (1, 2000, 15), "plot": (1, 4000, 30), "gather": (1, 1000, 10), "signatures": (1, 4000, 30),
    "enrich": (1, 4000, 30), "ensemble": (1, 8000, 60), "sweep_summary": (1, 8000, 60),
    "associate": (1, 4000, 15), "integration": (1, 4000, 30), "survival": (1, 4000, 15),
}


def _resources() -> dict:
    rules = {}
    for rule, (threads, mem_mb, runtime) in RESOURCES.items():
        torch = "; torch threads" if rule == "train" else ""
        props = {
            "threads": {"type": "integer", "minimum": 1, "default": threads,
                        "description": f"CPU threads (SLURM --cpus-per-task{torch})."},
            "mem_mb": {"type": "integer", "minimum": 1, "default": mem_mb, "description": "Memory in MB (SLURM --mem)."},
            "runtime": {"type": "integer", "minimum": 1, "default": runtime,
                        "description": "Wall-time limit in minutes (SLURM -t)."},
        }
        if rule == "train":
            props["gpu"] = {"type": "integer", "minimum": 0, "default": 0, "description": (
                "GPUs per training job and node (SLURM --gpus; 0 = CPU only; > 1 = one torchrun rank per GPU).")}
            props["nodes"] = _key("integer", 1, (
                "Nodes per training job. > 1 needs the SLURM executor (profiles/slurm): the job asks for that many "
                "nodes (threads, mem_mb and gpu per node, the GPUs as --gres=gpu:N) and starts "
                "DistributedDataParallel with srun + torchrun, one agent per node, rendezvous (c10d) on the job's "
                "first node. Anywhere else the training job stops with a message."), minimum=1)
        rules[rule] = _section(None, props)
    return _section("Threads, memory (MB), runtime (minutes) and, for training, GPUs of each rule's jobs.", rules)


def _signatures() -> dict:
    nullable = ["string", "null"]
    survival = _section(
        "Cox model per node and a Kaplan-Meier plot (genodae survival), run when both duration and event are "
        "set; the columns are obs columns of the datasets (e.g. from their sample sheet).",
        {
            "duration": _key(nullable, None, "obs column of the follow-up time (null = no survival analysis).",
                             minLength=1),
            "event": _key(nullable, None, "obs column of the event (0/1, or see event_value).", minLength=1),
            "event_value": _key(["string", "integer", "null"], None, (
                "Value of the event column that means the event happened (e.g. Dead); null for 0/1 events.")),
            "covariates": _strings("obs columns added to every Cox model (e.g. age, stage)."),
            "datasets": _strings("Datasets to run the survival analysis on ([] = every dataset)."),
        })
    return _section(
        "Molecular signatures after embedding (workflow/rules/signatures.smk): the high-weight genes of every "
        "node of every run (genodae signatures), gene-set enrichment when gene_sets lists GMT files (genodae "
        "enrich), consensus nodes over the seeds of each latent size when the sweep has several seeds (genodae "
        "ensemble), a summary per latent size when it has several sizes (genodae sweep-summary), and the "
        "association of node activities with sample groups (genodae associate) and survival (genodae survival).",
        {
            "enabled": _key("boolean", True, (
                "Run the signature rules at all (false = the workflow stops after embed, export and plot).")),
            "sd_cutoff": _key("number", 2.5, (
                "A gene is in a node's signature beyond mean ± sd_cutoff · SD of the node's weights (ADAGE)."),
                exclusiveMinimum=0),
            "rotation": _key("string", "sparse", (
                "Read the nodes after a rotation that makes each node sparse in genes: sparse (varimax, then oblique "
                "sparse coding; the benchmarked default), varimax (orthogonal nodes of the whitened activities), or "
                "as the model stored them (none: a default model's distance-keeping varimax nodes; the trained "
                "nodes, as ADAGE read them, for models trained with rotation none). Also applies to ensembles, "
                "sweep summaries and the association tests."), enum=list(gc.ROTATIONS)),
            "min_genes": _key("integer", 0, (
                "Fill each tail of a signature up to this many top genes (flagged beyond_cutoff = False)."),
                minimum=0),
            "heatmap_genes": _key("integer", 5, "Genes per tail and node in the signature heatmap.", minimum=1),
            "gene_sets": _strings(
                "GMT files of gene sets (relative to the working directory); enrichment runs when any are listed."),
            "id_map": _key(nullable, None, (
                "CSV/TSV table mapping the model's gene IDs to those of the gene sets (e.g. Ensembl ID -> symbol); "
                "null when they already agree.")),
            "id_from": _key(nullable, None, "Column of the model's gene IDs in id_map (null = the first column)."),
            "id_to": _key(nullable, None, "Column of the gene-set IDs in id_map (null = the second column)."),
            "min_set_size": _key("integer", 5, (
                "Smallest gene set tested (genes within the background, i.e. the genes the model used)."),
                minimum=1),
            "max_set_size": _key("integer", 1000, "Largest gene set tested.", minimum=1),
            "correction": _key("string", "node", (
                "Benjamini-Hochberg family (node = both tails of a node together, as eADAGE)."),
                enum=["node", "signature", "all"]),
            "fdr": _key("number", 0.05, "FDR below which a gene set counts as enriched in the sweep summary.",
                        exclusiveMinimum=0, maximum=1),
            "ensemble": _key("boolean", True, (
                "Build consensus nodes over the seeds of each latent size (and other swept settings) when the sweep "
                "has at least 2 seeds, and read signatures (and enrichment, associations) of the consensus.")),
            "min_corr": _key(["number", "null"], None, (
                "Ensemble nodes of different seeds cluster when their weights correlate with |r| >= min_corr (null = "
                f"by the nodes' read-out: sparse {gc.ENSEMBLE_MIN_CORR['sparse']}, varimax "
                f"{gc.ENSEMBLE_MIN_CORR['varimax']}; with rotation none, the read-out the models stored: "
                f"{gc.ENSEMBLE_MIN_CORR['varimax']} for default (varimax) models and raw decoder weights, "
                f"{gc.ENSEMBLE_MIN_CORR['sparse']} for models with rotation sparse, as the signatures preset)."), exclusiveMinimum=0, exclusiveMaximum=1),
            "min_support": _key(["integer", "null"], None, (
                "Seeds a consensus node needs (null = genodae's default, half the seeds rounded up)."), minimum=1),
            "sweep_summary": _key("boolean", True, (
                "Summarise reconstruction, stability across seeds and enriched gene sets per latent size, in one "
                "table and one plot per dataset, when the sweep has at least 2 values of n_latent.")),
            "groupby": {**_strings(
                "obs columns of sample groups to test node activities against (genodae associate): null = each "
                "dataset's label columns (the sheet's labels column plus plots.color); [] = no association tests.",
                pattern="^[^/\\n]+$(?!\\n)", item_description="an obs column name, without '/' or a line break (it names an output file)"),
                "type": ["array", "null"], "default": None},
            "survival": survival,
        })


def config_schema() -> dict:
    """The JSON schema of config/config.yaml."""
    model = {
        "preset": _key("string", "default", "Named starting point of the settings (genodae.config.PRESETS).",
                       enum=list(gc.PRESETS)),
        **settings_section(gc.DAEConfig, "model"),
    }
    sweep = {k: {"type": "array", "minItems": 1, "uniqueItems": True,
                 "items": {"$ref": f"#/properties/model/properties/{k}"}}
             for k in model if k not in NOT_SWEPT}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": (
            "genodae workflow configuration (config/config.yaml). Every section is optional: missing keys are "
            "filled with the defaults below. Generated by `python -m workflow.schema` from workflow/schema.py: the "
            "`prepare` and `model` sections from genodae.config.PrepareConfig and DAEConfig (edit those, not this "
            "file)."),
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "datasets": _key("string", "config/datasets.tsv", (
                "Tab-separated dataset sheet (name, path, sample_sheet, options, labels, batch_key), relative to "
                "the working directory.")),
            "prepare": _section(
                "How every dataset becomes model input (genodae prepare). Per-dataset overrides go in the sheet's "
                "options column.", settings_section(gc.PrepareConfig, "prepare")),
            "model": _section(
                "Network and training settings (genodae.config.DAEConfig), one value each. Keys left at their "
                "default are not passed to `genodae train`, so a preset's values apply to them; n_latent and seed "
                "are always passed (they name the output folders).", model),
            "sweep": _section(
                "Lists of values for any model setting; the workflow trains one model per combination (the "
                "cartesian product). Example: {n_latent: [16, 32], seed: [0, 1, 2]} trains six models.", sweep),
            "train": _section("How training jobs run (not model settings).", {
                "checkpoint_every": _key("integer", 10, (
                    "Write a checkpoint every N epochs (0 = never). A training job that finds a checkpoint in its "
                    "model folder (left by a killed or failed job) resumes from it with --resume."), minimum=0)}),
            "embed": _section(None, {"denoised": _key("boolean", False, (
                'Also store the denoised reconstruction in layers["dae_denoised"] of embedded.h5ad (large).'))}),
            "plots": _section(None, {"color": {"type": "array", "items": {"type": "string"}, "default": [],
                                               "description": (
                "obs columns to colour the UMAP by, for every dataset (added to the sheet's labels column).")}}),
            "signatures": _signatures(),
            "resources": _resources(),
        },
    }


def _short(data) -> bool:
    """A list of plain values, or a mapping of short ones without a description: written on one line."""
    if isinstance(data, list):
        return all(not isinstance(v, (dict, list)) for v in data)
    return "description" not in data and all(_short(v) if isinstance(v, (dict, list)) else True for v in data.values())


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # no &id001 anchors for values used twice
        return True

    def represent_list(self, data):
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=_short(data))

    def represent_dict(self, data):
        return self.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=bool(data) and _short(data))


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(dict, _Dumper.represent_dict)


def render(schema: dict) -> str:
    header = "# Generated by `python -m workflow.schema` (workflow/schema.py); do not edit by hand.\n"
    return header + yaml.dump(schema, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflow.schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed schema is current")
    parser.add_argument("-o", "--output", type=Path, default=SCHEMA_PATH)
    args = parser.parse_args(argv)
    text = render(config_schema())
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m workflow.schema", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
