"""The RL ecosystem's conventions, checked the way a user would: Gymnasium and SB3 checkers for every id,
episode limits through ``TimeLimit``, ``TimeAwareObservation``, ``close()`` twice, stepping after the end,
vector envs' auto-reset, named observation slots, the public episode state, and a file of the user's that
shadows one of our packages."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import poser_env
from poser_env.env import EnvConfigError, unwrap
from poser_env.observation import FEEDBACK_DIM, FEEDBACK_LAYOUT, PROGRESS_LAYOUT, history_layout, read_feedback

ROOT = Path(__file__).resolve().parents[1]
SIM_IDS = ["poser_env/ImagePoser-v0", "poser_env/ImagePoserLong-v0", "poser_env/ImagePoserPaper-v0"]
DIFFUSERS_ID = "poser_env/ImagePoserDiffusers-v0"
FAST = {"text_encoder": "hashing"}


@pytest.fixture(scope="module")
def tiny_diffusers_kwargs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Keyword arguments of the diffusers id with tiny models built in code (about 10 s on CPU)."""
    pytest.importorskip("diffusers", reason="the diffusers id needs image-poser[diffusers]")
    pytest.importorskip("transformers", reason="the diffusers id needs image-poser[diffusers]")
    import torch

    from critic.testing import save_tiny_clip
    from experts.testing import save_tiny_pipelines, write_tiny_registry

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_diffusers_world")
    folders = save_tiny_pipelines(root / "pipes", kinds=("text-to-image", "instruct-pix2pix"))
    registry = write_tiny_registry(root / "registry.toml", folders, size=32, steps=2)
    clip = save_tiny_clip(root / "clip")
    return {"registry": str(registry), "critic": f"clip:{clip}", "local_files_only": True, **FAST,
            "prompt_source": ["a red cup left of a blue dog", "two green apples"]}


@pytest.fixture(params=[*SIM_IDS, DIFFUSERS_ID])
def env_id_kwargs(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param == DIFFUSERS_ID:
        return request.param, request.getfixturevalue("tiny_diffusers_kwargs")
    return request.param, dict(FAST)


def _invalid_action(env: gym.Env[Any, Any]) -> int:
    """An action masked out on an empty canvas (an edit expert): a no-op step that never ends the episode."""
    mask = unwrap(env).action_masks()
    return int(np.flatnonzero(~mask)[0])


def test_every_registered_id_has_max_episode_steps() -> None:
    for env_id in poser_env.ENV_IDS:
        spec = gym.spec(env_id)
        assert isinstance(spec.max_episode_steps, int) and spec.max_episode_steps > 0, env_id
        assert "max_steps" not in spec.kwargs, f"{env_id}: one budget, max_episode_steps only"


def test_gymnasium_and_sb3_check_env(env_id_kwargs: tuple[str, dict[str, Any]]) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env_id, kw = env_id_kwargs
    env = gym.make(env_id, **kw)
    assert env.spec is not None and env.spec.max_episode_steps == gym.spec(env_id).max_episode_steps
    assert unwrap(env).max_steps == env.spec.max_episode_steps  # one budget
    gym_check_env(env.unwrapped)
    sb3_check_env(env, warn=True)
    env.close()


def test_max_episode_steps_truncates_at_n_and_progress_counts_against_it(
    env_id_kwargs: tuple[str, dict[str, Any]],
) -> None:
    env_id, kw = env_id_kwargs
    env = gym.make(env_id, max_episode_steps=3, **kw)
    assert env.spec is not None and env.spec.max_episode_steps == 3 and unwrap(env).max_steps == 3
    env.reset(seed=0)
    a = _invalid_action(env)
    flags = []
    for _ in range(3):
        obs, _, term, trunc, info = env.step(a)
        flags.append((term, trunc))
    assert flags == [(False, False), (False, False), (False, True)]
    assert info["step"] == 3
    if isinstance(obs, dict):
        assert obs["progress"][PROGRESS_LAYOUT["step"]][0] == pytest.approx(1.0)
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(a)
    env.close()


def test_max_steps_is_an_alias_of_max_episode_steps() -> None:
    env = gym.make("poser_env/ImagePoser-v0", max_steps=5, **FAST)
    assert env.spec is not None and env.spec.max_episode_steps == 5 and unwrap(env).max_steps == 5
    env = gym.make("poser_env/ImagePoser-v0", max_steps=5, max_episode_steps=5, **FAST)
    assert env.spec is not None and env.spec.max_episode_steps == 5
    with pytest.raises(EnvConfigError, match="max_steps=5 and max_episode_steps=7"):
        gym.make("poser_env/ImagePoser-v0", max_steps=5, max_episode_steps=7, **FAST)
    # no TimeLimit at all: the env keeps its own budget
    env = gym.make("poser_env/ImagePoser-v0", max_episode_steps=-1, max_steps=2, **FAST)
    env.reset(seed=0)
    a = _invalid_action(env)
    assert env.step(a)[3] is False and env.step(a)[3] is True


@pytest.mark.parametrize("env_id", SIM_IDS)
def test_time_aware_observation(env_id: str) -> None:
    flat = gym.wrappers.TimeAwareObservation(gym.make(env_id, **FAST))  # the defaults: flattened, step count
    obs, _ = flat.reset(seed=0)
    assert flat.observation_space.contains(obs)
    env = gym.wrappers.TimeAwareObservation(gym.make(env_id, **FAST), flatten=False, normalize_time=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(_invalid_action(env))
    assert env.observation_space.contains(obs)
    assert float(np.asarray(obs["time"]).ravel()[0]) == pytest.approx(1 / gym.spec(env_id).max_episode_steps)


def test_close_twice_releases_and_the_env_can_be_reset_again(env_id_kwargs: tuple[str, dict[str, Any]]) -> None:
    env_id, kw = env_id_kwargs
    env = gym.make(env_id, **kw)
    env.close()
    env.close()  # before any reset, twice
    env.reset(seed=0)
    env.step(0)
    u = unwrap(env)
    env.close()
    env.close()
    with pytest.raises(gym.error.ResetNeeded):
        u.state
    if env_id == DIFFUSERS_ID:  # models and pipelines are released
        assert u.experts[0].memory_report().bases == () and not u.critic.loaded
    env.reset(seed=1)  # models reload on first use
    env.step(0)
    env.close()


def test_step_after_the_end_raises_and_vector_envs_still_auto_reset() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = gym.make("poser_env/ImagePoser-v0", **FAST)
    env.reset(seed=0)
    stop = int(env.action_space.n) - 1
    _, _, term, _, info = env.step(stop)
    assert term and "episode_calls" in info
    with pytest.raises(gym.error.ResetNeeded, match="after the episode ended"):
        env.step(0)
    env.reset(seed=0)
    env.step(stop)  # a new episode steps again

    fns = [lambda: gym.make("poser_env/ImagePoser-v0", max_episode_steps=4, **FAST) for _ in range(2)]
    venv = DummyVecEnv(fns)
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    dones = 0
    for _ in range(60):
        _, _, done, _ = venv.step(rng.integers(0, stop + 1, size=2))
        dones += int(done.sum())
    assert dones >= 20  # episodes end (STOP, success or the 4-step limit) and are reset automatically
    venv.close()
    vec = gym.vector.SyncVectorEnv(fns)
    vec.reset(seed=0)
    for _ in range(30):
        vec.step(rng.integers(0, stop + 1, size=2))
    vec.close()


def test_a_failed_first_reset_does_not_break_the_next_episode() -> None:
    """Gymnasium's PassiveEnvChecker otherwise fails the first step after the next good reset (TypeError)."""
    env = gym.make("poser_env/ImagePoser-v0", **FAST)
    with pytest.raises(EnvConfigError, match="prompt"):
        env.reset(seed=0, options={"prompt": ""})
    env.reset(seed=0)
    env.step(0)
    env.step(int(env.action_space.n) - 1)


def test_feedback_slots_are_named_and_cover_the_vector() -> None:
    env = gym.make("poser_env/ImagePoser-v0", **FAST)
    space = env.observation_space["feedback"]
    assert space.shape == (FEEDBACK_DIM,) and unwrap(env).feedback_layout is FEEDBACK_LAYOUT
    covered = sorted(i for s in FEEDBACK_LAYOUT.values() for i in range(s.start, s.stop))
    assert covered == list(range(FEEDBACK_DIM))
    n = unwrap(env).n_experts
    assert max(s.stop for s in history_layout(n).values()) == env.observation_space["history"].shape[0]
    obs, _ = env.reset(seed=0, options={"prompt": "two red clocks left of a blue dog"})
    fb = read_feedback(obs["feedback"])
    assert fb["canvas_empty"][0] == 1.0 and fb["command_pending"][0] == 1.0
    assert fb["op"].argmax() == 0  # OPS[0] == "generate": the first command
    assert obs["history"][history_layout(n)["last_action"]][0] == 1.0  # no action yet
    obs, *_ = env.step(0)
    fb = read_feedback(obs["feedback"])
    assert fb["canvas_empty"][0] == 0.0 and fb["alignment"][0] > 0
    assert gym.make("poser_env/ImagePoser-v0", feedback_in_obs=False, **FAST).unwrapped.feedback_layout is None


def test_public_episode_state_is_a_read_only_snapshot() -> None:
    env = gym.make("poser_env/ImagePoser-v0", **FAST)
    with pytest.raises(gym.error.ResetNeeded):
        unwrap(env).state
    env.reset(seed=0, options={"prompt": "a red cup left of a blue dog"})
    before = unwrap(env).state
    assert before.step == 0 and before.canvas is None and before.command is not None
    assert before.command is before.plan.current and before.max_steps == 16 and before.last_action is None
    env.step(0)
    s = unwrap(env).state
    assert before.step == 0 and s.step == 1  # a snapshot does not change
    assert s.canvas is not None and s.n_calls == 1 and s.cost > 0 and len(s.history) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.step = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        s.canvas[0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        s.calls[0] = 5
    with pytest.raises(TypeError):
        s.history[0]["expert"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError, match="not an image-poser env"):
        unwrap(gym.make("CartPole-v1"))


@pytest.mark.parametrize("filename,fatal", [("critic.py", True), ("experts.py", True), ("agents.py", False)])
def test_a_users_file_shadowing_our_packages_gets_a_clear_error(tmp_path: Path, filename: str, fatal: bool) -> None:
    (tmp_path / filename).write_text("x = 1\n")
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("always")
        import gymnasium as gym
        import poser_env
        gym.make("poser_env/ImagePoser-v0", text_encoder="hashing").reset(seed=0)
        print("env ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env)
    name = filename.removesuffix(".py")
    assert str(tmp_path / filename) in out.stderr and f"shadows image-poser's {name!r} package" in out.stderr
    assert "Rename it" in out.stderr
    if fatal:
        assert out.returncode != 0 and "PackageShadowedError" in out.stderr
        assert "is not a package" not in out.stderr
    else:  # the env does not need our agents package: a warning, and the env works
        assert out.returncode == 0 and "env ok" in out.stdout
