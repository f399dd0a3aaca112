"""Optional dependencies: import them or fail with the exact ``pip install`` to run."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: extra name -> the pip command that installs it
EXTRAS: dict[str, str] = {
    "rl": 'pip install "image-poser[rl]" torch==2.13.0',
    "diffusers": 'pip install "image-poser[diffusers]"',
    "dev": 'pip install "image-poser[dev]"',
}


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the pip command."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    Args:
        module: Module to import, e.g. ``"stable_baselines3"``.
        extra: The image-poser extra that provides it (a key of :data:`EXTRAS`).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        cmd = EXTRAS.get(extra, f'pip install "image-poser[{extra}]"')
        raise MissingExtraError(
            f"{module!r} is not installed (needed for the {extra!r} extra). Install it with: {cmd}"
        ) from exc
