"""High-level jobs behind the CLI: prompt loading, evaluating methods, generating, the main job."""

from __future__ import annotations

import functools
import json
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any

import gymnasium as gym

import poser_env
from agents.algos import load_model
from agents.evaluate import EpisodeResult, evaluate, save_results, summarize, summary_table
from agents.policies import FixedPipelinePolicy, Policy, SB3Policy, make_baseline
from agents.policy_io import (
    PolicyMismatchError,
    check_compatible,
    describe_space,
    is_policy_path,
    load_policy,
    read_config,
)
from agents.report import NO_FEEDBACK, write_report
from agents.train import train_runs
from poser_env import registered_config
from poser_env.components import generated_pool
from poser_env.config import GENERATED_SOURCES, pool_size
from poser_env.core.commands import OPS
from poser_env.core.spec import GENEVAL_TAGS, Spec, read_geneval_jsonl
from poser_env.env import unwrap
from poser_env.rendering import contact_sheet, episode_frames, save_gif

__all__ = [
    "MAIN_ENV_ID",
    "MAIN_ENV_KWARGS",
    "baseline_names",
    "best_experts_per_op",
    "best_single_expert",
    "evaluate_methods",
    "generate_one",
    "load_prompts",
    "report_from_dir",
    "run_main",
]

#: The main job's world is the registered id ``poser_env/ImagePoserMain-v0`` (:data:`poser_env.config.MAIN`:
#: GenEval-style and long prompts mixed, 30 steps, hashing text encoder, cost weight 0.005, success weight 2.0;
#: the reasons for each are in that module). ``gym.make(MAIN_ENV_ID)`` with default arguments is the world of the
#: README's headline numbers.
MAIN_ENV_ID: str = poser_env.MAIN_ENV_ID
#: Kept for old callers that merged it into ``gym.make(MAIN_ENV_ID, ...)``: empty, the configuration is the id.
MAIN_ENV_KWARGS: Mapping[str, Any] = MappingProxyType({})


def load_prompts(env_id: str, *, split: str = "test", path: str | Path | None = None, n: int = 100,
                 family: str | None = None) -> list[Spec]:
    """Prompts with ground truth: from a GenEval-format JSONL ``path``, else ``n`` generated prompts of the
    ``split`` of ``family`` (default: the registered id's ``prompt_source`` when it is generated, else
    ``"geneval"``). ``"mixed"`` means ``n // 2`` GenEval-style then ``n - n // 2`` long prompts, as in the env
    (:func:`poser_env.components.generated_pool`). ``n`` = 0 means all (the default pool size of the split)."""
    if path is not None:
        specs = read_geneval_jsonl(str(path))
        return specs[:n] if n else specs
    fam = family
    if fam is None:
        src = registered_config(env_id).prompt_source if env_id in poser_env.ENV_IDS else "geneval"
        fam = src if src in GENERATED_SOURCES else "geneval"
    return list(generated_pool(fam, split, pool_size(split, n or None)))


def baseline_names(env_id: str = MAIN_ENV_ID, env_kwargs: Mapping[str, Any] | None = None, *,
                   deep_oracle: bool = False) -> list[str]:
    """Every baseline for an env: random, each single text-to-image expert, the fixed pipeline starting with each
    text-to-image expert (``fixed:<expert>``), critic-greedy, oracle, and with ``deep_oracle`` the expensive
    ``oracle-deep`` (thousands of simulated steps per prompt)."""
    env = gym.make(env_id, **dict(env_kwargs or {}))
    u = unwrap(env)
    u.prepare()
    singles = [f"single:{e.name}" for e in u.experts if e.kind == "text-to-image"]
    env.close()
    fixed = [f"fixed:{s.split(':', 1)[1]}" for s in singles]
    return ["random", *singles, *fixed, "critic-greedy", "oracle", *(["oracle-deep"] if deep_oracle else [])]


_BEST_T2I: dict[str, str] = {}
#: Files :func:`generate_one` writes into its output folder.
GENERATE_FILES: tuple[str, ...] = ("final.png", "contact_sheet.png", "trace.json")


def best_single_expert(env_id: str, env_kwargs: Mapping[str, Any] | None = None, *, n: int = 60,
                       family: str = "geneval") -> str:
    """The text-to-image expert with the best judge pass rate on ``n`` TRAIN prompts (cached per env)."""
    key = json.dumps([env_id, dict(env_kwargs or {}), n, family], sort_keys=True, default=str)
    if key in _BEST_T2I:
        return _BEST_T2I[key]
    specs = load_prompts(env_id, split="train", n=n, family=family)
    singles = [b for b in baseline_names(env_id, env_kwargs) if b.startswith("single:")]
    scores = {}
    for s in singles:
        res = evaluate(functools.partial(_baseline_for_run, s), specs, env_id=env_id, env_kwargs=env_kwargs,
                       runs=(0,), seed=500)
        scores[s] = summarize(res)[s].overall
    best = max(scores, key=lambda k: scores[k]).split(":", 1)[1]
    _BEST_T2I[key] = best
    return best


_BEST_PER_OP: dict[str, dict[str, str]] = {}
#: Seconds :func:`best_experts_per_op` took, per cache key (0 for an env where every op has one expert).
BEST_PER_OP_SECONDS: dict[str, float] = {}


def best_experts_per_op(env_id: str, env_kwargs: Mapping[str, Any] | None = None, *, n: int = 40,
                        t2i: str | None = None, family: str | None = None) -> dict[str, str]:
    """The single best image-to-image expert for each editing op, measured on ``n`` TRAIN prompts of the env's
    prompt family (``family``: default the registered id's generated ``prompt_source``, else ``env_kwargs``') inside the fixed pipeline
    (:class:`agents.policies.FixedPipelinePolicy` starting with ``t2i``; default :func:`best_single_expert`).

    Coordinate-wise, one pass in :data:`poser_env.core.commands.OPS` order: every op starts at the first supporting
    expert in registry order; for each op with more than one supporting expert each candidate runs the pipeline
    (the other ops at their current choice) and the best by judge all-assertions pass rate, then mean judge
    alignment, is kept (ties keep the earlier choice). An op with one supporting expert costs no episode. Cached
    in-process per arguments; the seconds it took are in :data:`BEST_PER_OP_SECONDS`.

    Returns:
        op -> expert name, for every op some image-to-image expert of the env supports.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be an int >= 1 (train prompts per candidate).")
    kw = dict(env_kwargs or {})
    key = json.dumps([env_id, kw, n, t2i, family], sort_keys=True, default=str)
    if key in _BEST_PER_OP:
        return dict(_BEST_PER_OP[key])
    t0 = time.perf_counter()
    env = gym.make(env_id, **kw)
    u = unwrap(env)
    u.prepare()
    editors = [e for e in u.experts if e.kind == "image-to-image"]
    env.close()
    candidates = {op: [e.name for e in editors if e.supports(op)] for op in OPS}
    candidates = {op: c for op, c in candidates.items() if c}
    choice = {op: c[0] for op, c in candidates.items()}
    contested = [op for op, c in candidates.items() if len(c) > 1]
    if contested:
        if t2i is None:
            t2i = best_single_expert(env_id, env_kwargs)
        if family is None:
            srcs = [registered_config(env_id).prompt_source if env_id in poser_env.ENV_IDS else None,
                    kw.get("prompt_source")]
            family = next((f for f in srcs if isinstance(f, str) and f in GENERATED_SOURCES), "geneval")
        specs = load_prompts(env_id, split="train", n=n, family=family)

        def score(per_op: Mapping[str, str]) -> tuple[float, float]:
            res = evaluate(lambda run: FixedPipelinePolicy(str(t2i), per_op), specs, env_id=env_id, env_kwargs=kw,
                           runs=(0,), seed=500, method="fixed")
            return (float(sum(r.judge_pass for r in res)) / len(res),
                    float(sum(0.0 if math.isnan(r.judge_alignment) else r.judge_alignment for r in res)) / len(res))

        for op in contested:
            best_score = score(choice)
            for cand in candidates[op][1:]:
                trial = {**choice, op: cand}
                s = score(trial)
                if s > best_score:
                    best_score, choice = s, trial
    _BEST_PER_OP[key] = dict(choice)
    BEST_PER_OP_SECONDS[key] = time.perf_counter() - t0
    return dict(choice)


def _baseline_for_run(name: str, run: int, **kwargs: Any) -> Policy:
    return make_baseline(name, seed=run, **kwargs)


def _model_for_run(path: Path, algo: str, name: str, trust_pickle: bool, run: int) -> Policy:
    return _model_policy(path, algo, name, trust_pickle=trust_pickle)


def _model_policy(path: Path, algo: str, name: str, *, trust_pickle: bool = False) -> Policy:
    """A trained policy: the safe format (policy.json / .safetensors / run folder), or an SB3 zip if trusted."""
    if Path(path).suffix == ".zip":

        return SB3Policy(load_model(str(path), algo, trust_pickle=trust_pickle), name=name)

    return SB3Policy(load_policy(path), name=name)


def check_model_file(path: str | Path, env: gym.Env[Any, Any], *, env_id: str, algo: str = "maskable-ppo",
                     trust_pickle: bool = False) -> None:
    """Check, before any episode runs, that a model file loads and fits ``env`` (made with ``env_id``).

    Raises:
        FileNotFoundError: no such file. agents.policy_io.UnsafePolicyError: an SB3 zip without ``trust_pickle``.
        agents.policy_io.PolicyFileError / PolicyMismatchError: a damaged file, or one trained for another env id,
        spaces, text encoder or experts (the message says which and the fix).
    """

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--policy {str(p)!r} does not exist; pass a policy.json written by `poser train` "
                                "(or its run folder).")
    if p.suffix != ".zip":
        config, cfg_path, _ = read_config(p)
        check_compatible(config, env, env_id=env_id, source=f"policy {str(cfg_path)!r}")
        return

    model = load_model(p, algo, trust_pickle=trust_pickle)
    for attr in ("observation_space", "action_space"):
        if describe_space(getattr(model, attr)) != describe_space(getattr(env, attr)):
            raise PolicyMismatchError(f"policy {str(p)!r}'s {attr} {getattr(model, attr)} differs from env {env_id!r}'s "
                                      f"{getattr(env, attr)}; evaluate it on the env (and env arguments) it was "
                                      "trained on.")


def evaluate_methods(
    methods: Sequence[str],
    specs: Sequence[Spec | str],
    *,
    env_id: str = MAIN_ENV_ID,
    algo: str = "maskable-ppo",
    env_kwargs: Mapping[str, Any] | None = None,
    images: int = 1,
    runs: int = 3,
    progress: bool = True,
    oracle_kwargs: Mapping[str, Any] | None = None,
    learned_name: str = "learned",
    workers: int = 1,
    deep_oracle_kwargs: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
    per_op_n: int = 40,
) -> list[EpisodeResult]:
    """Evaluate baselines (names, or ``"baselines"`` for all) and trained models (paths: ``policy.json`` or its run
    folder; SB3 ``.zip`` files only with ``trust_pickle=True``, since loading them runs pickled code).

    Every model file is loaded and checked against the env (id, spaces, text encoder, experts) before any
    episode runs.

    Baselines run ``runs`` times (run k seeds the episodes and the random baseline). All model files form one
    method, ``learned_name``, each file one run (train one file per seed). ``workers`` > 1 evaluates
    (method, run) jobs in parallel processes; results are the same and in the same order as with one worker.

    The fixed pipelines (``fixed``, ``fixed:<expert>``) all use the expert per op of :func:`best_experts_per_op`
    (measured once on the train split, with the best single expert first); ``oracle_kwargs`` /
    ``deep_oracle_kwargs`` go to ``oracle`` / ``oracle-deep``; ``per_op_n``: train prompts per candidate expert
    when measuring the fixed pipelines' expert per op.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an int >= 1 (parallel evaluation processes).")
    for name, value in (("runs", runs), ("images", images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an int >= 1.")
    if not specs:
        raise ValueError("specs is empty: no prompts to evaluate on (check --n-prompts / --prompts).")

    models = [m for m in methods if m != "baselines" and is_policy_path(m)]
    if models:
        env = gym.make(env_id, **dict(env_kwargs or {}))
        try:
            for m in models:
                check_model_file(m, env, env_id=env_id, algo=algo, trust_pickle=trust_pickle)
        finally:
            env.close()
    expanded: list[str] = []
    for m in methods:
        expanded += baseline_names(env_id, env_kwargs) if m == "baselines" else [m]
    jobs: list[tuple[str, Callable[[int], Policy], int]] = []
    best = None
    per_op: dict[str, str] | None = None
    for m in expanded:
        if m in models:
            continue
        kwargs: dict[str, Any] = {}
        if m == "fixed":
            best = best or best_single_expert(env_id, env_kwargs)
            kwargs["best_t2i"] = best
        if m == "fixed" or m.startswith("fixed:"):
            per_op = per_op if per_op is not None else best_experts_per_op(env_id, env_kwargs, n=per_op_n)
            kwargs["per_op"] = per_op
        if m == "oracle":
            kwargs.update(oracle_kwargs or {})
        if m == "oracle-deep":
            kwargs.update(deep_oracle_kwargs or {})
        jobs += [(m, functools.partial(_baseline_for_run, m, **kwargs), run) for run in range(runs)]
    for i, f in enumerate(Path(m) for m in expanded if m in models):
        jobs.append((learned_name, functools.partial(_model_for_run, f, algo, learned_name, trust_pickle), i))
    common: dict[str, Any] = {"env_id": env_id, "env_kwargs": dict(env_kwargs or {}), "images_per_prompt": images}
    bar, tick = _progress(len(jobs) * len(specs) * images, progress)
    try:
        if workers == 1:
            chunks = [evaluate(make, specs, runs=(run,), method=m, progress=tick, **common) for m, make, run in jobs]
        else:

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_eval_job, m, make, run, list(specs), common) for m, make, run in jobs]
                chunks = []
                for fut in futures:
                    chunks.append(fut.result())
                    if tick is not None:
                        tick(len(specs) * images)
    finally:
        if bar is not None:
            bar.stop()
    return [r for chunk in chunks for r in chunk]


def _eval_job(method: str, make: Callable[[int], Policy], run: int, specs: list[Spec | str],
              common: dict[str, Any]) -> list[EpisodeResult]:
    import torch

    torch.set_num_threads(1)
    return evaluate(make, specs, runs=(run,), method=method, **common)


def _progress(total: int, enabled: bool) -> tuple[Any, Callable[[int], None] | None]:
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
    task = bar.add_task("episodes", total=total)
    bar.start()
    return bar, lambda n: bar.advance(task, n)


def _resolve_policy(policy: str, env_id: str, algo: str, env_kwargs: Mapping[str, Any] | None,
                    trust_pickle: bool = False) -> Policy:

    if is_policy_path(policy):
        return _model_policy(Path(policy), algo, "learned", trust_pickle=trust_pickle)
    kw: dict[str, Any] = {}
    if policy == "fixed":
        kw["best_t2i"] = best_single_expert(env_id, env_kwargs, n=30)
    if policy == "fixed" or policy.startswith("fixed:"):
        t2i = kw["best_t2i"] if policy == "fixed" else policy.split(":", 1)[1]
        kw["per_op"] = best_experts_per_op(env_id, env_kwargs, n=20, t2i=t2i)
    return make_baseline(policy, **kw)


def generate_one(prompt: str | Spec, *, policy: str = "fixed", env_id: str = MAIN_ENV_ID, algo: str = "maskable-ppo",
                 seed: int = 0, out: str | Path = "runs/generate",
                 env_kwargs: Mapping[str, Any] | None = None, overwrite: bool = False,
                 trust_pickle: bool = False) -> list[Path]:
    """Run a policy on one prompt; write ``final.png``, ``contact_sheet.png`` (every step with its expert, command
    and assertions), ``episode.gif`` (the same, one captioned frame per step) and ``trace.json``. Returns the
    paths.

    The prompt, the output folder and the policy file are checked before anything runs. A folder that already
    holds a previous run's files is refused unless ``overwrite`` (then those files are removed first, so no
    stale ``final.png`` is left beside the new trace)."""
    from PIL import Image


    text = prompt.prompt if isinstance(prompt, Spec) else prompt
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"prompt={prompt!r} is empty; pass a prompt such as 'a photo of two red cups'.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out={str(out)!r} is a file; pass a folder.")
    stale = [out / f for f in GENERATE_FILES if (out / f).exists()]
    if stale and not overwrite:
        raise FileExistsError(f"out={str(out)!r} already holds a previous run ({', '.join(p.name for p in stale)}); "
                              "pass --overwrite to replace it or choose another --out.")
    env = gym.make(env_id, **dict(env_kwargs or {}))

    if is_policy_path(policy):  # a bad or mismatched model file fails here, before the episode
        check_model_file(policy, env, env_id=env_id, algo=algo, trust_pickle=trust_pickle)
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed, options={"prompt": prompt})  # an unparseable prompt fails here
    assertions = list(info.get("assertions", []))
    pol = _resolve_policy(policy, env_id, algo, env_kwargs, trust_pickle=trust_pickle)
    for p in stale:
        p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    pol.reset(env)
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(pol.act(env, obs))
        done = term or trunc
    u = unwrap(env)
    trace = u.trace
    paths = []
    if u.canvas is not None:
        Image.fromarray(u.canvas).save(out / "final.png")
        paths.append(out / "final.png")
    text = prompt.prompt if isinstance(prompt, Spec) else prompt
    contact_sheet(trace, prompt=text, assertions=assertions).save(out / "contact_sheet.png")
    paths.append(out / "contact_sheet.png")
    if trace:
        paths.append(save_gif(episode_frames(trace, prompt=text, assertions=assertions), out / "episode.gif", fps=1.0))
    light = [{k: v for k, v in r.items() if k != "image"} for r in trace]
    (out / "trace.json").write_text(json.dumps(
        {"prompt": text, "policy": policy, "seed": seed, "assertions": assertions, "is_success": info.get("is_success"),
         "judge": info.get("judge"), "feedback": info.get("feedback"), "wall_time": time.perf_counter() - t0,
         "steps": light}, indent=1, default=str))
    paths.append(out / "trace.json")
    env.close()
    return paths


def report_from_dir(run_dir: str | Path) -> Path:
    """Rewrite ``report.md`` and ``report.html`` from a main-job folder: ``results.json`` (required), and when
    present ``curves.json``, ``config.json`` and ``examples/*/contact_sheet.png`` (with ``episode.gif`` and
    ``trace.json`` beside each)."""

    d = Path(run_dir)
    if not (d / "results.json").is_file():
        raise FileNotFoundError(f"run_dir={str(d)!r} has no results.json; run `poser main --out {d}` first.")
    data = json.loads((d / "results.json").read_text())
    results = [EpisodeResult(**{**r, "experts": tuple(r["experts"])}) for r in data["episodes"]]
    summaries = summarize(results)  # recomputed from the episodes, the one source of truth
    curves = json.loads((d / "curves.json").read_text()) if (d / "curves.json").is_file() else None
    sheets = sorted(d.glob("examples/*/contact_sheet.png"))
    config = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else None
    return write_report(d, results, summaries, curves=curves, learned="learned", contact_sheets=sheets, config=config)


def _reusable(folder: Path, seeds: int, *, env_id: str, env_kwargs: Mapping[str, Any], steps: int,
              teacher: str | None, teacher_kwargs: Mapping[str, Any] | None) -> list[Path] | None:
    """The ``policy.json`` of seeds 0..seeds-1 in ``folder`` when every one finished training with this recipe
    (env id and kwargs, steps, teacher and its kwargs, read from its ``train.json``), else None."""
    out: list[Path] = []
    for s in range(seeds):
        run = folder / f"seed{s}"
        pol, hist = run / "policy.json", run / "train.json"
        if not (pol.is_file() and hist.is_file()):
            return None
        h = json.loads(hist.read_text())
        warm = h.get("warm_start") or {}
        same = (h.get("env_id") == env_id and dict(h.get("env_kwargs") or {}) == dict(env_kwargs)
                and int(h.get("steps", -1)) == steps and warm.get("teacher") == teacher
                and dict(warm.get("teacher_kwargs") or {}) == dict(teacher_kwargs or {})
                and all(r.get("status") == "finished" for r in h.get("runs", [])))
        if not same:
            return None
        out.append(pol)
    return out


def run_main(out: str | Path = "runs/main", *, steps: int = 100_000, seeds: int = 3, n_prompts: int = 100,
             quick: bool = False, workers: int = 3, warm_start: bool = True, teacher: str | None = None,
             teacher_episodes: int = 300, deep_oracle_prompts: int = 20, ablation: bool = False,
             reuse: bool = False) -> Path:
    """Train MaskablePPO in the main world (:data:`MAIN_ENV_ID`: SceneSim v1, GenEval-style + long prompts),
    evaluate it against every baseline on the test split, and write ``report.md``. Returns the report's path.

    - With ``warm_start`` each seed first clones ``teacher`` (default: the fixed pipeline that starts with the best
      single expert on the TRAIN split and uses the best expert per op, :func:`best_experts_per_op`;
      :mod:`agents.imitation`, ``teacher_episodes`` TRAIN episodes), then trains with PPO on the env's reward.
      (Critic-greedy, which probes every allowed pair, is a poor teacher in the v1 world: 0.10 all-assertions on
      long prompts against the fixed pipelines' 0.30, ``poser bench headroom``.)
    - ``ablation``: the same recipe with ``feedback_in_obs=False`` (method :data:`agents.report.NO_FEEDBACK`),
      evaluated on the same prompts and runs, for the "feedback is used" claim.
    - ``deep_oracle_prompts``: the first N long test prompts also run the deep oracle (search over the whole step
      budget with the judge, one run): the ceiling of the claims table. 0 skips it.
    - Fixed pipelines use the best expert per op measured on the train split
      (:func:`best_experts_per_op`).
    - ``reuse``: keep the models already trained in ``out`` by the same recipe (same env, steps, teacher and
      teacher kwargs in each seed's ``train.json``) instead of training them again; e.g. ``--ablation --reuse``
      after a plain run trains only the ablation, then evaluates everything again."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        steps, seeds, n_prompts = min(steps, 512), min(seeds, 2), min(n_prompts, 4)
        teacher_episodes, deep_oracle_prompts = min(teacher_episodes, 4), min(deep_oracle_prompts, 1)
    t0 = time.perf_counter()
    env_id = MAIN_ENV_ID
    env_kwargs: dict[str, Any] = {}  # the configuration is the registered id
    per_op_n = 4 if quick else 40
    teach = (teacher or f"fixed:{best_single_expert(env_id, env_kwargs)}") if warm_start else None
    teach_kwargs = ({"per_op": best_experts_per_op(env_id, env_kwargs, n=per_op_n)}
                    if teach is not None and teach.startswith("fixed:") else None)
    train = functools.partial(train_runs, env_id=env_id, algo="maskable-ppo", steps=steps, seeds=list(range(seeds)),
                              progress=workers == 1, workers=workers, warm_start=teach,
                              warm_start_episodes=teacher_episodes, warm_start_kwargs=teach_kwargs, overwrite=True)
    def trained(folder: Path, kw: dict[str, Any]) -> list[Path]:
        found = _reusable(folder, seeds, env_id=env_id, env_kwargs=kw, steps=steps, teacher=teach,
                          teacher_kwargs=teach_kwargs) if reuse else None
        return found if found is not None else train(out=folder, env_kwargs=kw)

    models = trained(out / "maskable-ppo", env_kwargs)
    nofb_kwargs = {"feedback_in_obs": False}
    ablated = trained(out / "no-feedback", nofb_kwargs) if ablation else []
    t_train = time.perf_counter() - t0
    curves = {}
    for m in models:
        cf = m.parent / "curve.json"
        if cf.is_file():
            curves[m.parent.name] = json.loads(cf.read_text())
    (out / "curves.json").write_text(json.dumps(curves))
    specs = load_prompts(env_id, split="test", n=2 * n_prompts, family="mixed")  # n_prompts per family
    oracle_kwargs = {"depth": 2, "beam": 2} if quick else {"depth": 4, "beam": 3}
    deep_kwargs = {"max_sim_steps": 200} if quick else {}
    t1 = time.perf_counter()
    results = evaluate_methods(["baselines", *[str(m) for m in models]], specs, env_id=env_id,
                               env_kwargs=env_kwargs, runs=seeds, progress=True, oracle_kwargs=oracle_kwargs,
                               workers=workers, per_op_n=per_op_n)
    if ablated:
        results += evaluate_methods([str(m) for m in ablated], specs, env_id=env_id, env_kwargs=nofb_kwargs,
                                    runs=seeds, progress=False, learned_name=NO_FEEDBACK, workers=workers)
    deep_specs = [s for s in specs if s.tag not in GENEVAL_TAGS][:deep_oracle_prompts]
    if deep_specs:
        results += evaluate_methods(["oracle-deep"], deep_specs, env_id=env_id, env_kwargs=env_kwargs, runs=1,
                                    progress=False, deep_oracle_kwargs=deep_kwargs, workers=workers)
    t_eval = time.perf_counter() - t1
    summaries = summarize(results)
    save_results(out / "results.json", results, summaries)
    sheets = []
    examples = [specs[0], specs[len(specs) // 2 + 1]] if len(specs) > 2 else list(specs)
    for i, spec in enumerate(examples):
        paths = generate_one(spec, policy=str(models[0]), seed=i, out=out / "examples" / f"example-{i}",
                             overwrite=True)
        sheets += [p for p in paths if p.name == "contact_sheet.png"]
    config = {"env_id": env_id, "env_kwargs": env_kwargs, "algo": "maskable-ppo", "steps_per_seed": steps,
              "warm_start": teach, "teacher_episodes": teacher_episodes if teach else 0,
              "seeds": seeds, "test_prompts_per_family": n_prompts, "oracle": oracle_kwargs,
              "deep_oracle_prompts": len(deep_specs), "ablation": NO_FEEDBACK if ablated else None,
              "fixed_per_op": best_experts_per_op(env_id, env_kwargs, n=per_op_n),
              "train_seconds": round(t_train, 1), "eval_seconds": round(t_eval, 1)}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    path = write_report(out, results, summaries, curves=curves, learned="learned", contact_sheets=sheets,
                        config=config)
    print(summary_table(summaries))
    return path


#: Ablations of issue 7: name -> (env id, algorithm, env kwargs on top of the id's, warm start from the
#: fixed pipeline). DQN has no warm start (see :mod:`agents.imitation`).
ABLATIONS: dict[str, tuple[str, str, dict[str, Any], bool]] = {
    "ours: MaskablePPO, warm start, feedback in obs": (MAIN_ENV_ID, "maskable-ppo", {}, True),
    "no warm start (PPO from scratch)": (MAIN_ENV_ID, "maskable-ppo", {}, False),
    "no feedback in obs": (MAIN_ENV_ID, "maskable-ppo", {"feedback_in_obs": False}, True),
    "feedback + thumbnail": (MAIN_ENV_ID, "maskable-ppo", {"thumbnail": True, "thumbnail_size": 32}, True),
    "cost weight 0": (MAIN_ENV_ID, "maskable-ppo", {"cost_weight": 0.0}, True),
    "PPO without masks": (MAIN_ENV_ID, "ppo", {}, True),
    "paper: DQN, text-only state, 6 steps": ("poser_env/ImagePoserPaper-v0", "dqn",
                                            {"prompt_source": "mixed", "text_encoder": "hashing"}, False),
}


def run_ablations(out: str | Path = "runs/ablations", *, steps: int = 20_000, seeds: int = 2, n_prompts: int = 60,
                  names: Sequence[str] | None = None, workers: int = 2, warm_start_episodes: int = 300) -> Path:
    """Train and evaluate each ablation (see :data:`ABLATIONS`) on the same test prompts; write
    ``ablations.md`` and ``ablations.json``. Judge-scored; calls and cost per prompt. Returns the markdown path."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(names or ABLATIONS)
    unknown = [n for n in chosen if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"ablations {unknown} are unknown; choose from {list(ABLATIONS)}.")
    specs = load_prompts(MAIN_ENV_ID, split="test", n=2 * n_prompts, family="mixed")  # n_prompts per family
    teacher = f"fixed:{best_single_expert(MAIN_ENV_ID)}"
    rows: dict[str, Any] = {}
    for i, name in enumerate(chosen):
        env_id, algo, extra, warm = ABLATIONS[name]
        kw = dict(extra)
        t0 = time.perf_counter()
        models = train_runs(env_id=env_id, algo=algo, steps=steps, seeds=list(range(seeds)), out=out / f"abl{i}",
                            env_kwargs=kw, workers=workers, warm_start=teacher if warm else None,
                            warm_start_episodes=warm_start_episodes, overwrite=True)
        res = evaluate_methods([str(m) for m in models], specs, env_id=env_id, algo=algo, env_kwargs=kw,
                               progress=False, learned_name=name, workers=workers)
        s = summarize(res)[name]
        rows[name] = {"env_id": env_id, "algo": algo, "env_kwargs": extra, "warm_start": teacher if warm else None,
                      "geneval_overall": s.geneval_overall,
                      "geneval_overall_ci95": s.geneval_overall_ci, "long_all": s.long_all,
                      "long_all_ci95": s.long_all_ci, "assertion_accuracy": s.assertion_accuracy,
                      "mean_calls": s.mean_calls, "mean_cost": s.mean_cost, "seeds": seeds, "steps": steps,
                      "seconds": round(time.perf_counter() - t0, 1)}
    (out / "ablations.json").write_text(json.dumps(rows, indent=1))
    lines = ["| ablation | GenEval-style overall | long: all assertions | assertion acc. | calls | cost |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['geneval_overall']:.3f} ± {r['geneval_overall_ci95']:.3f} | "
                     f"{r['long_all']:.3f} ± {r['long_all_ci95']:.3f} | {r['assertion_accuracy']:.3f} | "
                     f"{r['mean_calls']:.2f} | {r['mean_cost']:.2f} |")
    md = out / "ablations.md"
    md.write_text(
        f"Ablations ({steps} training steps x {seeds} seeds each; {len(specs)} test prompts, GenEval-style and "
        "long; judge-scored; ± = 95% CI over seeds). SceneSim results.\n\n" + "\n".join(lines) + "\n")
    return md
