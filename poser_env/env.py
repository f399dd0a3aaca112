"""The image-poser MDP as a Gymnasium environment."""

from __future__ import annotations

import copy
import difflib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from experts.diffusers import diffusers_registry, load_diffusers_experts
from experts.registry import EXPERTS, default_expert_names
from poser_env.components import (
    build_experts,
    check_trust_remote_code,
    expert_registry,
    make_critic,
    make_decomposer,
    make_judge,
    make_text_encoder,
    prompt_pool,
)
from poser_env.config import DIFFUSERS, ENV_DEFAULTS, EnvConfigError, RewardWeights, check_bool, check_env_args
from poser_env.core.commands import Command
from poser_env.core.expert import Expert, ExpertError, ExpertOutput
from poser_env.core.feedback import Critic, Feedback, Verdict
from poser_env.core.image import check_image, is_blank
from poser_env.core.registry import Registry
from poser_env.core.spec import Spec, SpecError
from poser_env.encoders import TextEncoder
from poser_env.episode import EpisodeState
from poser_env.observation import (
    FEEDBACK_LAYOUT,
    feedback_vector,
    history_vector,
    observation_space,
    progress_vector,
    slots_vector,
)
from poser_env.remote import RayBackend, connect_components
from poser_env.rendering import render_frame

__all__ = ["EnvConfigError", "EpisodeSnapshot", "ImagePoserDiffusersEnv", "ImagePoserEnv", "RewardWeights", "unwrap"]


@dataclass(frozen=True)
class EpisodeSnapshot:
    """What :meth:`ImagePoserEnv.snapshot` returns: the episode's bookkeeping and the random state (opaque)."""

    episode: Mapping[str, Any]
    rng_state: Mapping[str, Any]



def _blank_feedback(spec: Spec, reason: str) -> Feedback:
    verdicts = tuple(Verdict(a.id, "unknown", 0.5, reason, a.kind) for a in spec.assertions())
    return Feedback(verdicts=verdicts, alignment=0.0, fidelity=0.0, aesthetics=0.0, text=reason)


class ImagePoserEnv(gym.Env[dict[str, np.ndarray], int]):
    """Learn to orchestrate image experts for compositional prompts.

    ## Description
    A prompt is parsed into a spec (a checklist of atomic assertions: objects, counts, colours, patterns,
    sizes, relations, exclusions, background, style) and planned into commands ("generate: ...",
    "recolor: make the second clock blue", ...). At each step the agent picks which expert executes the
    current command. A pixel-only critic judges the new image against the spec and returns structured
    feedback; the plan is revised from it (satisfied commands are popped, failing ones rewritten, a command
    is dropped after ``max_attempts`` failed attempts). The default world is SceneSim: simulated experts with
    distinct strengths and failure modes, offline and deterministic (2-3 ms a step on one CPU core). Results in
    SceneSim are results about the simulator, not about real diffusion models.

    ## Action Space
    ``Discrete(n_experts + 1)``. Action ``i < n_experts`` runs expert ``i`` (order of ``env.unwrapped.experts``,
    names in ``env.unwrapped.expert_names``); action ``n_experts`` is STOP. What an expert runs:

    - a text-to-image expert runs the current command if it is a ``generate`` command, else it regenerates the
      whole prompt from scratch (``"generate: <prompt>"``); the plan is then revised from the new feedback;
    - an image-to-image expert runs the current command if it supports the command's op; with no command left,
      an expert that supports ``refine`` runs ``"refine: improve the details"``.

    **Factored mode** (``action_mode="factored"``, the v1 ids): ``Discrete(command_slots * n_experts + 1)``.
    The planner proposes the open commands (and keeps its bookkeeping: attempts, drop after ``max_attempts``,
    rewrites, repairs); the action ``slot * n_experts + i`` runs expert ``i`` on pending command ``slot`` (0 is the
    planner's current command, 1..K-1 the next ones), which moves that command to the front of the plan: the
    policy chooses *what* to repair next and *who* repairs it, and order matters in the world (a move can break
    another relation, a re-composition can undo a recolour). A text-to-image expert acts on slot 0 (a
    ``generate`` command, else it regenerates the whole prompt) or on a ``generate`` command in another slot.
    STOP is ``command_slots * n_experts`` (``env.unwrapped.stop_action``). ``env.unwrapped.encode_action(slot,
    expert)`` and ``decode_action(a)`` convert; ``slot_commands()`` lists the K commands. Expert mode is the same
    with K = 1.

    ``env.unwrapped.action_masks()`` (used by sb3-contrib's MaskablePPO) is False for actions that make no sense
    now: an image-to-image expert on an empty canvas or for an op it does not support, an empty command slot.
    STOP is always allowed.
    A masked action taken anyway is a no-op with reward ``-invalid_action_penalty`` and
    ``info["invalid_action"] = True``. An action outside the space raises ``ValueError``.

    ## Observation Space
    ``Dict`` (SB3's ``MultiInputPolicy`` takes it as is), all ``float32`` unless noted. The layout lives in
    :mod:`poser_env.observation` with the slots named (``FEEDBACK_LAYOUT``, ``PROGRESS_LAYOUT``,
    ``history_layout(n)``, ``read_feedback(vec)``; also ``env.unwrapped.feedback_layout``):

    - ``"prompt"``: ``Box(-1, 1, (D,))`` embedding of the whole prompt (D = text encoder size, 384).
    - ``"command"``: ``Box(-1, 1, (D,))`` embedding of the current command ("done" when none is left).
    - ``"feedback"`` (unless ``feedback_in_obs=False``): ``Box(0, 1, (35,))``: alignment, fidelity,
      aesthetics; the satisfied fraction for each of the 9 assertion kinds and a 9-entry mask of which kinds the
      spec has; current-command status (a command is pending, fraction of its assertions that hold, attempts /
      max_attempts); one-hot of the command's op (10 ops); canvas empty. Slot names: ``alignment``,
      ``fidelity``, ``aesthetics``, ``satisfied``, ``present``, ``command_pending``, ``command_held``,
      ``command_attempts``, ``op``, ``canvas_empty``.
    - ``"progress"``: ``Box(0, 1, (5,))``: step / max_steps (the one step budget, see Episode End), commands
      done, pending and dropped (each over the number of commands planned so far), failed attempts on the
      current command / max_attempts.
    - ``"history"``: ``Box(0, 1, (2 * n_experts + 2,))``: calls per expert / max_steps, one-hot of the last
      action (n_experts + 1 entries, STOP last) plus one entry set before the first action.
    - ``"slots"`` (factored mode only): ``Box(0, 1, (K * 19 + 2,))``: per command slot its op, attempts, the
      fraction of its assertions that hold, and the context of its target from the critic's detections (found,
      size, crowded, gap to the nearest object, objects of the same noun, ordinal target); then the number of
      detected objects and the crowded fraction. Layout: :data:`poser_env.observation.SLOT_LAYOUT`,
      :func:`poser_env.observation.read_slots`. The context features are 0 with ``feedback_in_obs=False``.
    - ``"thumbnail"`` (only with ``thumbnail=True``): ``Box(0, 255, (S, S, 3), uint8)`` the canvas resized to
      ``thumbnail_size``.

    ## Rewards
    Potential-based on the critic's scores, minus the cost of the call::

        phi(fb) = (w_a * alignment + w_f * fidelity + w_e * aesthetics + w_s * all_hold) / (w_a + w_f + w_e + w_s)
        phi     = 0 before any image; defaults w_a = 1, w_f = 0.2, w_e = 0.05, w_s = 0.5
        r_t     = phi(fb_t) - phi(fb_{t-1}) - cost_weight * cost(expert_t)

    so an episode's return telescopes to ``phi(final feedback) - cost_weight * total cost`` (minus
    ``invalid_action_penalty`` for each masked action taken). STOP gives 0. ``info["reward_terms"]`` holds the
    breakdown.

    ## Starting State
    An empty canvas and the plan for a prompt: ``options["prompt"]`` (a string, parsed by the decomposer, or a
    ``Spec``) or one drawn with ``self.np_random`` from the prompt source (GenEval-style or long generated
    prompts of the ``split``, or a GenEval-format JSONL file).

    ## Episode End
    Terminated when the critic says every assertion holds, or on STOP. Truncated when ``max_steps`` steps have
    been taken. There is one step budget: every registered id has ``max_episode_steps`` (a ``TimeLimit``: 16
    for ``ImagePoser-v0`` and ``ImagePoserDiffusers-v0``, 24 for ``ImagePoserLong-v0``, 6 for
    ``ImagePoserPaper-v0``) and ``gym.make`` makes it the env's ``max_steps`` (through
    :class:`poser_env.wrappers.StepBudget`), so ``gym.make(id, max_episode_steps=N)`` truncates at N and the
    ``progress`` observation counts against N; ``gym.make(id, max_steps=N)`` is an alias of it (both with
    different values is an error). An env constructed directly (``ImagePoserEnv(max_steps=N)``) truncates
    itself at ``max_steps``.

    Once a step returned ``terminated`` or ``truncated``, ``step()`` raises ``gymnasium.error.ResetNeeded``
    (nothing runs, nothing is charged) until ``reset()``; SB3 and Gymnasium vector envs reset automatically.

    ## Failures
    An expert that raises, or returns a blank (constant) image, costs its call, leaves the canvas and plan as
    they were (nothing already produced is lost), counts a failed attempt on the current command, and sets
    ``info["error"]``. A critic that raises or returns invalid scores leaves the new image on the canvas, keeps
    the previous feedback for the reward (no shaping change), skips the plan revision, and sets
    ``info["critic_error"]``. The episode continues in both cases.

    ## Info
    ``reset()`` returns ``prompt`` (the prompt text), ``plan`` (the planned command texts, current first) and
    ``assertions`` (the spec's assertions as English sentences, the checklist the episode is judged on).

    ``step()`` returns, every step:

    - ``prompt`` (str); ``step`` (int, steps taken this episode, 1..max_steps); ``expert`` (the expert's name,
      or ``"STOP"``); ``command`` (the command text run, ``""`` for STOP or an invalid action);
      ``invalid_action`` (bool, a masked action was taken: a no-op with a penalty); ``plan`` (pending command
      texts after the step); ``reward_terms`` (``{"potential_delta", "cost", "penalty"}``, summing to the
      reward; the paper env has ``{"alignment", "step_penalty", "cost", "penalty"}``).
    - after an expert call: ``cost`` (float, the call's cost in SceneSim units, >= 0) and ``seed`` (int, the
      seed the expert got, drawn from ``self.np_random``: the same episode seed gives the same expert seeds).
    - once the canvas has feedback: ``feedback`` (the critic's text), ``alignment`` (fraction of assertions
      the critic says hold, in [0, 1]) and ``verdicts`` (assertion id -> ``"yes"``/``"no"``/``"unknown"``).
    - with a judge and an image: ``judge`` (ground truth, for evaluation only:
      ``{"pass": bool, "alignment": float, "verdicts": {id: holds}}``, plus ``"error"`` if the judge failed).
    - when something failed: ``error`` (the expert raised or returned a blank image) or ``critic_error``.
    - at the end of an episode (terminated or truncated): ``is_success`` (the judge's pass when a judge exists,
      else the critic's), ``episode_cost`` (summed cost of the episode's calls) and ``episode_calls`` (expert
      calls, invalid actions and STOP excluded).

    ## Episode state
    ``env.unwrapped.state`` is a read-only snapshot of the episode (:class:`poser_env.episode.EpisodeState`:
    prompt, spec, plan, current command, attempts, feedback, judge, canvas, step, budget, calls, cost, history);
    ``poser_env.env.unwrap(env)`` returns the typed env under the wrappers. ``prepare()`` builds the components
    before the first reset; ``close()`` releases them (models, GPU memory, worker threads) and is idempotent.

    ## Arguments
    Defaults live in :data:`poser_env.config.ENV_DEFAULTS` (one home for every default; the registered ids and
    the agents read the same dataclasses). Types are checked: a bool is not a number (``cost_weight=True`` is
    refused) and a string is not a bool (``thumbnail="False"`` is refused).

    - ``prompt_source``: ``"geneval"``, ``"long"``, ``"mixed"`` (``n // 2`` GenEval-style then the rest long), a
      path to a GenEval-format JSONL file, or a sequence of prompt strings / Specs.
    - ``split``: ``"train"`` or ``"test"`` (generated prompt sources only).
    - ``n_prompts``: how many generated prompts the pool holds (1..1e6; default 2000 train / 500 test).
    - ``experts``: expert names from the registry or Expert objects (default: every SceneSim expert).
    - ``cards``: path of a SceneSim card TOML file whose experts this env may use (for this env only; required
      card fields are checked); None: the shipped cards and installed plugins.
    - ``critic``: ``"scene"``, ``"vlm:<path>"``, ``"clip:<path>"``, a plugin's name, or a Critic.
    - ``judge``: ``"scene"`` (ground truth, SceneSim), ``"detector:<owlv2 path-or-id>"`` (GenEval-style rules
      over an open-vocabulary detector, for real images), None, or a callable ``(output, spec) -> Feedback``.
    - ``decomposer``: ``"rules"``, ``"llm:<path>"`` or an object with parse/plan/revise.
    - ``text_encoder``: ``"hashing"`` (default, deterministic), ``"minilm"``, ``"auto"`` (MiniLM if installed,
      else hashing: observations then depend on what is installed) or an encoder object.
    - ``max_steps`` (1..256, default 16; through ``gym.make`` the id's ``max_episode_steps``, see Episode End),
      ``max_attempts`` (1..10, default 3).
    - ``cost_weight`` (>= 0, default 0.02), ``reward_weights`` (:class:`RewardWeights` or a mapping),
      ``invalid_action_penalty`` (>= 0, default 0.1).
    - ``feedback_in_obs`` (default True), ``thumbnail`` (default False), ``thumbnail_size`` (16..128, default 64).
    - ``canvas_size``: SceneSim canvas side in pixels (64..512, default 128).
    - ``expert_timeout``: seconds an expert call may take (0.001..86400) before it fails with ``info["error"]``
      ("did not return within expert_timeout=...") and counts as a failed attempt; default None = no limit
      (a SceneSim call takes about a millisecond on CPU). The stuck call is left in a background thread.
    - ``trust_remote_code``: allow registry entries whose ``load_kwargs`` set ``trust_remote_code`` (default
      False: such an entry is refused, a registry file must not run a model repository's code on its own).
    - ``render_mode``: None or ``"rgb_array"``; ``render_panel`` adds a side panel with the command, expert and
      a tick or cross per assertion.
    - ``action_mode``: ``"expert"`` (default, v0) or ``"factored"`` (v1, see Action Space); ``command_slots``:
      K, the pending commands the factored action chooses from (1..16, default 4).
    - ``cards``: also ``"v2"``, the shipped version-2 cards alone (the v1 world), or ``"v1"`` (the default).
    - ``expert_backend``: ``"local"`` (default: this env builds its own experts and critic) or ``"ray"`` / a
      :class:`poser_env.remote.RayBackend` / a mapping of its fields: the shared expert service below.

    ## Shared expert service (``expert_backend="ray"``, needs ``pip install "image-poser[ray]"``)
    The experts, the critic (unless ``host_critic=False``) and a model decomposer (``"llm:<path>"``) are built
    once in Ray actors ("hosts", ``replicas`` of them, each with ``num_gpus``) instead of in every env; envs in
    any process with the same components (expert names, canvas size, registry, device, critic...) share the
    same hosts, and concurrent calls of one expert are batched (``max_batch``, ``max_wait_s``). The MDP is
    unchanged: same seeds, same images and trajectories as local experts (diffusers batches of several
    requests: up to float32 summation order). Ray starts at the first reset: the process's Ray if initialised,
    else ``RayBackend.address`` / ``RAY_ADDRESS``, else a local Ray listening on 127.0.0.1 only
    (:func:`poser_env.remote.start_local_ray`). A remote call that fails (host died: Ray restarts it up to
    ``max_restarts``) or exceeds ``timeout_s`` is reported like any failing expert (``info["error"]``, critic:
    ``info["critic_error"]``); the episode continues. The judge stays in the env.

    ## Version History
    - v0: initial release (SceneSim model cards version 1). Registered with ``max_episode_steps`` (the same
      budget the env had); stepping after the end raises instead of calling experts.
    - v1: SceneSim model cards version 2 (14 experts, at least two per editing op, strengths that depend on
      observable context) and the factored action (pending command x expert) with the ``"slots"`` observation;
      ``ImagePoserLong-v1`` has 30 steps. ``ImagePoserPaper-v0`` keeps the paper's MDP.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 2}  # type: ignore[misc]

    def __init__(
        self,
        *,
        prompt_source: str | Sequence[str | Spec] = ENV_DEFAULTS.prompt_source,
        split: str = ENV_DEFAULTS.split,
        n_prompts: int | None = None,
        experts: Sequence[str | Expert] | None = None,
        cards: str | Path | None = None,
        critic: str | Critic = ENV_DEFAULTS.critic,
        judge: str | Callable[[ExpertOutput, Spec], Feedback] | None = ENV_DEFAULTS.judge,
        decomposer: str | Any = ENV_DEFAULTS.decomposer,
        text_encoder: str | TextEncoder = ENV_DEFAULTS.text_encoder,
        max_steps: int = ENV_DEFAULTS.max_steps,
        max_attempts: int = ENV_DEFAULTS.max_attempts,
        cost_weight: float = ENV_DEFAULTS.cost_weight,
        reward_weights: RewardWeights | Mapping[str, float] | None = None,
        invalid_action_penalty: float = ENV_DEFAULTS.invalid_action_penalty,
        feedback_in_obs: bool = ENV_DEFAULTS.feedback_in_obs,
        thumbnail: bool = ENV_DEFAULTS.thumbnail,
        thumbnail_size: int = ENV_DEFAULTS.thumbnail_size,
        canvas_size: int = ENV_DEFAULTS.canvas_size,
        expert_timeout: float | None = ENV_DEFAULTS.expert_timeout,
        trust_remote_code: bool = False,
        render_mode: str | None = None,
        render_panel: bool = True,
        expert_backend: str | RayBackend | Mapping[str, Any] = "local",
        action_mode: str = ENV_DEFAULTS.action_mode,
        command_slots: int = ENV_DEFAULTS.command_slots,
    ) -> None:
        super().__init__()
        try:
            self._backend = None if expert_backend == "local" else RayBackend.of(expert_backend)
        except ValueError as exc:
            raise EnvConfigError(str(exc)) from exc
        self.expert_backend = "local" if self._backend is None else "ray"
        check_env_args(
            prompt_source=prompt_source, split=split, n_prompts=n_prompts, max_steps=max_steps,
            max_attempts=max_attempts, cost_weight=cost_weight, invalid_action_penalty=invalid_action_penalty,
            feedback_in_obs=feedback_in_obs, thumbnail=thumbnail, thumbnail_size=thumbnail_size,
            canvas_size=canvas_size, render_mode=render_mode, render_panel=render_panel,
            expert_timeout=expert_timeout, cards=cards, trust_remote_code=trust_remote_code,
            action_mode=action_mode, command_slots=command_slots,
        )
        self.action_mode = str(action_mode)
        #: Pending commands the action chooses from: ``command_slots`` in factored mode, 1 (the current one) in
        #: expert mode.
        self.command_slots = int(command_slots) if self.action_mode == "factored" else 1
        self.prompt_source = prompt_source
        self.split = split
        self.n_prompts = None if n_prompts is None else int(n_prompts)
        self.max_steps = int(max_steps)
        self.max_attempts = int(max_attempts)
        self.cost_weight = float(cost_weight)
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.reward_weights = RewardWeights.of(reward_weights)
        self.feedback_in_obs = bool(feedback_in_obs)
        self.thumbnail = bool(thumbnail)
        self.thumbnail_size = int(thumbnail_size)
        self.canvas_size = int(canvas_size)
        self.render_mode = render_mode
        self.render_panel = bool(render_panel)
        self.expert_timeout = None if expert_timeout is None else float(expert_timeout)
        self.trust_remote_code = bool(trust_remote_code)

        self._expert_arg = experts
        self._critic_arg = critic
        self._judge_arg = judge
        self._decomposer_arg = decomposer
        self._expert_registry: Registry[Expert] | None = None if cards is None else expert_registry(cards)
        self.cards = None if cards is None else str(cards)
        self.encoder = make_text_encoder(text_encoder)
        self._components_ready = False
        self.expert_names: list[str] = self._resolve_expert_names(experts)
        self.n_experts = len(self.expert_names)
        self.action_space = spaces.Discrete(self.command_slots * self.n_experts + 1)  # type: ignore[assignment]
        self.observation_space = self._make_observation_space()  # type: ignore[assignment]
        self._prompts: list[Spec | str] | None = None
        self._episode: dict[str, Any] = {}
        #: Seconds spent in the expert and the critic during the last step (kept out of ``info`` so that infos
        #: stay deterministic).
        self.last_timings: dict[str, float] = {"expert": 0.0, "critic": 0.0}

    # ================================================================== construction helpers
    def _resolve_expert_names(self, experts: Sequence[str | Expert] | None) -> list[str]:
        if experts is None:
            if self._expert_registry is not None:
                return list(self._expert_registry.names())
            return list(default_expert_names())
        if isinstance(experts, str) or not isinstance(experts, Sequence) or not experts:
            raise EnvConfigError(
                f"experts={experts!r} must be a non-empty list of expert names or Expert objects (or None for "
                "every SceneSim expert)."
            )
        names: list[str] = []
        for e in experts:
            if isinstance(e, Expert):
                names.append(e.name)
            elif isinstance(e, str):
                names.append(e)
            else:
                raise EnvConfigError(f"experts entry {e!r} must be a registry name or an Expert object.")
        if len(set(names)) != len(names):
            raise EnvConfigError(f"experts={names} has duplicate names; each expert may appear once.")
        if type(self)._build_experts is ImagePoserEnv._build_experts:  # names must be in this env's registry now
            reg = self._expert_registry if self._expert_registry is not None else EXPERTS
            for e in experts:
                if isinstance(e, str):
                    reg.entry(e)  # RegistryError (a ValueError) with "did you mean ..."
        return names

    def _build_experts(self) -> list[Expert]:
        return build_experts(self.expert_names, self._expert_arg, canvas_size=self.canvas_size,
                             registry=self._expert_registry, timeout=self.expert_timeout)

    def _build_critic(self) -> Critic:
        if isinstance(self._critic_arg, Critic):
            return self._critic_arg
        return make_critic(self._critic_arg)

    def _build_judge(self) -> Callable[[ExpertOutput, Spec], Feedback] | None:
        return make_judge(self._judge_arg, local_files_only=getattr(self, "local_files_only", True),
                          device=getattr(self, "device", "cpu"))

    def _build_decomposer(self) -> Any:
        d = self._decomposer_arg
        return make_decomposer(d, max_attempts=self.max_attempts) if isinstance(d, str) else make_decomposer(d)

    def _setup(self) -> None:
        """Build the components (experts, critic, judge, decomposer); called at the first reset."""
        if self._components_ready:
            return
        critic, decomposer = None, None
        if self._backend is not None:  # the shared service: remote experts (critic, decomposer when hosted)
            self.experts, critic, decomposer = connect_components(self, self._backend)
        else:
            self.experts = self._build_experts()
        self.critic = critic if critic is not None else self._build_critic()
        load = getattr(self.critic, "load", None)
        if callable(load):  # model critics load at the first reset, so a missing model fails here, loudly
            load()
        self.judge = self._build_judge()
        self.decomposer = decomposer if decomposer is not None else self._build_decomposer()
        self._components_ready = True

    def _make_observation_space(self) -> spaces.Dict:
        return observation_space(
            text_dim=self.encoder.dim, n_experts=self.n_experts, feedback=self.feedback_in_obs,
            thumbnail_size=self.thumbnail_size if self.thumbnail else None,
            command_slots=self.command_slots if self.action_mode == "factored" else None,
        )

    # ================================================================== prompts
    def _prompt_pool(self) -> list[Spec | str]:
        if self._prompts is None:
            self._prompts = prompt_pool(self.prompt_source, self.split, self.n_prompts)
        return self._prompts

    def _spec_for(self, prompt: str | Spec) -> tuple[Spec, Spec]:
        """(spec the agent works from, ground-truth spec for the judge)."""
        if isinstance(prompt, Spec):
            if not prompt.prompt:
                return prompt, prompt
            # the agent parses the text like any user prompt; the judge keeps the ground truth
            try:
                parsed = self.decomposer.parse(prompt.prompt)
            except SpecError:
                parsed = prompt
            return parsed, prompt
        if not isinstance(prompt, str) or not prompt.strip():
            raise EnvConfigError(
                f'options["prompt"]={prompt!r} must be a non-empty prompt string such as "a red cup" or a Spec.'
            )
        try:
            spec = self.decomposer.parse(prompt)
        except SpecError as exc:
            raise EnvConfigError(f'options["prompt"]={prompt[:80]!r} cannot be used: {exc}') from exc
        return spec, spec

    # ================================================================== gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._setup()
        options = dict(options or {})
        unknown = set(options) - {"prompt"}
        if unknown:
            raise EnvConfigError(f"reset options {sorted(unknown)} are unknown; the only option is 'prompt'.")
        if "prompt" in options and options["prompt"] is not None:
            prompt = options["prompt"]
        else:
            pool = self._prompt_pool()
            prompt = pool[int(self.np_random.integers(len(pool)))]
        spec, truth = self._spec_for(prompt)
        plan = self.decomposer.plan(spec)
        prefetch = getattr(self.encoder, "prefetch", None)
        if callable(prefetch):  # one batch for the prompt and its plan instead of one model call per step
            prefetch([spec.prompt or "; ".join(e.phrase() for e in spec.entities), *plan.texts, "done"])
        self._episode = {
            "spec": spec,
            "truth": truth,
            "plan": plan,
            "output": None,
            "feedback": None,
            "judge": None,
            "step": 0,
            "calls": np.zeros(self.n_experts, dtype=np.int64),
            "last_action": -1,
            "last_expert_index": -1,
            "cost": 0.0,
            "trace": [],
            "last_command": "",
            "last_expert": "",
            "ended": "",
        }
        info = {"prompt": spec.prompt, "plan": plan.texts, "assertions": [a.text for a in spec.assertions()]}
        return self._obs(), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        if not self._episode:
            raise gym.error.ResetNeeded("Call reset() before step().")
        a = self._check_action(action)
        ep = self._episode
        if ep["ended"]:
            raise gym.error.ResetNeeded(
                f"step() called after the episode ended ({ep['ended']} at step {ep['step']}); nothing was run. "
                "Call reset() to start a new episode (SB3 and Gymnasium vector envs do this automatically)."
            )
        ep["step"] += 1
        self.last_timings = {"expert": 0.0, "critic": 0.0}
        info: dict[str, Any] = {"prompt": ep["spec"].prompt, "invalid_action": False}
        terms = {"potential_delta": 0.0, "cost": 0.0, "penalty": 0.0}
        terminated = False
        stop = a == self.stop_action
        mask = self.action_masks()
        slot, e = (0, self.n_experts) if stop else divmod(a, self.n_experts)
        if stop:
            info["expert"] = "STOP"
            info["command"] = ""
            terminated = True
        elif not mask[a]:
            info["invalid_action"] = True
            info["expert"] = self.expert_names[e]
            info["command"] = ""
            terms["penalty"] = -self.invalid_action_penalty
        else:
            if slot > 0:  # factored mode: the chosen pending command runs now
                ep["plan"] = ep["plan"].promote(slot)
            if self.action_mode == "factored":
                info["slot"] = slot
            self._run_expert(e, info, terms)
        if stop or not info["invalid_action"]:
            ep["last_action"] = a
            ep["last_expert_index"] = e
        fb: Feedback | None = ep["feedback"]
        if fb is not None and fb.all_hold:
            terminated = True
        truncated = not terminated and ep["step"] >= self.max_steps
        reward = float(sum(terms.values()))
        info["reward_terms"] = terms
        self._fill_info(info)
        if terminated or truncated:
            self._end_episode(info, "terminated" if terminated else "truncated")
        return self._obs(), reward, terminated, truncated, info

    def _end_episode(self, info: dict[str, Any], how: str) -> None:
        """Mark the episode ended (``how``: "terminated" or "truncated") and add the end-of-episode info keys."""
        ep = self._episode
        fb: Feedback | None = ep["feedback"]
        judge = ep["judge"]
        info["is_success"] = bool(judge["pass"]) if judge is not None else bool(fb is not None and fb.all_hold)
        info["episode_cost"] = ep["cost"]
        info["episode_calls"] = int(ep["calls"].sum())
        ep["ended"] = how

    # ================================================================== mechanics
    def _check_action(self, action: Any) -> int:
        try:
            arr = np.asarray(action)
            if arr.size != 1 or (arr.dtype.kind not in "iub" and not float(arr.item()).is_integer()):
                raise ValueError("not an integer")
            a = int(arr.item())
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"action={action!r} is not an integer; pass an int in [0, {self.stop_action}] ({self._action_help()})."
            ) from exc
        if not self.action_space.contains(a) or np.asarray(action).size != 1:
            raise ValueError(
                f"action={action!r} is outside Discrete({self.stop_action + 1}); pass an int in "
                f"[0, {self.stop_action}] ({self._action_help()})."
            )
        return a

    def _action_help(self) -> str:
        if self.action_mode == "factored":
            return (f"slot * {self.n_experts} + expert runs expert 0..{self.n_experts - 1} on pending command "
                    f"slot 0..{self.command_slots - 1}, {self.stop_action} is STOP; env.unwrapped.encode_action(slot, "
                    "expert) builds one")
        return f"0..{self.n_experts - 1} run an expert, {self.n_experts} is STOP"

    def _current(self) -> Command | None:
        cur: Command | None = self._episode["plan"].current
        return cur

    def _command_for(self, expert: Expert, slot: int = 0) -> str | None:
        """The command text ``expert`` would run on pending command ``slot`` now, or None when it has nothing
        sensible to do (slot 0 is the current command; a text-to-image expert acts on slot 0 only, or on a
        ``generate`` command in another slot)."""
        ep = self._episode
        pending = ep["plan"].pending
        if slot > 0:
            if slot >= len(pending):
                return None
            cmd = pending[slot]
            if expert.kind == "text-to-image":
                return cmd.text if cmd.op == "generate" else None
            if ep["output"] is None:
                return None
            return cmd.text if expert.supports(cmd.op) else None
        cur = self._current()
        if expert.kind == "text-to-image":
            if cur is not None and cur.op == "generate":
                return cur.text
            return f"generate: {ep['spec'].prompt}" if ep["spec"].prompt else (
                f"generate: {'; '.join(e.phrase() for e in ep['spec'].entities)}")
        if ep["output"] is None:
            return None
        if cur is None:
            return "refine: improve the details" if expert.supports("refine") else None
        return cur.text if expert.supports(cur.op) else None

    def action_masks(self) -> np.ndarray:
        """Boolean array of shape ``(action_space.n,)``: True where the action makes sense now (STOP always).

        Expert mode: entry ``i`` is expert ``i`` on the current command. Factored mode: entry
        ``slot * n_experts + i`` is expert ``i`` on pending command ``slot``."""
        if not self._episode:
            mask = np.ones(self.stop_action + 1, dtype=bool)
            return mask
        self._setup()
        mask = np.zeros(self.stop_action + 1, dtype=bool)
        # the same answers as ``self._command_for(e, slot) is not None`` for every (slot, expert), without
        # building the command texts: slots past the pending commands are all False (56 calls -> a few)
        pending = self._episode["plan"].pending
        has_image = self._episode["output"] is not None
        n = self.n_experts
        for i, e in enumerate(self.experts):
            mask[i] = self._command_for(e, 0) is not None
        for slot in range(1, min(self.command_slots, len(pending))):
            cmd = pending[slot]
            for i, e in enumerate(self.experts):
                if e.kind == "text-to-image":
                    ok = cmd.op == "generate" and cmd.text is not None
                else:
                    ok = has_image and e.supports(cmd.op) and cmd.text is not None
                mask[slot * n + i] = ok
        mask[-1] = True
        return mask

    @property
    def stop_action(self) -> int:
        """The STOP action (the last one: ``command_slots * n_experts``)."""
        return self.command_slots * self.n_experts

    def encode_action(self, slot: int, expert: int | str) -> int:
        """The action that runs ``expert`` (index or name) on pending command ``slot`` (0 = the current command;
        always 0 in expert mode).

        Raises:
            ValueError: a slot outside ``[0, command_slots)`` or an unknown expert.
        """
        if isinstance(expert, str):
            if expert not in self.expert_names:
                raise ValueError(f"expert={expert!r} is not in this env; choose one of {self.expert_names}.")
            expert = self.expert_names.index(expert)
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.command_slots:
            raise ValueError(f"slot={slot!r} must be an int in [0, {self.command_slots}) (command_slots).")
        if isinstance(expert, bool) or not isinstance(expert, (int, np.integer)) or not 0 <= expert < self.n_experts:
            raise ValueError(f"expert={expert!r} must be an expert index in [0, {self.n_experts}) or a name.")
        return int(slot) * self.n_experts + int(expert)

    def decode_action(self, action: int) -> tuple[int, int] | None:
        """``(slot, expert index)`` of an action, or None for STOP (see :meth:`encode_action`)."""
        a = self._check_action(action)
        return None if a == self.stop_action else divmod(a, self.n_experts)

    def slot_commands(self) -> tuple[Command | None, ...]:
        """The pending commands the action may pick now, one per slot (None for an empty slot)."""
        if not self._episode:
            raise gym.error.ResetNeeded("there is no episode yet; call reset() first.")
        pending = self._episode["plan"].pending
        return tuple(pending[i] if i < len(pending) else None for i in range(self.command_slots))

    def snapshot(self) -> EpisodeSnapshot:
        """A cheap copy of the episode and the env's random state, for search (:meth:`restore` returns to it).
        Components are not copied (SceneSim experts and critics are stateless)."""
        if not self._episode:
            raise gym.error.ResetNeeded("there is no episode yet; call reset() before snapshot().")
        ep = dict(self._episode)
        ep["calls"] = ep["calls"].copy()
        ep["trace"] = list(ep["trace"])
        return EpisodeSnapshot(ep, copy.deepcopy(self.np_random.bit_generator.state))

    def restore(self, snap: EpisodeSnapshot) -> None:
        """Return to the state of :meth:`snapshot` (the episode and the random state that draws expert seeds)."""
        if not isinstance(snap, EpisodeSnapshot):
            raise TypeError(f"snap={snap!r} is not an EpisodeSnapshot; pass what snapshot() returned.")
        ep = dict(snap.episode)
        ep["calls"] = ep["calls"].copy()
        ep["trace"] = list(ep["trace"])
        self._episode = ep
        self.np_random.bit_generator.state = copy.deepcopy(snap.rng_state)

    def _run_expert(self, a: int, info: dict[str, Any], terms: dict[str, float]) -> None:
        ep = self._episode
        expert = self.experts[a]
        text = self._command_for(expert)
        assert text is not None  # masked actions never get here
        seed = int(self.np_random.integers(0, 2**31 - 1))
        cur = self._current()
        regenerate = expert.kind == "text-to-image" and (cur is None or cur.op != "generate")
        prev: ExpertOutput | None = ep["output"]
        prev_fb: Feedback | None = ep["feedback"]
        ep["calls"][a] += 1
        ep["cost"] += float(expert.cost)
        terms["cost"] = -self.cost_weight * float(expert.cost)
        info.update(expert=expert.name, command=text, cost=float(expert.cost), seed=seed)
        ep["last_command"], ep["last_expert"] = text, expert.name
        t0 = time.perf_counter()
        try:
            out = expert(
                text,
                None if expert.kind == "text-to-image" else prev.image if prev is not None else None,
                seed=seed,
                state=None if expert.kind == "text-to-image" or prev is None else prev.state,
                detections=() if prev_fb is None else prev_fb.detections,
            )
            try:
                img = check_image(np.asarray(out.image), "the expert's image")
            except ValueError as bad:
                raise ExpertError(str(bad)) from bad
            if is_blank(img):  # pixel std below BLANK_STD (0..255 units)
                raise ExpertError("returned a blank (constant) image")
        except Exception as exc:  # an expert failure must not crash training
            info["error"] = f"{type(exc).__name__}: {exc}"
            self.last_timings = {"expert": time.perf_counter() - t0, "critic": 0.0}
            ep["plan"] = self._revise_failed(ep["plan"], prev_fb)
            ep["trace"].append({"step": ep["step"], "expert": expert.name, "command": text, "error": info["error"]})
            return
        t_expert = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            fb = self.critic(out.image, ep["spec"])
            if not all(np.isfinite([fb.alignment, fb.fidelity, fb.aesthetics])):
                raise ValueError("critic returned non-finite scores")
        except Exception as exc:  # a critic failure must not crash training either
            info["critic_error"] = f"{type(exc).__name__}: {exc}"
            self.last_timings = {"expert": t_expert, "critic": time.perf_counter() - t1}
            ep["output"] = out  # the new image is kept
            ep["trace"].append({"step": ep["step"], "expert": expert.name, "command": text,
                                "critic_error": info["critic_error"], "image": out.image})
            self._update_judge(out)
            return
        self.last_timings = {"expert": t_expert, "critic": time.perf_counter() - t1}
        terms["potential_delta"] = self.reward_weights.potential(fb) - self.reward_weights.potential(prev_fb)
        ep["output"], ep["feedback"] = out, fb
        if regenerate:  # a fresh image from scratch: the old plan's edits no longer apply
            ep["plan"] = self.decomposer.plan(ep["spec"])
        ep["plan"] = self.decomposer.revise(ep["plan"], fb)
        self._update_judge(out)
        ep["trace"].append({"step": ep["step"], "expert": expert.name, "command": text, "feedback": fb.text,
                            "alignment": fb.alignment, "image": out.image,
                            "verdicts": {v.assertion_id: v.holds for v in fb.verdicts}})

    def _revise_failed(self, plan: Any, prev_fb: Feedback | None) -> Any:
        """Count a failed attempt on the current command (dropped after max_attempts)."""
        fb = prev_fb if prev_fb is not None else _blank_feedback(self._episode["spec"], "no image yet")
        return self.decomposer.revise(plan, fb, executed=True)

    def _update_judge(self, out: ExpertOutput) -> None:
        if self.judge is None:
            return
        try:
            jf = self.judge(out, self._episode["truth"])
        except Exception as exc:
            self._episode["judge"] = {"pass": False, "alignment": 0.0, "verdicts": {}, "error": str(exc)}
            return
        self._episode["judge"] = {
            "pass": bool(jf.all_hold), "alignment": float(jf.alignment),
            "verdicts": {v.assertion_id: v.holds for v in jf.verdicts},
        }

    # ================================================================== observation / info
    def _obs(self) -> dict[str, np.ndarray]:
        ep = self._episode
        spec: Spec = ep["spec"]
        cur = self._current()
        emb = self.encoder([spec.prompt or "; ".join(e.phrase() for e in spec.entities),
                            cur.text if cur is not None else "done"])
        obs: dict[str, np.ndarray] = {"prompt": emb[0], "command": emb[1]}
        if self.feedback_in_obs:
            obs["feedback"] = feedback_vector(spec, ep["feedback"], cur, canvas_empty=ep["output"] is None,
                                              max_attempts=self.max_attempts)
        plan = ep["plan"]
        obs["progress"] = progress_vector(
            step=ep["step"], max_steps=self.max_steps, n_done=len(plan.done), n_pending=len(plan.pending),
            n_dropped=len(plan.dropped), attempts=cur.attempts if cur is not None else 0,
            max_attempts=self.max_attempts,
        )
        obs["history"] = history_vector(ep["calls"], ep["last_expert_index"], max_steps=self.max_steps)
        if self.action_mode == "factored":
            out: ExpertOutput | None = ep["output"]
            obs["slots"] = slots_vector(
                self.slot_commands(), ep["feedback"], image_shape=None if out is None else np.shape(out.image),
                max_attempts=self.max_attempts, context=self.feedback_in_obs)
        if self.thumbnail:
            obs["thumbnail"] = self._thumbnail()
        return obs

    def _thumbnail(self) -> np.ndarray:
        out: ExpertOutput | None = self._episode["output"]
        s = self.thumbnail_size
        if out is None:
            return np.zeros((s, s, 3), dtype=np.uint8)
        from PIL import Image

        return np.asarray(Image.fromarray(out.image).resize((s, s), Image.Resampling.BILINEAR), dtype=np.uint8)

    def _fill_info(self, info: dict[str, Any]) -> None:
        ep = self._episode
        fb: Feedback | None = ep["feedback"]
        info["plan"] = ep["plan"].texts
        info["step"] = ep["step"]
        if fb is not None:
            info["feedback"] = fb.text
            info["alignment"] = fb.alignment
            info["verdicts"] = {v.assertion_id: v.holds for v in fb.verdicts}
        if ep["judge"] is not None:
            info["judge"] = {**ep["judge"], "verdicts": dict(ep["judge"].get("verdicts", {}))}

    # ================================================================== public helpers
    @property
    def state(self) -> EpisodeState:
        """A read-only snapshot of the current episode (see :class:`poser_env.episode.EpisodeState`).

        Raises:
            gymnasium.error.ResetNeeded: before the first ``reset()`` (or after ``close()``).
        """
        ep = self._episode
        if not ep:
            raise gym.error.ResetNeeded("there is no episode yet; call reset() before reading env.unwrapped.state.")
        plan = ep["plan"]
        cur: Command | None = plan.current
        out: ExpertOutput | None = ep["output"]
        canvas = None
        if out is not None:
            canvas = np.asarray(out.image).view()
            canvas.flags.writeable = False
        calls = ep["calls"].copy()
        calls.flags.writeable = False
        return EpisodeState(
            prompt=ep["spec"].prompt, spec=ep["spec"], truth=ep["truth"], plan=plan, command=cur,
            attempts=cur.attempts if cur is not None else 0, feedback=ep["feedback"],
            judge=None if ep["judge"] is None else MappingProxyType(ep["judge"]), output=out, canvas=canvas,
            step=ep["step"], max_steps=self.max_steps, calls=calls, cost=float(ep["cost"]),
            last_action=None if ep["last_action"] < 0 else int(ep["last_action"]),
            last_expert=ep["last_expert"], last_command=ep["last_command"],
            history=tuple(MappingProxyType(r) for r in ep["trace"]), ended=bool(ep["ended"]),
        )

    @property
    def feedback_layout(self) -> Mapping[str, slice] | None:
        """Slots of ``obs["feedback"]``, name -> slice (:data:`poser_env.observation.FEEDBACK_LAYOUT`), or None
        without the feedback key (``feedback_in_obs=False``)."""
        return FEEDBACK_LAYOUT if self.feedback_in_obs else None

    def prepare(self) -> None:
        """Build the components now (experts, critic, judge, decomposer; loads model critics), as the first
        ``reset()`` would. Afterwards ``experts``, ``critic``, ``judge`` and ``decomposer`` are set. Idempotent."""
        self._setup()

    def set_max_steps(self, max_steps: int) -> None:
        """Set the step budget (1..256 steps): the episode is truncated after ``max_steps`` steps and the
        ``progress``/``history`` observations count against it.

        ``gym.make`` calls this through :class:`poser_env.wrappers.StepBudget` with the ``TimeLimit``'s
        ``max_episode_steps``, so an env made by ``gym.make`` has one budget; call it yourself only on an env you
        constructed directly. Takes effect from the next step.
        """
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or not 1 <= max_steps <= 256:
            raise EnvConfigError(f"max_steps={max_steps!r} must be an int from 1 to 256 (steps per episode).")
        self.max_steps = int(max_steps)

    def close(self) -> None:
        """Release what the env holds: every component (experts, critic, judge, decomposer) with a ``close()``
        frees its models, GPU memory (diffusers experts evict their pipelines from the residency manager) and
        worker threads; the current episode is dropped. Idempotent. Objects you passed in (``experts=[...]``,
        ``critic=...``) are closed too. A closed env may be reset again: models reload on first use.
        """
        errors: list[str] = []
        if self._components_ready:
            seen: set[int] = set()
            for comp in [*self.experts, self.critic, self.judge, self.decomposer]:
                closer = getattr(comp, "close", None)
                if comp is None or id(comp) in seen or not callable(closer):
                    continue
                seen.add(id(comp))
                try:
                    closer()
                except Exception as exc:  # release the others before reporting
                    errors.append(f"{type(comp).__name__}: {type(exc).__name__}: {exc}")
        self._episode = {}
        super().close()
        if errors:
            raise RuntimeError("close() could not release every component: " + "; ".join(errors))

    @property
    def canvas(self) -> np.ndarray | None:
        """The current image (HxWx3 uint8) or None before the first successful call."""
        out = self._episode.get("output") if self._episode else None
        return None if out is None else out.image

    @property
    def prompt_spec(self) -> Spec | None:
        """The prompt spec of the current episode (what the agent works from)."""
        return self._episode.get("spec") if self._episode else None

    @property
    def trace(self) -> list[dict[str, Any]]:
        """Per-step records of the current episode (expert, command, feedback, image)."""
        return list(self._episode.get("trace", [])) if self._episode else []

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """In ``rgb_array`` mode: the canvas (and a side panel if ``render_panel``), HxWx3 uint8."""
        if self.render_mode is None:
            gym.logger.warn('render() called with render_mode=None; pass render_mode="rgb_array" to gym.make.')
            return None
        ep = self._episode
        return render_frame(
            self.canvas, self.canvas_size,
            panel=self.render_panel,
            prompt=ep["spec"].prompt if ep else "",
            command=ep.get("last_command", "") if ep else "",
            expert=ep.get("last_expert", "") if ep else "",
            feedback=ep.get("feedback") if ep else None,
            spec=ep.get("spec") if ep else None,
        )


class ImagePoserDiffusersEnv(ImagePoserEnv):
    """The same MDP with real models: diffusers experts from a registry file and a VLM or CLIP critic.

    Constructing it loads nothing (no torch import, no weights) until the first reset; the action space comes
    from the expert names in the registry file. Marked nondeterministic: GPU kernels need not be bitwise
    reproducible. See :class:`ImagePoserEnv` for the MDP; extra arguments:

    - ``registry``: path of a diffusers expert registry TOML (default: the shipped one).
    - ``experts``: names in that registry (default: every entry).
    - ``critic``: ``"clip:<path-or-id>"`` or ``"vlm:<path-or-id>"`` (required).
    - ``device`` / ``dtype`` / ``local_files_only``: passed to the experts and the critic (dtype None: each
      entry's recommended dtype on accelerators, float32 on CPU).
    - ``expert_kwargs`` / ``critic_kwargs``: extra arguments for ``load_diffusers_experts`` and the critic
      (e.g. ``{"memory_budget_bytes": 40 * 2**30, "cache_dir": "runs/cache", "steps": 4}``).
    - ``trust_remote_code``: must be True for a registry whose entries set ``load_kwargs.trust_remote_code``.
    - ``expert_timeout``: seconds per call before it fails (default None, no limit), see :class:`ImagePoserEnv`.

    Defaults: :data:`poser_env.config.DIFFUSERS`.
    - ``expert_backend="ray"`` (or a :class:`poser_env.remote.RayBackend`): the pipelines, their output cache
      (``cache_dir``) and the critic live in shared Ray hosts, one copy per replica (e.g.
      ``RayBackend(replicas=<GPUs>, num_gpus=1)`` with ``device="cuda"``), batched across envs.
    """

    def __init__(
        self,
        *,
        registry: str | None = None,
        experts: Sequence[str] | None = None,
        critic: str | Critic = DIFFUSERS.critic,
        device: str = "cpu",
        dtype: str | None = None,
        local_files_only: bool = False,
        expert_kwargs: Mapping[str, Any] | None = None,
        critic_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(device, str) or not device.strip():
            raise EnvConfigError(f"device={device!r} must be a torch device string such as 'cpu' or 'cuda:0'.")
        if dtype is not None and not isinstance(dtype, str):
            raise EnvConfigError(f"dtype={dtype!r} must be a dtype name such as 'float16', or None.")
        check_bool("local_files_only", local_files_only)
        for name, val in (("expert_kwargs", expert_kwargs), ("critic_kwargs", critic_kwargs)):
            if val is not None and not isinstance(val, Mapping):
                raise EnvConfigError(f"{name}={val!r} must be a mapping of keyword arguments, e.g. {{'steps': 4}}.")
        self.registry_path = registry
        self.device = device
        self.dtype = dtype
        self.local_files_only = bool(local_files_only)
        self.expert_kwargs = dict(expert_kwargs or {})
        self.critic_kwargs = dict(critic_kwargs or {})
        kwargs.setdefault("judge", DIFFUSERS.judge)
        kwargs.setdefault("canvas_size", DIFFUSERS.canvas_size)
        super().__init__(experts=experts, critic=critic, **kwargs)

    def _resolve_expert_names(self, experts: Sequence[str | Expert] | None) -> list[str]:
        reg = diffusers_registry(self.registry_path)
        known = reg.names()
        names = known if experts is None else super()._resolve_expert_names(experts)
        for n in names:
            if n not in known:
                close = difflib.get_close_matches(n, known, n=3)
                raise EnvConfigError(
                    f"experts entry {n!r} is not in the diffusers registry"
                    + (f"; did you mean {close}?" if close else f"; known: {known}.")
                )
        check_trust_remote_code({n: reg.entry(n).kwargs for n in names}, self.trust_remote_code,
                                self.registry_path or "the shipped diffusers registry")
        return names

    def _build_experts(self) -> list[Expert]:
        built = load_diffusers_experts(
            self.registry_path, self.expert_names, device=self.device, dtype=self.dtype,
            local_files_only=self.local_files_only, **self.expert_kwargs,
        )
        return build_experts(self.expert_names, list(built), canvas_size=self.canvas_size,
                             timeout=self.expert_timeout)

    def _build_critic(self) -> Critic:
        if isinstance(self._critic_arg, Critic):
            return self._critic_arg
        # dtype None: float32 on CPU, the critic's card dtype (bf16/fp16) on an accelerator
        kw = {"device": self.device, "dtype": self.dtype, "local_files_only": self.local_files_only,
              **self.critic_kwargs}
        return make_critic(self._critic_arg, **kw)

    def _build_decomposer(self) -> Any:
        d = self._decomposer_arg
        if isinstance(d, str) and d.strip().lower().startswith("llm:"):  # the LLM follows the env's device and dtype
            return make_decomposer(d, max_attempts=self.max_attempts, device=self.device, dtype=self.dtype,
                                   local_files_only=self.local_files_only)
        return super()._build_decomposer()

    def _setup(self) -> None:
        """As the base env, then count the critic, the judge and the decomposer against the experts' memory
        budget (:meth:`experts.diffusers.ResidencyManager.reserve`), so diffusion pipelines make room for them."""
        ready = self._components_ready
        super()._setup()
        if ready:
            return
        managers = {id(m): m for m in (getattr(e, "manager", None) for e in self.experts) if m is not None}
        for m in managers.values():
            for name, comp in (("critic", self.critic), ("judge", self.judge), ("decomposer", self.decomposer)):
                if callable(getattr(comp, "device_bytes", None)):
                    m.reserve(name, comp)


def unwrap(env: gym.Env[Any, Any]) -> ImagePoserEnv:
    """The :class:`ImagePoserEnv` under ``env``'s wrappers (``env.unwrapped``, typed), for its public API:
    ``state``, ``action_masks()``, ``expert_names``, ``experts``, ``prepare()``.

    Raises:
        TypeError: ``env`` is not an image-poser env.
    """
    u = env.unwrapped
    if not isinstance(u, ImagePoserEnv):
        raise TypeError(
            f"env={env!r} is not an image-poser env (its unwrapped env is a {type(u).__name__}); make one with "
            "gym.make('poser_env/ImagePoser-v0')."
        )
    return u
