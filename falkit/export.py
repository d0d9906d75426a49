"""Notebook to module: ``export_notebook(path, "MyApp")`` returns the source of a standalone
module holding the App class and exactly what it needs from the notebook's code cells.

What is kept: the statements that define the names the class references, transitively
(imports, pydantic models, helper functions and classes, constants), in notebook order,
each taken from the last definition before the point it is needed. What is left out:
magics (``%...``, ``%%...``, ``!...``), cells that do not parse as Python, and every
statement the class does not need (calls, ``falkit.serve(...)``, exploration).
``import falkit as fal`` becomes ``import fal`` (and ``from falkit import App, endpoint,
realtime, toolkit`` and ``from falkit.toolkit[.module] import ...`` come from ``fal``) so
the file is ready for ``fal deploy``; falkit's own names
(``from falkit import codec``) stay imported from falkit, which the deployment then needs.
``falkit serve`` runs the file too, with or without the ``fal`` SDK installed.
"""

from __future__ import annotations

import ast
import builtins
import json
import symtable
from dataclasses import dataclass
from pathlib import Path

from .exceptions import ExportError


@dataclass(frozen=True)
class _Stmt:
    """One top-level statement of a code cell: where it is, what it binds and uses."""

    index: int
    node: ast.stmt
    source: str
    defines: frozenset[str]
    uses: frozenset[str]


_DEFINING = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
    ast.If,
    ast.Try,
    ast.With,
)
_BUILTINS = frozenset(dir(builtins))
#: What ``falkit`` and fal's SDK both export; ``from falkit import`` of these becomes fal's.
SHARED_WITH_FAL = frozenset({"App", "endpoint", "realtime", "toolkit"})
#: ``falkit.toolkit``'s modules that are ``fal.toolkit``'s too: importing one becomes fal's.
FAL_TOOLKIT_MODULES = frozenset(
    [
        "audio",
        "compilation",
        "constraints",
        "exceptions",
        "file",
        "image",
        "kv",
        "pydantic",
        "types",
        "utils",
        "video",
    ]
)
#: Names ``falkit.toolkit`` offers that fal's toolkit keeps only in a submodule.
_TOOLKIT_ELSEWHERE = {"ImageSize": "fal.toolkit.image"}


# -- reading cells -----------------------------------------------------------------------


def _cell_sources(path: Path) -> list[str]:
    try:
        notebook = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"no such notebook: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path} is not a notebook (invalid JSON: {exc})") from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise ExportError(f"{path} is not a notebook (no cells)")
    sources = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    return sources


def _without_magics(source: str) -> str:
    if source.lstrip().startswith("%%"):
        return ""  # a cell magic owns the whole cell
    # Blank lines instead of deleted ones keep line numbers, hence source segments, right.
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n")
    )


# -- names a statement binds and uses ----------------------------------------------------


def _global_uses(table: symtable.SymbolTable, top: bool) -> set[str]:
    names = set()
    for sym in table.get_symbols():
        if sym.is_referenced() and (top or sym.is_global()):
            names.add(sym.get_name())
    for child in table.get_children():
        names |= _global_uses(child, top=False)
    return names


def _annotation_names(node: ast.AST) -> set[str]:
    # Annotations are not evaluated under ``from __future__ import annotations``, so the
    # symbol table may not see them; pydantic and FastAPI still resolve them later.
    names = set()
    for sub in ast.walk(node):
        for ann in _annotations_of(sub):
            names |= {n.id for n in ast.walk(ann) if isinstance(n, ast.Name)}
            if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
                names |= _names_in_string(ann.value)
    return names


def _annotations_of(node: ast.AST) -> list[ast.expr]:
    found: list[ast.expr | None] = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        every = args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]
        found += [a.annotation for a in every if a is not None] + [node.returns]
    elif isinstance(node, ast.AnnAssign):
        found.append(node.annotation)
    return [a for a in found if a is not None]


def _names_in_string(text: str) -> set[str]:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _defines(node: ast.stmt, table: symtable.SymbolTable) -> set[str]:
    return {
        s.get_name()
        for s in table.get_symbols()
        if s.is_assigned() or s.is_imported() or s.is_namespace()
    }


def _statement(index: int, node: ast.stmt, cell: str) -> _Stmt:
    lines = cell.split("\n")
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    source = "\n".join(lines[first - 1 : node.end_lineno])
    table = symtable.symtable(source, "<cell>", "exec")
    uses = (_global_uses(table, top=True) | _annotation_names(node)) - _BUILTINS
    return _Stmt(index, node, source, frozenset(_defines(node, table)), frozenset(uses))


def _statements(sources: list[str]) -> list[_Stmt]:
    statements: list[_Stmt] = []
    for cell in sources:
        cleaned = _without_magics(cell)
        try:
            tree = ast.parse(cleaned)
        except SyntaxError:
            continue  # exploratory or IPython-only syntax; never part of an App
        for node in tree.body:
            if isinstance(node, _DEFINING):
                statements.append(_statement(len(statements), node, cleaned))
    return statements


# -- choosing what the class needs -------------------------------------------------------


def _definition(statements: list[_Stmt], name: str, before: int) -> _Stmt | None:
    earlier = [s for s in statements if name in s.defines and s.index < before]
    later = [s for s in statements if name in s.defines and s.index >= before]
    return earlier[-1] if earlier else (later[0] if later else None)


def _needed(statements: list[_Stmt], target: _Stmt) -> dict[int, set[str]]:
    """Statement index -> the names it must provide (imports keep only those)."""
    needed: dict[int, set[str]] = {target.index: set(target.defines)}
    queue = [(target, name) for name in target.uses]
    while queue:
        user, name = queue.pop()
        found = _definition(statements, name, user.index)
        if found is None or name in needed.get(found.index, ()):
            continue
        first_visit = found.index not in needed
        needed.setdefault(found.index, set()).add(name)
        if first_visit:
            queue += [(found, used) for used in found.uses]
    return needed


def _find_class(statements: list[_Stmt], name: str, path: Path) -> _Stmt:
    classes = [s for s in statements if isinstance(s.node, ast.ClassDef)]
    matches = [s for s in classes if s.node.name == name]  # type: ignore[attr-defined]
    if not matches:
        listed = ", ".join(sorted({s.node.name for s in classes})) or "none"  # type: ignore[attr-defined]
        raise ExportError(f"{path} defines no class {name!r} (classes there: {listed})")
    return matches[-1]


def _is_app(statements: list[_Stmt], stmt: _Stmt, seen: frozenset[int] = frozenset()) -> bool:
    for base in stmt.node.bases:  # type: ignore[attr-defined]
        text = ast.unparse(base)
        if text.rsplit(".", 1)[-1] == "App":
            return True
        parent = _definition(statements, text, stmt.index)
        if (
            parent
            and parent.index not in seen
            and isinstance(parent.node, ast.ClassDef)
            and _is_app(statements, parent, seen | {stmt.index})
        ):
            return True
    return False


# -- writing the module ------------------------------------------------------------------


def _rewrite_import_from(node: ast.ImportFrom, keep: set[str]) -> str:
    aliases = [a for a in node.names if (a.asname or a.name) in keep or a.name == "*"]
    fal_module = _fal_toolkit_module(node.module) if not node.level else None
    if fal_module:  # the toolkit's names are fal's toolkit's
        homes: dict[str, list[ast.alias]] = {}
        for alias in aliases:
            home = fal_module
            if fal_module == "fal.toolkit":
                home = _TOOLKIT_ELSEWHERE.get(alias.name, fal_module)
            homes.setdefault(home, []).append(alias)
        imports = [ast.ImportFrom(module=m, names=names, level=0) for m, names in homes.items()]
        return "\n".join(ast.unparse(line) for line in imports)
    if node.module != "falkit":
        return ast.unparse(ast.ImportFrom(module=node.module, names=aliases, level=node.level))
    # Names fal's SDK has come from fal; falkit's own (codec, Client, ...) stay falkit's.
    shared = [a for a in aliases if a.name in SHARED_WITH_FAL]
    own = [a for a in aliases if a.name not in SHARED_WITH_FAL]
    lines = [ast.ImportFrom(module="fal", names=shared, level=0)] if shared else []
    lines += [ast.ImportFrom(module="falkit", names=own, level=0)] if own else []
    return "\n".join(ast.unparse(line) for line in lines)


def _fal_toolkit_module(module: str | None) -> str | None:
    """``fal.toolkit[.x]`` for ``falkit.toolkit[.x]`` when fal has that module."""
    parts = (module or "").split(".")
    if parts[:2] != ["falkit", "toolkit"]:
        return None
    if len(parts) > 2 and parts[2] not in FAL_TOOLKIT_MODULES:
        return None  # falkit's own (``falkit.toolkit.sources``): stays falkit's
    return ".".join(["fal", *parts[1:]])


def _rewrite_import(node: ast.Import | ast.ImportFrom, keep: set[str]) -> str:
    if isinstance(node, ast.ImportFrom):
        return _rewrite_import_from(node, keep)
    lines = []
    for alias in node.names:
        bound = alias.asname or alias.name.split(".")[0]
        if bound not in keep:
            continue
        fal_module = _fal_toolkit_module(alias.name)
        if alias.name == "falkit" and bound == "fal":
            lines.append("import fal")
        elif fal_module and alias.asname:  # ``import falkit.toolkit.image as image``
            lines.append(ast.unparse(ast.Import(names=[ast.alias(fal_module, alias.asname)])))
        else:
            lines.append(ast.unparse(ast.Import(names=[alias])))
    return "\n".join(lines)


def _render(stmt: _Stmt, keep: set[str]) -> str:
    if isinstance(stmt.node, (ast.Import, ast.ImportFrom)):
        return _rewrite_import(stmt.node, keep)
    return stmt.source.rstrip()


def _is_future(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and node.module == "__future__"


def export_notebook(path: Path | str, class_name: str) -> str:
    """The source of a standalone module with ``class_name`` and what it needs from the
    notebook at ``path``. Raises ``ExportError`` for a missing notebook or class, or a
    class that is not a ``fal.App``."""
    path = Path(path)
    statements = _statements(_cell_sources(path))
    target = _find_class(statements, class_name, path)
    if not _is_app(statements, target):
        raise ExportError(f"{path}: class {class_name!r} is not a fal.App subclass")
    needed = _needed(statements, target)
    chosen = [s for s in statements if s.index in needed]
    futures = [s for s in statements if _is_future(s.node)]
    imports = [
        s for s in chosen if isinstance(s.node, (ast.Import, ast.ImportFrom)) and s not in futures
    ]
    body = [s for s in chosen if s not in imports]
    header = f'"""{class_name}, exported from {path.name} by `falkit export`."""'
    head = [header, *(s.source for s in futures)]
    head.append("\n".join(_render(s, needed[s.index]) for s in imports))
    parts = ["\n\n".join(p for p in head if p.strip())]
    parts += [_render(s, needed[s.index]) for s in body]
    module = "\n\n\n".join(parts) + "\n"
    ast.parse(module)  # a bug here must not reach the user's disk as a broken file
    return module
