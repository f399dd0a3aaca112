"""Rule-based prompt parser: English prompt -> :class:`poser_env.core.spec.Spec`.

Deterministic rules over word lists (``poser_env/data/lexicon.toml``) and lemminflect's English dictionary
(which words can be nouns, verbs or adjectives). No trustworthy spaCy/NLTK model can be installed from PyPI
(``en_core_web_sm`` is published on GitHub only; the PyPI copies are third-party re-uploads), so noun
phrases come from rules. It reads:

* **quantities**: ``a``/``an``/``one``..``ten``, digits, ``a pair of``/``a couple of`` (2), ``some``,
  ``several``, ``many``, ``a group of`` ... (a plural noun without a number counts 2). An *explicit
  cardinal* (``two``..``ten`` or a digit >= 2) means exactly N, as in GenEval's counting task: the spec
  also gets ``Exclusion(noun, N + 1)`` (N = the total over all counted groups of that noun). An explicit
  count above :data:`MAX_COUNT` before a plural noun ("500 cats", "a dozen eggs"), a negative ("-3 cats")
  or fractional one ("2.5 cats") is a :class:`ParseError`; "0 cats" reads as "zero cats" (an
  exclusion); a number before a unit ("90 degrees") or a singular noun ("a 90 degree angle") is a measure
  (reported).
* **nouns**: any noun, multi-word nouns ("teddy bear", "fire hydrant", "hair drier"), regular and
  irregular plurals (the spec holds the singular). A colour word that ends a noun phrase is the noun
  ("an orange", "a yellow orange").
* **attributes**: colours (:data:`poser_env.core.spec.COLORS`; "grey" -> gray, "light blue" -> blue),
  patterns (striped/stripes, dotted/polka-dot/spotted, checkered/plaid/tartan ...; "with stripes"),
  sizes (small/tiny/little, medium, large/big/huge); before the noun or as a predicate
  ("the cups are blue and striped").
* **relations** and their variants, mapped to :data:`poser_env.core.spec.RELATIONS`: "to the left of",
  "on the left of", "left of" -> ``left of``; likewise right; "above"/"over" -> ``above``; "below"/"beneath"
  -> ``below``; "under"/"underneath" -> ``under``; "on top of"/"on"/"atop" -> ``on top of``;
  "next to"/"beside"/"near"/"alongside" -> ``next to``. Relations the spec cannot hold ("in front of",
  "behind", "in", "inside", "between") become open relations (``open_vocab=True``) or are reported in
  ``spec.unexpressed``. Chains ("a cup left of a dog left of a cat") give one relation per link; a relation
  after a coordination holds for each conjunct ("chairs and lamps on the wall"); a fronted relation binds
  to the subject that follows ("Under the shelf are two barbels", "Next to it, a plate"); after "with" or
  "wearing" phrases it binds to the head ("a glass with jam on a table"); "a bed with a laptop on it";
  "a plate topped with broccoli".
* **conjunctions, several sentences and coreference**: "it" (most recently mentioned single group, never the
  subject of the relation it ends), "they"/"them" (most recent plural group), "he"/"she"/"him" and a bare
  "her" (nearest group whose noun is a person, :data:`lexicon` ``person_nouns``); a pronoun that begins a
  sentence continues an earlier sentence's subject of its number ("Two dogs ... They are brown"); "the
  cups" (nearest group with that noun, else a new group); a predicate ("... is green", "... is tall and
  grey") binds to the clause's subject ("the clock on the building is green"); a relation after the
  clause's verb binds to the subject a prepositional phrase modified ("a woman in a red coat is standing on
  a bench"); a place relation after "A on B" is A's ("a car parked on the road next to a tree"); the object
  of an -ing verb is secondary ("a boy kicking a ball next to a fence": the boy is next to the fence).
* **"of" phrases**: after a partitive noun the object is the noun after "of" ("a slice of pizza", "nine
  breeds of dogs" = 9 dogs, "a body of water"); after another noun phrase a bare noun may follow "of" ("a
  cup of coffee": both); after a quality noun it is no object ("the colour of rust", "depth of field").
* **possessives**: the owner is an object ("a mountain's summit" -> mountain; the part is not read); a
  possessive phrase with a colour is an object ("petting his white horse"), "its ..." stays a part.
* **what is not an object**: verbs and adverbs (lemminflect), posture words ("bent"), rendering words
  ("8k", "artstation", "digital art"), a medium word after a subject or without a determiner ("pencil
  illustration", "three cups vector image" -> the cups), creators ("by greg rutkowski"; "by the door"
  is "next to", a passive "lit by the lamp" is neither), text to render (quoted spans, "the text"),
  Midjourney flags ("--ar 16:9", "—ar 3:5"), places in the frame ("the bottom right corner"), times
  ("in the evening"), bare games ("playing tennis"), adjective-shaped unknown words ("pychedelic",
  "hyper-realistic"); the reported ones go to ``spec.unexpressed``. A word lemminflect knows only as a
  base verb is a noun after a determiner ("a white bar").
* **background** (:data:`poser_env.core.spec.BACKGROUNDS`: "on a wooden table", "in the sky", "on grass",
  "at night", "on the beach"/"on sand", "plain background", "with a grass background" ...) and
  **style** (:data:`poser_env.core.spec.STYLES`: "in watercolor style", "a sketch of", "pixel art",
  "photorealistic"/"a photograph of"). GenEval's framing "a photo of" is neutral: it sets no style.
* **exclusions**: "no cats", "without any dogs", "there are no cats", "with no dog or cat". "No red cats"
  (an exclusion of only some colour) and "two cats and no cats" (a contradiction) are errors.
* **refused**: not a string, empty (after removing control characters), longer than
  :data:`MAX_PROMPT_CHARS`, not English (other letters, or more foreign than English function words; the
  error names ``decomposer="llm:<path>"``), two colours side by side for one object ("a red blue car";
  "a red and white cup" keeps red and reports white).

GenEval forms ("a photo of ..." with the structure of one of GenEval's six tasks) get GenEval's tag;
other prompts get the tag ``"long"`` when they ask for more than GenEval can express, else None.

Word lists are data (``poser_env/data/lexicon.toml``); command texts are read by
:func:`poser_env.core.grammar.parse_command_text`, which reuses this module's noun-phrase scanner.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from lemminflect import getAllLemmas

from poser_env.core import lexicon
from poser_env.core.spec import (
    RELATIONS,
    Entity,
    Exclusion,
    OpenAttribute,
    OpenRelation,
    Relation,
    Spec,
    SpecError,
)
from poser_env.core.text import plural, singular

__all__ = [
    "MAX_COUNT",
    "MAX_PROMPT_CHARS",
    "ORDINALS",
    "ParseError",
    "clean_prompt",
    "parse",
]

#: Longest prompt :func:`parse` accepts, in characters (LongBench-T2I's longest is about 9,000; parsing
#: 12,000 characters takes a few milliseconds, so the env's reset stays cheap).
MAX_PROMPT_CHARS = 12_000
#: Most objects in one group (the spec's limit); an explicit larger count is an error.
MAX_COUNT = 10
_LLM_HINT = ("the rule parser reads English only; for other prompts use an LLM decomposer, "
             "decomposer='llm:<path>' (poser_env.llm.LLMDecomposer)")


class ParseError(SpecError):
    """A prompt the parser cannot use (not a string, empty, too long, or nothing drawable)."""


# ---------------------------------------------------------------------------------------------- vocab
# Word lists are data (poser_env/data/lexicon.toml, read by poser_env/lexicon.py).
_NUMBERS = lexicon.NUMBERS
#: Ordinal words -> 0-based index (``"last"`` is -1).
ORDINALS: dict[str, int] = lexicon.ORDINALS
_COLOR_WORDS = lexicon.COLOR_WORDS
_PATTERN_WORDS = lexicon.PATTERN_WORDS
_PATTERN_NOUNS = lexicon.PATTERN_NOUNS
_SIZE_WORDS = lexicon.SIZE_WORDS
_ATTR_WORDS = set(_COLOR_WORDS) | set(_PATTERN_WORDS) | set(_SIZE_WORDS)
_W = lexicon.WORDS
_COLOR_MODS = _W["color_modifiers"]
_REL_PHRASES = lexicon.REL_PHRASES
assert all(r is None or r in RELATIONS for _, r in _REL_PHRASES)
_REL_FIRST = {p[0] for p, _ in _REL_PHRASES}
_REL_BY_FIRST: dict[str, list[tuple[tuple[str, ...], str | None]]] = {}
for _rseq, _rel in _REL_PHRASES:
    _REL_BY_FIRST.setdefault(_rseq[0], []).append((_rseq, _rel))
_QUANT_PHRASES = lexicon.QUANT_PHRASES
_QUANT_BY_FIRST: dict[str, list[tuple[tuple[str, ...], int | None]]] = {}
for _seq, _n in _QUANT_PHRASES:
    _QUANT_BY_FIRST.setdefault(_seq[0], []).append((_seq, _n))
_VAGUE_QUANT = _W["vague_quantifiers"]
_DEFINITE = _W["definite"]
_POSSESSIVE = _W["possessive"]
_PRONOUN_SING = _W["pronouns_singular"]
_PRONOUN_PLUR = _W["pronouns_plural"]
_PRONOUN_PERSON = _W["pronouns_person"]
_PERSON_NOUNS = _W["person_nouns"]
_EXCL_WORDS = _W["exclusion_words"]
_STOP = _W["stop_words"]
_LY_NOUNS = _W["ly_nouns"]
_LY_ADJ = _W["ly_adjectives"]
_FRAMING_NOUNS = _W["framing_nouns"]
_NON_OBJECTS = _W["non_objects"]
_ING_NOUNS = _W["ing_nouns"]
_ED_NOUNS = _W["ed_nouns"]
_COMMON_ADJ = _W["common_adjectives"]
_COPULA = _W["copula"]
_NOT_NOUNS = _W["not_nouns"]
_FOREIGN = _W["foreign_function_words"]
_TEXT_NOUNS = _W["text_nouns"]
_UNITS = _W["unit_nouns"]
_OPEN_COLORS = _W["open_colors"]
_COMPOUNDS = _W["compound_nouns"]
_RENDER_HEADS = _W["render_heads"]
_RENDER_MODS = _W["render_modifiers"] | _W["render_words"]
_ENGLISH = _W["english_function_words"]
_RENDER_WORDS = _W["render_words"]
_PARTITIVE = _W["partitive_nouns"]
_ACTIVITIES = _W["activity_nouns"]
_POSITION_WORDS = _W["position_words"]
_QUALITY = _W["quality_nouns"]


@functools.lru_cache(maxsize=65536)
def _pos(w: str) -> frozenset[str]:
    """Parts of speech an English word can have (lemminflect's dictionary; empty when unknown)."""
    return frozenset(getAllLemmas(w.replace("'s", "")))


def _cannot_be_noun(w: str) -> bool:
    """A known word that is never a noun (a verb form, an adverb ...)."""
    pos = _pos(w) | _pos(singular(w))
    return bool(pos) and "NOUN" not in pos and "PROPN" not in pos


def _is_adverb(w: str) -> bool:
    return w.endswith("ly") and w not in _LY_NOUNS and w not in _LY_ADJ and not w.endswith("fly")


_END_WORDS = {",", "|", ":"}
#: Words after a verb in -s that show it is a verb ("dusk sets in", "paint contrasts with"); "on" is not one
#: ("teddy bears on a bed").
_VERB_PARTICLES = frozenset({"in", "out", "with", "from", "into", "up", "down", "off", "away", "over", "through",
                             "across", "along", "the", "a", "an", "its", "their", "his", "her", "to", "toward",
                             "towards", "around", "at", "gently", "slowly", "softly"})
#: Irregular past participles before a passive "by" ("lit by the lamp": the agent, not a place).
_PAST_PARTICIPLES = frozenset({"lit", "made", "built", "held", "drawn", "shot", "caught", "cast", "led", "fed",
                               "hit", "struck", "bought", "sold", "brought", "kept", "left", "set", "shut"})
_MULTIPLIERS = frozenset({"hundred", "thousand", "million"})
_HYPHEN_NUMBER = re.compile(r"(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)-(one|two|three|four|five|six|"
                            r"seven|eight|nine)")
_DETERMINERS = frozenset({"a", "an", "the", "its", "their", "his", "her", "this", "these", "those", "my", "our"})
_PLURAL_DET = frozenset({"these", "those", "all", "both", "some", "several", "many", "few", "various"})
#: Words whose object is secondary to the noun before them ("a glass with jam", "a wolf wearing a tie").
_WITH_WORDS = frozenset({"with", "wearing", "holding", "carrying", "having", "wears", "holds", "carries"})
#: Words after which a verb, not a bare noun, comes ("a sign that reads ...", "she runs").
_BEFORE_VERB = frozenset({"that", "which", "who", "he", "she", "it", "they", "we", "you", "i", "can", "could",
                          "will", "would", "should", "may", "might", "must", "to"})


# ------------------------------------------------------------------------------- scene phrases (regex)
def _rx(*parts: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(parts) + r")\b")


_ART = r"(?:a |an |the )?"
_BG_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("night", _rx(r"at night(?:time)?", r"in the night", r"under (?:a |the )?(?:starry |dark )?night sky",
                  r"at nighttime", r"during the night", r"night(?:time)? (?:background|setting|scene)",
                  r"the background is " + _ART + r"night(?:time)?(?: sky)?")),
    ("sky", _rx(r"(?:in|across|against|through|into|up in) the (?:blue |clear |open |cloudy )?sky",
                r"(?:under|beneath|below) " + _ART + r"(?:blue |clear |open |cloudy )?sky",
                r"(?:with |against |on |in front of )?" + _ART + r"(?:blue )?sky background",
                r"the background is " + _ART + r"(?:blue )?sky")),
    ("grass", _rx(r"(?:on|in|across|over|atop|upon) " + _ART + r"(?:green |grassy |lush )?(?:grass|lawn|meadow|grassy field|field of grass)",
                  r"(?:with |against |on |in front of )?" + _ART + r"(?:grass|grassy|lawn) background",
                  r"the background is " + _ART + r"(?:grass|lawn|meadow)")),
    ("sand", _rx(r"(?:on|at|across|in|over|upon) " + _ART + r"(?:sandy )?(?:beach|sand|desert|dunes?)",
                 r"(?:with |against |on |in front of )?" + _ART + r"(?:sand|sandy|beach|desert) background",
                 r"the background is " + _ART + r"(?:sand|beach|desert)")),
    ("wooden table", _rx(r"(?:on|atop|upon|across|over) " + _ART + r"(?:[a-z]+,? ){0,2}?(?:wooden|wood) table(?:top)?",
                         r"(?:with |against |on |in front of )?" + _ART + r"(?:wooden|wood)(?: table)? background",
                         r"the background is " + _ART + r"(?:wooden|wood) table")),
    ("plain", _rx(r"(?:on|against|with|in front of|over) " + _ART + r"(?:plain|blank|simple|empty|neutral|solid|white|uniform) background",
                  r"plain background", r"the background is (?:plain|blank|empty)")),
]
_STYLE_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("watercolor", _rx(r"in (?:a |the )?watercolou?r(?: painting)? style", r"in watercolou?rs?",
                       r"(?:a |an )?watercolou?r (?:painting |illustration |drawing )?of",
                       r"as (?:a )?watercolou?r(?: painting)?", r"watercolou?r(?: painting| style|-style)?")),
    ("sketch", _rx(r"in (?:a |the )?(?:pencil |charcoal )?sketch(?:ed|y)? style", r"in pencil",
                   r"(?:a |an )?(?:rough |quick |pencil |charcoal )?sketch of", r"as (?:a )?(?:pencil )?sketch",
                   r"(?:pencil |charcoal )?sketch(?:ed|y)?(?: style|-style)?", r"(?:a )?line drawing(?: of)?")),
    ("pixel art", _rx(r"in (?:a |the )?(?:8-bit |16-bit )?pixel[- ]art(?: style)?", r"(?:a |an )?(?:8-bit )?pixel[- ]art(?: image| style| rendering)?(?: of)?",
                      r"as (?:a )?pixel[- ]art", r"pixelated(?: style)?", r"in (?:a |the )?8-bit style")),
    ("photo", _rx(r"photo[- ]?realistic(?:ally)?(?: style)?", r"in (?:a |the )?photo(?:graphic)?(?:-realistic)? style",
                  r"as (?:a )?(?:realistic )?photo(?:graph)?", r"(?:a |an )?(?:realistic |real )?photograph(?: of)?",
                  r"(?:a |an )?realistic photo(?: of)?", r"photographic(?: style)?", r"in (?:a )?photo style",
                  r"(?:the )?style is (?:a |an )?(?:photo(?:graph)?|photographic|realistic|photorealistic)",
                  r"(?:in|as) (?:a )?photo(?:graph)?")),
]
_FRAMING = re.compile(r"^\s*(?:a|an|the)\s+(?:photo|image|picture|snapshot|shot|rendering|render|scene|view|"
                      r"close-?up|illustration|painting|drawing|depiction)\s+(?:of|showing|with|featuring)\s+")
_LEAD_THERE = re.compile(r"^\s*(?:there\s+(?:is|are|was|were)|here\s+(?:is|are))\s+")


# ------------------------------------------------------------------------------------ internal state
@dataclass
class _Group:
    noun: str
    count: int
    color: str | None = None
    pattern: str | None = None
    size: str | None = None
    definite: bool = False
    explicit: bool = False  # count came from an explicit cardinal (two..ten, digits)
    plural: bool = False
    open_attrs: list[str] = field(default_factory=list)  # adjectives outside the spec's vocabulary
    extra: list[str] = field(default_factory=list)  # attribute words the spec could not hold (second colour ...)
    sentence: int = 0


@dataclass
class _NP:
    """A noun phrase found in the token stream."""

    start: int
    end: int  # exclusive
    noun: str
    count: int | None  # None: from the noun's number
    explicit: bool
    definite: bool
    plural: bool
    color: str | None = None
    pattern: str | None = None
    size: str | None = None
    ordinal: int | None = None
    pronoun: bool = False
    exclusion: bool = False
    possessive: bool = False
    owner: str = ""  # the owner's noun of a possessive phrase ("mountain" of "a mountain's summit")
    adjectives: tuple[str, ...] = ()  # adjectives outside the spec's vocabulary ("wooden", "teal")
    extra: tuple[str, ...] = ()  # attribute words the spec cannot also hold ("white" of "a red and white cup")


@dataclass
class _Result:
    groups: list[_Group] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)
    exclusions: list[tuple[str, int]] = field(default_factory=list)
    background: str | None = None
    style: str | None = None
    framed: bool = False  # started with GenEval's "a photo of"
    open_relations: list[tuple[int, str, int]] = field(default_factory=list)  # relations outside RELATIONS
    unexpressed: list[str] = field(default_factory=list)
    sentence: int = 0  # index of the sentence being read
    excl_sentence: dict[str, int] = field(default_factory=dict)  # noun -> sentence of its "no <noun>"
    nps: list[tuple[_NP, int | None]] = field(default_factory=list)  # every NP and the group it became
    subjects: list[int] = field(default_factory=list)  # groups that began a sentence, in order
    recent: list[int] = field(default_factory=list)  # groups in order of mention (new, definite or pronoun)


_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*|[,:|]")
_SENT_SPLIT = re.compile(r"[.!?;\n\r]+(?:\s+|$)|[;\n\r]+")


def _normalise(text: str) -> str:
    t = text.lower().replace("’", "'")
    t = re.sub(r"\b(?:someone|somebody)\b", "a person", t)
    t = re.sub(r"(?<![\w.,-])0+\s+(?=[a-z])", "zero ", t)  # "0 cats" reads as "zero cats" (an exclusion)
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # "1,000 cats", "10,000,000 cats"
    t = re.sub(r"(?:^|\s)(?:--|[\u2013\u2014])[a-z]+(?:\s+[0-9][0-9:.]*)?", " ", t)  # Midjourney flags: --ar 16:9, —ar 3:5
    t = re.sub(r"\s[-\u2013\u2014]+\s|[\u2013\u2014]", " , ", t)  # "blue water - stock photo": a dash between words splits
    t = re.sub(r"\bpolka[- ]dot(?:ted|s)?\b", lambda m: "polka-dots" if m.group(0).endswith("s") else "polka-dot", t)
    t = re.sub(r"\b(red|orange|yellow|green|blue|purple|pink|brown|black|white|gray|grey)-(?:colou?red|toned|hued)\b",
               r"\1", t)
    t = re.sub(r"\b(?:in )?(red|orange|yellow|green|blue|purple|pink|brown|black|white|gray|grey) colou?r(?:ed|s)?\b",
               r"\1", t)
    t = re.sub(r"\b(red|orange|yellow|green|blue|purple|pink|brown|black|white|gray|grey) in colou?r\b", r"\1", t)
    # "black-white cat", "red/blue car": the first colour of a two-colour compound
    t = re.sub(r"\b(red|orange|yellow|green|blue|purple|pink|brown|black|white|gray|grey)[-/]"
               r"(?:red|orange|yellow|green|blue|purple|pink|brown|black|white|gray|grey)\b", r"\1", t)
    return t


def _match_seq(tokens: Sequence[str], i: int, seq: Sequence[str]) -> bool:
    return tuple(tokens[i:i + len(seq)]) == tuple(seq)


def _relation_at(tokens: Sequence[str], i: int) -> tuple[int, str | None] | None:
    """(length, relation) of a relation phrase starting at token ``i``, or None."""
    if i >= len(tokens) or tokens[i] not in _REL_FIRST:
        return None
    for seq, rel in _REL_BY_FIRST[tokens[i]]:
        if _match_seq(tokens, i, seq):
            return len(seq), rel
    return None


def _quant_at(tokens: Sequence[str], i: int) -> tuple[int, int | None, bool, bool] | None:
    """(length, count or None, explicit cardinal?, definite?) of a quantifier at token ``i``."""
    t = tokens[i]
    for seq, n in _QUANT_BY_FIRST.get(t, ()):
        if _match_seq(tokens, i, seq):
            return len(seq), n, n is not None and n > MAX_COUNT, False
    if t in ("a", "an", "another"):
        return 1, 1, False, False
    if t == "one":
        return 1, 1, False, False
    if t in _NUMBERS or _HYPHEN_NUMBER.fullmatch(t):
        if t in _NUMBERS:
            n, ln = _NUMBERS[t], 1
        else:  # "twenty-one"
            tens, units = t.split("-")
            n, ln = _NUMBERS[tens] + _NUMBERS[units], 1
        while i + ln < len(tokens) and tokens[i + ln] in _MULTIPLIERS:  # "nine hundred", "two thousand"
            n *= _NUMBERS[tokens[i + ln]]
            ln += 1
        return ln, n, True, False
    if t.isdigit():
        n = int(t)
        return 1, n, n >= 2, False
    if t in _VAGUE_QUANT:
        return 1, None, False, t == "both"
    if t in _DEFINITE:
        ln = 1
        if t in ("all", "both", "each") and i + 1 < len(tokens) and tokens[i + 1] in ("the", "of"):
            ln = 2 if tokens[i + 1] == "the" else (3 if i + 2 < len(tokens) and tokens[i + 2] == "the" else 2)
        return ln, None, False, True
    return None


def _is_participle(w: str) -> bool:
    if w.endswith("ing") and len(w) > 4 and w not in _ING_NOUNS:
        return True
    return w.endswith("ed") and len(w) > 4 and w not in _ED_NOUNS and w not in _PATTERN_WORDS


def _unknown_adjective(w: str) -> bool:
    """A word outside lemminflect's dictionary shaped like an adjective ("pychedelic", "hyperrealistic",
    "photoreal"), or a hyphenated word whose last part is only an adjective ("hyper-realistic")."""
    if "-" in w:
        tail = _pos(w.rsplit("-", 1)[1])
        return bool(tail) and "ADJ" in tail and "NOUN" not in tail
    return not _pos(w) and len(w) > 6 and w.endswith(("ical", "istic", "delic", "etric", "real", "esque"))


def _not_a_noun(w: str) -> bool:
    """A lone word that cannot be the noun of a phrase (an adjective or participle)."""
    if w in _ATTR_WORDS:
        return w != "orange"
    if _unknown_adjective(w):
        return True
    return (_is_participle(w) or w in _COMMON_ADJ or w.endswith(("ous", "ful", "ible")) or _is_adverb(w)
            or _cannot_be_noun(w) or len(w) < 2 or w[0].isdigit() or w in _NOT_NOUNS)


def _dictionary_gap(w: str) -> bool:
    """A word lemminflect knows only as an uninflected verb ("bar", "bars"), read as a noun after a determiner
    ("a white bar"): its dictionary lacks some nouns."""
    lemmas = getAllLemmas(w)
    return set(lemmas) == {"VERB"} and (lemmas["VERB"] == (w,) or (w.endswith("s") and lemmas["VERB"] == (w[:-1],)))


def _is_content(tokens: Sequence[str], i: int) -> bool:
    """Whether token ``i`` can continue a noun phrase (an attribute or a noun word)."""
    if i >= len(tokens):
        return False
    t = tokens[i]
    if t in _END_WORDS or t in _STOP or t in _NUMBERS or t in ORDINALS or _is_adverb(t):
        return t in _ATTR_WORDS  # "light" etc. are in neither; attribute words are never stop words
    if _relation_at(tokens, i) is not None:
        return False
    return not t.isdigit()


class _Scanner:
    """Turns the token list of one sentence into noun phrases and links."""

    def __init__(self, tokens: list[str]) -> None:
        self.t = tokens

    def np_at(self, i: int, *, require_det: bool, allow_bare: bool) -> _NP | None:
        """Read a noun phrase starting at token ``i`` (None when there is none)."""
        t = self.t
        n = len(t)
        start = i
        count: int | None = None
        explicit = definite = False
        if i >= n:
            return None
        q = _quant_at(t, i)
        if q is not None:
            ln, count, explicit, definite = q
            i += ln
            # "the two cups", "all three dogs"
            if i < n:
                q2 = _quant_at(t, i)
                if q2 is not None and q2[1] is not None and not q2[3] and t[i] not in ("a", "an"):
                    i += q2[0]
                    count, explicit = q2[1], q2[2] or explicit
        elif require_det or not allow_bare or (t[i] not in _ATTR_WORDS and _is_participle(t[i])):
            return None
        while i < n and t[i] in ("more", "additional", "extra", "other", "new", "single", "lone", "solitary") and (
                _is_content(t, i + 1) or (i + 2 < n and t[i + 1] == "," and _is_content(t, i + 2))):
            i += 2 if t[i + 1] == "," else 1
        ordinal = None
        if i < n and t[i] in ORDINALS and i + 1 < n and _is_content(t, i + 1):
            ordinal = ORDINALS[t[i]]
            i += 1
        color = pattern = size = None
        words: list[str] = []
        adjectives: list[str] = []
        extra: list[str] = []
        while i < n:
            w = t[i]
            if w in _COLOR_MODS and not words and i + 1 < n and t[i + 1] in _COLOR_WORDS:
                i += 1
                continue
            if (w in _ATTR_WORDS or w in _COMMON_ADJ) and i + 2 < n and t[i + 1] == "," and _is_content(t, i + 2) and (
                    not words):
                # "a purple, triangle-shaped cactus"
                color = color or _COLOR_WORDS.get(w)
                pattern = pattern or _PATTERN_WORDS.get(w)
                size = size or _SIZE_WORDS.get(w)
                i += 2
                continue
            coordinated = i + 3 < n and t[i + 1] in ("and", ",") and t[i + 2] in _ATTR_WORDS and (
                _is_content(t, i + 3))  # "a red and white cup"
            if w in _ATTR_WORDS and (_is_content(t, i + 1) or coordinated) and not (
                    words and words[-1].endswith("'s")):
                adjectives += words  # "a sleek black pencil": words before an attribute were adjectives
                words.clear()
                if w in _COLOR_WORDS:
                    if color is not None and _COLOR_WORDS[w] != color:
                        if t[i - 1] not in ("and", ","):
                            raise ParseError(
                                f"{' '.join(t[start:i + 1])!r} names two colours ({color!r} and {_COLOR_WORDS[w]!r}) "
                                "for one object; a spec holds one colour per group: keep one, or write "
                                f"'{color} and {_COLOR_WORDS[w]}' to record the second as not expressible."
                            )
                        extra.append(_COLOR_WORDS[w])
                    color = color or _COLOR_WORDS[w]
                elif w in _PATTERN_WORDS:
                    if pattern is not None and _PATTERN_WORDS[w] != pattern:
                        extra.append(_PATTERN_WORDS[w])
                    pattern = pattern or _PATTERN_WORDS[w]
                else:
                    if size is not None and _SIZE_WORDS[w] != size:
                        extra.append(_SIZE_WORDS[w])
                    size = size or _SIZE_WORDS[w]
                i += 1
                if i < n and t[i] in ("and", ",") and i + 1 < n and t[i + 1] in _ATTR_WORDS and _is_content(t, i + 2):
                    i += 1  # "a red and white cup": the first colour; the second is reported as unexpressed
                continue
            if not _is_content(t, i):
                break
            if words and (_is_participle(w) or w in _ATTR_WORDS or w in _PATTERN_NOUNS):
                break
            if words and (w in _NOT_NOUNS or (_pos(w) and not _pos(w) & {"NOUN", "PROPN", "ADJ"}
                                               and w not in _ING_NOUNS and w not in _ED_NOUNS)):
                break  # "the message written in ...": a verb ends the noun phrase
            words.append(w)
            i += 1
        # drop leading adjectives while a noun remains ("a teal scarf", "a wooden bowl"; not "a hot dog")
        while len(words) > 1 and (words[0] in _COMMON_ADJ or _is_adverb(words[0]) or words[0] in _OPEN_COLORS or (
                _pos(words[0]) & {"ADJ"} and not _pos(words[0]) & {"NOUN", "PROPN"}
                and " ".join(words[:2]) not in _COMPOUNDS and singular(" ".join(words)) not in _COMPOUNDS)):
            adjectives.append(words.pop(0))
        if not words:
            return None
        if any(x.endswith("'s") for x in words) or words[-1].endswith("'"):
            # "the truck's glossy paint": a part of something, not a new group
            k = next(ix for ix, x in enumerate(words) if x.endswith(("'s", "'")))
            ow = [*words[:k], words[k].removesuffix("'s").removesuffix("'")]
            owner = "" if (ow[-1] in _STOP or ow[-1] in _PRONOUN_SING or ow[-1] in _PRONOUN_PERSON
                           or ow[-1] in _PRONOUN_PLUR or _not_a_noun(ow[-1])) else singular(" ".join(ow[-3:]))
            return _NP(start, i, "", None, False, True, False, possessive=True, owner=owner)
        if len(words) == 1 and _not_a_noun(words[0]) and not (
                q is not None and t[start] not in ("that", "this", "these", "those") and _dictionary_gap(words[0])):
            if color == "orange" and words[0] in _ATTR_WORDS and t[i - 2] == "orange":
                # "the last orange blue": the orange is the noun, the trailing colour is not part of it
                return _NP(start, i - 1, "orange", count or 1, explicit, definite, False, None, pattern, size, ordinal)
            return None
        if count == 1 and not explicit and not definite and len(words) >= 2 and singular(words[-1]) != words[-1]:
            # "a napkin peeks out": a plural last word after "a" is a verb, not part of the noun
            words.pop()
            i -= 1
        elif (len(words) >= 2 and (count is None or count == 1) and not explicit and t[start] not in _PLURAL_DET
              and singular(words[-1]) != words[-1] and "VERB" in _pos(words[-1])
              and singular(words[-2]) == words[-2] and i < n and t[i] in _VERB_PARTICLES
              and singular(" ".join(words[-2:])) not in _COMPOUNDS):
            # "as dusk sets in", "the paint contrasts with": a singular noun, then a verb in -s
            words.pop()
            i -= 1
        elif (len(words) >= 2 and "VERB" in _pos(words[-1]) and singular(words[-2]) != words[-2]
              and singular(words[-1]) == words[-1] and i < n and (
                  t[i] in _DETERMINERS or (_relation_at(t, i) is not None and (count is None or count > 1)
                                           and singular(" ".join(words[-2:])) not in _COMPOUNDS))):
            # "oblong shapes complement the table", "three ducks swim near a log": a plural noun, then a verb
            words.pop()
            i -= 1
        if (count is None and not definite and len(words) == 1 and i < n and t[i] in _DETERMINERS
                and "VERB" in _pos(words[0]) and singular(words[0]) != words[0]):
            return None  # "..., cradles a collection": a verb in -s before its object
        words = words[-3:]
        noun = singular(" ".join(words))
        plural = noun != " ".join(words)
        if count is None and not definite:
            count = 2 if plural else 1
        adjs = tuple(a for a in adjectives if not _is_adverb(a) and a not in _COLOR_MODS and a.isalpha())
        return _NP(start, i, noun, count, explicit, definite, plural, color, pattern, size, ordinal,
                   adjectives=adjs, extra=tuple(extra))


def _scene_phrases(sentence: str, res: _Result) -> str:
    """Strip background and style phrases from a sentence, recording them in ``res``."""
    for name, rx in _BG_RULES:
        if rx.search(sentence):
            res.background = res.background or name
            sentence = rx.sub(" | ", sentence)
    for name, rx in _STYLE_RULES:
        if rx.search(sentence):
            res.style = res.style or name
            sentence = rx.sub(" | ", sentence)
    return sentence


def _resolve(res: _Result, np: _NP, *, exclude: int | None = None) -> int | None:
    """Group index a definite noun phrase or pronoun refers to (nearest match), or None.

    A pronoun never refers to ``exclude`` (the subject of the relation it ends: "a bed with a laptop on it").
    """
    groups = res.groups
    if np.pronoun and np.noun == "person":  # "he", "she", "him", "her": the nearest person
        for gi in range(len(groups) - 1, -1, -1):
            if gi != exclude and groups[gi].noun.split()[-1] in _PERSON_NOUNS:
                return gi
        return None
    if np.pronoun:
        # most recently mentioned first ("A plane near the water. The plane is old and it is white": the plane)
        order = dict.fromkeys([*reversed(res.recent), *range(len(groups) - 1, -1, -1)])
        cands = [gi for gi in order if gi != exclude]
        if not cands:
            return None
        want_plural = np.plural
        for gi in cands:
            if (groups[gi].count > 1) == want_plural:
                return gi
        return cands[0]
    for exact in (True, False):
        for gi in range(len(groups) - 1, -1, -1):
            g = groups[gi]
            same = g.noun == np.noun if exact else (
                g.noun.split()[-1] == np.noun.split()[-1] or np.noun.split()[-1] == g.noun)
            if not same:
                continue
            if np.color and g.color and np.color != g.color:
                continue
            return gi
    return None


def _attach(g: _Group, color: str | None, pattern: str | None, size: str | None) -> None:
    g.color = g.color or color
    g.pattern = g.pattern or pattern
    g.size = g.size or size


def _run(text: str, *, allow_framing: bool = True) -> _Result:
    """Parse ``text`` into the internal result (no validation of drawability)."""
    res = _Result()
    body = _normalise(text)
    _check_numbers(body)
    # quoted text is text to render ("a sign that reads 'no dogs'"), not objects: reported, not parsed
    body = _ENCLOSING_QUOTES.sub(r"\1", body.strip())
    for m in _QUOTED.finditer(body):
        res.unexpressed.append(f"text {m.group(0)}")
    body = _QUOTED.sub(" | ", body)
    if allow_framing and _FRAMING.match(body):
        res.framed = bool(re.match(r"^\s*a photo of ", body))
        body = _FRAMING.sub(" | ", body, count=1)
    for raw in _SENT_SPLIT.split(body):
        sentence = _LEAD_THERE.sub(" ", raw)
        sentence = _scene_phrases(sentence, res)
        tokens = _TOKEN_RE.findall(sentence)
        if tokens:
            _sentence(tokens, res)
            res.sentence += 1
    return res


def _new_group(res: _Result, np: _NP) -> int:
    count = np.count if np.count is not None else (2 if np.plural else 1)
    if count > MAX_COUNT and np.explicit and (not np.plural or np.noun.split()[0] in _UNITS
                                              or plural(np.noun).split()[0] in _UNITS):
        # "a 90 degree angle", "1847 Rogers pattern": a number before a singular noun is a modifier, not a count
        res.unexpressed.append(f"{count} (a number before {np.noun!r}, a measure or a name, not a count)")
        count, np = 1, replace(np, explicit=False, count=1)
    if count > MAX_COUNT:
        raise ParseError(
            f"count {count} of {np.noun!r} is more than a spec holds (1 to {MAX_COUNT} per group); "
            f"ask for at most {MAX_COUNT}, or for 'many {np.noun}s' without a number."
        )
    count = max(1, count)
    res.groups.append(_Group(np.noun, count, np.color, np.pattern, np.size, np.definite, np.explicit, np.plural,
                             list(np.adjectives), list(np.extra)))
    gi = len(res.groups) - 1
    res.groups[gi].sentence = res.sentence
    if np.explicit and np.count is not None and 2 <= np.count <= 10:
        res.exclusions.append((np.noun, np.count + 1))
    return gi


def _sentence(t: list[str], res: _Result) -> None:
    sc = _Scanner(t)
    n = len(t)
    i = 0
    last: int | None = None  # group of the most recent noun phrase in this clause
    pending_rel: str | None = None
    rel_subject: int | None = None
    rel_subjects: list[int] = []  # "chairs and lamps on the wall": the relation holds for every conjunct
    run: list[int] = []  # groups of the coordination ("A, B and C") that ends at token run_end
    run_end = -1
    subj: int | None = None  # group of the sentence's first noun phrase when the sentence starts with it
    copula_seen = False
    head: int | None = None  # latest main noun phrase (not one after "with", "wearing" ...)
    secondary = False  # the latest noun phrase came after "with", "wearing" ...: a relation after it is the head's
    fronted_rel: str | None = None  # "Under the shelf are two barbels": relation read before its subject
    fronted_obj: int | None = None
    fronted_wait = False
    pron_exclude: int | None = None
    obj_rel: tuple[str, int, int] | None = None  # (relation, subject, end token) of the latest relation object
    topped = False
    support: tuple[int, int] | None = None  # (subject, end token) of the latest "A on B"
    creator_end = -1
    subj_end = -1
    last_start = -1  # first token of the latest noun phrase
    of_end = -1  # end of a skipped region noun ("the side" of "the side of the bus")
    slot = True  # a bare noun phrase may start here
    excl_mode = False
    while i < n:
        w = t[i]
        # -------- exclusions: "no cats", "without any dogs", "with no dog or cat"
        if w in _EXCL_WORDS or (w == "not" and i + 1 < n and t[i + 1] in ("a", "any")):
            j = i + 1
            while j < n and t[j] in ("any", "a", "an", "single", "other"):
                j += 1
            np = sc.np_at(j, require_det=False, allow_bare=True)
            if np is not None and np.noun and np.noun not in _NON_OBJECTS:
                if np.color or np.pattern or np.size:
                    which = " ".join(a for a in (np.size, np.pattern, np.color) if a)
                    raise ParseError(
                        f"{' '.join(t[i:np.end])!r} excludes only {which} {np.noun}s, which a spec cannot say (an "
                        f"exclusion is about every {np.noun}); write 'no {np.noun}s' or ask for the colour you want."
                    )
                res.exclusions.append((np.noun, 1))
                res.excl_sentence.setdefault(np.noun, res.sentence)
                res.nps.append((np, None))
                excl_mode = True
                i = np.end
                continue
            i += 1
            continue
        if excl_mode and w in ("or", "and", "nor", ","):
            np = sc.np_at(i + 1, require_det=False, allow_bare=True)
            if np is not None and np.noun and not (i + 1 < n and _quant_at(t, i + 1)) and np.noun not in _NON_OBJECTS:
                res.exclusions.append((np.noun, 1))
                res.excl_sentence.setdefault(np.noun, res.sentence)
                i = np.end
                continue
        excl_mode = False
        # -------- pattern given as "with stripes", "with polka dots", "with a checkered pattern"
        if w == "with" and last is not None and i + 1 < n:
            j = i + 1
            while j < n and t[j] in ("a", "an", "some", "small", "large", "big", "little", "tiny", "thin", "bold"):
                j += 1
            pat = None
            if j < n and t[j] in _PATTERN_NOUNS:
                pat, ln = _PATTERN_NOUNS[t[j]], 1
            elif j + 1 < n and t[j] in _PATTERN_WORDS and t[j + 1] in ("pattern", "print", "design", "texture"):
                pat, ln = _PATTERN_WORDS[t[j]], 2
            if pat is not None:
                _attach(res.groups[last], None, pat, None)
                i = j + ln
                continue
        # -------- "a plate topped with broccoli and meat": the toppings are on top of the plate
        if w == "topped" and i + 1 < n and t[i + 1] == "with" and last is not None:
            pending_rel, rel_subject, rel_subjects = "under", last, []
            topped = True
            i += 2
            slot = True
            continue
        # -------- relations
        rel = _relation_at(t, i)
        if rel is None and w == "by" and i > 0 and i + 2 < n and t[i + 1] in ("a", "an", "the") and not (
                _is_participle(t[i - 1]) or t[i - 1].endswith("en") or t[i - 1] in _PAST_PARTICIPLES) and (
                t[i + 2] not in _PERSON_NOUNS and t[i + 2] not in ("artist", "photographer", "painter")):
            rel = (1, "next to")  # "blueberries by the banana" (not "art by greg rutkowski", "a photo by an artist")
        if rel is not None:
            ln, name = rel
            j = i + ln
            nxt = sc.np_at(j, require_det=False, allow_bare=True) if j < n else None
            pron = j < n and (t[j] in (_PRONOUN_SING | _PRONOUN_PLUR) or _person_pronoun(t, j))
            if nxt is not None or pron:
                pending_rel, rel_subject = (name if name is not None else "~" + _open_rel(t[i:j])), last
                rel_subjects = list(run) if (last is not None and len(run) > 1 and run[-1] == last
                                             and "," not in t[run_end:i]) else []
                pron_exclude = None
                if (subj is not None and last is not None and last != subj and run_end <= i and subj_end < n
                        and (t[subj_end] in _WITH_WORDS or t[subj_end] in ("in", "of", "dressed", "from")
                             or _relation_at(t, subj_end) is not None)
                        and _verb_between(t, run_end, i) and not _verb_between(t, subj_end, last_start)):
                    # "a woman in a white shirt is standing on a court": the clause's verb binds to its subject
                    rel_subject, rel_subjects = subj, []
                if (support is not None and support[1] == i and pending_rel not in ("on top of", "under")
                        and name is not None and not pron):
                    # "a truck parked on the street next to the sidewalk": a place relation after the support is the
                    # subject's
                    rel_subject, rel_subjects = support[0], []
                if last is None and fronted_obj is None:
                    fronted_rel, fronted_wait = pending_rel, True  # "Under the shelf are ...", "On it sits ..."
                elif secondary and head is not None and last is not None:
                    if pron:  # "a bed with a laptop on it": the laptop is on the bed
                        pron_exclude = last
                    else:  # "a glass with jam in it on a table", "a wolf wearing a tie on the subway"
                        rel_subject, rel_subjects = head, []
            i = j
            slot = True
            continue
        # -------- pronouns
        if w in ("he", "she") and i > 0 and run_end == i:
            i += 1  # "the uniform he is wearing is white": a relative clause, the noun stays the topic
            slot = False
            continue
        if w in _PRONOUN_SING or w in _PRONOUN_PLUR or _person_pronoun(t, i):
            np = _NP(i, i + 1, "person" if w in _PRONOUN_PERSON else "", None, False, True, w in _PRONOUN_PLUR,
                     pronoun=True)
            gi = None
            if i == 0 and w not in _PRONOUN_PERSON:
                # "Two elephants ... They have long trunks. They are grey.": a pronoun that begins a sentence
                # continues an earlier sentence's subject of its number, not the nearest noun
                gi = next((g for g in reversed(res.subjects)
                           if (res.groups[g].count > 1) == (w in _PRONOUN_PLUR)), None)
                if gi is None and w == "they" and res.subjects and (
                        res.groups[res.subjects[-1]].noun.split()[-1] in _PERSON_NOUNS):
                    gi = res.subjects[-1]  # "There is a person ... They are standing on ...": a singular they
            if gi is None:
                gi = _resolve(res, np, exclude=pron_exclude if pron_exclude is not None else
                              (rel_subject if pending_rel is not None else None))
            if gi is not None:
                res.recent.append(gi)
                _link(res, gi, pending_rel, rel_subject)
                if fronted_wait:
                    fronted_obj, fronted_wait = gi, False
                pending_rel = None
                pron_exclude = None
                last = gi
                if i == 0 and w in _PRONOUN_PERSON:  # "He is standing on ...": the sentence's subject
                    subj, subj_end, run_end, last_start = gi, 1, 1, 0
            i += 1
            slot = False
            continue
        # -------- predicates: "the cups are blue and striped", "it is large"
        if w in _COPULA and last is not None:
            j = i + 1
            got = False
            color = pattern = size = None
            while j < n:
                x = t[j]
                if x in ("very", "all", "both", "and", ",", "entirely", "completely", "bright", "dark",
                         "light", "pale", "deep", "mostly", "in", "a", "an", "painted", "colored", "coloured"):
                    j += 1
                    continue
                if (x in _ATTR_WORDS and not _is_content(t, j + 1)) or (
                        x in _ATTR_WORDS and j + 1 < n and t[j + 1] in ("and", ",")):
                    if x in _COLOR_WORDS:
                        color = color or _COLOR_WORDS[x]
                    elif x in _PATTERN_WORDS:
                        pattern = pattern or _PATTERN_WORDS[x]
                    else:
                        size = size or _SIZE_WORDS[x]
                    got = True
                    j += 1
                    continue
                if x not in _ATTR_WORDS and j + 2 < n and t[j + 1] in ("and", ",") and (
                        x in _COMMON_ADJ or ("ADJ" in _pos(x) and not _pos(x) & {"NOUN", "VERB"})):
                    j += 1  # "the building is tall and grey": an adjective before the colour
                    continue
                if x in ("in", "with") and j + 1 < n and t[j + 1] in _PATTERN_NOUNS:
                    pattern = pattern or _PATTERN_NOUNS[t[j + 1]]
                    got = True
                    j += 2
                    continue
                break
            if got:
                # back off trailing connectives so "and a dog" is read again
                while j > i + 1 and t[j - 1] in ("and", ",", "in", "very", "all", "both"):
                    j -= 1
                # "the clock on the building is green": the clause's subject, not the last noun
                target = subj if subj is not None and not copula_seen else last
                _attach(res.groups[target], color, pattern, size)
                copula_seen = True
                i = j
                continue
            copula_seen = True
            i += 1
            continue
        # -------- "labels in blue", "dressed in white", "squares of purple": a colour after the noun
        if w in ("in", "of") and last is not None and i + 1 < n and t[i + 1] in _COLOR_WORDS and (
                run_end == i or (i > 0 and t[i - 1] in ("dressed", "painted", "colored", "coloured", "done"))) and (
                not _is_content(t, i + 2) or (i + 3 < n and t[i + 2] in ("and", ",") and t[i + 3] in _COLOR_WORDS)):
            _attach(res.groups[last], _COLOR_WORDS[t[i + 1]], None, None)
            i += 2
            continue
        # -------- relative pronouns: "a sign that reads ...": a verb follows, not a noun phrase
        if w in ("that", "which", "who") and run_end == i:
            i += 1
            slot = False
            continue
        # -------- noun phrases
        q = _quant_at(t, i)
        np = sc.np_at(i, require_det=False, allow_bare=slot or q is not None or w in _ATTR_WORDS)
        if np is not None and np.noun and np.end + 1 < n and t[np.end] == "of" and np.noun.split()[-1] in _PARTITIVE:
            # "a slice of pizza", "nine breeds of dogs", "a body of water": the object is after "of"
            np2 = sc.np_at(np.end + 1, require_det=False, allow_bare=True)
            if np2 is not None and np2.noun and not np2.possessive and np2.noun not in _NON_OBJECTS:
                np = replace(np2, start=np.start, count=np.count if np.explicit else np2.count,
                             explicit=np.explicit or np2.explicit, definite=np.definite or np2.definite,
                             color=np2.color or np.color, pattern=np2.pattern or np.pattern,
                             size=np2.size or np.size, adjectives=np.adjectives + np2.adjectives)
        if np is not None and np.possessive:
            if np.owner and np.owner not in _NON_OBJECTS and np.owner.split()[-1] not in _TEXT_NOUNS:
                # "a mountain's summit", "the person's shirt": the owner is an object (the part is not)
                onp = _NP(np.start, np.end, np.owner, 1, False, q is not None and t[i] in _DEFINITE, False)
                gi = _resolve(res, onp) if onp.definite else None
                if gi is None:
                    gi = _new_group(res, onp)
                res.recent.append(gi)
            i = np.end
            slot = False
            continue
        if np is not None:
            words_ = np.noun.split()
            creator = q is None and i > 0 and (t[i - 1] == "by" or (
                creator_end >= 0 and t[i - 1] in ("and", ",") and creator_end in (i - 1, i - 2)))
            if q is not None and q[2] and len(words_) == 1 and (words_[0] in _UNITS or plural(words_[0]) in _UNITS):
                res.unexpressed.append(f"{' '.join(t[np.start:np.end])} (a measure, not an object)")
                i = np.end
                slot = False
                continue
            if creator:  # "art by greg rutkowski and alphonse mucha": who made it, not an object
                res.unexpressed.append(f"by {' '.join(t[np.start:np.end])}")
                creator_end = np.end
                i = np.end
                slot = False
                continue
            if words_[-1] in _TEXT_NOUNS and not np.definite:
                res.unexpressed.append(f"text ({' '.join(t[np.start:np.end])})")
            bare = q is None and not np.definite
            if len(words_) > 1 and words_[-1] in _RENDER_HEADS and words_[-1] not in _QUALITY:
                k = len(words_)
                while k > 1 and words_[k - 1] in _RENDER_HEADS:
                    k -= 1
                if singular(words_[k - 1]) != words_[k - 1]:  # "three guitars vector image": the guitars
                    np = replace(np, noun=singular(" ".join(words_[:k])), plural=True)
                    words_ = np.noun.split()
                elif not all(x in _RENDER_MODS or x in _RENDER_HEADS for x in words_[:k]) and not (
                        _not_a_noun(words_[k - 1])):  # "Disney graveyard photo": the graveyard
                    np = replace(np, noun=" ".join(words_[:k]))
                    words_ = np.noun.split()
            by_next = np.end < n and t[np.end] == "by"
            medium = words_[-1] in _RENDER_HEADS and ((len(words_) > 1 and bare) or by_next)
            if np.noun in _NON_OBJECTS or words_[-1] in _RENDER_WORDS or words_[-1] in _TEXT_NOUNS or (
                    all(x in _NON_OBJECTS or x in _POSITION_WORDS for x in words_)) or (  # "the bottom right corner"
                    words_[-1] in _QUALITY or words_[-1] == "genre") or (  # "in Wes Anderson style", "synthwave genre"
                    bare and (words_[-1] in _ACTIVITIES or np.noun in _RENDER_HEADS)) or (  # "playing tennis", "..., art"
                    words_[-1] in _FRAMING_NOUNS and np.end < n and t[np.end] == "of") or medium or (
                    len(words_) > 1 and words_[-1] in _RENDER_HEADS and all(x in _RENDER_MODS for x in words_[:-1])):
                i = np.end
                # "as dusk sets in", "oblong shapes complement the table": a verb after it is no noun
                slot = not (i + 1 < n and "VERB" in _pos(t[i]) and (t[i].endswith("s") or np.plural)
                            and (t[i + 1] in _DETERMINERS or t[i + 1] in _VERB_PARTICLES))
                if words_[-1] in _FRAMING_NOUNS and np.end < n and t[np.end] == "of":
                    i += 1  # "a photo of", "studio shot of": skip "of"
                elif np.noun in _NON_OBJECTS and np.noun not in _QUALITY:
                    of_end = np.end  # "the side of the bus", "the back of an elephant" (not "depth of field")
                continue
            if np.definite:
                gi = _resolve(res, np)
                if gi is None:
                    gi = _new_group(res, np)
                else:
                    _attach(res.groups[gi], np.color, np.pattern, np.size)
            else:
                gi = _new_group(res, np)
            res.nps.append((np, gi))
            res.recent.append(gi)
            for s_ in rel_subjects[:-1]:
                _link(res, gi, pending_rel, s_)
            _link(res, gi, pending_rel, rel_subject)
            support = (rel_subject, np.end) if pending_rel == "on top of" and rel_subject is not None else None
            if pending_rel is not None and rel_subject is not None and topped:
                obj_rel = (pending_rel, rel_subject, np.end)
            elif obj_rel is not None and i > 0 and t[i - 1] in ("and", ",", "or") and obj_rel[2] in (i - 1, i - 2):
                _link(res, gi, obj_rel[0], obj_rel[1])  # "topped with broccoli, meat and veggies": all of them
                obj_rel = (obj_rel[0], obj_rel[1], np.end)
            else:
                obj_rel = None
            topped = False
            if fronted_wait:
                fronted_obj, fronted_wait = gi, False
            elif fronted_obj is not None and fronted_rel is not None and pending_rel is None:
                _link(res, fronted_obj, fronted_rel, gi)  # "... are two small silver barbels": under the shelf
            joined = run_end >= 0 and i > 0 and t[i - 1] in ("and", ",", "or") and (
                run_end == i - 1 or (i > 1 and t[i - 2] == "," and run_end == i - 2))
            secondary = (np.start > 0 and (t[np.start - 1] in _WITH_WORDS or (
                (run_end == np.start - 1 or (np.start > 1 and t[np.start - 2] in _COPULA and run_end == np.start - 2))
                and _is_participle(t[np.start - 1]) and t[np.start - 1].endswith("ing")
                and "VERB" in _pos(t[np.start - 1])))) or (secondary and joined)  # "two men sharing a meal"
            if not secondary and pending_rel is None:
                head = gi
            run = [*run, gi] if joined and pending_rel is None else [gi]
            if np.start == 0 or (np.start == 1 and t[0] in ("|", ",")):
                subj, subj_end = gi, np.end
                res.subjects.append(gi)
            run_end = np.end
            last_start = np.start
            pending_rel = None
            rel_subjects = []
            last = gi
            i = np.end
            slot = False
            continue
        if w in ("and", ",", "with", "of", "|", ":", "or", "plus"):
            # after "of" a bare noun may follow a noun phrase ("a cup of coffee", "a wall of windows")
            slot = w in ("and", "with", "|", ":", "or", "plus", ",") or (
                w == "of" and (of_end == i or (run_end == i and last is not None
                                               and res.groups[last].noun.split()[-1] not in _QUALITY)))
            if w in ("|",):
                pending_rel = None
        elif w in _POSSESSIVE:
            pnp = sc.np_at(i + 1, require_det=False, allow_bare=True)
            if (pnp is not None and pnp.noun and not pnp.possessive and (pnp.color or pnp.pattern)
                    and pnp.noun not in _NON_OBJECTS and w != "its" and "ADJ" not in _pos(pnp.noun.split()[-1])):
                # "petting his white horse", "her red hat": a thing of its own with a colour the prompt asks for
                gi = _new_group(res, replace(pnp, start=i))
                res.recent.append(gi)
                _link(res, gi, pending_rel, rel_subject)
                pending_rel, rel_subjects = None, []
                last, run, run_end, last_start = gi, [gi], pnp.end, i
                i = pnp.end
                slot = False
                continue
            # skip "its glossy coat": parts of things already there are not new groups
            j = i + 1
            while j < n and _is_content(t, j):
                j += 1
            i = j
            slot = False
            continue
        else:
            # after a verb or particle ("we can see chairs", "person has hat") a bare noun may start
            slot = (w in _STOP and w not in _DEFINITE and w not in _POSSESSIVE and w not in _BEFORE_VERB) or (
                bool(_pos(w)) and not _pos(w) & {"NOUN", "PROPN", "ADJ"})  # after a verb ("I can observe sky")
        i += 1


def _person_pronoun(t: Sequence[str], i: int) -> bool:
    """Whether token ``i`` is "he", "she", "him", or "her" with no noun after it ("behind her", not "her hat")."""
    return i < len(t) and t[i] in _PRONOUN_PERSON and (t[i] != "her" or not _is_content(t, i + 1))


def _verb_between(t: Sequence[str], a: int, b: int) -> bool:
    """Whether tokens ``a:b`` hold a finite verb or copula ("is standing", "sits"), not only modifiers ("in a hat",
    "wearing a tie"); a relative pronoun ("that sits") counts as no verb of the clause (False)."""
    seen = False
    for w in t[max(a, 0):b]:
        if w in ("that", "which", "who", "whose", "where", ",", "and", "|"):
            return False
        posture = w in ("sits", "stands", "lies", "rests", "hangs", "sit", "stand", "lie", "rest", "hang")
        verb = (w not in _WITH_WORDS and not w.endswith("ing") and "VERB" in _pos(w)
                and not _pos(w) & {"NOUN", "ADJ", "ADP"})
        seen = seen or w in _COPULA or posture or verb
    return seen


_OPEN_REL_CANON = {"inside of": "inside", "in back of": "behind", "at the back of": "behind", "into": "in",
                   "within": "in", "amongst": "among"}


def _open_rel(tokens: Sequence[str]) -> str:
    phrase = " ".join(tokens)
    return _OPEN_REL_CANON.get(phrase, phrase)


def _link(res: _Result, gi: int, pending: str | None, subject: int | None) -> None:
    if pending is None or subject is None or subject == gi:
        return
    if pending.startswith("~"):
        o = (subject, pending[1:], gi)
        if o not in res.open_relations:
            res.open_relations.append(o)
        return
    r = (subject, pending, gi)
    if r not in res.relations:
        res.relations.append(r)


def _geneval_tag(res: _Result, spec: Spec) -> str | None:
    ents = spec.entities
    if not res.framed or spec.background or spec.style:
        return None
    n_excl = len(spec.exclusions)
    counted = [e for e in ents if e.count > 1]
    if any(e.pattern or e.size for e in ents):
        return None
    if len(ents) == 1 and not spec.relations:
        e = ents[0]
        if e.count == 1 and n_excl == 0:
            return "colors" if e.color else "single_object"
        if e.count > 1 and not e.color and spec.exclusions == (Exclusion(e.noun, e.count + 1),):
            return "counting"
        return None
    if len(ents) == 2 and not counted and n_excl == 0:
        if len(spec.relations) == 1 and not any(e.color for e in ents):
            return "position"
        if not spec.relations:
            if all(e.color for e in ents):
                return "color_attr"
            if not any(e.color for e in ents):
                return "two_object"
    return None


def _exclusions(res: _Result) -> tuple[Exclusion, ...]:
    """Exclusions of the prompt, checked against its groups; counted ones merged per noun.

    An explicit count ("two cats") means exactly that many: ``Exclusion(noun, N + 1)``. Several counted groups
    of one noun ("two red cats and three blue cats") give one exclusion of the total plus one; a noun also
    asked for without a number keeps no count exclusion (reported in ``unexpressed``).

    "No cats" and a cat group together is a contradiction (an error) when the cats are counted or in the
    same sentence as "no cats"; sentences apart (long prose: "a piano plays ... no piano is visible") the
    exclusion is dropped and reported in ``unexpressed``.

    Raises:
        ParseError: a contradiction, or more than :data:`MAX_COUNT` of one noun in all.
    """
    total: dict[str, int] = {}
    vague: set[str] = set()
    near: set[str] = set()  # nouns asked for with a number, or in the sentence of their "no <noun>"
    for g in res.groups:
        if g.explicit or res.excl_sentence.get(g.noun) == g.sentence:
            near.add(g.noun)
        total[g.noun] = total.get(g.noun, 0) + g.count
        if not g.explicit and g.count > 1:
            vague.add(g.noun)
    seen: dict[tuple[str, int], None] = {}
    for noun, c in res.exclusions:
        if c == 1:
            if noun in near:
                raise ParseError(
                    f"the prompt asks for {noun} and for no {noun} at once (a contradiction); remove one of them."
                )
            if noun in total:  # far apart in long prose ("a piano plays ... no piano is visible"): reported
                res.unexpressed.append(f"no {noun} (dropped: the prompt also asks for a {noun})")
                continue
            seen.setdefault((noun, 1), None)
            continue
        if noun in vague:
            res.unexpressed.append(f"exactly {total[noun]} {noun} (mixed with an uncounted mention)")
            continue
        if total[noun] + 1 > MAX_COUNT + 1:
            raise ParseError(
                f"the prompt asks for {total[noun]} {noun} in all, more than {MAX_COUNT}; ask for fewer."
            )
        seen.setdefault((noun, total[noun] + 1), None)
    return tuple(Exclusion(noun, c) for noun, c in seen)


def _to_spec(res: _Result, prompt: str, *, open_vocab: bool = False) -> Spec:
    entities = tuple(Entity(g.noun, g.count, g.color, g.pattern, g.size) for g in res.groups)
    relations = tuple(Relation(s, r, o) for s, r, o in res.relations if r is not None)
    exclusions = _exclusions(res)
    open_attrs: list[OpenAttribute] = []
    open_rels: list[OpenRelation] = []
    for gi, g in enumerate(res.groups):
        for w in g.extra:
            res.unexpressed.append(f"{w} (a second value for the {g.noun})")
        for a in dict.fromkeys(g.open_attrs):
            if open_vocab and a not in _ATTR_WORDS:
                open_attrs.append(OpenAttribute(gi, a))
            else:
                res.unexpressed.append(f"{a} (of the {g.noun})")
    for s_, r, o in res.open_relations:
        phrase = f"the {res.groups[s_].noun} {r} the {res.groups[o].noun}"
        if open_vocab and s_ != o:
            open_rels.append(OpenRelation(s_, r, o))
        else:
            res.unexpressed.append(phrase)
    unexpressed = tuple(dict.fromkeys(res.unexpressed))
    spec = Spec(entities, relations, exclusions, res.background, res.style, prompt, None)
    tag = _geneval_tag(res, spec)
    if tag is None and (
        len(entities) > 2 or len(relations) > 1 or spec.background or spec.style
        or any(e.pattern or e.size for e in entities)
        or (len(entities) == 2 and any(e.count > 1 for e in entities))
    ):
        tag = "long"
    return Spec(entities, relations, exclusions, res.background, res.style, prompt, tag,
                open_attributes=tuple(open_attrs), open_relations=tuple(open_rels), unexpressed=unexpressed)


_QUOTED = re.compile(r"(?<![a-z0-9])'[^'\n]{1,80}?'(?![a-z0-9])|\"[^\"\n]{1,80}?\"|[“][^”\n]{1,80}?[”]")
_ENCLOSING_QUOTES = re.compile(r"^[\"“']+(.*?)[\"”']*$", re.S)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_SEPARATING = frozenset("\x00\x0b\x0c\x1c\x1d\x1e\x1f\x85")  # controls that separate words ("cat\x00dog")
_NEGATIVE = re.compile(r"(?<![\w.])[-\u2212]\s?\d+(?:\.\d+)?\s+([a-z][a-z'-]*)")
_FRACTION = re.compile(r"(?<![\w.])\d+[.]\d+\s+([a-z][a-z'-]*)")


def _check_text(arg: str, text: object, example: str) -> str:
    """The prompt with control and invisible formatting characters removed (tabs and newlines kept).

    Raises:
        ParseError: not a string, empty or longer than :data:`MAX_PROMPT_CHARS`.
    """
    if not isinstance(text, str):
        raise ParseError(
            f"{arg}={text!r} is a {type(text).__name__}, not a string; pass the prompt text, e.g. {example!r}."
        )
    if len(text) > MAX_PROMPT_CHARS:
        raise ParseError(
            f"{arg} has {len(text)} characters, more than MAX_PROMPT_CHARS={MAX_PROMPT_CHARS}; shorten it."
        )
    raw: str = text

    def _replace(m: re.Match[str]) -> str:
        between_words = m.start() > 0 and m.end() < len(raw) and not raw[m.start() - 1].isspace() and (
            not raw[m.end()].isspace())
        return " " if between_words and m.group(0) in _SEPARATING else ""

    text = _CONTROL.sub(_replace, raw)
    if not text.strip():
        raise ParseError(f"{arg}={text!r} is empty; pass a prompt that names something to draw, e.g. {example!r}.")
    return text


def _check_english(text: str) -> None:
    """Refuse a prompt mostly in other letters than English ones, or with more foreign function words than
    English ones (at least two of them)."""
    letters = [ch for ch in text if ch.isalpha()]
    if letters and sum(1 for ch in letters if not ch.isascii()) > 0.3 * len(letters):
        raise ParseError(f"prompt={_short(text)!r} is mostly not in English letters; {_LLM_HINT}.")
    words = re.findall(r"[^\W\d_]+", text.lower())
    foreign = sum(w in _FOREIGN for w in words)
    if foreign >= 2 and foreign > sum(w in _ENGLISH for w in words):
        raise ParseError(f"prompt={_short(text)!r} has mostly words that are not English; {_LLM_HINT}.")


#: Text addressed to a model rather than describing a picture ("ignore previous instructions", "system prompt",
#: "you are a ..."): refused, never read as objects.
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|preceding)\s+"
    r"(instructions?|prompts?|messages?|rules?)\b|\bsystem\s+prompt\b|\byou\s+are\s+(now\s+)?(an?\s+)?"
    r"(ai|assistant|language\s+model|chatbot|llm)\b|\b(reveal|print|output|repeat)\s+(your|the)\s+"
    r"(instructions|prompt|system\s+prompt)\b",
    re.IGNORECASE,
)


def _check_instructions(text: str) -> None:
    """Refuse text that instructs a model instead of describing an image (it would otherwise become objects)."""
    m = _INSTRUCTION.search(text)
    if m:
        raise ParseError(
            f"prompt={_short(text)!r} contains {m.group(0)!r}, an instruction to a model, not a description of a "
            "picture; describe what the image shows, e.g. 'two red clocks left of a blue dog'."
        )


def _check_numbers(body: str) -> None:
    """Refuse counts a spec cannot hold: negative ("-3 cats") or fractional ("2.5 cats") before a plural noun."""
    for rx, what in ((_NEGATIVE, "negative"), (_FRACTION, "not a whole number")):
        for m in rx.finditer(body):
            word = m.group(1)
            if singular(word) != word:
                raise ParseError(
                    f"{m.group(0).strip()!r}: the count is {what}; a count is a whole number from 1 to {MAX_COUNT} "
                    f"(use 'no {word}' for none)."
                )


def clean_prompt(prompt: str) -> str:
    """``prompt`` with control and invisible formatting characters removed, checked for any decomposer.

    Raises:
        ParseError: not a string, empty (after removal) or longer than :data:`MAX_PROMPT_CHARS`.
    """
    return _check_text("prompt", prompt, "two red clocks left of a blue dog")


def parse(prompt: str, *, open_vocab: bool = False) -> Spec:
    """Parse an English prompt into a :class:`~poser_env.core.spec.Spec` (see the module docstring).

    Args:
        prompt: The prompt, 1 to :data:`MAX_PROMPT_CHARS` characters, naming at least one object or a
            background. Control and invisible formatting characters are removed first.
        open_vocab: Keep adjectives and relations outside SceneSim's vocabulary as open attributes and
            relations (for real models and VLM critics). When False (the default, SceneSim) they are listed in
            ``spec.unexpressed`` instead.

    Returns:
        The spec; ``spec.prompt`` is the prompt (control characters removed), ``spec.tag`` a GenEval tag,
        ``"long"`` or None; ``spec.unexpressed`` what was read but could not be expressed.

    Raises:
        ParseError: ``prompt`` is not a string, is empty, too long or not English; names nothing drawable;
            asks for a count outside 1..:data:`MAX_COUNT` (negative, fractional, above the maximum), two
            colours side by side for one object ("a red blue car"), an exclusion of only some colour
            ("no red cats"), something and its absence at once ("two cats and no cats"), or instructions to a
            model ("ignore previous instructions", "system prompt").
    """
    text = _check_text("prompt", prompt, "two red clocks left of a blue dog")
    _check_english(text)
    _check_instructions(text)
    res = _run(text)
    if not res.groups and res.background is None:
        raise ParseError(
            f"prompt={_short(text)!r} names nothing drawable (no object and no background); "
            "name at least one object, e.g. 'a red clock', or a background such as 'on grass'; "
            f"{_LLM_HINT}."
        )
    return _to_spec(res, text, open_vocab=open_vocab)


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
