# Shared set-up of the genodae workflow, a thin adapter over workflow/plan.py (plain Python, unit-tested in
# tests/test_workflow_plan.py): it checks the config (defaults filled from workflow/schemas/config.schema.yaml),
# reads the dataset sheet, expands the sweep and lists the final outputs. Here: the functions the rules call
# with their wildcards, and report() entries.

import importlib.util
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod, SharedFSUsage
from snakemake.utils import min_version

min_version("9.0")

# workflow/ (this file is workflow/rules/common.smk); a local checkout is assumed for the schemas.
WORKFLOW_DIR = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).resolve().parent


def _load_workflow_module(name):
    """A plain-Python module of workflow/ (no Snakemake in it, so the tests import it too)."""
    spec = importlib.util.spec_from_file_location(f"genodae_workflow_{name}", WORKFLOW_DIR / f"{name}.py")
    loaded = importlib.util.module_from_spec(spec)  # (not `module`: a Snakemake keyword)
    spec.loader.exec_module(loaded)
    return loaded


launch = _load_workflow_module("launch")  # how training jobs start: python, torchrun, srun + torchrun
plan = _load_workflow_module("plan")  # config, dataset sheet, sweep, command options, final outputs
try:
    PLAN = plan.Plan(config)  # checks `config` and fills its defaults in place
except plan.ConfigError as error:
    raise WorkflowError(str(error)) from None
DATASETS, RUNS, ENSEMBLES, SWEEPS = PLAN.datasets, PLAN.runs, PLAN.ensembles, PLAN.sweeps
EXAMPLE_PATH = plan.EXAMPLE_PATH
final_outputs = PLAN.final_outputs  # for `rule all` in the root Snakefile


def reported(path, caption, subcategory=None, **labels):
    """`path` in the report: captioned by report/{caption}.rst, under its dataset (and subcategory, e.g.
    "{run}"), labelled by dataset and `labels`."""
    extra = {"subcategory": subcategory} if subcategory else {}
    return report(path, caption=f"../report/{caption}.rst", category="{dataset}", **extra,
                  labels={"dataset": "{dataset}", **labels})


# ---- the plan's answers for one job's wildcards ----------------------------------------------------------

prepare_inputs = lambda w: PLAN.prepare_inputs(w.dataset)
prepare_flags = lambda w: PLAN.prepare_flags(w.dataset)
dataset_input = lambda w: PLAN.dataset_input(w.dataset)
dataset_sample_sheet = lambda w: PLAN.dataset_sample_sheet(w.dataset)
train_flags = lambda w: PLAN.train_flags(w.dataset, w.run)
plot_colors = lambda w: PLAN.plot_colors(w.dataset)
run_table_inputs = lambda w: PLAN.run_table_inputs(w.dataset)
integration_inputs = lambda w: PLAN.embedded(w.dataset)
integration_label = lambda w: PLAN.integration_label(w.dataset)
source_h5ad = lambda w: PLAN.source_h5ad(w.dataset, w.src)
source_key = lambda w: PLAN.source_key(w.src)
ensemble_inputs = lambda w: PLAN.embedded(w.dataset, ENSEMBLES[w.ens])
sweep_inputs = lambda w: PLAN.embedded(w.dataset, SWEEPS[w.sweep])


# ---- how the rules call the CLI ----------------------------------------------------------------------

# Every rule runs `PYTHON -m genodae <step>` (params.genodae), PYTHON being the interpreter that runs Snakemake
# itself (sys.executable): a venv's snakemake works without the venv on PATH, and no other `python` on PATH
# (e.g. the system's, without genodae's dependencies) is picked up. Jobs on a cluster start their snakemake with
# that same interpreter and re-read this file (the SLURM executor, with the software on a shared file system, as
# the checkout). With --sdm conda, or software not on a shared file system (--shared-fs-usage without
# software-deployment; Snakemake then starts remote jobs with `python` too), `python` of the job's environment
# runs it: the rule's conda env, workflow/envs/genodae.yaml.
def _python():
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    if SharedFSUsage.SOFTWARE_DEPLOYMENT not in workflow.storage_settings.shared_fs_usage:
        return "python"
    return shlex.quote(sys.executable)


PYTHON = _python()
GENODAE = f"{PYTHON} -m genodae"

# When this workflow sits in a source checkout (genodae/ beside workflow/), that genodae comes first on
# PYTHONPATH, so the workflow and the library always match; else the installed genodae is used. Jobs inherit
# the variable (locally, and on SLURM through --export=ALL; a job step also re-reads this file). With --sdm
# conda, workflow/envs/genodae.yaml brings the dependencies.
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
