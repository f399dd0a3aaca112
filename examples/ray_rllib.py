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

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import tyro
from gymnasium import spaces

from poser_env.env import unwrap
from poser_env.remote import RayBackend, start_local_ray


class MaskedFlatObs(gym.ObservationWrapper):  # type: ignore[type-arg]
    """``{"action_mask": Box(0, 1, (n_actions,)), "observations": flat Box}`` for RLlib's action-masking module."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self._inner_space = env.observation_space
        flat = spaces.flatten_space(env.observation_space)
        assert isinstance(env.action_space, spaces.Discrete), "image-poser envs have a Discrete action space"
        n = int(env.action_space.n)
        self.observation_space = spaces.Dict({
            "action_mask": spaces.Box(0.0, 1.0, (n,), np.float32),
            "observations": spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32),
        })

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mask = np.asarray(unwrap(self.env).action_masks(), dtype=np.float32)
        flat = spaces.flatten(self._inner_space, observation).astype(np.float32)
        return {"action_mask": mask, "observations": flat}


def make_env(config: dict[str, Any]) -> gym.Env[Any, Any]:
    """The env creator RLlib calls in every env runner (``config`` = ``env_config``)."""
    import poser_env  # noqa: F401  (registers the ids in the runner process)

    cfg = dict(config)
    env_id = cfg.pop("env_id", "poser_env/ImagePoser-v0")
    return MaskedFlatObs(gym.make(env_id, **cfg))



@dataclass(frozen=True)
class Args:
    env_id: str = "poser_env/ImagePoser-v0"
    env_runners: int = 2
    iterations: int = 3
    batch: int = 256  # train_batch_size_per_learner
    address: str | None = None  # Ray cluster address; default: a local Ray on 127.0.0.1
    num_gpus: float = 0.0  # GPUs per expert host replica


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train ``--iterations`` PPO iterations; returns a summary (hosts used, env steps sampled)."""
    args = tyro.cli(Args, args=argv, description=__doc__)


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
