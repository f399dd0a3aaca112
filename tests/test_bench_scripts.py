"""Smoke tests of the long-prompt benchmark scripts in examples/benchmarks (tiny budgets)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import pytest

from agents.pipeline import MAIN_ENV_KWARGS, load_prompts
from agents.policies import FixedPipelinePolicy

MAIN_ENV_ID = "poser_env/ImagePoserMain-v0"  # the scripts analyse the v0 world

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def specs():
    return load_prompts(MAIN_ENV_ID, split="test", n=3, family="long")


def test_long_ceiling_run_and_reasons(specs):
    mod = _load("long_ceiling")
    r = mod.run(FixedPipelinePolicy("sim/layout"), specs, max_steps=8)
    assert 0 <= r["pass"] <= 1 and 0 <= r["align"] <= 1 and r["calls"] <= 8
    lo, hi = r["ci"]
    assert 0 <= lo <= r["pass"] <= hi <= 1
    # 8 steps cannot finish a long prompt, so there are failing assertions to explain
    assert sum(r["why"].values()) >= 1
    assert mod.wilson(0, 0) == (0.0, 0.0) and mod.wilson(5, 10)[0] < 0.5 < mod.wilson(5, 10)[1]


def test_restart_policy_regenerates_once_a_command_is_dropped(specs):
    mod = _load("long_ceiling")
    pol = mod.FixedWithRestart("sim/layout", margin=1)
    env = gym.make(MAIN_ENV_ID, **{**MAIN_ENV_KWARGS, "max_steps": 30})
    u = env.unwrapped
    restarted = False
    for i, spec in enumerate(specs):
        obs, _ = env.reset(seed=i, options={"prompt": spec})
        pol.reset(env)
        done = False
        while not done:
            dropped = bool(u.state.plan.dropped) and u.canvas is not None
            a = pol.act(env, obs)
            if dropped:
                assert a == u.expert_names.index("sim/layout")
                restarted = True
            obs, _, te, tr, _ = env.step(a)
            done = te or tr
    assert restarted  # long prompts drop commands often; 3 prompts x 30 steps see at least one


def test_reward_returns_parts_add_up(specs):
    mod = _load("reward_returns")
    env = gym.make(MAIN_ENV_ID, **MAIN_ENV_KWARGS)
    r = mod.mean_return(FixedPipelinePolicy("sim/dense"), env, specs)
    assert r["return"] == pytest.approx(r["potential_delta"] + r["cost"])  # no masked actions: no penalty
    assert r["cost"] < 0 and 0 <= r["pass"] <= 1


def test_gpu_check_dry_run_on_cpu(tmp_path, capsys):
    """The GPU check's fast parts on the CPU: the LLM decomposer and every critic, float32 only."""
    mod = _load("gpu_check")
    out = tmp_path / "gpu_check.json"
    rc = mod.main(mod.Args(device="cpu", out=str(out), checks="llm,critics", dtypes="float32"))
    assert rc == 0, capsys.readouterr().out[-2000:]
    import json

    data = json.loads(out.read_text())
    assert set(data["checks"]) == {"llm", "critics"} and all(c["ok"] for c in data["checks"].values())
    assert mod.main(mod.Args(device="cpu", out=str(out), checks="llm,warp")) != 0  # an unknown check is refused
    assert "unknown checks ['warp']" in capsys.readouterr().err
