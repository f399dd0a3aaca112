"""The expert contract shared by every backend (SceneSim, diffusers, third parties).

An expert turns a command (text) and optionally an image into an image. Construction is cheap:
nothing heavy happens until the first call (weights load on first use).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from poser_env.core.feedback import Detection
from poser_env.core.image import check_image

__all__ = ["EXPERT_KINDS", "Expert", "ExpertError", "ExpertKind", "ExpertOutput", "check_image", "validate_call"]

ExpertKind = Literal["text-to-image", "image-to-image"]
EXPERT_KINDS: tuple[str, ...] = ("text-to-image", "image-to-image")


class ExpertError(RuntimeError):
    """An expert could not produce an image (bad input, model failure, out of memory...)."""


@dataclass(frozen=True)
class ExpertOutput:
    """What one expert call returns.

    Attributes:
        image: HxWx3 uint8 RGB array (values 0..255).
        seed: The seed the call used.
        elapsed: Wall time of the call in seconds.
        metadata: Free-form facts about the call (expert name, parameters, warnings).
        state: World state beside the pixels, opaque to env and critic. SceneSim puts its ground-truth
            scene graph here for edit experts and the judge; real backends leave it None.
    """

    image: np.ndarray
    seed: int
    elapsed: float = 0.0
    metadata: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None




def validate_call(expert: Expert, command: Any, image: Any, seed: Any) -> int:
    """Check the arguments of a call of ``expert`` (what :meth:`Expert.__call__` checks); returns ``int(seed)``.

    Also for code that runs an expert's backend without ``__call__`` (batched requests).

    Args:
        expert: The expert to be called (its ``kind`` and ``name`` are used).
        command: Must be a non-empty string.
        image: HxWx3 uint8 array (see :func:`check_image`), or None for a text-to-image expert.
        seed: An int (or numpy integer, not bool) in [0, 2**63).

    Raises:
        ValueError: a bad argument (the message names it and the fix).
    """
    if not isinstance(command, str) or not command.strip():
        raise ValueError(f"command={command!r} must be a non-empty string such as 'generate: a red cup'.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed={seed!r} must be an int in [0, 2**63); draw one with np_random.integers(2**31).")
    if image is not None:
        check_image(image)
    elif expert.kind == "image-to-image":
        raise ValueError(f"expert {expert.name!r} edits an image but image=None; run a text-to-image expert first.")
    return int(seed)


class Expert(abc.ABC):
    """Base class of every expert.

    Subclasses set ``name``, ``kind``, ``ops`` and ``cost`` and implement :meth:`_generate`.

    Attributes:
        name: Registry name, e.g. ``"sim/sketch"`` or ``"sd-turbo"``.
        kind: ``"text-to-image"`` (ignores the input image) or ``"image-to-image"`` (edits it).
        ops: Operations it supports (subset of :data:`OPS`).
        cost: Relative cost of one call (SceneSim: arbitrary units, the cheapest T2I is about 1;
            real models: estimated GPU seconds). Non-negative.
    """

    name: str = "expert"
    kind: ExpertKind = "text-to-image"
    ops: frozenset[str] = frozenset({"generate"})
    cost: float = 1.0

    def __call__(
        self,
        command: str,
        image: np.ndarray | None = None,
        *,
        seed: int,
        state: Any = None,
        detections: Sequence[Detection] = (),
        **params: Any,
    ) -> ExpertOutput:
        """Run the command.

        Args:
            command: Command text, ``"<op>: <text>"`` (see :mod:`poser_env.core.commands`) or a plain prompt.
            image: The current canvas (HxWx3 uint8) for image-to-image experts; None for text-to-image.
            seed: Seed of all randomness of this call, 0 <= seed < 2**63.
            state: The previous output's ``state`` (SceneSim's scene graph), if any.
            detections: The critic's detections on ``image`` (editing experts may use them as masks).
            **params: Backend-specific overrides (steps, guidance, ...).

        Raises:
            ValueError: a bad argument (the message names it and the fix).
            ExpertError: the expert failed.
        """
        seed = validate_call(self, command, image, seed)
        return self._generate(command, image, seed=seed, state=state, detections=detections, **params)

    @abc.abstractmethod
    def _generate(
        self,
        command: str,
        image: np.ndarray | None,
        *,
        seed: int,
        state: Any,
        detections: Sequence[Detection],
        **params: Any,
    ) -> ExpertOutput:
        """Backend work; arguments already validated by :meth:`__call__`."""

    def supports(self, op: str) -> bool:
        """Whether this expert can execute commands of operation ``op``."""
        return op in self.ops

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, cost={self.cost})"
