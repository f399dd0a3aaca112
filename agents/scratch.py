"""Learning from scratch: MaskablePPO without any warm start, with a judge-scored learning curve (a benchmark).

``poser bench scratch`` trains one MaskablePPO run on the v1 main world for ``steps`` env steps (default one
million) with **no** imitation warm start, saves a checkpoint every ``eval_every`` steps, then evaluates every
checkpoint on the same test prompts (deterministic actions, judge-scored) next to the fixed pipelines and the
depth-4 oracle on those prompts. It writes, into ``out``:

- ``seed<k>/``: the run (``policy.json``, ``checkpoints/``, ``curve.json`` with the training-episode curve);
- ``scratch.json``: per checkpoint the timesteps, GenEval-style overall, long all-assertions, per-assertion
  accuracy, calls and cost, and the same for each baseline;
- ``scratch.md``: that table in markdown, and where the last checkpoint ends relative to the best fixed
  pipeline and the oracle;
- ``scratch.png``: the test-prompt curve against timesteps with the baselines as horizontal lines.

These are results about SceneSim, not about real diffusion models.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import re
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from agents.evaluate import EpisodeResult, evaluate, summarize
from agents.pipeline import baseline_names, evaluate_methods, load_prompts
from agents.policies import Policy, SB3Policy
from agents.policy_io import load_policy
from agents.report import ROLE_COLORS, _plt
from agents.train import train_one

__all__ = ["SCRATCH_ENV_ID", "run_scratch"]

#: The world the from-scratch curve is measured in.
SCRATCH_ENV_ID = "poser_env/ImagePoserMain-v1"
_CKPT = re.compile(r"^model_(\d+)_steps\.json$")


def _checkpoints(run: Path) -> list[tuple[int, Path]]:
    d = run / "checkpoints"
    found = [(int(m.group(1)), f) for f in d.iterdir() if (m := _CKPT.match(f.name))] if d.is_dir() else []
    return sorted(found)


def _policy_for(path: Path, run: int) -> Policy:
    return SB3Policy(load_policy(path), name="learned")


def _eval_checkpoint(path: Path, steps: int, specs: list[Any], env_id: str) -> list[EpisodeResult]:
    import torch

    torch.set_num_threads(1)
    return evaluate(functools.partial(_policy_for, path), specs, env_id=env_id, runs=(0,), method=f"step {steps}")


def _row(results: Sequence[EpisodeResult], method: str) -> dict[str, float | None]:
    s = summarize(results)[method]
    return {"geneval_overall": s.geneval_overall, "long_all": s.long_all, "assertion_accuracy": s.assertion_accuracy,
            "calls": s.mean_calls, "cost": s.mean_cost}


def run_scratch(out: str | Path = "runs/scratch", *, env_id: str = SCRATCH_ENV_ID, steps: int = 1_000_000,
                seed: int = 0, eval_every: int = 100_000, n_prompts: int = 40, n_envs: int = 8,
                workers: int = 2, per_op_n: int = 40, eval_only: bool = False) -> Path:
    """Train MaskablePPO from scratch and evaluate its checkpoints (see the module docstring). Returns the
    markdown path.

    Args:
        out: Output folder (created; an earlier run of the same seed in it is replaced).
        env_id: The world (default the v1 main world).
        steps: Env steps to train (>= 1).
        seed: Training seed (>= 0).
        eval_every: Env steps between evaluated checkpoints (>= 1).
        n_prompts: Test prompts per family (GenEval-style and long), >= 1.
        n_envs: Parallel envs of the PPO run.
        workers: Processes that evaluate checkpoints and baselines in parallel (>= 1).
        per_op_n: Train prompts per candidate when measuring the fixed pipelines' expert per op (>= 1).
        eval_only: Do not train: evaluate the checkpoints already in ``out/seed<seed>`` (a run that was stopped
            early keeps every checkpoint it saved; the table then says how far it got).
    """
    for name, v, lo in (("steps", steps, 1), ("seed", seed, 0), ("eval_every", eval_every, 1),
                        ("n_prompts", n_prompts, 1), ("n_envs", n_envs, 1), ("workers", workers, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}={v!r} must be an int >= {lo}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = out / f"seed{seed}"
    if eval_only:
        if not _checkpoints(run):
            raise ValueError(f"eval_only=True but {str(run / 'checkpoints')!r} holds no checkpoint; train first.")
        hist = json.loads((run / "train.json").read_text()) if (run / "train.json").is_file() else {}
        t_train = float(sum(r.get("seconds", 0.0) for r in hist.get("runs", [])))
    else:
        train_one(env_id=env_id, algo="maskable-ppo", steps=steps, seed=seed, out=run, n_envs=n_envs,
                  checkpoint_every=eval_every, warm_start=None, overwrite=True,
                  curve_interval=max(1000, steps // 200))
        t_train = time.perf_counter() - t0
    specs = load_prompts(env_id, split="test", n=2 * n_prompts, family="mixed")
    ckpts = _checkpoints(run)
    t1 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futs = [(n, pool.submit(_eval_checkpoint, p, n, list(specs), env_id)) for n, p in ckpts]
        curve = [{"timesteps": n, **_row(f.result(), f"step {n}")} for n, f in futs]
    names = [b for b in baseline_names(env_id) if b.startswith("fixed:")] + ["oracle"]
    base = evaluate_methods(names, specs, env_id=env_id, runs=1, progress=False, workers=workers,
                            oracle_kwargs={"depth": 4, "beam": 3}, per_op_n=per_op_n)
    baselines = {m: _row(base, m) for m in names}
    t_eval = time.perf_counter() - t1
    reached = ckpts[-1][0] if ckpts else 0
    data = {"env_id": env_id, "steps": steps, "steps_reached": reached, "seed": seed, "eval_every": eval_every,
            "test_prompts_per_family": n_prompts, "warm_start": None, "curve": curve, "baselines": baselines,
            "train_seconds": round(t_train, 1), "eval_seconds": round(t_eval, 1)}
    (out / "scratch.json").write_text(json.dumps(data, indent=1))
    _plot(curve, baselines, out / "scratch.png")
    md = out / "scratch.md"
    md.write_text(_markdown(data))
    return md


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _markdown(data: dict[str, Any]) -> str:
    lines = [f"MaskablePPO from scratch (no warm start) on `{data['env_id']}`, seed {data['seed']}, "
             f"{data['steps_reached']:,} of {data['steps']:,} env steps ({data['train_seconds']:.0f} s training); "
             "each checkpoint evaluated on "
             f"{data['test_prompts_per_family']} GenEval-style + {data['test_prompts_per_family']} long test prompts, "
             "deterministic actions, judge-scored (SceneSim results).", "",
             "| method | GenEval-style overall | long: all assertions | assertion acc. | calls | cost |",
             "|---|---|---|---|---|---|"]
    for p in data["curve"]:
        lines.append(f"| PPO at {p['timesteps']:,} steps | {_fmt(p['geneval_overall'])} | {_fmt(p['long_all'])} | "
                     f"{_fmt(p['assertion_accuracy'])} | {p['calls']:.1f} | {p['cost']:.1f} |")
    for m, r in data["baselines"].items():
        lines.append(f"| {m} | {_fmt(r['geneval_overall'])} | {_fmt(r['long_all'])} | {_fmt(r['assertion_accuracy'])} | "
                     f"{r['calls']:.1f} | {r['cost']:.1f} |")
    if data["curve"]:
        last = data["curve"][-1]
        fixed = [r for m, r in data["baselines"].items() if m.startswith("fixed:")]
        best = max((float(r["long_all"] or 0.0) for r in fixed), default=0.0)
        oracle = data["baselines"].get("oracle", {}).get("long_all")
        lines += ["", f"Last checkpoint, long prompts (all assertions): {_fmt(last['long_all'])}; best fixed pipeline "
                      f"{best:.3f}; depth-4 oracle {_fmt(oracle)}."]
    return "\n".join(lines) + "\n"


def _plot(curve: list[dict[str, Any]], baselines: dict[str, dict[str, Any]], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2), dpi=110)
    for ax, key, label in ((axes[0], "long_all", "long prompts: all assertions"),
                           (axes[1], "geneval_overall", "GenEval-style overall")):
        xs = [p["timesteps"] for p in curve if p[key] is not None]
        ax.plot(xs, [p[key] for p in curve if p[key] is not None], color=ROLE_COLORS["learned"], marker="o",
                lw=1.8, label="MaskablePPO from scratch")
        fixed = {m: r[key] for m, r in baselines.items() if m.startswith("fixed:") and r[key] is not None}
        if fixed:
            m = max(fixed, key=lambda k: fixed[k])
            ax.axhline(fixed[m], color="0.4", ls="--", lw=1.2, label=f"best fixed ({m})")
        if baselines.get("oracle", {}).get(key) is not None:
            ax.axhline(baselines["oracle"][key], color="0.1", ls=":", lw=1.2, label="depth-4 oracle")
        ax.set_xlabel("env steps")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    h, labels = axes[0].get_legend_handles_labels()
    fig.legend(h, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
