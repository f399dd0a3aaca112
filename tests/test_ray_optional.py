"""Ray is optional: nothing imports it unless an env asks for the shared service; bad backends are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import poser_env  # noqa: F401
from poser_env.env import EnvConfigError
from poser_env.remote import RayBackend

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_project_does_not_import_ray():
    code = (
        "import sys, gymnasium as gym\n"
        "import poser_env, poser_env.env, poser_env.remote, poser_env.conformance, experts, experts.registry, "
        "experts.diffusers, critic, critic.factory, agents, agents.cli\n"
        "env = gym.make('poser_env/ImagePoser-v0', text_encoder='hashing')\n"
        "env.reset(seed=0); env.step(0)\n"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("remote", "expert_backend='remote'"),
        (3, "expert_backend=3"),
        ({"replicas": 0}, "replicas=0"),
        ({"timeout_s": -1.0}, "timeout_s=-1.0"),
        ({"num_gpus": -0.5}, "num_gpus=-0.5"),
        ({"max_batch": True}, "max_batch=True"),
        ({"max_wait_s": float("nan")}, "max_wait_s=nan"),
        ({"replica": 2}, "['replica']"),
        ({"namespace": " "}, "namespace=' '"),
        ({"host_decomposer": "yes"}, "host_decomposer='yes'"),
    ],
)
def test_bad_backend_is_refused_naming_the_value(value, named):
    with pytest.raises(EnvConfigError, match=r"RayBackend|expert_backend") as err:
        gym.make("poser_env/ImagePoser-v0", expert_backend=value, text_encoder="hashing")
    assert named in str(err.value)


def test_backend_forms():
    assert RayBackend.of("ray") == RayBackend()
    assert RayBackend.of({"replicas": 2, "num_gpus": 0.5}) == RayBackend(replicas=2, num_gpus=0.5)
    b = RayBackend(timeout_s=None)
    assert RayBackend.of(b) is b
    env = gym.make("poser_env/ImagePoser-v0", expert_backend="local", text_encoder="hashing")
    assert env.unwrapped.expert_backend == "local"
