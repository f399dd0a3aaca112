"""The public, read-only state of an image-poser episode (``env.unwrapped.state``).

Baselines, benchmarks and examples read the episode through :class:`EpisodeState` only, never through the
env's private attributes::

    from poser_env.env import unwrap
    u = unwrap(env)               # the ImagePoserEnv under the wrappers, typed
    s = u.state                   # a snapshot: frozen, arrays read-only
    if s.canvas is None or s.command is None: ...
    s.plan.dropped, s.feedback.alignment, s.judge["pass"], s.steps_left
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from poser_env.core.commands import Command
from poser_env.core.expert import ExpertOutput
from poser_env.core.feedback import Feedback
from poser_env.core.spec import Spec

__all__ = ["EpisodeState"]


@dataclass(frozen=True)
class EpisodeState:
    """A snapshot of the current episode (taken when ``env.unwrapped.state`` is read; it does not change later).

    Attributes:
        prompt: The prompt text ("" for a Spec built without one).
        spec: The spec the agent works from (parsed from the prompt by the decomposer).
        truth: The ground-truth spec the judge scores against (the same as ``spec`` for prompt strings).
        plan: The decomposer's current plan (:class:`poser_env.planner.Plan` for the shipped decomposers):
            ``plan.pending`` (current command first), ``plan.done``, ``plan.dropped``, ``plan.given_up``.
        command: The current command (``plan.pending[0]``), or None when the plan is finished.
        attempts: Failed attempts on the current command (0..max_attempts; 0 with no command).
        feedback: The critic's feedback on the canvas, or None before the first judged image.
        judge: The ground-truth judge's result on the canvas ``{"pass", "alignment", "verdicts"}`` (plus
            ``"error"`` if the judge failed), or None (no judge, or no image yet). For evaluation only.
        output: The last expert output kept on the canvas, or None before the first image.
        canvas: The current image (HxWx3 uint8, read-only), or None before the first image.
        step: Steps taken this episode (0 after reset).
        max_steps: The step budget (the ``TimeLimit``'s ``max_episode_steps`` when made by ``gym.make``).
        calls: Calls per expert this episode (read-only int64 array, action order).
        cost: Summed cost of those calls (SceneSim units), >= 0.
        last_action: The last valid action taken (``n_experts`` is STOP), or None before the first.
        last_expert / last_command: Name and command text of the last expert call ("" before the first).
        history: One read-only record per expert call (keys ``step``, ``expert``, ``command`` and either
            ``feedback``, ``alignment``, ``verdicts``, ``image`` or ``error`` / ``critic_error``).
        ended: True once a step returned ``terminated`` or ``truncated`` (``step`` then raises until ``reset``).
    """

    prompt: str
    spec: Spec
    truth: Spec
    plan: Any
    command: Command | None
    attempts: int
    feedback: Feedback | None
    judge: Mapping[str, Any] | None
    output: ExpertOutput | None
    canvas: np.ndarray | None
    step: int
    max_steps: int
    calls: np.ndarray
    cost: float
    last_action: int | None
    last_expert: str
    last_command: str
    history: tuple[Mapping[str, Any], ...]
    ended: bool

    @property
    def steps_left(self) -> int:
        """Steps left in the budget (``max_steps - step``, >= 0)."""
        return max(0, self.max_steps - self.step)

    @property
    def n_calls(self) -> int:
        """Expert calls this episode."""
        return int(self.calls.sum())
