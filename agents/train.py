"""Training runs: one model per seed, with TensorBoard logs, crash-safe checkpoints, a learning curve and resume.

A run folder (``out``) holds::

    policy.json + policy.safetensors   the trained policy in the safe format (agents.policy_io), the newest state
    checkpoints/model_<n>_steps.*      resumable checkpoints (policy, optimizer, timestep count), one at least at
                                       the end of every training segment
    train.json                         the run's settings and history: one record per training segment (a first
                                       run and each resume), updated at every checkpoint
    curve.json                         the learning curve, rewritten (atomically) at every new point
    tb/                                TensorBoard logs

Every file is replaced atomically (temporary file, fsync, rename), so a run killed at any moment leaves the
previous version of each file or the new one. Resuming (``resume=`` a checkpoint, or the run folder for its newest
intact checkpoint) appends a segment to ``train.json`` and continues ``curve.json``; it never overwrites the earlier
segments. Starting a new run in a folder that already holds one is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from agents.algos import check_algo, load_model, make_model, make_vec_env
from agents.atomic import atomic_write_json
from agents.callbacks import PoserMetricsCallback
from agents.imitation import collect_demonstrations, make_teacher, pretrain
from agents.policy_io import newest_checkpoint, read_config, restore_checkpoint, save_checkpoint, save_policy

__all__ = ["RunWriter", "TrainConfigError", "resolve_resume", "train_one", "train_runs"]

_RUN_FILES = ("train.json", "curve.json", "policy.json", "policy.safetensors", "model.zip")


class TrainConfigError(ValueError):
    """A bad training argument, output folder or resume target; the message names it and the fix."""


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainConfigError(f"{name}={value!r} must be an int >= {minimum}.")
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainConfigError(f"{str(path)!r} is not valid JSON ({exc}); move it away or pass overwrite=True.") from exc


def resolve_resume(resume: str | Path, *, trust_pickle: bool = False) -> Path:
    """The checkpoint a ``resume`` argument means: a checkpoint ``.json`` as is; a run folder or its
    ``checkpoints/`` folder -> the newest intact checkpoint there; an SB3 ``.zip`` only with ``trust_pickle``.

    Raises:
        FileNotFoundError: nothing there. TrainConfigError: no intact checkpoint in the folder.
        agents.policy_io.UnsafePolicyError: an SB3 zip without ``trust_pickle``.
    """

    p = Path(resume)
    if not p.exists():
        raise FileNotFoundError(f"resume={str(resume)!r} does not exist; pass a run folder or a checkpoint "
                                "(<run>/checkpoints/model_<n>_steps.json).")
    if p.is_dir():
        folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        found = newest_checkpoint(folder)
        if found is None:
            raise TrainConfigError(f"resume={str(resume)!r}: no intact checkpoint (model_<n>_steps.json + "
                                   f".safetensors) in {str(folder)!r}.")
        return found
    if p.suffix == ".zip":
        if not trust_pickle:
            read_config(p)  # raises UnsafePolicyError with the explanation
        return p
    read_config(p)  # validates format and weights hash
    return p


class RunWriter(BaseCallback):
    """Writes a run's files while it trains: a checkpoint every ``checkpoint_every`` timesteps and at the end,
    ``train.json`` at each checkpoint, ``curve.json`` at each new point of ``metrics.curve`` (all atomically).

    :param out: the run folder.
    :param metrics: the :class:`agents.callbacks.PoserMetricsCallback` whose curve is written (it must run before
        this callback in the ``CallbackList``).
    :param checkpoint_every: timesteps (summed over envs) between checkpoints (>= 1).
    :param history: ``train.json``'s content; its last entry of ``runs`` is this segment and is updated.
    :param curve_prefix: curve points of earlier segments, written before this segment's.
    """

    def __init__(self, out: Path, metrics: Any, *, checkpoint_every: int, env_id: str, env_kwargs: Mapping[str, Any],
                 history: dict[str, Any], curve_prefix: list[dict[str, Any]], run_info: Mapping[str, Any]) -> None:
        super().__init__(0)
        self.out = out
        self.metrics = metrics
        self.every = checkpoint_every
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self.history = history
        self.curve_prefix = curve_prefix
        self.run_info = dict(run_info)
        self._written_points = -1
        self._next = 0
        self._t0 = time.perf_counter()
        self.last_checkpoint: Path | None = None

    @property
    def segment(self) -> dict[str, Any]:
        return self.history["runs"][-1]

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every
        self.write_history()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.checkpoint()
            self._next = (self.num_timesteps // self.every + 1) * self.every
        if len(self.metrics.curve) != self._written_points:
            self.write_curve()
        return True

    def _on_training_end(self) -> None:
        if self.last_checkpoint is None or self.segment.get("last_checkpoint_timesteps") != self.num_timesteps:
            self.checkpoint()
        self.write_curve()

    def checkpoint(self) -> Path:

        assert self.model is not None
        self.last_checkpoint = save_checkpoint(self.model, self.out / "checkpoints", env_id=self.env_id,
                                               env_kwargs=self.env_kwargs, run=self.run_info)
        self.segment["last_checkpoint"] = str(self.last_checkpoint.relative_to(self.out))
        self.segment["last_checkpoint_timesteps"] = int(self.num_timesteps)
        self.write_history()
        return self.last_checkpoint

    def write_history(self) -> None:
        seg = self.segment
        seg["num_timesteps"] = int(self.model.num_timesteps) if self.model is not None else seg["start_timesteps"]
        seg["seconds"] = round(time.perf_counter() - self._t0, 2)
        self.history["num_timesteps"] = seg["num_timesteps"]
        atomic_write_json(self.out / "train.json", self.history)

    def write_curve(self) -> None:
        seg_index = len(self.history["runs"]) - 1
        points = [{**p, "segment": seg_index} for p in self.metrics.curve]
        atomic_write_json(self.out / "curve.json", self.curve_prefix + points)
        self._written_points = len(self.metrics.curve)


def _prior_history(out: Path, ckpt: Path | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
    """(train.json, curve points, where they came from) of the run a resume continues, or (None, [], None)."""
    candidates = [out]
    if ckpt is not None:
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        if run_dir.resolve() != out.resolve():
            candidates.append(run_dir)
    for d in candidates:
        hist = _read_json(d / "train.json", None)
        if isinstance(hist, dict):
            curve = _read_json(d / "curve.json", [])
            return hist, list(curve) if isinstance(curve, list) else [], str(d)
    return None, [], None


def _legacy_history(hist: dict[str, Any]) -> dict[str, Any]:
    """A ``train.json`` of the earlier single-run layout as a one-segment history."""
    if isinstance(hist.get("runs"), list):
        return hist
    seg = {k: v for k, v in hist.items()}
    seg.setdefault("status", "finished")
    return {**hist, "runs": [seg]}


def _env_kwargs_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k, '<unset>')!r} (checkpoint) vs {b.get(k, '<unset>')!r} (now)" for k in keys
            if json.dumps(a.get(k), sort_keys=True, default=str) != json.dumps(b.get(k), sort_keys=True, default=str)]


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
    warm_start_epochs: int = 30,
    warm_start_kwargs: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
    overwrite: bool = False,
    curve_interval: int = 1000,
) -> Path:
    """Train one model into the run folder ``out`` (see the module docstring); returns ``out/policy.json``.

    Args:
        env_id: A registered env id (``"poser_env/ImagePoser-v0"``, ``"poser_env/ImagePoserPaper-v0"`` for DQN...).
        algo: ``"ppo"``, ``"maskable-ppo"`` or ``"dqn"``.
        steps: Environment steps (>= 1) to train for (on top of the checkpoint's when resuming; PPO trains whole
            rollouts of ``n_steps * n_envs``, so the count is rounded up to the next rollout).
        seed: Training seed (>= 0; env seeds are ``seed * 1000 + i``; the model's RNG is seeded with ``seed``).
        n_envs: Parallel envs (DummyVecEnv; a SceneSim step is 2-3 ms of CPU; DQN uses one).
        env_kwargs: The env's keyword arguments. None when resuming means the checkpoint's; different ones are an
            error (the run would change env half-way).
        resume: A checkpoint (``<run>/checkpoints/model_<n>_steps.json``) or a run folder (its newest intact
            checkpoint) to continue; the timestep count and ``train.json`` / ``curve.json`` continue too. An SB3
            ``.zip`` is accepted only with ``trust_pickle=True``.
        checkpoint_every: Save a checkpoint every this many environment steps (summed over envs, >= 1); one is
            always saved at the end.
        model_kwargs: Overrides for the algorithm's constructor (JSON values; recorded for resume).
        warm_start: A teacher (``"fixed:sim/layout"``, see :func:`agents.imitation.make_teacher`) to clone for
            ``warm_start_epochs`` epochs (default 30: in the v1 world's 57 actions, 3 epochs reproduced only 57-58%
            of the fixed pipeline's actions, 30 epochs 100%) on ``warm_start_episodes`` of its episodes before RL (PPO and
            MaskablePPO only; ignored when resuming). None trains from scratch.
        warm_start_kwargs: Keyword arguments of the teacher (JSON values), e.g. ``{"per_op": {"move": "sim/drag"}}``
            for a fixed pipeline's expert per op (:func:`agents.policies.make_baseline`).
        trust_pickle: Allow ``resume`` to be a pickle-based SB3 zip (it runs code from the file).
        overwrite: Replace a run already in ``out`` (its policy, checkpoints, train.json, curve) instead of refusing.
        curve_interval: Timesteps between learning-curve points (>= 1).

    Raises:
        TrainConfigError: bad arguments, ``out`` already holds a run (without ``overwrite``), env kwargs that differ
            from the resumed checkpoint's. FileNotFoundError / PolicyFileError: a bad ``resume``.
    """
    import torch


    _check_int("steps", steps, 1)
    _check_int("seed", seed, 0)
    _check_int("n_envs", n_envs, 1)
    _check_int("checkpoint_every", checkpoint_every, 1)
    _check_int("warm_start_episodes", warm_start_episodes, 1)
    _check_int("curve_interval", curve_interval, 1)
    algo_key = check_algo(algo)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TrainConfigError(f"out={str(out)!r} is a file; pass a folder for the run.")
    ckpt = resolve_resume(resume, trust_pickle=trust_pickle) if resume is not None else None
    has_run = out.is_dir() and (any((out / f).exists() for f in _RUN_FILES) or (out / "checkpoints").is_dir())
    if has_run and ckpt is not None and ckpt.suffix == ".json":
        ck_run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        if ck_run.resolve() != out.resolve() and not overwrite:
            raise TrainConfigError(
                f"out={str(out)!r} already holds another run; resume {str(ckpt)!r} into its own run folder "
                f"({str(ck_run)!r}), into an empty --out, or pass --overwrite to replace the run in out.")
        if ck_run.resolve() != out.resolve():
            for f in _RUN_FILES:
                (out / f).unlink(missing_ok=True)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if has_run and ckpt is None:
        if not overwrite:
            raise TrainConfigError(
                f"out={str(out)!r} already holds a training run (train.json, checkpoints); pass --resume {out} to "
                "continue it, --overwrite to replace it, or another --out.")
        for f in _RUN_FILES:
            (out / f).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    ck_config: dict[str, Any] = read_config(ckpt)[0] if ckpt is not None and ckpt.suffix == ".json" else {}
    if ck_config:
        ck_env_id = ck_config.get("env_id")
        if ck_env_id and ck_env_id != env_id:
            raise TrainConfigError(f"resume checkpoint {str(ckpt)!r} was trained on env {ck_env_id!r}, not {env_id!r}; "
                                   f"pass --env {ck_env_id}.")
        if ck_config.get("algo") != algo_key:
            raise TrainConfigError(f"resume checkpoint {str(ckpt)!r} was trained with algo {ck_config.get('algo')!r}, "
                                   f"not {algo_key!r}; pass --algo {str(ck_config.get('algo')).replace('_', '-')}.")
        recorded = dict(ck_config.get("env_kwargs") or {})
        if env_kwargs is None:
            env_kwargs = recorded
        else:
            diff = _env_kwargs_diff(recorded, dict(env_kwargs))
            if diff:
                raise TrainConfigError(f"resume checkpoint {str(ckpt)!r} was trained with other env kwargs ("
                                       f"{'; '.join(diff)}); resume without --env-arg to use the checkpoint's.")
        if model_kwargs is None:
            model_kwargs = dict((ck_config.get("run") or {}).get("model_kwargs") or {})
    env_kwargs = dict(env_kwargs or {})
    model_kwargs = dict(model_kwargs or {})
    prior, prior_curve, prior_from = _prior_history(out, ckpt) if ckpt is not None else (None, [], None)

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    n = 1 if algo_key == "dqn" else n_envs
    venv = make_vec_env(env_id, n_envs=n, seed=seed * 1000, env_kwargs=env_kwargs)
    try:
        if ckpt is not None and ckpt.suffix == ".zip":
            model: BaseAlgorithm = load_model(ckpt, algo, env=venv, trust_pickle=True)
            model.tensorboard_log = str(out / "tb")
        else:
            model = make_model(algo, venv, seed=seed, tensorboard_log=str(out / "tb"), **model_kwargs)
            if ckpt is not None:
                restore_checkpoint(model, ckpt)
        start = int(model.num_timesteps)
        warm: dict[str, Any] | None = None
        if warm_start is not None and ckpt is None:

            t_warm = time.perf_counter()
            teacher = make_teacher(warm_start, seed=seed, **dict(warm_start_kwargs or {}))
            demos = collect_demonstrations(teacher, env_id=env_id, env_kwargs=env_kwargs,
                                           episodes=warm_start_episodes, seed=10**6 + 10**4 * seed,
                                           gamma=float(getattr(model, "gamma", 0.99)))
            warm = {"teacher": warm_start, "teacher_kwargs": dict(warm_start_kwargs or {}),
                    "episodes": warm_start_episodes, "epochs": warm_start_epochs,
                    "teacher_success": float(demos.successes.mean()),
                    **pretrain(model, demos, epochs=warm_start_epochs, seed=seed),
                    "seconds": round(time.perf_counter() - t_warm, 2)}

        history = _legacy_history(prior) if prior is not None else {"runs": []}
        runs: list[dict[str, Any]] = history["runs"]
        if runs and runs[-1].get("status") == "running":
            runs[-1]["status"] = "interrupted"  # killed before it finished; its last checkpoint says how far it got
        if prior_from is not None and Path(prior_from).resolve() != out.resolve():
            history["copied_from"] = prior_from
        if ckpt is not None:  # curve points after the resumed checkpoint belong to a lost continuation
            for p in prior_curve:
                if p.get("timesteps", 0) > start:
                    p["abandoned"] = True
        segment = {"segment": len(runs), "status": "running", "started": _now(), "env_id": env_id, "algo": algo,
                   "seed": seed, "n_envs": n, "env_kwargs": env_kwargs, "model_kwargs": model_kwargs,
                   "steps": steps, "start_timesteps": start, "target_timesteps": start + steps,
                   "num_timesteps": start, "checkpoint_every": checkpoint_every,
                   "resumed_from": str(ckpt) if ckpt is not None else None, "warm_start": warm}
        runs.append(segment)
        first = runs[0]
        history.update({"env_id": env_id, "algo": algo, "seed": seed, "n_envs": n, "env_kwargs": env_kwargs,
                        "steps": sum(int(r.get("steps", 0)) for r in runs), "resumed_from": segment["resumed_from"],
                        "warm_start": first.get("warm_start")})
        metrics = PoserMetricsCallback(curve_interval=curve_interval)
        writer = RunWriter(out, metrics, checkpoint_every=checkpoint_every, env_id=env_id, env_kwargs=env_kwargs,
                           history=history, curve_prefix=prior_curve,
                           run_info={"seed": seed, "algo": algo_key, "n_envs": n, "model_kwargs": model_kwargs})
        from stable_baselines3.common.callbacks import CallbackList

        # PPO-family models collect whole rollouts (n_steps per env), so they train a multiple of n_steps * n_envs
        # timesteps whatever is asked; the budget is rounded up to that here, so the progress bar's total is what
        # runs (it read 1,024/512 for 512 steps with 4 envs x 256 steps) and train.json says both numbers
        rollout = int(getattr(model, "n_steps", 1)) * n if hasattr(model, "n_steps") else 1
        budget = -(-steps // rollout) * rollout
        segment["steps_rounded_to_rollouts"] = budget
        model.learn(total_timesteps=budget, callback=CallbackList([metrics, writer]), progress_bar=progress,
                    reset_num_timesteps=ckpt is None, tb_log_name=f"seed{seed}")
        path = save_policy(model, out / "policy.json", env_id=env_id, env_kwargs=env_kwargs,
                           extra={"seed": seed, "run": {"seed": seed, "model_kwargs": model_kwargs}})
        segment["status"] = "finished"
        segment["policy"] = path.name
        writer.write_history()
    finally:
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
    warm_start_kwargs: Mapping[str, Any] | None = None,
    checkpoint_every: int = 10_000,
    trust_pickle: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Train one model per seed into ``out/seed<k>/``; returns the policy paths (see :func:`train_one`).

    ``workers`` > 1 trains seeds in parallel processes (no progress bar then)."""
    if not seeds:
        raise TrainConfigError("seeds is empty; pass at least one training seed, e.g. [0, 1, 2].")
    if resume is not None and len(seeds) != 1:
        raise TrainConfigError(f"resume={str(resume)!r} continues one run; pass exactly one seed, got {list(seeds)}.")
    _check_int("workers", workers, 1)
    jobs: list[dict[str, Any]] = [dict(env_id=env_id, algo=algo, steps=steps, seed=s, out=Path(out) / f"seed{s}",
                                       n_envs=n_envs, env_kwargs=None if env_kwargs is None else dict(env_kwargs),
                                       resume=resume, model_kwargs=None if model_kwargs is None else dict(model_kwargs),
                                       warm_start=warm_start, warm_start_episodes=warm_start_episodes,
                                       warm_start_kwargs=None if warm_start_kwargs is None else dict(warm_start_kwargs),
                                       checkpoint_every=checkpoint_every, trust_pickle=trust_pickle,
                                       overwrite=overwrite)
                                  for s in seeds]
    if workers == 1 or len(jobs) == 1:
        return [train_one(**job, progress=progress) for job in jobs]

    # one process per seed (each on one torch thread); results come back in seed order
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_train_job, jobs))


def _train_job(job: dict[str, Any]) -> Path:
    return train_one(**job, progress=False)
