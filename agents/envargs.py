"""Typed ``--env-arg key=value`` parsing, checked against the env class's constructor signature.

The env id's entry point (``poser_env.env:ImagePoserEnv`` ...) is inspected, with the constructors of its base
classes when it passes ``**kwargs`` on, and each value is converted to the parameter's annotated type:

- ``bool``: exactly ``true/false``, ``1/0``, ``yes/no`` (any letter case); anything else is an error, so
  ``thumbnail=False`` is False (not the truthy string ``"False"``).
- ``int``: an integer literal (``24``, not ``24.0`` or ``true``); ``float``: a finite number (``0.02``, ``1``,
  ``1e-3``; not ``true``, ``nan`` or ``inf``).
- mappings: a JSON object (``reward_weights={"success": 2.0}``); sequences: a JSON list
  (``experts=["sim/sketch", "sim/add"]``).
- ``None`` where the parameter allows it: ``none`` or ``null``.
- ``str``: the text as given.

Unknown keys get a did-you-mean and the list of valid keys; a key given twice is an error.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import gymnasium as gym

__all__ = ["EnvArgError", "env_parameters", "parse_env_args"]

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_NONE = {"none", "null"}
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class EnvArgError(ValueError):
    """A bad ``--env-arg``: unknown key, wrong type or malformed; the message names the key, value and fix."""


def _check_env_id(env_id: str) -> Any:


    if env_id not in gym.envs.registry:
        ids = sorted(gym.envs.registry)
        close = difflib.get_close_matches(env_id, ids, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        ours = [i for i in ids if i.startswith("poser_env/")]
        raise EnvArgError(f"--env {env_id!r} is not a registered env id.{hint} image-poser's ids: {', '.join(ours)}.")
    return gym.envs.registry[env_id]


@lru_cache(maxsize=32)
def env_parameters(env_id: str) -> dict[str, Any]:
    """Keyword parameters of ``env_id``'s constructor (through ``**kwargs`` to its bases): name -> type hint."""

    spec = _check_env_id(env_id)
    entry = spec.entry_point
    cls = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    params: dict[str, Any] = {}
    klasses = cls.__mro__ if inspect.isclass(cls) else (cls,)
    for klass in klasses:
        init = klass.__dict__.get("__init__") if inspect.isclass(klass) else klass
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # unresolvable annotations: accept any JSON/str value for those parameters
            hints = {}
        more = False
        for p in inspect.signature(init).parameters.values():
            if p.name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                more = True
                continue
            params.setdefault(p.name, hints.get(p.name, Any))
        if not more:
            break
    return params


def _members(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(m for a in typing.get_args(hint) for m in _members(a))
    return (hint,)


def _is(member: Any, *bases: type) -> bool:
    target = typing.get_origin(member) or member
    return inspect.isclass(target) and issubclass(target, bases)


def _kind_names(members: Sequence[Any]) -> list[str]:
    names = []
    for m in members:
        if m is type(None):
            names.append("none")
        elif m is bool:
            names.append("a boolean (true/false, 1/0, yes/no)")
        elif m is int:
            names.append("an integer")
        elif m is float:
            names.append("a finite number")
        elif m is str:
            names.append("a string")
        elif _is(m, Mapping) or _is(m, dict):
            names.append('a JSON object, e.g. {"success": 2.0}')
        elif _is(m, Sequence, list, tuple):
            names.append('a JSON list, e.g. ["sim/sketch"]')
    return names


def convert(key: str, raw: str, hint: Any) -> Any:
    """Convert the text ``raw`` of ``--env-arg key=raw`` to ``hint``'s type (see the module docstring)."""
    members = _members(hint)
    text = raw.strip()
    low = text.lower()
    if Any in members:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return raw
    if type(None) in members and low in _NONE:
        return None
    if text[:1] in "{[" and any(_is(m, Mapping, dict) or (_is(m, Sequence, list, tuple) and m is not str)
                               for m in members if m is not str):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EnvArgError(f"--env-arg {key}={raw!r} is not valid JSON ({exc.msg} at char {exc.pos}).") from exc
        if isinstance(value, dict) and any(_is(m, Mapping, dict) for m in members):
            return value
        if isinstance(value, list) and any(_is(m, Sequence, list, tuple) and m is not str for m in members):
            return value
    if bool in members:
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    if int in members and _INT.match(text):
        return int(text)
    if float in members and _FLOAT.match(text):
        value = float(text)
        if math.isfinite(value):
            return value
    if str in members:
        return raw
    if any(not _is(m, bool, int, float, str, Mapping, dict, Sequence, list, tuple) and m is not type(None)
           for m in members) and not _kind_names(members):
        raise EnvArgError(f"--env-arg {key} takes a Python object and cannot be set from the command line; use the "
                          "Python API.")
    kinds = " or ".join(_kind_names(members))
    example = {"a boolean (true/false, 1/0, yes/no)": "false", "an integer": "24", "a finite number": "0.02"}
    ex = next((v for k, v in example.items() if k in kinds), None)
    raise EnvArgError(f"--env-arg {key}={raw!r} must be {kinds}" + (f", e.g. {key}={ex}." if ex else "."))


def parse_env_args(pairs: Sequence[str] | None, env_id: str) -> dict[str, Any]:
    """``["cost_weight=0", "thumbnail=false"]`` -> ``{"cost_weight": 0.0, "thumbnail": False}`` for ``env_id``.

    Raises:
        EnvArgError: an unregistered env id, a pair without ``=``, an empty, unknown or repeated key, or a value
            that does not fit the parameter's type.
    """
    params = env_parameters(env_id)
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise EnvArgError(f"--env-arg {p!r} must look like key=value, e.g. cost_weight=0.")
        key, raw = p.split("=", 1)
        key = key.strip()
        if not key:
            raise EnvArgError(f"--env-arg {p!r} has no key before '='; e.g. cost_weight=0.")
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise EnvArgError(f"--env-arg {key!r} is not an argument of {env_id}.{hint} Valid: "
                              f"{', '.join(sorted(params))}.")
        if key in out:
            raise EnvArgError(f"--env-arg {key} is given twice ({out[key]!r} and {raw!r}); give it once.")
        out[key] = convert(key, raw, params[key])
    return out

