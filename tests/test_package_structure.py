"""The API conventions themselves (as scanpy's test_package_structure.py): signatures, defaults derived from
the settings dataclasses, and the nn/train boundary that keeps AnnData out of the pure-torch code."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata
import inspect
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import genodae
from genodae import cli
from genodae.config import PRESETS, DAEConfig, PrepareConfig, make_config

PKG = Path(genodae.__file__).parent
API_MODULES = ["genodae.pp", "genodae.tl", "genodae.pl"]


def _public_functions(module: ModuleType) -> dict[str, object]:
    """The functions a user sees in a module: ``__all__`` if declared, else every non-underscore function
    defined there."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, o in vars(module).items()
                 if not n.startswith("_") and inspect.isfunction(o) and o.__module__ == module.__name__]
    return {n: getattr(module, n) for n in names if inspect.isfunction(getattr(module, n))}


def _convention_problems(name: str, fn) -> list[str]:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    problems = []
    if not params or params[0].name != "adata":
        problems.append(f"{name}: first parameter is not adata")
    for p in params[1:]:
        if p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD):
            problems.append(f"{name}: option {p.name!r} is not keyword-only")
    if "copy" in sig.parameters:
        if sig.parameters["copy"].default is not False:
            problems.append(f"{name}: copy does not default to False")
        if "AnnData | None" not in str(sig.return_annotation):
            problems.append(f"{name}: has copy but does not return AnnData | None")
    return problems


# --- scanpy conventions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("qualname", ["genodae.pp.prepare", "genodae.tl.dae", "genodae.pl.loss", "genodae.pl.umap"])
def test_api_functions_take_adata_first_and_keyword_only_options(qualname):
    module, name = qualname.rsplit(".", 1)
    fn = getattr(importlib.import_module(module), name)
    assert _convention_problems(qualname, fn) == []
    doc = inspect.getdoc(fn) or ""
    if module != "genodae.pl":
        assert "Parameters" in doc and "Examples" in doc and "Returns" in doc


def test_annotating_functions_have_copy_and_key_added():
    for fn in (genodae.tl.dae,):
        params = inspect.signature(fn).parameters
        assert params["key_added"].default is None and params["copy"].default is False
    assert inspect.signature(genodae.pp.prepare).parameters["copy"].default is False


def test_every_public_function_of_pp_follows_the_conventions():
    module = importlib.import_module("genodae.pp")
    problems = [p for n, f in _public_functions(module).items() for p in _convention_problems(n, f)]
    assert problems == []


def test_tl_and_pl_public_functions_follow_the_conventions():
    for module_name in API_MODULES[1:]:
        module = importlib.import_module(module_name)
        functions = _public_functions(module)
        assert functions, module_name
        assert [p for n, f in functions.items() for p in _convention_problems(n, f)] == []


def _module_names() -> list[str]:
    """Every module of the package, subpackages' included (``genodae.io._read``), but not ``__main__``."""
    names = []
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(("genodae", *parts)))
    return names


def _all_callables():
    for name in _module_names():
        mod = importlib.import_module(name)
        for name, obj in vars(mod).items():
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                yield f"{mod.__name__}.{name}", obj
            elif inspect.isclass(obj) and obj.__module__ == mod.__name__:
                for mname, m in vars(obj).items():
                    if inspect.isfunction(m):
                        yield f"{mod.__name__}.{name}.{mname}", m


def test_no_mutable_default_arguments():
    bad = [f"{q}({p.name}={p.default!r})" for q, f in _all_callables()
           for p in inspect.signature(f).parameters.values() if isinstance(p.default, (list, dict, set))]
    assert bad == []


def test_callables_of_subpackages_are_checked_too():
    names = {q.rsplit(".", 1)[0] for q, _ in _all_callables()}
    assert {"genodae.io._read", "genodae.io._write", "genodae.io._multi"} <= names


def test_version():
    assert isinstance(genodae.__version__, str) and genodae.__version__.count(".") >= 1
    assert importlib.metadata.version("genodae") == genodae.__version__


def test_top_level_names_resolve():
    for name in genodae.__all__:
        assert getattr(genodae, name) is not None, name
    assert callable(genodae.read) and inspect.isclass(genodae.DAE)


# --- the nn/train boundary --------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_nn_source_imports_only_torch_and_the_standard_library():
    imports = _imports(PKG / "nn.py")
    allowed_roots = {"torch", "__future__", "collections", "math", "typing", "dataclasses"}
    assert {i.split(".")[0] for i in imports} <= allowed_roots, imports


def test_train_source_imports_no_anndata():
    roots = {i.split(".")[0] for i in _imports(PKG / "train.py") if not i.startswith(".")}
    assert not roots & {"anndata", "scanpy", "pandas"}, roots
    relative = {i for i in _imports(PKG / "train.py") if i.startswith(".")}
    assert relative <= {".config", ".errors", ".nn", "._files", "._threads", "."}, relative
    # what train.py may import must itself stay free of AnnData: _threads uses the standard library (and torch)
    threads = {i.split(".")[0] for i in _imports(PKG / "_threads.py") if not i.startswith(".")}
    assert not threads & {"anndata", "scanpy", "pandas"}, threads
    assert not {i for i in _imports(PKG / "_threads.py") if i.startswith(".")}


def test_nn_and_train_run_without_loading_anndata():
    code = ("import sys; import genodae.nn, genodae.train; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('anndata', 'scanpy')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# --- one source of defaults ------------------------------------------------------------------------------


def _subparsers() -> dict[str, object]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def _actions(sub) -> dict[str, object]:
    return {a.dest: a for a in sub._actions}


def _shown(value, name: str = "epochs") -> str:
    if value is None:  # epochs: None means auto; an obs column name (batch_key): not set
        return "auto" if name == "epochs" else "none"
    if value == ():
        return "none"
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize(("command", "cls"), [("train", DAEConfig), ("run", DAEConfig),
                                              ("prepare", PrepareConfig), ("run", PrepareConfig)])
def test_cli_flags_cover_every_setting_and_show_its_default(command, cls):
    sub = _subparsers()[command]
    actions = _actions(sub)
    defaults = cls()
    for f in dataclasses.fields(cls):
        assert f.name in actions, f"{command} has no flag for {cls.__name__}.{f.name}"
        a = actions[f.name]
        flag = "--" + f.name.replace("_", "-")
        assert flag in a.option_strings
        assert a.default is None  # unset flags fall through to the preset, the settings file, the dataclass
        value = getattr(defaults, f.name)
        assert f"(default: {_shown(value, f.name)})" in a.help, (f.name, a.help)
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
        if _shown(value, f.name) == "none":  # obs column names: nothing to type back (a column may be called "none")
            continue
        # the shown default, typed back in, is the default itself
        if isinstance(value, bool):
            ns = sub.parse_args(["x", "-o", "y", flag if value else "--no-" + flag[2:]])
        else:
            ns = sub.parse_args(["x", "-o", "y", flag, _shown(value)])
        parsed = getattr(ns, f.name)
        assert parsed == value or getattr(cls(**{f.name: parsed}), f.name) == value, f.name


def test_cli_without_flags_gives_the_dataclass_defaults():
    sub = _subparsers()["train"]
    ns = sub.parse_args(["x", "-o", "y"])
    prep, dae = cli._settings(ns)
    assert prep == {} and dae == {}
    assert make_config(**dae) == DAEConfig()


def test_prepare_defaults_are_the_prepare_config_defaults():
    params = inspect.signature(genodae.pp.prepare).parameters
    for f in dataclasses.fields(PrepareConfig):
        assert f.name in params, f.name
        assert params[f.name].default == getattr(PrepareConfig(), f.name), f.name
        assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY


def test_tl_dae_explicit_settings_are_config_fields_left_unset():
    names = {f.name for f in dataclasses.fields(DAEConfig)}
    params = inspect.signature(genodae.tl.dae).parameters
    for n in ("n_latent", "hidden", "corruption", "epochs", "batch_size", "lr", "seed", "device"):
        assert n in names and params[n].default is None
    assert any(p.kind is p.VAR_KEYWORD for p in params.values())  # every other DAEConfig field


def test_config_round_trips_through_a_dict_and_json():
    for preset in PRESETS:
        cfg = make_config(preset)
        again = DAEConfig(**json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg


def test_presets_only_name_real_settings():
    names = {f.name for f in dataclasses.fields(DAEConfig)}
    for preset, values in PRESETS.items():
        assert set(values) <= names, preset


# --- genodae.io: one module per responsibility, imported in one direction ----------------------------------

# Each module of genodae.io may import (at module level) only modules listed before it; _read imports _multi
# inside read() (several paths), the one way up.
IO_LAYERS = ["_common", "_text", "_orientation", "_clean", "_table", "_gct", "_hdf5", "_mtx", "_cls", "_sheets",
             "_read", "_multi", "_dispatch", "_write"]
IO_PUBLIC = ["read", "read_many", "read_batches_sheet", "read_backed", "read_cls", "write_h5ad", "write_table",
             "atomic_path", "_parse_batches_sheet", "SUPPORTED_FORMATS", "ORIENTATIONS", "MISSING", "DUPLICATES",
             "Orientation"]


def _top_level_relative_imports(path: Path) -> set[str]:
    """Sibling modules of genodae.io imported at module level (``from ._x import …``, ``from . import _x``)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found |= {a.name for a in node.names}
    return found


def test_io_package_lists_its_modules():
    found = sorted(p.stem for p in (PKG / "io").glob("*.py") if p.stem != "__init__")
    assert found == sorted(IO_LAYERS)
    assert not (PKG / "io.py").exists()


@pytest.mark.parametrize("module", IO_LAYERS)
def test_io_modules_import_in_one_direction(module):
    path = PKG / "io" / f"{module}.py"
    allowed = set(IO_LAYERS[: IO_LAYERS.index(module)])
    assert _top_level_relative_imports(path) <= allowed, module
    assert ast.get_docstring(ast.parse(path.read_text())), f"genodae/io/{module}.py has no module docstring"


def test_io_imports_inside_functions_never_go_up():
    up = set()
    for module in IO_LAYERS:
        for node in ast.walk(ast.parse((PKG / "io" / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                target = node.module.split(".")[0]
                if IO_LAYERS.index(target) > IO_LAYERS.index(module):
                    up.add((module, target))
    assert up == set()  # was {("_read", "_multi")}: read() of several paths now lives in _dispatch


def test_io_names_importable_from_the_package():
    io = importlib.import_module("genodae.io")
    for name in IO_PUBLIC:
        assert getattr(io, name, None) is not None, name
    for name in io.__all__:
        assert callable(getattr(io, name)), name
    assert genodae.read is io.read and genodae.read_many is io.read_many
