"""The prompt specification: a checklist of atomic assertions.

A :class:`Spec` is what a decomposer makes of a prompt and what critics and the judge check an image
against. It mirrors GenEval's metadata (``include`` groups with ``class``/``count``/``color``/``position``
and ``exclude`` groups), extended for long prompts with patterns, sizes, relations between any two groups,
a background and a style.

Every atomic assertion has a stable id derived from its place in the spec (never from Python's salted
``hash()``), so the same prompt always yields the same ids:

==============  ===============================================  ==========================
id              meaning                                          kind
==============  ===============================================  ==========================
``e{i}.exists``   group *i* is present (its count is 1)            ``exists``
``e{i}.count``    at least ``count`` of group *i* (count >= 2)     ``count``
``e{i}.color``    every counted member of group *i* has the colour ``color``
``e{i}.pattern``  ... the pattern                                  ``pattern``
``e{i}.size``     ... the size                                     ``size``
``r{j}``          relation *j* between two groups holds            ``relation``
``x{k}``          fewer than ``count`` of noun *k* (exclusion)     ``exclusion``
``background``    the background is ``background``                 ``background``
``style``         the style is ``style``                           ``style``
``a{m}``          open attribute *m* holds ("the scarf is teal")   ``attribute``
``o{m}``          open relation *m* holds ("the bowl is inside      ``open_relation``
                  the basket")
==============  ===============================================  ==========================

**Open spec.** Real models can draw and judge more than SceneSim's closed vocabulary. Attributes and
relations outside it are kept as open strings (:class:`OpenAttribute`, :class:`OpenRelation`): their
assertions carry the words, so a VLM critic asks about them; SceneSim cannot draw or judge them, and
:meth:`Spec.require_closed` says so by name. :attr:`Spec.unexpressed` lists what a decomposer read but
could not put into the spec at all (reported, never silently dropped).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from poser_env.core.text import noun_phrase, plural

__all__ = [
    "ASSERTION_KINDS",
    "BACKGROUNDS",
    "CLOSED_KINDS",
    "COLORS",
    "COLOR_RGB",
    "GENEVAL_COLORS",
    "GENEVAL_RELATIONS",
    "GENEVAL_TAGS",
    "OPEN_KINDS",
    "PATTERNS",
    "RELATIONS",
    "SIZES",
    "STYLES",
    "Assertion",
    "Entity",
    "Exclusion",
    "OpenAttribute",
    "OpenRelation",
    "Relation",
    "Spec",
    "SpecError",
]

#: GenEval's ten colours, in its order.
GENEVAL_COLORS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)
#: Every colour SceneSim draws and the parser knows (GenEval's ten plus gray).
COLORS: tuple[str, ...] = (*GENEVAL_COLORS, "gray")
#: A prototype sRGB value (0..255) of each colour name: SceneSim's fill colours, and the references of the
#: real-image judge's pixel colour classifier.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (214, 38, 40),
    "orange": (246, 134, 24),
    "yellow": (246, 216, 34),
    "green": (44, 160, 66),
    "blue": (34, 84, 214),
    "purple": (136, 56, 186),
    "pink": (246, 132, 190),
    "brown": (128, 76, 36),
    "black": (24, 24, 28),
    "white": (250, 250, 250),
    "gray": (140, 140, 140),
}
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
SIZES: tuple[str, ...] = ("small", "medium", "large")
#: GenEval's four position relations.
GENEVAL_RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
#: Every relation between two groups the spec can hold (canonical spelling).
RELATIONS: tuple[str, ...] = (*GENEVAL_RELATIONS, "next to", "on top of", "under")
#: Named backgrounds of SceneSim (canonical spelling).
BACKGROUNDS: tuple[str, ...] = ("plain", "sky", "grass", "wooden table", "night", "sand")
#: Named styles of SceneSim (canonical spelling).
STYLES: tuple[str, ...] = ("photo", "watercolor", "sketch", "pixel art")
GENEVAL_TAGS: tuple[str, ...] = (
    "single_object", "two_object", "counting", "colors", "position", "color_attr",
)
AssertionKind = Literal[
    "exists", "count", "color", "pattern", "size", "relation", "exclusion", "background", "style",
    "attribute", "open_relation",
]
#: Kinds SceneSim can draw and judge (its closed vocabulary).
CLOSED_KINDS: tuple[str, ...] = (
    "exists", "count", "color", "pattern", "size", "relation", "exclusion", "background", "style",
)
#: Kinds of the open spec (free words; for real models and VLM critics).
OPEN_KINDS: tuple[str, ...] = ("attribute", "open_relation")
ASSERTION_KINDS: tuple[str, ...] = (*CLOSED_KINDS, *OPEN_KINDS)
#: Longest open attribute or relation string, in characters.
MAX_OPEN_CHARS = 40


class SpecError(ValueError):
    """A spec (or the text it came from) that cannot be used; the message names the fix."""


def _check_choice(arg: str, value: str | None, choices: Sequence[str]) -> None:
    if value is not None and value not in choices:
        raise SpecError(f"{arg}={value!r} is not one of {list(choices)}; use one of those or None.")


@dataclass(frozen=True)
class Entity:
    """A group of identical objects: ``count`` x ``noun`` with optional attributes.

    Attributes:
        noun: Singular noun, lower case, may be several words ("teddy bear"). Any noun is allowed.
        count: How many, 1 to 10 (an "exists" assertion when 1, a "count" assertion otherwise).
        color: One of :data:`COLORS` or None for "any".
        pattern: One of :data:`PATTERNS` or None.
        size: One of :data:`SIZES` or None.
    """

    noun: str
    count: int = 1
    color: str | None = None
    pattern: str | None = None
    size: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.noun, str) or not self.noun.strip():
            raise SpecError(f"Entity noun={self.noun!r} must be a non-empty string such as 'cup'.")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or not 1 <= self.count <= 10:
            raise SpecError(f"Entity count={self.count!r} must be an int from 1 to 10.")
        _check_choice("Entity color", self.color, COLORS)
        _check_choice("Entity pattern", self.pattern, PATTERNS)
        _check_choice("Entity size", self.size, SIZES)

    def phrase(self) -> str:
        """English phrase for the group, e.g. ``"two small striped red clocks"``."""
        return noun_phrase(self.noun, self.count, self.color, self.pattern, self.size)


@dataclass(frozen=True)
class Relation:
    """``entities[subject] <relation> entities[reference]`` (e.g. dog *right of* teddy bear)."""

    subject: int
    relation: str
    reference: int

    def __post_init__(self) -> None:
        _check_choice("Relation relation", self.relation, RELATIONS)
        if self.subject == self.reference:
            raise SpecError(
                f"Relation subject={self.subject} equals reference={self.reference}; a relation "
                "needs two different groups."
            )


@dataclass(frozen=True)
class Exclusion:
    """Fewer than ``count`` objects of ``noun`` (GenEval's ``exclude``; count 1 means "no noun")."""

    noun: str
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.noun, str) or not self.noun.strip():
            raise SpecError(f"Exclusion noun={self.noun!r} must be a non-empty string.")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or not 1 <= self.count <= 11:
            raise SpecError(f"Exclusion count={self.count!r} must be an int from 1 to 11.")


def _check_open(arg: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_OPEN_CHARS or value != value.strip().lower() \
            or any(not (ch.isalnum() or ch in " -'") for ch in value):
        raise SpecError(
            f"{arg}={value!r} must be a lower-case phrase of letters, digits, spaces, '-' or \"'\", "
            f"1 to {MAX_OPEN_CHARS} characters, e.g. 'teal' or 'inside'."
        )
    return value


@dataclass(frozen=True)
class OpenAttribute:
    """An attribute outside SceneSim's vocabulary: ``entities[entity]`` is ``value`` ("teal", "wooden").

    A value that the closed vocabulary holds (a colour of :data:`COLORS`, a pattern, a size) is refused:
    put it in the :class:`Entity` instead.
    """

    entity: int
    value: str

    def __post_init__(self) -> None:
        _check_open("OpenAttribute value", self.value)
        if self.value in COLORS or self.value in PATTERNS or self.value in SIZES:
            raise SpecError(
                f"OpenAttribute value={self.value!r} is in the closed vocabulary; set Entity.color/pattern/size."
            )


@dataclass(frozen=True)
class OpenRelation:
    """A relation outside :data:`RELATIONS`: ``entities[subject] <relation> entities[reference]``
    ("inside", "in front of", "behind")."""

    subject: int
    relation: str
    reference: int

    def __post_init__(self) -> None:
        _check_open("OpenRelation relation", self.relation)
        if self.relation in RELATIONS:
            raise SpecError(f"OpenRelation relation={self.relation!r} is a closed relation; use Relation.")
        if self.subject == self.reference:
            raise SpecError(
                f"OpenRelation subject={self.subject} equals reference={self.reference}; a relation needs two groups."
            )


@dataclass(frozen=True)
class Assertion:
    """One atomic, checkable statement about an image.

    Attributes:
        id: Stable id (see the module docstring), unique within its spec.
        kind: One of :data:`ASSERTION_KINDS`.
        text: Short English statement, e.g. ``"the dog is right of the teddy bear"``.
        entity: Index of the group it concerns (subject for relations), or None.
        reference: Index of the reference group of a relation, else None.
        value: The required value (colour, pattern, size, relation, background, style) or None.
        count: The required count (count and exclusion kinds), else None.
    """

    id: str
    kind: str
    text: str
    entity: int | None = None
    reference: int | None = None
    value: str | None = None
    count: int | None = None


@dataclass(frozen=True)
class Spec:
    """Everything a prompt asks for. Immutable; build one with the parser or by hand.

    Attributes:
        entities: The groups, in mention order.
        relations: Relations between groups, by index into ``entities``.
        exclusions: Things that must not be there (GenEval ``exclude``).
        background: One of :data:`BACKGROUNDS` or None.
        style: One of :data:`STYLES` or None.
        prompt: The source text ("" when built by hand).
        tag: Optional task tag (GenEval's six or ``"long"``).
        open_attributes: Attributes outside SceneSim's vocabulary (open spec).
        open_relations: Relations outside :data:`RELATIONS` (open spec).
        unexpressed: Phrases of the prompt the decomposer read but could not express (reported, not
            checked; not part of equality).
    """

    entities: tuple[Entity, ...]
    relations: tuple[Relation, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()
    background: str | None = None
    style: str | None = None
    prompt: str = ""
    tag: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    open_attributes: tuple[OpenAttribute, ...] = ()
    open_relations: tuple[OpenRelation, ...] = ()
    unexpressed: tuple[str, ...] = field(default=(), compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entities", tuple(self.entities))
        object.__setattr__(self, "relations", tuple(self.relations))
        object.__setattr__(self, "exclusions", tuple(self.exclusions))
        object.__setattr__(self, "open_attributes", tuple(self.open_attributes))
        object.__setattr__(self, "open_relations", tuple(self.open_relations))
        object.__setattr__(self, "unexpressed", tuple(self.unexpressed))
        n = len(self.entities)
        for oa in self.open_attributes:
            if not 0 <= oa.entity < n:
                raise SpecError(f"OpenAttribute entity={oa.entity} is out of range for {n} entities.")
        pairs: list[tuple[int, int]] = [(r.subject, r.reference) for r in self.relations]
        pairs += [(r.subject, r.reference) for r in self.open_relations]
        for subject, reference in pairs:
            for arg, idx in (("subject", subject), ("reference", reference)):
                if not 0 <= idx < n:
                    raise SpecError(
                        f"Relation {arg}={idx} is out of range for {n} entities; indices count from 0."
                    )
        _check_choice("Spec background", self.background, BACKGROUNDS)
        _check_choice("Spec style", self.style, STYLES)

    # ------------------------------------------------------------------ assertions
    def assertions(self) -> tuple[Assertion, ...]:
        """The atomic assertions, in a fixed order (entities, relations, exclusions, scene).

        Built once per spec (a spec is immutable; the env, critic and judge ask for them several times a step).
        """
        cached: tuple[Assertion, ...] | None = self.__dict__.get("_assertions")
        if cached is None:
            cached = self._build_assertions()
            object.__setattr__(self, "_assertions", cached)
        return cached

    def _build_assertions(self) -> tuple[Assertion, ...]:
        out: list[Assertion] = []
        for i, e in enumerate(self.entities):
            base = e.phrase()
            if e.count == 1:
                out.append(Assertion(f"e{i}.exists", "exists", f"there is {base}", entity=i, count=1))
            else:
                out.append(Assertion(f"e{i}.count", "count", f"there are {base}", entity=i, count=e.count))
            who = f"the {plural(e.noun) if e.count > 1 else e.noun}"
            verb = "are" if e.count > 1 else "is"
            if e.color is not None:
                out.append(Assertion(f"e{i}.color", "color", f"{who} {verb} {e.color}", entity=i, value=e.color))
            if e.pattern is not None:
                out.append(
                    Assertion(f"e{i}.pattern", "pattern", f"{who} {verb} {e.pattern}", entity=i, value=e.pattern)
                )
            if e.size is not None:
                out.append(Assertion(f"e{i}.size", "size", f"{who} {verb} {e.size}", entity=i, value=e.size))
        for j, r in enumerate(self.relations):
            s, ref = self.entities[r.subject], self.entities[r.reference]
            out.append(
                Assertion(
                    f"r{j}", "relation", f"the {s.noun} is {r.relation} the {ref.noun}",
                    entity=r.subject, reference=r.reference, value=r.relation,
                )
            )
        for k, x in enumerate(self.exclusions):
            text = f"there is no {x.noun}" if x.count == 1 else f"there are fewer than {x.count} {plural(x.noun)}"
            out.append(Assertion(f"x{k}", "exclusion", text, value=x.noun, count=x.count))
        if self.background is not None:
            out.append(Assertion("background", "background", f"the background is {self.background}",
                                 value=self.background))
        if self.style is not None:
            out.append(Assertion("style", "style", f"the style is {self.style}", value=self.style))
        for m, oa in enumerate(self.open_attributes):
            e = self.entities[oa.entity]
            who = f"the {plural(e.noun) if e.count > 1 else e.noun}"
            out.append(Assertion(f"a{m}", "attribute", f"{who} {'are' if e.count > 1 else 'is'} {oa.value}",
                                 entity=oa.entity, value=oa.value))
        for m, orl in enumerate(self.open_relations):
            s_, ref = self.entities[orl.subject], self.entities[orl.reference]
            out.append(Assertion(f"o{m}", "open_relation", f"the {s_.noun} is {orl.relation} the {ref.noun}",
                                 entity=orl.subject, reference=orl.reference, value=orl.relation))
        return tuple(out)

    @property
    def is_closed(self) -> bool:
        """Whether every assertion is in SceneSim's closed vocabulary (no open attributes or relations)."""
        return not self.open_attributes and not self.open_relations

    def require_closed(self, who: str = "SceneSim") -> None:
        """Raise :class:`SpecError` naming the open assertions when the spec has any.

        Args:
            who: What cannot draw or judge them (named in the message), e.g. ``"SceneSim"``.
        """
        if self.is_closed:
            return
        texts = [a.text for a in self.assertions() if a.kind in OPEN_KINDS]
        raise SpecError(
            f"the prompt needs {len(texts)} assertion(s) outside {who}'s vocabulary ({'; '.join(texts[:5])}); "
            f"{who} draws and judges only colours {list(COLORS)}, patterns, sizes, relations {list(RELATIONS)}, "
            "backgrounds and styles. Use real-model experts with a VLM critic, or call spec.closed() to drop "
            "them (they are then listed in spec.unexpressed)."
        )

    def closed(self) -> Spec:
        """This spec without open attributes and relations; they are moved to :attr:`unexpressed` (reported)."""
        if self.is_closed:
            return self
        moved = tuple(a.text for a in self.assertions() if a.kind in OPEN_KINDS)
        return replace(self, open_attributes=(), open_relations=(), unexpressed=(*self.unexpressed, *moved))

    def assertion(self, assertion_id: str) -> Assertion:
        """The assertion with this id; raises KeyError naming the known ids."""
        for a in self.assertions():
            if a.id == assertion_id:
                return a
        raise KeyError(f"assertion_id={assertion_id!r} not in this spec; known: {[a.id for a in self.assertions()]}")

    @property
    def nouns(self) -> tuple[str, ...]:
        """Distinct nouns the prompt mentions (entities then exclusions), in order."""
        seen: dict[str, None] = {}
        for e in self.entities:
            seen.setdefault(e.noun, None)
        for x in self.exclusions:
            seen.setdefault(x.noun, None)
        return tuple(seen)

    # ------------------------------------------------------------------ GenEval format
    def to_geneval(self) -> dict[str, Any]:
        """GenEval metadata (``include``/``exclude``/``prompt``/``tag``), extended for long prompts.

        GenEval lists a position's reference group first: ``"a dog right of a teddy bear"`` becomes
        ``include=[teddy bear, dog with position ["right of", 0]]``. For specs with exactly one relation
        whose reference comes after its subject, groups are reordered that way. Extensions (patterns,
        sizes, extra relations, background, style) go into extra keys that GenEval ignores.
        """
        order = list(range(len(self.entities)))
        if len(self.relations) == 1:
            r = self.relations[0]
            if r.reference > r.subject:
                order.remove(r.reference)
                order.insert(r.subject, r.reference)
        pos = {old: new for new, old in enumerate(order)}
        include: list[dict[str, Any]] = []
        for old in order:
            e = self.entities[old]
            item: dict[str, Any] = {"class": e.noun, "count": e.count}
            if e.color is not None:
                item["color"] = e.color
            if e.pattern is not None:
                item["pattern"] = e.pattern
            if e.size is not None:
                item["size"] = e.size
            include.append(item)
        extra: list[list[Any]] = []
        for r in self.relations:
            subj = include[pos[r.subject]]
            if "position" not in subj:
                subj["position"] = [r.relation, pos[r.reference]]
            else:
                extra.append([pos[r.subject], r.relation, pos[r.reference]])
        out: dict[str, Any] = {}
        if self.tag is not None:
            out["tag"] = self.tag
        out["include"] = include
        if self.exclusions:
            out["exclude"] = [{"class": x.noun, "count": x.count} for x in self.exclusions]
        if extra:
            out["relations"] = extra
        if self.background is not None:
            out["background"] = self.background
        if self.style is not None:
            out["style"] = self.style
        if self.open_attributes:
            out["attributes"] = [[pos[oa.entity], oa.value] for oa in self.open_attributes]
        if self.open_relations:
            out["open_relations"] = [[pos[r.subject], r.relation, pos[r.reference]] for r in self.open_relations]
        if self.unexpressed:
            out["unexpressed"] = list(self.unexpressed)
        out["prompt"] = self.prompt
        return out

    @classmethod
    def from_geneval(cls, meta: Mapping[str, Any]) -> Spec:
        """Build a spec from one GenEval metadata record (or our extended form).

        Raises:
            SpecError: naming the missing or malformed field.
        """
        if not isinstance(meta, Mapping) or "include" not in meta:
            raise SpecError(
                f"GenEval record {str(meta)[:80]!r} has no 'include' list; each line needs "
                "{'include': [{'class': ..., 'count': ...}], 'prompt': ...}."
            )
        entities: list[Entity] = []
        relations: list[Relation] = []
        for i, item in enumerate(meta["include"]):
            if "class" not in item:
                raise SpecError(f"include[{i}]={item!r} has no 'class'; add the object name.")
            entities.append(
                Entity(
                    noun=str(item["class"]),
                    count=int(item.get("count", 1)),
                    color=item.get("color"),
                    pattern=item.get("pattern"),
                    size=item.get("size"),
                )
            )
            if item.get("position"):
                rel, ref = item["position"]
                relations.append(Relation(subject=i, relation=str(rel), reference=int(ref)))
        for subj, rel, ref in meta.get("relations", []):
            relations.append(Relation(subject=int(subj), relation=str(rel), reference=int(ref)))
        exclusions = tuple(
            Exclusion(noun=str(x["class"]), count=int(x.get("count", 1))) for x in meta.get("exclude", [])
        )
        try:
            open_attrs = tuple(OpenAttribute(int(i), str(v)) for i, v in meta.get("attributes", []))
            open_rels = tuple(OpenRelation(int(a), str(r), int(b)) for a, r, b in meta.get("open_relations", []))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(
                "'attributes' must list [entity_index, value] pairs and 'open_relations' [subject, relation, "
                f"reference] triples; got {meta.get('attributes')!r} / {meta.get('open_relations')!r}."
            ) from exc
        return cls(
            entities=tuple(entities),
            relations=tuple(relations),
            exclusions=exclusions,
            background=meta.get("background"),
            style=meta.get("style"),
            prompt=str(meta.get("prompt", "")),
            tag=meta.get("tag"),
            open_attributes=open_attrs,
            open_relations=open_rels,
            unexpressed=tuple(str(u) for u in meta.get("unexpressed", [])),
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of :meth:`to_geneval`; stable across processes."""
        return json.dumps(self.to_geneval(), sort_keys=True)


def read_geneval_jsonl(path: str, *, limit: int | None = None) -> list[Spec]:
    """Read a GenEval-format JSONL file into specs.

    Raises:
        SpecError: naming the file and line of a malformed record.
    """
    specs: list[Spec] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                specs.append(Spec.from_geneval(json.loads(line)))
            except (json.JSONDecodeError, SpecError, TypeError, ValueError) as exc:
                raise SpecError(f"{path}:{lineno}: {exc}") from exc
            if limit is not None and len(specs) >= limit:
                break
    return specs


def write_geneval_jsonl(path: str, specs: Iterable[Spec]) -> None:
    """Write specs as GenEval-format JSONL (one record a line)."""
    with open(path, "w", encoding="utf-8") as fh:
        for s in specs:
            fh.write(json.dumps(s.to_geneval()) + "\n")
