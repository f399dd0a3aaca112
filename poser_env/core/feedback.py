"""Structured feedback: what a critic says about an image against a spec."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from poser_env.core.image import check_image
from poser_env.core.spec import ASSERTION_KINDS, Spec

__all__ = ["Critic", "CriticError", "Detection", "Feedback", "Holds", "Verdict"]

Holds = Literal["yes", "no", "unknown"]


class CriticError(RuntimeError):
    """A critic could not judge an image (model failure, bad input)."""


@dataclass(frozen=True)
class Verdict:
    """The critic's answer for one assertion.

    Attributes:
        assertion_id: The :class:`poser_env.core.spec.Assertion` id.
        holds: ``"yes"``, ``"no"`` or ``"unknown"`` (could not tell: never an invented answer).
        confidence: Probability in [0, 1] that the assertion holds (0.5 for unknown).
        reason: Short human-readable reason, e.g. ``"found 2 of 3 clocks"``.
        kind: The assertion kind (see :data:`poser_env.core.spec.ASSERTION_KINDS`).
    """

    assertion_id: str
    holds: Holds
    confidence: float
    reason: str = ""
    kind: str = ""

    def __post_init__(self) -> None:
        if self.holds not in ("yes", "no", "unknown"):
            raise ValueError(f"Verdict holds={self.holds!r} must be 'yes', 'no' or 'unknown'.")
        if not 0.0 <= float(self.confidence) <= 1.0 or self.confidence != self.confidence:
            raise ValueError(f"Verdict confidence={self.confidence!r} must be in [0, 1].")
        if self.kind and self.kind not in ASSERTION_KINDS:
            raise ValueError(f"Verdict kind={self.kind!r} must be one of {ASSERTION_KINDS}.")

    @property
    def ok(self) -> bool:
        """True when the assertion holds."""
        return self.holds == "yes"


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Attributes:
        label: Noun it was matched to (singular).
        box: (x1, y1, x2, y2) in pixels, y down, x2 > x1, y2 > y1.
        score: Detector confidence in [0, 1].
        color: Named colour or None when not classified.
        pattern: Named pattern or None.
        size: Named size or None.
    """

    label: str
    box: tuple[float, float, float, float]
    score: float = 1.0
    color: str | None = None
    pattern: str | None = None
    size: str | None = None

    def mask(self, height: int, width: int) -> np.ndarray:
        """Boolean HxW mask of the box (for inpainting experts)."""
        m = np.zeros((height, width), dtype=bool)
        x1, y1, x2, y2 = (round(v) for v in self.box)
        m[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = True
        return m


@dataclass(frozen=True)
class Feedback:
    """What a critic returns for one image.

    Attributes:
        verdicts: One per assertion of the spec, in the spec's order.
        alignment: How much of the prompt holds, in [0, 1].
        fidelity: Image quality (absence of artifacts), in [0, 1].
        aesthetics: Composition quality, in [0, 1].
        text: Human-readable summary, e.g. ``"found 2 of 3 clocks; the dog is green, expected blue"``.
        detections: Objects found (usable as edit masks).
        background: Background the critic recognised, or None.
        style: Style the critic recognised, or None.
        metadata: Critic-specific extras (timings, raw scores).
    """

    verdicts: tuple[Verdict, ...]
    alignment: float
    fidelity: float = 1.0
    aesthetics: float = 1.0
    text: str = ""
    detections: tuple[Detection, ...] = ()
    background: str | None = None
    style: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdicts", tuple(self.verdicts))
        object.__setattr__(self, "detections", tuple(self.detections))
        for name in ("alignment", "fidelity", "aesthetics"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"Feedback {name}={v!r} must be in [0, 1].")

    def verdict(self, assertion_id: str) -> Verdict:
        """The verdict for an assertion id (KeyError naming the known ids if absent)."""
        for v in self.verdicts:
            if v.assertion_id == assertion_id:
                return v
        raise KeyError(f"assertion_id={assertion_id!r} has no verdict; known: {[v.assertion_id for v in self.verdicts]}")

    @property
    def all_hold(self) -> bool:
        """True when every verdict is ``"yes"`` (and there is at least one)."""
        return bool(self.verdicts) and all(v.ok for v in self.verdicts)

    @property
    def satisfied(self) -> float:
        """Fraction of verdicts that hold, in [0, 1] (1.0 for an empty spec)."""
        if not self.verdicts:
            return 1.0
        return sum(v.ok for v in self.verdicts) / len(self.verdicts)

    def satisfied_by_kind(self) -> dict[str, float]:
        """Fraction of verdicts that hold per assertion kind (kinds absent from the spec are left out)."""
        tot: dict[str, list[int]] = {}
        for v in self.verdicts:
            tot.setdefault(v.kind or "unknown", []).append(int(v.ok))
        return {k: sum(x) / len(x) for k, x in tot.items()}

    @staticmethod
    def alignment_of(verdicts: Sequence[Verdict]) -> float:
        """Mean confidence over verdicts (the default alignment), in [0, 1]."""
        if not verdicts:
            return 1.0
        return float(np.clip(np.mean([v.confidence for v in verdicts]), 0.0, 1.0))


class Critic(abc.ABC):
    """Base class of critics: ``critic(image, spec) -> Feedback``. Critics never see world state."""

    name: str = "critic"

    def __call__(self, image: np.ndarray, spec: Spec) -> Feedback:
        """Judge ``image`` (HxWx3 uint8) against ``spec``.

        Raises:
            ValueError: bad image or spec (named in the message).
            CriticError: the critic failed.
        """
        check_image(image)
        if not isinstance(spec, Spec):
            raise ValueError(f"spec must be a poser_env.core.spec.Spec, got {type(spec).__name__}; parse the prompt first.")
        return self._judge(image, spec)

    @abc.abstractmethod
    def _judge(self, image: np.ndarray, spec: Spec) -> Feedback:
        """Backend work; arguments already validated."""
