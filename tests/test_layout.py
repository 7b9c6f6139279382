"""The package's shape: no import cycle between its modules, no module over 300 lines, no function over 60.

The import graph is read from the source with ``ast``, so it sees what running the code
would hide: imports inside functions and under ``if TYPE_CHECKING:`` count as arrows just
like those at the top of a module (a lazy import that closes a cycle is still a cycle).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "seq2seq"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Arrow:
    """Module ``source`` imports module ``target`` at ``line`` of its file."""

    source: str
    target: str
    line: int


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``package`` (a package is named by its __init__.py)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load, relative ones resolved against ``module``.

    ``from .x import y`` may load the module ``.x.y`` as well as ``.x``; the caller keeps the
    longest prefix of each name that is a module of the package.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        # The level counts from the module's package: a package's __init__ is its own package.
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[:len(package) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_arrows(modules: dict[str, Path]) -> list[Arrow]:
    """Every import of one package module by another, at any depth of the file (functions, TYPE_CHECKING)."""
    arrows = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported_names(node, module, path.name == "__init__.py"):
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                # The root package is the public face, above everything; a module importing its own
                # package (``from . import sibling``) names the sibling, which the loop above found.
                if name and name != module and "." in name and not module.startswith(name + "."):
                    arrows.add(Arrow(module, name, node.lineno))
    return sorted(arrows, key=lambda a: (a.source, a.target, a.line))


def import_cycles(modules: list[str], arrows: list[Arrow]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each is one or more cycles."""
    successors: dict[str, list[str]] = {module: [] for module in modules}
    for arrow in arrows:
        successors[arrow.source].append(arrow.target)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in successors[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in modules:
        if module not in order:
            visit(module)
    return sorted(components)


def _describe_cycles(cycles: list[list[str]], arrows: list[Arrow], modules: dict[str, Path]) -> str:
    lines = []
    for component in cycles:
        lines.append("cycle: " + " <-> ".join(component))
        lines += [f"  {modules[a.source].relative_to(PACKAGE.parent)}:{a.line} imports {a.target}"
                  for a in arrows if a.source in component and a.target in component]
    return "\n".join(lines)


def long_functions(path: Path, limit: int, root: Path = PACKAGE.parent) -> list[str]:
    """'file:line name (N lines)' for each function or method of ``path`` longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1  # from `def` to the last line of the body
            if length > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_import_graph_is_read_from_every_module() -> None:
    modules = module_files(PACKAGE)
    arrows = import_arrows(modules)
    assert {"seq2seq.cli", "seq2seq.model.seq2seq", "seq2seq.training.loop", "seq2seq.data.batches"} <= set(modules)
    pairs = {(a.source, a.target) for a in arrows}
    assert ("seq2seq.model.seq2seq", "seq2seq.model.encoder") in pairs  # a relative import, resolved
    assert ("seq2seq.cli.decoding", "seq2seq.translate") in pairs  # inside a function: the lazy CLI handlers


def test_no_import_cycles() -> None:
    modules = module_files(PACKAGE)
    arrows = import_arrows(modules)
    cycles = import_cycles(list(modules), arrows)
    assert not cycles, "\n" + _describe_cycles(cycles, arrows, modules)


def test_no_module_over_300_lines() -> None:
    too_long = [f"{path.relative_to(PACKAGE.parent)} ({n} lines)" for path in module_files(PACKAGE).values()
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: " + ", ".join(too_long)


def test_no_function_over_60_lines() -> None:
    too_long = [entry for path in module_files(PACKAGE).values() for entry in long_functions(path, MAX_FUNCTION_LINES)]
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: " + ", ".join(too_long)


def test_the_checks_see_cycles_through_lazy_and_relative_imports(tmp_path: Path) -> None:
    # A package in miniature: a <-> b through a function-level relative import, c -> a only.
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n\n\ndef f():\n    return b.g()\n")
    (package / "sub" / "b.py").write_text("def g():\n    from ..a import f\n    return f\n")
    (package / "c.py").write_text("import pkg.a\n" + "x = 1\n" * 5)
    modules = module_files(package)
    cycles = import_cycles(list(modules), import_arrows(modules))
    assert cycles == [["pkg.a", "pkg.sub.b"]]
    assert long_functions(package / "a.py", 1, root=tmp_path) == ["pkg/a.py:4 f (2 lines)"]
    assert long_functions(package / "a.py", 2, root=tmp_path) == []
