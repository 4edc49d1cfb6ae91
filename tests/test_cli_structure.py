"""The CLI package itself (issue 15): one ``main`` and one error mapping, one module per command group that
registers its subcommands, commands that need no model never load torch, and errors the ecosystem can catch
(``UserError`` is a ``ValueError``; GPU out-of-memory recognised by its type)."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import genodae
import genodae.cli
from genodae import DAE, pp
from genodae.errors import UserError
from genodae.io import write_h5ad

PKG = Path(genodae.__file__).parent
CLI = PKG / "cli"
TORCH_COMMANDS = {"train", "embed", "map", "run", "score"}  # they fit or apply a saved model
NO_TORCH_COMMANDS = {"example", "prepare", "export", "plot", "signatures", "ensemble", "enrich", "associate",
                     "survival", "sweep-summary"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


# --- layout -----------------------------------------------------------------------------------------------


def test_cli_is_a_package_and_the_old_modules_are_gone():
    assert (CLI / "__init__.py").is_file()
    assert not (PKG / "cli.py").exists() and not (PKG / "cli_signatures.py").exists()
    assert genodae.cli.__file__ == str(CLI / "__init__.py")


def test_main_is_defined_once_in_the_whole_package():
    where = [str(p.relative_to(PKG)) for p in sorted(PKG.rglob("*.py"))
             for node in _tree(p).body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    assert where == ["cli/__init__.py"]


def test_only_main_turns_errors_into_messages_and_exit_codes():
    """Command modules raise; ``cli/__init__.py`` alone prints to stderr and returns exit codes."""
    for path in sorted(CLI.glob("*.py")):
        if path.name == "__init__.py":
            continue
        calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                 for n in ast.walk(_tree(path)) if isinstance(n, ast.Call)}
        assert not calls & {"print", "exit"}, path.name
        stderr = [n for n in ast.walk(_tree(path)) if isinstance(n, ast.Attribute) and n.attr == "stderr"]
        assert not stderr, path.name


def test_every_command_is_registered_by_exactly_one_group_module_and_defined_there():
    modules = {p.stem for p in CLI.glob("_*.py") if p.stem not in ("__init__", "_common")}
    assert {g.__name__.rsplit(".", 1)[1] for g in genodae.cli.GROUPS} == modules
    seen: dict[str, str] = {}
    for group in genodae.cli.GROUPS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        group.register(sub)
        for name, p in _subparsers(parser).items():
            assert name not in seen, f"{name} registered by {seen.get(name)} and {group.__name__}"
            seen[name] = group.__name__
            func = p.get_default("func")
            assert func.__module__ == group.__name__, (name, func.__module__)
    assert set(seen) == set(_subparsers(genodae.cli.build_parser())) == TORCH_COMMANDS | NO_TORCH_COMMANDS


def test_cli_modules_import_only_the_standard_library_and_light_genodae_modules_at_module_level():
    """Building the parser must stay light: heavy imports (torch, anndata, scanpy, the model) go inside the
    commands."""
    light = {"config", "errors", ""}  # ``from .. import __version__``
    for path in sorted(CLI.glob("*.py")):
        for node in _tree(path).body:
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
                assert roots <= set(sys.stdlib_module_names), (path.name, roots)
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module.split(".")[0] in sys.stdlib_module_names | {"__future__"}, (path.name,
                                                                                                   node.module)
                elif node.level == 2:
                    assert (node.module or "") in light, (path.name, node.module)


# --- no torch where no model is needed --------------------------------------------------------------------


def _no_torch_run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=600)


def test_building_the_parser_and_every_help_loads_no_torch_anndata_or_scanpy():
    r = _no_torch_run("""
        import argparse, sys
        from genodae.cli import build_parser, main
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert len(sub.choices) == 15
        for name in sorted(sub.choices):
            try:
                main([name, "--help"])
            except SystemExit as e:
                assert e.code == 0, name
        print(sorted(m for m in ("torch", "anndata", "scanpy") if m in sys.modules))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture(scope="module")
def embedded(_counts_adata_session, tmp_path_factory) -> Path:
    """Counts, an embedded .h5ad (with a group column) and a GMT of the planted modules."""
    d = tmp_path_factory.mktemp("notorch")
    raw = _counts_adata_session.copy()
    write_h5ad(raw, d / "counts.h5ad")
    prepared = raw.copy()
    pp.prepare(prepared, n_top_genes=150)
    model = DAE(n_latent=3, hidden=(8,), epochs=2, num_threads=1).fit(prepared)
    model.save(d / "model")
    other = prepared.copy()
    model.annotate(prepared)
    write_h5ad(prepared, d / "embedded.h5ad")
    DAE(n_latent=3, hidden=(8,), epochs=2, num_threads=1, seed=1).fit(other).annotate(other)  # a 2nd model (ensemble)
    write_h5ad(other, d / "embedded_seed1.h5ad")
    mods = raw.var["module"].astype(str)
    (d / "sets.gmt").write_text("".join(f"{m}\tna\t" + "\t".join(mods.index[mods == m]) + "\n"
                                        for m in sorted(set(mods)) if m != "none"))
    return d


def test_commands_that_need_no_model_never_import_torch(embedded, tmp_path):
    """Each no-torch command runs for real in one fresh interpreter; torch must still be absent afterwards.
    Then ``embed`` runs in the same interpreter: it loads torch, which shows the check can see it."""
    d, o = embedded, tmp_path
    runs = {
        "example": ["example", "-o", o / "ex.h5ad"],
        "prepare": ["prepare", d / "counts.h5ad", "-o", o / "prep.h5ad", "--n-top-genes", "100"],
        "export": ["export", d / "embedded.h5ad", "--embedding", o / "emb.tsv", "--weights", o / "w.tsv",
                   "--genes", o / "genes.tsv"],
        "plot": ["plot", d / "embedded.h5ad", "-o", o / "plots", "--color", "group"],
        "signatures": ["signatures", d / "embedded.h5ad", "-o", o / "sig.tsv", "--transform", o / "t.json",
                       "--heatmap", o / "h.png"],
        "ensemble": ["ensemble", d / "embedded.h5ad", d / "embedded_seed1.h5ad", "-o", o / "cons.tsv",
                     "--support", o / "sup.tsv"],
        "enrich": ["enrich", d / "embedded.h5ad", "-o", o / "enr.tsv", "--gene-sets", d / "sets.gmt",
                   "--min-size", "2"],
        "associate": ["associate", d / "embedded.h5ad", "-o", o / "assoc.tsv", "--groupby", "group"],
        "sweep-summary": ["sweep-summary", d / "embedded.h5ad", "-o", o / "sweep.tsv"],
    }
    assert set(runs) == NO_TORCH_COMMANDS - {"survival"}  # survival: tested with clinical data in test_assoc
    script = f"""
        import sys
        from genodae.cli import main
        runs = {({k: [str(a) for a in v] for k, v in runs.items()})!r}
        for name, argv in runs.items():
            rc = main(["-q", *argv])
            assert rc == 0, name
            assert "torch" not in sys.modules, f"genodae {{name}} imported torch"
        print("no torch")
        main(["-q", "embed", {str(d / "counts.h5ad")!r}, {str(d / "model")!r}, "-o", {str(o / "e.h5ad")!r},
              "--num-threads", "1", "--device", "cpu"])
        print("torch" in sys.modules)
    """
    r = _no_torch_run(script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["no", "torch", "True"], r.stdout
    assert (o / "emb.tsv").is_file() and (o / "plots" / "umap.png").is_file() and (o / "t.json").is_file()


# --- entry points -----------------------------------------------------------------------------------------


def test_console_script_and_python_dash_m_reach_the_one_main():
    (script,) = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "genodae"]
    assert script.value == "genodae.cli:run"  # run() = main() and the exit (see cli.run)
    assert script.load() is genodae.cli.run
    main_py = _tree(PKG / "__main__.py")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "cli" and n.level == 1
               and [a.name for a in n.names] == ["run"] for n in main_py.body)
    r = subprocess.run([sys.executable, "-m", "genodae", "signatures", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--sd-cutoff" in r.stdout


# --- errors the ecosystem can catch -----------------------------------------------------------------------


def test_user_error_is_a_value_error_and_library_errors_can_be_caught_as_such(tmp_path):
    assert issubclass(UserError, ValueError)
    with pytest.raises(ValueError, match="not found") as err:
        genodae.read(tmp_path / "absent.h5ad")
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def _raise(exc):
    def command(args):
        raise exc
    return command


def test_gpu_out_of_memory_is_recognised_by_its_type(monkeypatch, capsys, embedded, tmp_path):
    torch = pytest.importorskip("torch")
    argv = ["export", str(embedded / "embedded.h5ad"), "--embedding", str(tmp_path / "e.tsv")]
    monkeypatch.setattr(genodae.cli._export, "cmd_export",
                        _raise(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")))
    assert genodae.cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("genodae export: error: out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB); use a "
                   "smaller --batch-size, --data-placement host, or --device cpu")

    class OutOfMemoryError(RuntimeError):  # the same name, not torch's error: a bug to show, not to hide
        pass

    monkeypatch.setattr(genodae.cli._export, "cmd_export", _raise(OutOfMemoryError("host allocator")))
    with pytest.raises(OutOfMemoryError):
        genodae.cli.main(argv)


def test_no_source_recognises_an_error_by_its_class_name():
    """No ``type(e).__name__ == "SomethingError"`` (nor ``!=``, ``in``) anywhere in the package: catch by type."""
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.Compare):
                continue
            names = [n for n in (node.left, *node.comparators)
                     if isinstance(n, ast.Attribute) and n.attr == "__name__" and isinstance(n.value, ast.Call)]
            texts = [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                     and n.value.endswith("Error")]
            if names and texts:
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert offenders == []
