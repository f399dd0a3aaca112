"""Builders for the Stable-Baselines3 agents: PPO, MaskablePPO (sb3-contrib) and the paper's DQN.

Every builder takes an env (a ``gymnasium.Env``, an SB3 ``VecEnv`` or a registered env id), a ``seed`` and keyword
overrides of the algorithm's constructor, and returns an unfitted model on CPU::

    from agents.algos import make_vec_env, make_maskable_ppo
    venv = make_vec_env("poser_env/ImagePoser-v0", n_envs=4, seed=0, env_kwargs={"text_encoder": "hashing"})
    model = make_maskable_ppo(venv, seed=0, tensorboard_log="runs/tb")
    model.learn(50_000)

Defaults are sized for short CPU budgets (about a hundred thousand steps per seed on 2 cores; a SceneSim step takes
2-3 ms of CPU, episodes last at most 16-30 steps):

- PPO / MaskablePPO (:data:`PPO_DEFAULTS`): ``n_steps=256`` per env, ``batch_size=64``, ``n_epochs=4``,
  ``learning_rate=3e-4``, ``gamma=0.99``, ``gae_lambda=0.95``, ``ent_coef=0.01`` (keeps trying experts early on),
  ``MultiInputPolicy`` (``MlpPolicy`` for a flat Box) with :class:`~agents.extractor.PoserExtractor` and
  ``net_arch=dict(pi=[64, 64], vf=[64, 64])``.
- DQN, as the paper (:data:`DQN_DEFAULTS`): ``MlpPolicy`` with ``net_arch=[256, 256, 256]`` on the text-only
  ``ImagePoserPaper-v0`` state (``MultiInputPolicy`` + ``PoserExtractor`` if given a Dict env, for ablations);
  ``learning_rate=1e-4``, ``buffer_size=50_000``, ``learning_starts=500``, ``batch_size=64``, ``train_freq=4``,
  ``target_update_interval=500``, ``exploration_fraction=0.3``, ``exploration_final_eps=0.05``, ``gamma=0.99``.

``device="cpu"`` unless overridden; ``torch.set_num_threads`` is left to the caller.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env as _sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from agents.errors import UnsafePolicyError
from agents.extractor import PoserExtractor
from poser_env.env import unwrap

__all__ = [
    "ALGOS",
    "ALGO_CLASSES",
    "DQN_DEFAULTS",
    "DQN_POLICY_DEFAULTS",
    "PPO_DEFAULTS",
    "PPO_POLICY_DEFAULTS",
    "AlgoConfigError",
    "check_algo",
    "load_model",
    "make_dqn",
    "make_maskable_ppo",
    "make_model",
    "make_ppo",
    "make_vec_env",
]

#: PPO / MaskablePPO constructor defaults for short CPU budgets (override any of them by keyword).
PPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "n_steps": 256,
    "batch_size": 64,
    "n_epochs": 4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}
#: PPO / MaskablePPO ``policy_kwargs`` defaults (merged key by key with a user's ``policy_kwargs``).
PPO_POLICY_DEFAULTS: dict[str, Any] = {"net_arch": {"pi": [64, 64], "vf": [64, 64]}}

#: DQN constructor defaults (the paper's setup, scaled to short CPU budgets).
DQN_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-4,
    "buffer_size": 50_000,
    "learning_starts": 500,
    "batch_size": 64,
    "gamma": 0.99,
    "train_freq": 4,
    "gradient_steps": 1,
    "target_update_interval": 500,
    "exploration_fraction": 0.3,
    "exploration_initial_eps": 1.0,
    "exploration_final_eps": 0.05,
}
#: DQN ``policy_kwargs`` defaults: the paper's 3-layer MLP.
DQN_POLICY_DEFAULTS: dict[str, Any] = {"net_arch": [256, 256, 256]}


class AlgoConfigError(ValueError):
    """A bad algorithm name, override, env or path; the message names it, the value and the fix."""


EnvLike = gym.Env | VecEnv | str


def _gym_make(env_id: str, **env_kwargs: Any) -> gym.Env:
    """``gym.make`` after importing ``poser_env`` (so the ids exist in subprocess workers too)."""

    return gym.make(env_id, **env_kwargs)


class VecEnvWorkerError(RuntimeError):
    """An env in a ``SubprocVecEnv`` worker raised; the message holds the worker's exception and traceback."""


class _ErrorReporting(gym.Wrapper):  # type: ignore[type-arg]
    """Writes an exception of ``reset``/``step`` to ``path`` before it propagates (the worker then dies and SB3's
    parent only sees an ``EOFError``; :class:`_ReportingSubprocVecEnv` reads the file and raises the cause)."""

    def __init__(self, env: gym.Env, path: str) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        self._path = path

    def _report(self, where: str) -> None:
        Path(self._path).write_text(f"{where}: {traceback.format_exc()}", encoding="utf-8")

    def reset(self, **kwargs: Any) -> Any:
        try:
            return self.env.reset(**kwargs)
        except Exception:
            self._report("reset()")
            raise

    def step(self, action: Any) -> Any:
        try:
            return self.env.step(action)
        except Exception:
            self._report(f"step({action!r})")
            raise


def _worker_errors(report_dir: str) -> str:
    msgs = [f.read_text(encoding="utf-8").strip() for f in sorted(Path(report_dir).glob("worker-*.txt"))]
    return "\n".join(msgs) or "(the worker died without reporting an exception; it may have been killed)"


def _reporting_factory(factory: Callable[..., gym.Env], report_dir: str, **kwargs: Any) -> gym.Env:  # type: ignore[type-arg]
    path = str(Path(report_dir) / f"worker-{os.getpid()}.txt")
    try:
        env = factory(**kwargs)
    except Exception:
        Path(path).write_text(f"constructing the env: {traceback.format_exc()}", encoding="utf-8")
        raise
    return _ErrorReporting(env, path)


class _ReportingSubprocVecEnv(SubprocVecEnv):
    """``SubprocVecEnv`` whose worker errors surface as :class:`VecEnvWorkerError` with the worker's exception and
    traceback instead of a bare ``EOFError`` / ``BrokenPipeError``."""

    _report_dir: str = ""

    def _raise_cause(self, exc: BaseException) -> None:
        cause = _worker_errors(self._report_dir)
        raise VecEnvWorkerError(f"a SubprocVecEnv worker failed ({type(exc).__name__}); its error:\n{cause}") from exc

    def step_wait(self) -> Any:
        try:
            return super().step_wait()
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            self._raise_cause(exc)
            raise

    def reset(self) -> Any:
        try:
            return super().reset()
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            self._raise_cause(exc)
            raise

    def close(self) -> None:
        """Close the workers; after a worker died, end the others instead of failing on the dead pipe. The
        folder of error reports is removed."""
        try:
            super().close()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            for p in self.processes:
                if p.is_alive():
                    p.terminate()
                p.join(timeout=5)
            self.closed = True
        finally:
            if self._report_dir:
                shutil.rmtree(self._report_dir, ignore_errors=True)


def make_vec_env(
    env_id: str | Callable[..., gym.Env],
    n_envs: int = 1,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    vec_cls: str = "dummy",
) -> VecEnv:
    """A seeded ``VecEnv`` of ``n_envs`` copies of ``env_id``, each wrapped in SB3's ``Monitor``.

    :param env_id: a registered id (``"poser_env/ImagePoser-v0"``; ``poser_env`` is imported for you, also in
        subprocess workers) or a callable returning an env (called with ``**env_kwargs``).
    :param n_envs: number of envs (>= 1).
    :param seed: env ``i`` is reset with seed ``seed + i`` at its first reset (its action space is seeded alike).
    :param env_kwargs: keyword arguments for ``gym.make`` / the callable.
    :param vec_cls: ``"dummy"`` (sequential, in-process; best for ~1 ms steps) or ``"subproc"`` (one process per
        env; worth it only when steps are slow, e.g. real diffusion experts).

    Each env is wrapped in ``Monitor`` (episode return/length in ``info["episode"]``, logged by SB3 as
    ``rollout/ep_rew_mean``).
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise AlgoConfigError(f"n_envs={n_envs!r} must be an int >= 1.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AlgoConfigError(f"seed={seed!r} must be an int >= 0.")
    classes: dict[str, type[DummyVecEnv] | type[SubprocVecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
    if vec_cls not in classes:
        raise AlgoConfigError(f"vec_cls={vec_cls!r} is not one of {sorted(classes)}; use 'dummy' for fast envs.")
    if isinstance(env_id, str):
        factory: Callable[..., gym.Env] = functools.partial(_gym_make, env_id)
    elif callable(env_id):
        factory = env_id
    else:
        raise AlgoConfigError(f"env_id={env_id!r} must be a registered env id string or a callable returning an env.")
    if vec_cls != "subproc":
        return _sb3_make_vec_env(
            factory, n_envs=n_envs, seed=seed, env_kwargs=dict(env_kwargs or {}), vec_env_cls=classes[vec_cls]
        )
    report_dir = tempfile.mkdtemp(prefix="poser-vecenv-")
    try:
        venv = _sb3_make_vec_env(
            functools.partial(_reporting_factory, factory, report_dir), n_envs=n_envs, seed=seed,
            env_kwargs=dict(env_kwargs or {}), vec_env_cls=_ReportingSubprocVecEnv,
        )
    except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
        cause = _worker_errors(report_dir)
        shutil.rmtree(report_dir, ignore_errors=True)
        raise VecEnvWorkerError(f"a SubprocVecEnv worker failed while starting; its error:\n{cause}") from exc
    assert isinstance(venv, _ReportingSubprocVecEnv)
    venv._report_dir = report_dir
    return venv


def _as_env(env: EnvLike, seed: int) -> gym.Env | VecEnv:
    if isinstance(env, str):
        return make_vec_env(env, n_envs=1, seed=seed)
    if isinstance(env, (gym.Env, VecEnv)):
        return env
    raise AlgoConfigError(
        f"env={env!r} must be a gymnasium.Env, a stable_baselines3 VecEnv or a registered env id string."
    )


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AlgoConfigError(f"seed={seed!r} must be an int >= 0 (same seed -> same training run).")
    return seed


def _merge(cls: type[BaseAlgorithm], defaults: Mapping[str, Any], policy_defaults: Mapping[str, Any],
           overrides: Mapping[str, Any]) -> dict[str, Any]:
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "env", "seed"}
    for key in overrides:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise AlgoConfigError(
                f"override {key!r} is not an argument of {cls.__name__}.{hint} Valid: {', '.join(sorted(allowed))}."
            )
    kwargs = {**defaults, **overrides}
    user_pk = overrides.get("policy_kwargs") or {}
    if not isinstance(user_pk, Mapping):
        raise AlgoConfigError(f"policy_kwargs={user_pk!r} must be a dict, e.g. {{'net_arch': [64, 64]}}.")
    kwargs["policy_kwargs"] = {**policy_defaults, **user_pk}
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("verbose", 0)
    return kwargs


def _extractor_policy_kwargs(extractor_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"features_extractor_class": PoserExtractor, "features_extractor_kwargs": dict(extractor_kwargs or {})}


def _default_policy(obs_space: gym.Space) -> str:
    return "MultiInputPolicy" if isinstance(obs_space, spaces.Dict) else "MlpPolicy"


def make_ppo(
    env: EnvLike, *, seed: int = 0, extractor_kwargs: Mapping[str, Any] | None = None, **overrides: Any
) -> PPO:
    """A PPO model with :class:`PoserExtractor` (``MultiInputPolicy`` on Dict obs, ``MlpPolicy`` on a flat Box).

    :param env: a gymnasium env, a VecEnv or a registered env id (one Monitor-wrapped copy is made).
    :param seed: seeds torch, numpy, the action space and the env (int >= 0).
    :param extractor_kwargs: keyword arguments of :class:`PoserExtractor` (``embed_dim``, ``numeric_dim``, ...).
    :param overrides: any ``PPO`` constructor argument (``n_steps``, ``tensorboard_log``, ``policy_kwargs``, ...);
        they replace :data:`PPO_DEFAULTS`; ``policy_kwargs`` is merged key by key with the defaults.
    """
    seed = _check_seed(seed)
    venv = _as_env(env, seed)
    kwargs = _merge(PPO, PPO_DEFAULTS, {**PPO_POLICY_DEFAULTS, **_extractor_policy_kwargs(extractor_kwargs)}, overrides)
    policy = kwargs.pop("policy", None) or _default_policy(venv.observation_space)
    return PPO(policy, venv, seed=seed, **kwargs)


def _unwrapped_action_masks(env: gym.Env) -> Any:
    return unwrap(env).action_masks()


def make_maskable_ppo(
    env: EnvLike, *, seed: int = 0, extractor_kwargs: Mapping[str, Any] | None = None, **overrides: Any
) -> MaskablePPO:
    """A sb3-contrib MaskablePPO model (same defaults and extractor as :func:`make_ppo`).

    Invalid actions are masked with ``action_masks()`` of the env: sb3-contrib finds it through the wrappers
    (``get_wrapper_attr`` / ``VecEnv.env_method("action_masks")``), so ``env.unwrapped.action_masks`` of the poser
    envs is used as is; an env without that method is refused here (wrap it in
    ``sb3_contrib.common.wrappers.ActionMasker`` first).
    """
    seed = _check_seed(seed)
    venv = _as_env(env, seed)
    from sb3_contrib.common.maskable.utils import is_masking_supported

    if not is_masking_supported(venv):
        raise AlgoConfigError(
            f"env {venv!r} has no action_masks() method, so MaskablePPO cannot mask actions; wrap it in "
            "sb3_contrib.common.wrappers.ActionMasker(env, mask_fn) or use make_ppo."
        )
    kwargs = _merge(MaskablePPO, PPO_DEFAULTS, {**PPO_POLICY_DEFAULTS, **_extractor_policy_kwargs(extractor_kwargs)}, overrides)
    policy = kwargs.pop("policy", None) or _default_policy(venv.observation_space)
    return MaskablePPO(policy, venv, seed=seed, **kwargs)


def make_dqn(
    env: EnvLike, *, seed: int = 0, extractor_kwargs: Mapping[str, Any] | None = None, **overrides: Any
) -> DQN:
    """The paper's DQN: a 3-layer MLP (``net_arch=[256, 256, 256]``) on the text-only paper state.

    On a flat Box (``ImagePoserPaper-v0``) the policy is ``MlpPolicy`` with SB3's flatten extractor, as in the
    paper. On a Dict env (ablation "paper's DQN on our observation") it is ``MultiInputPolicy`` with
    :class:`PoserExtractor` (``extractor_kwargs``). DQN cannot mask actions: masked actions it takes are no-ops
    with the env's ``invalid_action_penalty``.
    """
    seed = _check_seed(seed)
    venv = _as_env(env, seed)
    policy_defaults = dict(DQN_POLICY_DEFAULTS)
    if isinstance(venv.observation_space, spaces.Dict):
        policy_defaults.update(_extractor_policy_kwargs(extractor_kwargs))
    elif extractor_kwargs:
        raise AlgoConfigError(
            "extractor_kwargs is only used with a Dict observation space; the paper's DQN on a flat Box uses "
            "SB3's flatten extractor. Remove extractor_kwargs or pass policy_kwargs."
        )
    kwargs = _merge(DQN, DQN_DEFAULTS, policy_defaults, overrides)
    policy = kwargs.pop("policy", None) or _default_policy(venv.observation_space)
    return DQN(policy, venv, seed=seed, **kwargs)


#: Algorithm name -> builder ``(env, *, seed, **overrides) -> model``.
ALGOS: dict[str, Callable[..., BaseAlgorithm]] = {
    "ppo": make_ppo,
    "maskable_ppo": make_maskable_ppo,
    "dqn": make_dqn,
}
#: Algorithm name -> SB3 class (for loading saved models).
ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "maskable_ppo": MaskablePPO, "dqn": DQN}


def check_algo(algo: str) -> str:
    key = algo.lower().replace("-", "_") if isinstance(algo, str) else algo
    if key == "maskableppo":
        key = "maskable_ppo"
    if key not in ALGOS:
        close = difflib.get_close_matches(str(algo).lower(), list(ALGOS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AlgoConfigError(f"algo={algo!r} is unknown.{hint} Choose one of {sorted(ALGOS)}.")
    return str(key)


def make_model(algo: str, env: EnvLike, *, seed: int = 0, **overrides: Any) -> BaseAlgorithm:
    """Build a model by name: ``"ppo"``, ``"maskable_ppo"`` (also ``"maskable-ppo"``) or ``"dqn"``."""
    return ALGOS[check_algo(algo)](env, seed=seed, **overrides)


def load_model(
    path: str | Path, algo: str, env: gym.Env | VecEnv | None = None, *, device: str = "cpu",
    trust_pickle: bool = False, **kwargs: Any
) -> BaseAlgorithm:
    """Load an SB3 model saved with ``model.save(path)`` (a ``.zip``), only with ``trust_pickle=True``.

    SB3 zips hold cloudpickle data that ``<Algo>.load`` unpickles, which runs any code the file's author put there:
    load only zips you made or trust. Policies written by ``poser train`` use the safe format instead
    (:func:`agents.policy_io.load_policy`, safetensors + JSON, nothing unpickled).

    :param path: the ``.zip`` file (the suffix may be omitted, as with SB3).
    :param algo: the algorithm it was trained with (see :data:`ALGOS`).
    :param env: env to attach (needed to continue training; not needed for ``predict``); SB3 checks its spaces.
    :param device: torch device (default ``"cpu"``).
    :param trust_pickle: must be True: you vouch that the file is not hostile.
    :param kwargs: passed to ``<Algo>.load`` (e.g. ``custom_objects``).
    :raises agents.policy_io.UnsafePolicyError: ``trust_pickle`` is False.
    """
    cls = ALGO_CLASSES[check_algo(algo)]
    p = Path(path)
    if not p.is_file() and not p.with_name(p.name + ".zip").is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no saved model there (looked for {p} and {p}.zip).")
    if trust_pickle is not True:

        raise UnsafePolicyError(
            f"path={str(path)!r} is a Stable-Baselines3 zip: loading it unpickles its 'data' entry with cloudpickle, "
            "which runs any code its author put there. Pass trust_pickle=True (CLI: --trust-pickle) only for files "
            "you trust, or load the safe format with agents.policy_io.load_policy.")
    return cls.load(p, env=env, device=device, **kwargs)
