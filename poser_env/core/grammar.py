"""Command grammar: command text ``"<op>: <instruction>"`` -> :class:`poser_env.core.commands.ParsedCommand`.

Command texts (see :mod:`poser_env.core.commands`) are read by :func:`parse_command_text`, with the noun-phrase
scanner of :mod:`poser_env.core.parser`. Ordinals ("the second clock") count objects of that noun **from left to
right** (by box centre x), 0-based in :attr:`poser_env.core.commands.ParsedCommand.index`; "the last clock" gives
index -1.
"""

from __future__ import annotations

import re

from poser_env.core.commands import CommandError, ParsedCommand, split_op
from poser_env.core.parser import (
    _COLOR_WORDS,
    _FRAMING_NOUNS,
    _NON_OBJECTS,
    _NP,
    _PATTERN_NOUNS,
    _PATTERN_WORDS,
    _PRONOUN_PLUR,
    _PRONOUN_SING,
    _SIZE_WORDS,
    _STOP,
    _TOKEN_RE,
    MAX_PROMPT_CHARS,
    ParseError,
    _normalise,
    _relation_at,
    _run,
    _rx,
    _Scanner,
    _short,
    parse,
)
from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, RELATIONS, SIZES, STYLES, Entity, Relation, Spec

__all__ = ["parse_command", "parse_command_text"]


_BG_WORDS: list[tuple[str, re.Pattern[str]]] = [
    ("wooden table", _rx(r"wooden table", r"wood table", r"wooden", r"table(?:top)?", r"wood")),
    ("night", _rx(r"night(?:time)?", r"starry sky", r"dark")),
    ("sky", _rx(r"sky", r"clouds?", r"air")),
    ("grass", _rx(r"grass", r"grassy", r"lawn", r"meadow", r"field")),
    ("sand", _rx(r"sand", r"sandy", r"beach", r"desert", r"dunes?")),
    ("plain", _rx(r"plain", r"blank", r"empty", r"simple", r"neutral", r"white")),
]
_STYLE_WORDS: list[tuple[str, re.Pattern[str]]] = [
    ("watercolor", _rx(r"watercolou?rs?")),
    ("pixel art", _rx(r"pixel[- ]?art", r"pixelated", r"pixels?", r"8-bit")),
    ("sketch", _rx(r"sketch(?:ed|y|es)?", r"pencil", r"charcoal", r"line drawing", r"drawing")),
    ("photo", _rx(r"photo(?:graph)?s?", r"photo[- ]?realistic", r"photographic", r"realistic", r"real")),
]
_COMMAND_EXAMPLES: dict[str, str] = {
    "generate": "generate: two red clocks left of a blue dog",
    "add": "add: a blue dog right of the clock",
    "remove": "remove: one clock",
    "recolor": "recolor: make the second clock blue",
    "retexture": "retexture: make the clocks striped",
    "resize": "resize: make the dog large",
    "move": "move: put the dog right of the clock",
    "background": "background: change the background to a wooden table",
    "restyle": "restyle: make it a watercolor",
    "refine": "refine: improve the details",
}


def _cmd_error(text: str, what: str, op: str) -> CommandError:
    return CommandError(f"command {_short(text)!r} {what}; write e.g. {_COMMAND_EXAMPLES[op]!r}.")


def _first_target(tokens: list[str]) -> _NP | None:
    """The first noun phrase of an edit instruction ("the second clock", "it", "them", "all cats")."""
    sc = _Scanner(tokens)
    i = 0
    while i < len(tokens):
        w = tokens[i]
        if w in _PRONOUN_SING or w in _PRONOUN_PLUR:
            return _NP(i, i + 1, "", None, False, True, w in _PRONOUN_PLUR, pronoun=True)
        np = sc.np_at(i, require_det=False, allow_bare=w not in _STOP)
        if np is not None and np.noun and np.noun not in _NON_OBJECTS and np.noun not in _FRAMING_NOUNS:
            return np
        i += 1
    return None


def _value_after(tokens: list[str], target: _NP | None, table: dict[str, str]) -> str | None:
    """The last attribute word of ``table`` outside the target noun phrase (the new value)."""
    found = None
    for k, w in enumerate(tokens):
        if target is not None and target.start <= k < target.end:
            continue
        if w in table:
            found = table[w]
    return found


def _edit_spec(noun: str | None, count: int | None, **attrs: str | None) -> Spec:
    if noun is None:
        return Spec(entities=())
    return Spec(entities=(Entity(noun, max(1, min(10, count or 1)), **attrs),))


def parse_command_text(text: str) -> ParsedCommand:
    """Parse a command text ``"<op>: <instruction>"`` (grammar in :mod:`poser_env.core.commands`).

    Ordinals count objects of the noun from left to right, 0-based ("the second clock" -> index 1,
    "the last clock" -> -1). A text without a known op prefix is a ``generate``.

    Raises:
        CommandError: not a string, empty, or the instruction lacks what its op needs (a target noun, a
            colour, a pattern, a size, a relation, a background or a style); the message shows an example.
    """
    if not isinstance(text, str):
        raise CommandError(f"command text={text!r} must be a string such as {_COMMAND_EXAMPLES['add']!r}.")
    try:
        return _parse_command_text(text)
    except ParseError as exc:  # e.g. "make the red grey car blue": two colours for one object
        raise _cmd_error(text, f"cannot be read ({exc})", split_op(text)[0]) from exc


def _parse_command_text(text: str) -> ParsedCommand:
    op, rest = split_op(text)
    if op != "refine" and not rest.strip():
        raise _cmd_error(text, f"has an empty instruction after {op!r}", op)
    if len(rest) > MAX_PROMPT_CHARS:
        raise _cmd_error(text, f"is longer than {MAX_PROMPT_CHARS} characters", op)
    if op == "generate":
        try:
            return ParsedCommand(op, parse(rest))
        except ParseError as exc:
            raise _cmd_error(text, f"describes nothing to draw ({exc})", op) from exc
    if op == "refine":
        return ParsedCommand(op, Spec(entities=(), prompt=rest))
    low = _normalise(rest)
    if op in ("background", "restyle"):
        table = _BG_WORDS if op == "background" else _STYLE_WORDS
        for name, rx in table:
            if rx.search(low):
                spec = Spec(entities=(), background=name if op == "background" else None,
                            style=name if op == "restyle" else None, prompt=rest)
                return ParsedCommand(op, spec, value=name)
        choices = BACKGROUNDS if op == "background" else STYLES
        kind = "background" if op == "background" else "style"
        raise _cmd_error(text, f"names no {kind} (one of {list(choices)})", op)
    if op == "add":
        return _parse_add(text, rest)
    if op == "move":
        return _parse_move(text, low)
    tokens = _TOKEN_RE.findall(low)
    target = _first_target(tokens)
    if target is None:
        raise _cmd_error(text, "names no object to edit", op)
    noun = target.noun or None
    index = target.ordinal
    if op == "remove":
        count: int | None = None
        if index is not None:
            count = 1
        elif not target.definite and not target.pronoun:
            count = target.count
        return ParsedCommand(op, _edit_spec(noun, count), noun=noun, index=index, count=count)
    values: dict[str, str] = {"recolor": _COLOR_WORDS, "retexture": {**_PATTERN_WORDS, **_PATTERN_NOUNS},
                              "resize": _SIZE_WORDS}[op]
    if not target.pronoun and target.end - target.start >= 2 and tokens[target.end - 1] in values:
        # "make the orange blue": the trailing attribute is the new value, not the noun
        shorter = _first_target(tokens[: target.end - 1])
        if shorter is not None and shorter.start == target.start:
            target = shorter
            noun = target.noun or None
            index = target.ordinal
    value = _value_after(tokens, target, values)
    if value is None:
        value = {"recolor": target.color, "retexture": target.pattern, "resize": target.size}[op]
    if value is None:
        kinds = {"recolor": ("colour", COLORS), "retexture": ("pattern", PATTERNS), "resize": ("size", SIZES)}[op]
        raise _cmd_error(text, f"names no new {kinds[0]} (one of {list(kinds[1])})", op)
    key = {"recolor": "color", "retexture": "pattern", "resize": "size"}[op]
    return ParsedCommand(op, _edit_spec(noun, None, **{key: value}), noun=noun, index=index, value=value)


_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
            "on top of": "under", "under": "on top of", "next to": "next to"}


def _parse_add(text: str, rest: str) -> ParsedCommand:
    res = _run(rest, allow_framing=False)
    if not res.groups:
        raise _cmd_error(text, "names no object to add", "add")
    new = [gi for gi, g in enumerate(res.groups) if not g.definite] or [0]
    relation = reference = None
    for s, r, o in res.relations:
        if r is None:
            continue
        if s in new and o not in new:
            relation, reference = r, res.groups[o].noun
            break
        if o in new and s not in new:
            relation, reference = _INVERSE[r], res.groups[s].noun
            break
    keep = {gi: k for k, gi in enumerate(new)}
    ents = tuple(Entity(res.groups[gi].noun, res.groups[gi].count, res.groups[gi].color,
                        res.groups[gi].pattern, res.groups[gi].size) for gi in new)
    rels = tuple(Relation(keep[s], r, keep[o]) for s, r, o in res.relations if r and s in keep and o in keep)
    spec = Spec(ents, rels, (), res.background, res.style, rest)
    return ParsedCommand("add", spec, noun=ents[0].noun, relation=relation, reference=reference)


def _parse_move(text: str, low: str) -> ParsedCommand:
    tokens = _TOKEN_RE.findall(low)
    target = _first_target(tokens)
    if target is None:
        raise _cmd_error(text, "names no object to move", "move")
    i = target.end
    relation = None
    while i < len(tokens):
        rel = _relation_at(tokens, i)
        if rel is not None and rel[1] is not None:
            relation = rel[1]
            i += rel[0]
            break
        i += 1
    if relation is None:
        raise _cmd_error(text, f"names no relation (one of {list(RELATIONS)})", "move")
    ref = _first_target(tokens[i:])
    if ref is None or ref.pronoun:
        raise _cmd_error(text, f"names no reference object after {relation!r}", "move")
    noun = target.noun or None
    return ParsedCommand("move", _edit_spec(noun, None), noun=noun, index=target.ordinal,
                         relation=relation, reference=ref.noun)


def parse_command(text: str) -> ParsedCommand:
    """Parse a command text ``"<op>: <instruction>"`` (see :mod:`poser_env.core.commands`) with the rule grammar.

    Raises:
        CommandError: the text names no usable op/target; the message says what was expected.
    """
    return parse_command_text(text)
