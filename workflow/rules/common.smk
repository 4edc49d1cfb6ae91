# Shared set-up of the genodae workflow: validate the config, read the dataset sheet, expand the sweep,
# and list the final outputs. Every helper function of the workflow lives here; the rule files only use them.

import csv
import hashlib
import itertools
import json
import os
import shlex
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# workflow/ (this file is workflow/rules/common.smk); a local checkout is assumed for the schemas.
WORKFLOW_DIR = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).resolve().parent
SCHEMA_PATH = WORKFLOW_DIR / "schemas" / "config.schema.yaml"
SHEET_SCHEMA_PATH = WORKFLOW_DIR / "schemas" / "datasets.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
MODEL_DEFAULTS = {k: v["default"] for k, v in SCHEMA["properties"]["model"]["properties"].items()}
# n_latent and seed name the run folders, so they are always passed to `genodae train`.
ALWAYS_PASSED = ("n_latent", "seed")
# Values the dataset sheet's `options` column may set, besides the keys of the prepare section.
READ_OPTIONS = {
    "orientation": ("auto", "genes_by_samples", "samples_by_genes"),
    "missing": ("error", "drop", "impute"),
}
SHEET_COLUMNS = ("name", "path", "sample_sheet", "options", "labels")
EXAMPLE_PATH = "resources/example/pbmc68k.h5ad"


# ---- config ------------------------------------------------------------------------------------------


def _key_path(error):
    """'model.epochs' for a jsonschema error at instance path ['model', 'epochs']."""
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _schema_error_message(error, where):
    if error.validator == "additionalProperties":
        # "Additional properties are not allowed ('epoch' was unexpected)": name the full key.
        parent = _key_path(error)
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        keys = ", ".join(f"{parent}.{k}" if error.absolute_path else k for k in extra)
        known = ", ".join(sorted(error.schema.get("properties", {})))
        return f"{where}: unknown key {keys} (known here: {known})"
    return f"{where}: {_key_path(error)}: {error.message}"


def _resolve(schema):
    while "$ref" in schema:
        node = SCHEMA
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _coerce_strings(value, schema):
    """`--config 'model={"epochs": 20}'` hands nested values over as strings ('20'): turn strings into the
    numbers, booleans or lists the schema asks for (YAML rules), so the command line works as expected."""
    schema = _resolve(schema)
    kind = schema.get("type")
    if isinstance(value, str) and kind in ("integer", "number", "boolean", "array"):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return _coerce_strings(parsed, schema) if kind == "array" else parsed
    if isinstance(value, list) and "items" in schema:
        return [_coerce_strings(v, schema["items"]) for v in value]
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: _coerce_strings(v, props[k]) if k in props else v for k, v in value.items()}
    return value


def validate_config(cfg):
    """Validate `cfg` against the schema, filling defaults; raise one clear error naming the bad key."""
    cfg.update(_coerce_strings(dict(cfg), SCHEMA))
    # First a plain check that reports the first error by key (snakemake's message is a long dump) ...
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:  # one line per problem, each naming its key
        raise WorkflowError("\n".join(_schema_error_message(e, "invalid config") for e in errors))
    # ... then snakemake's validate, which fills the defaults from the schema.
    validate(cfg, str(SCHEMA_PATH))
    return cfg


validate_config(config)


# ---- dataset sheet -----------------------------------------------------------------------------------


def _coerce(value):
    """'5000' -> 5000, 'true' -> True, 'drop' -> 'drop' (YAML scalars)."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _parse_options(text, where):
    options = {}
    for part in (p.strip() for p in text.replace(",", ";").split(";")):
        if not part:
            continue
        if "=" not in part:
            raise WorkflowError(f"{where}: option {part!r} is not key=value (separate options with ';')")
        key, value = (s.strip() for s in part.split("=", 1))
        key = key.replace("-", "_")
        if key in READ_OPTIONS:
            if value not in READ_OPTIONS[key]:
                raise WorkflowError(
                    f"{where}: option {key} must be one of {', '.join(READ_OPTIONS[key])}, not {value!r}"
                )
            options[key] = value
            continue
        prepare_schema = SCHEMA["properties"]["prepare"]["properties"]
        if key not in prepare_schema:
            known = ", ".join([*READ_OPTIONS, *prepare_schema])
            raise WorkflowError(f"{where}: unknown option {key!r} (known: {known})")
        coerced = _coerce(value)
        if isinstance(coerced, int) and not isinstance(coerced, bool) and prepare_schema[key]["type"] == "number":
            coerced = float(coerced)
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(prepare_schema[key]).iter_errors(coerced)
        )
        if error is not None:
            raise WorkflowError(f"{where}: option {key}: {error.message}")
        options[key] = coerced
    return options


def load_datasets(sheet):
    """Read and check the dataset sheet; return {name: dict(path, sample_sheet, options, labels)}."""
    path = Path(sheet)
    if not path.is_file():
        raise WorkflowError(
            f"dataset sheet {sheet} (config key 'datasets') not found; paths are relative to the working "
            f"directory {Path.cwd()}"
        )
    with path.open(newline="") as fh:
        lines = [line for line in fh if line.strip() and not line.lstrip().startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    header = [c.strip() for c in (csv.DictReader(lines, delimiter="\t").fieldnames or [])]
    unknown = [c for c in header if c not in SHEET_COLUMNS]
    missing = [c for c in ("name", "path") if c not in header]
    if missing or unknown:
        problem = f"missing column(s) {', '.join(missing)}" if missing else f"unknown column(s) {', '.join(unknown)}"
        raise WorkflowError(
            f"dataset sheet {sheet}: {problem}; the columns are {', '.join(SHEET_COLUMNS)} (tab-separated)"
        )
    if not rows:
        raise WorkflowError(f"dataset sheet {sheet} lists no datasets")
    sheet_schema = yaml.safe_load(SHEET_SCHEMA_PATH.read_text())
    datasets = {}
    for i, row in enumerate(rows, start=2):
        record = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            raise WorkflowError(f"dataset sheet {sheet}, line {i}: more cells than columns (use tabs)")
        record = {k: v for k, v in record.items() if v != "" or k in ("name", "path")}
        where = f"dataset sheet {sheet}, line {i} ({record.get('name') or 'no name'})"
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(sheet_schema).iter_errors(record))
        if error is not None:
            raise WorkflowError(f"{where}: column {_key_path(error)}: {error.message}")
        name = record["name"]
        if name in datasets:
            raise WorkflowError(f"{where}: dataset name {name!r} appears twice")
        data_path = record["path"]
        if data_path == "example":
            data_path = EXAMPLE_PATH
        elif not Path(data_path).exists():
            raise WorkflowError(
                f"{where}: path {data_path!r} not found (relative paths start at the working directory "
                f"{Path.cwd()})"
            )
        sample_sheet = record.get("sample_sheet")
        if sample_sheet and not Path(sample_sheet).is_file():
            raise WorkflowError(f"{where}: sample_sheet {sample_sheet!r} not found")
        labels = [c.strip() for c in record.get("labels", "").split(",") if c.strip()]
        labels += [c for c in config["plots"]["color"] if c not in labels]
        datasets[name] = dict(
            path=data_path,
            sample_sheet=sample_sheet,
            options=_parse_options(record.get("options", ""), where),
            labels=labels,
        )
    return datasets


DATASETS = load_datasets(config["datasets"])


# ---- sweep -------------------------------------------------------------------------------------------


def _fmt(value):
    """A setting value as it appears in folder names: 0.1, 1e-05, true, 512-128 (hidden)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value) or "none"
    return str(value).replace(":", "-")


def _run_id(settings, named_keys):
    """k{n_latent}/seed{seed}, plus a folder naming the other swept settings when there are any."""
    run = f"k{settings['n_latent']}/seed{settings['seed']}"
    if named_keys:
        name = "_".join(f"{k}{_fmt(settings[k])}" for k in named_keys)
        if len(name) > 80:  # keep paths short: a stable hash of the settings instead
            blob = json.dumps({k: settings[k] for k in named_keys}, sort_keys=True)
            name = f"p{hashlib.sha1(blob.encode()).hexdigest()[:10]}"
        run = f"{run}/{name}"
    return run


def expand_sweep(model, sweep):
    """{run_id: settings} for every combination of the swept values (the cartesian product)."""
    keys = list(sweep)
    named = [k for k in keys if k not in ALWAYS_PASSED]
    runs = {}
    for combo in itertools.product(*(sweep[k] for k in keys)):
        settings = {**model, **dict(zip(keys, combo))}
        runs[_run_id(settings, named)] = settings
    return runs


RUNS = expand_sweep(config["model"], config["sweep"])


def device_for_training():
    device = config["model"]["device"]
    if device == "auto":
        return "cuda" if config["resources"]["train"]["gpu"] > 0 else "cpu"
    return device


def _flag(key, value):
    option = key.replace("_", "-")
    name = f"--{option}"
    if isinstance(value, bool):  # --tied / --no-tied
        return name if value else f"--no-{option}"
    if isinstance(value, (list, tuple)):
        return f"{name}={shlex.quote(','.join(str(v) for v in value))}"
    return f"{name} {shlex.quote(str(value))}"


def train_flags(wildcards):
    """The `genodae train` options of one run: the preset, the settings that differ from the defaults
    (so the preset fills the rest), n_latent, seed and the device."""
    settings = RUNS[wildcards.run]
    flags = [f"--preset {settings['preset']}"]
    for key, value in settings.items():
        if key in ("preset", "device"):
            continue
        if key in ALWAYS_PASSED or value != MODEL_DEFAULTS[key]:
            flags.append(_flag(key, value))
    flags.append(f"--device {device_for_training()}")
    return " ".join(flags)


def prepare_flags(wildcards):
    """The `genodae prepare` options of one dataset: config prepare section + the sheet's options."""
    ds = DATASETS[wildcards.dataset]
    settings = {**config["prepare"], **ds["options"]}
    flags = [_flag(k, v) for k, v in settings.items()]
    if ds["sample_sheet"]:
        flags.append(f"--obs {shlex.quote(ds['sample_sheet'])}")
    return " ".join(flags)


def dataset_input(wildcards):
    return DATASETS[wildcards.dataset]["path"]


def plot_colors(wildcards):
    labels = DATASETS[wildcards.dataset]["labels"]
    return " ".join(f"--color {shlex.quote(c)}" for c in labels)


def run_dirs(dataset):
    return [f"results/{dataset}/{run}" for run in RUNS]


def run_table_inputs(wildcards):
    return [f"{d}/model/model.json" for d in run_dirs(wildcards.dataset)]


def swept_keys():
    return list(config["sweep"])


def final_outputs():
    """Every final output of the workflow, for `rule all` in the root Snakefile."""
    files = []
    for dataset in DATASETS:
        for d in run_dirs(dataset):
            files += [
                f"{d}/embedded.h5ad",
                f"{d}/embedding.tsv",
                f"{d}/gene_weights.tsv",
                f"{d}/figures/loss.png",
                f"{d}/figures/umap.png",
            ]
        files.append(f"results/{dataset}/runs.tsv")
    return files


# ---- how the rules call the CLI ----------------------------------------------------------------------

# Every rule runs `python -m genodae <step>`. When this workflow sits in a source checkout (genodae/ beside
# workflow/), that genodae comes first on PYTHONPATH, so the workflow and the library always match; else the
# installed genodae is used. Jobs inherit the variable (locally, and on SLURM through --export=ALL; a job
# step also re-reads this file). With --sdm conda, workflow/envs/genodae.yaml brings the dependencies.
_SOURCE_ROOT = WORKFLOW_DIR.parent
if (_SOURCE_ROOT / "genodae" / "__init__.py").is_file():
    _paths = [str(_SOURCE_ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    # (set, not required from the user: hence no `envvars:` directive)
    os.environ.update(PYTHONPATH=os.pathsep.join(dict.fromkeys(_paths)))


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    run=r"k\d+/seed\d+(/[A-Za-z0-9_.-]+)?",
