"""The image-poser MDP as a Gymnasium environment."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from critic.feedback import Critic, Feedback, Verdict
from experts.base import OPS, Expert, ExpertError, ExpertOutput
from poser_env.commands import Command
from poser_env.encoders import TextEncoder, make_text_encoder
from poser_env.remote import RayBackend, connect_components
from poser_env.spec import ASSERTION_KINDS, Spec, SpecError

__all__ = ["EnvConfigError", "ImagePoserDiffusersEnv", "ImagePoserEnv", "RewardWeights"]

_N_KINDS = len(ASSERTION_KINDS)
_N_OPS = len(OPS)
#: Size of the "feedback" observation: scores (3), satisfied + present per kind (2 x 9), command status (3),
#: op one-hot (10), canvas empty (1).
_FEEDBACK_DIM = 3 + 2 * _N_KINDS + 3 + _N_OPS + 1


class EnvConfigError(ValueError):
    """A bad constructor argument or reset option; the message names it, the value and the fix."""


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
        for name in ("alignment", "fidelity", "aesthetics", "success"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise EnvConfigError(f"reward weight {name}={v!r} must be a finite number >= 0.")
        if self.alignment + self.fidelity + self.aesthetics + self.success <= 0:
            raise EnvConfigError("reward weights must not all be 0; set alignment=1.0 for the default.")

    def potential(self, fb: Feedback | None) -> float:
        if fb is None:
            return 0.0
        total = self.alignment + self.fidelity + self.aesthetics + self.success
        return float(
            (self.alignment * fb.alignment + self.fidelity * fb.fidelity + self.aesthetics * fb.aesthetics
             + self.success * float(fb.all_hold)) / total
        )


def _blank_feedback(spec: Spec, reason: str) -> Feedback:
    verdicts = tuple(Verdict(a.id, "unknown", 0.5, reason, a.kind) for a in spec.assertions())
    return Feedback(verdicts=verdicts, alignment=0.0, fidelity=0.0, aesthetics=0.0, text=reason)


class _SharedList(list):  # type: ignore[type-arg]
    """An immutable-by-convention list shared (not copied) by env copies: prompt pools are read-only."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedList:
        return self


#: Generated prompt pools per (source, split, n): generating thousands of long prompts takes seconds.
_POOLS: dict[tuple[Any, ...], _SharedList] = {}


class _SceneStateJudge:
    """The SceneSim judge applied to an expert output's ground-truth scene (picklable)."""

    def __init__(self) -> None:
        from critic.judge import SceneJudge

        self.judge = SceneJudge()

    def __call__(self, out: ExpertOutput, spec: Spec) -> Feedback:
        return self.judge(out.state, spec)


class _ImageJudge:
    """A judge that only sees pixels: GenEval-style rules over an open-vocabulary detector (real-model world)."""

    def __init__(self, model: str, *, local_files_only: bool, device: str) -> None:
        from critic.detector_judge import DetectorJudge

        self.judge = DetectorJudge(model, local_files_only=local_files_only, device=device)

    def __call__(self, out: ExpertOutput, spec: Spec) -> Feedback:
        return self.judge(out.image, spec)


class ImagePoserEnv(gym.Env[dict[str, np.ndarray], int]):
    """Learn to orchestrate image experts for compositional prompts.

    ## Description
    A prompt is parsed into a spec (a checklist of atomic assertions: objects, counts, colours, patterns,
    sizes, relations, exclusions, background, style) and planned into commands ("generate: ...",
    "recolor: make the second clock blue", ...). At each step the agent picks which expert executes the
    current command. A pixel-only critic judges the new image against the spec and returns structured
    feedback; the plan is revised from it (satisfied commands are popped, failing ones rewritten, a command
    is dropped after ``max_attempts`` failed attempts). The default world is SceneSim: simulated experts with
    distinct strengths and failure modes, offline and deterministic (about a millisecond a step). Results in
    SceneSim are results about the simulator, not about real diffusion models.

    ## Action Space
    ``Discrete(n_experts + 1)``. Action ``i < n_experts`` runs expert ``i`` (order of ``env.unwrapped.experts``,
    names in ``env.unwrapped.expert_names``); action ``n_experts`` is STOP. What an expert runs:

    - a text-to-image expert runs the current command if it is a ``generate`` command, else it regenerates the
      whole prompt from scratch (``"generate: <prompt>"``); the plan is then revised from the new feedback;
    - an image-to-image expert runs the current command if it supports the command's op; with no command left,
      an expert that supports ``refine`` runs ``"refine: improve the details"``.

    ``env.unwrapped.action_masks()`` (used by sb3-contrib's MaskablePPO) is False for actions that make no sense
    now: an image-to-image expert on an empty canvas or for an op it does not support. STOP is always allowed.
    A masked action taken anyway is a no-op with reward ``-invalid_action_penalty`` and
    ``info["invalid_action"] = True``. An action outside the space raises ``ValueError``.

    ## Observation Space
    ``Dict`` (SB3's ``MultiInputPolicy`` takes it as is), all ``float32`` unless noted:

    - ``"prompt"``: ``Box(-1, 1, (D,))`` embedding of the whole prompt (D = text encoder size, 384).
    - ``"command"``: ``Box(-1, 1, (D,))`` embedding of the current command ("done" when none is left).
    - ``"feedback"`` (unless ``feedback_in_obs=False``): ``Box(0, 1, (35,))``: alignment, fidelity,
      aesthetics; the satisfied fraction for each of the 9 assertion kinds and a 9-entry mask of which kinds the
      spec has; current-command status (a command is pending, fraction of its assertions that hold, attempts /
      max_attempts); one-hot of the command's op (10 ops); canvas empty.
    - ``"progress"``: ``Box(0, 1, (5,))``: step / max_steps, commands done, pending and dropped (each over the
      number of commands planned so far), failed attempts on the current command / max_attempts.
    - ``"history"``: ``Box(0, 1, (2 * n_experts + 2,))``: calls per expert / max_steps, one-hot of the last
      action (n_experts + 1 entries, STOP last) plus one entry set before the first action.
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
    been taken: the env owns its step budget (it is registered without a ``TimeLimit`` wrapper), so
    ``max_steps`` is the one place to change it.

    ## Failures
    An expert that raises, or returns a blank (constant) image, costs its call, leaves the canvas and plan as
    they were (nothing already produced is lost), counts a failed attempt on the current command, and sets
    ``info["error"]``. A critic that raises or returns invalid scores leaves the new image on the canvas, keeps
    the previous feedback for the reward (no shaping change), skips the plan revision, and sets
    ``info["critic_error"]``. The episode continues in both cases.

    ## Info
    ``prompt``, ``command`` (text run), ``expert``, ``cost``, ``feedback`` (the critic's text), ``verdicts``
    (assertion id -> "yes"/"no"/"unknown"), ``alignment``, ``plan`` (pending command texts), ``reward_terms``,
    ``error`` / ``critic_error`` when something failed, ``invalid_action``, ``judge`` (ground truth, SceneSim
    only, for evaluation: ``{"pass", "alignment", "verdicts"}``) and, at the end of an episode, ``is_success``
    (the judge's pass when a judge exists, else the critic's).

    ## Arguments
    - ``prompt_source``: ``"geneval"``, ``"long"``, ``"mixed"``, a path to a GenEval-format JSONL file, or a
      sequence of prompt strings / Specs.
    - ``split``: ``"train"`` or ``"test"`` (generated prompt sources only).
    - ``n_prompts``: how many generated prompts the split holds (default 2000 train / 500 test).
    - ``experts``: expert names from the registry or Expert objects (default: every SceneSim expert).
    - ``critic``: ``"scene"``, ``"vlm:<path>"``, ``"clip:<path>"`` or a Critic.
    - ``judge``: ``"scene"`` (ground truth, SceneSim), ``"detector:<owlv2 path-or-id>"`` (GenEval-style rules
      over an open-vocabulary detector, for real images), None, or a callable ``(output, spec) -> Feedback``.
    - ``decomposer``: ``"rules"``, ``"llm:<path>"`` or an object with parse/plan/revise.
    - ``text_encoder``: ``"auto"`` (MiniLM if installed, else hashing), ``"minilm"``, ``"hashing"`` or an encoder.
    - ``max_steps`` (1..256, default 16), ``max_attempts`` (1..10, default 3).
    - ``cost_weight`` (>= 0, default 0.02), ``reward_weights`` (:class:`RewardWeights` or a mapping),
      ``invalid_action_penalty`` (>= 0, default 0.1).
    - ``feedback_in_obs`` (default True), ``thumbnail`` (default False), ``thumbnail_size`` (16..128, default 64).
    - ``canvas_size``: SceneSim canvas side in pixels (64..512, default 128).
    - ``render_mode``: None or ``"rgb_array"``; ``render_panel`` adds a side panel with the command, expert and
      a tick or cross per assertion.
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
    - v0: initial release (SceneSim model cards version 1).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 2}  # type: ignore[misc]

    def __init__(
        self,
        *,
        prompt_source: str | Sequence[str | Spec] = "geneval",
        split: str = "train",
        n_prompts: int | None = None,
        experts: Sequence[str | Expert] | None = None,
        critic: str | Critic = "scene",
        judge: str | Callable[[ExpertOutput, Spec], Feedback] | None = "scene",
        decomposer: str | Any = "rules",
        text_encoder: str | TextEncoder = "auto",
        max_steps: int = 16,
        max_attempts: int = 3,
        cost_weight: float = 0.02,
        reward_weights: RewardWeights | Mapping[str, float] | None = None,
        invalid_action_penalty: float = 0.1,
        feedback_in_obs: bool = True,
        thumbnail: bool = False,
        thumbnail_size: int = 64,
        canvas_size: int = 128,
        render_mode: str | None = None,
        render_panel: bool = True,
        expert_backend: str | RayBackend | Mapping[str, Any] = "local",
    ) -> None:
        super().__init__()
        try:
            self._backend = None if expert_backend == "local" else RayBackend.of(expert_backend)
        except ValueError as exc:
            raise EnvConfigError(str(exc)) from exc
        self.expert_backend = "local" if self._backend is None else "ray"
        self._check_args(
            split=split, max_steps=max_steps, max_attempts=max_attempts, cost_weight=cost_weight,
            invalid_action_penalty=invalid_action_penalty, thumbnail_size=thumbnail_size, canvas_size=canvas_size,
            render_mode=render_mode,
        )
        self.prompt_source = prompt_source
        self.split = split
        self.n_prompts = n_prompts
        self.max_steps = int(max_steps)
        self.max_attempts = int(max_attempts)
        self.cost_weight = float(cost_weight)
        self.invalid_action_penalty = float(invalid_action_penalty)
        if reward_weights is None:
            reward_weights = RewardWeights()
        elif isinstance(reward_weights, Mapping):
            reward_weights = RewardWeights(**reward_weights)
        elif not isinstance(reward_weights, RewardWeights):
            raise EnvConfigError(
                f"reward_weights={reward_weights!r} must be a RewardWeights or a mapping like {{'alignment': 1.0}}."
            )
        self.reward_weights = reward_weights
        self.feedback_in_obs = bool(feedback_in_obs)
        self.thumbnail = bool(thumbnail)
        self.thumbnail_size = int(thumbnail_size)
        self.canvas_size = int(canvas_size)
        self.render_mode = render_mode
        self.render_panel = bool(render_panel)

        self._expert_arg = experts
        self._critic_arg = critic
        self._judge_arg = judge
        self._decomposer_arg = decomposer
        self.encoder = make_text_encoder(text_encoder)
        self._components_ready = False
        self.expert_names: list[str] = self._resolve_expert_names(experts)
        self.n_experts = len(self.expert_names)
        self.action_space = spaces.Discrete(self.n_experts + 1)  # type: ignore[assignment]
        self.observation_space = self._make_observation_space()  # type: ignore[assignment]
        self._prompts: list[Spec | str] | None = None
        self._episode: dict[str, Any] = {}
        #: Seconds spent in the expert and the critic during the last step (kept out of ``info`` so that infos
        #: stay deterministic).
        self.last_timings: dict[str, float] = {"expert": 0.0, "critic": 0.0}

    # ================================================================== construction helpers
    @staticmethod
    def _check_args(
        *, split: str, max_steps: int, max_attempts: int, cost_weight: float, invalid_action_penalty: float,
        thumbnail_size: int, canvas_size: int, render_mode: str | None,
    ) -> None:
        if split not in ("train", "test"):
            raise EnvConfigError(f"split={split!r} must be 'train' or 'test'.")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 1 <= max_steps <= 256:
            raise EnvConfigError(f"max_steps={max_steps!r} must be an int from 1 to 256.")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 10:
            raise EnvConfigError(f"max_attempts={max_attempts!r} must be an int from 1 to 10.")
        for name, v in (("cost_weight", cost_weight), ("invalid_action_penalty", invalid_action_penalty)):
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise EnvConfigError(f"{name}={v!r} must be a finite number >= 0.")
        if not isinstance(thumbnail_size, int) or not 16 <= thumbnail_size <= 128:
            raise EnvConfigError(f"thumbnail_size={thumbnail_size!r} must be an int from 16 to 128 pixels.")
        if not isinstance(canvas_size, int) or not 64 <= canvas_size <= 512:
            raise EnvConfigError(f"canvas_size={canvas_size!r} must be an int from 64 to 512 pixels.")
        if render_mode not in (None, "rgb_array"):
            raise EnvConfigError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'.")

    def _resolve_expert_names(self, experts: Sequence[str | Expert] | None) -> list[str]:
        if experts is None:
            from experts.registry import default_expert_names

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
        return names

    def _build_experts(self) -> list[Expert]:
        from experts.registry import make_expert

        out: list[Expert] = []
        given = self._expert_arg or []
        for i, name in enumerate(self.expert_names):
            obj = given[i] if i < len(given) else None
            out.append(obj if isinstance(obj, Expert) else make_expert(name, canvas_size=self.canvas_size))
        return out

    def _build_critic(self) -> Critic:
        if isinstance(self._critic_arg, Critic):
            return self._critic_arg
        from critic.factory import make_critic

        return make_critic(self._critic_arg)

    def _build_judge(self) -> Callable[[ExpertOutput, Spec], Feedback] | None:
        j = self._judge_arg
        if j is None:
            return None
        if j == "scene":
            return _SceneStateJudge()
        if isinstance(j, str) and j.startswith("detector:"):
            return _ImageJudge(j.split(":", 1)[1], local_files_only=getattr(self, "local_files_only", True),
                               device=getattr(self, "device", "cpu"))
        if callable(j):
            return j
        raise EnvConfigError(
            f"judge={j!r} must be 'scene', 'detector:<owlv2 path-or-id>', None or a callable (output, spec) -> Feedback."
        )

    def _build_decomposer(self) -> Any:
        d = self._decomposer_arg
        if isinstance(d, str):
            from poser_env.decomposer import make_decomposer

            return make_decomposer(d, max_attempts=self.max_attempts)
        for attr in ("parse", "plan", "revise"):
            if not callable(getattr(d, attr, None)):
                raise EnvConfigError(f"decomposer={d!r} has no {attr}(); pass 'rules' or an object with parse/plan/revise.")
        return d

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
        d = self.encoder.dim
        n = self.n_experts
        obs: dict[str, spaces.Space[Any]] = {
            "prompt": spaces.Box(-1.0, 1.0, (d,), np.float32),
            "command": spaces.Box(-1.0, 1.0, (d,), np.float32),
        }
        if self.feedback_in_obs:
            obs["feedback"] = spaces.Box(0.0, 1.0, (_FEEDBACK_DIM,), np.float32)
        obs["progress"] = spaces.Box(0.0, 1.0, (5,), np.float32)
        obs["history"] = spaces.Box(0.0, 1.0, (2 * n + 2,), np.float32)
        if self.thumbnail:
            s = self.thumbnail_size
            obs["thumbnail"] = spaces.Box(0, 255, (s, s, 3), np.uint8)
        return spaces.Dict(obs)

    # ================================================================== prompts
    def _prompt_pool(self) -> list[Spec | str]:
        if self._prompts is not None:
            return self._prompts
        key = (self.prompt_source, self.split, self.n_prompts) if isinstance(self.prompt_source, str) else None
        if key is not None and key in _POOLS:
            self._prompts = _POOLS[key]
            return self._prompts
        src = self.prompt_source
        pool: list[Spec | str]
        if isinstance(src, str) and src in ("geneval", "long", "mixed"):
            from poser_env import prompts

            n = self.n_prompts or (2000 if self.split == "train" else 500)
            if src == "geneval":
                pool = [*prompts.geneval_style(self.split, n)]
            elif src == "long":
                pool = [*prompts.long_prompts(self.split, n)]
            else:
                pool = [*prompts.geneval_style(self.split, n // 2), *prompts.long_prompts(self.split, n - n // 2)]
        elif isinstance(src, str):
            from pathlib import Path

            from poser_env.spec import read_geneval_jsonl

            if not Path(src).is_file():
                raise EnvConfigError(
                    f"prompt_source={src!r} is neither 'geneval', 'long', 'mixed' nor an existing GenEval-format "
                    "JSONL file; pass one of those."
                )
            pool = [*read_geneval_jsonl(src)]
        elif isinstance(src, Sequence) and src:
            pool = []
            for p in src:
                if not isinstance(p, (str, Spec)):
                    raise EnvConfigError(f"prompt_source entry {p!r} must be a prompt string or a Spec.")
                pool.append(p)
        else:
            raise EnvConfigError(
                f"prompt_source={src!r} must be 'geneval', 'long', 'mixed', a JSONL path or a non-empty list of prompts."
            )
        if not pool:
            raise EnvConfigError(f"prompt_source={src!r} yielded no prompts.")
        self._prompts = _SharedList(pool)
        if key is not None:
            _POOLS[key] = self._prompts
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
            "cost": 0.0,
            "trace": [],
            "last_command": "",
            "last_expert": "",
        }
        info = {"prompt": spec.prompt, "plan": plan.texts, "assertions": [a.text for a in spec.assertions()]}
        return self._obs(), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        if not self._episode:
            raise gym.error.ResetNeeded("Call reset() before step().")
        a = self._check_action(action)
        ep = self._episode
        ep["step"] += 1
        self.last_timings = {"expert": 0.0, "critic": 0.0}
        info: dict[str, Any] = {"prompt": ep["spec"].prompt, "invalid_action": False}
        terms = {"potential_delta": 0.0, "cost": 0.0, "penalty": 0.0}
        terminated = False
        stop = a == self.n_experts
        mask = self.action_masks()
        if stop:
            info["expert"] = "STOP"
            info["command"] = ""
            terminated = True
        elif not mask[a]:
            info["invalid_action"] = True
            info["expert"] = self.expert_names[a]
            info["command"] = ""
            terms["penalty"] = -self.invalid_action_penalty
        else:
            self._run_expert(a, info, terms)
        if stop or not info["invalid_action"]:
            ep["last_action"] = a
        fb: Feedback | None = ep["feedback"]
        if fb is not None and fb.all_hold:
            terminated = True
        truncated = not terminated and ep["step"] >= self.max_steps
        reward = float(sum(terms.values()))
        info["reward_terms"] = terms
        self._fill_info(info)
        if terminated or truncated:
            judge = ep["judge"]
            info["is_success"] = bool(judge["pass"]) if judge is not None else bool(fb is not None and fb.all_hold)
            info["episode_cost"] = ep["cost"]
            info["episode_calls"] = int(ep["calls"].sum())
        return self._obs(), reward, terminated, truncated, info

    # ================================================================== mechanics
    def _check_action(self, action: Any) -> int:
        try:
            arr = np.asarray(action)
            if arr.size != 1 or (arr.dtype.kind not in "iub" and not float(arr.item()).is_integer()):
                raise ValueError("not an integer")
            a = int(arr.item())
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"action={action!r} is not an integer; pass an int in [0, {self.n_experts}] "
                f"(0..{self.n_experts - 1} run an expert, {self.n_experts} is STOP)."
            ) from exc
        if not self.action_space.contains(a) or np.asarray(action).size != 1:
            raise ValueError(
                f"action={action!r} is outside Discrete({self.n_experts + 1}); pass an int in [0, {self.n_experts}] "
                f"(0..{self.n_experts - 1} run an expert, {self.n_experts} is STOP)."
            )
        return a

    def _current(self) -> Command | None:
        cur: Command | None = self._episode["plan"].current
        return cur

    def _command_for(self, expert: Expert) -> str | None:
        """The command text expert would run now, or None when it has nothing sensible to do."""
        ep = self._episode
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
        """Boolean array of shape (n_experts + 1,): True where the action makes sense now (STOP always)."""
        if not self._episode:
            mask = np.ones(self.n_experts + 1, dtype=bool)
            return mask
        self._setup()
        mask = np.array([self._command_for(e) is not None for e in self.experts] + [True], dtype=bool)
        return mask

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
            img = np.asarray(out.image)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ExpertError(f"returned an image of shape {img.shape} dtype {img.dtype}, expected HxWx3 uint8")
            if float(img.std()) < 0.5:
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
    @staticmethod
    def _n_total(plan: Any) -> int:
        return len(plan.pending) + len(plan.done) + len(plan.dropped)

    def _obs(self) -> dict[str, np.ndarray]:
        ep = self._episode
        spec: Spec = ep["spec"]
        cur = self._current()
        emb = self.encoder([spec.prompt or "; ".join(e.phrase() for e in spec.entities),
                            cur.text if cur is not None else "done"])
        obs: dict[str, np.ndarray] = {"prompt": emb[0], "command": emb[1]}
        fb: Feedback | None = ep["feedback"]
        if self.feedback_in_obs:
            v = np.zeros(_FEEDBACK_DIM, dtype=np.float32)
            kinds_present = {a.kind for a in spec.assertions()}
            if fb is not None:
                v[0:3] = (fb.alignment, fb.fidelity, fb.aesthetics)
                by_kind = fb.satisfied_by_kind()
                for i, k in enumerate(ASSERTION_KINDS):
                    v[3 + i] = by_kind.get(k, 0.0)
            for i, k in enumerate(ASSERTION_KINDS):
                v[3 + _N_KINDS + i] = float(k in kinds_present)
            o = 3 + 2 * _N_KINDS
            if cur is not None:
                v[o] = 1.0
                if fb is not None and cur.assertion_ids:
                    held = [fb.verdict(i).ok for i in cur.assertion_ids if any(x.assertion_id == i for x in fb.verdicts)]
                    v[o + 1] = float(np.mean(held)) if held else 0.0
                v[o + 2] = min(1.0, cur.attempts / self.max_attempts)
                v[o + 3 + OPS.index(cur.op)] = 1.0
            v[o + 3 + _N_OPS] = float(ep["output"] is None)
            obs["feedback"] = v
        plan = ep["plan"]
        total = max(1, self._n_total(plan))
        obs["progress"] = np.array(
            [
                min(1.0, ep["step"] / self.max_steps),
                len(plan.done) / total,
                len(plan.pending) / total,
                len(plan.dropped) / total,
                min(1.0, (cur.attempts if cur is not None else 0) / self.max_attempts),
            ],
            dtype=np.float32,
        )
        hist = np.zeros(2 * self.n_experts + 2, dtype=np.float32)
        hist[: self.n_experts] = np.minimum(1.0, ep["calls"] / self.max_steps)
        hist[self.n_experts + 1 + ep["last_action"]] = 1.0  # -1 (no action yet) -> index n_experts
        obs["history"] = hist
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
        from poser_env.rendering import render_frame

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
    - ``expert_backend="ray"`` (or a :class:`poser_env.remote.RayBackend`): the pipelines, their output cache
      (``cache_dir``) and the critic live in shared Ray hosts, one copy per replica (e.g.
      ``RayBackend(replicas=<GPUs>, num_gpus=1)`` with ``device="cuda"``), batched across envs.
    """

    def __init__(
        self,
        *,
        registry: str | None = None,
        experts: Sequence[str] | None = None,
        critic: str | Critic = "clip:openai/clip-vit-base-patch32",
        device: str = "cpu",
        dtype: str | None = None,
        local_files_only: bool = False,
        expert_kwargs: Mapping[str, Any] | None = None,
        critic_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.registry_path = registry
        self.device = device
        self.dtype = dtype
        self.local_files_only = local_files_only
        self.expert_kwargs = dict(expert_kwargs or {})
        self.critic_kwargs = dict(critic_kwargs or {})
        kwargs.setdefault("judge", None)
        kwargs.setdefault("canvas_size", 512)
        super().__init__(experts=experts, critic=critic, **kwargs)

    def _resolve_expert_names(self, experts: Sequence[str | Expert] | None) -> list[str]:
        from experts.diffusers import diffusers_registry

        known = diffusers_registry(self.registry_path).names()
        if experts is None:
            return known
        names = super()._resolve_expert_names(experts)
        for n in names:
            if n not in known:
                import difflib

                close = difflib.get_close_matches(n, known, n=3)
                raise EnvConfigError(
                    f"experts entry {n!r} is not in the diffusers registry"
                    + (f"; did you mean {close}?" if close else f"; known: {known}.")
                )
        return names

    def _build_experts(self) -> list[Expert]:
        from experts.diffusers import load_diffusers_experts

        return list(
            load_diffusers_experts(
                self.registry_path, self.expert_names, device=self.device, dtype=self.dtype,
                local_files_only=self.local_files_only, **self.expert_kwargs,
            )
        )

    def _build_critic(self) -> Critic:
        if isinstance(self._critic_arg, Critic):
            return self._critic_arg
        from critic.factory import make_critic

        kw = {"device": self.device, "dtype": self.dtype or "float32", "local_files_only": self.local_files_only,
              **self.critic_kwargs}
        return make_critic(self._critic_arg, **kw)
