"""``--set key=value`` overrides of a dataclass config (model configs, the synthetic
generator's knobs), typed after each field's default. No torch here: ``nextclick synth``
uses it too."""

from __future__ import annotations

import dataclasses
from typing import Any


def config_overrides(config_class: type, owner: str, pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> typed overrides of ``config_class``'s fields; a clear
    ``ValueError`` for a malformed pair, an unknown field or a value of the wrong type."""
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        if key not in fields:
            raise ValueError(f"--set {key}: {owner} has no config field {key!r}; "
                             f"known: {', '.join(sorted(fields))}")
        field = fields[key]
        default = (field.default if field.default is not dataclasses.MISSING
                   else field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else None)
        result[key] = _convert(key, raw.strip(), default)
    return result


def _convert(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple | list):
            values = [item for item in raw.split(",") if item]
            kind = type(default[0]) if default else int
            return type(default)(kind(item) for item in values)
        if default is None and raw.lower() == "none":
            return None
    except ValueError:
        raise ValueError(f"--set {key}={raw}: expected a {type(default).__name__}") from None
    return raw


def parse_overrides(model_class: Any, pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` strings -> typed overrides of a model class's config."""
    return config_overrides(model_class.config_class, model_class.name, pairs)


def model_overrides(model_class: Any, pairs: list[str], named: dict[str, Any]) -> dict[str, Any]:
    """``--set`` pairs plus the named shortcuts of ``nextclick train`` (``{field: value}``,
    e.g. ``{"learning_rate": 0.01}``; None = not given), each checked against the model's
    config fields."""
    overrides = parse_overrides(model_class, pairs)
    fields = {field.name for field in dataclasses.fields(model_class.config_class)}
    for field, value in named.items():
        if value is None:
            continue
        if field not in fields:
            raise ValueError(f"{model_class.name} has no {field} setting")
        overrides[field] = value
    return overrides
