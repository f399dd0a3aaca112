"""Kill-during-save (issue 19): a training process SIGKILLed at random points, several times, while it writes a
checkpoint every 32 steps (a forked process, so no interpreter start-up per try). Afterwards the newest intact checkpoint always loads, train.json and curve.json are
valid JSON, and resuming continues with the right step count and the whole history."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np

from agents.policy_io import list_checkpoints, load_policy, newest_checkpoint, read_config
from agents.train import train_one

KW = {"text_encoder": "hashing"}
MODEL_KW = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}
EVERY = 32  # one checkpoint per rollout (n_steps * n_envs = 32)


def _train_forever(out: str) -> None:
    train_one(env_id="poser_env/ImagePoser-v0", algo="maskable-ppo", steps=10**7, seed=0, out=out, n_envs=1,
              env_kwargs=KW, checkpoint_every=EVERY, model_kwargs=MODEL_KW, curve_interval=32)


def _kill_run(out: Path, rng: np.random.Generator, *, during_save: bool) -> None:
    """Train into ``out`` in a forked process (no import time); SIGKILL it after its first checkpoint, either at a
    random moment or as soon as a checkpoint file is being written (a temporary file exists)."""
    proc = mp.get_context("fork").Process(target=_train_forever, args=(str(out),))
    proc.start()
    ckpts = out / "checkpoints"
    deadline = time.monotonic() + 90
    try:
        while not list_checkpoints(ckpts):
            assert proc.is_alive(), f"training exited with {proc.exitcode}"
            assert time.monotonic() < deadline, "no checkpoint within 90 s"
            time.sleep(0.01)
        if during_save:
            while not any(p.name.endswith(".tmp") for p in ckpts.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.0005)
        else:
            time.sleep(float(rng.uniform(0.0, 0.8)))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    assert proc.exitcode == -signal.SIGKILL


def _check_after_kill(out: Path) -> int:
    newest = newest_checkpoint(out / "checkpoints")
    assert newest is not None
    load_policy(newest)  # loads (weights intact, sha256 matches)
    steps = int(read_config(newest)[0]["num_timesteps"])
    assert steps % EVERY == 0 and newest.name == f"model_{steps}_steps.json"
    history = json.loads((out / "train.json").read_text())  # never half-written
    assert history["runs"][-1]["status"] == "running"
    if (out / "curve.json").exists():
        assert isinstance(json.loads((out / "curve.json").read_text()), list)
    return steps


def test_killed_training_leaves_a_loadable_checkpoint_and_resumes_with_full_history(tmp_path):
    rng = np.random.default_rng(19)
    outs = []
    for trial in range(3):
        out = tmp_path / f"run{trial}"
        _kill_run(out, rng, during_save=trial == 0)
        outs.append((out, _check_after_kill(out)))
    # resume the last one twice: killed again in between, then to the end
    out, killed_at = outs[-1]
    curve_before = json.loads((out / "curve.json").read_text()) if (out / "curve.json").exists() else []
    path = train_one(env_id="poser_env/ImagePoser-v0", algo="maskable-ppo", steps=64, seed=0, out=out, n_envs=1,
                     resume=out, checkpoint_every=EVERY, curve_interval=32)
    resumed_from = newest_checkpoint(out / "checkpoints")
    assert resumed_from is not None
    history = json.loads((out / "train.json").read_text())
    first, second = history["runs"]
    assert first["status"] == "interrupted" and first["last_checkpoint_timesteps"] == killed_at
    assert second["status"] == "finished" and second["start_timesteps"] == killed_at
    assert second["num_timesteps"] == killed_at + 64 == history["num_timesteps"]
    assert second["model_kwargs"] == MODEL_KW and second["env_kwargs"] == KW  # taken from the checkpoint
    assert read_config(path)[0]["num_timesteps"] == killed_at + 64
    curve = json.loads((out / "curve.json").read_text())
    assert curve[: len(curve_before)] == curve_before  # the killed segment's points are kept
    assert [p["segment"] for p in curve[len(curve_before):]] and all(p["segment"] == 1 for p in curve[len(curve_before):])
    assert curve[-1]["timesteps"] == killed_at + 64
