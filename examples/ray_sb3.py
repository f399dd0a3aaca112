"""SB3 MaskablePPO with SubprocVecEnv workers that all call one shared expert service on Ray.

    python examples/ray_sb3.py --n-envs 4 --steps 4096                       # local Ray on 127.0.0.1
    python examples/ray_sb3.py --address 10.0.0.5:6379 --replicas 2 --num-gpus 1 \
        --env-id poser_env/ImagePoserDiffusers-v0 --env-arg device=cuda ...   # an existing cluster

The main process starts (or joins) Ray; each worker process joins the same Ray (its address is in the
``RayBackend`` passed to the envs) and its env finds the hosts by name, so the experts and the critic exist once (per replica), not once per
worker. Needs ``pip install "image-poser[ray,rl]"``. In SceneSim (simulated experts, about 1 ms a call)
a remote call costs more than the expert itself: the service pays off with real models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tyro

from agents.algos import make_model, make_vec_env
from poser_env.remote import RayBackend, start_local_ray


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text



@dataclass(frozen=True)
class Args:
    env_id: str = "poser_env/ImagePoser-v0"
    n_envs: int = 4
    steps: int = 4096
    seed: int = 0
    address: str | None = None  # Ray cluster address; default: a local Ray on 127.0.0.1
    replicas: int = 1
    num_gpus: float = 0.0  # GPUs per replica (fractions allowed)
    max_wait_s: float = 0.005
    timeout_s: float = 300.0
    env_arg: tuple[str, ...] = ()  # extra env arguments KEY=VALUE (JSON values)
    out: str = "runs/ray_sb3"  # where the model is saved
    save: bool = True  # save the trained model under `out`


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train for ``--steps`` timesteps; returns a summary (hosts used, timesteps, host calls, batch sizes)."""
    args = tyro.cli(Args, args=argv, description=__doc__)
    for kv in args.env_arg:
        if "=" not in kv:
            raise SystemExit(f"error: --env-arg {kv!r} must be KEY=VALUE, e.g. device=cuda")

    # before anything imports ray: that keeps every Ray server on 127.0.0.1 (returns the address if Ray is up)
    address = args.address or start_local_ray()
    import ray

    if args.address:
        ray.init(address=args.address, namespace="image-poser")
    # the address travels with the env arguments: workers forked from a forkserver started before Ray do not
    # see RAY_ADDRESS, and without an address each would start a Ray of its own
    backend = RayBackend(address=address, replicas=args.replicas, num_gpus=args.num_gpus, max_wait_s=args.max_wait_s,
                         timeout_s=args.timeout_s)
    env_kwargs: dict[str, Any] = {"text_encoder": "hashing", "expert_backend": backend}
    env_kwargs.update({k: _value(v) for k, v in (kv.split("=", 1) for kv in args.env_arg)})
    venv = make_vec_env(args.env_id, n_envs=args.n_envs, seed=args.seed, env_kwargs=env_kwargs, vec_cls="subproc")
    try:
        n_steps = max(8, args.steps // args.n_envs)
        model = make_model("maskable_ppo", venv, seed=args.seed, n_steps=n_steps, batch_size=min(64, n_steps * args.n_envs))
        model.learn(total_timesteps=args.steps)
        experts = venv.get_attr("experts")  # RemoteExpert proxies pickled back from every worker
        hosts = sorted({n for ex in experts for n in ex[0].link.names})
        stats = [ray.get(ray.get_actor(n, namespace=backend.namespace).stats.remote()) for n in hosts]
        summary = {
            "hosts": len(hosts),
            "workers": args.n_envs,
            "timesteps": int(model.num_timesteps),
            "host_calls": sum(sum(s["calls"].values()) for s in stats),
            "host_parameter_bytes": [s["parameter_bytes"] for s in stats],
            "max_batch_size": max((max(b) for s in stats for b in s["batch_sizes"].values() if b), default=1),
        }
        if args.save:
            model.save(f"{args.out}/model")
    finally:
        venv.close()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
