"""Training callbacks: ``poser/*`` metrics for SB3's logger (hence TensorBoard), learning curves, checkpoints, resume.

:class:`PoserMetricsCallback` reads the env's ``info`` dicts (see ``ImagePoserEnv``'s docstring) at every step,
aggregates them per episode, and at each episode end records rolling means over the last ``window`` episodes to
SB3's logger, which writes them wherever the model logs (stdout, CSV, TensorBoard when ``tensorboard_log`` is set)
at its next dump. Keys (all in [0, 1] unless noted):

- Success: SB3's own ``rollout/success_rate`` is THE success metric (SB3 reads ``info["is_success"]`` at every
  episode end: the judge's pass when the env has a judge, else the critic's; an episode stopped before any image
  counts as a failure). Its denominator is every finished episode in the last ``stats_window_size`` (100 by
  default). The callback does not log a second success number; its learning curve's ``success`` column and
  :meth:`PoserMetricsCallback.means` use the same window (the model's ``stats_window_size`` unless ``window`` is
  given) and the same denominator, so they equal ``rollout/success_rate`` at the same timestep.
- ``poser/judge_alignment``: ground truth (``info["judge"]["alignment"]``), the fraction of the prompt's
  assertions that hold, over the same episodes; an episode that made no image counts 0 (nothing of it holds),
  as in :func:`agents.evaluate.summarize`. Episodes of an env without a judge that made an image are left out.
- ``poser/alignment``: the critic's alignment of the final image (0 when no image was made).
- ``poser/cost`` (the experts' cost units, >= 0), ``poser/calls`` (expert calls, >= 0), ``poser/ep_return`` (reward
  units; Monitor's return when the env is Monitor-wrapped), ``poser/ep_length`` (steps), ``poser/episodes`` (count
  of episodes finished since the callback was created).
- ``poser/invalid_rate``, ``poser/error_rate``, ``poser/critic_error_rate``: fraction of steps.
- ``poser/expert/<name>``: fraction of steps that ran ``<name>`` validly (``STOP`` included); together with
  ``poser/invalid_rate`` they sum to 1.

It also keeps a learning curve (one point every ``curve_interval`` timesteps and one at the end of training) that
:meth:`PoserMetricsCallback.save_curve` writes as JSON or CSV and :func:`load_curve` reads back.

Checkpoints use SB3's ``CheckpointCallback`` (:func:`checkpoint_callback` converts timesteps to its per-call
frequency); :func:`resume_training` continues a checkpoint with ``reset_num_timesteps=False``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.algos import AlgoConfigError, load_model
from agents.atomic import atomic_write_json, atomic_write_text

__all__ = [
    "CURVE_FIELDS",
    "PoserMetricsCallback",
    "checkpoint_callback",
    "latest_checkpoint",
    "load_curve",
    "resume_training",
]

#: Columns of a learning-curve point, in CSV order.
CURVE_FIELDS: tuple[str, ...] = (
    "timesteps", "episodes", "success", "ep_return", "alignment", "judge_alignment", "cost", "calls", "ep_length",
)

_EPISODE_SCALARS: tuple[str, ...] = (
    "success", "judge_alignment", "alignment", "cost", "calls", "ep_return", "ep_length",
    "invalid_rate", "error_rate", "critic_error_rate",
)


class _EpisodeAcc:
    """Per-env accumulator of one running episode."""

    __slots__ = ("critic_errors", "errors", "experts", "invalid", "ret", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.ret = 0.0
        self.invalid = 0
        self.errors = 0
        self.critic_errors = 0
        self.experts: dict[str, int] = {}


class PoserMetricsCallback(BaseCallback):
    """Log ``poser/*`` episode metrics from ``info`` and keep a learning curve (see the module docstring).

    :param window: number of most recent episodes the logged means are over (>= 1; default None: the model's
        ``stats_window_size``, 100 unless set, the window of SB3's ``rollout/success_rate`` and ``ep_rew_mean``).
    :param curve_interval: timesteps between learning-curve points (>= 1, default 1000).
    :param expert_names: expert names to always log under ``poser/expert/<name>`` (0 when unused); names seen in
        ``info["expert"]`` are added as they appear.
    :param verbose: SB3 verbosity (0 silent).
    """

    def __init__(
        self,
        window: int | None = None,
        curve_interval: int = 1000,
        expert_names: Sequence[str] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        for name, value in (("window", window), ("curve_interval", curve_interval)):
            if value is None and name == "window":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an int >= 1.")
        self._window_arg = window
        self.window = window or 100
        self.curve_interval = curve_interval
        self.expert_names: list[str] = list(expert_names or [])
        self.episodes: deque[dict[str, Any]] = deque(maxlen=self.window)
        self.n_episodes = 0
        self.curve: list[dict[str, float]] = []
        self._acc: list[_EpisodeAcc] = []
        self._next_curve_point = curve_interval

    # ------------------------------------------------------------------ SB3 hooks
    def _on_training_start(self) -> None:
        if self._window_arg is None:
            self.window = int(getattr(self.model, "_stats_window_size", 100))
        if self.episodes.maxlen != self.window:
            self.episodes = deque(self.episodes, maxlen=self.window)
        n = self.training_env.num_envs if self.training_env is not None else 1
        self._acc = [_EpisodeAcc() for _ in range(n)]
        self._next_curve_point = (self.num_timesteps // self.curve_interval + 1) * self.curve_interval

    def _on_step(self) -> bool:
        infos: Sequence[Mapping[str, Any]] = self.locals.get("infos", ())
        dones = np.asarray(self.locals.get("dones", np.zeros(len(infos), dtype=bool))).reshape(-1)
        rewards = np.asarray(self.locals.get("rewards", np.zeros(len(infos))), dtype=np.float64).reshape(-1)
        if len(self._acc) < len(infos):
            self._acc.extend(_EpisodeAcc() for _ in range(len(infos) - len(self._acc)))
        ended = False
        for i, info in enumerate(infos):
            acc = self._acc[i]
            acc.steps += 1
            acc.ret += float(rewards[i]) if i < rewards.size else 0.0
            if info.get("invalid_action"):
                acc.invalid += 1
            elif info.get("expert") is not None:
                name = str(info["expert"])
                acc.experts[name] = acc.experts.get(name, 0) + 1
            if info.get("error"):
                acc.errors += 1
            if info.get("critic_error"):
                acc.critic_errors += 1
            if i < dones.size and dones[i]:
                self._end_episode(acc, info)
                self._acc[i] = _EpisodeAcc()
                ended = True
        if ended:
            self._record()
        while self.num_timesteps >= self._next_curve_point:
            self._add_curve_point(self._next_curve_point)
            self._next_curve_point += self.curve_interval
        return True

    def _on_training_end(self) -> None:
        if not self.curve or self.curve[-1]["timesteps"] != self.num_timesteps:
            self._add_curve_point(self.num_timesteps)

    # ------------------------------------------------------------------ aggregation
    def _end_episode(self, acc: _EpisodeAcc, info: Mapping[str, Any]) -> None:
        monitor = info.get("episode")
        judge = info.get("judge")
        steps = max(acc.steps, 1)
        calls = int(info.get("episode_calls", sum(n for k, n in acc.experts.items() if k != "STOP")))
        ep: dict[str, Any] = {
            "success": float(bool(info.get("is_success", False))),
            "judge_alignment": float(judge["alignment"]) if isinstance(judge, Mapping) and "alignment" in judge
            else 0.0 if calls == 0 else None,
            "alignment": float(info.get("alignment", 0.0)),
            "cost": float(info.get("episode_cost", 0.0)),
            "calls": float(calls),
            # Monitor's numbers are the ground truth for return/length (they survive callback restarts mid-episode)
            "ep_return": float(monitor["r"]) if isinstance(monitor, Mapping) else acc.ret,
            "ep_length": float(monitor["l"]) if isinstance(monitor, Mapping) else float(acc.steps),
            "invalid_rate": acc.invalid / steps,
            "error_rate": acc.errors / steps,
            "critic_error_rate": acc.critic_errors / steps,
            "experts": {k: v / steps for k, v in acc.experts.items()},
        }
        for name in acc.experts:
            if name not in self.expert_names:
                self.expert_names.append(name)
        self.episodes.append(ep)
        self.n_episodes += 1

    def means(self) -> dict[str, float]:
        """Means over the last ``window`` episodes, keyed like the logger (without the ``poser/`` prefix)."""
        out: dict[str, float] = {}
        if not self.episodes:
            return out
        for key in _EPISODE_SCALARS:
            vals = [ep[key] for ep in self.episodes if ep[key] is not None]
            if vals:
                out[key] = float(np.mean(vals))
        for name in self.expert_names:
            out[f"expert/{name}"] = float(np.mean([ep["experts"].get(name, 0.0) for ep in self.episodes]))
        return out

    def _record(self) -> None:
        for key, value in self.means().items():
            if key != "success":  # SB3 logs it as rollout/success_rate (one success metric, see the module doc)
                self.logger.record(f"poser/{key}", value)
        self.logger.record("poser/episodes", self.n_episodes)

    def _add_curve_point(self, timesteps: int) -> None:
        m = self.means()
        if not m:
            return
        point = {"timesteps": float(timesteps), "episodes": float(self.n_episodes)}
        for key in CURVE_FIELDS[2:]:
            point[key] = m.get(key, float("nan"))
        self.curve.append(point)

    # ------------------------------------------------------------------ output
    def save_curve(self, path: str | Path) -> Path:
        """Write the learning curve to ``path`` (``.json``: a list of objects; ``.csv``: :data:`CURVE_FIELDS`)."""
        p = Path(path)
        if p.suffix not in (".json", ".csv"):
            raise ValueError(f"path={str(path)!r} must end in .json or .csv (the format is chosen by the suffix).")
        if p.suffix == ".json":
            atomic_write_json(p, self.curve)
        else:
            buf = io.StringIO(newline="")
            writer = csv.DictWriter(buf, fieldnames=list(CURVE_FIELDS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.curve)
            atomic_write_text(p, buf.getvalue())
        return p


def load_curve(path: str | Path) -> list[dict[str, float]]:
    """Read a learning curve written by :meth:`PoserMetricsCallback.save_curve` (JSON or CSV)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no learning-curve file there.")
    if p.suffix == ".json":
        return [{k: float(v) for k, v in row.items()} for row in json.loads(p.read_text())]
    if p.suffix == ".csv":
        with p.open(newline="") as fh:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    raise ValueError(f"path={str(path)!r} must end in .json or .csv.")


def checkpoint_callback(
    save_dir: str | Path,
    every_timesteps: int,
    n_envs: int = 1,
    name_prefix: str = "model",
    save_replay_buffer: bool = False,
) -> CheckpointCallback:
    """SB3's ``CheckpointCallback`` saving about every ``every_timesteps`` total timesteps.

    SB3 counts ``save_freq`` in callback calls (one per vectorised step of ``n_envs`` timesteps), so the frequency is
    ``max(1, every_timesteps // n_envs)``. Files are ``<save_dir>/<name_prefix>_<timesteps>_steps.zip`` (and
    ``<name_prefix>_replay_buffer_<timesteps>_steps.pkl`` for off-policy models with ``save_replay_buffer``).
    """
    for name, value in (("every_timesteps", every_timesteps), ("n_envs", n_envs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an int >= 1.")
    return CheckpointCallback(
        save_freq=max(1, every_timesteps // n_envs),
        save_path=str(save_dir),
        name_prefix=name_prefix,
        save_replay_buffer=save_replay_buffer,
    )


_CKPT_RE = re.compile(r"^(?P<prefix>.+)_(?P<steps>\d+)_steps\.zip$")


def latest_checkpoint(save_dir: str | Path, name_prefix: str = "model") -> Path | None:
    """The checkpoint with the most timesteps in ``save_dir`` (``<name_prefix>_<n>_steps.zip``), or None."""
    best: tuple[int, Path] | None = None
    d = Path(save_dir)
    if not d.is_dir():
        return None
    for f in d.iterdir():
        m = _CKPT_RE.match(f.name)
        if m and m.group("prefix") == name_prefix:
            steps = int(m.group("steps"))
            if best is None or steps > best[0]:
                best = (steps, f)
    return None if best is None else best[1]


def resume_training(
    path: str | Path,
    env: gym.Env | VecEnv,
    algo: str,
    total_timesteps: int,
    *,
    callback: MaybeCallback = None,
    replay_buffer_path: str | Path | None = None,
    device: str = "cpu",
    tb_log_name: str | None = None,
    trust_pickle: bool = False,
) -> BaseAlgorithm:
    """Load a checkpoint and train until the model has seen ``total_timesteps`` timesteps in all.

    ``total_timesteps`` is the run's *overall* budget (as passed to the first ``learn``), so resuming a run killed
    at 30k of 100k steps with ``total_timesteps=100_000`` trains the remaining 70k; the timestep counter continues
    (``reset_num_timesteps=False``), so logs and later checkpoints line up. A checkpoint already at or past the
    budget is returned without training. ``replay_buffer_path`` reloads an off-policy replay buffer saved by
    ``checkpoint_callback(..., save_replay_buffer=True)``.

    :param env: the env to continue on (the same id and kwargs as the original run; its episode restarts).
    :param algo: the algorithm the checkpoint was trained with (``"ppo"``, ``"maskable_ppo"``, ``"dqn"``).
    :param trust_pickle: must be True: SB3 checkpoints are zips that are unpickled (see
        :func:`agents.algos.load_model`); ``poser train`` resumes from its safe checkpoints instead.
    """
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) or total_timesteps < 1:
        raise ValueError(f"total_timesteps={total_timesteps!r} must be an int >= 1 (the run's overall budget).")
    model = load_model(path, algo, env=env, device=device, trust_pickle=trust_pickle)
    if replay_buffer_path is not None:
        if not hasattr(model, "load_replay_buffer"):
            raise AlgoConfigError(f"replay_buffer_path is only for off-policy algorithms; algo={algo!r} has none.")
        model.load_replay_buffer(replay_buffer_path)
    remaining = total_timesteps - model.num_timesteps
    if remaining <= 0:
        return model
    learn_kwargs: dict[str, Any] = {"reset_num_timesteps": False, "callback": callback}
    if tb_log_name is not None:
        learn_kwargs["tb_log_name"] = tb_log_name
    return model.learn(remaining, **learn_kwargs)
