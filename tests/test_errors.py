"""Every error message the env helpers, encoders, rendering, conformance, policies and pipeline promise."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import poser_env  # noqa: F401
from agents.evaluate import evaluate
from agents.policies import OraclePolicy, SingleExpertPolicy, make_baseline
from poser_env.conformance import check_conformance
from poser_env.encoders import HashingTextEncoder, MiniLMTextEncoder, make_text_encoder
from poser_env.env import EnvConfigError, ImagePoserEnv, RewardWeights
from poser_env.rendering import save_gif


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: HashingTextEncoder(dim=4), "dim=4"),
        (lambda: HashingTextEncoder(cache_size=-1), "cache_size=-1"),
        (lambda: MiniLMTextEncoder(num_threads=0), "num_threads=0"),
        (lambda: make_text_encoder("bert"), "text_encoder='bert'"),
        (lambda: make_text_encoder(3), "text_encoder=3"),  # type: ignore[arg-type]
        (lambda: HashingTextEncoder()("a cup"), "sequence of strings"),
    ],
)
def test_encoder_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_hashing_encoder_is_deterministic_unit_norm_and_cached():
    enc = HashingTextEncoder()
    a = enc(["two red clocks", "two red clocks", ""])
    assert np.allclose(np.linalg.norm(a[0]), 1.0) and np.array_equal(a[0], a[1]) and not a[2].any()
    assert enc.hits == 1 and enc.misses == 2
    assert np.array_equal(HashingTextEncoder()(["two red clocks"])[0], a[0])


def test_reward_weights_errors_and_potential():
    with pytest.raises(EnvConfigError, match=r"success=-0\.5"):
        RewardWeights(success=-0.5)
    with pytest.raises(EnvConfigError, match="must not all be 0"):
        RewardWeights(alignment=0, fidelity=0, aesthetics=0, success=0)
    assert RewardWeights().potential(None) == 0.0
    with pytest.raises(EnvConfigError, match="reward_weights="):
        ImagePoserEnv(text_encoder="hashing", reward_weights=3)  # type: ignore[arg-type]


def test_judge_and_decomposer_arguments():
    with pytest.raises(EnvConfigError, match="judge=42"):
        ImagePoserEnv(text_encoder="hashing", judge=42).reset(seed=0)  # type: ignore[arg-type]
    with pytest.raises(EnvConfigError, match="has no parse"):
        ImagePoserEnv(text_encoder="hashing", decomposer=object()).reset(seed=0)


def test_save_gif_errors(tmp_path):
    with pytest.raises(ValueError, match="frames is empty"):
        save_gif([], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="fps=0"):
        save_gif([np.zeros((4, 4, 3), np.uint8)], tmp_path / "x.gif", fps=0)


def test_record_episode_every_error(tmp_path):
    from poser_env.wrappers import RecordEpisode

    with pytest.raises(ValueError, match="every=0"):
        RecordEpisode(gym.make("poser_env/ImagePoser-v0", text_encoder="hashing", render_mode="rgb_array"),
                      tmp_path, every=0)


def test_conformance_argument_errors():
    with pytest.raises(ValueError, match="n_steps=0"):
        check_conformance("poser_env/ImagePoser-v0", n_steps=0)
    with pytest.raises(ValueError, match="unknown"):
        check_conformance("poser_env/ImagePoser-v0", checks=("speed",))
    with pytest.raises(ValueError, match="env_id=3"):
        check_conformance(3)  # type: ignore[arg-type]


def test_policy_errors():
    with pytest.raises(ValueError, match="did you mean"):
        make_baseline("oracel")
    with pytest.raises(ValueError, match="best_t2i"):
        make_baseline("fixed")
    with pytest.raises(ValueError, match="depth=9"):
        OraclePolicy(depth=9)
    with pytest.raises(ValueError, match="beam=0"):
        OraclePolicy(beam=0)
    env = gym.make("poser_env/ImagePoser-v0", text_encoder="hashing")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expert='sim/skech'.*did you mean"):
        SingleExpertPolicy("sim/skech").reset(env)
    with pytest.raises(ValueError, match="judge=None"):
        OraclePolicy().reset(gym.make("poser_env/ImagePoser-v0", text_encoder="hashing", judge=None))


def test_evaluation_and_training_argument_errors(tmp_path):
    from agents.pipeline import evaluate_methods
    from agents.train import train_runs

    with pytest.raises(ValueError, match="images_per_prompt=0"):
        evaluate(lambda run: make_baseline("random"), ["a cup"], images_per_prompt=0)
    with pytest.raises(ValueError, match="runs is empty"):
        evaluate(lambda run: make_baseline("random"), ["a cup"], runs=())
    with pytest.raises(ValueError, match="workers=0"):
        evaluate_methods(["random"], ["a cup"], workers=0, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_methods([str(tmp_path / "missing.zip")], ["a cup"], progress=False)
    with pytest.raises(ValueError, match="seeds is empty"):
        train_runs(env_id="poser_env/ImagePoser-v0", algo="ppo", steps=10, seeds=[], out=tmp_path)
    with pytest.raises(ValueError, match="exactly one seed"):
        train_runs(env_id="poser_env/ImagePoser-v0", algo="ppo", steps=10, seeds=[0, 1], out=tmp_path,
                   resume=tmp_path / "c.zip")
    with pytest.raises(ValueError, match="workers=0"):
        train_runs(env_id="poser_env/ImagePoser-v0", algo="ppo", steps=10, seeds=[0], out=tmp_path, workers=0)


def test_bench_prompt_loading_errors(tmp_path):
    from agents.bench import load_bench_prompts

    with pytest.raises(ValueError, match="kind='dpg'"):
        load_bench_prompts(None, "dpg")
    with pytest.raises(ValueError, match="needs a file"):
        load_bench_prompts(None, "geneval")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_bench_prompts(tmp_path / "nope.txt", "compbench")
    f = tmp_path / "color_val.txt"
    f.write_text("a red cup and a blue dog\n\n   \na green kite\n")
    specs = load_bench_prompts(f, "compbench")
    assert [s.tag for s in specs] == ["color", "color"]


def test_report_from_dir_error(tmp_path):
    from agents.pipeline import report_from_dir

    with pytest.raises(FileNotFoundError, match="poser main"):
        report_from_dir(tmp_path)
