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


class OptionClashError(ValueError):
    """A part's option has the name of a general option or of another kind's option, so one
    of them would silently shadow the other on the command line."""


def option_flag(name: str) -> str:
    """The command-line spelling of an option name: `hidden_size` -> `--hidden-size`."""
    return "--" + name.replace("_", "-")


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

    def flags(self) -> list[str]:
        """Its options as the command line spells them (`--hidden-size`)."""
        return [option_flag(f.name) for f in self.options()]

    def default_config(self) -> Any:
        return self.config()


class Registry(Generic[T]):
    """Name -> builder + typed options, with lazily loaded entry-point plugins."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, RegistryEntry[T]] = {}
        self._plugins_loaded = False
        self._reserved: dict[str, str] = {}  # flag -> who owns it (the general options)
        self._rivals: list[Registry] = []  # kinds whose options share one command line

    def share_command_line_with(self, other: "Registry") -> None:
        """Parts of `self` and of `other` take their options from one command line, so an
        option both kinds declare is refused when the second of them registers."""
        self._rivals.append(other)
        other._rivals.append(self)
        for entry in list(self._entries.values()):
            other._check_options(entry, self.kind)

    def reserve(self, flags: dict[str, str]) -> None:
        """Flags (`--seed`) the command line uses for itself, each with its owner; a part's
        option of that name is refused, now or when it registers."""
        self._reserved.update(flags)
        for entry in self._entries.values():
            self._check_options(entry, self.kind)

    @property
    def reserved_flags(self) -> dict[str, str]:
        return dict(self._reserved)

    def _check_options(self, entry: RegistryEntry[Any], kind: str) -> None:
        """Refuse `entry` (a part of `kind`) if one of its options clashes with a reserved
        flag or with an option of an entry of this registry (when `kind` is another kind)."""
        for flag in entry.flags():
            owner = self._reserved.get(flag)
            if owner is None and kind != self.kind:
                owner = next((f"{self.kind} {other.name!r}" for other in self._entries.values()
                              if flag in other.flags()), None)
            if owner is not None:
                raise OptionClashError(
                    f"{kind} {entry.name!r} ({entry.source}) declares option {flag}, which "
                    f"{owner} already uses: rename the option in {entry.name!r}")

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
        self._check_options(entry, self.kind)
        for rival in self._rivals:
            rival._check_options(entry, self.kind)
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
