"""A public conformance suite for image-poser environments (and your own configurations of them).

    from poser_env.conformance import check_conformance
    report = check_conformance("poser_env/ImagePoser-v0", env_kwargs={"text_encoder": "hashing"})
    assert report.ok, report.failures

Each check is a function ``(make_env, report) -> None`` that records failures instead of stopping at the first:
``gymnasium`` and ``sb3`` (their ``check_env``), ``determinism`` (and finite values), ``pickle``, ``render``,
``masks`` (the action mask agrees with the env), ``episode_end`` (one step budget: the ``TimeLimit``'s equals
the env's ``max_steps``; ``step()`` after the end raises ``ResetNeeded``) and ``close`` (twice, and the env can
be reset after it).
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["ConformanceReport", "check_conformance", "rollout"]

EnvFactory = Callable[[], gym.Env[Any, Any]]


@dataclass
class ConformanceReport:
    """Outcome of :func:`check_conformance`: names of checks passed and ``(check, message)`` failures."""

    env: str
    passed: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        lines = [f"conformance of {self.env}: {len(self.passed)} passed, {len(self.failures)} failed"]
        lines += [f"  FAIL {name}: {msg}" for name, msg in self.failures]
        return "\n".join(lines)


def _obs_equal(a: Any, b: Any, atol: float = 0.0) -> bool:
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(_obs_equal(a[k], b[k], atol) for k in a)
    x, y = np.asarray(a), np.asarray(b)
    if atol > 0 and np.issubdtype(x.dtype, np.floating):
        return x.shape == y.shape and bool(np.allclose(x, y, rtol=0.0, atol=atol))
    return bool(np.array_equal(x, y))


def _nondeterministic(env: gym.Env[Any, Any]) -> bool:
    return bool(getattr(env.spec, "nondeterministic", False))


def _finite(obs: Any) -> bool:
    if isinstance(obs, Mapping):
        return all(_finite(v) for v in obs.values())
    arr = np.asarray(obs)
    return not np.issubdtype(arr.dtype, np.floating) or bool(np.isfinite(arr).all())


def rollout(env: gym.Env[Any, Any], *, seed: int, n_steps: int, action_seed: int = 0) -> list[tuple[Any, ...]]:
    """Run ``n_steps`` uniformly random actions (resetting with seeds seed, seed+1, ... when an episode ends).

    Returns per-step tuples (obs, reward, terminated, truncated, canvas bytes or b"") for comparisons.
    """
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    episode = 0
    out: list[tuple[Any, ...]] = [(obs, 0.0, False, False, b"")]
    n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    for _ in range(n_steps):
        a = int(rng.integers(n_actions))
        obs, r, term, trunc, _ = env.step(a)
        canvas = getattr(env.unwrapped, "canvas", None)
        out.append((obs, float(r), bool(term), bool(trunc), b"" if canvas is None else canvas.tobytes()))
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    return out


def _check_gymnasium(make_env: EnvFactory, rep: ConformanceReport) -> None:
    from gymnasium.utils.env_checker import check_env

    env = make_env()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)
    msgs = [str(w.message) for w in caught if "gymnasium" in (w.filename or "") or issubclass(w.category, UserWarning)]
    if msgs:
        rep.failures.append(("gymnasium.check_env", "; ".join(msgs)))
    else:
        rep.passed.append("gymnasium.check_env")


def _check_sb3(make_env: EnvFactory, rep: ConformanceReport) -> None:
    try:
        from stable_baselines3.common.env_checker import check_env
    except ImportError:
        rep.passed.append("sb3.check_env (skipped: stable-baselines3 not installed)")
        return
    env = make_env()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, warn=True)
    msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if msgs:
        rep.failures.append(("sb3.check_env", "; ".join(msgs)))
    else:
        rep.passed.append("sb3.check_env")


def _check_determinism(make_env: EnvFactory, rep: ConformanceReport, n_steps: int, seed: int) -> None:
    a = rollout(make_env(), seed=seed, n_steps=n_steps)
    b = rollout(make_env(), seed=seed, n_steps=n_steps)
    for i, (x, y) in enumerate(zip(a, b)):
        if not (_obs_equal(x[0], y[0]) and x[1:] == y[1:]):
            rep.failures.append(("determinism", f"two envs with seed={seed} diverge at step {i}"))
            return
    bad = [i for i, x in enumerate(a) if not (_finite(x[0]) and np.isfinite(x[1]))]
    if bad:
        rep.failures.append(("finite", f"NaN or inf in an observation or reward at steps {bad[:5]}"))
        return
    rep.passed += ["determinism", "finite"]


def _check_pickle(make_env: EnvFactory, rep: ConformanceReport, seed: int) -> None:
    env = make_env()
    for k in range(10):  # a state in the middle of an episode (stepping after the end raises)
        env.reset(seed=seed + k)
        if not any(env.step(0)[2:4]):
            break
    else:
        env.reset(seed=seed)
    clone = pickle.loads(pickle.dumps(env))
    mask = getattr(env.unwrapped, "action_masks", None)
    action = int(np.flatnonzero(mask())[0]) if mask is not None else 0
    r1 = env.step(action)
    r2 = clone.step(action)
    # an env registered nondeterministic (real models) reloads weights in the copy: float noise is allowed
    atol = 1e-6 if _nondeterministic(env) else 0.0
    same_reward = abs(float(r1[1]) - float(r2[1])) <= atol
    if not (_obs_equal(r1[0], r2[0], atol) and same_reward and r1[2:4] == r2[2:4]):
        rep.failures.append(("pickle", "a pickled copy steps differently from the original"))
    else:
        rep.passed.append("pickle")


def _check_render(make_env: EnvFactory, rep: ConformanceReport, seed: int) -> None:
    env = make_env()
    if env.render_mode != "rgb_array":
        rep.failures.append(("render", f"render_mode={env.render_mode!r}; make the env with render_mode='rgb_array'"))
        return
    env.reset(seed=seed)
    frames = [env.render()]
    env.step(0)
    frames.append(env.render())
    for f in frames:
        arr = np.asarray(f)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            rep.failures.append(("render", f"render() returned shape {arr.shape} dtype {arr.dtype}, expected HxWx3 uint8"))
            return
    rep.passed.append("render")


def _check_masks(make_env: EnvFactory, rep: ConformanceReport, seed: int, n_states: int = 6) -> None:
    env = make_env()
    if not hasattr(env.unwrapped, "action_masks"):
        rep.passed.append("masks (skipped: no action_masks)")
        return
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(n_states):
        mask = np.asarray(env.unwrapped.action_masks())
        if mask.shape != (env.action_space.n,):  # type: ignore[attr-defined]
            rep.failures.append(("masks", f"action_masks() shape {mask.shape} != ({env.action_space.n},)"))  # type: ignore[attr-defined]
            return
        for a in range(len(mask)):
            probe = copy.deepcopy(env)
            _, _, _, _, info = probe.step(a)
            if bool(info.get("invalid_action", False)) == bool(mask[a]):
                rep.failures.append(("masks", f"action {a}: mask says {bool(mask[a])} but the env "
                                               f"{'rejected' if info.get('invalid_action') else 'accepted'} it"))
                return
        valid = np.flatnonzero(mask)
        _, _, term, trunc, _ = env.step(int(rng.choice(valid)))
        if term or trunc:
            env.reset(seed=int(rng.integers(1 << 30)))
    rep.passed.append("masks")


def _check_episode_end(make_env: EnvFactory, rep: ConformanceReport, seed: int) -> None:
    env = make_env()
    limit = getattr(env.spec, "max_episode_steps", None)
    budget = getattr(env.unwrapped, "max_steps", None)
    if limit is not None and budget is not None and limit != budget:
        rep.failures.append(("episode_end", f"two step budgets: TimeLimit max_episode_steps={limit}, "
                                            f"env max_steps={budget}"))
        return
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    for _ in range(1000):
        _, _, term, trunc, _ = env.step(int(rng.integers(n_actions)))
        if term or trunc:
            break
    else:
        rep.failures.append(("episode_end", "no episode ended within 1000 random steps"))
        return
    try:
        env.step(0)
    except gym.error.ResetNeeded:
        rep.passed.append("episode_end")
        return
    rep.failures.append(("episode_end", "step() after the episode ended ran instead of raising ResetNeeded"))


def _check_close(make_env: EnvFactory, rep: ConformanceReport, seed: int) -> None:
    env = make_env()
    env.close()
    env.reset(seed=seed)
    env.step(0)
    env.close()
    env.close()
    env.reset(seed=seed)  # a closed env may be used again (models reload)
    env.close()
    rep.passed.append("close")


def check_conformance(
    env_id: str | EnvFactory,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    n_steps: int = 100,
    seed: int = 0,
    checks: tuple[str, ...] = ("gymnasium", "sb3", "determinism", "pickle", "render", "masks", "episode_end", "close"),
) -> ConformanceReport:
    """Run the conformance checks on an env id (with ``env_kwargs``) or a zero-argument factory.

    Args:
        env_id: A registered id such as ``"poser_env/ImagePoser-v0"`` or a callable returning an env.
        env_kwargs: Keyword arguments for ``gym.make`` (``render_mode="rgb_array"`` is added).
        n_steps: Random steps in the determinism check (>= 1).
        seed: Seed of the checks.
        checks: Which checks to run (default: all).

    Returns:
        A :class:`ConformanceReport`; ``report.ok`` is True when every check passed.
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r} must be an int >= 1.")
    known = ("gymnasium", "sb3", "determinism", "pickle", "render", "masks", "episode_end", "close")
    unknown = set(checks) - set(known)
    if unknown:
        raise ValueError(f"checks {sorted(unknown)} are unknown; choose from {', '.join(known)}.")
    kwargs = {"render_mode": "rgb_array", **dict(env_kwargs or {})}
    if isinstance(env_id, str):
        name = env_id

        def make_env() -> gym.Env[Any, Any]:
            return gym.make(env_id, **kwargs)
    elif callable(env_id):
        name = getattr(env_id, "__name__", "factory")
        make_env = env_id
    else:
        raise ValueError(f"env_id={env_id!r} must be a registered id string or a zero-argument factory.")
    rep = ConformanceReport(env=name)
    runners: dict[str, Callable[[], None]] = {
        "gymnasium": lambda: _check_gymnasium(make_env, rep),
        "sb3": lambda: _check_sb3(make_env, rep),
        "determinism": lambda: _check_determinism(make_env, rep, n_steps, seed),
        "pickle": lambda: _check_pickle(make_env, rep, seed),
        "render": lambda: _check_render(make_env, rep, seed),
        "masks": lambda: _check_masks(make_env, rep, seed),
        "episode_end": lambda: _check_episode_end(make_env, rep, seed),
        "close": lambda: _check_close(make_env, rep, seed),
    }
    for c in checks:
        try:
            runners[c]()
        except Exception as exc:  # a check that crashes is a failure, reported with the others
            rep.failures.append((c, f"{type(exc).__name__}: {exc}"))
    return rep
