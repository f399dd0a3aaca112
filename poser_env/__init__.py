"""image-poser: a Gymnasium environment for learning to orchestrate image-generation experts.

Importing this package registers the environment ids (nothing heavy is imported)::

    import gymnasium as gym
    import poser_env
    env = gym.make("poser_env/ImagePoser-v0")
"""

from __future__ import annotations

from dataclasses import replace as _replace

from gymnasium.envs.registration import WrapperSpec, register, registry

from poser_env.shadowing import check_shadowing

check_shadowing()  # a user's critic.py / experts.py next to their script would break the env: say so now

from poser_env import config as _config  # noqa: E402  (after the shadowing check, which names the fix)

__version__ = "0.1.0"

__all__ = ["ENV_IDS", "MAIN_ENV_ID", "__version__", "register_envs", "registered_config"]

#: The id of the world the README's headline numbers come from (``poser main``): :data:`poser_env.config.MAIN`.
MAIN_ENV_ID = "poser_env/ImagePoserMain-v1"

#: id -> (entry point, configuration, the configuration the entry point's class defaults are, nondeterministic).
#: Each id's kwargs are the fields where its configuration differs from its class's defaults, and always the text
#: encoder: ids are deterministic whatever is installed (MiniLM ids say so in their name).
_SPECS: dict[str, tuple[str, _config.EnvDefaults, _config.EnvDefaults, bool]] = {
    "poser_env/ImagePoser-v0": ("poser_env.env:ImagePoserEnv", _config.ENV_DEFAULTS, _config.ENV_DEFAULTS, False),
    "poser_env/ImagePoser-MiniLM-v0": ("poser_env.env:ImagePoserEnv",
                                       _replace(_config.ENV_DEFAULTS, text_encoder="minilm"),
                                       _config.ENV_DEFAULTS, False),
    "poser_env/ImagePoserLong-v0": ("poser_env.env:ImagePoserEnv", _config.LONG, _config.ENV_DEFAULTS, False),
    "poser_env/ImagePoserLong-MiniLM-v0": ("poser_env.env:ImagePoserEnv",
                                           _replace(_config.LONG, text_encoder="minilm"), _config.ENV_DEFAULTS,
                                           False),
    "poser_env/ImagePoserMain-v0": ("poser_env.env:ImagePoserEnv", _config.MAIN, _config.ENV_DEFAULTS, False),
    "poser_env/ImagePoser-v1": ("poser_env.env:ImagePoserEnv", _config.V1, _config.ENV_DEFAULTS, False),
    "poser_env/ImagePoser-MiniLM-v1": ("poser_env.env:ImagePoserEnv", _replace(_config.V1, text_encoder="minilm"),
                                       _config.ENV_DEFAULTS, False),
    "poser_env/ImagePoserLong-v1": ("poser_env.env:ImagePoserEnv", _config.LONG_V1, _config.ENV_DEFAULTS, False),
    "poser_env/ImagePoserLong-MiniLM-v1": ("poser_env.env:ImagePoserEnv",
                                           _replace(_config.LONG_V1, text_encoder="minilm"), _config.ENV_DEFAULTS,
                                           False),
    "poser_env/ImagePoserMain-v1": ("poser_env.env:ImagePoserEnv", _config.MAIN_V1, _config.ENV_DEFAULTS, False),
    "poser_env/ImagePoserPaper-v0": ("poser_env.paper:ImagePoserPaperEnv", _config.PAPER, _config.PAPER, False),
    "poser_env/ImagePoserDiffusers-v0": ("poser_env.env:ImagePoserDiffusersEnv", _config.DIFFUSERS,
                                         _config.DIFFUSERS, True),
}

#: Every environment id this package registers.
ENV_IDS: tuple[str, ...] = tuple(_SPECS)


def registered_config(env_id: str) -> _config.EnvDefaults:
    """The configuration (:class:`poser_env.config.EnvDefaults`) registered as ``env_id``.

    Raises:
        KeyError: an id this package does not register (the message lists them).
    """
    if env_id not in _SPECS:
        raise KeyError(f"env_id={env_id!r} is not registered by poser_env; known: {list(_SPECS)}.")
    return _SPECS[env_id][1]

#: Added by gym.make above the TimeLimit of every id: the TimeLimit's max_episode_steps is the env's one step budget
#: (see poser_env.wrappers.StepBudget; max_steps passed to gym.make is an alias that sets it).
_STEP_BUDGET = WrapperSpec(name="StepBudget", entry_point="poser_env.wrappers:StepBudget", kwargs={})


def register_envs() -> None:
    """Register the ids of :data:`ENV_IDS` with Gymnasium (idempotent)."""
    for env_id, (entry_point, config, class_defaults, nondet) in _SPECS.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point=entry_point,
            # the step budget is the TimeLimit's (StepBudget makes it the env's max_steps too), not a kwarg
            kwargs={k: v for k, v in config.kwargs(class_defaults).items() if k != "max_steps"},
            max_episode_steps=config.max_steps,
            nondeterministic=nondet,
            disable_env_checker=False,
            additional_wrappers=(_STEP_BUDGET,),
        )


register_envs()
