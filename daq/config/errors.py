"""Turn pydantic and YAML errors into one line per problem: file, field path, what is allowed.

``unknown_key_message`` is the one wording of an unknown key for every config kind (bench file,
register map, profile, limit set): check the spelling, the closest allowed name, and the list of
allowed names at that place, found by walking the model along the error's location.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

UNKNOWN_KEY = "unknown key; check the spelling"


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


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> tuple[Any, ...]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(_unwrap(a) for a in get_args(annotation))
    return (annotation,)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _tags(model: type[BaseModel]) -> tuple[Any, ...]:
    field = model.model_fields.get("kind")
    if field is None:
        return ()
    kind = _unwrap(field.annotation)
    return get_args(kind) if get_origin(kind) is Literal else ()


def _step(annotation: Any, part: Any, node: Any) -> tuple[Any, Any, bool]:
    """One location part down: (annotation, data node, consumed). Unions are resolved by kind/tag."""
    members = _members(annotation)
    models = [m for m in members if _is_model(m)]
    if isinstance(part, str):
        for m in models:  # a discriminated union's tag in the location, e.g. devices.0.modbus
            if part in _tags(m) and part not in m.model_fields:
                return m, node, True
        kind = node.get("kind") if isinstance(node, dict) else None
        ordered = [m for m in models if kind in _tags(m)] + [m for m in models if kind not in _tags(m)]
        for m in ordered:
            if part in m.model_fields:
                child = node.get(part) if isinstance(node, dict) else None
                return m.model_fields[part].annotation, child, True
        for m in members:
            if get_origin(m) is dict:
                child = node.get(part) if isinstance(node, dict) else None
                return get_args(m)[1] if get_args(m) else None, child, True
        return None, None, True
    for m in members:  # an index into a list or tuple
        if get_origin(m) in (list, tuple, set, frozenset) and get_args(m):
            child = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            return get_args(m)[0], child, True
    return None, None, True


def allowed_keys(model: type[BaseModel] | None, loc: tuple[Any, ...], data: Any = None) -> list[str]:
    """The keys allowed where ``loc`` (a pydantic error location) points; [] if it cannot tell."""
    if model is None:
        return []
    annotation: Any = model
    node = data
    for part in loc[:-1]:
        annotation, node, _ = _step(annotation, part, node)
        if annotation is None:
            return []
    models = [m for m in _members(annotation) if _is_model(m)]
    kind = node.get("kind") if isinstance(node, dict) else None
    chosen = [m for m in models if kind in _tags(m)] or models[:1]
    if not chosen:
        return []
    return [name for name in chosen[0].model_fields if name != "kind"]


def unknown_key_message(
    model: type[BaseModel] | None, loc: tuple[Any, ...], data: Any = None, *, hint: str = ""
) -> str:
    """``unknown key; check the spelling (did you mean 'x'?); allowed: a, b, c``, the same everywhere."""
    allowed = allowed_keys(model, loc, data)
    unknown = str(loc[-1]) if loc else ""
    msg = UNKNOWN_KEY
    close = difflib.get_close_matches(unknown, allowed, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    if allowed:
        msg += f"; allowed: {', '.join(allowed)}"
    return msg + (f" ({hint})" if hint else "")


def _message(err: Any, model: type[BaseModel] | None = None, data: Any = None, hint: str = "") -> str:
    kind = err["type"]
    msg = err["msg"]
    if kind == "extra_forbidden":
        return unknown_key_message(model, tuple(err["loc"]), data, hint=hint)
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


def format_validation_error(
    exc: ValidationError, source: str, data: Any = None, *, model: type[BaseModel] | None = None, hint: str = ""
) -> list[str]:
    """One line per problem; pass the validated ``model`` so an unknown key lists the allowed ones."""
    return [f"{source}: {_path(tuple(e['loc']), data)}: {_message(e, model, data, hint)}" for e in exc.errors()]
