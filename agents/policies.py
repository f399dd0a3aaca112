"""Policies behind one interface: trained SB3 models and every baseline.

A policy sees the env (for action masks and, for the baselines that are allowed to, snapshots of it) and the
observation, and returns an action::

    policy.reset(env)               # at the start of each episode
    a = policy.act(env, obs)        # each step
    policy.extra_calls, policy.extra_cost   # calls it made outside the episode (critic-greedy's probes)

Every baseline works in both action modes of :class:`poser_env.env.ImagePoserEnv`: ``"expert"`` (v0: the action
picks the expert for the planner's current command) and ``"factored"`` (v1: the action picks a pending command
*and* its expert). Actions are built with ``env.unwrapped.encode_action(slot, expert)`` and STOP is
``env.unwrapped.stop_action``.

Baselines:

- ``random``: uniform over the actions allowed by the mask (STOP included).
- ``single:<expert>``: one call of a text-to-image expert on the prompt, then STOP.
- ``fixed``: the best text-to-image expert (chosen on the train split), then rule-chosen repairs in the planner's
  order (always the current command, slot 0): for each command, the expert chosen for its op (``per_op``:
  :func:`agents.pipeline.best_experts_per_op` measures the single best expert per op on the train split; an op
  without a choice takes the first image-to-image expert in registry order that supports it); STOP when the plan is
  empty or nothing supports the command. ``fixed:<expert>`` starts with the named text-to-image expert instead (the
  main job evaluates one per text-to-image expert, so "the best fixed pipeline" is measured, not assumed).
  ``fixed-first:<expert>`` is the same without the measured choice (the first supporting expert for every op).
- ``critic-greedy``: at each step tries every allowed (command slot, expert) pair from a snapshot of the episode,
  keeps the one whose result the critic scores best (highest reward), STOPs when none improves; it pays for every
  probe.
- ``oracle``: depth-limited beam search over expert sequences with access to the ground-truth judge (SceneSim
  only), a cheap upper bound; its search calls are not counted.
- ``oracle-deep``: beam search over whole episodes (the full step budget, thousands of simulated steps per prompt)
  with judge access: the ceiling for long prompts (:class:`DeepOraclePolicy`); its search calls are not counted.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from poser_env.env import unwrap

__all__ = [
    "BASELINES",
    "CriticGreedyPolicy",
    "DeepOraclePolicy",
    "FixedPipelinePolicy",
    "OraclePolicy",
    "Policy",
    "RandomPolicy",
    "SB3Policy",
    "SingleExpertPolicy",
    "make_baseline",
]

BASELINES: tuple[str, ...] = ("random", "single:<expert>", "fixed", "fixed:<expert>", "fixed-first:<expert>",
                              "critic-greedy", "oracle", "oracle-deep")


@runtime_checkable
class Policy(Protocol):
    """Anything that picks actions for an image-poser env."""

    name: str
    extra_calls: int
    extra_cost: float

    def reset(self, env: gym.Env[Any, Any]) -> None: ...

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int: ...


def _stop_action(u: Any) -> int:
    """STOP of an unwrapped env: ``stop_action`` (the last action) when it has one, else the mask's last entry."""
    stop = getattr(u, "stop_action", None)
    if stop is not None:
        return int(stop)
    return len(np.asarray(u.action_masks())) - 1


def _encode(u: Any, slot: int, expert: int) -> int:
    """The action running expert index ``expert`` on pending command ``slot`` (``expert`` itself in an env
    without ``encode_action``, which has the current command only)."""
    enc = getattr(u, "encode_action", None)
    if enc is not None:
        return int(enc(slot, expert))
    if slot != 0:
        raise ValueError(f"slot={slot!r}: this env has no command slots; only slot 0 (the current command) exists.")
    return int(expert)


def _decode(u: Any, action: int) -> tuple[int, int] | None:
    """``(slot, expert index)`` of an action, or None for STOP."""
    if action == _stop_action(u):
        return None
    dec = getattr(u, "decode_action", None)
    if dec is not None:
        got = dec(action)
        return None if got is None else (int(got[0]), int(got[1]))
    return 0, int(action)


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
        return _stop_action(unwrap(env))


def _expert_index(u: Any, name: str, what: str) -> int:
    names = list(u.expert_names)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        raise ValueError(f"{what}={name!r} is not in this env's experts {names}"
                         + (f"; did you mean {close}?" if close else "."))
    return names.index(name)


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
    """One call of one text-to-image expert (on the current command), then STOP."""

    def __init__(self, expert: str) -> None:
        super().__init__()
        self.expert = expert
        self.name = f"single:{expert}"
        self._called = False

    def reset(self, env: gym.Env[Any, Any]) -> None:
        super().reset(env)
        u = unwrap(env)
        self._index = _encode(u, 0, _expert_index(u, self.expert, "expert"))
        self._called = False

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        if self._called:
            return self._stop(env)
        self._called = True
        return self._index


class FixedPipelinePolicy(_Base):
    """A text-to-image expert first, then the planner's current command (slot 0) each step, run by the expert
    chosen for its op.

    Args:
        t2i_expert: Name of the text-to-image expert that draws the first image (and any ``generate`` command).
        per_op: Op (``"add"``, ``"move"``, ...) -> name of the image-to-image expert that runs it (e.g. the result
            of :func:`agents.pipeline.best_experts_per_op`). An op missing here, or whose expert is masked now,
            takes the first image-to-image expert in registry order that supports it (None: that rule for all).
    """

    name = "fixed"

    def __init__(self, t2i_expert: str, per_op: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.t2i_expert = t2i_expert
        self.per_op = dict(per_op or {})

    def reset(self, env: gym.Env[Any, Any]) -> None:
        super().reset(env)
        u = unwrap(env)
        names = list(u.expert_names)
        if self.t2i_expert not in names:
            raise ValueError(f"fixed pipeline expert {self.t2i_expert!r} is not in this env; choose one of {names}.")
        self._t2i = _encode(u, 0, names.index(self.t2i_expert))
        self._per_op: dict[str, int] = {}
        if self.per_op:
            u.prepare()
            for op, name in self.per_op.items():
                i = _expert_index(u, name, f"per_op[{op!r}]")
                e = u.experts[i]
                if e.kind != "image-to-image" or not e.supports(op):
                    raise ValueError(f"per_op[{op!r}]={name!r} does not edit {op!r} (kind {e.kind!r}); pick an "
                                     "image-to-image expert whose card lists that op.")
                self._per_op[op] = i

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
        chosen = self._per_op.get(cur.op)
        if chosen is not None and mask[_encode(u, 0, chosen)]:
            return _encode(u, 0, chosen)
        for i, e in enumerate(u.experts):
            if e.kind == "image-to-image" and e.supports(cur.op) and mask[_encode(u, 0, i)]:
                return _encode(u, 0, i)
        return self._stop(env)


class CriticGreedyPolicy(_Base):
    """Probe every allowed (command slot, expert) pair from a snapshot of the episode; keep the best by critic
    reward; pay every probe (``extra_calls`` / ``extra_cost`` count all probes but the one the env then runs)."""

    name = "critic-greedy"

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        u = unwrap(env)
        mask = self._masks(env)
        stop = self._stop(env)
        best_a, best_r, best_cost = stop, 0.0, 0.0
        snap = u.snapshot()
        try:
            for a in np.flatnonzero(mask[:stop]):
                _, r, _, _, info = u.step(int(a))
                u.restore(snap)
                self.extra_calls += 1
                self.extra_cost += float(info.get("cost", 0.0))
                # the reward already subtracts this probe's cost; ties keep the earlier (cheaper-first) action
                if float(r) > best_r + 1e-9:
                    best_a, best_r, best_cost = int(a), float(r), float(info.get("cost", 0.0))
        finally:
            u.restore(snap)
        if best_a != stop:
            # the chosen call is made for real by the env (the same expert seed: the snapshot holds the RNG) and
            # counted there
            self.extra_calls -= 1
            self.extra_cost -= best_cost
        return best_a


def _judge_score(info: Mapping[str, Any], cost: float, cost_weight: float, pass_bonus: float) -> float:
    j = info.get("judge")
    if j is None:
        return -1e9
    return float(j["alignment"]) + pass_bonus * float(j["pass"]) - cost_weight * cost


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
        #: Simulated env steps of the last search (not counted as calls).
        self.sim_steps = 0

    def reset(self, env: gym.Env[Any, Any]) -> None:
        super().reset(env)
        u = unwrap(env)
        if getattr(u, "judge", None) is None:
            raise ValueError("the oracle needs a judge (SceneSim); this env was made with judge=None.")
        root = u.snapshot()
        self.sim_steps = 0
        stop = _stop_action(u)
        beam: list[tuple[float, list[int], Any, float]] = [(-1e9, [], root, 0.0)]
        best: tuple[float, list[int]] = (-1e9, [])
        try:
            for _ in range(self.depth):
                cand: list[tuple[float, list[int], Any, float]] = []
                for _, seq, snap, cost in beam:
                    u.restore(snap)
                    mask = np.asarray(u.action_masks(), dtype=bool)
                    for a in np.flatnonzero(mask[:stop]):
                        u.restore(snap)
                        _, _, term, trunc, info = u.step(int(a))
                        self.sim_steps += 1
                        c = cost + float(info.get("cost", 0.0))
                        s = _judge_score(info, c, self.cost_weight, self.pass_bonus)
                        if s > best[0]:
                            best = (s, [*seq, int(a)])
                        if not (term or trunc):
                            cand.append((s, [*seq, int(a)], u.snapshot(), c))
                cand.sort(key=lambda t: -t[0])
                beam = cand[: self.beam]
                if not beam or best[0] >= 1.0 + self.pass_bonus - 1e-9:
                    break
        finally:
            u.restore(root)
        self._actions = list(best[1])

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        if self._actions:
            a = self._actions.pop(0)
            if self._masks(env)[a]:
                return a
        return self._stop(env)


@dataclass
class _Node:
    """A state of the deep oracle's search: the actions from the root, its snapshot (None when the episode ended
    there), its score key and the signatures after each action (for checking the replay)."""

    key: tuple[float, float]
    actions: list[int]
    snap: Any
    cost: float
    sigs: list[tuple[Any, ...]]


def _signature(u: Any) -> tuple[Any, ...]:
    """What must match between search and replay after each step: step, cost, judge result, pending commands."""
    s = u.state
    j = s.judge
    judge = None if j is None else (bool(j["pass"]), round(float(j["alignment"]), 9),
                                    tuple(sorted(dict(j.get("verdicts", {})).items())))
    return s.step, round(s.cost, 9), judge, tuple(c.text for c in s.plan.pending)


class DeepOraclePolicy(_Base):
    """The ceiling for long prompts: beam search over whole episodes with the ground-truth judge.

    From the episode's start it expands, depth by depth up to the step budget, every allowed (command slot,
    expert) action of the best ``beam`` (up to ``max_width``) states, each on a snapshot of the episode (:meth:`ImagePoserEnv.snapshot`;
    the snapshot holds the random state that draws expert seeds, so a repeated call is a fresh draw and replaying
    the found actions reproduces the search exactly). States are ranked by judge pass, then judge alignment minus
    ``cost_weight`` x cost; states with the same judge verdicts and pending commands are merged (the better one
    kept). The best state seen anywhere is the answer: :meth:`act` replays its actions, then STOPs. The search
    stops at the first depth that reaches a judge pass, when the beam empties (every episode ended) or when
    ``max_sim_steps`` are spent; each depth gets at most its share of what is left
    (``remaining / remaining depths``, at least one state's children), so the whole budget of steps is covered.

    The replay is checked step by step against the search (step, cost, judge verdicts, pending commands); on a
    mismatch (a non-deterministic expert) it counts ``replay_mismatches`` and searches again from the current state.
    Search calls are not counted as calls or cost (an upper bound, not a method).

    Args:
        beam: States always expanded per depth (1..256), best first.
        max_width: States kept per depth (``beam``..4096); those past ``beam`` are expanded only while the depth's
            share of ``max_sim_steps`` lasts.
        max_sim_steps: Simulated env steps per episode (searches included), 1..1,000,000.
        cost_weight: Weight of the cost (SceneSim units) against judge alignment (in [0, 1]), >= 0; small, so that
            cost only breaks near-ties.

    Attributes:
        sim_steps: Simulated env steps of the current (last) episode.
        sim_steps_history: ``sim_steps`` of every episode so far (one entry per :meth:`reset`).
        replay_mismatches: Replays that diverged from the search (0 in a deterministic world).
    """

    name = "oracle-deep"

    def __init__(self, beam: int = 12, max_sim_steps: int = 4000, cost_weight: float = 1e-3,
                 max_width: int = 32) -> None:
        super().__init__()
        for arg, v, lo, hi in (("beam", beam, 1, 256), ("max_sim_steps", max_sim_steps, 1, 1_000_000),
                               ("max_width", max_width, 1, 4096)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"{arg}={v!r} must be an int from {lo} to {hi}.")
        if isinstance(cost_weight, bool) or not isinstance(cost_weight, (int, float)) or not 0 <= cost_weight < 1:
            raise ValueError(f"cost_weight={cost_weight!r} must be a number in [0, 1) (per SceneSim cost unit).")
        if max_width < beam:
            raise ValueError(f"max_width={max_width!r} must be >= beam={beam!r} (states kept vs states always "
                             "expanded per depth).")
        self.beam, self.max_sim_steps, self.cost_weight = int(beam), int(max_sim_steps), float(cost_weight)
        self.max_width = int(max_width)
        self.sim_steps = 0
        self.sim_steps_history: list[int] = []
        self.replay_mismatches = 0
        self.best_key: tuple[float, float] = (0.0, -1e9)
        self._actions: list[int] = []
        self._sigs: list[tuple[Any, ...]] = []
        self._expected: tuple[Any, ...] | None = None

    def _key(self, info: Mapping[str, Any], cost: float) -> tuple[float, float]:
        j = info.get("judge")
        if j is None:
            return 0.0, -1e9
        return float(bool(j["pass"])), float(j["alignment"]) - self.cost_weight * cost

    def reset(self, env: gym.Env[Any, Any]) -> None:
        super().reset(env)
        u = unwrap(env)
        if getattr(u, "judge", None) is None:
            raise ValueError("the deep oracle needs a judge (SceneSim); this env was made with judge=None.")
        self.sim_steps = 0
        self._search(u, self.max_sim_steps)
        self.sim_steps_history.append(self.sim_steps)

    def _search(self, u: Any, budget: int) -> None:
        root = u.snapshot()
        s0 = u.state
        stop = _stop_action(u)
        start = self.sim_steps
        root_key = self._key({"judge": s0.judge}, float(s0.cost))
        best = _Node(root_key, [], None, float(s0.cost), [])
        beam = [_Node(root_key, [], root, float(s0.cost), [])]
        root_sig = _signature(u)
        try:
            depth = int(s0.step)
            while beam and depth < u.max_steps:
                used = self.sim_steps - start
                share = (budget - used) // max(1, u.max_steps - depth)
                if budget - used <= 0:
                    break
                t0 = self.sim_steps
                merged: dict[tuple[Any, ...], _Node] = {}
                for k, node in enumerate(beam):
                    if k >= self.beam and self.sim_steps - t0 >= share:
                        break
                    u.restore(node.snap)
                    allowed = np.flatnonzero(np.asarray(u.action_masks(), dtype=bool)[:stop])
                    for a in allowed:
                        if self.sim_steps - start >= budget:
                            break
                        u.restore(node.snap)
                        _, _, term, trunc, info = u.step(int(a))
                        self.sim_steps += 1
                        cost = node.cost + float(info.get("cost", 0.0))
                        key = self._key(info, cost)
                        sig = _signature(u)
                        child = _Node(key, [*node.actions, int(a)], None if (term or trunc) else u.snapshot(), cost,
                                      [*node.sigs, sig])
                        if key > best.key:
                            best = child
                        if child.snap is None:
                            continue
                        dedup = (sig[2], sig[3])
                        old = merged.get(dedup)
                        if old is None or key > old.key:
                            merged[dedup] = child
                beam = sorted(merged.values(), key=lambda n: n.key, reverse=True)[: self.max_width]
                depth += 1
                if best.key[0] >= 1.0:
                    break
        finally:
            u.restore(root)
        self.best_key = best.key
        self._actions = list(best.actions)
        self._sigs = list(best.sigs)
        self._expected = root_sig

    def act(self, env: gym.Env[Any, Any], obs: Any) -> int:
        u = unwrap(env)
        if self._expected is not None and _signature(u) != self._expected:
            self.replay_mismatches += 1
            self._search(u, max(1, self.max_sim_steps - self.sim_steps))
            if self.sim_steps_history:
                self.sim_steps_history[-1] = self.sim_steps
        if not self._actions:
            self._expected = None
            return self._stop(env)
        a = self._actions.pop(0)
        self._expected = self._sigs.pop(0)
        if not self._masks(env)[a]:  # cannot happen when the replay matched
            self.replay_mismatches += 1
            return self._stop(env)
        return a


def make_baseline(name: str, *, seed: int = 0, best_t2i: str | None = None,
                  per_op: Mapping[str, str] | None = None, **kwargs: Any) -> Policy:
    """Build a baseline by name (see :data:`BASELINES`).

    Args:
        name: ``"random"``, ``"single:<expert>"``, ``"fixed"`` (starting with ``best_t2i``),
            ``"fixed:<text-to-image expert>"``, ``"fixed-first:<text-to-image expert>"``, ``"critic-greedy"``,
            ``"oracle"`` or ``"oracle-deep"``.
        seed: Seed of the random baseline.
        best_t2i: The text-to-image expert the fixed pipeline starts with (required for ``"fixed"``).
        per_op: The fixed pipelines' expert per editing op (:func:`agents.pipeline.best_experts_per_op`); None:
            the first supporting expert. ``fixed-first:`` ignores it.
        kwargs: Arguments of :class:`OraclePolicy` (``"oracle"``) or :class:`DeepOraclePolicy` (``"oracle-deep"``).
    """
    if name == "random":
        return RandomPolicy(seed)
    if name.startswith("single:"):
        return SingleExpertPolicy(name.split(":", 1)[1])
    if name.startswith("fixed:"):
        return FixedPipelinePolicy(name.split(":", 1)[1], per_op)
    if name.startswith("fixed-first:"):
        return FixedPipelinePolicy(name.split(":", 1)[1])
    if name == "fixed":
        if not best_t2i:
            raise ValueError("baseline 'fixed' needs best_t2i=<expert name>; pick the best single expert on the train split.")
        return FixedPipelinePolicy(best_t2i, per_op)
    if name == "critic-greedy":
        return CriticGreedyPolicy()
    if name == "oracle":
        return OraclePolicy(**kwargs)
    if name == "oracle-deep":
        return DeepOraclePolicy(**kwargs)
    close = difflib.get_close_matches(name, ["random", "fixed", "critic-greedy", "oracle", "oracle-deep"], n=2)
    raise ValueError(f"baseline name={name!r} is unknown" + (f"; did you mean {close}?" if close else "")
                     + f". Known: {list(BASELINES)}.")
