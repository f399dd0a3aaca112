"""Which behaviour does a reward prefer on long prompts? Mean return of fixed pipelines and trained models.

Runs each policy on the same long test prompts and episode seeds in the main job's world with the reward given
on the command line, and prints the mean (undiscounted) return, its parts, and the all-assertions pass rate.
If a policy that passes fewer prompts earns a *higher* return, the reward, not the learner, is what stops it.

Run (the README's numbers, measured with the earlier 20-step budget; the from-scratch model comes from the
first command)::

    .venv/bin/poser train --steps 20000 --seed 0 --out runs/scratch \\
        --env-arg prompt_source=mixed --env-arg max_steps=20 --env-arg text_encoder=hashing
    PYTHONPATH=. .venv/bin/python examples/benchmarks/reward_returns.py --cost-weight 0.02 --success 0.5 \\
        --max-steps 20 --model runs/scratch/seed0/policy.json
    PYTHONPATH=. .venv/bin/python examples/benchmarks/reward_returns.py --cost-weight 0.005 --success 2.0 --max-steps 20
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import tyro

import poser_env  # noqa: F401
from agents.pipeline import MAIN_ENV_KWARGS, load_prompts
from agents.policies import FixedPipelinePolicy, Policy, SB3Policy
from poser_env.config import MAIN
from poser_env.env import unwrap

#: These analyses are about the v0 world (cards version 1: sim/layout, sim/dense...), the main world before issue 15.
MAIN_ENV_ID = "poser_env/ImagePoserMain-v0"


def mean_return(policy: Policy, env: gym.Env[Any, Any], specs: list[Any]) -> dict[str, float]:
    u = unwrap(env)
    totals: dict[str, list[float]] = {"return": [], "potential_delta": [], "cost": [], "pass": []}
    for i, spec in enumerate(specs):
        obs, _ = env.reset(seed=100 + i, options={"prompt": spec})
        policy.reset(env)
        done, ret, parts = False, 0.0, {"potential_delta": 0.0, "cost": 0.0}
        while not done:
            obs, r, terminated, truncated, info = env.step(policy.act(env, obs))
            done = terminated or truncated
            ret += float(r)
            for k in parts:
                parts[k] += float(info["reward_terms"][k])
        totals["return"].append(ret)
        judge = u.state.judge
        assert judge is not None, "the main job's world has a ground-truth judge"
        totals["pass"].append(float(judge["pass"]))
        for k, v in parts.items():
            totals[k].append(v)
    return {k: float(np.mean(v)) for k, v in totals.items()}


@dataclass(frozen=True)
class Args:
    cost_weight: float = 0.02  # the env's cost_weight
    success: float = 0.5  # success weight of the potential
    n_long: int = 40  # long test prompts
    max_steps: int = MAIN.max_steps  # step budget
    model: tuple[str, ...] = ()  # policy.json files trained in this world


def main(args: Args) -> None:
    kw = {**MAIN_ENV_KWARGS, "cost_weight": args.cost_weight, "reward_weights": {"success": args.success},
          "max_steps": args.max_steps}
    env = gym.make(MAIN_ENV_ID, **kw)
    specs = load_prompts(MAIN_ENV_ID, split="test", n=args.n_long, family="long")
    policies: dict[str, Policy] = {f"fixed:{e}": FixedPipelinePolicy(e) for e in ("sim/layout", "sim/dense")}
    if args.model:
        from agents.policy_io import load_policy

        for path in args.model:  # safe format only: checked against this env, nothing unpickled
            policies[path] = SB3Policy(load_policy(path, env=env, env_id=MAIN_ENV_ID))
    print(f"cost_weight={args.cost_weight}, success weight={args.success}, {len(specs)} long test prompts")
    print("| policy | mean return | potential gain | cost term | all assertions |")
    print("|---|---|---|---|---|")
    for name, pol in policies.items():
        r = mean_return(pol, env, specs)
        print(f"| {name} | {r['return']:.3f} | {r['potential_delta']:.3f} | {r['cost']:.3f} | {r['pass']:.3f} |")


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
