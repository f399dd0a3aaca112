"""image-poser: a Gymnasium environment for learning to orchestrate image-generation experts.

Importing this package registers the environment ids (nothing heavy is imported)::

    import gymnasium as gym
    import poser_env
    env = gym.make("poser_env/ImagePoser-v0")
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import WrapperSpec, register, registry

from poser_env.shadowing import check_shadowing

check_shadowing()  # a user's critic.py / experts.py next to their script would break the env: say so now

__version__ = "0.1.0"

__all__ = ["ENV_IDS", "__version__", "register_envs"]

#: Every environment id this package registers.
ENV_IDS: tuple[str, ...] = (
    "poser_env/ImagePoser-v0",
    "poser_env/ImagePoserLong-v0",
    "poser_env/ImagePoserPaper-v0",
    "poser_env/ImagePoserDiffusers-v0",
)

#: Added by gym.make above the TimeLimit of every id: the TimeLimit's max_episode_steps is the env's one step budget
#: (see poser_env.wrappers.StepBudget; max_steps passed to gym.make is an alias that sets it).
_STEP_BUDGET = WrapperSpec(name="StepBudget", entry_point="poser_env.wrappers:StepBudget", kwargs={})


def register_envs() -> None:
    """Register the ids of :data:`ENV_IDS` with Gymnasium (idempotent)."""
    specs: dict[str, tuple[str, dict[str, Any], bool]] = {
        "poser_env/ImagePoser-v0": ("poser_env.env:ImagePoserEnv", {"prompt_source": "geneval"}, False),
        "poser_env/ImagePoserLong-v0": ("poser_env.env:ImagePoserEnv", {"prompt_source": "long"}, False),
        "poser_env/ImagePoserPaper-v0": ("poser_env.paper:ImagePoserPaperEnv", {}, False),
        "poser_env/ImagePoserDiffusers-v0": ("poser_env.env:ImagePoserDiffusersEnv", {}, True),
    }
    #: The step budget of each id: gym.make's TimeLimit, which StepBudget makes the env's max_steps too.
    max_episode_steps = {
        "poser_env/ImagePoser-v0": 16,
        "poser_env/ImagePoserLong-v0": 24,
        "poser_env/ImagePoserPaper-v0": 6,
        "poser_env/ImagePoserDiffusers-v0": 16,
    }
    for env_id, (entry_point, kwargs, nondet) in specs.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point=entry_point,
            kwargs=kwargs,
            max_episode_steps=max_episode_steps[env_id],
            nondeterministic=nondet,
            disable_env_checker=False,
            additional_wrappers=(_STEP_BUDGET,),
        )


register_envs()
