"""Small English helpers shared by the parser, the prompt generators and the experts.

Dependency-free: number words, regular and irregular plurals, noun phrases, and a stable hash.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "NUMBER_WORDS",
    "noun_phrase",
    "number_word",
    "plural",
    "singular",
    "stable_hash",
]

NUMBER_WORDS: dict[str, int] = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}
_WORD_OF = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
            9: "nine", 10: "ten"}

# irregular plural -> singular (last word of a noun phrase)
IRREGULAR_PLURALS: dict[str, str] = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
    "geese": "goose", "teeth": "tooth", "feet": "foot", "oxen": "ox", "sheep": "sheep",
    "deer": "deer", "fish": "fish", "knives": "knife", "wives": "wife", "leaves": "leaf",
    "loaves": "loaf", "wolves": "wolf", "shelves": "shelf", "scarves": "scarf", "calves": "calf",
    "halves": "half", "lives": "life", "elves": "elf", "thieves": "thief", "dice": "die",
    "cacti": "cactus", "fungi": "fungus", "octopi": "octopus", "skis": "skis", "scissors": "scissors",
    "glasses": "glass", "series": "series", "species": "species", "buses": "bus", "potatoes": "potato",
    "tomatoes": "tomato", "heroes": "hero", "mangoes": "mango", "volcanoes": "volcano",
    "benches": "bench", "sandwiches": "sandwich", "watches": "watch", "boxes": "box",
    "foxes": "fox", "dishes": "dish", "brushes": "brush", "bushes": "bush", "couches": "couch",
    "toothbrushes": "toothbrush", "dresses": "dress", "matches": "match",
    "torches": "torch", "peaches": "peach", "wristwatches": "wristwatch", "churches": "church",
    "ties": "tie", "pies": "pie", "lies": "lie", "cookies": "cookie", "movies": "movie",
    "zombies": "zombie", "hippies": "hippie", "calories": "calorie", "brownies": "brownie",
    "surfboards": "surfboard", "giraffes": "giraffe", "chiefs": "chief", "roofs": "roof",
    "cliffs": "cliff", "cafes": "cafe", "vases": "vase", "horses": "horse", "houses": "house",
    "roses": "rose", "noses": "nose", "cases": "case", "bases": "base", "phases": "phase",
    "purses": "purse", "nurses": "nurse", "cheeses": "cheese", "geeses": "goose",
    "suitcases": "suitcase", "briefcases": "briefcase", "bookcases": "bookcase", "axes": "axe",
    "pianos": "piano", "photos": "photo", "zoos": "zoo", "kangaroos": "kangaroo", "radios": "radio",
    "cellos": "cello", "videos": "video", "tacos": "taco", "burritos": "burrito", "flamingos": "flamingo",
    # added by the parser (issue 5): -ves words that keep -ve, -is plurals of -i nouns, short plurals
    "hooves": "hoof", "dwarves": "dwarf", "selves": "self", "wharves": "wharf",
    "broccolis": "broccoli", "kiwis": "kiwi", "taxis": "taxi", "bikinis": "bikini", "martinis": "martini",
    "salamis": "salami", "emojis": "emoji", "safaris": "safari", "yetis": "yeti", "khakis": "khaki",
    "alibis": "alibi", "delis": "deli", "chilis": "chili", "minis": "mini", "tikis": "tiki",
    "tvs": "tv", "cds": "cd", "dvds": "dvd", "pcs": "pc",
}
_SINGULAR_TO_PLURAL: dict[str, str] = {v: k for k, v in IRREGULAR_PLURALS.items() if k != v}
_SINGULAR_TO_PLURAL.update(
    {"person": "people", "mouse": "mice", "sheep": "sheep", "deer": "deer", "fish": "fish",
     "glass": "glasses", "bus": "buses", "cactus": "cacti", "knife": "knives", "leaf": "leaves",
     "die": "dice", "scissors": "scissors", "skis": "skis"}
)
_INVARIANT = {"sheep", "deer", "fish", "series", "species", "scissors", "skis", "glasses", "jeans",
              "pants", "shorts", "trousers", "news", "chess", "grass", "bus", "gas", "lens", "cactus",
              "octopus", "walrus", "platypus", "hippopotamus", "rhinoceros", "bass", "dress", "moss",
              "compass", "harness", "mattress", "cross", "boss", "ass", "glass", "class", "virus",
              "campus", "canvas", "iris", "tennis", "lotus", "citrus", "hummus", "asparagus",
              "analysis", "axis", "basis", "crisis", "oasis", "thesis", "bonus", "focus", "status",
              "atlas", "plus", "circus", "apparatus", "abacus", "chassis", "corps", "physics"}


def singular(word: str) -> str:
    """Singular of an English noun phrase (only its last word changes): ``"wine glasses" -> "wine glass"``."""
    parts = word.strip().lower().split()
    if not parts:
        return word
    last = parts[-1]
    parts[-1] = _singular_word(last)
    return " ".join(parts)


def _singular_word(w: str) -> str:
    if w in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[w]
    if w in _INVARIANT or len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return w[:-2]
    if w.endswith("ves") and len(w) > 4:
        return w[:-1]  # gloves, microwaves, stoves (knives, leaves ... are in IRREGULAR_PLURALS)
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def plural(noun: str) -> str:
    """Plural of a singular English noun phrase: ``"teddy bear" -> "teddy bears"``, ``"mouse" -> "mice"``."""
    parts = noun.strip().lower().split()
    if not parts:
        return noun
    w = parts[-1]
    if w in _SINGULAR_TO_PLURAL:
        parts[-1] = _SINGULAR_TO_PLURAL[w]
    elif w in {"sheep", "deer", "fish", "series", "species", "scissors", "skis"}:
        pass
    elif w.endswith("y") and len(w) > 1 and w[-2] not in "aeiou":
        parts[-1] = w[:-1] + "ies"
    elif w.endswith(("s", "sh", "ch", "x", "z")):
        parts[-1] = w + "es"
    else:
        parts[-1] = w + "s"
    return " ".join(parts)


def number_word(n: int) -> str:
    """English word for 1..10 (digits beyond)."""
    return _WORD_OF.get(n, str(n))


def noun_phrase(
    noun: str,
    count: int = 1,
    color: str | None = None,
    pattern: str | None = None,
    size: str | None = None,
) -> str:
    """``"a small striped red clock"`` / ``"two red clocks"``; uses "an" before a vowel sound."""
    adjs = [a for a in (size, pattern, color) if a]
    words = " ".join([*adjs, noun if count == 1 else plural(noun)])
    if count == 1:
        article = "an" if words[:1] in "aeiou" else "a"
        return f"{article} {words}"
    return f"{number_word(count)} {words}"


def stable_hash(*parts: object, bits: int = 64) -> int:
    """A hash that is the same in every process (BLAKE2b of the parts' ``repr``), ``bits`` wide.

    Use it (never the salted built-in ``hash()``) for anything observable: glyph shapes, seeds, cache keys.
    """
    h = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(h, "little") & ((1 << bits) - 1)
