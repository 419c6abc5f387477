"""One registry for every kind of pluggable part (models, loss terms, datasets): a dict of names,
filled by a decorator, whose lookup of an unknown name lists the known ones."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from .errors import ConfigError, shown

T = TypeVar("T")


class Registry(dict):
    """``name -> entry``. ``kind`` names the entries in messages ("model", "loss term", ...)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str, wrap: Callable[[Any], Any] = lambda obj: obj) -> Callable[[T], T]:
        """A decorator that stores ``wrap(obj)`` under ``name`` and returns ``obj`` unchanged."""

        def decorator(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = wrap(obj)
            return obj

        return decorator

    def lookup(self, name: str):
        """The entry of ``name``; an unknown name is a ``ConfigError`` that lists the known ones."""
        if name not in self:
            raise ConfigError(f"unknown {self.kind} {shown(name)}; known {self.kind}s: {', '.join(sorted(self))}")
        return self[name]
