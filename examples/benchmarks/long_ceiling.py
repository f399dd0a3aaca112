"""How far can *any* controller get on SceneSim's long prompts? Scripted strategies, side by side.

Every strategy runs in the main job's world (``agents.pipeline.MAIN_ENV_KWARGS``) on the same long test prompts
and episode seeds, and is scored by the ground-truth judge. Strategies:

* ``fixed:<expert>``: the fixed pipeline starting with each text-to-image expert (a baseline of the main job);
* ``fixed+restart:<expert>``: the same, but when the plan has dropped a command (so the prompt can no longer
  pass) and at least ``--restart-margin`` steps are left, regenerate from scratch and start over;
* ``fixed:sim/layout K=5``: the planner allows 5 attempts per command instead of 3 (same rules otherwise, so
  the difference is only persistence).

For each ``--max-steps`` budget it prints the all-assertions pass rate (with a 95% Wilson interval), the mean
fraction of assertions that hold, calls and cost. It also prints why the failing episodes fail: for each
assertion the judge rejects at the end, whether the critic wrongly accepted it, the planner gave it up after
its attempts, or it was still pending when the step budget ran out.

Run::

    PYTHONPATH=. python examples/benchmarks/long_ceiling.py --n-long 100 --max-steps 20 30 40
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import tyro

import poser_env  # noqa: F401
from agents.evaluate import run_episode
from agents.pipeline import MAIN_ENV_KWARGS, load_prompts
from agents.policies import FixedPipelinePolicy
from poser_env.core.spec import Spec
from poser_env.env import unwrap

#: These analyses are about the v0 world (cards version 1: sim/layout, sim/dense...), the main world before issue 15.
MAIN_ENV_ID = "poser_env/ImagePoserMain-v0"


class FixedWithRestart(FixedPipelinePolicy):
    """The fixed pipeline, restarting from scratch once the plan has dropped a command."""

    def __init__(self, t2i_expert: str, margin: int) -> None:
        super().__init__(t2i_expert)
        self.name = f"fixed+restart:{t2i_expert}"
        self.margin = margin

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        s = unwrap(env).state
        if s.canvas is not None and s.plan.dropped and s.steps_left >= self.margin:
            return int(self._t2i)
        return super().act(env, obs)


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n trials."""
    if n == 0:
        return 0.0, 0.0
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def run(policy: FixedPipelinePolicy, specs: list[Spec], max_steps: int, attempts: int = 3) -> dict[str, Any]:
    env = gym.make(MAIN_ENV_ID, **{**MAIN_ENV_KWARGS, "max_steps": max_steps, "max_attempts": attempts})
    u = unwrap(env)
    results = []
    why: collections.Counter[str] = collections.Counter()
    for i, spec in enumerate(specs):
        results.append(run_episode(env, policy, spec, seed=100 + i))
        s = u.state  # the finished episode's state: why do its failing assertions fail?
        critic = {v.assertion_id: v.holds for v in s.feedback.verdicts} if s.feedback else {}
        assert s.judge is not None, "the main job's world has a ground-truth judge"
        for aid, holds in s.judge["verdicts"].items():
            if holds == "yes":
                continue
            kind = spec.assertion(aid).kind
            if critic.get(aid) == "yes":
                why[f"{kind}: critic said yes"] += 1
            elif aid in s.plan.given_up:
                why[f"{kind}: given up"] += 1
            else:
                why[f"{kind}: pending or unrepairable"] += 1
    k, n = sum(r.judge_pass for r in results), len(results)
    return {"pass": k / n, "ci": wilson(k, n), "align": float(np.mean([r.judge_alignment for r in results])),
            "calls": float(np.mean([r.calls for r in results])), "cost": float(np.mean([r.cost for r in results])),
            "why": why}


@dataclass(frozen=True)
class Args:
    n_long: int = 100  # long test prompts
    max_steps: tuple[int, ...] = (20, 30, 40)  # step budgets
    restart_margin: int = 10  # steps that must be left to restart


def main(args: Args) -> None:
    specs = load_prompts(MAIN_ENV_ID, split="test", n=args.n_long, family="long")
    t2i = ["sim/sketch", "sim/layout", "sim/photoreal", "sim/dense"]
    print("| max steps | strategy | all assertions (95% CI) | assertions hold | calls | cost |")
    print("|---|---|---|---|---|---|")
    reasons: dict[str, collections.Counter[str]] = {}
    for ms in args.max_steps:
        rows: list[tuple[str, FixedPipelinePolicy, int]] = [(f"fixed:{e}", FixedPipelinePolicy(e), 3) for e in t2i]
        rows += [(f"fixed+restart:{e}", FixedWithRestart(e, args.restart_margin), 3)
                 for e in ("sim/layout", "sim/dense")]
        rows += [("fixed:sim/layout K=5", FixedPipelinePolicy("sim/layout"), 5)]
        for name, pol, k in rows:
            r = run(pol, specs, ms, k)
            lo, hi = r["ci"]
            print(f"| {ms} | {name} | {r['pass']:.3f} ({lo:.3f}-{hi:.3f}) | {r['align']:.3f} | {r['calls']:.1f} | "
                  f"{r['cost']:.1f} |", flush=True)
            if name == "fixed:sim/layout":
                reasons[str(ms)] = r["why"]
    for ms, why in reasons.items():
        total = sum(why.values())
        print(f"\nWhy fixed:sim/layout fails at max_steps={ms} ({total} failing assertions):")
        for reason, count in why.most_common(8):
            print(f"  {reason:40s} {count:4d} ({count / total:.0%})")


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
