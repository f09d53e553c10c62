"""A small named registry with plugin discovery through entry points.

One `Registry` object per kind of part (compressors, backbones). Built-ins register with the
`@registry.register(name, config=ConfigClass)` decorator; third-party packages declare an entry
point in the registry's group (``ecbench.compressors`` or ``ecbench.backbones``) whose target is
either a builder already decorated with a registry, or a `RegistryEntry`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownEntryError(KeyError):
    """Asked for a name that is neither built in nor provided by an installed plugin."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """A builder and the dataclass of options it takes."""

    name: str
    builder: Callable[..., T]
    config: type
    description: str = ""
    source: str = "builtin"
    # (config, num_items, dim, ratio) -> config meeting a target byte compression ratio
    budget: Callable[..., Any] | None = None

    def options(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.config))

    def default_config(self) -> Any:
        return self.config()


class Registry(Generic[T]):
    """Name -> builder + typed options, with lazily loaded entry-point plugins."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, RegistryEntry[T]] = {}
        self._plugins_loaded = False

    def register(self, name: str, *, config: type, description: str = "",
                 budget: Callable[..., Any] | None = None) -> Callable:
        """Decorator: register `builder(config, **context)` under `name`.

        `budget(config, num_items, dim, ratio)`, if given, returns the config that meets a target
        byte compression ratio (`--ratio`) by choosing the compressor's own size options.
        """
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"config for {self.kind} {name!r} must be a dataclass")

        def decorate(builder: Callable[..., T]) -> Callable[..., T]:
            doc = description or (builder.__doc__ or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self.add(RegistryEntry(name, builder, config, text, source=builder.__module__,
                                   budget=budget))
            return builder

        return decorate

    def add(self, entry: RegistryEntry[T]) -> None:
        existing = self._entries.get(entry.name)
        if existing is not None and existing.builder is not entry.builder:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice "
                             f"({existing.source} and {entry.source})")
        self._entries[entry.name] = entry

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for point in importlib.metadata.entry_points(group=self.entry_point_group):
            target = point.load()  # importing a decorated builder registers it
            if isinstance(target, RegistryEntry):
                self.add(target)
            if point.name not in self._entries:
                raise ValueError(f"plugin entry point {point.value!r} in group "
                                 f"{self.entry_point_group!r} did not register {point.name!r}")

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def get(self, name: str) -> RegistryEntry[T]:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownEntryError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def build(self, name: str, config: Any = None, **context: Any) -> T:
        entry = self.get(name)
        return entry.builder(config if config is not None else entry.config(), **context)
