"""The safe policy format (agents.policy_io): no unpickling, identical actions after a round trip, env checks."""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pytest
import torch

from agents.algos import load_model, make_model, make_vec_env
from agents.policy_io import (
    PolicyFileError,
    PolicyMismatchError,
    UnsafePolicyError,
    load_policy,
    newest_checkpoint,
    read_config,
    restore_checkpoint,
    save_checkpoint,
    save_policy,
)
from agents.testing import malicious_sb3_zip

KW = {"text_encoder": "hashing"}
ENV = "poser_env/ImagePoser-v0"
PAPER = "poser_env/ImagePoserPaper-v0"


def test_malicious_zip_is_refused_by_default_and_nothing_is_written(tmp_path):
    from agents.pipeline import check_model_file, generate_one

    venv = make_vec_env(ENV, n_envs=1, env_kwargs=KW)
    make_model("maskable_ppo", venv, seed=0).save(tmp_path / "legit.zip")
    marker = tmp_path / "PWNED"
    evil = malicious_sb3_zip(tmp_path / "legit.zip", tmp_path / "evil.zip", marker)
    with pytest.raises(UnsafePolicyError, match=r"trust_pickle=True \(CLI: --trust-pickle\)"):
        load_model(evil, "maskable_ppo")
    with pytest.raises(UnsafePolicyError, match=r"--trust-pickle"):
        load_policy(evil)
    with pytest.raises(UnsafePolicyError, match=r"cloudpickle"):
        check_model_file(evil, venv.envs[0], env_id=ENV)
    with pytest.raises(UnsafePolicyError, match=r"--trust-pickle"):
        generate_one("a red cup", policy=str(evil), out=tmp_path / "gen", env_kwargs=KW)
    assert not marker.exists()
    assert not (tmp_path / "gen").exists()
    # the payload is real: loading the zip as trusted runs it
    load_model(evil, "maskable_ppo", trust_pickle=True)
    assert marker.read_text() == "pwned"


def _observations(venv: Any, n: int, masked: bool) -> tuple[Any, Any]:
    """``n`` observations (and masks) met by random valid play, stacked like a VecEnv batch."""
    rng = np.random.default_rng(0)
    obs_list, masks = [], []
    obs = venv.reset()
    for _ in range(n):
        mask = np.stack(venv.env_method("action_masks"))
        obs_list.append(obs)
        masks.append(mask)
        a = rng.choice(np.flatnonzero(mask[0])) if masked else rng.integers(venv.action_space.n)
        obs, _, _, _ = venv.step(np.array([a]))
    if isinstance(obs_list[0], dict):
        batch = {k: np.concatenate([o[k] for o in obs_list]) for k in obs_list[0]}
    else:
        batch = np.concatenate(obs_list)
    return batch, np.concatenate(masks)


@pytest.mark.parametrize(("algo", "env_id"), [("maskable_ppo", ENV), ("ppo", ENV), ("dqn", PAPER)])
def test_safe_format_round_trips_with_identical_actions(algo, env_id, tmp_path, monkeypatch):
    venv = make_vec_env(env_id, n_envs=1, seed=3, env_kwargs=KW)
    small = {"n_steps": 64, "batch_size": 32} if algo != "dqn" else {"learning_starts": 16, "buffer_size": 500}
    model = make_model(algo, venv, seed=0, **small)
    model.learn(128)
    path = save_policy(model, tmp_path / "policy", env_id=env_id, env_kwargs=KW)
    config = json.loads(path.read_text())
    assert path.name == "policy.json" and (tmp_path / "policy.safetensors").is_file()
    assert config["algo"] == algo and config["env_id"] == env_id and config["text_encoder"] == "hashing"
    assert config["env_version"] and config["observation_layout"] and config["expert_names"][0] == "sim/sketch"
    assert config["action_space"] == {"type": "Discrete", "n": int(venv.action_space.n), "start": 0}

    def no_unpickling(*a: Any, **k: Any) -> Any:
        raise AssertionError("load_policy must not unpickle anything")

    import cloudpickle

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(cloudpickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    policy = load_policy(path, env=venv, env_id=env_id)
    monkeypatch.undo()

    obs, masks = _observations(venv, 48, masked=algo == "maskable_ppo")
    extra = {"action_masks": masks} if algo == "maskable_ppo" else {}
    a1, _ = model.predict(obs, deterministic=True, **extra)
    a2, _ = policy.predict(obs, deterministic=True, **extra)
    assert a1.shape == (48,)
    np.testing.assert_array_equal(a1, a2)
    for (k1, v1), (k2, v2) in zip(model.policy.state_dict().items(), policy.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_load_checks_env_id_encoder_experts_and_spaces(tmp_path):
    import gymnasium as gym

    venv = make_vec_env(ENV, n_envs=1, env_kwargs=KW)
    path = save_policy(make_model("ppo", venv, seed=0), tmp_path, env_id=ENV, env_kwargs=KW)
    with pytest.raises(PolicyMismatchError, match=r"trained on env 'poser_env/ImagePoser-v0', not .*--env"):
        load_policy(path, env_id=PAPER)
    with pytest.raises(PolicyMismatchError, match=r"text_encoder='hashing' but this env .* 'minilm'.*"
                                                  r"--env-arg text_encoder=hashing"):
        load_policy(path, env=gym.make(ENV, text_encoder="minilm"))
    with pytest.raises(PolicyMismatchError, match=r"experts .* action i would run another expert"):
        load_policy(path, env=gym.make(ENV, text_encoder="hashing", experts=["sim/sketch", "sim/add"]))
    with pytest.raises(PolicyMismatchError, match=r"observation space of .* differs.*'thumbnail'"):
        load_policy(path, env=gym.make(ENV, text_encoder="hashing", thumbnail=True, thumbnail_size=32))
    with pytest.raises(PolicyMismatchError, match=r"observation space of .* differs.*'feedback'"):
        load_policy(path, env=gym.make(ENV, text_encoder="hashing", feedback_in_obs=False))
    assert load_policy(tmp_path, env=gym.make(ENV, text_encoder="hashing")) is not None  # the folder works too


def test_damaged_files_are_named(tmp_path):
    venv = make_vec_env(ENV, n_envs=1, env_kwargs=KW)
    path = save_policy(make_model("ppo", venv, seed=0), tmp_path / "p.json", env_id=ENV, env_kwargs=KW)
    w = tmp_path / "p.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[:-8] + b"\x00" * 8)
    with pytest.raises(PolicyFileError, match=r"p.safetensors.* sha256"):
        load_policy(path)
    w.write_bytes(good)
    config = json.loads(path.read_text())
    config["policy_params"]["features_extractor_class"] = {"class": "os.system"}
    path.write_text(json.dumps(config))
    with pytest.raises(PolicyFileError, match=r"features_extractor_class=.*os.system"):
        load_policy(path)
    with pytest.raises(PolicyFileError, match=r"no config"):
        read_config(tmp_path / "nothing.json")


def test_checkpoint_restores_weights_optimizer_and_count(tmp_path):
    venv = make_vec_env(ENV, n_envs=1, env_kwargs=KW)
    model = make_model("maskable_ppo", venv, seed=0, n_steps=32, batch_size=32)
    model.learn(64)
    save_checkpoint(model, tmp_path, env_id=ENV, env_kwargs=KW, run={"seed": 0})
    (tmp_path / "model_999_steps.json").write_text("{ half")  # an interrupted newer one is skipped
    newest = newest_checkpoint(tmp_path)
    assert newest is not None and newest.name == "model_64_steps.json"
    other = make_model("maskable_ppo", make_vec_env(ENV, n_envs=1, env_kwargs=KW), seed=1, n_steps=32, batch_size=32)
    restore_checkpoint(other, newest)
    assert other.num_timesteps == 64
    for a, b in zip(model.policy.parameters(), other.policy.parameters()):
        assert torch.equal(a, b)
    s1, s2 = model.policy.optimizer.state_dict(), other.policy.optimizer.state_dict()
    for i in s1["state"]:
        assert torch.equal(s1["state"][i]["exp_avg"], s2["state"][i]["exp_avg"])
    with pytest.raises(PolicyFileError, match=r"algo 'maskable_ppo', not 'ppo'; pass --algo maskable-ppo"):
        restore_checkpoint(make_model("ppo", make_vec_env(ENV, n_envs=1, env_kwargs=KW)), newest)
