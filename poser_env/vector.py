"""Vector envs for SceneSim: ``num_envs`` copies stepped in one process or sharded over a few worker processes.

:func:`make_vector_env` returns a ``gymnasium.vector.VectorEnv``:

- ``workers=1``: a ``gymnasium.vector.SyncVectorEnv`` (a SceneSim step is a few milliseconds of Python, so one
  process is the cheapest way to run many copies);
- ``workers=k > 1``: a :class:`ShardedVectorEnv`: ``k`` processes each stepping ``num_envs / k`` copies in turn.
  ``AsyncVectorEnv`` (and SB3's ``SubprocVecEnv``) start one process per copy: with 8 copies on a 2-core machine
  that is 8 processes competing for 2 cores and one pipe round trip per copy and step. Sharding keeps one process
  per core and one round trip per worker and step.

Both autoreset like ``SyncVectorEnv`` (``NEXT_STEP``: the step after an episode ends resets that copy) and give the
same observations, rewards and infos as the single envs for the same seeds (copy ``i`` is reset with
``seed + i``). ``call("action_masks")`` returns one mask per copy (MaskablePPO-style masking).

Batching expert or critic calls across copies does not pay in SceneSim: every copy draws a different scene graph,
and the work is per-object Python control flow, not one array operation (measured in ``poser bench perf``).
For SB3 training use ``agents.algos.make_vec_env`` (DummyVecEnv) in each training process and run seeds in
parallel processes, one per core (what ``poser main`` does).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from copy import deepcopy
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

__all__ = ["ShardedVectorEnv", "make_vector_env"]


class _EnvFn:
    """A picklable ``() -> env`` for one copy."""

    def __init__(self, env_id: str, kwargs: dict[str, Any]) -> None:
        self.env_id = env_id
        self.kwargs = kwargs

    def __call__(self) -> gym.Env:
        # unpickling this object in a spawned worker imports poser_env.vector, hence poser_env (the ids)
        return gym.make(self.env_id, **self.kwargs)


def make_vector_env(env_id: str = "poser_env/ImagePoser-v0", num_envs: int = 4, *, workers: int = 1,
                    context: str | None = None, **env_kwargs: Any) -> VectorEnv:
    """``num_envs`` copies of ``env_id`` (``gym.make(env_id, **env_kwargs)``) as one ``VectorEnv``.

    Args:
        env_id: A registered id.
        num_envs: Copies, >= 1.
        workers: Processes, 1..num_envs (1: ``SyncVectorEnv`` in this process; more: :class:`ShardedVectorEnv`).
            On a 2-core machine use at most 2.
        context: ``multiprocessing`` start method of the workers (default: the platform's).

    Raises:
        ValueError: a bad ``num_envs`` or ``workers`` (named in the message).
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r} must be an int >= 1.")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= num_envs:
        raise ValueError(f"workers={workers!r} must be an int from 1 to num_envs={num_envs} (use 1 or the core count).")
    fns = [_EnvFn(env_id, dict(env_kwargs)) for _ in range(num_envs)]
    if workers == 1:
        return SyncVectorEnv(fns)
    return ShardedVectorEnv(fns, workers=workers, context=context)


def _step_shard(envs: list[gym.Env], autoreset: np.ndarray, actions: Sequence[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for i, (env, a) in enumerate(zip(envs, actions, strict=True)):
        if autoreset[i]:
            obs, info = env.reset()
            out.append((obs, 0.0, False, False, info))
        else:
            out.append(env.step(a))
        autoreset[i] = bool(out[-1][2] or out[-1][3])
    return out


def _worker(conn: Connection, fns: list[Callable[[], gym.Env]]) -> None:
    envs: list[gym.Env] = []
    try:
        envs = [fn() for fn in fns]
        autoreset = np.zeros(len(envs), dtype=bool)
        conn.send(("ok", None))
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                seeds, options = arg
                autoreset[:] = False
                conn.send(("ok", [env.reset(seed=s, options=options) for env, s in zip(envs, seeds, strict=True)]))
            elif cmd == "step":
                conn.send(("ok", _step_shard(envs, autoreset, arg)))
            elif cmd == "call":
                name, args, kwargs = arg
                res = []
                for env in envs:
                    attr = env.get_wrapper_attr(name)
                    res.append(attr(*args, **kwargs) if callable(attr) else attr)
                conn.send(("ok", res))
            elif cmd == "close":
                break
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:  # report the worker's error to the parent instead of hanging it
        conn.send(("error", traceback.format_exc()))
    finally:
        for env in envs:
            env.close()
        conn.close()


class ShardedVectorEnv(VectorEnv):  # type: ignore[type-arg]
    """``len(env_fns)`` envs over ``workers`` processes, contiguous shards (worker ``k`` runs copies
    ``k * n / workers ...``); same semantics as ``SyncVectorEnv`` (``NEXT_STEP`` autoreset, infos batched with
    ``_key`` masks). ``env_fns`` must be picklable with the chosen start method.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], *, workers: int = 2, context: str | None = None) -> None:
        n = len(env_fns)
        if not 1 <= workers <= n:
            raise ValueError(f"workers={workers!r} must be from 1 to len(env_fns)={n}.")
        probe = env_fns[0]()
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.metadata = dict(probe.metadata)
        self.metadata["autoreset_mode"] = gym.vector.AutoresetMode.NEXT_STEP
        self.render_mode = probe.render_mode
        probe.close()
        self.num_envs = n
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        bounds = np.linspace(0, n, workers + 1).round().astype(int)
        self._shards = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        ctx: Any = mp.get_context(context)
        self._conns: list[Connection] = []
        self._procs = []
        for a, b in self._shards:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, list(env_fns[a:b])), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self.closed = False
        self._gather()
        self._obs: Any = create_empty_array(self.single_observation_space, n, fn=np.zeros)

    def _gather(self) -> list[Any]:
        out = []
        for conn in self._conns:
            status, payload = conn.recv()
            if status != "ok":
                self.close()
                raise RuntimeError(f"a ShardedVectorEnv worker failed:\n{payload}")
            out.append(payload)
        return out

    def _send(self, cmd: str, args: Sequence[Any]) -> list[Any]:
        for conn, arg in zip(self._conns, args, strict=True):
            conn.send((cmd, arg))
        return [r for shard in self._gather() for r in shard]

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed has {len(seeds)} entries; pass one per env ({self.num_envs}) or an int.")
        res = self._send("reset", [(seeds[a:b], options) for a, b in self._shards])
        infos: dict[str, Any] = {}
        for i, (_, info) in enumerate(res):
            infos = self._add_info(infos, info, i)
        self._obs = concatenate(self.single_observation_space, [r[0] for r in res], self._obs)
        return deepcopy(self._obs), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        acts = list(iterate(self.action_space, actions))
        res = self._send("step", [acts[a:b] for a, b in self._shards])
        infos: dict[str, Any] = {}
        for i, r in enumerate(res):
            infos = self._add_info(infos, r[4], i)
        self._obs = concatenate(self.single_observation_space, [r[0] for r in res], self._obs)
        rewards = np.array([float(r[1]) for r in res], dtype=np.float64)
        terms = np.array([bool(r[2]) for r in res], dtype=np.bool_)
        truncs = np.array([bool(r[3]) for r in res], dtype=np.bool_)
        return deepcopy(self._obs), rewards, terms, truncs, infos

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call ``name`` (or read the attribute) on every copy; one result per copy."""
        return tuple(self._send("call", [(name, args, kwargs)] * len(self._shards)))

    def close_extras(self, **kwargs: Any) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []
