"""The ``poser`` command line: train, eval, generate, bench, report, experts, and the main job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="poser",
    help=(
        "image-poser: learn to orchestrate image-generation experts with RL.\n\n"
        "Runs on SceneSim (offline, CPU) by default. Numbers measured in SceneSim are about the simulator, "
        "not about real diffusion models."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: GenEval-format files, T2I-CompBench-style files, long prompts, speed.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")

EnvOpt = Annotated[str, typer.Option("--env", help="Gymnasium env id.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]


def _parse_kv(pairs: list[str] | None) -> dict[str, Any]:
    """``["cost_weight=0", "thumbnail=true"]`` -> kwargs (JSON values where they parse, else strings)."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise typer.BadParameter(f"--env-arg {p!r} must look like key=value, e.g. cost_weight=0.")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


@app.command()
def experts(
    registry: Annotated[Path | None, typer.Option(help="A registry TOML (default: SceneSim's model cards).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the model-card table as markdown.")] = False,
) -> None:
    """List the experts and their model cards."""
    from experts.registry import EXPERTS, model_card_table

    if registry is not None:
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
    seeds: Annotated[list[int] | None, typer.Option("--seed", help="Training seed (repeat for several).")] = None,
    out: OutOpt = Path("runs/train"),
    n_envs: Annotated[int, typer.Option(help="Parallel envs per run.")] = 4,
    env_arg: Annotated[list[str] | None, typer.Option("--env-arg", help="Env kwarg key=value (repeatable).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue from this checkpoint (.zip).")] = None,
    warm_start: Annotated[str | None, typer.Option(
        help="Clone this teacher before RL, e.g. fixed:sim/layout (ppo and maskable-ppo).")] = None,
    warm_start_episodes: Annotated[int, typer.Option(help="Teacher episodes to clone.")] = 300,
) -> None:
    """Train a policy (one run per seed), with a progress bar, TensorBoard logs and checkpoints."""
    from agents.train import train_runs

    paths = train_runs(env_id=env, algo=algo, steps=steps, seeds=seeds or [0], out=out, n_envs=n_envs,
                       env_kwargs=_parse_kv(env_arg), resume=resume, progress=True, warm_start=warm_start,
                       warm_start_episodes=warm_start_episodes)
    for p in paths:
        typer.echo(f"saved {p}")


@app.command("eval")
def eval_(
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", help="A trained model .zip, or a baseline: random, fixed, critic-greedy, oracle, single:<expert>, "
                         "or 'baselines' for all. Repeatable.")] = None,
    env: EnvOpt = "poser_env/ImagePoser-v0",
    algo: Annotated[str, typer.Option(help="Algorithm of the model files.")] = "maskable-ppo",
    split: Annotated[str, typer.Option(help="Generated prompt split: train or test.")] = "test",
    prompts: Annotated[Path | None, typer.Option(help="A GenEval-format JSONL file instead of the split.")] = None,
    n_prompts: Annotated[int, typer.Option(help="How many prompts (0 = all).")] = 100,
    images: Annotated[int, typer.Option(help="Images (seeds) per prompt.")] = 1,
    runs: Annotated[int, typer.Option(help="Evaluation runs (seeds) for baselines.")] = 3,
    env_arg: Annotated[list[str] | None, typer.Option("--env-arg", help="Env kwarg key=value (repeatable).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write results.json here.")] = None,
) -> None:
    """Evaluate policies and baselines: judge- and critic-scored tables with 95% CIs, calls, cost, wall time."""
    from agents.evaluate import save_results, summarize, summary_table
    from agents.pipeline import evaluate_methods, load_prompts

    specs = load_prompts(env, split=split, path=prompts, n=n_prompts)
    results = evaluate_methods(policy or ["baselines"], specs, env_id=env, algo=algo, env_kwargs=_parse_kv(env_arg),
                               images=images, runs=runs, progress=not json_out)
    summaries = summarize(results)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_results(out / "results.json", results, summaries)
    if json_out:
        from dataclasses import asdict

        typer.echo(json.dumps({k: asdict(v) for k, v in summaries.items()}, indent=1))
    else:
        typer.echo(summary_table(summaries))


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt to draw.")],
    policy: Annotated[str, typer.Option(help="A trained model .zip or a baseline name.")] = "fixed",
    env: EnvOpt = "poser_env/ImagePoser-v0",
    algo: Annotated[str, typer.Option(help="Algorithm of the model file.")] = "maskable-ppo",
    seed: Annotated[int, typer.Option(help="Episode seed.")] = 0,
    out: OutOpt = Path("runs/generate"),
    env_arg: Annotated[list[str] | None, typer.Option("--env-arg", help="Env kwarg key=value (repeatable).")] = None,
) -> None:
    """Run a policy on one prompt; write final.png, a contact sheet of every step, and trace.json."""
    from agents.pipeline import generate_one

    paths = generate_one(prompt, policy=policy, env_id=env, algo=algo, seed=seed, out=out,
                         env_kwargs=_parse_kv(env_arg))
    for p in paths:
        typer.echo(f"wrote {p}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A folder written by `poser main` (results.json, curves).")],
) -> None:
    """(Re)write report.md and its charts from a main-job folder."""
    from agents.pipeline import report_from_dir

    typer.echo(f"wrote {report_from_dir(run_dir)}")


@app.command("main")
def main_job(
    out: OutOpt = Path("runs/main"),
    steps: Annotated[int, typer.Option(help="Training steps per seed.")] = 20_000,
    seeds: Annotated[int, typer.Option(help="Training seeds (>= 3 for CIs).")] = 3,
    n_prompts: Annotated[int, typer.Option(help="Test prompts per family (GenEval-style and long).")] = 100,
    quick: Annotated[bool, typer.Option("--quick", help="A tiny budget for smoke tests.")] = False,
    workers: Annotated[int, typer.Option(help="Parallel processes for training seeds and evaluation.")] = 3,
    warm_start: Annotated[bool, typer.Option(help="Clone the fixed pipeline before PPO (see agents.imitation).")] = True,
) -> None:
    """The main job: train MaskablePPO on SceneSim (GenEval-style + long prompts), evaluate it against every
    baseline on the test split, and write report.md."""
    from agents.pipeline import run_main

    path = run_main(out, steps=steps, seeds=seeds, n_prompts=n_prompts, quick=quick, workers=workers,
                    warm_start=warm_start)
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
    from agents.pipeline import run_ablations

    path = run_ablations(out, steps=steps, seeds=seeds, n_prompts=n_prompts, names=name, workers=workers)
    typer.echo(path.read_text())


@bench_app.command("geneval")
def bench_geneval(
    file: Annotated[Path, typer.Argument(help="A GenEval-format JSONL file (e.g. ../shared/benchmarks/geneval/"
                                              "evaluation_metadata.jsonl).")],
    policy: Annotated[list[str] | None, typer.Option("--policy", help="Model .zip or baseline (repeatable).")] = None,
    algo: Annotated[str, typer.Option(help="Algorithm of the model files.")] = "maskable-ppo",
    images: Annotated[int, typer.Option(help="Images per prompt (GenEval: 4).")] = 4,
    runs: Annotated[int, typer.Option(help="Runs (seeds).")] = 3,
    limit: Annotated[int, typer.Option(help="Use only the first N prompts (0 = all).")] = 0,
    out: OutOpt = Path("runs/bench-geneval"),
    workers: Annotated[int, typer.Option(help="Parallel evaluation processes.")] = 1,
) -> None:
    """Evaluate on a GenEval-format file (judge and critic side by side); write JSON and a markdown table."""
    from agents.bench import bench_file

    md = bench_file(file, kind="geneval", methods=policy or ["baselines"], algo=algo, images=images, runs=runs,
                    limit=limit, out=out, workers=workers)
    typer.echo(md)


@bench_app.command("compbench")
def bench_compbench(
    files: Annotated[list[Path], typer.Argument(help="T2I-CompBench-style text files (one prompt a line).")],
    policy: Annotated[list[str] | None, typer.Option("--policy", help="Model .zip or baseline (repeatable).")] = None,
    algo: Annotated[str, typer.Option(help="Algorithm of the model files.")] = "maskable-ppo",
    images: Annotated[int, typer.Option(help="Images per prompt.")] = 1,
    runs: Annotated[int, typer.Option(help="Runs (seeds).")] = 3,
    limit: Annotated[int, typer.Option(help="Prompts per file (0 = all).")] = 50,
    out: OutOpt = Path("runs/bench-compbench"),
    workers: Annotated[int, typer.Option(help="Parallel evaluation processes.")] = 1,
) -> None:
    """Evaluate on T2I-CompBench-style text files, parsed by the decomposer, scored per category (file)."""
    from agents.bench import bench_file

    md = bench_file(files, kind="compbench", methods=policy or ["baselines"], algo=algo, images=images, runs=runs,
                    limit=limit, out=out, workers=workers)
    typer.echo(md)


@bench_app.command("long")
def bench_long(
    file: Annotated[Path | None, typer.Argument(help="A long-prompt JSONL file (default: the generated test split).")] = None,
    policy: Annotated[list[str] | None, typer.Option("--policy", help="Model .zip or baseline (repeatable).")] = None,
    algo: Annotated[str, typer.Option(help="Algorithm of the model files.")] = "maskable-ppo",
    images: Annotated[int, typer.Option(help="Images per prompt.")] = 1,
    runs: Annotated[int, typer.Option(help="Runs (seeds).")] = 3,
    limit: Annotated[int, typer.Option(help="Prompts (0 = all).")] = 100,
    out: OutOpt = Path("runs/bench-long"),
    workers: Annotated[int, typer.Option(help="Parallel evaluation processes.")] = 1,
) -> None:
    """Long prompts: all-assertions rate and per-assertion accuracy."""
    from agents.bench import bench_file

    md = bench_file(file, kind="long", methods=policy or ["baselines"], algo=algo, images=images, runs=runs,
                    limit=limit, out=out, workers=workers)
    typer.echo(md)


@bench_app.command("perf")
def bench_perf(
    steps: Annotated[int, typer.Option(help="Env steps to time.")] = 2000,
    vector_steps: Annotated[int, typer.Option(help="Env steps to time in the vector env (1 and 2 workers); 0 skips.")] = 2000,
    ppo_steps: Annotated[int, typer.Option(help="Env steps of MaskablePPO learn to time; 0 skips.")] = 4096,
    diffusers: Annotated[bool, typer.Option(help="Also the tiny diffusers batching/cache ratios.")] = True,
) -> None:
    """Speed, side by side in one run: CartPole-v1 reference, SceneSim steps/s per core, expert and critic medians,
    env overhead (hashing and MiniLM), vector env with 1 and 2 workers, PPO throughput, cache/batching ratios."""
    from agents.bench import bench_perf as run

    typer.echo(run(steps=steps, vector_steps=vector_steps, ppo_steps=ppo_steps, diffusers=diffusers))


def main() -> None:
    """Console-script entry point (``poser``)."""
    app()


if __name__ == "__main__":  # python -m agents.cli ... runs the same CLI as the poser script
    main()
