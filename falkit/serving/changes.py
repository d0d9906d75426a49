"""What changed between two versions of an App class (a re-run cell), deciding whether the
new handlers may take over the running instance (a swap) or setup must run again."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import App


def code_key(func: Any) -> Any:
    code = getattr(func, "__code__", None)
    return func if code is None else _without_position(code)


def _without_position(code: types.CodeType) -> types.CodeType:
    # Code objects compare by bytecode, constants and names, not by source text, but they
    # do compare their first line number: normalised (nested code too), a cell moved in the
    # notebook or an edit elsewhere in it keeps the model loaded.
    consts = tuple(
        _without_position(c) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_firstlineno=1, co_consts=consts)


def restart_reason(old: type[App], new: type[App]) -> str | None:
    """Why ``new`` cannot take over ``old``'s instance, or ``None`` when it can: its
    ``setup()``, ``teardown()`` or fal options differ."""
    if code_key(old.setup) != code_key(new.setup):
        return "setup changed"
    if code_key(old.teardown) != code_key(new.teardown):
        return "teardown changed"
    if old.options() != new.options():
        changed = sorted(k for k, v in new.options().items() if old.options().get(k) != v)
        return "options changed (" + ", ".join(changed) + ")"
    return None
