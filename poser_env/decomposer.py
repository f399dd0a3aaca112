"""Decomposers: prompt -> spec -> plan, revised from feedback.

A decomposer is anything with ``parse``, ``plan`` and ``revise`` (the :class:`Decomposer` protocol).
:class:`RuleDecomposer` (the default, dependency-free) joins :func:`poser_env.parser.parse` and
:class:`poser_env.planner.Planner`; :func:`make_decomposer` builds one by name (``"rules"``, or
``"llm:<path>"`` for :class:`poser_env.llm.LLMDecomposer`, imported only then).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from critic.feedback import Feedback
from poser_env.commands import Command
from poser_env.parser import parse
from poser_env.planner import Plan, Planner
from poser_env.spec import Spec

__all__ = ["DECOMPOSER_NAMES", "Decomposer", "RuleDecomposer", "make_decomposer"]

#: Names :func:`make_decomposer` accepts (``"llm:<path>"`` takes a model folder or hub id after the colon).
DECOMPOSER_NAMES: tuple[str, ...] = ("rules", "llm:<path>")


@runtime_checkable
class Decomposer(Protocol):
    """What the environment needs from a decomposer."""

    def parse(self, prompt: str) -> Spec:
        """The spec (checklist of assertions) of ``prompt``."""
        ...

    def plan(self, spec: Spec) -> Plan:
        """The initial plan for ``spec``."""
        ...

    def revise(self, plan: Plan, feedback: Feedback, *, executed: bool = True) -> Plan:
        """``plan`` revised from the critic's ``feedback`` on the latest image."""
        ...


class RuleDecomposer:
    """Rule-based decomposer: :func:`poser_env.parser.parse` + :class:`poser_env.planner.Planner`.

    Args:
        max_attempts: K, executions of one command before it is dropped (>= 1, default 3).
        open_vocab: Keep attributes and relations outside SceneSim's vocabulary as the open spec (for real
            models and VLM critics; default False: they are listed in ``spec.unexpressed``).
        **planner_kwargs: Passed to :class:`~poser_env.planner.Planner` (``core_entities``, ``refine``).

    Example::

        d = RuleDecomposer()
        spec = d.parse("two red clocks left of a blue dog")
        plan = d.plan(spec)
        plan.current.text  # 'generate: two red clocks left of a blue dog'
    """

    name = "rules"

    def __init__(self, max_attempts: int = 3, *, open_vocab: bool = False, **planner_kwargs: Any) -> None:
        self.planner = Planner(max_attempts, **planner_kwargs)
        self.open_vocab = bool(open_vocab)

    def __repr__(self) -> str:
        return f"RuleDecomposer({self.planner!r})"

    def parse(self, prompt: str) -> Spec:
        """See :func:`poser_env.parser.parse` (raises :class:`poser_env.parser.ParseError`)."""
        return parse(prompt, open_vocab=self.open_vocab)

    def plan(self, spec: Spec) -> Plan:
        """See :meth:`poser_env.planner.Planner.plan`."""
        return self.planner.plan(spec)

    def revise(self, plan: Plan, feedback: Feedback, *, executed: bool = True) -> Plan:
        """See :meth:`poser_env.planner.Planner.revise`."""
        return self.planner.revise(plan, feedback, executed=executed)

    def current(self, plan: Plan) -> Command | None:
        """The command to run now, or None when the plan is finished."""
        return self.planner.current(plan)


def make_decomposer(name: str = "rules", **kwargs: Any) -> Any:
    """A decomposer by name.

    Args:
        name: ``"rules"`` (:class:`RuleDecomposer`) or ``"llm:<path>"`` (:class:`poser_env.llm.LLMDecomposer`
            on the model at ``<path>``, a local folder or hub id; it falls back to the rules).
        **kwargs: Passed to the decomposer's constructor (e.g. ``max_attempts=3``). For ``"llm:..."`` the
            planner's arguments (``max_attempts``, ``core_entities``, ``refine``) go to the
            :class:`RuleDecomposer` it plans and falls back with; the rest go to the LLM decomposer.

    Raises:
        ValueError: an unknown name, or ``"llm:"`` without a path.
    """
    if not isinstance(name, str):
        raise ValueError(f"decomposer name={name!r} must be a string, one of {list(DECOMPOSER_NAMES)}.")
    key = name.strip()
    if key.lower() in ("rules", "rule", "rule-based"):
        return RuleDecomposer(**kwargs)
    if key.lower().startswith("llm:"):
        path = key[4:].strip()
        if not path:
            raise ValueError(
                f"decomposer name={name!r} has no model path after 'llm:'; write e.g. 'llm:/models/qwen2.5-0.5b'."
            )
        from poser_env.llm import LLMDecomposer  # lazy: needs transformers only when used

        rule_kwargs: dict[str, Any] = {
            k: kwargs.pop(k) for k in ("max_attempts", "core_entities", "refine") if k in kwargs
        }
        if "open_vocab" in kwargs:
            rule_kwargs["open_vocab"] = kwargs["open_vocab"]
        kwargs.setdefault("rules", RuleDecomposer(**rule_kwargs))
        return LLMDecomposer(path, **kwargs)
    raise ValueError(
        f"decomposer name={name!r} is unknown; use one of {list(DECOMPOSER_NAMES)} (did you mean 'rules'?)."
    )
