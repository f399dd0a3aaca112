"""One home for the env's defaults and argument checks.

Every default of the environments lives here, once, in frozen dataclasses that the env classes, the registered
ids (:mod:`poser_env`) and the agents read:

- :data:`ENV_DEFAULTS`: ``ImagePoserEnv``'s signature (``poser_env/ImagePoser-v0``): 16 steps, cost weight 0.02.
- :data:`LONG`: long prompts, 24 steps (``poser_env/ImagePoserLong-v0``).
- :data:`PAPER`: the paper's MDP, 6 steps, cost weight 0, no feedback in the observation
  (``poser_env/ImagePoserPaper-v0``).
- :data:`MAIN`: the world of the README's headline numbers (``poser_env/ImagePoserMain-v0``): GenEval-style and
  long prompts mixed, 30 steps, cost weight 0.005, success weight 2.0, hashing text encoder.
- :data:`DIFFUSERS`: real models (``poser_env/ImagePoserDiffusers-v0``).

Text encoder. Every configuration names its encoder: ``"hashing"`` (deterministic, no dependency) unless the id
says ``MiniLM`` (``poser_env/ImagePoser-MiniLM-v0``, ``poser_env/ImagePoserLong-MiniLM-v0``). ``"auto"`` (MiniLM
when installed, else hashing) is still accepted as an argument but no id or default uses it: observations must not
depend on what is installed.

Prompt pools. A generated pool of ``n`` prompts of kind ``"mixed"`` holds ``n // 2`` GenEval-style prompts then
``n - n // 2`` long ones, everywhere (env, :class:`poser_env.prompts.PromptSource`, ``agents.pipeline``); the
main job's "100 test prompts per family" is a mixed pool of 200. The default pool size is
:data:`DEFAULT_POOL_SIZE` per split.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from poser_env.core.feedback import Feedback

__all__ = [
    "ACTION_MODES",
    "DEFAULT_POOL_SIZE",
    "DIFFUSERS",
    "ENV_DEFAULTS",
    "GENERATED_SOURCES",
    "LONG",
    "LONG_V1",
    "MAIN",
    "MAIN_V1",
    "PAPER",
    "SHIPPED_CARDS",
    "V1",
    "EnvConfigError",
    "EnvDefaults",
    "RewardWeights",
    "check_bool",
    "check_env_args",
    "check_number",
    "pool_size",
]


class EnvConfigError(ValueError):
    """A bad constructor argument or reset option; the message names it, the value and the fix."""


#: The generated prompt sources (a JSONL path or a list of prompts are the other kinds).
GENERATED_SOURCES: tuple[str, ...] = ("geneval", "long", "mixed")
#: Shipped SceneSim card versions ``cards=`` accepts by name (besides a path): ``"v1"`` is the default registry.
SHIPPED_CARDS: tuple[str, ...] = ("v1", "v2")
#: Action modes (see :class:`EnvDefaults.action_mode`).
ACTION_MODES: tuple[str, ...] = ("expert", "factored")
#: Size of a generated prompt pool when ``n_prompts`` is None, per split.
DEFAULT_POOL_SIZE: Mapping[str, int] = MappingProxyType({"train": 2000, "test": 500})


def pool_size(split: str, n_prompts: int | None) -> int:
    """``n_prompts``, or the default pool size of ``split`` when None."""
    return DEFAULT_POOL_SIZE[split] if n_prompts is None else int(n_prompts)


# ---------------------------------------------------------------------------------------------- typed checks
def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (numpy bools too); else EnvConfigError naming ``name`` (``"False"`` is a string,
    not a bool, and would switch the option on)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        fix = value.strip().lower() in ("true", "1", "yes", "on")
        raise EnvConfigError(
            f"{name}={value!r} must be True or False, not a string (any non-empty string would switch it on); "
            f"pass {name}={fix}."
        )
    raise EnvConfigError(f"{name}={value!r} ({type(value).__name__}) must be True or False; pass {name}=True or False.")


def check_number(
    name: str, value: Any, *, lo: float | None = None, hi: float | None = None, integer: bool = False,
    unit: str = "",
) -> float:
    """``value`` as a float (an int when ``integer``) within ``[lo, hi]``; bools and strings are refused.

    Raises:
        EnvConfigError: naming ``name``, the value, the accepted range and the fix.
    """
    rng = (f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else
           f" >= {lo:g}" if lo is not None else f" <= {hi:g}" if hi is not None else "")
    what = "an int" if integer else "a finite number"
    unit_s = f" {unit}" if unit else ""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok and integer and not isinstance(value, numbers.Integral):
        ok = False
    if ok and not math.isfinite(float(value)):
        ok = False
    if ok and ((lo is not None and float(value) < lo) or (hi is not None and float(value) > hi)):
        ok = False
    if not ok:
        kind = type(value).__name__
        raise EnvConfigError(f"{name}={value!r} ({kind}) must be {what}{rng}{unit_s}.")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the potential
    ``phi = (a*alignment + f*fidelity + e*aesthetics + s*all_hold) / (a + f + e + s)``, where ``all_hold`` is 1
    when the critic says every assertion holds (GenEval scores an image pass/fail, so completing a prompt is
    worth more than the fraction of its assertions).

    All >= 0 with a positive sum, so phi is in [0, 1].
    """

    alignment: float = 1.0
    fidelity: float = 0.2
    aesthetics: float = 0.05
    success: float = 0.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)) or v < 0:
                raise EnvConfigError(f"reward weight {f.name}={v!r} must be a finite number >= 0.")
        if self.alignment + self.fidelity + self.aesthetics + self.success <= 0:
            raise EnvConfigError("reward weights must not all be 0; set alignment=1.0 for the default.")

    @classmethod
    def of(cls, value: RewardWeights | Mapping[str, float] | None) -> RewardWeights:
        """``value`` as RewardWeights: None gives the defaults, a mapping overrides some of them."""
        if value is None:
            return cls()
        if isinstance(value, RewardWeights):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise EnvConfigError(
                    f"reward_weights keys {unknown} are unknown; use some of {sorted(known)}, e.g. {{'success': 2.0}}."
                )
            return cls(**value)
        raise EnvConfigError(
            f"reward_weights={value!r} must be a RewardWeights or a mapping like {{'alignment': 1.0}}."
        )

    def changed(self) -> dict[str, float]:
        """The weights that differ from the defaults (what a registration writes)."""
        base = RewardWeights()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(base, f.name)}

    def potential(self, fb: Feedback | None) -> float:
        """phi(fb) in [0, 1]; 0 before any image."""
        if fb is None:
            return 0.0
        total = self.alignment + self.fidelity + self.aesthetics + self.success
        return float(
            (self.alignment * fb.alignment + self.fidelity * fb.fidelity + self.aesthetics * fb.aesthetics
             + self.success * float(fb.all_hold)) / total
        )


@dataclass(frozen=True)
class EnvDefaults:
    """The arguments of one named configuration of the environment (see the module docstring).

    Units and ranges are those of :class:`poser_env.env.ImagePoserEnv`'s arguments of the same names.
    """

    prompt_source: str = "geneval"
    split: str = "train"
    max_steps: int = 16
    max_attempts: int = 3
    cost_weight: float = 0.02
    reward_weights: RewardWeights = field(default_factory=RewardWeights)
    invalid_action_penalty: float = 0.1
    feedback_in_obs: bool = True
    thumbnail: bool = False
    thumbnail_size: int = 64
    canvas_size: int = 128
    text_encoder: str = "hashing"
    critic: str = "scene"
    judge: str | None = "scene"
    decomposer: str = "rules"
    #: Seconds an expert call may take before it counts as failed (None: no limit; SceneSim calls take ~1 ms).
    expert_timeout: float | None = None
    #: SceneSim model cards: None (the shipped version-1 cards and installed plugins), ``"v2"`` (the v1 world's
    #: 14 experts, :data:`experts.registry.CARDS_V2_PATH`) or a card file path.
    cards: str | None = None
    #: ``"expert"`` (v0: the action picks the expert for the planner's current command) or ``"factored"`` (v1:
    #: the action picks one of the first ``command_slots`` pending commands *and* the expert that runs it).
    action_mode: str = "expert"
    #: Pending commands the agent may choose from in ``"factored"`` mode (1..16).
    command_slots: int = 4

    def kwargs(self, base: EnvDefaults | None = None) -> dict[str, Any]:
        """The arguments that differ from ``base`` (default :data:`ENV_DEFAULTS`), plus ``text_encoder`` always
        (every registered id names its encoder). Reward weights appear as a mapping of the changed weights."""
        ref = ENV_DEFAULTS if base is None else base
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v, b = getattr(self, f.name), getattr(ref, f.name)
            if f.name == "reward_weights":
                if v != b:
                    out[f.name] = v.changed()
            elif v != b or f.name == "text_encoder":
                out[f.name] = v
        return out


#: ``ImagePoserEnv``'s defaults (``poser_env/ImagePoser-v0``).
ENV_DEFAULTS = EnvDefaults()
#: Long compositional prompts (``poser_env/ImagePoserLong-v0``).
LONG = dataclasses.replace(ENV_DEFAULTS, prompt_source="long", max_steps=24)
#: The paper's MDP (``poser_env/ImagePoserPaper-v0``; ``ImagePoserPaperEnv``'s defaults).
PAPER = dataclasses.replace(ENV_DEFAULTS, max_steps=6, cost_weight=0.0, feedback_in_obs=False)
#: The main job's world, the one of the README's headline numbers (``poser_env/ImagePoserMain-v0``).
#: Hashing text encoder: on 2 CPU cores MiniLM embeddings cut training throughput about 3x. Success weight 2.0 and
#: cost weight 0.005: with the env's default (0.5, 0.02) the 15-20 repairs a long prompt needs cost more than its
#: expected success pays. 30 steps: a long prompt's plan needs 15-25 calls.
MAIN = dataclasses.replace(ENV_DEFAULTS, prompt_source="mixed", max_steps=30, cost_weight=0.005,
                           reward_weights=RewardWeights(success=2.0))
#: The v1 world (``poser_env/ImagePoser-v1``): SceneSim model cards version 2 (14 experts, at least two per editing
#: op, strengths that depend on observable context) and the factored action (which pending command, which expert).
V1 = dataclasses.replace(ENV_DEFAULTS, cards="v2", action_mode="factored")
#: Long prompts in the v1 world (``poser_env/ImagePoserLong-v1``): 30 steps.
LONG_V1 = dataclasses.replace(V1, prompt_source="long", max_steps=30)
#: The main job's world since cards version 2 (``poser_env/ImagePoserMain-v1``): :data:`MAIN`'s reward and budget
#: in the v1 world.
MAIN_V1 = dataclasses.replace(MAIN, cards="v2", action_mode="factored")
#: Real models (``poser_env/ImagePoserDiffusers-v0``; ``ImagePoserDiffusersEnv``'s defaults).
DIFFUSERS = dataclasses.replace(ENV_DEFAULTS, critic="clip:openai/clip-vit-base-patch32", judge=None, canvas_size=512)


def check_env_args(
    *, prompt_source: Any, split: Any, n_prompts: Any, max_steps: Any, max_attempts: Any, cost_weight: Any,
    invalid_action_penalty: Any, feedback_in_obs: Any, thumbnail: Any, thumbnail_size: Any, canvas_size: Any,
    render_mode: Any, render_panel: Any, expert_timeout: Any, cards: Any, trust_remote_code: Any,
    action_mode: Any = "expert", command_slots: Any = 4,
) -> None:
    """Check the plain (non-component) arguments of ``ImagePoserEnv``: types first (``cost_weight=True``,
    ``thumbnail="False"`` are refused), then ranges. Raises :class:`EnvConfigError` naming the argument, the value
    and the fix."""
    if split not in ("train", "test"):
        raise EnvConfigError(f"split={split!r} must be 'train' or 'test'.")
    if isinstance(prompt_source, str):
        if prompt_source not in GENERATED_SOURCES and not Path(prompt_source).is_file():
            raise EnvConfigError(
                f"prompt_source={prompt_source!r} is neither one of {list(GENERATED_SOURCES)} nor an existing "
                "GenEval-format JSONL file; pass one of those."
            )
    elif isinstance(prompt_source, Path):
        raise EnvConfigError(f"prompt_source={prompt_source!r} must be a str path; pass str(path).")
    elif not isinstance(prompt_source, Sequence) or not prompt_source:
        raise EnvConfigError(
            f"prompt_source={prompt_source!r} must be 'geneval', 'long', 'mixed', a JSONL path or a non-empty list "
            "of prompts."
        )
    if n_prompts is not None:
        check_number("n_prompts", n_prompts, lo=1, hi=1_000_000, integer=True, unit="(prompts in the pool)")
    check_number("max_steps", max_steps, lo=1, hi=256, integer=True)
    check_number("max_attempts", max_attempts, lo=1, hi=10, integer=True)
    check_number("cost_weight", cost_weight, lo=0)
    check_number("invalid_action_penalty", invalid_action_penalty, lo=0)
    check_bool("feedback_in_obs", feedback_in_obs)
    check_bool("thumbnail", thumbnail)
    check_bool("render_panel", render_panel)
    check_bool("trust_remote_code", trust_remote_code)
    check_number("thumbnail_size", thumbnail_size, lo=16, hi=128, integer=True, unit="pixels")
    check_number("canvas_size", canvas_size, lo=64, hi=512, integer=True, unit="pixels")
    if render_mode not in (None, "rgb_array"):
        raise EnvConfigError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'.")
    if expert_timeout is not None:
        check_number("expert_timeout", expert_timeout, lo=0.001, hi=86_400.0,
                     unit="seconds (None for no limit)")
    if cards is not None and cards not in SHIPPED_CARDS and (
            not isinstance(cards, (str, Path)) or not Path(cards).is_file()):
        raise EnvConfigError(
            f"cards={cards!r} must be one of the shipped card versions {list(SHIPPED_CARDS)}, the path of an "
            "existing SceneSim card TOML file (like experts/sim/cards.toml), or None for the shipped v1 cards."
        )
    if action_mode not in ACTION_MODES:
        raise EnvConfigError(
            f"action_mode={action_mode!r} must be one of {list(ACTION_MODES)}: 'expert' picks the expert for the "
            "current command (v0), 'factored' picks a pending command and its expert (v1)."
        )
    check_number("command_slots", command_slots, lo=1, hi=16, integer=True, unit="(pending commands to choose from)")
