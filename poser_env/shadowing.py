"""Detect a user's file that shadows one of image-poser's top-level packages.

image-poser installs four top-level packages: ``poser_env``, ``critic``, ``experts`` and ``agents``. Python puts
the script's folder (or, for ``python -c`` / ``python -m`` / a notebook, the current directory) first on
``sys.path``, so a ``critic.py`` or ``experts.py`` there is imported instead of ours, and the env fails deep
inside with ``No module named 'critic.scene'; 'critic' is not a package``. ``import poser_env`` checks this
first and raises :class:`PackageShadowedError` naming the file and the fix.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

__all__ = ["PackageShadowedError", "check_shadowing", "shadowed_packages"]

#: Our top-level packages the env imports (shadowing them breaks the env).
REQUIRED: tuple[str, ...] = ("critic", "experts")
#: Our top-level package of agents (training, evaluation, CLI): shadowing it breaks only ``agents.*`` imports.
OPTIONAL: tuple[str, ...] = ("agents",)
_ROOT = Path(__file__).resolve().parents[1]


class PackageShadowedError(ImportError):
    """A file or folder of the user's is imported instead of one of image-poser's packages."""


def _origin(name: str) -> str | None:
    mod = sys.modules.get(name)
    if mod is not None:
        return getattr(mod, "__file__", None)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return None if spec is None else spec.origin


def shadowed_packages(names: tuple[str, ...] = REQUIRED + OPTIONAL) -> dict[str, str]:
    """Package name -> path of the module imported instead of ours, for each of ``names`` that is shadowed."""
    out: dict[str, str] = {}
    for name in names:
        origin = _origin(name)
        if origin is None:  # not found, or a namespace folder (ours, a regular package, wins over those)
            continue
        if Path(origin).resolve() != _ROOT / name / "__init__.py":
            out[name] = origin
    return out


def _message(name: str, origin: str) -> str:
    where = Path(origin)
    stem = where.parent.name if where.name == "__init__.py" else where.stem
    return (
        f"{origin} shadows image-poser's {name!r} package (Python finds it first on sys.path: the script's folder "
        f"or the current directory). Rename it (e.g. to 'my_{stem}'), or run from another folder, or run Python "
        "with -P so that folder is not put first on sys.path."
    )


def check_shadowing() -> None:
    """Raise :class:`PackageShadowedError` if ``critic`` or ``experts`` is shadowed; warn if ``agents`` is (the
    env works without it, but ``from agents... import`` will fail)."""
    found = shadowed_packages()
    for name in REQUIRED:
        if name in found:
            raise PackageShadowedError(_message(name, found[name]))
    for name in OPTIONAL:
        if name in found:
            warnings.warn(_message(name, found[name]) + " The env works; image-poser's agents cannot be imported.",
                          UserWarning, stacklevel=3)
