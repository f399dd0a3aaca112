"""Vector envs: SyncVectorEnv and the sharded multi-process env give the single envs' trajectories."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import poser_env  # noqa: F401
from poser_env.vector import ShardedVectorEnv, make_vector_env

ENV = "poser_env/ImagePoser-v0"
KW = {"text_encoder": "hashing", "max_steps": 4}


def _single_trajectories(n: int, seed: int, actions: np.ndarray) -> list[list[tuple[float, bool, bool, bytes]]]:
    """Each copy alone, with SyncVectorEnv's NEXT_STEP autoreset written out by hand."""
    out = []
    for i in range(n):
        env = gym.make(ENV, **KW)
        obs, _ = env.reset(seed=seed + i)
        done = False
        rows = []
        for a in actions[:, i]:
            if done:
                obs, _ = env.reset()
                r, term, trunc = 0.0, False, False
            else:
                obs, r, term, trunc, _ = env.step(int(a))
            done = term or trunc
            rows.append((float(r), bool(term), bool(trunc), obs["command"].tobytes() + obs["history"].tobytes()))
        out.append(rows)
        env.close()
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_vector_env_matches_the_single_envs(workers: int) -> None:
    n, steps, seed = 3, 14, 5
    rng = np.random.default_rng(0)
    n_actions = int(gym.make(ENV, **KW).action_space.n)
    actions = rng.integers(0, n_actions, size=(steps, n))  # masked actions are penalised no-ops
    want = _single_trajectories(n, seed, actions)
    vec = make_vector_env(ENV, n, workers=workers, **KW)
    assert isinstance(vec, ShardedVectorEnv) == (workers > 1)
    vec.reset(seed=seed)
    for t in range(steps):
        obs, r, term, trunc, info = vec.step(actions[t])
        for i in range(n):
            got = (float(r[i]), bool(term[i]), bool(trunc[i]), obs["command"][i].tobytes() + obs["history"][i].tobytes())
            assert got == want[i][t], (workers, t, i)
        masks = vec.call("action_masks")
        assert len(masks) == n and all(m.shape == (n_actions,) for m in masks)
    assert "prompt" in info
    vec.close()


def test_vector_env_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="num_envs=0"):
        make_vector_env(ENV, 0)
    with pytest.raises(ValueError, match="workers=3"):
        make_vector_env(ENV, 2, workers=3)
