"""The house rules of the tree's imports, read with ast (no module is imported):

* ``common`` imports no paper package; a paper package imports no other paper package;
* no import circle between the project's modules (lazy imports inside functions count too: a circle through a
  function-level import is still a circle in the design);
* ``common`` does not name a paper in its identifiers or string defaults (docstrings and comments may cite one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("vificlip", "conv_adapter", "maskclip", "st_adapter", "polyhistor")
PACKAGES = ("common", *PAPERS, "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            out[_module_name(path)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for mod, path in sources.items():
        deps = set()
        for imp in _imports(path, mod):
            # the longest project module that the import names
            parts = imp.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in sources:
                    if cand != mod:
                        deps.add(cand)
                    break
        graph[mod] = deps
    return graph


def _top(mod: str) -> str:
    return mod.split(".")[0]


def test_common_imports_no_paper_and_papers_import_no_other_paper() -> None:
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            src, dst = _top(mod), _top(dep)
            if src == "common" and dst in PAPERS:
                bad.append(f"{mod} -> {dep} (common imports a paper)")
            elif src in PAPERS and dst in PAPERS and src != dst:
                bad.append(f"{mod} -> {dep} (a paper imports another paper)")
            elif src in ("common", *PAPERS) and dst == "benchmarks":
                bad.append(f"{mod} -> {dep} (library code imports the benchmarks)")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_edge(mod: str, dep: str) -> bool:
    """A package's ``__init__`` re-exporting its own submodules is not a circle in the design."""
    return dep.startswith(mod + ".") or mod.startswith(dep + ".")


def test_no_import_circles() -> None:
    graph = {m: {d for d in deps if not _package_edge(m, d)} for m, deps in _graph().items()}
    circles = _cycles(graph)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_checker_sees_a_circle_and_a_forbidden_import() -> None:
    """The checks above could fail: on a hand-made graph they do."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree_imports = _imports(ROOT / "common" / "module.py", "common.module")
    assert "common.optim" in tree_imports


def _identifiers_and_defaults(path: Path) -> list[tuple[int, str]]:
    """Names (functions, classes, arguments, assignments) and string constants that are not docstrings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            found.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            found.append((node.lineno, node.arg))
        elif isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            # message strings may cite a paper; a key or default value that IS a paper's name may not
            if " " not in node.value.strip():
                found.append((node.lineno, node.value))
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "common").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_common_names_no_paper(path: Path) -> None:
    words = ("vificlip", "vifi_clip", "st_adapter", "stadapter", "polyhistor", "maskclip", "conv_adapter",
             "convadapter")
    bad = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _identifiers_and_defaults(path)
           if any(w in text.lower() for w in words)]
    assert not bad, "common names a paper (name recipes by what they do):\n" + "\n".join(bad)
