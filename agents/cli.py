"""The ``poser`` command line: train, eval, generate, bench, report, experts, and the main job."""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import gymnasium.error
import typer
from typer.core import TyperGroup

from agents import bench as bench_lib
from agents.algos import check_algo
from agents.bench import BENCH_KINDS, bench_file, rliable_section
from agents.envargs import parse_env_args
from agents.evaluate import save_results, summarize, summary_table
from agents.pipeline import (
    baseline_names,
    evaluate_methods,
    generate_one,
    load_prompts,
    report_from_dir,
    run_ablations,
    run_main,
)
from agents.policy_io import is_policy_path, read_config
from agents.scratch import run_scratch
from agents.train import resolve_resume, train_runs
from agents.world_table import world_table
from experts.registry import EXPERTS, model_card_table
from poser_env.core.hf import ModelLoadError
from poser_env.core.optional import MissingExtraError
from poser_env.core.registry import RegistryError

_STATE: dict[str, bool] = {"debug": False}


class CLIError(ValueError):
    """A bad command-line value found before any work; printed as one line (``Error: ...``)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix (bad values, files, env ids, missing extras): one line, no traceback."""
    return (ValueError, OSError, gymnasium.error.Error, RegistryError, MissingExtraError, ModelLoadError)


class _PoserGroup(TyperGroup):
    """Prints a user error as one line ``Error: <message>`` (exit code 1); ``poser --debug ...`` shows the traceback.

    User errors are bad values and files (``ValueError``, ``OSError``, Gymnasium's errors, registry and missing-extra
    errors); anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:  # a typer (vendored click) Context
        try:
            return super().invoke(ctx)
        except Exception as exc:  # typer's usage errors and exits are not user errors here: they pass through
            if _STATE["debug"] or not isinstance(exc, _user_errors()):
                raise
            msg = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, KeyError) and msg.startswith(("'", '"')):
                msg = msg[1:-1]
            typer.echo(f"Error: {msg}", err=True)
            ctx.exit(1)


app = typer.Typer(
    name="poser",
    cls=_PoserGroup,
    help=(
        "image-poser: learn to orchestrate image-generation experts with RL.\n\n"
        "Runs on SceneSim (offline, CPU) by default. Numbers measured in SceneSim are about the simulator, "
        "not about real diffusion models."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: GenEval-format files, T2I-CompBench-style files, long prompts, speed, world.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")] = False) -> None:
    """image-poser: learn to orchestrate image-generation experts with RL."""
    _STATE["debug"] = debug


EnvOpt = Annotated[str, typer.Option("--env", help="Gymnasium env id.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
EnvArgOpt = Annotated[list[str] | None, typer.Option(
    "--env-arg", help="Env constructor argument key=value, typed by its signature: booleans true/false/1/0/yes/no, "
                      "numbers, JSON objects/lists, none (repeatable).")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow Stable-Baselines3 .zip model files: loading them unpickles data, which runs any "
                           "code the file's author put there. Only for files you trust.")]


def _parse_kv(pairs: list[str] | None, env_id: str = "poser_env/ImagePoser-v0") -> dict[str, Any]:
    """``["cost_weight=0", "thumbnail=false"]`` -> typed kwargs of ``env_id``'s constructor (see agents.envargs)."""

    return parse_env_args(pairs, env_id)


def _at_least(name: str, value: int, minimum: int, meaning: str = "") -> None:
    if value < minimum:
        raise CLIError(f"{name} {value} must be >= {minimum}{meaning}.")


def _check_algo_name(algo: str) -> str:

    return check_algo(algo)


def _check_policies(policies: list[str], env_id: str, env_kwargs: dict[str, Any]) -> None:
    """Every --policy is a model path that exists, 'baselines', or a baseline of this env (did-you-mean otherwise)."""


    known: list[str] | None = None
    for p in policies:
        if p == "baselines":
            continue
        if is_policy_path(p) or "/" in p.split(":", 1)[0] or Path(p).exists():
            if not Path(p).exists():
                raise CLIError(f"--policy {p!r} does not exist; pass a policy.json written by `poser train` (or its "
                               "run folder), or a baseline name.")
            if not is_policy_path(p):
                raise CLIError(f"--policy {p!r} is not a model file; pass a policy.json written by `poser train` (or its "
                               "run folder), or an SB3 .zip with --trust-pickle.")
            continue
        if known is None:
            known = baseline_names(env_id, env_kwargs, deep_oracle=True)
            known += [f"fixed-first:{k.split(':', 1)[1]}" for k in known if k.startswith("fixed:")]
            known += ["fixed", "baselines"]
        if p not in known:
            close = difflib.get_close_matches(p, known, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise CLIError(f"--policy {p!r} is neither a model file nor a baseline of {env_id}.{hint} Baselines: "
                           f"{', '.join(known)}.")


@app.command()
def experts(
    registry: Annotated[Path | None, typer.Option(help="A registry TOML (default: SceneSim's model cards).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the model-card table as markdown.")] = False,
) -> None:
    """List the experts and their model cards."""

    if registry is not None:
        if not registry.is_file():
            raise CLIError(f"--registry {str(registry)!r} does not exist; pass a registry TOML file.")
        EXPERTS.load_toml(registry, override=True)
    if markdown:
        typer.echo(model_card_table())
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="experts")
    for col in ("name", "kind", "ops", "cost", "analogue"):
        t.add_column(col)
    for name in EXPERTS.names():
        e = EXPERTS.entry(name)
        card = dict(e.card)
        t.add_row(name, str(card.get("kind", "")), ", ".join(card.get("ops", [])), str(card.get("cost", "")),
                  str(card.get("analogue", "")))
    Console().print(t)


@app.command()
def train(
    env: EnvOpt = "poser_env/ImagePoser-v0",
    algo: Annotated[str, typer.Option(help="ppo, maskable-ppo or dqn.")] = "maskable-ppo",
    steps: Annotated[int, typer.Option(help="Environment steps per seed.")] = 30_000,
    seeds: Annotated[list[int] | None, typer.Option("--seed", help="Training seed (repeat for several; default 0, or "
                                                                   "the resumed checkpoint's).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder; runs go to <out>/seed<k> (default runs/train, or the resumed run's "
                            "parent folder).")] = None,
    n_envs: Annotated[int, typer.Option(help="Parallel envs per run.")] = 4,
    env_arg: EnvArgOpt = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue a run: its folder (newest intact checkpoint) or a checkpoint "
             "(<run>/checkpoints/model_<n>_steps.json). History (train.json, curve.json) is appended to.")] = None,
    warm_start: Annotated[str | None, typer.Option(
        help="Clone this teacher before RL, e.g. fixed:sim/layout (ppo and maskable-ppo).")] = None,
    warm_start_episodes: Annotated[int, typer.Option(help="Teacher episodes to clone.")] = 300,
    checkpoint_every: Annotated[int, typer.Option(
        help="Save a checkpoint every this many env steps (one is always saved at the end).")] = 10_000,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in the output folder.")] = False,
    trust_pickle: TrustOpt = False,
) -> None:
    """Train a policy (one run per seed), with a progress bar, TensorBoard logs and checkpoints. Writes
    <out>/seed<k>/policy.json + policy.safetensors (the safe format; load with --policy)."""

    _at_least("--steps", steps, 1, " environment steps")
    _at_least("--n-envs", n_envs, 1)
    _at_least("--checkpoint-every", checkpoint_every, 1, " environment steps")
    _at_least("--warm-start-episodes", warm_start_episodes, 1)
    algo_key = _check_algo_name(algo)
    for s in seeds or []:
        _at_least("--seed", s, 0)
    if seeds and len(set(seeds)) != len(seeds):
        raise CLIError(f"--seed values {seeds} repeat a seed; each seed trains into its own folder seed<k>.")
    if warm_start is not None and algo_key == "dqn":
        raise CLIError("--warm-start clones a teacher into an actor-critic policy; it works with --algo ppo or "
                       "maskable-ppo, not dqn.")
    if out is not None and out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a file; pass a folder (runs go to <out>/seed<k>).")
    parsed = _parse_kv(env_arg, env)  # also checks the env id
    env_kwargs = parsed if env_arg else None  # None: a resumed run keeps its checkpoint's env kwargs
    if warm_start is not None:
        _check_policies([warm_start], env, env_kwargs or {})
    if resume is not None:

        ckpt = resolve_resume(resume, trust_pickle=trust_pickle)
        if seeds is None and ckpt.suffix == ".json":
            seeds = [int((read_config(ckpt)[0].get("run") or {}).get("seed", 0))]
        if seeds is not None and len(seeds) != 1:
            raise CLIError(f"--resume continues one run; pass one --seed, got {seeds}.")
        if out is None and ckpt.parent.name == "checkpoints":  # continue in the run's own folder
            out = ckpt.parent.parent.parent
            if ckpt.parent.parent.name != f"seed{(seeds or [0])[0]}":
                raise CLIError(f"--resume {str(resume)!r} is not in a seed<k> run folder of seed {(seeds or [0])[0]}; "
                               "pass --out (runs go to <out>/seed<k>).")
        resume = ckpt
    paths = train_runs(env_id=env, algo=algo, steps=steps, seeds=seeds or [0], out=out or Path("runs/train"), n_envs=n_envs,
                       env_kwargs=env_kwargs, resume=resume, progress=True, warm_start=warm_start,
                       warm_start_episodes=warm_start_episodes, checkpoint_every=checkpoint_every,
                       trust_pickle=trust_pickle, overwrite=overwrite)
    for p in paths:
        typer.echo(f"saved {p}")


@app.command("eval")
def eval_(
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", help="A trained policy (policy.json from `poser train`, or its run folder; an SB3 .zip needs "
                         "--trust-pickle), or a baseline: random, fixed, fixed:<expert>, fixed-first:<expert>, "
                         "critic-greedy, oracle, oracle-deep, single:<expert>, or 'baselines' for all (oracle-deep "
                         "excluded: it is slow). Repeatable.")] = None,
    env: EnvOpt = "poser_env/ImagePoser-v0",
    algo: Annotated[str, typer.Option(help="Algorithm of .zip model files (policy.json records its own).")] = "maskable-ppo",
    split: Annotated[str, typer.Option(help="Generated prompt split: train or test.")] = "test",
    prompts: Annotated[Path | None, typer.Option(help="A GenEval-format JSONL file instead of the split.")] = None,
    n_prompts: Annotated[int, typer.Option(help="How many prompts (0 = all).")] = 100,
    images: Annotated[int, typer.Option(help="Images (seeds) per prompt.")] = 1,
    runs: Annotated[int, typer.Option(help="Evaluation runs (seeds) for baselines.")] = 3,
    env_arg: EnvArgOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write results.json here.")] = None,
    trust_pickle: TrustOpt = False,
) -> None:
    """Evaluate policies and baselines: judge- and critic-scored tables with 95% CIs, calls, cost, wall time."""

    _at_least("--runs", runs, 1, " (evaluation runs)")
    _at_least("--images", images, 1, " (images per prompt)")
    _at_least("--n-prompts", n_prompts, 0, " (0 = all)")
    if split not in ("train", "test"):
        raise CLIError(f"--split {split!r} must be 'train' or 'test'.")
    if prompts is not None and not prompts.is_file():
        raise CLIError(f"--prompts {str(prompts)!r} does not exist; pass a GenEval-format JSONL file.")
    if out is not None and out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a file; pass a folder (results.json is written into it).")
    _check_algo_name(algo)
    env_kwargs = _parse_kv(env_arg, env)
    methods = policy or ["baselines"]
    _check_policies(methods, env, env_kwargs)
    specs = load_prompts(env, split=split, path=prompts, n=n_prompts)
    if not specs:
        raise CLIError(f"no prompts to evaluate ({str(prompts) if prompts else split!r} gave none).")
    results = evaluate_methods(methods, specs, env_id=env, algo=algo, env_kwargs=env_kwargs,
                               images=images, runs=runs, progress=not json_out, trust_pickle=trust_pickle)
    summaries = summarize(results)
    rl = rliable_section(results)  # IQM, mean, probability of improvement (rliable)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_results(out / "results.json", results, summaries)
        if rl is not None and rl[0]:
            (out / "rliable.json").write_text(json.dumps(rl[0], indent=1))
    if json_out:

        typer.echo(json.dumps({k: asdict(v) for k, v in summaries.items()}, indent=1))
    else:
        typer.echo(summary_table(summaries) + (f"\n\n{rl[1]}" if rl is not None else ""))


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt to draw.")],
    policy: Annotated[str, typer.Option(help="A trained policy (policy.json or its run folder; an SB3 .zip needs "
                                             "--trust-pickle) or a baseline name.")] = "fixed",
    env: EnvOpt = "poser_env/ImagePoserMain-v0",  # the main job's world
    algo: Annotated[str, typer.Option(help="Algorithm of a .zip model file.")] = "maskable-ppo",
    seed: Annotated[int, typer.Option(help="Episode seed (>= 0).")] = 0,
    out: OutOpt = Path("runs/generate"),
    env_arg: EnvArgOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous run's files in --out.")] = False,
    trust_pickle: TrustOpt = False,
) -> None:
    """Run a policy on one prompt; write final.png, a contact sheet of every step, and trace.json."""

    if not prompt.strip():
        raise CLIError(f"PROMPT {prompt!r} is empty; pass the text to draw, e.g. 'a photo of two red cups'.")
    _at_least("--seed", seed, 0)
    _check_algo_name(algo)
    env_kwargs = _parse_kv(env_arg, env)
    _check_policies([policy], env, env_kwargs)
    paths = generate_one(prompt, policy=policy, env_id=env, algo=algo, seed=seed, out=out,
                         env_kwargs=env_kwargs, overwrite=overwrite, trust_pickle=trust_pickle)
    for p in paths:
        typer.echo(f"wrote {p}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A folder written by `poser main` (results.json, curves).")],
) -> None:
    """(Re)write report.md, the self-contained report.html and their charts from a main-job folder."""

    typer.echo(f"wrote {report_from_dir(run_dir)}")


@app.command("main")
def main_job(
    out: OutOpt = Path("runs/main"),
    steps: Annotated[int, typer.Option(help="Training steps per seed.")] = 100_000,
    seeds: Annotated[int, typer.Option(help="Training seeds (>= 3 for CIs).")] = 3,
    n_prompts: Annotated[int, typer.Option(help="Test prompts per family (GenEval-style and long).")] = 100,
    quick: Annotated[bool, typer.Option("--quick", help="A tiny budget for smoke tests.")] = False,
    workers: Annotated[int, typer.Option(help="Parallel processes for training seeds and evaluation.")] = 3,
    warm_start: Annotated[bool, typer.Option(help="Clone the fixed pipeline before PPO (see agents.imitation).")] = True,
    ablation: Annotated[bool, typer.Option(
        "--ablation", help="Also train and evaluate the same recipe without feedback in the observation (the "
                           "'feedback is used' claim; doubles the training time).")] = False,
    deep_oracle_prompts: Annotated[int, typer.Option(
        help="Long test prompts that also run the deep oracle (the ceiling); 0 skips it.")] = 20,
    reuse: Annotated[bool, typer.Option(
        "--reuse", help="Keep models this recipe already trained in --out (e.g. add --ablation to a finished run).")
    ] = False,
) -> None:
    """The main job: train MaskablePPO in the v1 world (GenEval-style + long prompts), evaluate it against every
    baseline on the test split, and write report.md and report.html with the claims checked."""
    _at_least("--deep-oracle-prompts", deep_oracle_prompts, 0)
    path = run_main(out, steps=steps, seeds=seeds, n_prompts=n_prompts, quick=quick, workers=workers,
                    warm_start=warm_start, ablation=ablation, deep_oracle_prompts=deep_oracle_prompts, reuse=reuse)
    typer.echo(f"report: {path}")


@app.command()
def ablations(
    out: OutOpt = Path("runs/ablations"),
    steps: Annotated[int, typer.Option(help="Training steps per seed and ablation.")] = 20_000,
    seeds: Annotated[int, typer.Option(help="Training seeds per ablation.")] = 2,
    n_prompts: Annotated[int, typer.Option(help="Test prompts per family.")] = 60,
    name: Annotated[list[str] | None, typer.Option("--name", help="Only these ablations (repeatable).")] = None,
    workers: Annotated[int, typer.Option(help="Parallel processes.")] = 2,
) -> None:
    """Ablations: the paper's DQN vs ours, observation without/with feedback/with thumbnail, cost weight 0,
    PPO without masks. Writes ablations.md and ablations.json."""

    path = run_ablations(out, steps=steps, seeds=seeds, n_prompts=n_prompts, names=name, workers=workers)
    typer.echo(path.read_text())


def _bench_command(kind: str) -> Any:
    """The ``poser bench <kind>`` command: one implementation for every family of :data:`agents.bench.BENCH_KINDS`
    (annotations are built here, per kind, so that each command shows its own help and defaults)."""
    k = BENCH_KINDS[kind]

    def command(files: Any = None, policy: Any = None, algo: str = "maskable-ppo", images: int = k.images,
                runs: int = 3, limit: int = k.limit, out: Path = Path(f"runs/bench-{kind}"), workers: int = 1,
                trust_pickle: bool = False) -> None:
        if k.needs_file and not files:
            raise typer.BadParameter(f"`poser bench {kind}` needs at least one file; {k.files_help}",
                                     param_hint="FILES")
        md = bench_file(files or None, kind=kind, methods=policy or ["baselines"], algo=algo, images=images,
                        runs=runs, limit=limit, out=out, workers=workers, trust_pickle=trust_pickle)
        typer.echo(md)

    command.__annotations__ = {
        "files": Annotated[list[Path] | None, typer.Argument(help=k.files_help, show_default=False)],
        "policy": Annotated[list[str] | None, typer.Option(
            "--policy", help="policy.json (or its run folder), an SB3 .zip with --trust-pickle, or a baseline "
                             "(repeatable).")],
        "algo": Annotated[str, typer.Option(help="Algorithm of the model files.")],
        "images": Annotated[int, typer.Option(help="Images per prompt.")],
        "runs": Annotated[int, typer.Option(help="Runs (seeds).")],
        "limit": Annotated[int, typer.Option(help=k.limit_help)],
        "out": OutOpt,
        "workers": Annotated[int, typer.Option(help="Parallel evaluation processes.")],
        "trust_pickle": TrustOpt,
        "return": None,
    }
    command.__name__ = command.__qualname__ = f"bench_{kind}"
    command.__doc__ = k.summary
    return bench_app.command(kind)(command)


bench_geneval = _bench_command("geneval")
bench_compbench = _bench_command("compbench")
bench_long = _bench_command("long")


@bench_app.command("perf")
def bench_perf(
    steps: Annotated[int, typer.Option(help="Env steps to time.")] = 2000,
    vector_steps: Annotated[int, typer.Option(help="Env steps to time in the vector env (1 and 2 workers); 0 skips.")] = 2000,
    ppo_steps: Annotated[int, typer.Option(help="Env steps of MaskablePPO learn to time; 0 skips.")] = 4096,
    diffusers: Annotated[bool, typer.Option(help="Also the tiny diffusers batching/cache ratios.")] = True,
    glyph_variants: Annotated[int, typer.Option(
        help="Opt-in cards run: the glyph_variants card field at this value (bounded glyph shapes); 0 leaves it off."
    )] = 8,
    noise_bank: Annotated[bool, typer.Option(help="Opt-in cards run: also the noise_bank card field.")] = True,
) -> None:
    """Speed, side by side in one run: CartPole-v1 reference, SceneSim steps/s per core, expert and critic medians,
    env overhead (hashing and MiniLM), the opt-in glyph_variants / noise_bank cards, vector env with 1 and 2 workers, PPO
    throughput, cache/batching ratios, and which of issue 16's targets are met."""
    typer.echo(bench_lib.bench_perf(steps=steps, vector_steps=vector_steps, ppo_steps=ppo_steps, diffusers=diffusers,
                                    glyph_variants=glyph_variants, noise_bank=noise_bank))


@bench_app.command("scratch")
def bench_scratch(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/scratch"),
    env: EnvOpt = "poser_env/ImagePoserMain-v1",
    steps: Annotated[int, typer.Option(help="Env steps to train (no warm start).")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    eval_every: Annotated[int, typer.Option(help="Env steps between evaluated checkpoints.")] = 100_000,
    n_prompts: Annotated[int, typer.Option(help="Test prompts per family (GenEval-style and long).")] = 40,
    n_envs: Annotated[int, typer.Option(help="Parallel envs of the PPO run.")] = 8,
    workers: Annotated[int, typer.Option(help="Evaluation processes.")] = 2,
    eval_only: Annotated[bool, typer.Option("--eval-only", help="Evaluate the checkpoints already in <out>/seed<k> "
                                                                "(no training).")] = False,
) -> None:
    """MaskablePPO from scratch (no warm start): a judge-scored learning curve of its checkpoints on test prompts,
    next to the fixed pipelines and the depth-4 oracle. Writes scratch.md, scratch.json, scratch.png."""
    _at_least("--steps", steps, 1, " environment steps")
    _at_least("--eval-every", eval_every, 1, " environment steps")
    _at_least("--n-prompts", n_prompts, 1)
    _at_least("--seed", seed, 0)
    _parse_kv(None, env)
    typer.echo((run_scratch(out, env_id=env, steps=steps, seed=seed, eval_every=eval_every, n_prompts=n_prompts,
                            n_envs=n_envs, workers=workers, eval_only=eval_only)).read_text())


@bench_app.command("world")
def bench_world(
    scenes: Annotated[int, typer.Option(help="Scenes drawn by card-version-2 generators on test-split prompts.")] = 400,
    seed: Annotated[int, typer.Option(help="Varies the prompts and the commands.")] = 0,
    per_op: Annotated[int, typer.Option(help="Commands (distinct targets) per op and scene.")] = 2,
    out: Annotated[Path | None, typer.Option(help="Also write the markdown table to this file.")] = None,
) -> None:
    """SceneSim v1 world (cards v2): each editing op x expert x context bucket (target size, crowded, ordinal target,
    object count) -> success rate, with the best expert of each bucket."""
    md, _ = world_table(scenes, seed=seed, per_op=per_op)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md + "\n", encoding="utf-8")
    typer.echo(md)


@bench_app.command("headroom")
def bench_headroom(
    n: Annotated[int, typer.Option("--n", help="Long test prompts, and GenEval-style test prompts.")] = 200,
    env: Annotated[str, typer.Option("--env", help="Long-prompt env id.")] = bench_lib.HEADROOM_LONG_ENV,
    geneval_env: Annotated[str, typer.Option(help="GenEval-style env id (single experts).")
                           ] = bench_lib.HEADROOM_GENEVAL_ENV,
    env_arg: EnvArgOpt = None,
    beam: Annotated[int, typer.Option(help="Deep oracle: states always expanded per depth.")] = 12,
    max_width: Annotated[int, typer.Option(help="Deep oracle: states kept per depth.")] = 32,
    max_sim_steps: Annotated[int, typer.Option(help="Deep oracle: simulated steps per prompt.")] = 4000,
    per_op_n: Annotated[int, typer.Option(help="Train prompts per candidate when choosing the fixed pipelines' "
                                               "expert per op.")] = 40,
    workers: Annotated[int, typer.Option(help="Parallel processes.")] = 2,
    out: OutOpt = Path("runs/bench-headroom"),
) -> None:
    """Headroom before learning: deep oracle, every fixed:<t2i> pipeline and critic-greedy on long test prompts,
    every single:<t2i> on GenEval-style ones; the paired difference deep oracle minus the best fixed pipeline."""
    _at_least("--n", n, 1, " (prompts)")
    _at_least("--workers", workers, 1)
    env_kwargs = _parse_kv(env_arg, env)
    typer.echo(bench_lib.bench_headroom(n, env_id=env, geneval_env_id=geneval_env, env_kwargs=env_kwargs, beam=beam,
                                        max_width=max_width, max_sim_steps=max_sim_steps, per_op_n=per_op_n,
                                        workers=workers, out=out, progress=True))


@bench_app.command("decompose")
def bench_decompose(
    benchmarks: Annotated[Path, typer.Option(help="Folder with dsg-1k/ and geneval/ (e.g. ../shared/benchmarks).")
                          ] = Path("../shared/benchmarks"),
    decomposer: Annotated[str, typer.Option(help="'rules' or 'llm:<path>'.")] = "rules",
    long_n: Annotated[int, typer.Option("--long", help="Prompts of the generated long test split (0 = skip).")] = 500,
    heldout: Annotated[Path | None, typer.Option(help="A GenEval-format JSONL of held-out phrasings.")] = None,
    open_vocab: Annotated[bool, typer.Option("--open-vocab", help="Decompose into the open spec.")] = False,
    misses: Annotated[int, typer.Option(help="Also print up to this many DSG-1k misses per category and kind.")] = 0,
) -> None:
    """Decomposition quality: DSG-1k precision/recall per category and source, GenEval and long-split exact specs."""

    if misses < 0:
        raise typer.BadParameter(f"--misses={misses} is negative; pass 0 (none) or a positive number per category.")
    typer.echo(bench_lib.bench_decompose(decomposer, benchmarks=benchmarks, long_n=long_n, heldout=heldout,
                                         open_vocab=open_vocab, misses=misses))


def main() -> None:
    """Console-script entry point (``poser``)."""
    app()


if __name__ == "__main__":  # `python -m agents.cli ...` (it exited silently without this)
    main()
