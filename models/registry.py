"""Name -> model class. Model modules register themselves with ``@register``; the
registry imports every module of the ``models`` package on first use (so a new model is
one new file, and ``import models`` stays cheap)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from models.base import SessionModel

_REGISTRY: dict[str, type[SessionModel]] = {}
_loaded = False


def register(cls: type[SessionModel]) -> type[SessionModel]:
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        import models

        for module in sorted(info.name for info in pkgutil.iter_modules(models.__path__)):
            if module not in ("base", "registry"):
                importlib.import_module(f"models.{module}")
        _loaded = True


def available() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get(name: str) -> type[SessionModel]:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}") from None


def build(name: str, n_items: int, n_users: int, **overrides: Any) -> SessionModel:
    """Instantiate ``name`` with its paper-default config, overriding given fields."""
    cls = get(name)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(
            f"{name}: unknown config fields {sorted(unknown)}; known: {sorted(fields)}")
    return cls(n_items, n_users, cls.config_class(**overrides))


def paper_recipe(name: str) -> dict[str, Any]:
    """The config overrides that put ``name`` back on its paper's training recipe where
    its defaults deviate (empty when they do not)."""
    return dict(get(name).config_class.paper_recipe)
