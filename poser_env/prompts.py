"""The project's own prompt generators: GenEval-style prompts and long compositional prompts.

Both produce :class:`~poser_env.core.spec.Spec` objects carrying the ground truth (``spec.prompt`` is the text) and
can be written as GenEval-format JSONL (:func:`write_jsonl`; long prompts use the extended form of
:meth:`Spec.to_geneval`).

Splits. Every prompt text belongs to exactly one split, fixed by a stable hash of the text (about a quarter of
all texts are ``"test"``), so no prompt text is ever in both splits, whatever ``seed`` or ``n`` is asked for.
The test split is for evaluation only: never train on it.

* :func:`geneval_style` - GenEval's six tags (``single_object``, ``two_object``, ``counting``, ``colors``,
  ``position``, ``color_attr``) with GenEval's phrasings (``"a photo of a dog right of a teddy bear"``) over a
  vocabulary of the 80 COCO nouns plus :data:`EXTRA_NOUNS`. Counting asks for 2-4 objects with an exclusion
  of ``count + 1`` (exact count), as GenEval does.
* :func:`long_prompts` - 4 to 10 entity groups with counts, colours, patterns, sizes, 1-4 relations between
  groups, a background and a style; 40-120 words; several phrasings per construct; at most
  :data:`MAX_OBJECTS` objects in all so the scene fits a 128-pixel canvas.
* :class:`PromptSource` - draws specs from a fixed pool with a ``numpy.random.Generator``.

A tag has only so many distinct texts (``single_object`` has one per noun); when ``n`` asks for more, the
distinct texts are repeated in order (the pool stays valid, some prompts appear more than once).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from poser_env.core.spec import (
    BACKGROUNDS,
    GENEVAL_COLORS,
    GENEVAL_RELATIONS,
    GENEVAL_TAGS,
    PATTERNS,
    SIZES,
    STYLES,
    Entity,
    Exclusion,
    Relation,
    Spec,
)
from poser_env.core.text import noun_phrase, number_word, plural, singular, stable_hash

__all__ = [
    "COCO_NOUNS",
    "COUNTABLE_NOUNS",
    "EXTRA_NOUNS",
    "LONG_RELATIONS",
    "MAX_OBJECTS",
    "NOUNS",
    "SPLITS",
    "PromptSource",
    "geneval_style",
    "long_prompts",
    "split_of",
    "write_jsonl",
]

SPLITS: tuple[str, ...] = ("train", "test")
#: Most objects (summed counts) a long prompt asks for.
MAX_OBJECTS: int = 12

#: The 80 COCO object names as GenEval spells them.
COCO_NOUNS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
#: Nouns beyond COCO (SceneSim draws any noun).
EXTRA_NOUNS: tuple[str, ...] = (
    "robot", "lantern", "guitar", "lamp", "drum", "rocket", "tree", "flower", "house", "balloon", "candle",
    "crown", "shoe", "hat", "key", "ladder", "mushroom", "owl", "penguin", "fox", "rabbit", "turtle", "whale",
    "snail", "feather", "anchor", "bell", "bucket", "basket", "kettle", "teapot", "violin", "trumpet", "piano",
    "globe", "camera", "helmet", "lighthouse", "windmill", "cactus", "pumpkin", "lemon", "cherry",
    "strawberry", "pineapple", "coin", "castle", "dragon", "unicorn", "snowman", "bicycle helmet", "tent",
    "sailboat", "kangaroo", "flamingo", "octopus", "butterfly", "bee", "frog", "duck",
)
NOUNS: tuple[str, ...] = COCO_NOUNS + EXTRA_NOUNS
#: Nouns whose plural reads back to the same singular (used wherever a count above one is asked for).
COUNTABLE_NOUNS: tuple[str, ...] = tuple(n for n in NOUNS if singular(plural(n)) == n)

#: Share of prompt texts (by stable hash) that belong to the test split.
_TEST_SHARE = 4  # 1 in 4

# ------------------------------------------------------------------ phrasings of long prompts
#: Relation -> phrasings of it in long prompts (the first is the canonical spelling).
LONG_RELATIONS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below",),
    "next to": ("next to", "beside"),
    "on top of": ("on top of",),
    "under": ("under", "underneath"),
}
_STYLE_OPENERS: tuple[str, ...] = (
    "An image in {style} style.",
    "The style is {style}.",
    "Rendered in {style} style.",
)
_BACKGROUND_SENTENCES: tuple[str, ...] = (
    "The background is {bg}.",
    "Everything is set against a {bg} background.",
    "Use a {bg} background.",
)
_ENTITY_SENTENCES: tuple[str, ...] = (
    "There {be} {phrase}.",
    "The image shows {phrase}.",
    "You can see {phrase}.",
    "It includes {phrase}.",
    "Add {phrase}.",
)
_RELATION_SENTENCES: tuple[str, ...] = (
    "The {subj} {be} {rel} the {ref}.",
    "Place the {subj} {rel} the {ref}.",
    "Put the {subj} {rel} the {ref}.",
)


def split_of(prompt: str) -> str:
    """The split (``"train"`` or ``"test"``) a prompt text belongs to, from a stable hash of the text."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt={prompt!r} must be a string.")
    return "test" if stable_hash("poser-split", prompt.strip().lower()) % _TEST_SHARE == 0 else "train"


def _check(split: str, n: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}; the test split is for evaluation only.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r} must be an int >= 0 (how many prompts).")


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _geneval_one(tag: str, rng: np.random.Generator) -> Spec:
    def two_nouns() -> tuple[str, str]:
        i, j = rng.choice(len(NOUNS), size=2, replace=False)
        return NOUNS[int(i)], NOUNS[int(j)]

    if tag == "single_object":
        noun = _pick(rng, NOUNS)
        ents: tuple[Entity, ...] = (Entity(noun),)
        return Spec(ents, prompt=f"a photo of {noun_phrase(noun)}", tag=tag)
    if tag == "two_object":
        a, b = two_nouns()
        return Spec((Entity(a), Entity(b)), prompt=f"a photo of {noun_phrase(a)} and {noun_phrase(b)}", tag=tag)
    if tag == "counting":
        noun = _pick(rng, COUNTABLE_NOUNS)
        count = int(rng.integers(2, 5))
        return Spec((Entity(noun, count=count),), exclusions=(Exclusion(noun, count + 1),),
                    prompt=f"a photo of {number_word(count)} {plural(noun)}", tag=tag)
    if tag == "colors":
        noun, color = _pick(rng, NOUNS), _pick(rng, GENEVAL_COLORS)
        return Spec((Entity(noun, color=color),), prompt=f"a photo of {noun_phrase(noun, color=color)}", tag=tag)
    if tag == "position":
        a, b = two_nouns()
        rel = _pick(rng, GENEVAL_RELATIONS)
        return Spec((Entity(a), Entity(b)), (Relation(0, rel, 1),),
                    prompt=f"a photo of {noun_phrase(a)} {rel} {noun_phrase(b)}", tag=tag)
    if tag == "color_attr":
        a, b = two_nouns()
        ca, cb = (GENEVAL_COLORS[int(k)] for k in rng.choice(len(GENEVAL_COLORS), size=2, replace=False))
        return Spec((Entity(a, color=ca), Entity(b, color=cb)),
                    prompt=f"a photo of {noun_phrase(a, color=ca)} and {noun_phrase(b, color=cb)}", tag=tag)
    raise ValueError(f"tag={tag!r} must be one of {GENEVAL_TAGS}.")


def _fill(make: object, split: str, n: int, key: tuple[object, ...], max_tries: int) -> list[Spec]:
    """Draw specs with ``make(rng)`` until ``n`` distinct texts of ``split``; repeat them if the space runs dry."""
    rng = np.random.default_rng(stable_hash(*key, bits=63))
    out: list[Spec] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < max_tries:
        tries += 1
        spec = make(rng)  # type: ignore[operator]
        if spec.prompt in seen or split_of(spec.prompt) != split:
            continue
        seen.add(spec.prompt)
        out.append(spec)
    if not out and n > 0:
        raise RuntimeError(f"no prompt of split={split!r} found in {max_tries} draws for {key}.")  # pragma: no cover
    distinct = len(out)
    while len(out) < n:
        out.append(out[len(out) % distinct])
    return out


def geneval_style(
    split: str, n: int, *, tags: Sequence[str] = GENEVAL_TAGS, seed: int = 0
) -> list[Spec]:
    """``n`` GenEval-style specs of ``split``, spread evenly over ``tags`` (in tag order).

    Args:
        split: ``"train"`` or ``"test"`` (texts never shared between them).
        n: Number of specs (>= 0); tag *k* gets ``n // len(tags)`` plus one of the remainder if ``k`` is small.
        tags: Which of GenEval's six tags.
        seed: Varies the draw (the split of each text does not depend on it).

    Raises:
        ValueError: bad ``split``, ``n`` or tag.
    """
    _check(split, n)
    tags = tuple(tags)
    if not tags:
        raise ValueError("tags=() is empty; pass some of " + repr(GENEVAL_TAGS))
    for t in tags:
        if t not in GENEVAL_TAGS:
            raise ValueError(f"tag={t!r} must be one of {GENEVAL_TAGS}.")
    out: list[Spec] = []
    for k, tag in enumerate(tags):
        m = n // len(tags) + (1 if k < n % len(tags) else 0)
        if m:
            out += _fill(lambda rng, tag=tag: _geneval_one(tag, rng), split, m, ("geneval", tag, seed), 40 * m + 2000)
    return out


def _long_one(rng: np.random.Generator) -> Spec | None:
    n_ent = int(rng.integers(4, 11))
    idx = rng.choice(len(COUNTABLE_NOUNS), size=n_ent, replace=False)
    nouns = [COUNTABLE_NOUNS[int(i)] for i in idx]
    budget = MAX_OBJECTS
    entities: list[Entity] = []
    for k, noun in enumerate(nouns):
        left = n_ent - k - 1
        cmax = max(1, min(3, budget - left))
        count = 1 if cmax == 1 else int(rng.choice(np.arange(1, cmax + 1), p=_count_p(cmax)))
        budget -= count
        entities.append(Entity(
            noun, count=count,
            color=_pick(rng, GENEVAL_COLORS) if rng.random() < 0.7 else None,
            pattern=_pick(rng, PATTERNS) if rng.random() < 0.35 else None,
            size=_pick(rng, SIZES) if rng.random() < 0.35 else None,
        ))
    # relations: the subject is mentioned after its reference (acyclic), at most one per pair
    n_rel = int(rng.integers(1, min(4, n_ent - 1) + 1))
    rel_names = tuple(LONG_RELATIONS)
    relations: list[Relation] = []
    used: set[tuple[int, int]] = set()
    for _ in range(n_rel):
        s = int(rng.integers(1, n_ent))
        r = int(rng.integers(0, s))
        if (s, r) in used or any(rel.subject == s for rel in relations):
            continue
        used.add((s, r))
        relations.append(Relation(s, _pick(rng, rel_names), r))
    background = _pick(rng, BACKGROUNDS)
    style = _pick(rng, STYLES)
    sentences = [_pick(rng, _STYLE_OPENERS).format(style=style)]
    bg_pos = int(rng.integers(0, 2))  # background right after the style or at the end
    if bg_pos == 0:
        sentences.append(_pick(rng, _BACKGROUND_SENTENCES).format(bg=background))
    for e in entities:
        t = _pick(rng, _ENTITY_SENTENCES)
        sentences.append(t.format(be="is" if e.count == 1 else "are", phrase=e.phrase()))
    for rel in relations:
        s_e, r_e = entities[rel.subject], entities[rel.reference]
        t = _pick(rng, _RELATION_SENTENCES)
        sentences.append(t.format(
            subj=s_e.noun if s_e.count == 1 else plural(s_e.noun), be="is" if s_e.count == 1 else "are",
            rel=_pick(rng, LONG_RELATIONS[rel.relation]),
            ref=r_e.noun if r_e.count == 1 else plural(r_e.noun),
        ))
    if bg_pos == 1:
        sentences.append(_pick(rng, _BACKGROUND_SENTENCES).format(bg=background))
    text = " ".join(s[0].upper() + s[1:] for s in sentences)
    words = len(text.split())
    if not 40 <= words <= 120:
        return None
    # an explicit number means exactly that many (GenEval's counting rule, and the parser's reading)
    exclusions = tuple(Exclusion(e.noun, e.count + 1) for e in entities if e.count > 1)
    return Spec(tuple(entities), tuple(relations), exclusions, background=background, style=style, prompt=text,
                tag="long")


def _count_p(cmax: int) -> list[float]:
    p = np.array([0.6, 0.25, 0.15][:cmax])
    return list(p / p.sum())


def long_prompts(split: str, n: int, *, seed: int = 0) -> list[Spec]:
    """``n`` long compositional specs of ``split`` (tag ``"long"``), 40-120 words each.

    Args:
        split: ``"train"`` or ``"test"``.
        n: Number of specs (>= 0).
        seed: Varies the draw.

    Raises:
        ValueError: bad ``split`` or ``n``.
    """
    _check(split, n)

    def make(rng: np.random.Generator) -> Spec:
        while True:
            s = _long_one(rng)
            if s is not None:
                return s

    return _fill(make, split, n, ("long", seed), 10 * n + 100) if n else []


def write_jsonl(path: str | Path, specs: Iterable[Spec]) -> int:
    """Write specs as GenEval-format JSONL (extended keys for long prompts); returns the number of lines."""
    items = list(specs)
    for s in items:
        if not isinstance(s, Spec):
            raise ValueError(f"specs must hold poser_env.core.spec.Spec objects, got {type(s).__name__}.")
    with open(path, "w", encoding="utf-8") as fh:
        for s in items:
            fh.write(json.dumps(s.to_geneval(), sort_keys=True) + "\n")
    return len(items)


class PromptSource:
    """A fixed pool of specs of one split, sampled with a caller's ``numpy.random.Generator``.

    Args:
        kind: ``"geneval"``, ``"long"`` or ``"mixed"`` (half of each).
        split: ``"train"`` or ``"test"``.
        n: Pool size (>= 1).
        seed: Varies the pool.

    Example::

        src = PromptSource("geneval", "train", 2000)
        spec = src.sample(np.random.default_rng(0))
    """

    KINDS: tuple[str, ...] = ("geneval", "long", "mixed")

    def __init__(self, kind: str = "geneval", split: str = "train", n: int = 2000, *, seed: int = 0) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"kind={kind!r} must be one of {self.KINDS}.")
        _check(split, n)
        if n < 1:
            raise ValueError(f"n={n!r} must be >= 1 (pool size).")
        self.kind, self.split, self.n, self.seed = kind, split, int(n), seed
        self._pool: list[Spec] | None = None

    @property
    def pool(self) -> list[Spec]:
        """The specs (built on first use)."""
        if self._pool is None:
            if self.kind == "geneval":
                self._pool = geneval_style(self.split, self.n, seed=self.seed)
            elif self.kind == "long":
                self._pool = long_prompts(self.split, self.n, seed=self.seed)
            else:
                half = self.n // 2
                self._pool = geneval_style(self.split, half, seed=self.seed) + long_prompts(
                    self.split, self.n - half, seed=self.seed)
        return self._pool

    def __len__(self) -> int:
        return self.n

    def sample(self, rng: np.random.Generator) -> Spec:
        """One spec drawn uniformly from the pool with ``rng``."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng={rng!r} must be a numpy.random.Generator, e.g. env.np_random.")
        return self.pool[int(rng.integers(len(self.pool)))]
