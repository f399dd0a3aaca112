"""Training runs: one model per seed, with TensorBoard logs, checkpoints, a learning curve and resume."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["train_one", "train_runs"]


def train_one(
    *,
    env_id: str,
    algo: str,
    steps: int,
    seed: int,
    out: str | Path,
    n_envs: int = 4,
    env_kwargs: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
    progress: bool = False,
    checkpoint_every: int = 10_000,
    model_kwargs: Mapping[str, Any] | None = None,
    warm_start: str | None = None,
    warm_start_episodes: int = 300,
    warm_start_epochs: int = 3,
) -> Path:
    """Train one model and save ``out/model.zip``, ``out/curve.json``, TensorBoard logs in ``out/tb`` and
    checkpoints in ``out/checkpoints``. Returns the model's path.

    Args:
        env_id: A registered env id (``"poser_env/ImagePoser-v0"``, ``"poser_env/ImagePoserPaper-v0"`` for DQN...).
        algo: ``"ppo"``, ``"maskable-ppo"`` or ``"dqn"``.
        steps: Environment steps (>= 1) to train for (on top of the checkpoint's when resuming); PPO and
            MaskablePPO round it up to whole rollouts (a multiple of ``n_steps * n_envs``), as SB3 trains anyway.
        seed: Training seed (env seeds are ``seed * 1000 + i``; the model's RNG is seeded with ``seed``).
        n_envs: Parallel envs (DummyVecEnv; SceneSim steps are about a millisecond).
        resume: A checkpoint ``.zip`` to continue from (the timestep count continues too).
        checkpoint_every: Save a checkpoint every this many environment steps (summed over envs).
        model_kwargs: Overrides for the algorithm's constructor.
        warm_start: A teacher (``"fixed:sim/layout"``, see :func:`agents.imitation.make_teacher`) to clone for
            ``warm_start_epochs`` epochs on ``warm_start_episodes`` of its episodes before RL (PPO and
            MaskablePPO only; ignored when resuming). None trains from scratch.
    """
    import torch
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback

    from agents.algos import load_model, make_model, make_vec_env
    from agents.callbacks import PoserMetricsCallback

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an int >= 1 environment steps.")
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = 1 if algo.lower().startswith("dqn") else n_envs
    venv = make_vec_env(env_id, n_envs=n, seed=seed * 1000, env_kwargs=dict(env_kwargs or {}))
    if resume is not None:
        model = load_model(resume, algo, env=venv)
        model.tensorboard_log = str(out / "tb")
    else:
        model = make_model(algo, venv, seed=seed, tensorboard_log=str(out / "tb"), **dict(model_kwargs or {}))
    warm: dict[str, Any] | None = None
    if warm_start is not None and resume is None:
        from agents.imitation import collect_demonstrations, pretrain

        t_warm = time.perf_counter()
        demos = collect_demonstrations(warm_start, env_id=env_id, env_kwargs=env_kwargs,
                                       episodes=warm_start_episodes, seed=10**6 + 10**4 * seed,
                                       gamma=float(getattr(model, "gamma", 0.99)))
        warm = {"teacher": warm_start, "episodes": warm_start_episodes, "epochs": warm_start_epochs,
                "teacher_success": float(demos.successes.mean()),
                **pretrain(model, demos, epochs=warm_start_epochs, seed=seed),
                "seconds": round(time.perf_counter() - t_warm, 2)}
    metrics = PoserMetricsCallback()
    ckpt = CheckpointCallback(save_freq=max(1, checkpoint_every // n), save_path=str(out / "checkpoints"),
                              name_prefix="model")
    # PPO-family models collect whole rollouts (n_steps per env), so they train a multiple of n_steps * n_envs
    # timesteps whatever is asked; the budget is rounded up to that here, so the progress bar's total is what
    # runs (it read 1,024/512 for 512 steps with 4 envs x 256 steps) and train.json says both numbers
    rollout = int(getattr(model, "n_steps", 1)) * n if hasattr(model, "n_steps") else 1
    budget = -(-steps // rollout) * rollout
    t0 = time.perf_counter()
    model.learn(total_timesteps=budget, callback=CallbackList([metrics, ckpt]), progress_bar=progress,
                reset_num_timesteps=resume is None, tb_log_name=f"seed{seed}")
    path = out / "model.zip"
    model.save(path)
    metrics.save_curve(out / "curve.json")
    (out / "train.json").write_text(json.dumps({
        "env_id": env_id, "algo": algo, "steps": steps, "steps_rounded_to_rollouts": budget, "seed": seed,
        "n_envs": n,
        "env_kwargs": dict(env_kwargs or {}), "seconds": round(time.perf_counter() - t0, 2),
        "num_timesteps": int(model.num_timesteps), "resumed_from": str(resume) if resume else None,
        "warm_start": warm,
    }, indent=1))
    venv.close()
    return path


def train_runs(
    *,
    env_id: str,
    algo: str,
    steps: int,
    seeds: Sequence[int],
    out: str | Path,
    n_envs: int = 4,
    env_kwargs: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
    progress: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
    workers: int = 1,
    warm_start: str | None = None,
    warm_start_episodes: int = 300,
) -> list[Path]:
    """Train one model per seed into ``out/seed<k>/``; returns the model paths (see :func:`train_one`).

    ``workers`` > 1 trains seeds in parallel processes (no progress bar then)."""
    if not seeds:
        raise ValueError("seeds is empty; pass at least one training seed, e.g. [0, 1, 2].")
    if resume is not None and len(seeds) != 1:
        raise ValueError(f"resume={str(resume)!r} continues one run; pass exactly one seed, got {list(seeds)}.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an int >= 1 (parallel training processes).")
    jobs: list[dict[str, Any]] = [dict(env_id=env_id, algo=algo, steps=steps, seed=s, out=Path(out) / f"seed{s}", n_envs=n_envs,
                 env_kwargs=dict(env_kwargs or {}), resume=resume, model_kwargs=dict(model_kwargs or {}),
                 warm_start=warm_start, warm_start_episodes=warm_start_episodes)
            for s in seeds]
    if workers == 1 or len(jobs) == 1:
        return [train_one(**job, progress=progress) for job in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # one process per seed (each on one torch thread); results come back in seed order
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_train_job, jobs))


def _train_job(job: dict[str, Any]) -> Path:
    return train_one(**job, progress=False)
