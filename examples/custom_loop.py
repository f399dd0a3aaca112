"""Plug in your own algorithm: a plain Gymnasium loop with tabular Q-learning over a tiny state summary.

    python examples/custom_loop.py --episodes 300

No Stable-Baselines3 needed: the env is a standard ``gymnasium.Env``. The state here is deliberately crude
(the current command's op, whether the canvas is empty, the attempt count), read by slot name through
``poser_env.observation`` (``FEEDBACK_LAYOUT``, ``PROGRESS_LAYOUT``); the action masks come from
``unwrap(env).action_masks()``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import tyro

import poser_env  # noqa: F401
from poser_env.env import unwrap
from poser_env.observation import PROGRESS_LAYOUT, read_feedback


@dataclass(frozen=True)
class Args:
    episodes: int = 300
    seed: int = 0
    epsilon: float = 0.2
    alpha: float = 0.2
    gamma: float = 0.95


def summarize(obs: dict[str, np.ndarray]) -> tuple[int, ...]:
    """(current command's op index in OPS or -1 when none is pending, canvas empty, attempts in quarters)."""
    fb = read_feedback(obs["feedback"])  # the slots of poser_env.observation.FEEDBACK_LAYOUT, by name
    op = int(np.argmax(fb["op"])) if fb["command_pending"][0] > 0 else -1
    attempts = float(obs["progress"][PROGRESS_LAYOUT["attempts"]][0])
    return (op, int(fb["canvas_empty"][0]), round(4 * attempts))


def main(args: Args) -> dict[str, float]:
    env = gym.make("poser_env/ImagePoser-v0", text_encoder="hashing")
    rng = np.random.default_rng(args.seed)
    n = int(env.action_space.n)
    q: dict[tuple[int, ...], np.ndarray] = defaultdict(lambda: np.zeros(n))
    returns, successes = [], []
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed * 100_000 + ep)
        s, done, total = summarize(obs), False, 0.0
        while not done:
            mask = unwrap(env).action_masks()
            valid = np.flatnonzero(mask)
            a = int(rng.choice(valid)) if rng.random() < args.epsilon else int(valid[np.argmax(q[s][valid])])
            obs, r, term, trunc, info = env.step(a)
            s2 = summarize(obs)
            target = r + (0.0 if term else args.gamma * q[s2].max())
            q[s][a] += args.alpha * (target - q[s][a])
            s, done, total = s2, term or trunc, total + float(r)
        returns.append(total)
        successes.append(float(info["is_success"]))
    k = max(1, args.episodes // 5)
    result = {"first_return": float(np.mean(returns[:k])), "last_return": float(np.mean(returns[-k:])),
              "last_success": float(np.mean(successes[-k:]))}
    print(result)
    return result



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
