"""The shipped configuration files, and ``builtin:NAME`` references to them.

The repository's ``configs/`` folder is installed as the package ``daq._configs`` (setup.py maps
it), so an installed ``daq`` finds its register maps, limit sets, profiles, demo benches, DBC and
Grafana files through ``importlib.resources``, from any working directory, editable or not.

Wherever a file is named (a bench file's ``regmap:`` or ``safety.limits:``, a command-line
argument), ``builtin:NAME`` means the shipped file of that kind, e.g. ``builtin:sim_cycler`` for
``configs/regmaps/sim_cycler.yaml``; anything else is a path, relative to the file naming it (or
to the working directory on the command line). This is the only module that knows where the
shipped files live; it imports nothing of the runtime, so drivers and simulators may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from daq.errors import ConfigError

SHIPPED_PACKAGE = "daq._configs"
BUILTIN_PREFIX = "builtin:"

Kind = Literal["bench", "regmap", "limits", "profile", "dbc"]


@dataclass(frozen=True, slots=True)
class KindInfo:
    label: str  # what a user calls one, for messages
    folder: str  # under the shipped root; "" is the top level
    suffixes: tuple[str, ...]


KINDS: dict[Kind, KindInfo] = {
    "bench": KindInfo("bench file", "", (".yaml", ".yml")),
    "regmap": KindInfo("register map", "regmaps", (".yaml", ".yml")),
    "limits": KindInfo("limit set", "limits", (".yaml", ".yml")),
    "profile": KindInfo("profile", "profiles", (".yaml", ".yml")),
    "dbc": KindInfo("DBC file", "dbc", (".dbc",)),
}


def shipped_root() -> Path:
    """The folder holding the shipped files (``configs/`` in a checkout, ``daq/_configs`` installed)."""
    try:
        root = files(SHIPPED_PACKAGE)
    except ModuleNotFoundError as exc:  # an editable install made before configs/ became package data
        raise ConfigError(
            f"the shipped configuration files ({SHIPPED_PACKAGE}) are not installed; reinstall battery-daq"
            " (pip install -e . in a clone, or the wheel)"
        ) from exc
    if not isinstance(root, Path):  # a zipped install: the loaders need real files
        raise ConfigError(
            f"the shipped configuration files are inside an archive ({root}); install battery-daq as a normal"
            " wheel (pip install battery-daq), not as a zip"
        )
    return root


def shipped_file(relative: str) -> Path:
    """A shipped file or folder by its path under ``configs/``, e.g. ``deploy/daq@.service``."""
    path = shipped_root() / relative
    if not path.exists():
        raise ConfigError(f"{relative}: no such shipped file or folder in {shipped_root()}; daq shipped lists them")
    return path


def shipped_names(kind: Kind) -> list[str]:
    """The names ``builtin:NAME`` accepts for one kind, sorted."""
    info = KINDS[kind]
    folder = shipped_root() / info.folder
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.is_file() and p.suffix in info.suffixes)


def _find(kind: Kind, name: str) -> Path | None:
    info = KINDS[kind]
    folder = shipped_root() / info.folder
    stem = Path(name).stem if Path(name).suffix in info.suffixes else name
    for suffix in info.suffixes:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def shipped_path(kind: Kind, name: str) -> Path:
    """The shipped file of ``kind`` called ``name`` (with or without its suffix)."""
    path = _find(kind, name)
    if path is None:
        label = KINDS[kind].label
        known = ", ".join(shipped_names(kind)) or "none"
        raise ConfigError(
            f"{BUILTIN_PREFIX}{name}: no shipped {label} named {name!r}; shipped {label}s: {known}"
        )
    return path


def is_builtin(ref: str | Path) -> bool:
    return isinstance(ref, str) and ref.startswith(BUILTIN_PREFIX)


def locate(ref: str | Path, kind: Kind | None = None, *, base_dir: Path | None = None) -> Path:
    """A file reference as a path: ``builtin:NAME`` is the shipped file of ``kind``; any other
    reference is a path, relative to ``base_dir`` (the folder of the file naming it) if given.

    With ``kind`` None (a caller that does not say what it expects), every kind is searched and the
    name must be unique among them.
    """
    if not is_builtin(ref):
        path = Path(ref)
        return path if path.is_absolute() or base_dir is None else base_dir / path
    name = str(ref)[len(BUILTIN_PREFIX) :].strip()
    if kind is not None:
        return shipped_path(kind, name)
    found = [(k, p) for k in KINDS if (p := _find(k, name)) is not None]
    if len(found) == 1:
        return found[0][1]
    if found:
        kinds = ", ".join(KINDS[k].label for k, _ in found)
        raise ConfigError(f"{ref}: ambiguous, there is a shipped {kinds} of that name; name the file by its path")
    known = "; ".join(f"{info.label}s: {', '.join(shipped_names(k)) or 'none'}" for k, info in KINDS.items())
    raise ConfigError(f"{ref}: no shipped file named {name!r}; shipped {known}")


def demo_bench() -> Path:
    """The demo bench file ``daq demo`` runs."""
    return shipped_path("bench", "demo")
