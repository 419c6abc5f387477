"""Typed configuration: YAML files with ``_base_`` inheritance and dotted ``KEY=VALUE`` overrides,
checked against dataclass schemas.

The schema is the documentation: each field has a type, a default and a ``help`` string; fields with
a fixed set of values carry ``choices``. Unknown keys and badly typed values raise ``ConfigError``
naming the key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError

BASE_KEY = "_base_"


def option(default: Any, help: str, choices: tuple | None = None, *, min: float | None = None,
           max: float | None = None, above: float | None = None, below: float | None = None):
    """A documented config field. ``min``/``max`` are inclusive bounds, ``above``/``below`` exclusive
    ones; they apply to a number and to every number in a list. Floats must be finite whatever the
    bounds. Mutable defaults are copied per instance."""
    bounds = {name: value for name, value in (("min", min), ("max", max), ("above", above), ("below", below))
              if value is not None}
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
    "min": (lambda value, bound: value >= bound, ">="), "max": (lambda value, bound: value <= bound, "<="),
    "above": (lambda value, bound: value > bound, ">"), "below": (lambda value, bound: value < bound, "<"),
}


class Options:
    """Base class of config sections: constructing one checks every field's value against its
    ``option(...)`` declaration, so that no value slips through, whoever builds the section.
    (``build`` checks first, under each value's full dotted key.) A subclass with a
    ``__post_init__`` of its own for checks across fields calls ``super().__post_init__()`` first."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check_value(getattr(self, field.name), field.name, field.metadata)


class _ShortRepr(reprlib.Repr):
    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 64:  # str() of a huge int is slow, past 4300 digits an error
            return f"{'-' if value < 0 else ''}<an integer of {value.bit_length() * 0.30103:.0f} digits>"
        return repr(value)


_SHORT = _ShortRepr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 60, 60, 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6


def shown(value: Any) -> str:
    """``repr(value)`` cut to a few dozen characters, for every message that echoes a value the user gave:
    a huge string, list or number is shown by its beginning and end, never printed whole."""
    return _SHORT.repr(value)


def _number(value: float) -> str:
    return shown(value) if isinstance(value, int) else f"{value:g}"


def check_value(value: Any, key: str, metadata) -> None:
    """Raise ``ConfigError`` unless ``value`` (a coerced field value) is finite, one of the field's
    ``choices`` and within its bounds; lists are checked item by item."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_value(item, f"{key}[{index}]", {**metadata, "choices": None})
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


# ---------------------------------------------------------------- YAML files with inheritance
class _DuplicateKey(Exception):
    def __init__(self, key, first_line: int, second_line: int):
        super().__init__(key)
        self.key, self.lines = key, (first_line, second_line)


MAX_YAML_NODES = 100_000  # a whole experiment's resolved config is a few hundred
MAX_YAML_DEPTH = 32  # and nests four deep
MAX_INT_CHARACTERS = 40  # seeds stop at 2**63 - 1, 19 digits


class _TooLarge(Exception):
    """A YAML document that would expand past ``MAX_YAML_NODES`` or ``MAX_YAML_DEPTH``, or refers to itself."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML would keep the last), and a
    document that would expand (its aliases repeated where they stand) past ``MAX_YAML_NODES`` nodes or
    ``MAX_YAML_DEPTH`` levels, or holds an alias inside its own anchor: an alias bomb of a few hundred bytes
    is refused before it is built, and a deeply nested one before Python's recursion limit."""

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooLarge(f"is nested more than {MAX_YAML_DEPTH} levels deep (at line "
                                f"{self.peek_event().start_mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            sizes: dict[int, tuple[int, int]] = {}
            nodes, _ = _expanded_size(node, 1, sizes)
            if nodes > MAX_YAML_NODES:
                raise _TooLarge(f"holds {shown(nodes)} values (each alias *name counted where it stands), more "
                                f"than {MAX_YAML_NODES}")
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_CHARACTERS:  # int() of thousands of digits is slow, past 4300 an error
            raise _TooLarge(f"holds an integer of {len(node.value)} characters at line {node.start_mark.line + 1}")
        return super().construct_yaml_int(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _expanded_size(node: yaml.Node, depth: int, sizes: dict) -> tuple[int, int]:
    """(values, levels) of ``node`` with every alias expanded, each shared node counted once per use;
    ``sizes`` memoises them by node (an unfinished one is -1: an alias inside its own anchor)."""
    if depth > MAX_YAML_DEPTH:
        raise _TooLarge(f"is nested more than {MAX_YAML_DEPTH} levels deep through its aliases (*name) (at line "
                        f"{node.start_mark.line + 1})")
    known = sizes.get(id(node))
    if known == (-1, -1):
        raise _TooLarge(f"refers to itself: an alias (*name) inside its own anchor (&name), at line "
                        f"{node.start_mark.line + 1}")
    if known is None:
        sizes[id(node)] = (-1, -1)
        children = ([child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        counted = [_expanded_size(child, depth + 1, sizes) for child in children]
        known = (1 + sum(count for count, _ in counted), 1 + max((levels for _, levels in counted), default=0))
        sizes[id(node)] = known
    if depth - 1 + known[1] > MAX_YAML_DEPTH:
        raise _TooLarge(f"is nested more than {MAX_YAML_DEPTH} levels deep through its aliases (*name) (at line "
                        f"{node.start_mark.line + 1})")
    return known


def read_yaml(path: Path) -> dict:
    """Read one YAML mapping with a safe loader (no arbitrary Python objects); an empty file, a key
    given twice, text that is not UTF-8 and a top level that is not a mapping are errors."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as error:
        raise ConfigError(f"{path}: key {shown(error.key)} appears twice, at lines {error.lines[0]} and "
                          f"{error.lines[1]}; keep one") from None
    except _TooLarge as error:
        raise ConfigError(f"{path}: refused: the document {error}; a config is a few plain nested mappings") from None
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(f"{path}: unsupported YAML tag (only plain YAML is allowed): {error.problem}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if data is None:
        raise ConfigError(f"{path} is empty; a config names its _base_ files or sets at least one key")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_yaml_tree(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read ``path`` and merge it over its ``_base_`` files (a path or a list, relative to it)."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular _base_ inheritance")
    data = read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(base, str) and base for base in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths (relative to the file), "
                          f"got {shown(bases)}")
    merged: dict = {}
    for base in bases:
        merged = deep_merge(merged, load_yaml_tree(path.parent / base, _seen + (path,)))
    return deep_merge(merged, data)


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


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
    return getattr(annotation, "__name__", str(annotation))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(value, annotation, key: str):
    """Convert ``value`` to ``annotation``; strings (from the command line) are parsed by type."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if type(None) in options and (value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~"))):
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
            value = _parse_yaml_value(value, key)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _type_error(key, annotation, value)
        return [coerce(item, item_type, f"{key}[{index}]") for index, item in enumerate(value)]
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


def _parse_yaml_value(text: str, key: str):
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _TooLarge as error:
        raise ConfigError(f"{key}: refused: the value {error}") from None
    except (yaml.YAMLError, _DuplicateKey):
        raise ConfigError(f"{key}: cannot parse {shown(text)}; write lists as [1, 2, 3]") from None


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
