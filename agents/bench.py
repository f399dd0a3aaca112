"""``poser bench``: benchmark files (GenEval-format, T2I-CompBench-style, long prompts) and speed."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import poser_env  # noqa: F401  (registers the env ids)
from agents.algos import make_maskable_ppo, make_vec_env
from agents.evaluate import EpisodeResult, MethodSummary, ci95, paired_difference, run_episode, summarize
from agents.pipeline import (
    MAIN_ENV_ID,
    MAIN_ENV_KWARGS,
    baseline_names,
    best_experts_per_op,
    evaluate_methods,
    load_prompts,
)
from agents.policies import DeepOraclePolicy, make_baseline
from agents.stats import rliable_json, rliable_markdown, rliable_summary
from experts.registry import default_expert_names, make_expert
from experts.sim.render import clear_cache as clear_render_cache
from poser_env.core.parser import parse
from poser_env.core.spec import Spec, SpecError, read_geneval_jsonl
from poser_env.decompose_eval import decompose_report
from poser_env.decomposer import make_decomposer
from poser_env.encoders import make_text_encoder, minilm_available
from poser_env.prompts import long_prompts
from poser_env.vector import make_vector_env

__all__ = ["BENCH_KINDS", "HEADROOM_GENEVAL_ENV", "HEADROOM_LONG_ENV", "BenchKind", "bench_decompose", "bench_file",
           "bench_headroom", "bench_json", "bench_markdown", "bench_perf", "load_bench_prompts",
           "paired_table",
           "rliable_section"]


@dataclasses.dataclass(frozen=True)
class BenchKind:
    """One benchmark family of ``poser bench <name>``: how its files are read and its command's defaults.

    Attributes:
        name: ``"geneval"``, ``"compbench"`` or ``"long"`` (the subcommand and ``kind`` of :func:`bench_file`).
        summary: The command's help line.
        files_help: Help of the file arguments.
        needs_file: Whether at least one file is required (``long`` defaults to the generated test split).
        images: Default images per prompt.
        limit: Default prompt limit (0 = all).
        limit_help: Help of ``--limit``.
    """

    name: str
    summary: str
    files_help: str
    needs_file: bool
    images: int
    limit: int
    limit_help: str


#: The benchmark families, one parametrized ``poser bench`` command each (see :mod:`agents.cli`).
BENCH_KINDS: dict[str, BenchKind] = {
    "geneval": BenchKind(
        "geneval", "Evaluate on GenEval-format files (judge and critic side by side); write JSON and a markdown table.",
        "GenEval-format JSONL files (e.g. ../shared/benchmarks/geneval/evaluation_metadata.jsonl).", True, 4, 0,
        "Use only the first N prompts of each file (0 = all)."),
    "compbench": BenchKind(
        "compbench", "Evaluate on T2I-CompBench-style text files, parsed by the decomposer, scored per category (file).",
        "T2I-CompBench-style text files (one prompt a line).", True, 1, 50, "Prompts per file (0 = all)."),
    "long": BenchKind(
        "long", "Long prompts: all-assertions rate and per-assertion accuracy.",
        "Long-prompt JSONL files (default: the generated test split).", False, 1, 100, "Prompts (0 = all)."),
}


def load_bench_prompts(files: Path | Sequence[Path] | None, kind: str, *, limit: int = 0) -> list[Any]:
    """Prompts of a benchmark: GenEval-format JSONL (ground truth from the metadata), T2I-CompBench-style text
    files (one prompt a line, parsed by the rule decomposer; the category is the file name without a ``_val``/
    ``_train`` suffix), or a long-prompt JSONL (default: the generated long test split)."""

    if kind not in BENCH_KINDS:
        raise ValueError(f"kind={kind!r} must be one of {list(BENCH_KINDS)}.")
    if files is not None and not isinstance(files, (str, Path)) and not list(files):
        files = None
    if files is None:
        if BENCH_KINDS[kind].needs_file:
            raise ValueError(f"kind={kind!r} needs a file; pass the benchmark's path.")

        return list(long_prompts("test", limit or 100))
    paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"benchmark file {str(p)!r} does not exist; pass the path of the file.")
    if kind in ("geneval", "long"):
        specs: list[Spec] = []
        for p in paths:
            got = read_geneval_jsonl(str(p))
            if kind == "long":
                got = [s if s.tag else dataclasses.replace(s, tag="long") for s in got]
            specs += got[:limit] if limit else got
        return specs
    out: list[Spec] = []
    for p in paths:
        category = p.stem.removesuffix("_val").removesuffix("_train")
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        kept = 0
        for ln in lines:
            try:
                s = parse(ln)
            except SpecError:
                continue  # a prompt the parser cannot use is skipped
            out.append(dataclasses.replace(s, tag=category))
            kept += 1
            if limit and kept >= limit:
                break
    return out


def bench_json(summary: MethodSummary, results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """The benchmark JSON of one method: overall, per_tag, mean_calls, mean_cost, n_prompts, method, CIs,
    critic-scored scores side by side, per-assertion accuracy, wall time."""
    rows = [r for r in results if r.method == summary.method]
    return {
        "method": summary.method,
        "overall": summary.overall,
        "overall_ci95": summary.overall_ci,
        "per_tag": summary.per_tag,
        "per_tag_ci95": summary.per_tag_ci,
        "critic_overall": summary.critic_overall,
        "critic_per_tag": summary.critic_per_tag,
        "assertion_accuracy": summary.assertion_accuracy,
        "all_assertions_rate": float(np.mean([r.judge_pass for r in rows])) if rows else float("nan"),
        "mean_calls": summary.mean_calls,
        "mean_cost": summary.mean_cost,
        "mean_wall_time_s": summary.mean_wall_time,
        "n_prompts": summary.n_prompts,
        "n_episodes": summary.n_episodes,
        "n_runs": summary.n_runs,
    }


def bench_markdown(summaries: dict[str, MethodSummary], results: Sequence[EpisodeResult]) -> str:
    """Markdown: overall ± CI (judge), critic overall, per-assertion accuracy, per tag, calls, cost, wall time;
    then, when a ``learned`` method was evaluated, its paired differences to every other method
    (:func:`paired_table`)."""
    tags = sorted({t for s in summaries.values() for t in s.per_tag})
    head = ["method", "overall (judge)", "overall (critic)", "assertion acc.", *tags, "calls", "cost", "s/episode"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries.values():
        row = [s.method, f"{s.overall:.3f} ± {s.overall_ci:.3f}", f"{s.critic_overall:.3f}",
               f"{s.assertion_accuracy:.3f}"]
        row += [f"{s.per_tag[t]:.3f}" if t in s.per_tag else "–" for t in tags]
        row += [f"{s.mean_calls:.2f}", f"{s.mean_cost:.2f}", f"{s.mean_wall_time:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    paired = paired_table(summaries, results)
    if paired:
        lines += ["", paired]
    return "\n".join(lines)


def paired_table(summaries: dict[str, MethodSummary], results: Sequence[EpisodeResult],
                 learned: str = "learned") -> str | None:
    """Markdown: ``learned`` minus every other method on the judge's overall score, paired run by run (same
    prompts and episode seeds), with the Student-t 95% half-width over runs; None without ``learned`` or with
    fewer than 2 runs."""
    if learned not in summaries:
        return None
    rows = []
    for m in summaries:
        if m == learned:
            continue
        d = paired_difference(results, learned, m, "overall")
        if d is not None and d[2] >= 2:
            mean, half, n = d
            rows.append(f"| {m} | {mean:+.3f} ± {half:.3f} | {mean - half:+.3f} to {mean + half:+.3f} | {n} |")
    if not rows:
        return None
    return "\n".join([f"Paired differences, {learned} minus each method (overall, same prompts and seeds; 95% CI "
                      "over runs):", "", "| method | difference | 95% CI | runs |", "|---|---|---|---|", *rows])


def rliable_section(results: Sequence[EpisodeResult], learned: str = "learned"
                    ) -> tuple[dict[str, Any], str] | None:
    """rliable's aggregates of ``results`` (:func:`agents.stats.rliable_summary`: IQM and mean with 95%
    stratified bootstrap intervals, probability of improvement of ``learned`` over each method) as (JSON, markdown
    section); a markdown note and no JSON when rliable is not installed; None when no method covers every tag."""

    try:
        s = rliable_summary(results, reference=learned)
    except ImportError as e:
        return {}, f"rliable aggregates skipped: {e}"
    if s is None:
        return None
    return rliable_json(s), "Aggregate results (rliable):\n\n" + rliable_markdown(s)


def bench_file(
    files: Path | Sequence[Path] | None,
    *,
    kind: str,
    methods: Sequence[str],
    algo: str = "maskable-ppo",
    images: int = 4,
    runs: int = 3,
    limit: int = 0,
    out: str | Path = "runs/bench",
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    workers: int = 1,
    trust_pickle: bool = False,
) -> str:
    """Evaluate methods on a benchmark; write ``out/bench.json`` and ``out/bench.md``; return the markdown. Both
    end with rliable's aggregates (:func:`rliable_section`; key ``"rliable"`` in the JSON).

    ``env_id`` defaults to the main job's world (``poser_env/ImagePoserMain-v0``); ``workers`` > 1 evaluates
    (method, run) jobs in parallel processes (same results as one worker)."""

    env_id = MAIN_ENV_ID if env_id is None else env_id

    specs = load_bench_prompts(files, kind, limit=limit)
    if not specs:
        raise ValueError(f"no usable prompts in {files!s}; check the file format for kind={kind!r}.")
    kw = dict(env_kwargs or {})
    kw["prompt_source"] = "geneval"  # the benchmark's prompts are passed explicitly; no pool is generated
    t0 = time.perf_counter()
    results = evaluate_methods(methods, specs, env_id=env_id, algo=algo, env_kwargs=kw, images=images, runs=runs,
                               progress=progress, workers=workers, trust_pickle=trust_pickle)
    summaries = summarize(results)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": kind, "files": [str(f) for f in ([files] if isinstance(files, (str, Path)) else files or [])],
            "images_per_prompt": images, "runs": runs, "seconds": round(time.perf_counter() - t0, 1),
            "methods": {m: bench_json(s, results) for m, s in summaries.items()},
            "episodes": [asdict(r) for r in results]}
    md = bench_markdown(summaries, results)
    rl_md = rliable_section(results)
    if rl_md is not None:
        data["rliable"], text = rl_md
        md += "\n\n" + text
    (outp / "bench.json").write_text(json.dumps(data, indent=1))
    (outp / "bench.md").write_text(md + "\n")
    return md


def bench_perf(steps: int = 2000, *, seed: int = 0, vector_steps: int = 0, ppo_steps: int = 0,
               diffusers: bool = True, glyph_variants: int = 8, noise_bank: bool = True) -> str:
    """Speed, side by side in one run (a markdown table).

    - ``CartPole-v1`` random steps per second, as a reference for the machine;
    - SceneSim (``poser_env/ImagePoser-v0``, 128x128) with the hashing encoder, random allowed actions after an
      untimed warm-up: steps per second of wall time and per core (steps / CPU seconds of this thread), the
      median step, the median expert and critic call (calls only; STOP and masked no-ops excluded), and the env's
      overhead ``(step - expert - critic) / (expert + critic)`` summed over the run;
    - ``glyph_variants`` > 0 or ``noise_bank``: the same with every expert's card set to the opt-in fields
      ``glyph_variants`` (bounded glyph shapes) and ``noise_bank`` (degradation noise from a fixed field, see
      :class:`experts.sim.experts.SimProfile`), once with hashing and once with MiniLM steady state;
      their render caches stay as the warm-up left them (at most ``glyph_variants`` shapes per noun: the cache is
      bounded, so steady state is the regime that matters);
    - the same with MiniLM (when installed): cold (an empty text cache, no disk cache) and steady state (the same
      episodes again with the embeddings cached, glyph caches cleared so the expert does the same work);
    - the share of ``poser_env/ImagePoser-v0`` steps whose expert call is <= 2 ms, and whether each target of
      issue 16 is met (step <= 1 ms median per core, expert <= 2 ms, env overhead <= 10%);
    - ``vector_steps`` > 0: env steps per second of :func:`poser_env.vector.make_vector_env` with 4 copies on 1
      and on 2 worker processes;
    - ``ppo_steps`` > 0: env steps per second during MaskablePPO's ``learn`` as the main job builds it
      (``MAIN_ENV_KWARGS``, 4 copies in a DummyVecEnv, one torch thread);
    - the diffusers batching and cache ratios on tiny CPU pipelines when the diffusers extra is installed.
    """
    lines = ["| measurement | value |", "|---|---|"]
    cp = gym.make("CartPole-v1")
    n_cp = max(1000, 10 * steps)
    cp.reset(seed=seed)
    rng = np.random.default_rng(seed)
    acts = rng.integers(0, 2, size=n_cp)
    t0, c0 = time.perf_counter(), time.thread_time()
    for a in acts:
        _, _, term, trunc, _ = cp.step(int(a))
        if term or trunc:
            cp.reset()
    cp_wall, cp_cpu = time.perf_counter() - t0, time.thread_time() - c0
    cp_rate = n_cp / cp_cpu
    lines.append(f"| CartPole-v1 steps/s (wall / per core) | {n_cp / cp_wall:,.0f} / {cp_rate:,.0f} |")
    variants: dict[str, Any] = {}
    opt_in: dict[str, Any] = {k: v for k, v in (("glyph_variants", glyph_variants), ("noise_bank", noise_bank)) if v}
    tag = ", ".join(f"{k}={v}" for k, v in opt_in.items())
    if opt_in:
        variants = {"experts": [make_expert(n, **opt_in) for n in default_expert_names()]}
    # (label, encoder, encoder kwargs, env kwargs)
    runs: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [("hashing", "hashing", {}, {})]
    if variants:
        runs.append((f"hashing, {tag}", "hashing", {}, variants))
    if minilm_available():
        runs += [("minilm cold", "minilm", {"disk_cache": False, "cache_size": 0}, {}),
                 ("minilm steady state", "minilm", {"disk_cache": False}, {})]
        if variants:
            runs.append((f"minilm steady state, {tag}", "minilm", {"disk_cache": False}, variants))
    targets: list[str] = []
    for k, (label, enc_name, enc_kw, env_kw) in enumerate(runs):
        env = gym.make("poser_env/ImagePoser-v0", text_encoder=make_text_encoder(enc_name, **enc_kw), **env_kw)
        _random_steps(env, max(50, steps // 4), seed=seed + 1)  # untimed warm-up: model load, LUT caches
        run_seed = seed + 1000 * (k + 1)
        if "steady state" in label:  # fill the text cache with this run's episodes, then time them again
            run_seed = seed + 2000
            _timed_steps(env, steps, run_seed)
        if not env_kw:
            clear_render_cache()  # every timed run of the shipped cards draws its glyphs afresh
        r = _timed_steps(env, steps, run_seed)
        name = f"SceneSim, {label}"
        over = (r["wall"] - r["expert"] - r["critic"]) / max(r["expert"] + r["critic"], 1e-9)
        lines += [
            f"| {name}: steps/s (wall / per core) | {r['n'] / r['wall']:.0f} / {r['n'] / r['cpu']:.0f} |",
            f"| {name}: median step, ms (wall / CPU) | {r['step_ms']:.3f} / {r['step_cpu_ms']:.3f} |",
            f"| {name}: median expert call, ms (p90; share <= 2 ms) | {r['expert_ms']:.3f} ({r['expert_p90_ms']:.3f}; "
            f"{r['expert_le_2ms']:.1%}) |",
            f"| {name}: median critic call, ms | {r['critic_ms']:.3f} |",
            f"| {name}: env overhead = (step - expert - critic) / (expert + critic) | {over:.1%} |",
            f"| {name}: text-encoder cache hit ratio | {r['hit_ratio']:.3f} |",
        ]
        if enc_name == "hashing":
            lines.append(f"| SceneSim ({label}) per core vs CartPole-v1 per core | {(r['n'] / r['cpu']) / cp_rate:.4f} |")
            targets.append(f"| targets, {label}: step <= 1 ms median per core / every expert call <= 2 ms / "
                           f"overhead <= 10% | {_met(r['step_cpu_ms'] <= 1.0)} ({r['step_cpu_ms']:.2f} ms) / "
                           f"{_met(r['expert_max_ms'] <= 2.0)} (max {r['expert_max_ms']:.1f} ms) / "
                           f"{_met(over <= 0.10)} ({over:.0%}) |")
        elif "steady state" in label:
            targets.append(f"| targets, {label}: overhead <= 10% | {_met(over <= 0.10)} ({over:.0%}) |")
        env.close()
    lines += targets
    if vector_steps > 0:
        lines += _vector_rows(vector_steps, seed)
    if ppo_steps > 0:
        wall_rate, cpu_rate = _ppo_steps_per_s(ppo_steps, seed)
        lines.append(f"| MaskablePPO learn, main-job env (4 copies, DummyVecEnv): env steps/s (wall / per CPU s) | "
                     f"{wall_rate:.0f} / {cpu_rate:.0f} |")
    if diffusers:
        lines += _diffusers_ratios()
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def _timed_steps(env: Any, steps: int, seed: int) -> dict[str, float]:
    """Random allowed actions for ``steps`` steps; wall and CPU time, per-call expert and critic times."""
    u = env.unwrapped
    enc = u.encoder
    h0, m0 = getattr(enc, "hits", 0), getattr(enc, "misses", 0)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    step_wall, step_cpu, ex, cr = [], [], [], []
    t_expert = t_critic = 0.0
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        mask = u.action_masks()
        valid = np.flatnonzero(mask[:-1])
        a = int(rng.choice(valid)) if len(valid) else int(len(mask) - 1)
        s0, sc0 = time.perf_counter(), time.thread_time()
        _, _, term, trunc, _ = env.step(a)
        step_wall.append(time.perf_counter() - s0)
        step_cpu.append(time.thread_time() - sc0)
        te, tc = u.last_timings["expert"], u.last_timings["critic"]
        t_expert += te
        t_critic += tc
        if te > 0:
            ex.append(te)
        if tc > 0:
            cr.append(tc)
        if term or trunc:
            env.reset(seed=int(rng.integers(1 << 30)))
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    hits, misses = getattr(enc, "hits", 0) - h0, getattr(enc, "misses", 0) - m0
    ms = 1e3
    return {"n": float(steps), "wall": wall, "cpu": cpu, "expert": t_expert, "critic": t_critic,
            "step_ms": float(np.median(step_wall)) * ms, "step_cpu_ms": float(np.median(step_cpu)) * ms,
            "expert_ms": float(np.median(ex)) * ms if ex else float("nan"),
            "expert_p90_ms": float(np.quantile(ex, 0.9)) * ms if ex else float("nan"),
            "expert_max_ms": float(np.max(ex)) * ms if ex else float("nan"),
            "expert_le_2ms": float(np.mean(np.asarray(ex) <= 2e-3)) if ex else float("nan"),
            "critic_ms": float(np.median(cr)) * ms if cr else float("nan"),
            "hit_ratio": hits / max(1, hits + misses)}


def _vector_rows(steps: int, seed: int) -> list[str]:
    rows = []
    for workers in (1, 2):
        vec: Any = make_vector_env("poser_env/ImagePoser-v0", 4, workers=workers, text_encoder="hashing")
        rng = np.random.default_rng(seed)
        vec.reset(seed=seed)
        for _ in range(20):  # warm-up
            vec.step(_vector_actions(vec, rng))
        n = max(1, steps // 4)
        t0 = time.perf_counter()
        for _ in range(n):
            vec.step(_vector_actions(vec, rng))
        wall = time.perf_counter() - t0
        vec.close()
        rows.append(f"| vector env, 4 copies, {workers} worker(s): env steps/s (wall) | {4 * n / wall:.0f} |")
    return rows


def _vector_actions(vec: Any, rng: np.random.Generator) -> np.ndarray:
    masks = vec.call("action_masks")
    return np.array([int(rng.choice(np.flatnonzero(m[:-1]))) if m[:-1].any() else len(m) - 1 for m in masks])


def _ppo_steps_per_s(steps: int, seed: int) -> tuple[float, float]:
    """(env steps per wall second, per CPU second of this process) during MaskablePPO's learn."""
    import torch


    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        venv = make_vec_env(MAIN_ENV_ID, n_envs=4, seed=seed, env_kwargs=dict(MAIN_ENV_KWARGS))
        model = make_maskable_ppo(venv, seed=seed)
        rollout = model.n_steps * 4
        model.learn(total_timesteps=rollout)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        model.learn(total_timesteps=max(steps, rollout), reset_num_timesteps=False)
        done = int(model.num_timesteps) - rollout
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        venv.close()
    finally:
        torch.set_num_threads(threads)
    return done / wall, done / cpu


def _random_steps(env: Any, n: int, *, seed: int) -> None:
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(n):
        mask = env.unwrapped.action_masks()
        valid = np.flatnonzero(mask[:-1])
        _, _, term, trunc, _ = env.step(int(rng.choice(valid)) if len(valid) else int(len(mask) - 1))
        if term or trunc:
            env.reset(seed=int(rng.integers(1 << 30)))


def _diffusers_ratios() -> list[str]:
    """Batching and cache ratios on tiny CPU pipelines, from ``examples/benchmarks/diffusers_perf.py`` (it builds
    its pipelines with the test helpers, so it needs a source checkout and the diffusers extra)."""

    script = Path(__file__).resolve().parents[1] / "examples" / "benchmarks" / "diffusers_perf.py"
    if importlib.util.find_spec("diffusers") is None:
        return ['| diffusers batching / cache ratios | skipped: `pip install "image-poser[diffusers]"` |']
    if not script.is_file():
        return ["| diffusers batching / cache ratios | skipped: needs a source checkout (examples/benchmarks) |"]
    spec = importlib.util.spec_from_file_location("poser_diffusers_perf", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)

    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    with contextlib.redirect_stdout(io.StringIO()):
        r = mod.main(mod.Args(repeats=3))
    return [
        f"| diffusers (tiny, CPU): batch of 8 vs 8 sequential calls | {r['batch_speedup']:.1f}x |",
        f"| diffusers (tiny, CPU): cache hit vs compute | {r['cache_speedup']:.0f}x |",
        f"| diffusers (tiny, CPU): expert wrapper overhead vs bare pipeline | "
        f"{r['overhead_s'] / r['pipeline_s']:+.1%} |",
    ]


def bench_decompose(decomposer: str = "rules", *, benchmarks: Path | None = None, long_n: int = 500,
                    heldout: Path | None = None, open_vocab: bool = False, misses: int = 0) -> str:
    """Decomposition quality of ``decomposer`` (see :mod:`poser_env.decompose_eval`) as markdown."""

    dec = make_decomposer(decomposer, open_vocab=open_vocab)
    return decompose_report(dec.parse, benchmarks=benchmarks, long_n=long_n, heldout=heldout, misses=misses)


#: The long-prompt world of ``poser bench headroom`` (the v1 world, 30 steps) and its GenEval-style world.
HEADROOM_LONG_ENV: str = "poser_env/ImagePoserLong-v1"
HEADROOM_GENEVAL_ENV: str = "poser_env/ImagePoser-v1"


def _headroom_job(env_id: str, env_kwargs: dict[str, Any], method: str, policy_kwargs: dict[str, Any],
                  items: list[tuple[int, Spec]]) -> tuple[list[EpisodeResult], list[int], float]:
    """Episodes of one baseline on ``(prompt index, spec)`` items, seeded as :func:`agents.evaluate.evaluate`'s run
    0 (``1000 + 104729 * index``); returns the results, the simulated steps per episode (oracles) and seconds."""
    t0 = time.perf_counter()
    env = gym.make(env_id, **env_kwargs)
    pol = make_baseline(method, seed=0, **policy_kwargs)
    try:
        res = [run_episode(env, pol, spec, seed=1000 + 104729 * i, method=method, run=0) for i, spec in items]
    finally:
        env.close()
    return res, list(getattr(pol, "sim_steps_history", [])), time.perf_counter() - t0


def bench_headroom(n: int = 200, *, env_id: str = HEADROOM_LONG_ENV, geneval_env_id: str = HEADROOM_GENEVAL_ENV,
                   env_kwargs: dict[str, Any] | None = None, beam: int = 12, max_width: int = 32,
                   max_sim_steps: int = 4000, per_op_n: int = 40, workers: int = 2, chunk: int = 4,
                   out: str | Path | None = None, progress: bool = False) -> str:
    """Headroom before learning (issue 15): on ``n`` long TEST prompts of ``env_id`` the deep oracle
    (:class:`agents.policies.DeepOraclePolicy` with ``beam``, ``max_width``, ``max_sim_steps``), every
    ``fixed:<text-to-image expert>`` pipeline (experts per op from :func:`agents.pipeline.best_experts_per_op` on
    ``per_op_n`` train prompts) and critic-greedy; on ``n`` GenEval-style TEST prompts of ``geneval_env_id`` every
    ``single:<expert>``. Judge-scored, one episode per prompt (seeds as ``poser eval``'s run 0).

    Returns markdown: the table (long: all-assertions pass rate with its 95% interval over prompts, assertion
    accuracy; GenEval-style overall; calls and cost per prompt; the oracle's simulated steps per prompt), the paired
    difference deep oracle minus the best fixed pipeline (per prompt, same prompts and seeds; Student t 95%
    interval over prompts) and the seconds taken. With ``out`` also writes ``headroom.md`` and ``headroom.json``
    (episodes included). ``workers`` processes run (method, chunk of ``chunk`` prompts) jobs; the deep oracle is
    split into chunks, the other methods run one job each.
    """
    for arg, v, lo in (("n", n, 1), ("workers", workers, 1), ("chunk", chunk, 1), ("per_op_n", per_op_n, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{arg}={v!r} must be an int >= {lo}.")
    DeepOraclePolicy(beam=beam, max_sim_steps=max_sim_steps, max_width=max_width)  # bad search arguments fail here
    kw = dict(env_kwargs or {})
    t0 = time.perf_counter()
    long_specs = load_prompts(env_id, split="test", n=n, family="long")
    gen_specs = load_prompts(geneval_env_id, split="test", n=n, family="geneval")
    names = baseline_names(env_id, kw)
    singles = [m for m in baseline_names(geneval_env_id, kw) if m.startswith("single:")]
    fixed = [m for m in names if m.startswith("fixed:")]
    if not fixed:
        raise ValueError(f"env_id={env_id!r} has no text-to-image expert, so no fixed pipeline to compare the deep "
                         "oracle with; pass an env id whose experts include one.")
    t_op = time.perf_counter()
    per_op = best_experts_per_op(env_id, kw, n=per_op_n)
    per_op_s = time.perf_counter() - t_op
    oracle_kw = {"beam": beam, "max_width": max_width, "max_sim_steps": max_sim_steps}
    long_items = list(enumerate(long_specs))
    jobs: list[tuple[str, dict[str, Any], str, dict[str, Any], list[tuple[int, Spec]]]] = [
        (env_id, kw, "oracle-deep", oracle_kw, long_items[k:k + chunk]) for k in range(0, len(long_items), chunk)]
    jobs += [(env_id, kw, m, {"per_op": per_op}, long_items) for m in fixed]
    jobs += [(env_id, kw, "critic-greedy", {}, long_items[k:k + 4 * chunk])
             for k in range(0, len(long_items), 4 * chunk)]
    jobs += [(geneval_env_id, kw, m, {}, list(enumerate(gen_specs))) for m in singles]
    done: list[tuple[list[EpisodeResult], list[int], float]] = []
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn())
        task = bar.add_task("headroom jobs", total=len(jobs))
        bar.start()
    try:
        if workers == 1:
            for j in jobs:
                done.append(_headroom_job(*j))
                if bar is not None:
                    bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_headroom_job, *j) for j in jobs]
                for fut in futures:
                    done.append(fut.result())
                    if bar is not None:
                        bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    results = [r for res, _, _ in done for r in res]
    sims = [s for (_, _, m, _, _), (_, ss, _) in zip(jobs, done, strict=True) if m == "oracle-deep" for s in ss]
    seconds: dict[str, float] = {}
    for (_, _, m, _, _), (_, _, sec) in zip(jobs, done, strict=True):
        seconds[m] = seconds.get(m, 0.0) + sec
    by: dict[str, list[EpisodeResult]] = {}
    for r in results:
        by.setdefault(r.method, []).append(r)
    summaries = summarize(results)
    rows: dict[str, dict[str, Any]] = {}
    for m, rs in by.items():
        s = summaries[m]
        is_long = m not in singles
        passes = [float(r.judge_pass) for r in rs]
        rows[m] = {
            "world": env_id if is_long else geneval_env_id,
            "long_all": s.long_all if is_long else None,
            "long_all_ci95": ci95(passes) if is_long else None,
            "assertion_accuracy": s.assertion_accuracy,
            "geneval_overall": None if is_long else s.geneval_overall,
            "mean_calls": s.mean_calls, "mean_cost": s.mean_cost, "n_prompts": len(rs),
            "job_seconds": round(seconds.get(m, 0.0), 1),  # summed over its jobs (wall, in a worker)
            "sim_steps_per_prompt": float(np.mean(sims)) if m == "oracle-deep" and sims else None,
        }
    best_fixed = max(fixed, key=lambda m: (rows[m]["long_all"], rows[m]["assertion_accuracy"]))
    o = {r.prompt: r for r in by["oracle-deep"]}
    f = {r.prompt: r for r in by[best_fixed]}
    diffs = [float(o[p].judge_pass) - float(f[p].judge_pass) for p in o if p in f]
    diff, half = float(np.mean(diffs)), ci95(diffs)
    wall = time.perf_counter() - t0

    def fmt(v: float | None, ci: float | None = None) -> str:
        if v is None:
            return "–"
        return f"{v:.3f} ± {ci:.3f}" if ci is not None else f"{v:.3f}"

    order = ["oracle-deep", *fixed, "critic-greedy", *singles]
    lines = ["| method | world | long: all assertions (95% CI) | assertion acc. | GenEval-style overall | calls | "
             "cost | simulated steps / prompt |", "|---|---|---|---|---|---|---|---|"]
    for m in order:
        row = rows[m]
        sim = f"{row['sim_steps_per_prompt']:.0f}" if row["sim_steps_per_prompt"] is not None else "–"
        lines.append(f"| {m} | {row['world']} | {fmt(row['long_all'], row['long_all_ci95'])} | "
                     f"{row['assertion_accuracy']:.3f} | {fmt(row['geneval_overall'])} | {row['mean_calls']:.2f} | "
                     f"{row['mean_cost']:.2f} | {sim} |")
    sim_max = max(sims) if sims else 0
    md = (f"Headroom before learning: {len(long_specs)} long test prompts ({env_id}), {len(gen_specs)} GenEval-style "
          f"test prompts ({geneval_env_id}); judge-scored, one episode per prompt. Deep oracle: beam {beam}, "
          f"max width {max_width}, at most {max_sim_steps} simulated steps per prompt (its search calls are not "
          "counted in calls/cost). Fixed pipelines: expert per op measured on "
          f"{per_op_n} train prompts ({per_op_s:.1f} s): {per_op}.\n\n" + "\n".join(lines) + "\n\n"
          f"Deep oracle minus the best fixed pipeline ({best_fixed}), long all-assertions, paired per prompt: "
          f"**{diff:+.3f} ± {half:.3f}** (95% CI {diff - half:+.3f} to {diff + half:+.3f}, {len(diffs)} prompts).\n"
          f"Deep oracle simulated steps per prompt: mean {np.mean(sims) if sims else 0:.0f}, max {sim_max}.\n"
          f"Took {wall:.0f} s wall ({workers} worker(s)).\n")
    if out is not None:
        outp = Path(out)
        outp.mkdir(parents=True, exist_ok=True)
        (outp / "headroom.md").write_text(md)
        (outp / "headroom.json").write_text(json.dumps({
            "env_id": env_id, "geneval_env_id": geneval_env_id, "env_kwargs": kw, "n": n, "oracle": oracle_kw,
            "per_op": per_op, "per_op_seconds": per_op_s, "best_fixed": best_fixed,
            "oracle_minus_best_fixed": {"mean": diff, "ci95": half, "n_prompts": len(diffs)},
            "sim_steps": sims, "seconds": round(wall, 1), "methods": rows,
            "episodes": [asdict(r) for r in results]}, indent=1, default=str))
    return md
