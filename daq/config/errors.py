"""Turn pydantic and YAML errors into one line per problem: file, field path, what is allowed."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def _path(loc: tuple[Any, ...], data: Any) -> str:
    """``devices[1](bms-1).transport.port``: indices, plus the item's name where it has one."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            try:
                node = node[part]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    out += f"({node['name']})"
            except (IndexError, KeyError, TypeError):
                node = None
        else:
            # pydantic puts the tag of a discriminated union in the path; it is noise to a user
            if isinstance(node, dict) and part not in node and out:
                continue
            out += f".{part}" if out else str(part)
            try:
                node = node[part] if isinstance(node, dict) else None
            except (KeyError, TypeError):
                node = None
    return out or "(top level)"


def _message(err: Any) -> str:
    kind = err["type"]
    msg = err["msg"]
    if kind == "extra_forbidden":
        return "unknown key; check the spelling (see: daq schema)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown kind {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a 'kind' key; allowed: {err.get('ctx', {}).get('expected_tags', '?')}"
    if kind == "literal_error":
        return f"{msg} (got {err.get('input')!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in err and kind not in ("value_error", "assertion_error") and not isinstance(err["input"], dict | list):
        return f"{msg} (got {err['input']!r})"
    return msg


def format_validation_error(exc: ValidationError, source: str, data: Any = None) -> list[str]:
    return [f"{source}: {_path(tuple(e['loc']), data)}: {_message(e)}" for e in exc.errors()]
