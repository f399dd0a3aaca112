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


class RegistryError(KeyError, ValueError):
    """An unknown name or a malformed registry entry (a KeyError for lookups, a ValueError for bad arguments)."""

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
        target: ``"module:Class"`` to call (a subclass of the registry's ``base`` when it has one).
        kwargs: Keyword arguments for the call.
        card: Descriptive facts (model card) not passed to the call.
        source: Where the entry came from (a file path, ``"entry-point:<name>"`` or ``"code"``).
    """

    name: str
    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    card: Mapping[str, Any] = field(default_factory=dict)
    source: str = "code"


def _check_table(name: Any, table: Any, where: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(target, kwargs, card) of one registry table; RegistryError naming ``where``, the entry and the fix."""
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"{where}: entry name={name!r} must be a non-empty string.")
    if not isinstance(table, Mapping):
        raise RegistryError(
            f"{where}: entry [{name}] is a {type(table).__name__}, not a table; write "
            "{target = 'module:Class', kwargs = {...}}."
        )
    if "target" not in table:
        raise RegistryError(f"{where}: entry [{name}] has no 'target'; add target = 'module:Class'.")
    target = table["target"]
    if not isinstance(target, str) or ":" not in target:
        raise RegistryError(f"{where}: entry [{name}] target={target!r} must look like 'package.module:ClassName'.")
    unknown = sorted(set(table) - {"target", "kwargs", "card"})
    if unknown:
        raise RegistryError(
            f"{where}: entry [{name}] has unknown key(s) {unknown}; an entry holds only target, kwargs and card."
        )
    for key in ("kwargs", "card"):
        if not isinstance(table.get(key, {}), Mapping):
            raise RegistryError(
                f"{where}: entry [{name}] {key}={table[key]!r} must be a table (e.g. {key} = {{ cost = 1.0 }})."
            )
    return target, dict(table.get("kwargs", {})), dict(table.get("card", {}))


class Registry(Generic[T]):
    """A registry of components of one kind (experts, critics, ...).

    Args:
        kind: What the entries are, for messages (``"expert"``, ``"critic"``, ...).
        entry_point_group: Python entry-point group third parties register in (e.g. ``"image_poser.critics"``).
            Each entry point resolves to a zero-argument callable returning ``{name: {target, kwargs, card}}``.
            A plugin that fails to import or returns a malformed table raises :class:`RegistryError` naming the
            plugin and its entry point at the first read of the registry; nothing of a failing load is
            registered, and nothing is skipped silently (a plugin name clash is an error too).
        base: When given, every target must resolve to a subclass of ``base`` (checked at build time, when the
            target is imported): a registry never calls an arbitrary callable.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None, *, base: type | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.base = base
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
        _check_table(name, {"target": target, "kwargs": kwargs or {}, "card": card or {}}, f"{self.kind} registry")
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

        Every entry is checked before any is added (a bad file adds nothing). Top-level plain values (e.g.
        ``card_version = 1``) and tables whose name starts with ``_`` are not entries.

        Raises:
            RegistryError: the file is missing or not TOML, it holds no entry, an entry has no ``target`` or a
                malformed one, or a name is taken (unless ``override``).
        """
        p = Path(path)
        if not p.is_file():
            raise RegistryError(f"registry file path={str(p)!r} does not exist; pass the path of a TOML file.")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"registry file {str(p)!r} is not valid TOML: {exc}") from exc
        tables = data.get(self.kind, data) if isinstance(data.get(self.kind), dict) else data
        checked: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
        for name, table in tables.items():
            if not isinstance(table, dict) or name.startswith("_"):
                continue
            checked.append((name, *_check_table(name, table, f"registry file {str(p)!r}")))
        if not checked:
            raise RegistryError(
                f"registry file {str(p)!r} holds no {self.kind} entry; add a table like "
                "[my-name] with target = 'module:Class'."
            )
        if not override:
            taken = [n for n, *_ in checked if n in self._entries]
            if taken:
                raise RegistryError(
                    f"registry file {str(p)!r}: {self.kind} name(s) {taken} are already registered; rename them or "
                    "pass override=True."
                )
        for name, target, kwargs, card in checked:
            self.register(name, target, kwargs, card, source=str(p), override=override)
        return [n for n, *_ in checked]

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        group = self.entry_point_group
        staged: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {}
        for ep in sorted(metadata.entry_points(group=group), key=lambda e: (e.name, e.value)):
            where = f"plugin {ep.name!r} (entry point {ep.value!r} in group {group!r})"
            try:
                entries = ep.load()()
            except Exception as exc:  # any failure of third-party code is reported with the plugin's name
                raise RegistryError(
                    f"{where} failed to load: {type(exc).__name__}: {exc}. Fix or uninstall the plugin "
                    f"(`pip uninstall <its distribution>`); nothing of it was registered."
                ) from exc
            if not isinstance(entries, Mapping):
                raise RegistryError(
                    f"{where} returned a {type(entries).__name__}; it must return a mapping "
                    "{name: {'target': 'module:Class', 'kwargs': {...}}}."
                )
            for name, table in entries.items():
                target, kwargs, card = _check_table(name, table, where)
                clash = staged.get(name, (None, None, None, None))[3] or (
                    self._entries[name].source if name in self._entries else None)
                if clash is not None:
                    raise RegistryError(
                        f"{where} registers {self.kind} name={name!r}, already registered by {clash}; "
                        "rename one of them."
                    )
                staged[name] = (target, kwargs, card, f"entry-point:{ep.name}")
        for name, (target, kwargs, card, source) in staged.items():
            self.register(name, target, kwargs, card, source=source)
        self._entry_points_loaded = True

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._load_entry_points()
        return list(self._entries)

    def entry(self, name: str) -> RegistryEntry:
        """The entry for ``name``; a miss raises RegistryError with close matches."""
        self._load_entry_points()
        if not isinstance(name, str) or name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5) if isinstance(
                name, str) else []
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} name={name!r}.{hint} Known: {sorted(self._entries)}."
            )
        return self._entries[name]

    def resolve(self, name: str) -> Any:
        """Import the entry's target; with a ``base``, check that it is a subclass of it.

        Raises:
            RegistryError: unknown name, import failure, or a target that is not a ``base`` subclass.
        """
        e = self.entry(name)
        obj = import_target(e.target)
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            what = f"class {obj.__name__}" if isinstance(obj, type) else f"{type(obj).__name__} {obj!r}"
            raise RegistryError(
                f"{self.kind} name={name!r} (from {e.source}): target={e.target!r} is the {what}, not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}; point target at such a class."
            )
        return obj

    def build(self, name: str, *args: Any, **overrides: Any) -> T:
        """Import the entry's target and call it with ``args`` and its kwargs updated by ``overrides``."""
        factory = self.resolve(name)
        kwargs = {**self.entry(name).kwargs, **overrides}
        return factory(*args, **kwargs)  # type: ignore[no-any-return]

    def split(self, value: Any, *, argument_name: str | None = None) -> tuple[str, str | None]:
        """``(name, argument)`` of a configuration string: ``"scene"`` -> ``("scene", None)``,
        ``"vlm:/models/llava"`` -> ``("vlm", "/models/llava")``.

        An entry takes an argument when its card has ``argument`` (what its constructor's first parameter is, e.g.
        ``"model"``) and then requires one; ``card["placeholder"]`` (default ``"path-or-id"``) names it in the
        accepted forms and ``card["example"]`` is shown in the error.

        Raises:
            RegistryError: not a string, an unknown name (with "did you mean ..."), a missing or unexpected
                argument; the message names ``argument_name`` (default: the registry's kind), the value and the fix.
        """
        arg_name = argument_name or f"{self.kind} name"
        if not isinstance(value, str) or not value.strip():
            raise RegistryError(
                f"{arg_name}={value!r} must be a string naming a {self.kind} (non-empty); known: {self.forms()}."
            )
        head, sep, arg = value.strip().partition(":")
        self._load_entry_points()
        if head not in self._entries:
            close = difflib.get_close_matches(head, list(self._entries), n=3, cutoff=0.5)
            hint = ""
            if close:
                hint = " Did you mean " + ", ".join(repr(self._form(c, arg.strip() or None)) for c in close) + "?"
            head_msg = (f"{argument_name}={value!r} is not a registered {self.kind}." if argument_name
                        else f"unknown {self.kind} name={value!r}.")
            raise RegistryError(f"{head_msg}{hint} Known: {self.forms()}.")
        card = self._entries[head].card
        takes = card.get("argument")
        arg = arg.strip()
        if takes and not arg:
            raise RegistryError(
                f"{arg_name}={value!r} names no {takes}; write '{head}:<{card.get('placeholder', 'path-or-id')}>'"
                + (f", e.g. {card['example']!r}." if card.get("example") else ".")
            )
        if not takes and sep:
            raise RegistryError(f"{arg_name}={value!r}: {self.kind} {head!r} takes no argument after ':'; write {head!r}.")
        return head, (arg or None)

    def _form(self, name: str, arg: str | None = None) -> str:
        takes = self._entries[name].card.get("argument")
        placeholder = self._entries[name].card.get("placeholder", "path-or-id")
        return f"{name}:{arg or '<' + str(placeholder) + '>'}" if takes else name

    def forms(self) -> list[str]:
        """Every accepted configuration form, e.g. ``['scene', 'vlm:<model>', 'clip:<model>']``."""
        self._load_entry_points()
        return [self._form(n) for n in self._entries]

    def make(self, value: str, *, argument_name: str | None = None, **overrides: Any) -> T:
        """Build from a configuration string (see :meth:`split`): the argument after ``:`` is passed as the
        first positional argument, ``overrides`` update the entry's kwargs."""
        name, arg = self.split(value, argument_name=argument_name)
        return self.build(name, *(() if arg is None else (arg,)), **overrides)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
