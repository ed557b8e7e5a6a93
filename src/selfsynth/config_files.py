"""Reading recipe files: YAML mappings, where ``extends: other.yaml`` starts from another recipe.

A variant recipe names only what it changes, so the values it shares with its parent (and the
reasons given beside them) live in one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from selfsynth.errors import ConfigError


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of settings")
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The settings of a recipe file, its ``extends`` chain resolved (paths relative to each file)."""
    chain: list[Path] = []
    p = Path(path)
    layers = []
    while True:
        here = p.resolve()
        if here in chain:
            names = " -> ".join(str(c) for c in [*chain, here])
            raise ConfigError(f"{path}: 'extends' loops back ({names}); remove one link")
        chain.append(here)
        data = _load(p)
        parent = data.pop("extends", None)
        layers.append(data)
        if parent is None:
            break
        if not isinstance(parent, str) or not parent.strip():
            raise ConfigError(f"{p}: 'extends' must be the path of another recipe file, got {parent!r}")
        p = p.parent / parent
    out: dict[str, Any] = {}
    for data in reversed(layers):
        out = merge(out, data)
    return out
