"""PPO training throughput on SceneSim: env steps per second (wall, and per CPU second of the process) during MaskablePPO's ``learn``, built as the main
job builds it (:data:`agents.pipeline.MAIN_ENV_KWARGS`, ``n_envs`` copies in a DummyVecEnv, one torch thread,
the default PPO hyper-parameters of :mod:`agents.algos`), after an untimed warm-up rollout.

Run::

    PYTHONPATH=. python examples/benchmarks/ppo_throughput.py --steps 4096 --n-envs 4
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import tyro


@dataclass
class Args:
    steps: int = 4096
    n_envs: int = 4
    seed: int = 0
    vec_cls: str = "dummy"


def main(args: Args) -> dict[str, Any]:
    import torch

    from agents.algos import make_maskable_ppo, make_vec_env
    from agents.pipeline import MAIN_ENV_ID, MAIN_ENV_KWARGS

    torch.set_num_threads(1)
    venv = make_vec_env(MAIN_ENV_ID, n_envs=args.n_envs, seed=args.seed, env_kwargs=dict(MAIN_ENV_KWARGS),
                        vec_cls=args.vec_cls)
    model = make_maskable_ppo(venv, seed=args.seed)
    rollout = model.n_steps * args.n_envs
    model.learn(total_timesteps=rollout)  # warm-up: glyph, LUT and encoder caches, torch kernels
    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=args.steps, reset_num_timesteps=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = int(model.num_timesteps) - rollout
    venv.close()
    # steps per CPU second of this process (one torch thread): what a core gives when the machine is shared
    out = {**asdict(args), "timed_steps": steps, "seconds": round(seconds, 2), "steps_per_s": round(steps / seconds, 1),
           "cpu_seconds": round(cpu, 2), "steps_per_cpu_s": round(steps / cpu, 1)}
    print(json.dumps(out))
    return out



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
