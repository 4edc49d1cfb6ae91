"""environment.yml, workflow/envs/genodae.yaml and pyproject.toml list the same dependencies.

Same names (conda names mapped explicitly) and the same version ranges, so a conda user, a --sdm conda
workflow run and a pip install all get the tested ranges.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
# PyPI name -> conda(-forge/bioconda) name, where they differ.
CONDA_NAME = {"torch": "pytorch", "igraph": "python-igraph"}
# In the conda files but not a [project] dependency.
CONDA_ONLY = {"python", "pip"}


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pip_deps(reqs: list[str]) -> dict[str, SpecifierSet]:
    out = {}
    for text in reqs:
        req = Requirement(text)
        out[CONDA_NAME.get(req.name.lower(), req.name.lower())] = req.specifier
    return out


def _conda_deps(path: Path) -> tuple[dict[str, SpecifierSet], list[str]]:
    env = yaml.safe_load(path.read_text())
    deps, pip = {}, []
    for item in env["dependencies"]:
        if isinstance(item, dict):
            pip += item.get("pip", [])
            continue
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", item)
        assert match, f"{path.name}: cannot parse {item!r}"
        name, spec = match.group(1).lower(), match.group(2).replace(" ", "")
        assert "=" not in spec or any(op in spec for op in (">=", "<=", "==", "!=")), (
            f"{path.name}: {item!r} uses a conda-only version syntax; use >=, <, == ranges")
        deps[name] = SpecifierSet(spec)
    return deps, pip


@pytest.mark.parametrize("env_file", ["environment.yml", "workflow/envs/genodae.yaml"])
def test_conda_env_lists_the_pyproject_dependencies(env_file):
    project = _pyproject()
    expected = _pip_deps(project["dependencies"])
    deps, _ = _conda_deps(REPO / env_file)
    extras = _pip_deps(project.get("optional-dependencies", {}).get("test", []))
    listed = {k: v for k, v in deps.items() if k not in CONDA_ONLY}
    missing = sorted(set(expected) - set(listed))
    unexpected = sorted(set(listed) - set(expected) - set(extras))
    assert not missing, f"{env_file} lacks {missing} (pyproject.toml [project].dependencies)"
    assert not unexpected, f"{env_file} lists {unexpected}, which pyproject.toml does not"
    for name, spec in listed.items():
        want = expected.get(name, extras.get(name))
        assert spec == want, f"{env_file}: {name} {spec or '(any)'} but pyproject.toml says {want or '(any)'}"
    assert deps["python"] == SpecifierSet(project["requires-python"]), f"{env_file}: python range"


def test_workflow_env_does_not_pip_install_a_relative_path():
    """Snakemake copies env files before building them: a relative `-e ../..` would point nowhere."""
    _, pip = _conda_deps(REPO / "workflow/envs/genodae.yaml")
    assert not [p for p in pip if p.startswith(("-e", ".", "file:"))], pip


def test_user_env_installs_genodae_from_the_checkout():
    _, pip = _conda_deps(REPO / "environment.yml")
    assert "-e ." in pip
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "pip" in env["dependencies"], "a pip section needs pip itself in the dependencies"


def test_env_files_use_the_same_channels():
    channels = [yaml.safe_load((REPO / f).read_text())["channels"] for f in ("environment.yml",
                                                                         "workflow/envs/genodae.yaml")]
    assert channels[0] == channels[1]
    assert channels[0][0] == "conda-forge"
