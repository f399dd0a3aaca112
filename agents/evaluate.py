"""Evaluate policies and baselines: episodes, judge- and critic-scored tables with 95% CIs over runs."""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from scipy import stats

from agents.policies import Policy
from poser_env.core.spec import GENEVAL_TAGS, Spec
from poser_env.env import unwrap

__all__ = ["EpisodeResult", "MethodSummary", "ci95", "evaluate", "paired_difference", "run_episode", "summarize",
           "summary_table"]


@dataclass(frozen=True)
class EpisodeResult:
    """One evaluated episode.

    Attributes:
        method: Policy name.
        run: Run index (a training seed for learned policies, an evaluation seed for baselines).
        prompt: The prompt text. tag: GenEval tag or "long".
        judge_pass: Ground truth says every assertion holds (False when no judge, and False for an episode that
            stopped before making any image: every episode counts in the denominator, as in training's
            ``rollout/success_rate``).
        judge_alignment: Fraction of assertions that hold by the judge, in [0, 1] (nan without judge).
        critic_pass / critic_alignment: The same by the critic.
        calls: Expert calls (including a policy's probes). cost: Their cost (SceneSim units).
        steps: Env steps. wall_time: Seconds for the episode. experts: Names of experts called, in order.
    """

    method: str
    run: int
    prompt: str
    tag: str
    judge_pass: bool
    judge_alignment: float
    critic_pass: bool
    critic_alignment: float
    calls: int
    cost: float
    steps: int
    wall_time: float
    experts: tuple[str, ...] = ()
    invalid_actions: int = 0
    errors: int = 0


def run_episode(
    env: gym.Env[Any, Any], policy: Policy, prompt: Spec | str, *, seed: int, method: str | None = None, run: int = 0
) -> EpisodeResult:
    """Run one episode of ``policy`` on ``prompt`` (reset with ``seed``) and return its result."""
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed, options={"prompt": prompt})
    policy.reset(env)
    experts: list[str] = []
    steps = invalid = errors = 0
    done = False
    while not done:
        a = policy.act(env, obs)
        obs, _, term, trunc, info = env.step(a)
        steps += 1
        done = term or trunc
        if info.get("invalid_action"):
            invalid += 1
        elif info.get("expert", "STOP") != "STOP":
            experts.append(info["expert"])
        errors += int("error" in info or "critic_error" in info)
    judge = info.get("judge")
    tag = prompt.tag if isinstance(prompt, Spec) and prompt.tag else "long" if isinstance(prompt, Spec) else "custom"
    fb = unwrap(env).state.feedback
    return EpisodeResult(
        method=method or policy.name,
        run=run,
        prompt=prompt.prompt if isinstance(prompt, Spec) else prompt,
        tag=tag,
        judge_pass=bool(judge["pass"]) if judge else False,
        judge_alignment=float(judge["alignment"]) if judge else float("nan"),
        critic_pass=bool(fb is not None and fb.all_hold),
        critic_alignment=float(fb.alignment) if fb is not None else 0.0,
        calls=int(info.get("episode_calls", 0)) + policy.extra_calls,
        cost=float(info.get("episode_cost", 0.0)) + policy.extra_cost,
        steps=steps,
        wall_time=time.perf_counter() - t0,
        experts=tuple(experts),
        invalid_actions=invalid,
        errors=errors,
    )


def evaluate(
    make_policy: Callable[[int], Policy],
    prompts: Sequence[Spec | str],
    *,
    env_id: str = "poser_env/ImagePoser-v0",
    env_kwargs: Mapping[str, Any] | None = None,
    runs: Sequence[int] = (0,),
    images_per_prompt: int = 1,
    method: str | None = None,
    seed: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> list[EpisodeResult]:
    """Evaluate a policy on prompts, ``images_per_prompt`` seeds per prompt, for each run.

    Args:
        make_policy: run index -> policy (a model trained with that seed, or a baseline seeded by it).
        prompts: Specs (with ground truth for the judge) or prompt strings.
        env_id / env_kwargs: The env to evaluate in (the same world as training).
        runs: Run indices (>= 1 of them; 3+ for confidence intervals).
        images_per_prompt: Episodes per prompt and run, each with its own seed (GenEval uses 4).
        seed: Base of the episode seeds: episode seed = seed + 7919 * run + 104729 * i + k (fixed, reproducible).
        progress: Called with the number of episodes finished after each one.
    """
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt={images_per_prompt!r} must be >= 1.")
    if not runs:
        raise ValueError("runs is empty; pass at least one run index such as (0,).")
    env = gym.make(env_id, **dict(env_kwargs or {}))
    out: list[EpisodeResult] = []
    for run in runs:
        policy = make_policy(run)
        for i, p in enumerate(prompts):
            for k in range(images_per_prompt):
                s = seed + 7919 * run + 104729 * i + k
                out.append(run_episode(env, policy, p, seed=s, method=method, run=run))
                if progress is not None:
                    progress(1)
    env.close()
    return out


def ci95(values: Sequence[float]) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t; 0 for fewer than 2 values)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return 0.0

    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


@dataclass
class MethodSummary:
    """Aggregates of one method (means over runs; ``*_ci`` are 95% half-widths over runs)."""

    method: str
    n_prompts: int
    n_episodes: int
    n_runs: int
    overall: float
    overall_ci: float
    per_tag: dict[str, float]
    per_tag_ci: dict[str, float]
    critic_overall: float
    critic_per_tag: dict[str, float]
    assertion_accuracy: float
    mean_calls: float
    mean_cost: float
    mean_wall_time: float
    expert_usage: dict[str, float] = field(default_factory=dict)
    long_all: float | None = None
    long_all_ci: float | None = None
    geneval_overall: float | None = None
    geneval_overall_ci: float | None = None


def _overall(rows: Iterable[EpisodeResult], key: Callable[[EpisodeResult], float]) -> tuple[float, dict[str, float]]:
    by_tag: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_tag[r.tag].append(key(r))
    per_tag = {t: float(np.mean(v)) for t, v in sorted(by_tag.items())}
    return (float(np.mean(list(per_tag.values()))) if per_tag else float("nan")), per_tag


def _alignment(r: EpisodeResult) -> float:
    """Judge alignment of an episode; an episode that made no call has no image, so nothing of it holds."""
    if math.isnan(r.judge_alignment) and r.calls == 0:
        return 0.0
    return r.judge_alignment


def _family_scores(rows: Sequence[EpisodeResult]) -> tuple[float | None, float | None]:
    """(GenEval-style overall, long all-assertions rate) of one run's episodes; None where the family is absent."""
    tag_rates = _overall(rows, lambda r: float(r.judge_pass))[1]
    gen = [v for t, v in tag_rates.items() if t in GENEVAL_TAGS]
    return (float(np.mean(gen)) if gen else None), tag_rates.get("long")


def paired_difference(
    results: Sequence[EpisodeResult], a: str, b: str, family: str
) -> tuple[float, float, int] | None:
    """Mean and 95% half-width (Student t over runs) of the per-run score difference ``a - b``.

    Both methods must have been evaluated on the same runs, prompts and episode seeds (as :func:`evaluate` does
    for every method with the same ``runs`` and ``seed``): run ``r`` of ``a`` is then paired with run ``r`` of
    ``b``, so prompt difficulty and the experts' random draws cancel, and the interval is much tighter than one
    built from the two methods' own intervals.

    Args:
        results: Episodes of (at least) both methods.
        a / b: Method names.
        family: ``"geneval"`` (GenEval-style overall, in [0, 1]), ``"long"`` (all-assertions rate, in [0, 1]) or
            ``"overall"`` (unweighted mean of every tag's pass rate, as :class:`MethodSummary.overall`).

    Returns:
        ``(mean difference, ci95 half-width, number of paired runs)``, or None when the two methods share no run
        with the same prompts, or a shared run lacks the family.
    """
    if family not in ("geneval", "long", "overall"):
        raise ValueError(f"family={family!r} must be 'geneval', 'long' or 'overall'.")
    rows: dict[tuple[str, int], list[EpisodeResult]] = defaultdict(list)
    for r in results:
        if r.method in (a, b):
            rows[(r.method, r.run)].append(r)
    diffs: list[float] = []
    for run in sorted({run for m, run in rows if m == a} & {run for m, run in rows if m == b}):
        ra, rb = rows[(a, run)], rows[(b, run)]
        if Counter(r.prompt for r in ra) != Counter(r.prompt for r in rb):
            return None
        if family == "overall":
            va: float | None = _overall(ra, lambda r: float(r.judge_pass))[0]
            vb: float | None = _overall(rb, lambda r: float(r.judge_pass))[0]
        else:
            k = 0 if family == "geneval" else 1
            va, vb = _family_scores(ra)[k], _family_scores(rb)[k]
        if va is None or vb is None:
            return None
        diffs.append(va - vb)
    if not diffs:
        return None
    return float(np.mean(diffs)), ci95(diffs), len(diffs)


def summarize(results: Sequence[EpisodeResult]) -> dict[str, MethodSummary]:
    """Per method: GenEval-style overall (unweighted mean of per-tag pass rates), per tag, long-prompt
    all-assertions rate, critic-scored equivalents, calls, cost, wall time, 95% CIs over runs."""
    by_method: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        by_method[r.method].append(r)
    out: dict[str, MethodSummary] = {}
    for m, rows in by_method.items():
        runs = sorted({r.run for r in rows})
        per_run = [[r for r in rows if r.run == run] for run in runs]
        overall_runs = [_overall(pr, lambda r: float(r.judge_pass))[0] for pr in per_run]
        tag_runs = [_overall(pr, lambda r: float(r.judge_pass))[1] for pr in per_run]
        tags = sorted({t for tr in tag_runs for t in tr})
        per_tag = {t: float(np.mean([tr[t] for tr in tag_runs if t in tr])) for t in tags}
        per_tag_ci = {t: ci95([tr[t] for tr in tag_runs if t in tr]) for t in tags}
        c_overall, c_tag = _overall(rows, lambda r: float(r.critic_pass))
        fam_runs = [_family_scores(pr) for pr in per_run]
        gen_runs = [g for g, _ in fam_runs if g is not None]
        long_runs = [lg for _, lg in fam_runs if lg is not None]
        usage = Counter(e for r in rows for e in r.experts)
        n_calls = max(1, sum(usage.values()))
        out[m] = MethodSummary(
            method=m,
            n_prompts=len({r.prompt for r in rows}),
            n_episodes=len(rows),
            n_runs=len(runs),
            overall=float(np.mean(overall_runs)),
            overall_ci=ci95(overall_runs),
            per_tag=per_tag,
            per_tag_ci=per_tag_ci,
            critic_overall=c_overall,
            critic_per_tag=c_tag,
            assertion_accuracy=float(np.nanmean([_alignment(r) for r in rows])) if rows else float("nan"),
            mean_calls=float(np.mean([r.calls for r in rows])),
            mean_cost=float(np.mean([r.cost for r in rows])),
            mean_wall_time=float(np.mean([r.wall_time for r in rows])),
            expert_usage={k: v / n_calls for k, v in sorted(usage.items())},
            long_all=float(np.mean(long_runs)) if long_runs else None,
            long_all_ci=ci95(long_runs) if long_runs else None,
            geneval_overall=float(np.mean(gen_runs)) if gen_runs else None,
            geneval_overall_ci=ci95(gen_runs) if gen_runs else None,
        )
    return out


def summary_table(summaries: Mapping[str, MethodSummary], *, tags: Sequence[str] | None = None) -> str:
    """A markdown table: method, GenEval-style overall ± CI, long all-assertions ± CI, per tag, calls, cost."""
    all_tags = list(tags) if tags is not None else sorted({t for s in summaries.values() for t in s.per_tag})
    head = ["method", "GenEval-style overall", "long: all assertions", *all_tags, "assertion acc.", "critic overall",
            "calls", "cost", "s/episode"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(v: float | None, ci: float | None = None) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return f"{v:.3f} ± {ci:.3f}" if ci else f"{v:.3f}"

    for s in summaries.values():
        row = [s.method, fmt(s.geneval_overall, s.geneval_overall_ci), fmt(s.long_all, s.long_all_ci)]
        row += [fmt(s.per_tag.get(t)) for t in all_tags]
        row += [fmt(s.assertion_accuracy), fmt(s.critic_overall), f"{s.mean_calls:.2f}", f"{s.mean_cost:.2f}",
                f"{s.mean_wall_time:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def save_results(path: str | Path, results: Sequence[EpisodeResult], summaries: Mapping[str, MethodSummary]) -> None:
    """Write episodes and summaries as JSON."""
    Path(path).write_text(json.dumps({"summaries": {k: asdict(v) for k, v in summaries.items()},
                                      "episodes": [asdict(r) for r in results]}, indent=1))
