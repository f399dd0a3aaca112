"""Name -> component registries, loaded from TOML files and Python entry points.

An entry is ``name -> {target = "module:Class", kwargs = {...}, card = {...}}``. ``build(name)`` imports
the target lazily and calls it with the kwargs (overrides win). Third parties add entries through the
entry-point group given to the registry (e.g. ``image_poser.experts``), each point resolving to a
zero-argument callable that returns a mapping of entries. A miss answers with "did you mean ...".
"""

from __future__ import annotations

import difflib
import importlib
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "RegistryEntry", "RegistryError", "import_target"]

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name or a malformed registry entry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def import_target(target: str) -> Any:
    """Import ``"package.module:attr"``; raise RegistryError naming the target and the fix."""
    if not isinstance(target, str) or ":" not in target:
        raise RegistryError(f"target={target!r} must look like 'package.module:ClassName'.")
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise RegistryError(f"target={target!r}: cannot import {mod_name!r} ({exc}).") from exc
    try:
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise RegistryError(f"target={target!r}: module {mod_name!r} has no attribute {attr!r}.") from exc
    return obj


@dataclass(frozen=True)
class RegistryEntry:
    """One registered component.

    Attributes:
        name: Registry name.
        target: ``"module:Class"`` (or factory) to call.
        kwargs: Keyword arguments for the call.
        card: Descriptive facts (model card) not passed to the call.
        source: Where the entry came from (a file path, ``"entry-point:<name>"`` or ``"code"``).
    """

    name: str
    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    card: Mapping[str, Any] = field(default_factory=dict)
    source: str = "code"


class Registry(Generic[T]):
    """A registry of components of one kind (experts, critics, ...)."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, RegistryEntry] = {}
        self._entry_points_loaded = False

    # ------------------------------------------------------------------ adding
    def register(
        self,
        name: str,
        target: str,
        kwargs: Mapping[str, Any] | None = None,
        card: Mapping[str, Any] | None = None,
        *,
        source: str = "code",
        override: bool = False,
    ) -> RegistryEntry:
        """Add an entry; a taken name raises unless ``override=True``."""
        if not isinstance(name, str) or not name.strip():
            raise RegistryError(f"{self.kind} name={name!r} must be a non-empty string.")
        if name in self._entries and not override:
            raise RegistryError(
                f"{self.kind} name={name!r} is already registered (from {self._entries[name].source}); "
                "pass override=True to replace it."
            )
        entry = RegistryEntry(name, target, dict(kwargs or {}), dict(card or {}), source)
        self._entries[name] = entry
        return entry

    def load_toml(self, path: str | Path, *, override: bool = False) -> list[str]:
        """Add every ``[name]`` table of a TOML file (keys ``target``, ``kwargs``, ``card``); returns the names.

        Raises:
            RegistryError: the file is missing or an entry has no ``target``.
        """
        p = Path(path)
        if not p.is_file():
            raise RegistryError(f"registry file path={str(p)!r} does not exist; pass the path of a TOML file.")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"registry file {str(p)!r} is not valid TOML: {exc}") from exc
        names: list[str] = []
        tables = data.get(self.kind, data) if isinstance(data.get(self.kind), dict) else data
        for name, table in tables.items():
            if not isinstance(table, dict) or name.startswith("_"):
                continue
            if "target" not in table:
                raise RegistryError(
                    f"registry file {str(p)!r}: entry [{name}] has no 'target'; add target = 'module:Class'."
                )
            self.register(name, table["target"], table.get("kwargs", {}), table.get("card", {}),
                          source=str(p), override=override)
            names.append(name)
        return names

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            entries = ep.load()()
            for name, table in dict(entries).items():
                if name not in self._entries:
                    self.register(name, table["target"], table.get("kwargs", {}), table.get("card", {}),
                                  source=f"entry-point:{ep.name}")

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._load_entry_points()
        return list(self._entries)

    def entry(self, name: str) -> RegistryEntry:
        """The entry for ``name``; a miss raises RegistryError with close matches."""
        self._load_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} name={name!r}.{hint} Known: {sorted(self._entries)}."
            )
        return self._entries[name]

    def build(self, name: str, **overrides: Any) -> T:
        """Import the entry's target and call it with its kwargs updated by ``overrides``."""
        e = self.entry(name)
        factory = import_target(e.target)
        kwargs = {**e.kwargs, **overrides}
        return factory(**kwargs)  # type: ignore[no-any-return]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
