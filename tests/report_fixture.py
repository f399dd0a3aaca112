"""A tiny main-job folder for report tests, built in about a second without training.

``poser report <dir>`` (:func:`agents.pipeline.report_from_dir`) reads ``results.json`` (episodes; summaries are
recomputed from them), ``curves.json`` ({run name: learning-curve points}), ``config.json`` and
``examples/*/{contact_sheet.png, episode.gif, trace.json}``. Here the episodes are synthetic (seeded, with a
"learned" method better than the baselines on most tags), the curves are synthetic points with every
:data:`agents.callbacks.CURVE_FIELDS` column, and the example episodes are real SceneSim episodes of the random
pipeline (fixed:sim/layout) written by :func:`agents.pipeline.generate_one`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agents.callbacks import CURVE_FIELDS
from agents.evaluate import EpisodeResult, save_results, summarize

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr", "long")
#: method -> pass probability per episode (the learned policy is best except against the oracle)
METHODS = {"random": 0.3, "single:sim/layout": 0.45, "fixed:sim/layout": 0.6, "critic-greedy": 0.55,
           "oracle": 0.85, "learned": 0.75}
EXPERTS = ("sim/layout", "sim/dense", "sim/recolor", "sim/move")


def synthetic_results(*, runs: int = 3, prompts_per_tag: int = 6, seed: int = 0) -> list[EpisodeResult]:
    """Episodes of :data:`METHODS` on the same prompts and runs (pass draws seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for m, p in METHODS.items():
        for run in range(runs):
            for tag in TAGS:
                for i in range(prompts_per_tag):
                    ok = bool(rng.random() < (p - 0.25 if tag == "long" else p))
                    calls = int(rng.integers(1, 6 if tag == "long" else 3))
                    out.append(EpisodeResult(
                        method=m, run=run, prompt=f"{tag} prompt {i}", tag=tag, judge_pass=ok,
                        judge_alignment=1.0 if ok else float(rng.uniform(0.2, 0.9)), critic_pass=ok,
                        critic_alignment=1.0 if ok else 0.5, calls=calls, cost=0.1 * calls, steps=calls + 1,
                        wall_time=0.001, experts=tuple(EXPERTS[int(k)] for k in rng.integers(0, 4, calls))))
    return out


def synthetic_curve(seed: int, points: int = 6) -> list[dict[str, float]]:
    rng = np.random.default_rng(100 + seed)
    curve = []
    for k in range(1, points + 1):
        s = min(1.0, 0.2 + 0.1 * k + float(rng.normal(0, 0.03)))
        vals = {"timesteps": 1000.0 * k, "episodes": 80.0 * k, "success": s, "ep_return": 2 * s - 0.3,
                "alignment": 0.5 + s / 2, "judge_alignment": 0.5 + s / 2, "cost": 0.8 - 0.05 * k,
                "calls": 6.0 - 0.4 * k, "ep_length": 7.0 - 0.4 * k}
        curve.append({f: vals[f] for f in CURVE_FIELDS})
    return curve


def make_run_dir(d: Path, *, examples: int = 2) -> Path:
    """Write a main-job folder at ``d`` (see the module docstring); returns ``d``."""
    from agents.pipeline import MAIN_ENV_KWARGS, generate_one, load_prompts

    MAIN_ENV_ID = "poser_env/ImagePoserMain-v0"  # the synthetic results name v0 experts (sim/layout, ...)

    d.mkdir(parents=True, exist_ok=True)
    results = synthetic_results()
    save_results(d / "results.json", results, summarize(results))
    (d / "curves.json").write_text(json.dumps({f"seed{s}": synthetic_curve(s) for s in range(2)}))
    (d / "config.json").write_text(json.dumps({"env_id": MAIN_ENV_ID, "env_kwargs": dict(MAIN_ENV_KWARGS),
                                               "note": "synthetic fixture for report tests"}, indent=1))
    specs = load_prompts(MAIN_ENV_ID, split="test", n=6, family="mixed")  # 3 GenEval-style, then 3 long
    for i, spec in enumerate([specs[0], specs[4]][:examples]):
        generate_one(spec, policy="fixed:sim/layout", seed=i, out=d / "examples" / f"example-{i}",
                     env_id=MAIN_ENV_ID, env_kwargs={**MAIN_ENV_KWARGS, "max_steps": 6})
    return d
