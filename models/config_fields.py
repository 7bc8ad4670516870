"""Field checks shared by the typed configs of models/ (torch-free).

Every config dataclass (``LMConfig``, ``VQVAEConfig``, ``EfficientNetConfig``,
``TrainConfig``) checks its values in ``__post_init__`` with these helpers, so a bad
value raises an error that names the field: a :class:`FieldTypeError` (a ``TypeError``)
for a value of the wrong type, a :class:`FieldValueError` (a ``ValueError``) for a value
out of range. Both carry ``.field`` and ``.message``, which
:func:`models.kinds.build_configs` turns into a config-file path such as ``train.lr``.

:func:`check_types` checks every field against its annotation, the way a YAML file
gets it wrong: ``3e-4`` read as the string ``"3e-4"``, ``2.0`` where an int is due,
``yes`` where a bool is. ``bool`` is never accepted as an int; an int is a fine float.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["FieldError", "preset_values", "FieldTypeError", "FieldValueError", "check_choice", "check_number",
           "check_types", "positive_ints"]


class FieldError(Exception):
    """A bad config field; ``str(e)`` is ``"<Config>.<field>: <message>"``."""

    def __init__(self, owner: str, field: str, message: str) -> None:
        super().__init__(f"{owner}.{field}: {message}")
        self.owner, self.field, self.message = owner, field, message


class FieldTypeError(FieldError, TypeError):
    """A config field holds a value of the wrong type."""


class FieldValueError(FieldError, ValueError):
    """A config field holds a value out of its range."""


_NAMES = {"int": "an int", "float": "a number", "bool": "a bool", "str": "a string"}


def _accepts(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    raise TypeError(f"check_types cannot check annotation {kind!r}")  # a bug in a config class


def check_types(config: Any) -> None:
    """Checks every field of dataclass ``config`` against its annotation.

    Annotations are strings (``from __future__ import annotations``) among ``int``,
    ``float``, ``bool``, ``str`` and those with ``| None``.

    Raises:
        FieldTypeError: the first field whose value has another type (named).
    """
    owner = type(config).__name__
    for f in dataclasses.fields(config):
        kinds = [k.strip() for k in str(f.type).split("|")]
        value = getattr(config, f.name)
        optional = "None" in kinds
        kinds = [k for k in kinds if k != "None"]
        if value is None and optional:
            continue
        if not any(_accepts(k, value) for k in kinds):
            want = " or ".join(_NAMES[k] for k in kinds) + (" or None" if optional else "")
            raise FieldTypeError(owner, f.name, f"must be {want}, got {value!r}")


def positive_ints(config: Any, names: Iterable[str], *, low: int = 1) -> None:
    """Raises FieldValueError for the first of ``names`` (ints or None) below ``low``."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < low:
            what = "positive" if low == 1 else f">= {low}"
            raise FieldValueError(type(config).__name__, name, f"must be {what}, got {value}")


def check_number(config: Any, name: str, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = True) -> None:
    """Raises FieldValueError when field ``name`` (a number or None) is outside the interval.

    The default interval is ``[0, inf)``: finite and >= 0.
    """
    value = getattr(config, name)
    if value is None:
        return
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below and math.isfinite(value)):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        span = ("finite and " + ("> " if low_open else ">= ") + f"{low:g}" if high == math.inf
                else f"in {left}{low:g}, {high:g}{right}")
        raise FieldValueError(type(config).__name__, name, f"must be {span}, got {value}")


def check_choice(config: Any, name: str, choices: tuple) -> None:
    """Raises FieldValueError when field ``name`` is not one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise FieldValueError(type(config).__name__, name,
                              f"must be one of {choices}, got {value!r}")


def preset_values(cls: type, presets: dict[str, dict[str, Any]], name: str,
                  overrides: dict[str, Any]) -> dict[str, Any]:
    """The fields of preset ``name`` of config class ``cls`` with ``overrides`` applied.

    Raises:
        ValueError: an unknown preset name.
        TypeError: an override that is not a field of ``cls``.
    """
    import dataclasses

    if name not in presets:
        raise ValueError(f"unknown {cls.__name__} preset {name!r}; expected one of {sorted(presets)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return {**presets[name], **overrides}
