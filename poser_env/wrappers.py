"""Wrappers: the step budget every registered id gets from ``gym.make``, and episode recording (contact sheet PNG
and animated GIF)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from poser_env.env import EnvConfigError, unwrap
from poser_env.rendering import contact_sheet, save_gif

__all__ = ["RecordEpisode", "StepBudget"]


class StepBudget(gym.Wrapper[Any, Any, Any, Any], gym.utils.RecordConstructorArgs):
    """One step budget for an env made by ``gym.make``: the ``TimeLimit``'s ``max_episode_steps``.

    Every registered id lists this wrapper in its ``additional_wrappers``, so ``gym.make`` puts it right above
    the ``TimeLimit`` it adds. On construction it makes the two budgets one:

    - ``gym.make(id)`` / ``gym.make(id, max_episode_steps=N)``: the env's ``max_steps`` is set to the
      ``TimeLimit``'s N (the env truncates at the same step, and the ``progress`` and ``history`` observations
      count against N).
    - ``gym.make(id, max_steps=M)``: ``max_steps`` is an alias of ``max_episode_steps``: the registered
      ``TimeLimit`` is replaced by ``TimeLimit(M)``. Passing both with different values is an error.
    - ``gym.make(id, max_episode_steps=-1)`` (no ``TimeLimit``): the env keeps its own ``max_steps``.

    It also works around a Gymnasium issue: when the first ``reset()`` raises, ``PassiveEnvChecker`` marks the
    reset as checked without recording its output, and the first ``step()`` after the next good reset fails with
    ``TypeError: cannot unpack non-iterable NoneType object``. After a failed reset the checker is re-armed so
    the next reset is checked (and recorded) again.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        base = unwrap(env)
        limit = env if isinstance(env, gym.wrappers.TimeLimit) else None
        spec = base.spec
        given = spec.kwargs.get("max_steps") if spec is not None else None
        registered = _registered(spec.id) if spec is not None else None
        if registered is not None and given == registered.kwargs.get("max_steps"):
            given = None  # the registration's own kwargs, not the caller's
        n = limit.spec.max_episode_steps if limit is not None and limit.spec is not None else None
        if n is not None and given is not None and given != n:
            if registered is not None and n == registered.max_episode_steps:
                env = gym.wrappers.TimeLimit(limit.env, int(given))  # type: ignore[union-attr]
                n = int(given)
            else:
                raise EnvConfigError(
                    f"max_steps={given!r} and max_episode_steps={n!r} disagree; there is one step budget: pass "
                    f"only max_episode_steps={n} (or only max_steps={given}) to gym.make."
                )
        if n is not None:
            base.set_max_steps(n)
        gym.Wrapper.__init__(self, env)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        try:
            return self.env.reset(seed=seed, options=options)
        except Exception:
            _rearm_reset_checker(self.env)
            raise


def _registered(env_id: str) -> Any:
    """The registered EnvSpec of ``env_id``, or None (an env made from an unregistered EnvSpec)."""
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        return None


def _rearm_reset_checker(env: gym.Env[Any, Any]) -> None:
    """After a failed first reset, make ``PassiveEnvChecker`` check (and record) the next reset again."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.PassiveEnvChecker) and env.checked_reset and not env.checked_step:
            env.checked_reset = False
        env = env.env


class RecordEpisode(gym.Wrapper[dict[str, np.ndarray], int, dict[str, np.ndarray], int]):
    """Save every ``every``-th episode to ``folder`` as ``episode-<k>.png`` (contact sheet of the steps),
    ``episode-<k>.gif`` (rendered frames) and ``episode-<k>.json`` (the trace without pixels).

    The wrapped env must have ``render_mode="rgb_array"``.

    Args:
        env: An image-poser env (possibly wrapped).
        folder: Output folder (created).
        every: Record episodes 0, every, 2*every, ... (>= 1).
        fps: GIF frame rate (frames per second, > 0).
    """

    def __init__(self, env: gym.Env[Any, Any], folder: str | Path, *, every: int = 1, fps: float = 2.0) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"RecordEpisode needs render_mode='rgb_array', got {env.render_mode!r}; "
                'create the env with gym.make(..., render_mode="rgb_array").'
            )
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be an int >= 1.")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.every = every
        self.fps = fps
        self.episode = -1
        self._frames: list[np.ndarray] = []
        self.saved: list[Path] = []

    @property
    def _recording(self) -> bool:
        return self.episode >= 0 and self.episode % self.every == 0

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.episode += 1
        self._frames = []
        if self._recording:
            frame = self.env.render()
            if frame is not None:
                self._frames.append(np.asarray(frame))
        return obs, info

    def step(self, action: int) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._recording:
            frame = self.env.render()
            if frame is not None:
                self._frames.append(np.asarray(frame))
            if terminated or truncated:
                self._save(info)
        return obs, reward, terminated, truncated, info

    def _save(self, info: dict[str, Any]) -> None:
        base = self.folder / f"episode-{self.episode}"
        env = self.env.unwrapped
        trace = getattr(env, "trace", [])
        prompt = info.get("prompt", "")
        contact_sheet(trace, prompt=prompt).save(base.with_suffix(".png"))
        save_gif(self._frames, base.with_suffix(".gif"), fps=self.fps)
        light = [{k: v for k, v in rec.items() if k != "image"} for rec in trace]
        base.with_suffix(".json").write_text(
            json.dumps({"prompt": prompt, "is_success": info.get("is_success"), "steps": light}, indent=1, default=str)
        )
        self.saved += [base.with_suffix(".png"), base.with_suffix(".gif"), base.with_suffix(".json")]
