"""RLlib PPO with several env runners on the same env id, all calling one shared expert service, with action masks.

    pip install "ray[rllib]"        # not an extra of image-poser: see the README ("Shared expert service on Ray")
    python examples/ray_rllib.py --env-runners 2 --iterations 3

Every env runner (a Ray actor) builds ``poser_env/ImagePoser-v0`` with ``expert_backend`` set, so all of them
find the same named host and share its experts and critic.

Action masks: RLlib's new API stack masks actions with
``ray.rllib.examples.rl_modules.classes.action_masking_rlm.ActionMaskingTorchRLModule``, which needs a
``Dict`` observation of exactly two keys, ``"action_mask"`` and ``"observations"`` (a flat ``Box``: the default
PPO encoders take no nested ``Dict``). :class:`MaskedFlatObs` below turns the env's ``Dict`` observation into
that form: the env's observation flattened with ``gymnasium.spaces.flatten`` and the env's
``action_masks()`` as a float 0/1 vector. Without the wrapper RLlib samples masked actions too; the env then
answers them as no-ops with ``-invalid_action_penalty`` (documented in the env), which still trains.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from poser_env.remote import RayBackend, start_local_ray


class MaskedFlatObs(gym.ObservationWrapper):  # type: ignore[type-arg]
    """``{"action_mask": Box(0, 1, (n_actions,)), "observations": flat Box}`` for RLlib's action-masking module."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self._inner_space = env.observation_space
        flat = spaces.flatten_space(env.observation_space)
        n = int(env.action_space.n)  # type: ignore[attr-defined]
        self.observation_space = spaces.Dict({
            "action_mask": spaces.Box(0.0, 1.0, (n,), np.float32),
            "observations": spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32),
        })

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mask = np.asarray(self.env.unwrapped.action_masks(), dtype=np.float32)  # type: ignore[attr-defined]
        flat = spaces.flatten(self._inner_space, observation).astype(np.float32)
        return {"action_mask": mask, "observations": flat}


def make_env(config: dict[str, Any]) -> gym.Env[Any, Any]:
    """The env creator RLlib calls in every env runner (``config`` = ``env_config``)."""
    import poser_env  # noqa: F401  (registers the ids in the runner process)

    cfg = dict(config)
    env_id = cfg.pop("env_id", "poser_env/ImagePoser-v0")
    return MaskedFlatObs(gym.make(env_id, **cfg))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train ``--iterations`` PPO iterations; returns a summary (hosts used, env steps sampled)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="poser_env/ImagePoser-v0")
    p.add_argument("--env-runners", type=int, default=2)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--batch", type=int, default=256, help="train_batch_size_per_learner")
    p.add_argument("--address", default=None, help="Ray cluster address; default: a local Ray on 127.0.0.1")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per expert host replica")
    args = p.parse_args(argv)

    if not args.address:
        start_local_ray()  # before anything imports ray: that keeps every Ray server on 127.0.0.1
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule
    from ray.tune.registry import register_env

    if args.address:
        ray.init(address=args.address, namespace="image-poser")
    register_env("image-poser", make_env)
    backend = RayBackend(num_gpus=args.num_gpus, num_cpus=0.5)
    config = (
        PPOConfig()
        .environment("image-poser", env_config={"env_id": args.env_id, "text_encoder": "hashing",
                                                "expert_backend": backend})
        .env_runners(num_env_runners=args.env_runners, num_envs_per_env_runner=1, num_cpus_per_env_runner=0.5)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=ActionMaskingTorchRLModule,
                                               model_config={"fcnet_hiddens": [64, 64]}))
        .training(train_batch_size_per_learner=args.batch, minibatch_size=64, num_epochs=2, lr=3e-4)
    )
    algo = config.build_algo()
    result: dict[str, Any] = {}
    try:
        for _ in range(args.iterations):
            result = algo.train()
    finally:
        algo.stop()
    hosts = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if str(a.get("name", "")).startswith("poser-host-"))
    summary = {
        "hosts": len(hosts),
        "env_runners": args.env_runners,
        "env_steps": int(result.get("num_env_steps_sampled_lifetime", 0)
                         or result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0)),
        "episode_return_mean": result.get("env_runners", {}).get("episode_return_mean"),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
