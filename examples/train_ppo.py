"""Train PPO (or MaskablePPO) on SceneSim with the text-embedding features extractor, then evaluate it.

    python examples/train_ppo.py --steps 20000 --algo maskable-ppo

Everything runs on CPU in SceneSim (simulated experts): results are about the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import tyro

import poser_env  # noqa: F401  (registers the env ids)
from agents.algos import make_model, make_vec_env
from agents.callbacks import PoserMetricsCallback
from agents.policies import SB3Policy


@dataclass(frozen=True)
class Args:
    env_id: str = "poser_env/ImagePoser-v0"
    algo: str = "maskable-ppo"
    steps: int = 20_000
    n_envs: int = 4
    seed: int = 0
    text_encoder: str = "auto"
    eval_episodes: int = 50


def main(args: Args) -> dict[str, float]:
    env_kwargs = {"text_encoder": args.text_encoder}
    venv = make_vec_env(args.env_id, n_envs=args.n_envs, seed=args.seed, env_kwargs=env_kwargs)
    model = make_model(args.algo, venv, seed=args.seed)
    metrics = PoserMetricsCallback()
    model.learn(total_timesteps=args.steps, callback=metrics)
    print("training (last episodes):", {k: round(v, 3) for k, v in metrics.means().items() if "/" not in k})

    env = gym.make(args.env_id, split="test", **env_kwargs)
    policy = SB3Policy(model)
    passes = []
    for ep in range(args.eval_episodes):
        obs, _ = env.reset(seed=10_000 + ep)
        policy.reset(env)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(policy.act(env, obs))
            done = term or trunc
        passes.append(float(info["is_success"]))
    result = {"test_success": float(np.mean(passes))}
    print("test split (judge):", result)
    return result



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
