# Shared set-up of the genodae workflow: validate the config, read the dataset sheet, expand the sweep,
# and list the final outputs. Every helper function of the workflow lives here; the rule files only use them.

import csv
import gzip
import hashlib
import importlib.util
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


def _load_workflow_module(name):
    """A plain-Python module of workflow/ (no Snakemake in it, so the tests import it too)."""
    spec = importlib.util.spec_from_file_location(f"genodae_workflow_{name}", WORKFLOW_DIR / f"{name}.py")
    loaded = importlib.util.module_from_spec(spec)  # (not `module`: a Snakemake keyword)
    spec.loader.exec_module(loaded)
    return loaded


launch = _load_workflow_module("launch")  # how training jobs start: python, torchrun, srun + torchrun
MODEL_DEFAULTS = {k: v["default"] for k, v in SCHEMA["properties"]["model"]["properties"].items()}
# n_latent and seed name the run folders, so they are always passed to `genodae train`.
ALWAYS_PASSED = ("n_latent", "seed")
# Values the dataset sheet's `options` column may set, besides the keys of the prepare section.
READ_OPTIONS = {
    "orientation": ("auto", "genes_by_samples", "samples_by_genes"),
    "missing": ("error", "drop", "impute"),
    # by name: the options column separates options with ';' and ','
    "delimiter": ("comma", "semicolon", "tab", "space", "pipe"),
    "decimal": ("point", "comma"),
}
SHEET_COLUMNS = ("name", "path", "sample_sheet", "options", "labels", "batch_key")
# `path` of a dataset of several files: `a.csv;b.csv` (batches named after the files), or `batches:SHEET`.
PATH_SEPARATOR = ";"
BATCHES_PREFIX = "batches:"
# The obs column of the batches of a dataset of several files when the sheet's batch_key is empty.
DEFAULT_BATCH_KEY = "batch"
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
        if "loss" in extra:  # retired with the count likelihoods
            key = f"{parent}.loss" if error.absolute_path else "loss"
            return (f"{where}: {key} is now gene_likelihood "
                    "(mse → normal, bce → bernoulli; or poisson, nb, zinb for counts)")
        return f"{where}: unknown key {keys} (known here: {known})"
    return f"{where}: {_key_path(error)}: {error.message}"


def _resolve(schema):
    while "$ref" in schema:
        node = SCHEMA
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _matches(value, kind):
    """Whether `value` has the JSON type `kind` (for the branches of a nullable schema type)."""
    python = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list,
              "object": dict}
    return isinstance(value, python.get(kind, object)) and (kind in ("boolean",) or not isinstance(value, bool))


def _coerce_strings(value, schema):
    """`--config 'model={"epochs": 20}'` hands nested values over as strings ('20'): turn strings into the
    numbers, booleans or lists the schema asks for (YAML rules), so the command line works as expected."""
    schema = _resolve(schema)
    kind = schema.get("type")
    if isinstance(kind, list):  # a nullable value, e.g. ["integer", "null"]: 'null' -> None, '3' -> 3
        if isinstance(value, str) and "null" in kind and value in ("null", "~"):
            return None  # --config reads every scalar as a string, null included
        if isinstance(value, str) and "string" not in kind:
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
        kind = next((k for k in kind if k != "null" and _matches(value, k)), None)
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
        if key == "batch_key":
            raise WorkflowError(f"{where}: batch_key is a column of its own in the sheet (not an option)")
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


def _open_text(path):
    enc = "utf-8-sig"  # an Excel byte-order mark is dropped, never glued to the first column's name
    return gzip.open(path, "rt", newline="", encoding=enc) if str(path).endswith(".gz") else open(
        path, newline="", encoding=enc)


def _read_batches_sheet(sheet, where):
    """(files, sample sheets) listed in a batches sheet (`genodae prepare --batches`: columns path, optional
    batch, obs and per-batch metadata; paths relative to the sheet). Problems: one line each."""
    try:
        with _open_text(sheet) as fh:
            lines = [line for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"{where}: batches sheet {sheet!r} cannot be read ({exc})") from None
    if not lines:
        raise WorkflowError(f"{where}: batches sheet {sheet!r} is empty")
    delimiter = "\t" if "\t" in lines[0] else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    if "path" not in columns:
        raise WorkflowError(f"{where}: batches sheet {sheet!r} has no 'path' column (columns: "
                            f"{', '.join(reader.fieldnames or [])}); it lists one file per row: path, and optionally "
                            "batch, obs (that file's sample sheet) and per-batch metadata")
    base = Path(sheet).parent
    files, sheets, problems = [], [], []
    for i, row in enumerate(reader, start=2):
        value = (row.get(columns["path"]) or "").strip()
        if not value:
            problems.append(f"{where}: batches sheet {sheet}, line {i}: no path")
            continue
        file = base / value
        if not file.exists():
            problems.append(f"{where}: batches sheet {sheet}, line {i}: file {str(file)!r} not found (paths in a "
                            "batches sheet are relative to the sheet's folder)")
        files.append(str(file))
        obs = (row.get(columns["obs"]) or "").strip() if "obs" in columns else ""
        if obs:
            if not (base / obs).is_file():
                problems.append(f"{where}: batches sheet {sheet}, line {i}: sample sheet (obs) {str(base / obs)!r} "
                                "not found")
            sheets.append(str(base / obs))
    if problems:
        raise WorkflowError("\n".join(problems))
    if not files:
        raise WorkflowError(f"{where}: batches sheet {sheet!r} lists no files")
    return files, sheets


def _dataset_files(record, where):
    """dict(files, sample_sheets, batches) of one sheet row: its input file(s), their sample sheets (one per
    file, None for none) and the batches sheet, if any. Every missing file is named (one line each)."""
    path, sample_sheet = record["path"], record.get("sample_sheet", "")
    cwd = f"(relative paths start at the working directory {Path.cwd()})"
    if path == "example":
        if sample_sheet and not Path(sample_sheet).is_file():
            raise WorkflowError(f"{where}: sample_sheet {sample_sheet!r} not found")
        return dict(files=[EXAMPLE_PATH], sample_sheets=[sample_sheet or None], batches=None)
    if path.startswith(BATCHES_PREFIX):
        batches = path[len(BATCHES_PREFIX):].strip()
        if not Path(batches).is_file():
            raise WorkflowError(f"{where}: batches sheet {batches!r} not found {cwd}")
        if sample_sheet:
            raise WorkflowError(f"{where}: with a batches sheet, give each file's sample sheet in the batches sheet's "
                                "obs column, not in sample_sheet")
        files, sheets = _read_batches_sheet(batches, where)
        return dict(files=files, sample_sheets=sheets, batches=batches)
    files = [p.strip() for p in path.split(PATH_SEPARATOR)]
    if "" in files:
        raise WorkflowError(f"{where}: path {path!r} has an empty entry (separate several files with "
                            f"'{PATH_SEPARATOR}')")
    if len(set(files)) < len(files):
        raise WorkflowError(f"{where}: path {path!r} names a file twice")
    sheets = [s.strip() or None for s in sample_sheet.split(PATH_SEPARATOR)] if sample_sheet else [None] * len(files)
    if len(sheets) != len(files):
        raise WorkflowError(f"{where}: sample_sheet lists {len(sheets)} sheet(s) for {len(files)} file(s): give one "
                            f"per file, in the same order, separated by '{PATH_SEPARATOR}' (empty for a file "
                            "without one)")
    problems = [f"{where}: path {f!r} not found {cwd}" for f in files if not Path(f).exists()]
    problems += [f"{where}: sample_sheet {s!r} not found {cwd}" for s in sheets if s and not Path(s).is_file()]
    if problems:
        raise WorkflowError("\n".join(problems))
    return dict(files=files, sample_sheets=sheets, batches=None)


def load_datasets(sheet):
    """Read and check the dataset sheet; return {name: dict(files, sample_sheets, batches, batch_key, options,
    labels)}."""
    path = Path(sheet)
    if not path.is_file():
        raise WorkflowError(
            f"dataset sheet {sheet} (config key 'datasets') not found; paths are relative to the working "
            f"directory {Path.cwd()}"
        )
    with path.open(newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: an Excel byte-order mark is dropped
        numbered = [(i, line) for i, line in enumerate(fh, start=1)
                    if line.strip() and not line.lstrip().startswith("#")]
    lines = [line for _, line in numbered]
    line_numbers = [i for i, _ in numbered[1:]]  # of the rows after the header (comment lines skipped)
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
    for i, row in zip(line_numbers, rows):
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
        files = _dataset_files(record, where)
        several = files["batches"] is not None or len(files["files"]) > 1
        # with several files: the column genodae creates (default `batch`); with one: an existing obs column
        batch_key = record.get("batch_key") or (DEFAULT_BATCH_KEY if several else None)
        labels = [c.strip() for c in record.get("labels", "").split(",") if c.strip()]
        labels += [c for c in config["plots"]["color"] if c not in labels]
        datasets[name] = dict(
            **files,
            batch_key=batch_key,
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


def _check_batch_settings():
    """Model settings that need a batch column, for datasets without a batch_key: one line each."""
    problems = []
    for name, ds in DATASETS.items():
        if ds["batch_key"]:
            continue
        for run, settings in RUNS.items():
            if settings["dispersion"] == "gene-batch":
                problems.append(f"invalid config: model.dispersion gene-batch needs a batch column, but dataset {name} "
                                "has no batch_key (dataset sheet)")
            if settings["encode_covariates"] and not (settings["categorical_covariate_keys"]
                                                      or settings["continuous_covariate_keys"]):
                problems.append(f"invalid config: model.encode_covariates needs covariates to encode, but dataset "
                                f"{name} has no batch_key (dataset sheet) and model.*_covariate_keys are empty")
    if problems:
        raise WorkflowError("\n".join(dict.fromkeys(problems)))


_check_batch_settings()


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
    batch_key = DATASETS[wildcards.dataset]["batch_key"]
    if batch_key:  # the dataset's batch column: the model conditions on it
        flags.append(_flag("batch_key", batch_key))
    for key, value in settings.items():
        if key in ("preset", "device"):
            continue
        if key in ALWAYS_PASSED or value != MODEL_DEFAULTS[key]:
            flags.append(_flag(key, value))
    flags.append(f"--device {device_for_training()}")
    return " ".join(flags)


def prepare_flags(wildcards):
    """The `genodae prepare` options of one dataset: config prepare section + the sheet's options, the batch
    column and the sample sheets (one --obs per file, '' for a file without one)."""
    ds = DATASETS[wildcards.dataset]
    settings = {**config["prepare"], **ds["options"]}
    flags = [_flag(k, v) for k, v in settings.items() if v is not None]  # None: not set (layer)
    if ds["batch_key"]:
        flags.append(_flag("batch_key", ds["batch_key"]))
    if ds["batches"] is None and any(ds["sample_sheets"]):
        flags += [f"--obs {shlex.quote(s or '')}" for s in ds["sample_sheets"]]
    return " ".join(flags)


def prepare_inputs(wildcards):
    """What `genodae prepare` reads: the file(s), or `--batches SHEET`."""
    ds = DATASETS[wildcards.dataset]
    if ds["batches"] is not None:
        return f"--batches {shlex.quote(ds['batches'])}"
    return " ".join(shlex.quote(f) for f in ds["files"])


def dataset_input(wildcards):
    """The data files (and the batches sheet): rule inputs, so that a new file re-runs prepare."""
    ds = DATASETS[wildcards.dataset]
    return [*([ds["batches"]] if ds["batches"] else []), *ds["files"]]


def dataset_sample_sheet(wildcards):
    return [s for s in DATASETS[wildcards.dataset]["sample_sheets"] if s]


def plot_colors(wildcards):
    """The UMAP's colours: the dataset's label columns, and its batch column."""
    ds = DATASETS[wildcards.dataset]
    columns = [*ds["labels"], *([ds["batch_key"]] if ds["batch_key"] not in (None, *ds["labels"]) else [])]
    # one --color with every column (nargs="*": a second --color would replace the first)
    return f"--color {' '.join(shlex.quote(c) for c in columns)}" if columns else ""


def integration_datasets():
    """Datasets with a batch column: each gets results/{dataset}/integration.tsv."""
    return [name for name, ds in DATASETS.items() if ds["batch_key"]]


def integration_inputs(wildcards):
    return [f"results/{wildcards.dataset}/{run}/embedded.h5ad" for run in RUNS]


def integration_label(wildcards):
    """The label column whose 15-NN accuracy the integration table reports: the first of the dataset's labels
    that is not its batch column (None: no label accuracy, silhouette over all cells as one group)."""
    ds = DATASETS[wildcards.dataset]
    return next((c for c in ds["labels"] if c != ds["batch_key"]), None)


def run_dirs(dataset):
    return [f"results/{dataset}/{run}" for run in RUNS]


def run_table_inputs(wildcards):
    return [f"{d}/model/model.json" for d in run_dirs(wildcards.dataset)]


def swept_keys():
    return list(config["sweep"])


# ---- signatures (workflow/rules/signatures.smk) ------------------------------------------------------

SIG = config["signatures"]


def _check_signature_config():
    """Problems the schema cannot see: missing files, a half-set survival section, unknown datasets."""
    problems = []
    for i, gmt in enumerate(SIG["gene_sets"]):
        if not Path(gmt).is_file():
            problems.append(f"signatures.gene_sets.{i}: GMT file {gmt!r} not found")
    if SIG["id_map"] and not Path(SIG["id_map"]).is_file():
        problems.append(f"signatures.id_map: identifier map {SIG['id_map']!r} not found")
    surv = SIG["survival"]
    if bool(surv["duration"]) != bool(surv["event"]):
        problems.append("signatures.survival: set both duration and event (or neither)")
    unknown = [d for d in surv["datasets"] if d not in DATASETS]
    if unknown:
        problems.append(f"signatures.survival.datasets: unknown dataset(s) {', '.join(unknown)} "
                        f"(the sheet has {', '.join(DATASETS)})")
    if SIG["groupby"] is None:
        for name, ds in DATASETS.items():
            bad = [c for c in ds["labels"] if "/" in c]
            if bad:
                problems.append(f"dataset {name}: label column(s) {', '.join(bad)} contain '/', which cannot name "
                                "an association table; set signatures.groupby")
    if problems:
        where = f"the paths are relative to the working directory {Path.cwd()}"
        raise WorkflowError("invalid config: " + "\ninvalid config: ".join(problems) + f"\n({where})")


_check_signature_config()


def _group_runs(name_of):
    """{group: [run, ...]} of RUNS grouped by name_of(run) (None = left out)."""
    groups = {}
    for run in RUNS:
        name = name_of(run)
        if name is not None:
            groups.setdefault(name, []).append(run)
    return groups


def _ensemble_name(run):
    """k32/seed0[/x] -> k32/ensemble[/x]: the runs that differ only in their seed form one ensemble."""
    k, _seed, *rest = run.split("/")
    return Path(k, "ensemble", *rest).as_posix()


def _sweep_name(run):
    """k32/seed0[/x] -> sweep[/x]: the runs that differ only in n_latent and seed form one sweep."""
    return Path("sweep", *run.split("/")[2:]).as_posix()


# Consensus of the seeds of each latent size (and other swept settings): only where there are >= 2 seeds.
ENSEMBLES = {
    name: runs for name, runs in _group_runs(_ensemble_name).items()
    if SIG["enabled"] and SIG["ensemble"] and len(runs) >= 2
}
# A summary per latent size: only where there are >= 2 sizes.
SWEEPS = {
    name: runs for name, runs in _group_runs(_sweep_name).items()
    if SIG["enabled"] and SIG["sweep_summary"] and len({RUNS[r]["n_latent"] for r in runs}) >= 2
}


def signature_sources():
    """Every model whose signatures are read: each run, and each ensemble's consensus."""
    return [*RUNS, *ENSEMBLES] if SIG["enabled"] else []


def source_h5ad(wildcards):
    """The .h5ad a run's or an ensemble's signature rules read."""
    name = "consensus.h5ad" if wildcards.src in ENSEMBLES else "embedded.h5ad"
    return f"results/{wildcards.dataset}/{wildcards.src}/{name}"


def source_key(wildcards):
    """The model key in source_h5ad whose nodes the signatures table names (genodae enrich/associate --key)."""
    if wildcards.src in ENSEMBLES:
        return "dae_ensemble"
    return "dae_varimax" if SIG["rotation"] == "varimax" else "dae"


def ensemble_inputs(wildcards):
    return [f"results/{wildcards.dataset}/{run}/embedded.h5ad" for run in ENSEMBLES[wildcards.ens]]


def sweep_inputs(wildcards):
    return [f"results/{wildcards.dataset}/{run}/embedded.h5ad" for run in SWEEPS[wildcards.sweep]]


def enrichment_on():
    return SIG["enabled"] and bool(SIG["gene_sets"])


def gene_set_flags(for_sweep=False):
    """--gene-sets and --id-map options. genodae sweep-summary has no --id-from/--id-to: with those set, the
    sweep summary leaves out its count of enriched sets rather than map identifiers by the wrong columns."""
    if not SIG["gene_sets"] or (for_sweep and (SIG["id_from"] or SIG["id_to"])):
        return ""
    flags = ["--gene-sets", *(shlex.quote(g) for g in SIG["gene_sets"])]
    if SIG["id_map"]:
        flags.append(f"--id-map {shlex.quote(SIG['id_map'])}")
    if not for_sweep:
        flags += [f"--id-from {shlex.quote(SIG['id_from'])}" if SIG["id_from"] else "",
                  f"--id-to {shlex.quote(SIG['id_to'])}" if SIG["id_to"] else ""]
    return " ".join(f for f in flags if f)


def gene_set_inputs():
    """Gene-set files as rule inputs, so that editing them re-runs the enrichment."""
    return [*SIG["gene_sets"], *([SIG["id_map"]] if SIG["id_map"] else [])]


def groupby_columns(dataset):
    """obs columns to test node activities against: signatures.groupby, else the dataset's label columns."""
    if not SIG["enabled"]:
        return []
    return list(SIG["groupby"] if SIG["groupby"] is not None else DATASETS[dataset]["labels"])


def survival_on(dataset):
    surv = SIG["survival"]
    return (SIG["enabled"] and bool(surv["duration"] and surv["event"])
            and (not surv["datasets"] or dataset in surv["datasets"]))


def survival_flags():
    surv = SIG["survival"]
    flags = [f"--duration {shlex.quote(surv['duration'])}", f"--event {shlex.quote(surv['event'])}"]
    if surv["event_value"] is not None:
        flags.append(f"--event-value {shlex.quote(str(surv['event_value']))}")
    if surv["covariates"]:
        flags.append("--covariates " + " ".join(shlex.quote(c) for c in surv["covariates"]))
    return " ".join(flags)


def signature_outputs(dataset):
    """The final outputs of the signature rules for one dataset."""
    files = []
    for src in signature_sources():
        d = f"results/{dataset}/{src}/signatures"
        files += [f"{d}/signatures.tsv", f"{d}/weights.tsv", f"{d}/activities.tsv", f"{d}/heatmap.png"]
        if src in RUNS and SIG["rotation"] != "none":
            files.append(f"{d}/transform.json")
        if enrichment_on():
            files += [f"{d}/enrichment.tsv", f"{d}/enrichment.png"]
        for col in groupby_columns(dataset):
            files += [f"{d}/association_{col}.tsv", f"{d}/association_{col}.png"]
        if survival_on(dataset):
            files += [f"{d}/survival.tsv", f"{d}/km.png"]
    for ens in ENSEMBLES:
        d = f"results/{dataset}/{ens}"
        files += [f"{d}/consensus_weights.tsv", f"{d}/consensus_activities.tsv", f"{d}/support.tsv",
                  f"{d}/stability.tsv", f"{d}/consensus.h5ad"]
    for sweep in SWEEPS:
        files += [f"results/{dataset}/{sweep}/summary.tsv", f"results/{dataset}/{sweep}/summary.png"]
    return files


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
        if dataset in integration_datasets():
            files.append(f"results/{dataset}/integration.tsv")
        files += signature_outputs(dataset)
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
    ens=r"k\d+/ensemble(/[A-Za-z0-9_.-]+)?",
    src=r"k\d+/(seed\d+|ensemble)(/[A-Za-z0-9_.-]+)?",
    sweep=r"sweep(/[A-Za-z0-9_.-]+)?",
    groupby=r"[^/]+",
