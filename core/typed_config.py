"""Typed configuration: config trees (YAML files with ``_base_`` inheritance, read by core/yaml_files.py) and
dotted ``KEY=VALUE`` overrides, checked against dataclass schemas.

The schema is the documentation: each field has a type, a default and a ``help`` string; fields with
a fixed set of values carry ``choices``. Unknown keys and badly typed values raise ``ConfigError``
naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Union

import yaml

from .errors import ConfigError, shown
from .yaml_files import parse_yaml_value


def option(
    default: Any,
    help: str,
    choices: tuple | None = None,
    *,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    below: float | None = None,
):
    """A documented config field. ``min``/``max`` are inclusive bounds, ``above``/``below`` exclusive
    ones; they apply to a number and to every number in a list. Floats must be finite whatever the
    bounds. Mutable defaults are copied per instance."""
    bounds = {
        name: value
        for name, value in (("min", min), ("max", max), ("above", above), ("below", below))
        if value is not None
    }
    metadata = {"help": help, "choices": choices, "bounds": bounds}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# Ranges that options of one kind share (``option(4.0, "...", **TEMPERATURE)``): every number an experiment
# can use, nothing that only overflows (a temperature of 1e-300, an exponent of 1e300) or exhausts memory.
LOSS_WEIGHT = {"min": 0, "max": 1e5}  # SAD's default is 1000
TEMPERATURE = {"min": 0.01, "max": 100}  # softmax temperatures: 1 to 40 in the papers
EXPONENT = {"min": 0, "max": 10}  # focal gamma, Zipf's power: 0 to 5 in the papers
BETA_ALPHA = {"min": 0.01, "max": 100}  # lam ~ Beta(alpha, alpha): 0.2 to 2 in the papers
STAGE = {"min": 1, "max": 16}  # a backbone stage, counted from 1 (ours have 3 to 5)


_BOUND_TESTS = {  # bound name -> (the test a value must pass, how a message says it)
    "min": (lambda value, bound: value >= bound, ">="),
    "max": (lambda value, bound: value <= bound, "<="),
    "above": (lambda value, bound: value > bound, ">"),
    "below": (lambda value, bound: value < bound, "<"),
}


class Options:
    """Base class of config sections: constructing one checks every field's value against its
    ``option(...)`` declaration, so that no value slips through, whoever builds the section.
    (``build`` checks first, under each value's full dotted key.) A subclass with a
    ``__post_init__`` of its own for checks across fields calls ``super().__post_init__()`` first."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check_value(getattr(self, field.name), field.name, field.metadata)


def _number(value: float) -> str:
    return shown(value) if isinstance(value, int) else f"{value:g}"


def check_value(value: Any, key: str, metadata) -> None:
    """Raise ``ConfigError`` unless ``value`` (a coerced field value) is finite, one of the field's
    ``choices`` and within its bounds; lists are checked item by item."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_value(item, f"{key}[{index}]", {**metadata, "choices": None})
        return
    if isinstance(value, dict):
        for name, item in value.items():
            check_value(item, f"{key}.{name}", {**metadata, "choices": None})
        return
    choices = metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {shown(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for name, bound in metadata.get("bounds", {}).items():
            passes, sign = _BOUND_TESTS[name]
            if not passes(value, bound):
                raise ConfigError(f"{key} must be {sign} {_number(bound)}, got {_number(value)}")


def _copy(value):
    return yaml.safe_load(yaml.safe_dump(value))


# ---------------------------------------------------------------- schema checking
def all_keys(schema: type, prefix: str = "") -> list[str]:
    keys = []
    for field in dataclasses.fields(schema):
        key = prefix + field.name
        keys.append(key)
        field_type = _hints(schema)[field.name]
        if dataclasses.is_dataclass(field_type):
            keys.extend(all_keys(field_type, key + "."))
    return keys


def _unknown_key(key: str, root: type) -> ConfigError:
    candidates = all_keys(root)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:  # a typo in the last part only: compare the leaf names under the same parent
        parent, _, leaf = key.rpartition(".")
        siblings = {k.rpartition(".")[2]: k for k in candidates if k.rpartition(".")[0] == parent}
        close = [siblings[m] for m in difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.5)]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {shown(key)}{hint}")


def build(schema: type, data: dict, root: type | None = None, prefix: str = ""):
    """Instantiate dataclass ``schema`` from nested ``data``, checking keys and types."""
    root = root or schema
    if not isinstance(data, dict):
        raise ConfigError(f"config key {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {shown(data)}")
    hints = _hints(schema)
    names = {f.name: f for f in dataclasses.fields(schema)}
    for key in data:
        if key not in names:
            raise _unknown_key(prefix + str(key), root)
    values = {}
    for name, field in names.items():
        key = prefix + name
        if dataclasses.is_dataclass(hints[name]):
            values[name] = build(hints[name], data.get(name, {}), root, key + ".")
        else:
            values[name] = coerce(data[name], hints[name], key) if name in data else _default(field)
            check_value(values[name], key, field.metadata)
    return schema(**values)


def _default(field: dataclasses.Field):
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _hints(schema: type) -> dict:
    return typing.get_type_hints(schema)


def type_name(annotation) -> str:
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list of {type_name(typing.get_args(annotation)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(value, annotation, key: str):
    """Convert ``value`` to ``annotation``; strings (from the command line) are parsed by type."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if type(None) in options and (
            value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~"))
        ):
            return None
        for option_type in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option_type, key)
            except ConfigError:
                pass
        raise _type_error(key, annotation, value)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):
            value = parse_yaml_value(value, key)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _type_error(key, annotation, value)
        return [coerce(item, item_type, f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        return _coerce_mapping(value, annotation, key)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise _type_error(key, annotation, value)
    if annotation in (int, float):
        if isinstance(value, bool):
            raise _type_error(key, annotation, value)
        if isinstance(value, int) or (annotation is float and isinstance(value, float)):
            return annotation(value)
        if isinstance(value, str):  # the command line, and YAML 1.1, which reads "5e-4" as a string
            try:
                return annotation(value)
            except ValueError:
                pass
        raise _type_error(key, annotation, value)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, annotation, value)
    raise TypeError(f"unsupported config type {annotation!r} for {key}")


_PLAIN = (bool, int, float, str, type(None))


def _coerce_mapping(value, annotation, key: str) -> dict:
    """A ``dict[str, object]`` field: a mapping of names to plain YAML values (numbers, strings, booleans,
    null, and lists of them), as keyword arguments for a library (``model.timm_kwargs``)."""
    if isinstance(value, str):
        value = parse_yaml_value(value, key)
    if not isinstance(value, dict):
        raise _type_error(key, annotation, value)
    for name, item in value.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{key}: the name {shown(name)} is not a keyword argument name")
        _check_plain(item, f"{key}.{name}")
    return dict(value)


def _check_plain(value, key: str) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, f"{key}[{index}]")
    elif not isinstance(value, _PLAIN):
        raise ConfigError(f"{key} must be a number, string, boolean, null or a list of them, got {shown(value)}")


def _type_error(key, annotation, value) -> ConfigError:
    return ConfigError(f"{key} must be {type_name(annotation)}, got {shown(value)} ({type(value).__name__})")


# ---------------------------------------------------------------- command-line overrides
def apply_overrides(data: dict, overrides: list[str], schema: type) -> dict:
    """Apply ``a.b.c=value`` strings to nested ``data``; keys must exist in ``schema``."""
    data = _copy(data)
    valid = set(all_keys(schema))
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {shown(override)} must look like KEY=VALUE (e.g. train.epochs=2)")
        if key not in valid:
            raise _unknown_key(key, schema)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {shown(key)}: {shown(part)} is not a section")
        node[leaf] = value  # typed against the schema by build()
    return data


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested sections as dotted keys: ``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def describe(schema: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) rows for documentation and ``train.py --help-config``."""
    rows = []
    instance = schema()
    hints = _hints(schema)
    for field in dataclasses.fields(schema):
        key = prefix + field.name
        if dataclasses.is_dataclass(hints[field.name]):
            rows.extend(describe(hints[field.name], key + "."))
            continue
        help_text = field.metadata.get("help", "")
        if field.metadata.get("choices"):
            help_text += f" (one of: {', '.join(map(str, field.metadata['choices']))})"
        bounds = field.metadata.get("bounds")
        if bounds:
            ranges = (f"{_BOUND_TESTS[name][1]} {_number(bound)}" for name, bound in bounds.items())
            help_text += f" ({', '.join(ranges)})"
        rows.append((key, type_name(hints[field.name]), getattr(instance, field.name), help_text))
    return rows
