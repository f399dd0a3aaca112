"""ImagePoserDiffusers-v0 end to end on CPU: tiny diffusers experts and a tiny CLIP or VLM critic, built in code."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import poser_env  # noqa: F401
from critic.testing import save_tiny_clip, save_tiny_llava, save_tiny_owlv2
from experts.testing import save_tiny_pipelines, write_tiny_registry
from poser_env.conformance import check_conformance


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("diffusers_world")
    folders = save_tiny_pipelines(root / "pipes", kinds=("text-to-image", "instruct-pix2pix", "inpaint"))
    registry = write_tiny_registry(root / "registry.toml", folders, size=32, steps=2)
    clip = save_tiny_clip(root / "clip")
    llava = save_tiny_llava(root / "llava")
    owl = save_tiny_owlv2(root / "owlv2")
    return {"registry": str(registry), "clip": str(clip), "llava": str(llava), "owlv2": str(owl)}


def _kwargs(world, critic="clip"):
    kind, folder = ("vlm", world["llava"]) if critic == "llava" else ("clip", world["clip"])
    # no detector beside the critic: region experts may repaint the whole canvas (default_mask="full"); without
    # it they refuse an edit whose target no detection locates (tests/test_diffusers_grounded.py)
    return {"registry": world["registry"], "critic": f"{kind}:{folder}", "local_files_only": True,
            "expert_kwargs": {"default_mask": "full"}, "text_encoder": "hashing", "max_steps": 6, "prompt_source": ["a red cup left of a blue dog",
                                                                          "two green apples"]}


def test_construction_loads_nothing(world):
    env = gym.make("poser_env/ImagePoserDiffusers-v0", **_kwargs(world))
    u = env.unwrapped
    assert not u._components_ready
    assert u.expert_names == ["tiny-t2i", "tiny-img2img", "tiny-ip2p", "tiny-inpaint"]
    assert env.action_space.n == 5
    assert gym.spec("poser_env/ImagePoserDiffusers-v0").nondeterministic


@pytest.mark.parametrize("critic", ["clip", "llava"])
def test_whole_episodes_run(world, critic):
    env = gym.make("poser_env/ImagePoserDiffusers-v0", **_kwargs(world, critic))
    for seed in (0, 1):
        obs, info = env.reset(seed=seed)
        done, steps = False, 0
        while not done:
            mask = env.unwrapped.action_masks()
            a = int(np.flatnonzero(mask[:-1])[steps % int(mask[:-1].sum())])
            obs, r, term, trunc, info = env.step(a)
            assert np.isfinite(r) and "error" not in info, info.get("error")
            assert env.unwrapped.canvas.shape == (32, 32, 3)
            steps += 1
            done = term or trunc
        assert "is_success" in info and info["episode_calls"] == steps


def test_conformance_with_tiny_models(world):
    rep = check_conformance("poser_env/ImagePoserDiffusers-v0", env_kwargs=_kwargs(world), n_steps=20)
    assert rep.ok, str(rep)


def test_unknown_expert_in_registry_suggests(world):
    from poser_env.env import EnvConfigError

    with pytest.raises(EnvConfigError, match="did you mean"):
        gym.make("poser_env/ImagePoserDiffusers-v0", **{**_kwargs(world), "experts": ["tiny-t2"]})


def test_detector_judge_scores_real_images(world):
    env = gym.make("poser_env/ImagePoserDiffusers-v0", **_kwargs(world), judge=f"detector:{world['owlv2']}")
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert set(info["judge"]) >= {"pass", "alignment", "verdicts"}
    assert set(info["judge"]["verdicts"].values()) <= {"yes", "no", "unknown"}
