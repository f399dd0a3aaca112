"""Agents: PPO / MaskablePPO / DQN builders, save/load, poser/* metrics callback, checkpoints and resume.

The fake envs below have the spaces and info keys of ``poser_env`` (so these tests do not depend on the world);
the tests at the end run the real ``ImagePoser`` envs with the hashing text encoder.
"""

from __future__ import annotations

import csv
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

from agents.algos import (
    ALGOS,
    DQN_DEFAULTS,
    PPO_DEFAULTS,
    AlgoConfigError,
    load_model,
    make_dqn,
    make_maskable_ppo,
    make_model,
    make_ppo,
    make_vec_env,
)
from agents.callbacks import (
    CURVE_FIELDS,
    PoserMetricsCallback,
    checkpoint_callback,
    latest_checkpoint,
    load_curve,
    resume_training,
)
from agents.extractor import PoserExtractor

th.set_num_threads(1)

D = 384
EXPERTS = ("sketch", "layout", "recolor")


class FakePoserEnv(gym.Env):
    """Spaces and info keys of ImagePoser-v0; the right expert is 0 ("sketch") if ``prompt[0] < 0`` else 1.

    Action ``n`` (= 3) is STOP. Expert 2 ("recolor", an edit) is masked on the empty canvas (step 0).
    Choosing the right expert succeeds and ends the episode; a wrong one costs a step; ``max_steps`` = 4.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, thumbnail: bool = False, max_steps: int = 4) -> None:
        n = len(EXPERTS)
        d: dict[str, spaces.Space] = {
            "prompt": spaces.Box(-1, 1, (D,), np.float32),
            "command": spaces.Box(-1, 1, (D,), np.float32),
            "feedback": spaces.Box(0, 1, (34,), np.float32),
            "progress": spaces.Box(0, 1, (5,), np.float32),
            "history": spaces.Box(0, 1, (2 * n + 2,), np.float32),
        }
        if thumbnail:
            d["thumbnail"] = spaces.Box(0, 255, (16, 16, 3), np.uint8)
        self.observation_space = spaces.Dict(d)
        self.action_space = spaces.Discrete(n + 1)
        self.n_experts = n
        self.max_steps = max_steps
        self.masked_taken = 0

    def _obs(self) -> dict[str, np.ndarray]:
        obs = {
            "prompt": self._prompt,
            "command": self._prompt[::-1].copy(),
            "feedback": np.full(34, self._align, np.float32),
            "progress": np.full(5, self._t / self.max_steps, np.float32),
            "history": np.zeros(2 * self.n_experts + 2, np.float32),
        }
        if "thumbnail" in self.observation_space.spaces:
            obs["thumbnail"] = np.full((16, 16, 3), int(255 * self._align), np.uint8)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._target = int(self.np_random.integers(2))  # expert 0 or 1 (both allowed at step 0)
        self._prompt = self.np_random.uniform(-1, 1, D).astype(np.float32)
        self._prompt[:16] = 2 * self._target - 1  # a clear signal in the first 16 entries
        self._t, self._cost, self._calls, self._align = 0, 0.0, 0, 0.0
        return self._obs(), {"prompt": "fake"}

    def action_masks(self) -> np.ndarray:
        m = np.ones(self.n_experts + 1, dtype=bool)
        m[2] = self._t > 0
        return m

    def step(self, action):
        a = int(action)
        self._t += 1
        info: dict[str, Any] = {"invalid_action": False, "cost": 0.0}
        terminated = False
        reward = 0.0
        if a == self.n_experts:
            info["expert"] = "STOP"
            terminated = True
        elif not self.action_masks()[a] and self._t == 1:
            info["expert"] = EXPERTS[a]
            info["invalid_action"] = True
            self.masked_taken += 1
            reward = -0.1
        else:
            info["expert"] = EXPERTS[a]
            info["cost"] = 0.1
            self._cost += 0.1
            self._calls += 1
            if a == self._target:
                reward, self._align, terminated = 1.0 - self._align, 1.0, True
            else:
                reward, self._align = 0.5 - self._align if self._align < 0.5 else 0.0, max(self._align, 0.5)
                info["error"] = "ExpertError: flaky" if a == 1 else None
        info["alignment"] = self._align
        info["judge"] = {"pass": self._align == 1.0, "alignment": self._align}
        truncated = not terminated and self._t >= self.max_steps
        if terminated or truncated:
            info["is_success"] = self._align == 1.0
            info["episode_cost"] = self._cost
            info["episode_calls"] = self._calls
        return self._obs(), reward, terminated, truncated, info


class FakePaperEnv(gym.Env):
    """The paper env's spaces: flat Box(-1, 1, (768,)), Discrete(3) (no STOP); right expert = argmax(obs[:3])."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1, 1, (2 * D,), np.float32)
        self.action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._obs = self.np_random.uniform(-1, 1, 2 * D).astype(np.float32)
        self._t = 0
        return self._obs, {}

    def step(self, action):
        self._t += 1
        ok = int(action) == int(np.argmax(self._obs[:3]))
        done = ok or self._t >= 3
        info: dict[str, Any] = {"expert": EXPERTS[int(action)], "alignment": float(ok), "invalid_action": False}
        if done:
            info.update(is_success=ok, episode_cost=0.0, episode_calls=self._t)
        return self._obs, float(ok) - 0.05, ok, not ok and self._t >= 3, info


def fake_venv(n_envs: int = 1, seed: int = 0, **kwargs: Any):
    return make_vec_env(lambda: FakePoserEnv(**kwargs), n_envs=n_envs, seed=seed)


SMALL_PPO = {"n_steps": 64, "batch_size": 32, "n_epochs": 2}
SMALL_DQN = {"learning_starts": 50, "buffer_size": 1000, "batch_size": 32, "target_update_interval": 100}


def obs_batch(venv, n: int = 8) -> tuple[dict[str, np.ndarray] | np.ndarray, np.ndarray]:
    """n observations (and their action masks) collected with random actions."""
    obs = venv.reset()
    observations, masks = [], []
    for _ in range(n):
        observations.append(obs)
        masks.append(np.stack(venv.env_method("action_masks")) if venv.has_attr("action_masks") else None)
        obs, *_ = venv.step(np.array([venv.action_space.sample() for _ in range(venv.num_envs)]))
    if isinstance(observations[0], dict):
        stacked: Any = {k: np.concatenate([o[k] for o in observations]) for k in observations[0]}
    else:
        stacked = np.concatenate(observations)
    m = np.concatenate(masks) if masks[0] is not None else None
    return stacked, m


# ---------------------------------------------------------------- builders and learning
@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_ppo_family_learns_few_hundred_steps(algo, tmp_path):
    venv = fake_venv(n_envs=2)
    model = make_model(algo, venv, seed=1, **SMALL_PPO)
    assert isinstance(model, {"ppo": PPO, "maskable_ppo": MaskablePPO}[algo])
    assert isinstance(model.policy.features_extractor, PoserExtractor)
    assert model.policy.features_extractor.features_dim == 192
    assert model.device.type == "cpu"
    cb = PoserMetricsCallback(window=50, curve_interval=128)
    model.learn(384, callback=cb)
    assert model.num_timesteps == 384
    assert cb.n_episodes > 50
    m = cb.means()
    assert 0.0 <= m["success"] <= 1.0
    masked = sum(venv.get_attr("masked_taken"))
    if algo == "maskable_ppo":
        assert masked == 0  # MaskablePPO never takes a masked action
        assert m["invalid_rate"] == 0.0
    # curve points at 128, 256, 384
    assert [p["timesteps"] for p in cb.curve] == [128.0, 256.0, 384.0]


def test_maskable_ppo_learns_the_fake_task():
    """Enough steps for the policy to beat chance (1/3 of experts right at step 0) on the first action."""
    venv = fake_venv(n_envs=4)
    model = make_maskable_ppo(venv, seed=0, n_steps=64, batch_size=64, n_epochs=4, learning_rate=1e-3)
    cb = PoserMetricsCallback(window=100)
    model.learn(1536, callback=cb)
    env = FakePoserEnv()
    hits = 0
    for s in range(100):
        obs, _ = env.reset(seed=1000 + s)
        action, _ = model.predict(obs, deterministic=True, action_masks=env.action_masks())
        hits += int(action) == env._target
    assert hits >= 90, hits
    assert cb.means()["success"] > 0.8


def test_dqn_paper_setup_learns(tmp_path):
    model = make_dqn(FakePaperEnv(), seed=0, **SMALL_DQN)
    assert isinstance(model, DQN)
    assert model.policy.net_arch == [256, 256, 256]
    linear = [m for m in model.q_net.q_net if isinstance(m, th.nn.Linear)]
    assert [m.out_features for m in linear] == [256, 256, 256, 3]
    assert linear[0].in_features == 2 * D  # text-only state, flattened
    cb = PoserMetricsCallback()
    model.learn(300, callback=cb)  # DQN's off-policy loop feeds the callback too
    assert model.num_timesteps == 300
    assert cb.n_episodes >= 100  # episodes of 1 to 3 steps
    m = cb.means()
    assert sum(m[f"expert/{e}"] for e in EXPERTS) == pytest.approx(1.0)


def test_dqn_on_dict_env_uses_extractor():
    model = make_dqn(fake_venv(), seed=0, extractor_kwargs={"embed_dim": 16}, **SMALL_DQN)
    assert isinstance(model.q_net.features_extractor, PoserExtractor)
    assert model.q_net.features_extractor.features_dim == 16 + 16 + 64
    model.learn(200)


def test_thumbnail_env_is_transposed_by_sb3_and_learns():
    model = make_ppo(fake_venv(thumbnail=True), seed=0, **SMALL_PPO)
    # SB3 wraps channel-last images in VecTransposeImage; the extractor sees a channel-first space
    assert isinstance(model.get_env(), VecTransposeImage)
    assert model.policy.observation_space["thumbnail"].shape == (3, 16, 16)
    assert model.policy.features_extractor._channels_first == {"thumbnail": True}
    model.learn(128)
    obs, _ = FakePoserEnv(thumbnail=True).reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)  # a raw channel-last observation works too
    assert 0 <= int(action) <= 3


def test_same_seed_same_training():
    def train(seed: int) -> list[th.Tensor]:
        model = make_ppo(fake_venv(n_envs=2, seed=seed), seed=seed, **SMALL_PPO)
        model.learn(128)
        return [p.detach().clone() for p in model.policy.parameters()]

    a, b, c = train(3), train(3), train(4)
    assert all(th.equal(x, y) for x, y in zip(a, b))
    assert not all(th.equal(x, y) for x, y in zip(a, c))


def test_defaults_and_overrides():
    model = make_ppo(fake_venv(), seed=0, n_steps=32, batch_size=16,
                     policy_kwargs={"net_arch": {"pi": [8], "vf": [8]}}, extractor_kwargs={"embed_dim": 4})
    assert model.n_steps == 32 and model.batch_size == 16
    assert model.ent_coef == PPO_DEFAULTS["ent_coef"]
    assert model.policy.features_extractor.features_dim == 4 + 4 + 64
    assert model.policy_kwargs["net_arch"] == {"pi": [8], "vf": [8]}
    assert model.policy_kwargs["features_extractor_class"] is PoserExtractor  # merged, not replaced
    dqn = make_dqn(FakePaperEnv(), seed=0)
    assert dqn.learning_starts == DQN_DEFAULTS["learning_starts"] and dqn.buffer_size == DQN_DEFAULTS["buffer_size"]


def test_ppo_on_flat_box_uses_mlp_policy_with_extractor():
    model = make_ppo(FakePaperEnv(), seed=0, **SMALL_PPO)
    assert type(model.policy).__name__ == "ActorCriticPolicy"
    assert model.policy.features_extractor.features_dim == 64


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_ppo(FakePaperEnv(), seed=0, n_step=10), r"override 'n_step' is not an argument of PPO\. Did you mean 'n_steps'"),
        (lambda: make_ppo(FakePaperEnv(), seed=-1), r"seed=-1 must be an int >= 0"),
        (lambda: make_ppo(FakePaperEnv(), seed=0, policy_kwargs=[1]), r"policy_kwargs=\[1\] must be a dict"),
        (lambda: make_ppo(42, seed=0), r"env=42 must be a gymnasium.Env"),
        (lambda: make_maskable_ppo(FakePaperEnv(), seed=0), r"no action_masks\(\) method.*ActionMasker"),
        (lambda: make_dqn(FakePaperEnv(), seed=0, extractor_kwargs={"embed_dim": 8}), r"extractor_kwargs is only used with a Dict"),
        (lambda: make_model("maskedppo", FakePaperEnv()), r"algo='maskedppo' is unknown\. Did you mean 'maskable_ppo'"),
        (lambda: make_vec_env(FakePaperEnv, n_envs=0), r"n_envs=0 must be an int >= 1"),
        (lambda: make_vec_env(FakePaperEnv, vec_cls="threads"), r"vec_cls='threads' is not one of"),
        (lambda: make_vec_env(FakePaperEnv, seed=1.5), r"seed=1.5 must be an int >= 0"),
        (lambda: make_vec_env(7), r"env_id=7 must be a registered env id string or a callable"),
    ],
)
def test_builder_errors(call, match):
    with pytest.raises(AlgoConfigError, match=match):
        call()


def test_env_given_as_registered_id_or_plain_env():
    if "poser_test/Fake-v0" not in gym.registry:
        gym.register("poser_test/Fake-v0", entry_point=FakePoserEnv)
    model = make_ppo("poser_test/Fake-v0", seed=0, **SMALL_PPO)
    assert model.get_env().num_envs == 1
    assert model.get_env().envs[0].unwrapped.__class__ is FakePoserEnv
    # a plain gymnasium env: MaskablePPO finds action_masks() through the wrappers SB3 adds
    masked = make_maskable_ppo(FakePoserEnv(), seed=0, **SMALL_PPO)
    masked.learn(64)
    assert masked.get_env().envs[0].unwrapped.masked_taken == 0


def test_registry_names():
    assert set(ALGOS) == {"ppo", "maskable_ppo", "dqn"}
    assert isinstance(make_model("Maskable-PPO", fake_venv(), seed=0, **SMALL_PPO), MaskablePPO)


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo", "dqn"])
def test_save_load_round_trip_gives_identical_actions(algo, tmp_path):
    venv = make_vec_env(FakePaperEnv, seed=0) if algo == "dqn" else fake_venv()
    kwargs = SMALL_DQN if algo == "dqn" else SMALL_PPO
    model = make_model(algo, venv, seed=0, **kwargs)
    model.learn(128)
    model.save(tmp_path / "m.zip")
    loaded = load_model(tmp_path / "m", algo, trust_pickle=True)  # suffix optional, as in SB3
    obs, masks = obs_batch(venv, n=16)
    extra = {"action_masks": masks} if algo == "maskable_ppo" else {}
    a1, _ = model.predict(obs, deterministic=True, **extra)
    a2, _ = loaded.predict(obs, deterministic=True, **extra)
    assert a1.shape == (16,)
    np.testing.assert_array_equal(a1, a2)
    for p, q in zip(model.policy.parameters(), loaded.policy.parameters()):
        assert th.equal(p.detach(), q.detach())


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no saved model there"):
        load_model(tmp_path / "missing.zip", "ppo")
    with pytest.raises(AlgoConfigError, match=r"algo='a2c' is unknown"):
        load_model(tmp_path / "missing.zip", "a2c")


# ---------------------------------------------------------------- metrics callback
def test_callback_metrics_reach_the_logger_csv(tmp_path):
    venv = fake_venv(n_envs=2)
    model = make_maskable_ppo(venv, seed=0, **SMALL_PPO)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    cb = PoserMetricsCallback(expert_names=["sketch", "layout", "recolor", "never_used"])
    model.learn(256, callback=cb)
    with open(tmp_path / "progress.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2  # one dump per rollout of 2 x 64 steps
    expected = {"rollout/success_rate", "poser/judge_alignment", "poser/alignment", "poser/cost",
                "poser/calls", "poser/ep_return", "poser/ep_length", "poser/invalid_rate", "poser/error_rate",
                "poser/critic_error_rate", "poser/episodes", "poser/expert/sketch", "poser/expert/layout",
                "poser/expert/recolor", "poser/expert/STOP", "poser/expert/never_used"}
    assert expected <= set(rows[-1])
    last = {k: float(v) for k, v in rows[-1].items() if k.startswith("poser/") and v != ""}
    assert last["poser/expert/never_used"] == 0.0
    usage = sum(v for k, v in last.items() if k.startswith("poser/expert/")) + last["poser/invalid_rate"]
    assert usage == pytest.approx(1.0)
    # one success metric: SB3's rollout/success_rate; the callback's own mean (same window) is the same number
    assert "poser/success" not in rows[-1] and "poser/judge_pass" not in rows[-1]
    assert float(rows[-1]["rollout/success_rate"]) == pytest.approx(cb.means()["success"])
    assert 0 < last["poser/episodes"] == cb.n_episodes


def test_callback_aggregates_exactly():
    """Feed two episodes of hand-made infos through the callback's hook and check every number."""
    venv = fake_venv(n_envs=2)
    model = make_ppo(venv, seed=0, **SMALL_PPO)
    model.set_logger(configure(None, []))
    cb = PoserMetricsCallback(window=10)
    cb.init_callback(model)
    cb.on_training_start({}, {})

    def step(infos, dones, rewards):
        model.num_timesteps += 2
        cb.update_locals({"infos": infos, "dones": np.array(dones), "rewards": np.array(rewards)})
        cb.on_step()

    idle: dict[str, Any] = {"expert": "STOP", "invalid_action": False}
    step([{"expert": "layout", "invalid_action": True}, {"expert": "sketch", "invalid_action": False}], [0, 0], [-0.1, 0.2])
    step([{"expert": "layout", "invalid_action": False, "error": "boom"}, idle], [0, 0], [0.0, 0.0])
    step([{"expert": "layout", "invalid_action": False, "critic_error": "bad", "alignment": 0.8,
           "judge": {"pass": True, "alignment": 0.9}, "is_success": True, "episode_cost": 0.4, "episode_calls": 2},
          {"expert": "STOP", "invalid_action": False, "alignment": 0.2, "is_success": False,
           "episode_cost": 0.1, "episode_calls": 1, "episode": {"r": 0.5, "l": 3, "t": 0.0}}],
         [1, 1], [0.6, 0.0])
    m = cb.means()
    assert cb.n_episodes == 2
    assert m["success"] == 0.5 and m["judge_alignment"] == 0.9 and "judge_pass" not in m
    assert m["alignment"] == pytest.approx(0.5) and m["cost"] == pytest.approx(0.25) and m["calls"] == 1.5
    assert m["ep_return"] == pytest.approx((0.5 + 0.5) / 2)  # env 0 summed rewards, env 1 from Monitor
    assert m["ep_length"] == 3
    assert m["invalid_rate"] == pytest.approx((1 / 3) / 2)
    assert m["error_rate"] == pytest.approx((1 / 3) / 2) and m["critic_error_rate"] == pytest.approx((1 / 3) / 2)
    assert m["expert/layout"] == pytest.approx((2 / 3) / 2)
    assert m["expert/sketch"] == pytest.approx((1 / 3) / 2)
    assert m["expert/STOP"] == pytest.approx((2 / 3) / 2)
    assert "poser/success" not in model.logger.name_to_value  # SB3's rollout/success_rate is the one metric
    assert model.logger.name_to_value["poser/judge_alignment"] == 0.9
    cb.on_training_end()
    assert cb.curve[-1]["timesteps"] == 6 and cb.curve[-1]["success"] == 0.5


def test_callback_success_has_one_denominator():
    """An episode stopped before any image counts as a failure and as 0 assertions holding (not left out), and
    the window is the model's stats_window_size, so the curve's success equals SB3's rollout/success_rate."""
    venv = fake_venv(n_envs=2)
    model = make_ppo(venv, seed=0, stats_window_size=3, **SMALL_PPO)
    model.set_logger(configure(None, []))
    cb = PoserMetricsCallback()
    cb.init_callback(model)
    cb.on_training_start({}, {})
    assert cb.window == 3
    judged = {"expert": "layout", "judge": {"pass": True, "alignment": 1.0}, "is_success": True,
              "episode_calls": 1}
    no_image = {"expert": "STOP", "is_success": False, "episode_calls": 0}  # stopped at once: no judge info
    for infos in ([judged, no_image], [judged, judged]):
        model.num_timesteps += 2
        cb.update_locals({"infos": infos, "dones": np.array([1, 1]), "rewards": np.zeros(2)})
        cb.on_step()
    m = cb.means()  # window 3: the last three episodes are no_image, judged, judged
    assert m["success"] == pytest.approx(2 / 3) and m["judge_alignment"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"window=0 must be an int >= 1"):
        PoserMetricsCallback(window=0)


def test_metrics_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = make_maskable_ppo(fake_venv(), seed=0, tensorboard_log=str(tmp_path), **SMALL_PPO)
    model.learn(128, callback=PoserMetricsCallback(), tb_log_name="run")
    (run_dir,) = list(tmp_path.iterdir())
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"rollout/success_rate", "poser/cost", "poser/calls", "poser/expert/sketch", "rollout/ep_rew_mean"} <= tags
    assert "poser/success" not in tags
    assert [e.step for e in acc.Scalars("poser/cost")] == [64, 128]


def test_learning_curve_files_round_trip(tmp_path):
    model = make_ppo(fake_venv(), seed=0, **SMALL_PPO)
    cb = PoserMetricsCallback(curve_interval=64)
    model.learn(192, callback=cb)
    assert [p["timesteps"] for p in cb.curve] == [64.0, 128.0, 192.0]
    for suffix in (".json", ".csv"):
        path = cb.save_curve(tmp_path / f"curve{suffix}")
        back = load_curve(path)
        assert [list(p) for p in back] == [list(CURVE_FIELDS)] * 3
        for r, p in zip(back, cb.curve):
            for k in CURVE_FIELDS:
                assert r[k] == pytest.approx(p[k], nan_ok=True), (suffix, k)
    with pytest.raises(ValueError, match=r"must end in .json or .csv"):
        cb.save_curve(tmp_path / "curve.txt")
    with pytest.raises(FileNotFoundError, match=r"no learning-curve file"):
        load_curve(tmp_path / "none.json")


@pytest.mark.parametrize(("kwargs", "match"), [({"window": 0}, r"window=0 must be an int >= 1"),
                                                ({"curve_interval": 1.5}, r"curve_interval=1.5 must be")])
def test_callback_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PoserMetricsCallback(**kwargs)


# ---------------------------------------------------------------- checkpoints and resume
def test_checkpoint_and_resume_continue_the_timestep_count(tmp_path):
    venv = fake_venv(n_envs=2)
    model = make_ppo(venv, seed=0, **SMALL_PPO)
    model.learn(256, callback=checkpoint_callback(tmp_path / "ckpt", every_timesteps=128, n_envs=2))
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["model_128_steps.zip", "model_256_steps.zip"]
    latest = latest_checkpoint(tmp_path / "ckpt")
    assert latest is not None and latest.name == "model_256_steps.zip"
    cb = PoserMetricsCallback(curve_interval=128)
    resumed = resume_training(latest, fake_venv(n_envs=2), "ppo", total_timesteps=512, callback=cb,
                              trust_pickle=True)
    assert resumed.num_timesteps == 512
    assert cb.curve[0]["timesteps"] == 384  # curve continues from the checkpoint's count
    # a checkpoint already at its budget is returned as is
    again = resume_training(tmp_path / "ckpt" / "model_128_steps.zip", fake_venv(n_envs=2), "ppo", total_timesteps=100,
                            trust_pickle=True)
    assert again.num_timesteps == 128
    assert latest_checkpoint(tmp_path / "nowhere") is None
    with pytest.raises(ValueError, match=r"total_timesteps=0 must be an int >= 1"):
        resume_training(latest, venv, "ppo", total_timesteps=0)
    with pytest.raises(AlgoConfigError, match=r"replay_buffer_path is only for off-policy"):
        resume_training(latest, venv, "ppo", total_timesteps=600, replay_buffer_path=tmp_path / "rb.pkl",
                        trust_pickle=True)
    with pytest.raises(ValueError, match=r"every_timesteps=0 must be an int >= 1"):
        checkpoint_callback(tmp_path, every_timesteps=0)


def test_dqn_resume_with_replay_buffer(tmp_path):
    model = make_dqn(FakePaperEnv(), seed=0, **SMALL_DQN)
    model.learn(120, callback=checkpoint_callback(tmp_path, every_timesteps=120, save_replay_buffer=True))
    assert (tmp_path / "model_replay_buffer_120_steps.pkl").is_file()
    resumed = resume_training(tmp_path / "model_120_steps.zip", make_vec_env(FakePaperEnv, seed=1), "dqn",
                              total_timesteps=200, replay_buffer_path=tmp_path / "model_replay_buffer_120_steps.pkl",
                              trust_pickle=True)
    assert resumed.num_timesteps == 200
    # the checkpoint at step 120 is taken before transition 120 is stored: 119 old transitions plus 80 new ones
    assert resumed.replay_buffer.size() == 119 + 80


# ---------------------------------------------------------------- the real envs
def test_real_env_spaces_fit_the_extractor():
    import poser_env  # noqa: F401

    env = gym.make("poser_env/ImagePoser-v0", text_encoder="hashing", thumbnail=True, thumbnail_size=32)
    ext = PoserExtractor(env.observation_space)
    assert ext.kinds == {"prompt": "embedding", "command": "embedding", "feedback": "numeric",
                         "progress": "numeric", "history": "numeric", "thumbnail": "image"}
    assert ext.features_dim == 4 * 64
    obs, _ = env.reset(seed=0)
    out = ext({k: th.as_tensor(v)[None] for k, v in obs.items()})  # raw obs: uint8 thumbnail scaled inside
    assert out.shape == (1, 256)
    paper = gym.make("poser_env/ImagePoserPaper-v0", text_encoder="hashing")
    assert PoserExtractor(paper.observation_space).kinds == {"obs": "numeric"}


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_real_env_learn_and_round_trip(algo, tmp_path):
    venv = make_vec_env("poser_env/ImagePoser-v0", n_envs=2, seed=0, env_kwargs={"text_encoder": "hashing"})
    model = make_model(algo, venv, seed=0, **SMALL_PPO)
    cb = PoserMetricsCallback()
    model.learn(256, callback=cb)
    assert model.num_timesteps == 256 and cb.n_episodes > 0
    assert set(cb.means()) >= {"success", "alignment", "cost", "calls", "invalid_rate"}
    if algo == "maskable_ppo":
        assert cb.means()["invalid_rate"] == 0.0
    model.save(tmp_path / "m.zip")
    loaded = load_model(tmp_path / "m.zip", algo, trust_pickle=True)
    obs, masks = obs_batch(venv, n=8)
    extra = {"action_masks": masks} if algo == "maskable_ppo" else {}
    np.testing.assert_array_equal(model.predict(obs, deterministic=True, **extra)[0],
                                  loaded.predict(obs, deterministic=True, **extra)[0])


def test_real_paper_env_dqn():
    venv = make_vec_env("poser_env/ImagePoserPaper-v0", seed=0, env_kwargs={"text_encoder": "hashing"})
    model = make_dqn(venv, seed=0, **SMALL_DQN)
    assert model.q_net.q_net[0].in_features == venv.observation_space.shape[0]
    model.learn(200)
    assert model.num_timesteps == 200


def test_real_env_thumbnail_with_ppo():
    venv = make_vec_env("poser_env/ImagePoser-v0", seed=0,
                        env_kwargs={"text_encoder": "hashing", "thumbnail": True, "thumbnail_size": 32})
    model = make_maskable_ppo(venv, seed=0, **SMALL_PPO)
    assert isinstance(model.get_env(), VecTransposeImage)
    model.learn(64)


@pytest.mark.slow  # two worker processes import torch and build the env (~10 s on 2 shared cores)
def test_subproc_vec_env_on_real_env():
    venv = make_vec_env("poser_env/ImagePoser-v0", n_envs=2, seed=0, env_kwargs={"text_encoder": "hashing"},
                        vec_cls="subproc")
    try:
        obs = venv.reset()
        assert obs["prompt"].shape == (2, venv.observation_space["prompt"].shape[0])
        assert np.stack(venv.env_method("action_masks")).shape == (2, venv.action_space.n)
    finally:
        venv.close()


def test_vec_env_seeding_is_deterministic():
    a = fake_venv(n_envs=2, seed=5).reset()
    b = fake_venv(n_envs=2, seed=5).reset()
    c = fake_venv(n_envs=2, seed=6).reset()
    np.testing.assert_array_equal(a["prompt"], b["prompt"])
    assert not np.array_equal(a["prompt"][0], a["prompt"][1])  # env i gets seed + i
    assert not np.array_equal(a["prompt"], c["prompt"])
    assert isinstance(fake_venv(), DummyVecEnv)
