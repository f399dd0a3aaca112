"""image-poser: a Gymnasium environment for learning to orchestrate image-generation experts.

Importing this package registers the environment ids (nothing heavy is imported)::

    import gymnasium as gym
    import poser_env
    env = gym.make("poser_env/ImagePoser-v0")
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

__all__ = ["ENV_IDS", "__version__", "register_envs"]

#: Every environment id this package registers.
ENV_IDS: tuple[str, ...] = (
    "poser_env/ImagePoser-v0",
    "poser_env/ImagePoserLong-v0",
    "poser_env/ImagePoserPaper-v0",
    "poser_env/ImagePoserDiffusers-v0",
)


def register_envs() -> None:
    """Register the ids of :data:`ENV_IDS` with Gymnasium (idempotent)."""
    specs: dict[str, tuple[str, dict[str, Any], bool]] = {
        "poser_env/ImagePoser-v0": ("poser_env.env:ImagePoserEnv", {"prompt_source": "geneval"}, False),
        "poser_env/ImagePoserLong-v0": ("poser_env.env:ImagePoserEnv",
                                        {"prompt_source": "long", "max_steps": 24}, False),
        "poser_env/ImagePoserPaper-v0": ("poser_env.paper:ImagePoserPaperEnv", {}, False),
        "poser_env/ImagePoserDiffusers-v0": ("poser_env.env:ImagePoserDiffusersEnv", {}, True),
    }
    for env_id, (entry_point, kwargs, nondet) in specs.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point=entry_point,
            kwargs=kwargs,
            max_episode_steps=None,  # the env owns its step budget (max_steps), see its docstring
            nondeterministic=nondet,
            disable_env_checker=False,
        )


register_envs()
