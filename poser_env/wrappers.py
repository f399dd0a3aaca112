"""Wrappers: record episodes as a contact sheet PNG and an animated GIF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from poser_env.rendering import contact_sheet, save_gif

__all__ = ["RecordEpisode"]


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
