"""``poser bench scratch``: MaskablePPO from scratch, its checkpoints evaluated beside the fixed pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.scratch import run_scratch


def test_scratch_bench_writes_a_curve_of_checkpoints(tmp_path: Path) -> None:
    md = run_scratch(tmp_path, env_id="poser_env/ImagePoser-v1", steps=64, eval_every=32, n_prompts=1, n_envs=1,
                     workers=1, per_op_n=1)
    data = json.loads((tmp_path / "scratch.json").read_text())
    assert data["warm_start"] is None and data["steps"] == 64
    steps = [p["timesteps"] for p in data["curve"]]
    assert steps == sorted(steps) and len(steps) >= 2 and steps[-1] >= 64
    assert any(m.startswith("fixed:") for m in data["baselines"]) and "oracle" in data["baselines"]
    assert (tmp_path / "scratch.png").stat().st_size > 1000
    text = md.read_text()
    assert "from scratch (no warm start)" in text and "SceneSim" in text
    again = run_scratch(tmp_path, env_id="poser_env/ImagePoser-v1", steps=64, eval_every=32, n_prompts=1, n_envs=1,
                        workers=1, per_op_n=1, eval_only=True)  # a stopped run: its checkpoints, no training
    assert json.loads((tmp_path / "scratch.json").read_text())["curve"] == data["curve"] and again == md


def test_scratch_bench_names_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="eval_every=0"):
        run_scratch(tmp_path, eval_every=0)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        run_scratch(tmp_path, eval_only=True)
