"""The original paper's MDP, kept for comparison with :class:`poser_env.env.ImagePoserEnv`."""

from __future__ import annotations

from typing import Any, SupportsFloat

import numpy as np
from gymnasium import spaces

from poser_env.config import PAPER, EnvConfigError, check_number
from poser_env.core.feedback import Feedback
from poser_env.env import ImagePoserEnv

__all__ = ["ImagePoserPaperEnv"]


class ImagePoserPaperEnv(ImagePoserEnv):
    """The paper's formulation: text-only state, one action per expert, no STOP, 6-step episodes.

    ## Description
    The same world (SceneSim experts, pixel critic, rule decomposer) as ``ImagePoser-v0``, with the MDP of the
    paper this project started from, for ablations (the DQN baseline runs here).

    ## Action Space
    ``Discrete(n_experts)``: run expert ``i`` on the current command (see ``ImagePoser-v0`` for what each kind of
    expert runs). There is no STOP. An action that makes no sense now (an edit on an empty canvas, an op the
    expert does not support) is a no-op with reward ``-invalid_action_penalty`` and ``info["invalid_action"]``.

    ## Observation Space
    ``Box(-1, 1, (2 * D,), float32)``: the prompt embedding followed by the current command's embedding
    (D = 384). No feedback, progress or history: the paper's state is text only.

    ## Rewards
    Dense critic reward with a step penalty: ``r_t = alignment(fb_t) - step_penalty`` (alignment 0 before the
    first image), minus ``invalid_action_penalty`` for invalid actions, minus ``cost_weight * cost`` (0 by
    default, as in the paper).

    ## Starting State
    As ``ImagePoser-v0`` (GenEval-style prompts by default).

    ## Episode End
    Terminated when no command is left (each is popped when it holds or dropped after ``max_attempts`` = 3
    failed attempts) or every assertion holds; truncated after ``max_steps`` = 6 steps (the registered
    ``max_episode_steps``; one budget, as in ``ImagePoser-v0``).

    ## Arguments
    As ``ImagePoser-v0`` plus ``step_penalty`` (>= 0, default 0.05); defaults from
    :data:`poser_env.config.PAPER`: ``max_steps=6``, ``max_attempts=3``, ``cost_weight=0``; ``feedback_in_obs`` and
    ``thumbnail`` are False (passing True is an error: it was silently ignored before).

    ## Version History
    - v0: initial release.
    """

    def __init__(self, *, step_penalty: float = 0.05, **kwargs: Any) -> None:
        self.step_penalty = check_number("step_penalty", step_penalty, lo=0)
        kwargs.setdefault("max_steps", PAPER.max_steps)
        kwargs.setdefault("max_attempts", PAPER.max_attempts)
        kwargs.setdefault("cost_weight", PAPER.cost_weight)
        if kwargs.get("feedback_in_obs", False) is not False:
            raise EnvConfigError(
                f"feedback_in_obs={kwargs['feedback_in_obs']!r}: the paper's state is text only; leave it out "
                "(or use poser_env/ImagePoser-v0 for feedback in the observation)."
            )
        if kwargs.get("thumbnail", False) is not False:
            raise EnvConfigError(
                f"thumbnail={kwargs['thumbnail']!r}: the paper's state is text only; leave it out (or use "
                "poser_env/ImagePoser-v0 with thumbnail=True)."
            )
        kwargs["feedback_in_obs"] = PAPER.feedback_in_obs
        kwargs["thumbnail"] = False
        super().__init__(**kwargs)
        self.action_space = spaces.Discrete(self.n_experts)  # type: ignore[assignment]

    def _make_observation_space(self) -> spaces.Dict:  # type: ignore[override]
        d = self.encoder.dim
        return spaces.Box(-1.0, 1.0, (2 * d,), np.float32)  # type: ignore[return-value]

    def _obs(self) -> Any:
        full = super()._obs()
        return np.concatenate([full["prompt"], full["command"]]).astype(np.float32)

    def action_masks(self) -> np.ndarray:
        """Boolean array of shape (n_experts,): True where the expert can act on the current command."""
        return super().action_masks()[: self.n_experts]

    def _check_action(self, action: Any) -> int:
        a = int(np.asarray(action).item()) if np.asarray(action).size == 1 else -1
        if not 0 <= a < self.n_experts:
            raise ValueError(
                f"action={action!r} is outside Discrete({self.n_experts}); pass an int in [0, {self.n_experts - 1}] "
                "(one action per expert; the paper's MDP has no STOP)."
            )
        return a

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = super().step(action)
        fb: Feedback | None = self._episode["feedback"]
        terms = info["reward_terms"]
        reward = (fb.alignment if fb is not None else 0.0) - self.step_penalty + terms["cost"] + terms["penalty"]
        info["reward_terms"] = {"alignment": fb.alignment if fb is not None else 0.0, "step_penalty": -self.step_penalty,
                                "cost": terms["cost"], "penalty": terms["penalty"]}
        if not terminated and self._current() is None:
            terminated = True
            truncated = False
            self._end_episode(info, "terminated")
        return obs, float(reward), terminated, truncated, info
