"""Commands: the unit of work an expert executes, as text plus the assertions it serves.

A command's text is ``"<op>: <instruction>"``, e.g. ``"generate: two red clocks left of a blue dog"``,
``"add: a blue dog right of the clock"``, ``"recolor: make the second clock blue"``,
``"retexture: make the clocks striped"``, ``"resize: make the dog large"``,
``"move: put the dog right of the clock"``, ``"remove: the cat"``,
``"background: change the background to a wooden table"``, ``"restyle: make it a watercolor"``,
``"refine: improve the details"``. Experts read only the text (through :func:`parse_command`), so a
user or an LLM can write commands by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from poser_env.core.spec import Spec

__all__ = ["Command", "CommandError", "ParsedCommand", "split_op"]

#: Operations a command can ask for (the text before the colon of a command, see poser_env.core.commands).
OPS: tuple[str, ...] = (
    "generate", "add", "remove", "recolor", "retexture", "resize", "move", "background", "restyle", "refine",
)


class CommandError(ValueError):
    """A command text that cannot be executed; the message names the fix."""


@dataclass(frozen=True)
class Command:
    """One step of a plan.

    Attributes:
        op: One of :data:`OPS`.
        text: The full command text ``"<op>: <instruction>"``.
        assertion_ids: Ids of the prompt-spec assertions this command serves.
        attempts: How many times an expert has already executed it (0..K).
        target: Index of the prompt-spec entity it acts on, or None.
    """

    op: str
    text: str
    assertion_ids: tuple[str, ...] = ()
    attempts: int = 0
    target: int | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise CommandError(f"Command op={self.op!r} must be one of {OPS}.")

    def tried(self) -> Command:
        """The same command with one more attempt counted."""
        return replace(self, attempts=self.attempts + 1)


@dataclass(frozen=True)
class ParsedCommand:
    """What an expert understands of a command text.

    Attributes:
        op: The operation.
        spec: For ``generate``/``add``: the entities (relations, background, style) to draw. For other
            ops: a spec holding the target group (noun, and the attribute asked for) - may be empty.
        noun: Target noun of an edit (singular), or None.
        index: 0-based ordinal of the targeted object among those of ``noun`` ("the second clock" -> 1),
            None for all of them.
        value: The new colour, pattern, size, background or style of an edit, or None.
        relation: For ``move``/``add``: the relation to place the target at, or None.
        reference: The reference noun of ``relation``, or None.
        count: For ``remove``: how many to remove (None = all).
    """

    op: str
    spec: Spec
    noun: str | None = None
    index: int | None = None
    value: str | None = None
    relation: str | None = None
    reference: str | None = None
    count: int | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def split_op(text: str) -> tuple[str, str]:
    """Split ``"op: instruction"`` into its parts; a text with no known op prefix is a ``generate``."""
    if not isinstance(text, str):
        raise CommandError(f"command text={text!r} must be a string such as 'add: a red cup'.")
    head, sep, rest = text.partition(":")
    op = head.strip().lower()
    if sep and op in OPS:
        return op, rest.strip()
    return "generate", text.strip()
