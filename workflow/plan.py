"""The workflow's plan: the config checked and filled, the dataset sheet read, the sweep expanded, the options of
every `genodae` command and the list of final outputs.

Plain Python (no Snakemake): ``rules/common.smk`` builds one :class:`Plan` from the config and hands its methods
to the rules; ``tests/test_workflow_plan.py`` imports it to check each step. Relative paths (the dataset sheet,
its files, GMT files) start at the working directory, as in a Snakemake run. Every problem is a
:class:`ConfigError` of one line per problem, each naming its key, column or line.
"""

from __future__ import annotations

import copy
import csv
import gzip
import hashlib
import itertools
import json
import shlex
from pathlib import Path

import jsonschema
import yaml

WORKFLOW_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = WORKFLOW_DIR / "schemas" / "config.schema.yaml"
SHEET_SCHEMA_PATH = WORKFLOW_DIR / "schemas" / "datasets.schema.yaml"

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


class ConfigError(ValueError):
    """A problem with the config or the dataset sheet (one line per problem; Snakefiles raise it as a
    WorkflowError)."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


# ---- config ------------------------------------------------------------------------------------------


def _key_path(error) -> str:
    """'model.epochs' for a jsonschema error at instance path ['model', 'epochs']."""
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _schema_error_message(error, where: str) -> str:
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
    return f"{where}: {_key_path(error)}: {_in_words(error)}"


def _in_words(error) -> str:
    """jsonschema's message, but a failed ``pattern`` is explained by the setting's description, not the regex."""
    if error.validator == "pattern" and error.schema.get("description"):
        words = " ".join(str(error.schema["description"]).split())
        if len(words) > 160:  # a long description: its first sentence states the rule
            words = words.split(". ")[0].rstrip(".") + "."
        return f"{error.instance!r} is not allowed here: {words}"
    return error.message


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _matches(value, kind: str) -> bool:
    """Whether `value` has the JSON type `kind` (for the branches of a nullable schema type)."""
    python = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list,
              "object": dict}
    return isinstance(value, python.get(kind, object)) and (kind in ("boolean",) or not isinstance(value, bool))


def coerce_strings(value, schema: dict, root: dict | None = None):
    """`--config 'model={"epochs": 20}'` hands nested values over as strings ('20'): turn strings into the
    numbers, booleans or lists the schema asks for (YAML rules), so the command line works as expected."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
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
        return coerce_strings(parsed, schema, root) if kind == "array" else parsed
    if isinstance(value, list) and "items" in schema:
        return [coerce_strings(v, schema["items"], root) for v in value]
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: coerce_strings(v, props[k], root) if k in props else v for k, v in value.items()}
    return value


def _fill_defaults(value, schema: dict) -> None:
    """Fill missing keys with the schema's defaults, sections first, then their keys (as snakemake's
    ``validate(..., set_default=True)`` does)."""
    if not isinstance(value, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if "default" in sub and key not in value:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            _fill_defaults(value[key], sub)


def validate_config(cfg: dict, schema: dict | None = None) -> dict:
    """Check `cfg` against the schema and fill its defaults, in place; raise one ConfigError listing every
    problem (one line each, naming its key)."""
    schema = load_schema() if schema is None else schema
    cfg.update(coerce_strings(dict(cfg), schema))
    validator = jsonschema.Draft202012Validator(schema)
    by_key: dict[tuple, list] = {}
    for e in validator.iter_errors(cfg):
        by_key.setdefault(tuple(str(p) for p in e.absolute_path), []).append(e)
    # one line per problem: of several rules one value breaks (e.g. empty and a pattern), the most relevant
    errors = [jsonschema.exceptions.best_match(errs) for _, errs in sorted(by_key.items())]
    if errors:
        raise ConfigError("\n".join(_schema_error_message(e, "invalid config") for e in errors))
    _fill_defaults(cfg, schema)
    return cfg


# ---- dataset sheet -----------------------------------------------------------------------------------


def _coerce(value: str):
    """'5000' -> 5000, 'true' -> True, 'drop' -> 'drop' (YAML scalars)."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def parse_options(text: str, where: str, prepare_schema: dict) -> dict:
    """The sheet's `options` cell ("orientation=genes_by_samples; n_top_genes=5000") as a dict, each value
    checked: the reading options against READ_OPTIONS, the others against the config's prepare section."""
    options = {}
    for part in (p.strip() for p in text.replace(",", ";").split(";")):
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"{where}: option {part!r} is not key=value (separate options with ';')")
        key, value = (s.strip() for s in part.split("=", 1))
        key = key.replace("-", "_")
        if key == "batch_key":
            raise ConfigError(f"{where}: batch_key is a column of its own in the sheet (not an option)")
        if key in READ_OPTIONS:
            if value not in READ_OPTIONS[key]:
                raise ConfigError(
                    f"{where}: option {key} must be one of {', '.join(READ_OPTIONS[key])}, not {value!r}"
                )
            options[key] = value
            continue
        if key not in prepare_schema:
            known = ", ".join([*READ_OPTIONS, *prepare_schema])
            raise ConfigError(f"{where}: unknown option {key!r} (known: {known})")
        coerced = _coerce(value)
        if isinstance(coerced, int) and not isinstance(coerced, bool) and prepare_schema[key]["type"] == "number":
            coerced = float(coerced)
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(prepare_schema[key]).iter_errors(coerced)
        )
        if error is not None:
            raise ConfigError(f"{where}: option {key}: {error.message}")
        options[key] = coerced
    return options


def _open_text(path):
    enc = "utf-8-sig"  # an Excel byte-order mark is dropped, never glued to the first column's name
    return gzip.open(path, "rt", newline="", encoding=enc) if str(path).endswith(".gz") else open(
        path, newline="", encoding=enc)


def read_batches_sheet(sheet: str, where: str) -> tuple[list[str], list[str]]:
    """(files, sample sheets) listed in a batches sheet (`genodae prepare --batches`: columns path, optional
    batch, obs and per-batch metadata; paths relative to the sheet). Problems: one line each."""
    try:
        with _open_text(sheet) as fh:
            lines = [line for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: batches sheet {sheet!r} cannot be read ({exc})") from None
    if not lines:
        raise ConfigError(f"{where}: batches sheet {sheet!r} is empty")
    delimiter = "\t" if "\t" in lines[0] else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    if "path" not in columns:
        raise ConfigError(f"{where}: batches sheet {sheet!r} has no 'path' column (columns: "
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
        raise ConfigError("\n".join(problems))
    if not files:
        raise ConfigError(f"{where}: batches sheet {sheet!r} lists no files")
    return files, sheets


def dataset_files(record: dict, where: str) -> dict:
    """dict(files, sample_sheets, batches) of one sheet row: its input file(s), their sample sheets (one per
    file, None for none) and the batches sheet, if any. Every missing file is named (one line each)."""
    path, sample_sheet = record["path"], record.get("sample_sheet", "")
    cwd = f"(relative paths start at the working directory {Path.cwd()})"
    if path == "example":
        if sample_sheet and not Path(sample_sheet).is_file():
            raise ConfigError(f"{where}: sample_sheet {sample_sheet!r} not found")
        return dict(files=[EXAMPLE_PATH], sample_sheets=[sample_sheet or None], batches=None)
    if path.startswith(BATCHES_PREFIX):
        batches = path[len(BATCHES_PREFIX):].strip()
        if not Path(batches).is_file():
            raise ConfigError(f"{where}: batches sheet {batches!r} not found {cwd}")
        if sample_sheet:
            raise ConfigError(f"{where}: with a batches sheet, give each file's sample sheet in the batches sheet's "
                              "obs column, not in sample_sheet")
        files, sheets = read_batches_sheet(batches, where)
        return dict(files=files, sample_sheets=sheets, batches=batches)
    files = [p.strip() for p in path.split(PATH_SEPARATOR)]
    if "" in files:
        raise ConfigError(f"{where}: path {path!r} has an empty entry (separate several files with "
                          f"'{PATH_SEPARATOR}')")
    if len(set(files)) < len(files):
        raise ConfigError(f"{where}: path {path!r} names a file twice")
    sheets = [s.strip() or None for s in sample_sheet.split(PATH_SEPARATOR)] if sample_sheet else [None] * len(files)
    if len(sheets) != len(files):
        raise ConfigError(f"{where}: sample_sheet lists {len(sheets)} sheet(s) for {len(files)} file(s): give one "
                          f"per file, in the same order, separated by '{PATH_SEPARATOR}' (empty for a file "
                          "without one)")
    problems = [f"{where}: path {f!r} not found {cwd}" for f in files if not Path(f).exists()]
    problems += [f"{where}: sample_sheet {s!r} not found {cwd}" for s in sheets if s and not Path(s).is_file()]
    if problems:
        raise ConfigError("\n".join(problems))
    return dict(files=files, sample_sheets=sheets, batches=None)


def load_datasets(sheet: str, *, prepare_schema: dict, colors=()) -> dict[str, dict]:
    """Read and check the dataset sheet; return {name: dict(files, sample_sheets, batches, batch_key, options,
    labels)}. `prepare_schema` checks the options column; `colors` (plots.color) are added to every labels."""
    path = Path(sheet)
    if not path.is_file():
        raise ConfigError(
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
    if missing and len(header) == 1 and ("," in header[0] or ";" in header[0]):
        raise ConfigError(
            f"dataset sheet {sheet} is not tab-separated (its header line is {header[0]!r}): separate the columns "
            "with tabs, as in config/datasets.tsv"
        )
    if missing or unknown:
        problem = f"missing column(s) {', '.join(missing)}" if missing else f"unknown column(s) {', '.join(unknown)}"
        raise ConfigError(
            f"dataset sheet {sheet}: {problem}; the columns are {', '.join(SHEET_COLUMNS)} (tab-separated)"
        )
    if not rows:
        raise ConfigError(f"dataset sheet {sheet} lists no datasets")
    sheet_schema = load_schema(SHEET_SCHEMA_PATH)
    datasets = {}
    for i, row in zip(line_numbers, rows, strict=False):  # (a quoted cell may span lines)
        record = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            raise ConfigError(f"dataset sheet {sheet}, line {i}: more cells than columns (use tabs)")
        record = {k: v for k, v in record.items() if v != "" or k in ("name", "path")}
        where = f"dataset sheet {sheet}, line {i} ({record.get('name') or 'no name'})"
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(sheet_schema).iter_errors(record))
        if error is not None:
            raise ConfigError(f"{where}: column {_key_path(error)}: {_in_words(error)}")
        name = record["name"]
        if name in datasets:
            raise ConfigError(f"{where}: dataset name {name!r} appears twice")
        files = dataset_files(record, where)
        several = files["batches"] is not None or len(files["files"]) > 1
        # with several files: the column genodae creates (default `batch`); with one: an existing obs column
        batch_key = record.get("batch_key") or (DEFAULT_BATCH_KEY if several else None)
        labels = [c.strip() for c in record.get("labels", "").split(",") if c.strip()]
        labels += [c for c in colors if c not in labels]
        datasets[name] = dict(
            **files,
            batch_key=batch_key,
            options=parse_options(record.get("options", ""), where, prepare_schema),
            labels=labels,
        )
    return datasets


# ---- sweep -------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    """A setting value as it appears in folder names: 0.1, 1e-05, true, 512-128 (hidden)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value) or "none"
    return str(value).replace(":", "-")


def run_id(settings: dict, named_keys) -> str:
    """k{n_latent}/seed{seed}, plus a folder naming the other swept settings when there are any."""
    run = f"k{settings['n_latent']}/seed{settings['seed']}"
    if named_keys:
        name = "_".join(f"{k}{_fmt(settings[k])}" for k in named_keys)
        if len(name) > 80:  # keep paths short: a stable hash of the settings instead
            blob = json.dumps({k: settings[k] for k in named_keys}, sort_keys=True)
            name = f"p{hashlib.sha1(blob.encode()).hexdigest()[:10]}"
        run = f"{run}/{name}"
    return run


def expand_sweep(model: dict, sweep: dict) -> dict[str, dict]:
    """{run_id: settings} for every combination of the swept values (the cartesian product)."""
    keys = list(sweep)
    named = [k for k in keys if k not in ALWAYS_PASSED]
    runs = {}
    for combo in itertools.product(*(sweep[k] for k in keys)):
        settings = {**model, **dict(zip(keys, combo, strict=True))}
        runs[run_id(settings, named)] = settings
    return runs


def flag(key: str, value) -> str:
    """One command-line option: --key value (quoted), --key=a,b for a list, --key / --no-key for a boolean."""
    option = key.replace("_", "-")
    name = f"--{option}"
    if isinstance(value, bool):  # --tied / --no-tied
        return name if value else f"--no-{option}"
    if isinstance(value, (list, tuple)):
        return f"{name}={shlex.quote(','.join(str(v) for v in value))}"
    return f"{name} {shlex.quote(str(value))}"


def ensemble_name(run: str) -> str:
    """k32/seed0[/x] -> k32/ensemble[/x]: the runs that differ only in their seed form one ensemble."""
    k, _seed, *rest = run.split("/")
    return Path(k, "ensemble", *rest).as_posix()


def sweep_name(run: str) -> str:
    """k32/seed0[/x] -> sweep[/x]: the runs that differ only in n_latent and seed form one sweep."""
    return Path("sweep", *run.split("/")[2:]).as_posix()


def _group_runs(runs, name_of) -> dict[str, list[str]]:
    """{group: [run, ...]} of `runs` grouped by name_of(run) (None = left out)."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        name = name_of(run)
        if name is not None:
            groups.setdefault(name, []).append(run)
    return groups


# ---- the plan ----------------------------------------------------------------------------------------


class Plan:
    """Everything the rules need, from one config (checked and filled in place, as Snakemake's ``config``).

    Attributes: ``config``; ``datasets`` ({name: files, sample_sheets, batches, batch_key, options, labels});
    ``runs`` ({run: model settings}, run = k{n_latent}/seed{seed}[/{other swept settings}]); ``ensembles``
    ({k{n}/ensemble[/x]: runs}, seeds >= 2) and ``sweeps`` ({sweep[/x]: runs}, latent sizes >= 2), each only
    when the signatures section asks for them.
    """

    def __init__(self, config: dict, schema: dict | None = None):
        self.schema = load_schema() if schema is None else schema
        self.config = validate_config(config, self.schema)
        props = self.schema["properties"]
        self.model_defaults = {k: v["default"] for k, v in props["model"]["properties"].items()}
        self.datasets = load_datasets(config["datasets"], prepare_schema=props["prepare"]["properties"],
                                      colors=config["plots"]["color"])
        self.runs = expand_sweep(config["model"], config["sweep"])
        self._check_batch_settings()
        self.sig = sig = config["signatures"]
        self._check_signature_config()
        # Consensus of the seeds of each latent size (and other swept settings): only where there are >= 2 seeds.
        self.ensembles = {
            name: runs for name, runs in _group_runs(self.runs, ensemble_name).items()
            if sig["enabled"] and sig["ensemble"] and len(runs) >= 2
        }
        # A summary per latent size: only where there are >= 2 sizes.
        self.sweeps = {
            name: runs for name, runs in _group_runs(self.runs, sweep_name).items()
            if sig["enabled"] and sig["sweep_summary"] and len({self.runs[r]["n_latent"] for r in runs}) >= 2
        }

    # ---- checks across sections ----

    def _check_batch_settings(self) -> None:
        """Model settings that need a batch column, for datasets without a batch_key: one line each."""
        problems = []
        for name, ds in self.datasets.items():
            if ds["batch_key"]:
                continue
            for settings in self.runs.values():
                if settings["dispersion"] == "gene-batch":
                    problems.append(f"invalid config: model.dispersion gene-batch needs a batch column, but dataset "
                                    f"{name} has no batch_key (dataset sheet)")
                if settings["encode_covariates"] and not (settings["categorical_covariate_keys"]
                                                          or settings["continuous_covariate_keys"]):
                    problems.append(f"invalid config: model.encode_covariates needs covariates to encode, but "
                                    f"dataset {name} has no batch_key (dataset sheet) and model.*_covariate_keys "
                                    "are empty")
        if problems:
            raise ConfigError("\n".join(dict.fromkeys(problems)))

    def _check_signature_config(self) -> None:
        """Problems the schema cannot see: missing files, a half-set survival section, unknown datasets."""
        sig, problems = self.sig, []
        for i, gmt in enumerate(sig["gene_sets"]):
            if not Path(gmt).is_file():
                problems.append(f"signatures.gene_sets.{i}: GMT file {gmt!r} not found")
        if sig["id_map"] and not Path(sig["id_map"]).is_file():
            problems.append(f"signatures.id_map: identifier map {sig['id_map']!r} not found")
        surv = sig["survival"]
        if bool(surv["duration"]) != bool(surv["event"]):
            problems.append("signatures.survival: set both duration and event (or neither)")
        unknown = [d for d in surv["datasets"] if d not in self.datasets]
        if unknown:
            problems.append(f"signatures.survival.datasets: unknown dataset(s) {', '.join(unknown)} "
                            f"(the sheet has {', '.join(self.datasets)})")
        if sig["groupby"] is None:
            for name, ds in self.datasets.items():
                bad = [c for c in ds["labels"] if "/" in c]
                if bad:
                    problems.append(f"dataset {name}: label column(s) {', '.join(bad)} contain '/', which cannot "
                                    "name an association table; set signatures.groupby")
        if problems:
            where = f"the paths are relative to the working directory {Path.cwd()}"
            raise ConfigError("invalid config: " + "\ninvalid config: ".join(problems) + f"\n({where})")

    # ---- prepare, train, plot ----

    def device_for_training(self) -> str:
        device = self.config["model"]["device"]
        if device == "auto":
            return "cuda" if self.config["resources"]["train"]["gpu"] > 0 else "cpu"
        return device

    def train_flags(self, dataset: str, run: str) -> str:
        """The `genodae train` options of one run: the preset, the settings that differ from the defaults
        (so the preset fills the rest), n_latent, seed and the device."""
        settings = self.runs[run]
        flags = [f"--preset {settings['preset']}"]
        batch_key = self.datasets[dataset]["batch_key"]
        if batch_key:  # the dataset's batch column: the model conditions on it
            flags.append(flag("batch_key", batch_key))
        for key, value in settings.items():
            if key in ("preset", "device"):
                continue
            if key in ALWAYS_PASSED or value != self.model_defaults[key]:
                flags.append(flag(key, value))
        flags.append(f"--device {self.device_for_training()}")
        return " ".join(flags)

    def prepare_flags(self, dataset: str) -> str:
        """The `genodae prepare` options of one dataset: config prepare section + the sheet's options, the batch
        column and the sample sheets (one --obs per file, '' for a file without one)."""
        ds = self.datasets[dataset]
        settings = {**self.config["prepare"], **ds["options"]}
        flags = [flag(k, v) for k, v in settings.items() if v is not None]  # None: not set (layer)
        if ds["batch_key"]:
            flags.append(flag("batch_key", ds["batch_key"]))
        if ds["batches"] is None and any(ds["sample_sheets"]):
            flags += [f"--obs {shlex.quote(s or '')}" for s in ds["sample_sheets"]]
        needed = list(dict.fromkeys([*ds["labels"], *self.groupby_columns(dataset)]))
        if needed:  # a misspelt label column fails here, not after training at the plot
            flags.append("--require-obs " + " ".join(shlex.quote(c) for c in needed))
        return " ".join(flags)

    def prepare_inputs(self, dataset: str) -> str:
        """What `genodae prepare` reads: the file(s), or `--batches SHEET`."""
        ds = self.datasets[dataset]
        if ds["batches"] is not None:
            return f"--batches {shlex.quote(ds['batches'])}"
        return " ".join(shlex.quote(f) for f in ds["files"])

    def dataset_input(self, dataset: str) -> list[str]:
        """The data files (and the batches sheet): rule inputs, so that a new file re-runs prepare."""
        ds = self.datasets[dataset]
        return [*([ds["batches"]] if ds["batches"] else []), *ds["files"]]

    def dataset_sample_sheet(self, dataset: str) -> list[str]:
        return [s for s in self.datasets[dataset]["sample_sheets"] if s]

    def plot_colors(self, dataset: str) -> str:
        """The UMAP's colours: the dataset's label columns, and its batch column."""
        ds = self.datasets[dataset]
        columns = [*ds["labels"], *([ds["batch_key"]] if ds["batch_key"] not in (None, *ds["labels"]) else [])]
        # one --color with every column (nargs="*": a second --color would replace the first)
        return f"--color {' '.join(shlex.quote(c) for c in columns)}" if columns else ""

    # ---- runs of a dataset ----

    def run_dirs(self, dataset: str) -> list[str]:
        return [f"results/{dataset}/{run}" for run in self.runs]

    def run_table_inputs(self, dataset: str) -> list[str]:
        return [f"{d}/model/model.json" for d in self.run_dirs(dataset)]

    def embedded(self, dataset: str, runs=None) -> list[str]:
        """The embedded.h5ad of `runs` (default: every run) of a dataset."""
        return [f"results/{dataset}/{run}/embedded.h5ad" for run in (self.runs if runs is None else runs)]

    def swept_keys(self) -> list[str]:
        return list(self.config["sweep"])

    def integration_datasets(self) -> list[str]:
        """Datasets with a batch column: each gets results/{dataset}/integration.tsv."""
        return [name for name, ds in self.datasets.items() if ds["batch_key"]]

    def integration_label(self, dataset: str) -> str | None:
        """The label column whose 15-NN accuracy the integration table reports: the first of the dataset's
        labels that is not its batch column (None: no label accuracy, silhouette over all cells as one group)."""
        ds = self.datasets[dataset]
        return next((c for c in ds["labels"] if c != ds["batch_key"]), None)

    # ---- signatures (workflow/rules/signatures.smk) ----

    def signature_sources(self) -> list[str]:
        """Every model whose signatures are read: each run, and each ensemble's consensus."""
        return [*self.runs, *self.ensembles] if self.sig["enabled"] else []

    def source_h5ad(self, dataset: str, src: str) -> str:
        """The .h5ad a run's or an ensemble's signature rules read."""
        name = "consensus.h5ad" if src in self.ensembles else "embedded.h5ad"
        return f"results/{dataset}/{src}/{name}"

    def source_key(self, src: str) -> str:
        """The model key in source_h5ad whose nodes the signatures table names (genodae enrich/associate --key)."""
        if src in self.ensembles:
            return "dae_ensemble"
        return "dae" if self.sig["rotation"] == "none" else f"dae_{self.sig['rotation']}"

    def enrichment_on(self) -> bool:
        return self.sig["enabled"] and bool(self.sig["gene_sets"])

    def gene_set_flags(self, for_sweep: bool = False) -> str:
        """--gene-sets and --id-map options. genodae sweep-summary has no --id-from/--id-to: with those set, the
        sweep summary leaves out its count of enriched sets rather than map identifiers by the wrong columns."""
        sig = self.sig
        if not sig["gene_sets"] or (for_sweep and (sig["id_from"] or sig["id_to"])):
            return ""
        flags = ["--gene-sets", *(shlex.quote(g) for g in sig["gene_sets"])]
        if sig["id_map"]:
            flags.append(f"--id-map {shlex.quote(sig['id_map'])}")
        if not for_sweep:
            flags += [f"--id-from {shlex.quote(sig['id_from'])}" if sig["id_from"] else "",
                      f"--id-to {shlex.quote(sig['id_to'])}" if sig["id_to"] else ""]
        return " ".join(f for f in flags if f)

    def gene_set_inputs(self) -> list[str]:
        """Gene-set files as rule inputs, so that editing them re-runs the enrichment."""
        return [*self.sig["gene_sets"], *([self.sig["id_map"]] if self.sig["id_map"] else [])]

    def groupby_columns(self, dataset: str) -> list[str]:
        """obs columns to test node activities against: signatures.groupby, else the dataset's label columns."""
        if not self.sig["enabled"]:
            return []
        return list(self.sig["groupby"] if self.sig["groupby"] is not None else self.datasets[dataset]["labels"])

    def survival_on(self, dataset: str) -> bool:
        surv = self.sig["survival"]
        return (self.sig["enabled"] and bool(surv["duration"] and surv["event"])
                and (not surv["datasets"] or dataset in surv["datasets"]))

    def survival_flags(self) -> str:
        surv = self.sig["survival"]
        if not surv["duration"]:
            return ""
        flags = [f"--duration {shlex.quote(surv['duration'])}", f"--event {shlex.quote(surv['event'])}"]
        if surv["event_value"] is not None:
            flags.append(f"--event-value {shlex.quote(str(surv['event_value']))}")
        if surv["covariates"]:
            flags.append("--covariates " + " ".join(shlex.quote(c) for c in surv["covariates"]))
        return " ".join(flags)

    def signature_options(self, rotate: bool = True) -> str:
        """Options of `genodae signatures`: of a run (rotated as signatures.rotation says), or of an ensemble's
        consensus (rotate=False: already in its members' read-out basis)."""
        sig = self.sig
        if rotate:
            return (f"--sd-cutoff {sig['sd_cutoff']} --rotation {sig['rotation']} "
                    f"--min-genes {sig['min_genes']} --n-genes {sig['heatmap_genes']}")
        return (f"--sd-cutoff {sig['sd_cutoff']} --min-genes {sig['min_genes']} "
                f"--n-genes {sig['heatmap_genes']} --rotation none")

    def ensemble_options(self) -> str:
        sig = self.sig
        options = f"--rotation {sig['rotation']}"
        options += f" --min-corr {sig['min_corr']}" if sig["min_corr"] is not None else ""
        return options + (f" --min-support {sig['min_support']}" if sig["min_support"] is not None else "")

    def enrich_options(self) -> str:
        sig = self.sig
        return (f"--min-size {sig['min_set_size']} --max-size {sig['max_set_size']} "
                f"--correction {sig['correction']}")

    def sweep_summary_options(self) -> str:
        return f"--rotation {self.sig['rotation']} --fdr {self.sig['fdr']}"

    # ---- final outputs ----

    def signature_outputs(self, dataset: str) -> list[str]:
        """The final outputs of the signature rules for one dataset."""
        files = []
        for src in self.signature_sources():
            d = f"results/{dataset}/{src}/signatures"
            files += [f"{d}/signatures.tsv", f"{d}/weights.tsv", f"{d}/activities.tsv", f"{d}/heatmap.png"]
            if src in self.runs and self.sig["rotation"] != "none":
                files.append(f"{d}/transform.json")
            if self.enrichment_on():
                files += [f"{d}/enrichment.tsv", f"{d}/enrichment.png"]
            for col in self.groupby_columns(dataset):
                files += [f"{d}/association_{col}.tsv", f"{d}/association_{col}.png"]
            if self.survival_on(dataset):
                files += [f"{d}/survival.tsv", f"{d}/km.png"]
        for ens in self.ensembles:
            d = f"results/{dataset}/{ens}"
            files += [f"{d}/consensus_weights.tsv", f"{d}/consensus_activities.tsv", f"{d}/support.tsv",
                      f"{d}/stability.tsv", f"{d}/consensus.h5ad"]
        for sweep in self.sweeps:
            files += [f"results/{dataset}/{sweep}/summary.tsv", f"results/{dataset}/{sweep}/summary.png"]
        return files

    def final_outputs(self) -> list[str]:
        """Every final output of the workflow, for `rule all` in the root Snakefile."""
        files = []
        integration = self.integration_datasets()
        for dataset in self.datasets:
            for d in self.run_dirs(dataset):
                files += [
                    f"{d}/embedded.h5ad",
                    f"{d}/embedding.tsv",
                    f"{d}/gene_weights.tsv",
                    f"{d}/figures/loss.png",
                    f"{d}/figures/umap.png",
                ]
            files.append(f"results/{dataset}/runs.tsv")
            if dataset in integration:
                files.append(f"results/{dataset}/integration.tsv")
            files += self.signature_outputs(dataset)
        return files


__all__ = ["ConfigError", "Plan", "expand_sweep", "flag", "load_datasets", "validate_config"]
