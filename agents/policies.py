"""Policies behind one interface: trained SB3 models and every baseline.

A policy sees the env (for action masks and, for the baselines that are allowed to, copies of it) and the
observation, and returns an action::

    policy.reset(env)               # at the start of each episode
    a = policy.act(env, obs)        # each step
    policy.extra_calls, policy.extra_cost   # calls it made outside the episode (critic-greedy's probes)

Baselines:

- ``random``: uniform over the actions allowed by the mask (STOP included).
- ``single:<expert>``: one call of a text-to-image expert on the prompt, then STOP.
- ``fixed``: the best text-to-image expert (chosen on the train split), then rule-chosen repairs: for each
  pending command, the first image-to-image expert (in registry order) that supports its op; STOP when the plan
  is empty or nothing supports the command. ``fixed:<expert>`` starts with the named text-to-image expert instead
  (the main job evaluates one per text-to-image expert, so "the best fixed pipeline" is measured, not assumed).
- ``critic-greedy``: at each step tries every allowed expert on a copy of the env, keeps the one whose result the
  critic scores best (highest reward), STOPs when none improves; it pays for every probe.
- ``oracle``: beam search over expert sequences with access to the ground-truth judge (SceneSim only), an
  upper bound; its search calls are not counted.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from poser_env.env import unwrap

__all__ = [
    "BASELINES",
    "CriticGreedyPolicy",
    "FixedPipelinePolicy",
    "OraclePolicy",
    "Policy",
    "RandomPolicy",
    "SB3Policy",
    "SingleExpertPolicy",
    "make_baseline",
]

BASELINES: tuple[str, ...] = ("random", "single:<expert>", "fixed", "fixed:<expert>", "critic-greedy", "oracle")


@runtime_checkable
class Policy(Protocol):
    """Anything that picks actions for an image-poser env."""

    name: str
    extra_calls: int
    extra_cost: float

    def reset(self, env: gym.Env[Any, Any]) -> None: ...

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int: ...


class _Base:
    name = "policy"

    def __init__(self) -> None:
        self.extra_calls = 0
        self.extra_cost = 0.0

    def reset(self, env: gym.Env[Any, Any]) -> None:
        self.extra_calls = 0
        self.extra_cost = 0.0

    @staticmethod
    def _masks(env: gym.Env[Any, Any]) -> np.ndarray:
        return np.asarray(unwrap(env).action_masks(), dtype=np.bool_)

    @staticmethod
    def _stop(env: gym.Env[Any, Any]) -> int:
        return int(unwrap(env).n_experts)


class SB3Policy(_Base):
    """A trained Stable-Baselines3 model (PPO, MaskablePPO or DQN); masks are passed when the model takes them."""

    def __init__(self, model: Any, *, name: str = "learned", deterministic: bool = True) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.deterministic = deterministic
        self._masked = "action_masks" in model.predict.__code__.co_varnames

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        if self._masked:
            action, _ = self.model.predict(obs, deterministic=self.deterministic, action_masks=self._masks(env))
        else:
            action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return int(np.asarray(action).item())


class RandomPolicy(_Base):
    """Uniform over allowed actions, seeded."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        return int(self.rng.choice(np.flatnonzero(self._masks(env))))


class SingleExpertPolicy(_Base):
    """One call of one text-to-image expert, then STOP."""

    def __init__(self, expert: str) -> None:
        super().__init__()
        self.expert = expert
        self.name = f"single:{expert}"
        self._called = False

    def reset(self, env: gym.Env[Any, Any]) -> None:
        super().reset(env)
        names = list(unwrap(env).expert_names)
        if self.expert not in names:
            close = difflib.get_close_matches(self.expert, names, n=3)
            raise ValueError(f"expert={self.expert!r} is not in this env's experts {names}"
                             + (f"; did you mean {close}?" if close else "."))
        self._index = names.index(self.expert)
        self._called = False

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        if self._called:
            return self._stop(env)
        self._called = True
        return self._index


class FixedPipelinePolicy(_Base):
    """Best text-to-image expert first, then for each pending command the first editing expert supporting its op."""

    name = "fixed"

    def __init__(self, t2i_expert: str) -> None:
        super().__init__()
        self.t2i_expert = t2i_expert

    def reset(self, env: gym.Env[Any, Any]) -> None:
        super().reset(env)
        names = list(unwrap(env).expert_names)
        if self.t2i_expert not in names:
            raise ValueError(f"fixed pipeline expert {self.t2i_expert!r} is not in this env; choose one of {names}.")
        self._t2i = names.index(self.t2i_expert)

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        u = unwrap(env)
        state = u.state
        if state.canvas is None:
            return self._t2i
        cur = state.command
        if cur is None:
            return self._stop(env)
        if cur.op == "generate":
            return self._t2i
        mask = self._masks(env)
        for i, e in enumerate(u.experts):
            if e.kind == "image-to-image" and e.supports(cur.op) and mask[i]:
                return i
        return self._stop(env)


class CriticGreedyPolicy(_Base):
    """Probe every allowed expert on env copies; keep the best by critic reward; pay every probe."""

    name = "critic-greedy"

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        u = unwrap(env)
        mask = self._masks(env)
        best_a, best_r = self._stop(env), 0.0
        for a in np.flatnonzero(mask[:-1]):
            probe = copy.deepcopy(u)
            _, r, _, _, info = probe.step(int(a))
            self.extra_calls += 1
            self.extra_cost += float(info.get("cost", 0.0))
            # the reward already subtracts this probe's cost; ties keep the cheaper earlier expert
            if float(r) > best_r + 1e-9:
                best_a, best_r = int(a), float(r)
        if best_a != self._stop(env):
            # the chosen call is made for real by the env and counted there
            self.extra_calls -= 1
            self.extra_cost -= float(u.experts[best_a].cost)
        return best_a


class OraclePolicy(_Base):
    """Beam search over expert sequences scored by the ground-truth judge (an upper bound; needs a judge).

    Args:
        depth: Longest pipeline searched (calls, 1..8).
        beam: States kept per depth (1..16).
        cost_weight: Judge score is ``alignment + pass_bonus * pass - cost_weight * cost``.
    """

    name = "oracle"

    def __init__(self, depth: int = 3, beam: int = 4, cost_weight: float = 0.02, pass_bonus: float = 1.0) -> None:
        super().__init__()
        if not 1 <= depth <= 8:
            raise ValueError(f"depth={depth!r} must be from 1 to 8 calls.")
        if not 1 <= beam <= 16:
            raise ValueError(f"beam={beam!r} must be from 1 to 16.")
        self.depth, self.beam, self.cost_weight, self.pass_bonus = depth, beam, cost_weight, pass_bonus
        self._actions: list[int] = []

    def _score(self, info: dict[str, Any], cost: float) -> float:
        j = info.get("judge")
        if j is None:
            return -1e9
        return float(j["alignment"]) + self.pass_bonus * float(j["pass"]) - self.cost_weight * cost

    def reset(self, env: gym.Env[Any, Any]) -> None:
        super().reset(env)
        u = unwrap(env)
        if getattr(u, "judge", None) is None:
            raise ValueError("the oracle needs a judge (SceneSim); this env was made with judge=None.")
        beam: list[tuple[float, list[int], Any, float]] = [(-1e9, [], copy.deepcopy(u), 0.0)]
        best: tuple[float, list[int]] = (-1e9, [])
        for _ in range(self.depth):
            cand: list[tuple[float, list[int], Any, float]] = []
            for _, seq, state, cost in beam:
                mask = np.asarray(state.action_masks(), dtype=bool)
                for a in np.flatnonzero(mask[:-1]):
                    probe = copy.deepcopy(state)
                    _, _, term, trunc, info = probe.step(int(a))
                    c = cost + float(info.get("cost", 0.0))
                    s = self._score(info, c)
                    cand.append((s, [*seq, int(a)], probe, c))
                    if s > best[0]:
                        best = (s, [*seq, int(a)])
                    if term or trunc:
                        cand[-1] = (s, cand[-1][1], None, c)
            cand = [c for c in cand if c[2] is not None]
            cand.sort(key=lambda t: -t[0])
            beam = cand[: self.beam]
            if not beam or best[0] >= 1.0 + self.pass_bonus - 1e-9:
                break
        self._actions = list(best[1])

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        if self._actions:
            a = self._actions.pop(0)
            if self._masks(env)[a]:
                return a
        return self._stop(env)


def make_baseline(name: str, *, seed: int = 0, best_t2i: str | None = None, **kwargs: Any) -> Policy:
    """Build a baseline by name (see :data:`BASELINES`).

    Args:
        name: ``"random"``, ``"single:<expert>"``, ``"fixed"`` (starting with ``best_t2i``),
            ``"fixed:<text-to-image expert>"``, ``"critic-greedy"`` or ``"oracle"``.
        seed: Seed of the random baseline.
        best_t2i: The text-to-image expert the fixed pipeline starts with (required for ``"fixed"``).
    """
    if name == "random":
        return RandomPolicy(seed)
    if name.startswith("single:"):
        return SingleExpertPolicy(name.split(":", 1)[1])
    if name.startswith("fixed:"):
        return FixedPipelinePolicy(name.split(":", 1)[1])
    if name == "fixed":
        if not best_t2i:
            raise ValueError("baseline 'fixed' needs best_t2i=<expert name>; pick the best single expert on the train split.")
        return FixedPipelinePolicy(best_t2i)
    if name == "critic-greedy":
        return CriticGreedyPolicy()
    if name == "oracle":
        return OraclePolicy(**kwargs)
    close = difflib.get_close_matches(name, ["random", "fixed", "critic-greedy", "oracle"], n=2)
    raise ValueError(f"baseline name={name!r} is unknown" + (f"; did you mean {close}?" if close else "")
                     + f". Known: {list(BASELINES)}.")
