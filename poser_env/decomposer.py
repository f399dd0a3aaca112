"""Decomposers: prompt -> spec -> plan, revised from feedback.

A decomposer is anything with ``parse``, ``plan`` and ``revise`` (the :class:`Decomposer` protocol).
:class:`RuleDecomposer` (the default, dependency-free) joins :func:`poser_env.core.parser.parse` and
:class:`poser_env.planner.Planner`. Decomposers are built by name through the registry
:data:`poser_env.components.DECOMPOSERS` (``"rules"``, or ``"llm:<path>"`` for :class:`poser_env.llm.LLMDecomposer`,
imported only then); :func:`make_decomposer` is a thin alias.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from poser_env.components import make_decomposer as _make
from poser_env.core.commands import Command
from poser_env.core.feedback import Feedback
from poser_env.core.parser import parse
from poser_env.core.spec import Spec
from poser_env.planner import Plan, Planner

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
    """Rule-based decomposer: :func:`poser_env.core.parser.parse` + :class:`poser_env.planner.Planner`.

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
        """See :func:`poser_env.core.parser.parse` (raises :class:`poser_env.core.parser.ParseError`).

        Specs of the last 4096 prompt texts are cached (parsing is deterministic and a spec immutable; an env
        resets to the prompts of its pool over and over).
        """
        if not isinstance(prompt, str):
            return parse(prompt, open_vocab=self.open_vocab)  # the parser's error names the bad type
        return _parse_cached(prompt, self.open_vocab)

    def plan(self, spec: Spec) -> Plan:
        """See :meth:`poser_env.planner.Planner.plan`."""
        return self.planner.plan(spec)

    def revise(self, plan: Plan, feedback: Feedback, *, executed: bool = True) -> Plan:
        """See :meth:`poser_env.planner.Planner.revise`."""
        return self.planner.revise(plan, feedback, executed=executed)

    def current(self, plan: Plan) -> Command | None:
        """The command to run now, or None when the plan is finished."""
        return self.planner.current(plan)


@lru_cache(maxsize=4096)
def _parse_cached(prompt: str, open_vocab: bool) -> Spec:
    return parse(prompt, open_vocab=open_vocab)


def make_decomposer(name: str = "rules", **kwargs: Any) -> Any:
    """A decomposer by name: a thin alias of :func:`poser_env.components.make_decomposer` (the registry
    :data:`poser_env.components.DECOMPOSERS`: ``"rules"``, ``"llm:<model>"``, plugins).

    Raises:
        poser_env.core.registry.RegistryError: (a ValueError) an unknown name, or ``"llm:"`` without a model.
    """
    return _make(name, **kwargs)
