"""bench/ keeps its shape: one shared helper module (bench/_common.py), scripts that do not import each other
through sys.path, and no script that patches the library. The scripts themselves are never run here (they
need the shared data and minutes to hours); their helpers are checked directly."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "_common.py")


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(BENCH))
    try:
        import _common

        yield _common
    finally:
        sys.path.remove(str(BENCH))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_neither_touch_sys_path_nor_import_each_other(path):
    others = {p.stem for p in SCRIPTS}
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "sys" and node.attr == "path":
                pytest.fail(f"{path.name}:{node.lineno} uses sys.path (bench/_common.py is the one place)")
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        bad = [n for n in names if n.split(".")[0] in others or n.split(".")[0].startswith(("test_", "conftest"))]
        assert not bad, f"{path.name}:{node.lineno} imports {bad}: shared helpers belong in bench/_common.py"
    text = path.read_text()
    assert '"tests"' not in text, f"{path.name} reads from tests/"
    # nor loads a file as a module (bad_inputs.py gets the cases of tests/ as data, from a pytest run)
    assert "spec_from_file_location" not in text and "run_path(" not in text, f"{path.name} loads a file as a module"


@pytest.mark.parametrize("path", [*SCRIPTS, BENCH / "_common.py"], ids=lambda p: p.name)
def test_no_script_assigns_to_the_library(path):
    tree = _tree(path)
    lib_names = set()  # names bound to genodae or one of its modules
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            lib_names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "genodae"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "genodae":
            lib_names |= {a.asname or a.name for a in node.names}
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            for sub in ast.walk(t):
                base = sub
                while isinstance(base, ast.Attribute):
                    base = base.value
                if sub is not base and isinstance(base, ast.Name) and base.id in lib_names:
                    pytest.fail(f"{path.name}:{node.lineno} assigns to {ast.unparse(sub)}: a patch of the library")
    assert "setattr(" not in path.read_text()


def _run(code: str, **env) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, check=True,
                          env={**os.environ, **env}).stdout


def test_common_imports_only_the_standard_library():
    # bench/memory.py's children inherit the parent's memory at fork time: _common must stay small
    out = _run("import sys, _common; print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'torch', 'anndata', "
               "'genodae') if m in sys.modules))")
    assert json.loads(out.replace("'", '"')) == []


def test_common_puts_this_tree_after_pythonpath(tmp_path):
    code = "import sys, _common; print(sys.path.index(str(_common.REPO)), sys.path.index(sys.argv[1]))"
    at_repo, at_other = map(int, subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=BENCH, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout.split())
    assert at_other < at_repo  # a tree named in PYTHONPATH (memory.py --src, loader.py --before) wins
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    first = subprocess.run([sys.executable, "-c", "import sys, _common, genodae; print(genodae.__file__)"],
                           cwd=BENCH, capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert Path(first).resolve().is_relative_to(ROOT)  # else: this source tree's genodae, installed or not


def test_pm_and_mean_sd(common):
    df = pd.DataFrame({"dataset": ["a", "a", "b"], "method": ["m"] * 3, "x": [1.0, 3.0, 5.0]})
    s = common.mean_sd(df, ["dataset", "method"], ["x", "absent"]).reset_index()
    assert list(s.columns) == ["dataset", "method", "x_mean", "x_std", "n_seeds"]
    assert common.pm(s.iloc[0], "x") == "2.000 ± 1.414"
    assert common.pm(s.iloc[1], "x", 1) == "5.0 ± 0.0"  # one seed: no sd, shown as 0
    assert common.pm({"x_mean": float("nan")}, "x", blank="–") == "–"
    assert common.pm({}, "x", blank="–") == "–"


def test_md_table_and_notes_kept(common, tmp_path):
    t = common.md_table(pd.DataFrame({"a": ["x"], "b": [0.12345]}))
    assert t.splitlines() == ["| a | b |", "|---|---|", "| x | 0.123 |"]
    f = tmp_path / "r.md"
    common.write_keeping_notes(f, "# table v1\n")
    f.write_text(f.read_text() + "\n## Reading\n\nby hand\n")
    common.write_keeping_notes(f, "# table v2\n")
    assert f.read_text() == "# table v2\n\n## Reading\n\nby hand\n"


def test_parse_variants_and_write_results(common, tmp_path):
    import argparse

    p = argparse.ArgumentParser()
    assert common.parse_variants(p, ['long={"epochs": 5}']) == {"long": {"epochs": 5}}
    with pytest.raises(SystemExit):
        common.parse_variants(p, ["bad={epochs"])
    common.write_results(tmp_path / "sub" / "out", {"x": Path("p")}, "# md\n")
    assert json.loads((tmp_path / "sub" / "out.json").read_text()) == {"x": "p"}
    assert (tmp_path / "sub" / "out.md").read_text() == "# md\n"


def test_generated_data_is_seeded_and_shaped(common):
    X = common.make_csr(50, 40, 0.1, seed=0)
    assert X.shape == (50, 40) and X.nnz == 50 * 4 and (X != common.make_csr(50, 40, 0.1, seed=0)).nnz == 0
    C = common.generated_counts(30, 20, 0.1, seed=0, chunk=7)  # chunks must not change the row count
    assert C.shape == (30, 20) and (C.getnnz(axis=1) == 2).all() and C.data.min() >= 1
