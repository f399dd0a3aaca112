"""Errors of policy files (raised by :mod:`agents.policy_io` and :func:`agents.algos.load_model`)."""

from __future__ import annotations

__all__ = ["PolicyFileError", "PolicyMismatchError", "UnsafePolicyError"]


class PolicyFileError(ValueError):
    """A policy or checkpoint file that is missing, unreadable, corrupt or not of this format."""


class UnsafePolicyError(PolicyFileError):
    """A pickle-based SB3 ``.zip`` loaded without ``trust_pickle=True`` (``--trust-pickle``)."""


class PolicyMismatchError(PolicyFileError):
    """A policy loaded for an env it was not trained on (env id, spaces, text encoder or experts differ)."""
