"""The factored action mode (v1 MDP): the action picks a pending command *and* the expert that runs it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import poser_env  # noqa: F401  (registers the ids)
from poser_env.config import EnvConfigError
from poser_env.core.spec import Entity, Spec
from poser_env.env import ImagePoserEnv, unwrap
from poser_env.observation import SCENE_DIM, SLOT_DIM, SLOT_LAYOUT, read_slots
from poser_env.planner import PlanError, Planner

LONG = "a red clock, two blue dogs, a green cup left of a yellow vase, a pink book and a striped cat"


def _env(**kw: object) -> ImagePoserEnv:
    kw.setdefault("action_mode", "factored")
    return ImagePoserEnv(prompt_source="long", max_steps=30, **kw)  # type: ignore[arg-type]


def _first_edit(env: ImagePoserEnv) -> None:
    env.reset(seed=3, options={"prompt": LONG})
    t2i = next(i for i, e in enumerate(env.experts) if e.kind == "text-to-image")
    env.step(env.encode_action(0, t2i))


def test_spaces_and_mask_shape() -> None:
    env = _env(command_slots=3)
    obs, _ = env.reset(seed=0, options={"prompt": LONG})
    assert env.action_space.n == 3 * env.n_experts + 1
    assert env.stop_action == 3 * env.n_experts
    assert obs["slots"].shape == (3 * SLOT_DIM + SCENE_DIM,)
    assert env.observation_space.contains(obs)
    mask = env.action_masks()
    assert mask.shape == (env.action_space.n,) and mask[-1]
    # empty canvas: only text-to-image experts, only on slot 0
    allowed = {env.decode_action(int(a)) for a in np.flatnonzero(mask[:-1])}
    assert allowed == {(0, i) for i, e in enumerate(env.experts) if e.kind == "text-to-image"}


def test_masks_follow_the_ops_of_the_pending_commands() -> None:
    env = _env()
    _first_edit(env)
    slots = env.slot_commands()
    mask = env.action_masks()
    for slot, cmd in enumerate(slots):
        for i, e in enumerate(env.experts):
            a = env.encode_action(slot, i)
            if cmd is None:
                assert not mask[a]
            elif e.kind == "image-to-image":
                assert mask[a] == e.supports(cmd.op), (slot, cmd.text, e.name)
            elif slot > 0:
                assert mask[a] == (cmd.op == "generate")


def test_choosing_a_later_slot_runs_that_command_first() -> None:
    env = _env()
    _first_edit(env)
    slots = env.slot_commands()
    mask = env.action_masks()
    choice = next((s, i) for s in range(1, env.command_slots) for i in range(env.n_experts)
                  if slots[s] is not None and mask[env.encode_action(s, i)])
    chosen = slots[choice[0]]
    assert chosen is not None
    _, _, _, _, info = env.step(env.encode_action(*choice))
    assert info["command"] == chosen.text and info["slot"] == choice[0]
    assert info["expert"] == env.expert_names[choice[1]]


def test_snapshot_restore_replays_the_same_step() -> None:
    env = _env()
    _first_edit(env)
    snap = env.snapshot()
    a = int(np.flatnonzero(env.action_masks()[:-1])[-1])
    obs1, r1, *_, info1 = env.step(a)
    env.step(env.stop_action)
    env.restore(snap)
    obs2, r2, *_, info2 = env.step(a)
    assert r1 == r2 and info1["seed"] == info2["seed"] and info1["command"] == info2["command"]
    assert all(np.array_equal(obs1[k], obs2[k]) for k in obs1)
    with pytest.raises(TypeError, match="snapshot"):
        env.restore("nope")  # type: ignore[arg-type]


def test_same_seed_same_trajectory() -> None:
    def run() -> list[tuple[int, float, str]]:
        env = gym.make("poser_env/ImagePoserLong-v1")
        u = unwrap(env)
        env.reset(seed=5)
        rng = np.random.default_rng(1)
        out = []
        for _ in range(12):
            m = u.action_masks()
            m[-1] = False
            a = int(rng.choice(np.flatnonzero(m)))
            _, r, term, trunc, info = env.step(a)
            out.append((a, float(r), info["command"]))
            if term or trunc:
                break
        return out

    assert run() == run()


def test_slot_context_is_feedback_and_absent_without_it() -> None:
    env = _env()
    _first_edit(env)
    env2 = _env(feedback_in_obs=False)
    _first_edit(env2)
    a = env.encode_action(0, next(i for i, e in enumerate(env.experts) if e.kind == "text-to-image"))
    obs, *_ = env.step(a)
    obs2, *_ = env2.step(a)
    s1, s2 = read_slots(obs["slots"], env.command_slots), read_slots(obs2["slots"], env.command_slots)
    assert s1["present"].sum() >= 1 and np.array_equal(s1["present"], s2["present"])
    for name in ("held", "found", "size", "crowded", "same_noun", "ordinal"):
        assert not s2[name].any(), name
    assert s1["found"].any() or s1["held"].any()
    assert 0 < obs["slots"][-SCENE_DIM] <= 1  # detections / 10


def test_bad_arguments_are_named() -> None:
    with pytest.raises(EnvConfigError, match="action_mode='fact'"):
        ImagePoserEnv(action_mode="fact")
    with pytest.raises(EnvConfigError, match="command_slots=0"):
        ImagePoserEnv(action_mode="factored", command_slots=0)
    with pytest.raises(EnvConfigError, match="cards='v9'"):
        ImagePoserEnv(cards="v9")
    env = _env()
    env.reset(seed=0, options={"prompt": LONG})
    with pytest.raises(ValueError, match="slot=9"):
        env.encode_action(9, 0)
    with pytest.raises(ValueError, match="expert='nobody'"):
        env.encode_action(0, "nobody")
    with pytest.raises(ValueError, match="encode_action"):
        env.step(env.action_space.n)


def test_expert_mode_is_unchanged_api() -> None:
    env = ImagePoserEnv()
    assert env.command_slots == 1 and env.stop_action == env.n_experts
    assert env.action_space.n == env.n_experts + 1
    env.reset(seed=0)
    assert env.encode_action(0, 2) == 2 and env.decode_action(env.n_experts) is None


def test_plan_promote() -> None:
    spec = Spec(entities=(Entity("cat", 1, "red"), Entity("dog", 2, "blue")), prompt="a red cat and two blue dogs")
    plan = Planner().plan(spec)
    assert plan.promote(0) is plan
    if len(plan.pending) > 1:
        p2 = plan.promote(len(plan.pending) - 1)
        assert p2.pending[0] == plan.pending[-1] and set(p2.pending) == set(plan.pending)
    with pytest.raises(PlanError, match="index=99"):
        plan.promote(99)
    assert SLOT_LAYOUT["present"] == slice(0, 1)


def test_action_masks_match_command_for() -> None:
    """The mask's fast path gives exactly ``_command_for(expert, slot) is not None`` for every entry."""
    env = _env()
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    later = 0
    for t in range(150):
        mask = env.action_masks()
        later += int(mask[env.n_experts:-1].sum())
        want = np.zeros_like(mask)
        for slot in range(env.command_slots):
            for i, e in enumerate(env.experts):
                want[slot * env.n_experts + i] = env._command_for(e, slot) is not None
        want[-1] = True
        assert np.array_equal(mask, want), t
        _, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(mask))))
        if term or trunc:
            env.reset(seed=t + 1)
    assert later > 0  # later slots were exercised, not only slot 0
