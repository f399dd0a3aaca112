"""The rule parser's word lists, read from ``poser_env/data/lexicon.toml`` (data only) and checked.

Every table maps surface words onto the spec's vocabularies (:mod:`poser_env.core.spec`); a table that names a
value outside them is refused when this module is imported, with the table and the word in the message.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from poser_env.core.spec import COLORS, PATTERNS, RELATIONS, SIZES, SpecError

__all__ = [
    "COLOR_WORDS",
    "NUMBERS",
    "ORDINALS",
    "PATTERN_NOUNS",
    "PATTERN_WORDS",
    "QUANT_PHRASES",
    "REL_PHRASES",
    "SIZE_WORDS",
    "WORDS",
    "load_lexicon",
]


def _table(data: dict[str, Any], name: str, kind: type, choices: tuple[Any, ...] | None = None) -> dict[str, Any]:
    table = data.get(name)
    if not isinstance(table, dict):
        raise SpecError(f"lexicon.toml has no [{name}] table; restore it from the repository.")
    for k, v in table.items():
        if not isinstance(v, kind) or isinstance(v, bool) or (choices is not None and v not in choices):
            raise SpecError(f"lexicon.toml [{name}] {k!r} = {v!r} must be a {kind.__name__}"
                            + (f" in {list(choices)}" if choices is not None else "") + ".")
    return dict(table)


def load_lexicon(text: str | None = None) -> dict[str, Any]:
    """Parse and check the lexicon (``text``: TOML source; None reads the packaged file).

    Raises:
        SpecError: a missing table or a value outside the spec's vocabulary, naming the table and word.
    """
    if text is None:
        text = resources.files("poser_env").joinpath("data", "lexicon.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    out: dict[str, Any] = {
        "numbers": _table(data, "numbers", int),
        "ordinals": _table(data, "ordinals", int),
        "color_synonyms": _table(data, "color_synonyms", str, COLORS),
        "pattern_words": _table(data, "pattern_words", str, PATTERNS),
        "pattern_nouns": _table(data, "pattern_nouns", str, PATTERNS),
        "size_words": _table(data, "size_words", str, SIZES),
        "quantifiers": _table(data, "quantifiers", int),
    }
    rels = _table(data, "relations", list)
    for rel, phrases in rels.items():
        if rel != "unsupported" and rel not in RELATIONS:
            raise SpecError(f"lexicon.toml [relations] {rel!r} is not 'unsupported' or one of {list(RELATIONS)}.")
        if not all(isinstance(p, str) and p.strip() for p in phrases):
            raise SpecError(f"lexicon.toml [relations] {rel!r} must list non-empty strings.")
    out["relations"] = rels
    words = _table(data, "words", list)
    for name, lst in words.items():
        if not all(isinstance(w, str) for w in lst):
            raise SpecError(f"lexicon.toml [words] {name} must list strings.")
    out["words"] = {k: frozenset(v) for k, v in words.items()}
    return out


_LEX = load_lexicon()
#: Cardinal words -> number ("dozen" -> 12).
NUMBERS: dict[str, int] = _LEX["numbers"]
#: Ordinal words -> 0-based index ("last" -> -1).
ORDINALS: dict[str, int] = _LEX["ordinals"]
#: Colour words -> spec colour (every spec colour maps to itself).
COLOR_WORDS: dict[str, str] = {c: c for c in COLORS} | _LEX["color_synonyms"]
PATTERN_WORDS: dict[str, str] = _LEX["pattern_words"]
PATTERN_NOUNS: dict[str, str] = _LEX["pattern_nouns"]
SIZE_WORDS: dict[str, str] = _LEX["size_words"]
#: (token sequence, spec relation or None for relations the spec cannot hold), longest first.
REL_PHRASES: list[tuple[tuple[str, ...], str | None]] = sorted(
    ((tuple(p.split()), None if rel == "unsupported" else rel)
     for rel, phrases in _LEX["relations"].items() for p in phrases),
    key=lambda pr: -len(pr[0]),
)
#: (token sequence, count or None for vague), longest first.
QUANT_PHRASES: list[tuple[tuple[str, ...], int | None]] = sorted(
    ((tuple(p.split()), n or None) for p, n in _LEX["quantifiers"].items()), key=lambda pr: -len(pr[0])
)
#: The plain word sets of ``[words]`` by name (stop_words, non_objects, common_adjectives ...).
WORDS: dict[str, frozenset[str]] = _LEX["words"]
