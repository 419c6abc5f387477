"""YAML files: one safe, bounded loader for every YAML text the project reads (config files, a run's
config.yaml, ``KEY=VALUE`` override values), and ``_base_`` inheritance between config files.

The loader builds plain YAML only (no Python objects), refuses a key given twice in one mapping, and
bounds what a document may expand to: an alias bomb of a few hundred bytes, or a deeply nested document,
is one ``ConfigError`` before anything is built.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConfigError, shown

BASE_KEY = "_base_"


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
                raise _TooLarge(
                    f"is nested more than {MAX_YAML_DEPTH} levels deep (at line "
                    f"{self.peek_event().start_mark.line + 1})"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            sizes: dict[int, tuple[int, int]] = {}
            nodes, _ = _expanded_size(node, 1, sizes)
            if nodes > MAX_YAML_NODES:
                raise _TooLarge(
                    f"holds {shown(nodes)} values (each alias *name counted where it stands), more "
                    f"than {MAX_YAML_NODES}"
                )
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
        raise _TooLarge(
            f"is nested more than {MAX_YAML_DEPTH} levels deep through its aliases (*name) (at line "
            f"{node.start_mark.line + 1})"
        )
    known = sizes.get(id(node))
    if known == (-1, -1):
        raise _TooLarge(
            f"refers to itself: an alias (*name) inside its own anchor (&name), at line {node.start_mark.line + 1}"
        )
    if known is None:
        sizes[id(node)] = (-1, -1)
        children = (
            [child for pair in node.value for child in pair]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        counted = [_expanded_size(child, depth + 1, sizes) for child in children]
        known = (1 + sum(count for count, _ in counted), 1 + max((levels for _, levels in counted), default=0))
        sizes[id(node)] = known
    if depth - 1 + known[1] > MAX_YAML_DEPTH:
        raise _TooLarge(
            f"is nested more than {MAX_YAML_DEPTH} levels deep through its aliases (*name) (at line "
            f"{node.start_mark.line + 1})"
        )
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
        raise ConfigError(
            f"{path}: key {shown(error.key)} appears twice, at lines {error.lines[0]} and {error.lines[1]}; keep one"
        ) from None
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
        raise ConfigError(
            f"{path}: {BASE_KEY} must be a path or a list of paths (relative to the file), got {shown(bases)}"
        )
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


def parse_yaml_value(text: str, key: str):
    """A ``KEY=VALUE`` override's value, read as YAML by the same bounded loader."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _TooLarge as error:
        raise ConfigError(f"{key}: refused: the value {error}") from None
    except (yaml.YAMLError, _DuplicateKey):
        raise ConfigError(f"{key}: cannot parse {shown(text)}; write lists as [1, 2, 3]") from None
