"""Benchmark (not a test): N envs sharing one expert service on Ray vs N envs with their own experts.

Tiny random diffusers pipelines built in code (experts/testing.py) and a tiny CLIP critic
(critic/testing.py), on CPU. Both set-ups run N envs in SB3 ``SubprocVecEnv`` workers (one process per
env, as recommended for real models) taking the same masked random actions; measured side by side in one
run, alternating, ``repeats`` times each:

- **own**: every worker builds its own experts and critic (``expert_backend="local"``);
- **shared**: every worker calls one Ray host holding the experts and the critic
  (``expert_backend=RayBackend(...)``); concurrent calls of one expert run as one batch.

Reported: env steps per second (after a warm-up that loads the models), the bytes of model weights held per
process (torch parameters and buffers, :func:`poser_env.remote.held_parameter_bytes`) and the host's batch
sizes. Every process runs torch with one thread (the workers and the host alike). Tiny pipelines have
almost no arithmetic, so this mostly measures per-call overhead; with real models on a GPU the gains come
from one copy of the weights and fuller batches instead.

Run:  PYTHONPATH=. python examples/benchmarks/ray_service.py [--n-envs 4] [--steps 40] [--repeats 2]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


class CountingWrapper(gym.Wrapper):  # type: ignore[type-arg]
    """Exposes the bytes of model weights held by the worker process (``env_method("held_bytes")``)."""

    def held_bytes(self) -> int:
        import gc

        from poser_env.remote import held_parameter_bytes

        gc.collect()
        return held_parameter_bytes()


def make_env(**kwargs: Any) -> gym.Env[Any, Any]:
    """The diffusers env in a worker process, torch on one thread."""
    import torch

    import poser_env  # noqa: F401

    torch.set_num_threads(1)
    return CountingWrapper(gym.make("poser_env/ImagePoserDiffusers-v0", **kwargs))


def run(mode: str, env_kwargs: dict[str, Any], n_envs: int, steps: int, seed: int) -> dict[str, Any]:
    """Step ``n_envs`` SubprocVecEnv workers ``steps`` times (after 2 warm-up steps); returns the figures."""
    import ray

    from agents.algos import make_vec_env
    from poser_env.remote import RayBackend

    kw = dict(env_kwargs)
    if mode == "shared":
        kw["expert_backend"] = RayBackend(address=ray.get_runtime_context().gcs_address, torch_threads=1, max_batch=n_envs, max_wait_s=0.01,
                                          namespace=f"bench-{seed}")
    venv = make_vec_env(make_env, n_envs=n_envs, seed=seed, env_kwargs=kw, vec_cls="subproc")
    rng = np.random.default_rng(seed)
    try:
        venv.reset()

        def step() -> None:
            masks = np.stack(venv.env_method("action_masks"))
            acts = [int(rng.choice(np.flatnonzero(m[:-1]))) for m in masks]  # never STOP: keep the experts busy
            venv.step(np.array(acts))

        for _ in range(2):  # warm-up: pipelines and critic loaded everywhere
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - t0
        held = [int(b) for b in venv.env_method("held_bytes")]
        out: dict[str, Any] = {"steps_per_s": steps * n_envs / elapsed, "worker_bytes": held}
        if mode == "shared":
            experts = venv.get_attr("experts")
            names = sorted({n for ex in experts for n in ex[0].link.names})
            stats = [ray.get(ray.get_actor(n, namespace=f"bench-{seed}").stats.remote()) for n in names]
            out["hosts"] = len(names)
            out["host_bytes"] = [s["parameter_bytes"] for s in stats]
            sizes = [b for s in stats for v in s["batch_sizes"].values() for b in v]
            out["mean_batch"] = float(np.mean(sizes)) if sizes else 1.0
        return out
    finally:
        venv.close()



@dataclass(frozen=True)
class Args:
    n_envs: int = 4
    steps: int = 40  # vector steps timed per set-up and repeat
    repeats: int = 2
    size: int = 32  # image side in pixels
    denoise_steps: int = 2
    unet_channels: str = "8,16"  # the tiny UNet's two widths


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = tyro.cli(Args, args=argv, description=__doc__)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["PYTHONPATH"] = str(ROOT)
    import torch

    from critic.testing import save_tiny_clip
    from experts.testing import save_tiny_pipelines, write_tiny_registry
    from poser_env.remote import start_local_ray

    torch.set_num_threads(1)
    start_local_ray()
    channels = tuple(int(c) for c in args.unet_channels.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = save_tiny_pipelines(root / "pipes", kinds=("text-to-image", "instruct-pix2pix"),
                                      unet_channels=channels)  # type: ignore[arg-type]
        registry = write_tiny_registry(root / "registry.toml", folders, size=args.size, steps=args.denoise_steps)
        clip = save_tiny_clip(root / "clip")
        env_kwargs = {"registry": str(registry), "critic": f"clip:{clip}", "local_files_only": True,
                      "text_encoder": "hashing", "max_steps": 8,
                      "prompt_source": ["two red clocks left of a blue dog", "a green apple and a yellow cup"]}
        results: dict[str, list[dict[str, Any]]] = {"own": [], "shared": []}
        for r in range(args.repeats):
            for mode in (("own", "shared") if r % 2 == 0 else ("shared", "own")):  # alternate: load drifts
                res = run(mode, env_kwargs, args.n_envs, args.steps, seed=r)
                results[mode].append(res)
                print(mode, json.dumps(res), flush=True)
    own = statistics.median(x["steps_per_s"] for x in results["own"])
    shared = statistics.median(x["steps_per_s"] for x in results["shared"])
    last_own, last_shared = results["own"][-1], results["shared"][-1]
    summary = {
        "n_envs": args.n_envs,
        "own_steps_per_s": round(own, 2),
        "shared_steps_per_s": round(shared, 2),
        "speedup": round(shared / own, 3),
        "own_bytes_per_worker": last_own["worker_bytes"],
        "shared_bytes_per_worker": last_shared["worker_bytes"],
        "shared_host_bytes": last_shared["host_bytes"],
        "copies_own": sum(b > 0 for b in last_own["worker_bytes"]),
        "copies_shared": sum(b > 0 for b in last_shared["worker_bytes"]) + sum(b > 0 for b in last_shared["host_bytes"]),
        "mean_batch_shared": round(last_shared["mean_batch"], 2),
    }
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
