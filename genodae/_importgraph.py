"""The import graph of the genodae package and its cycles: ``python -m genodae._importgraph``.

Every ``import``/``from … import`` of a genodae module counts, wherever it is written: at module level, inside
a function (a lazy import) or under ``if TYPE_CHECKING``; only ast is used, nothing is imported. An edge goes
to the module a statement names (``from .io import backed_layer`` → ``genodae.io``; ``from . import enrich``
→ ``genodae.enrich``), not to the parent packages Python also initialises on the way. A cycle is a strongly
connected set of modules (Tarjan); ``tests/test_import_graph.py`` fails when there is one.

Options: ``--exclude PREFIX`` (repeatable) leaves out modules whose name starts with it (e.g.
``genodae.cli``); ``--cycles`` prints only the cycles. Exit status 1 when there is a cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "genodae"


def _module_names(root: Path) -> dict[str, Path]:
    """``{"genodae.io._read": path, …}`` for every .py file of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """Absolute name of a relative import ``from <level dots><name> import …`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(root: str | Path | None = None) -> dict[str, dict[str, str]]:
    """``{module: {imported module: "top" | "lazy"}}`` over the package's own modules.

    ``lazy`` marks an import written only inside a function body; ``top`` one at least once at module level
    (including class bodies and ``if`` blocks)."""
    root = Path(root) if root is not None else Path(__file__).parent
    names = _module_names(root)
    graph: dict[str, dict[str, str]] = {m: {} for m in names}
    for mod, path in names.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node.level, node.module)
                for a in node.names:
                    sub = f"{base}.{a.name}" if base else a.name
                    targets.append(sub if sub in names else base)
            for t in targets:
                while t and t not in names and "." in t:  # genodae.io._read.x → genodae.io._read
                    t = t.rsplit(".", 1)[0]
                if t in names and t != mod:
                    kind = "lazy" if in_function else "top"
                    if graph[mod].get(t) != "top":
                        graph[mod][t] = kind
    return graph


def _walk(tree: ast.AST):
    """(node, inside a function?) for every import statement of a module."""
    stack = [(tree, False)]
    while stack:
        node, in_fn = stack.pop()
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_fn
            stack.append((child, fn))


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(out)


def cycle_path(graph: dict[str, dict[str, str]], component: list[str]) -> list[str]:
    """One closed path through a component: a shortest cycle through its first module (for the message)."""
    comp = set(component)
    start = component[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w in comp and w not in prev and w != start:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def restrict(graph: dict[str, dict[str, str]], exclude: list[str]) -> dict[str, dict[str, str]]:
    """The graph without the modules whose names start with one of ``exclude``."""
    def kept(m: str) -> bool:
        return not any(m == e or m.startswith(e) for e in exclude)

    return {m: {t: k for t, k in e.items() if kept(t)} for m, e in graph.items() if kept(m)}


def format_graph(graph: dict[str, dict[str, str]]) -> str:
    lines = []
    for m in sorted(graph):
        deps = ", ".join(f"{t}{' (lazy)' if k == 'lazy' else ''}" for t, k in sorted(graph[m].items()))
        lines.append(f"{m} -> {deps or '(nothing)'}")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genodae._importgraph", description=__doc__.splitlines()[0])
    parser.add_argument("--exclude", action="append", default=[], metavar="PREFIX",
                        help="leave out modules whose dotted name starts with PREFIX (repeatable)")
    parser.add_argument("--cycles", action="store_true", help="print only the cycles")
    parser.add_argument("--root", default=None, help="package folder (default: this genodae)")
    args = parser.parse_args(argv)
    graph = restrict(import_graph(args.root), args.exclude)
    found = cycles(graph)
    if not args.cycles:
        n_edges = sum(len(e) for e in graph.values())
        n_lazy = sum(k == "lazy" for e in graph.values() for k in e.values())
        print(f"# {len(graph)} modules, {n_edges} imports ({n_lazy} only inside functions, marked lazy)")
        print(format_graph(graph))
        print()
    print(f"# {len(found)} cycle(s)")
    for comp in found:
        print(f"{len(comp)} modules: {' -> '.join(cycle_path(graph, comp))}   (all: {', '.join(comp)})")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(run())
