"""Decomposition benchmark: how well a decomposer's spec matches gold annotations.

Three gold sources:

* **DSG-1k** (``dsg-1k-anns.csv``, 1,060 prompts from ten sources with Davidsonian scene-graph tuples).
  Scored per category the spec can express, per source, as precision and recall:

  ========== ======================================================= ==========================================
  category   gold tuples (recall counts those expressible)           predicted items (precision)
  ========== ======================================================= ==========================================
  entity     ``entity - whole (X)``                                  every entity's noun; correct when it
                                                                     matches an ``entity - whole`` or
                                                                     ``entity - part`` tuple of the prompt;
                                                                     a background (sky, grass, sand, wooden
                                                                     table) counts as that noun
  color      ``attribute - color (X, c)`` with ``c`` naming one of    every entity colour; correct when a
             the spec's colours (after :data:`COLOR_SYNONYMS`)       gold colour tuple of the same noun has it
  count      ``other/attribute - count (X, ==N)``, 2 <= N <= 10       every exact count (entity with count N
                                                                     >= 2 and an exclusion of its noun's
                                                                     total count + 1)
  spatial    ``relation - spatial (X, Y, r)`` with ``r`` in          every relation; correct when a gold
             :data:`RELATION_SYNONYMS` (r's spec relation)           spatial tuple has the same pair and
                                                                     relation (or the inverse, swapped)
  open_attr  any other ``attribute - *`` tuple (value as a string)   every open attribute of the spec
  open_rel   any other ``relation - spatial`` tuple                  every open relation of the spec
  ========== ======================================================= ==========================================

  **Matching rule.** A noun matches another when their *head nouns* (last word, lower case, singular via
  :func:`poser_env.core.text.singular`, with :data:`NOUN_SYNONYMS` applied) are equal, or when one whole
  phrase equals the other's head. Gold subjects with an ``_2`` suffix (DSG's second instance) drop it.
  Precision items are matched against *all* gold tuples of their kind for the prompt (expressible or not);
  recall counts only gold tuples of the expressible categories. An open attribute matches a gold
  attribute tuple when the nouns match and the value strings share a word; an open relation matches when
  the pair matches and the relation strings are equal after lower-casing.

* **GenEval metadata**: the parsed spec of each prompt equals the metadata's spec (exact count).
* **Long split** (the project's generated prompts, or any GenEval-format JSONL): exact count and
  assertion precision/recall (assertions compared by kind, nouns, value and count).

Use :func:`score_dsg`, :func:`score_specs` or ``poser bench decompose``.
"""

from __future__ import annotations

import csv
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poser_env.core.spec import COLORS, Spec, SpecError, read_geneval_jsonl
from poser_env.core.text import singular
from poser_env.prompts import long_prompts

__all__ = [
    "COLOR_SYNONYMS",
    "DSG_CATEGORIES",
    "NOUN_SYNONYMS",
    "RELATION_SYNONYMS",
    "DsgItem",
    "PRCounts",
    "assertion_keys",
    "head",
    "load_dsg",
    "markdown_table",
    "misses_markdown",
    "score_dsg",
    "score_specs",
]

#: Categories scored on DSG-1k (see the module docstring).
DSG_CATEGORIES: tuple[str, ...] = ("entity", "color", "size", "count", "spatial", "open_attr", "open_rel")
#: Gold colour words -> spec colour (a gold value is expressible when one of its words is here).
COLOR_SYNONYMS: dict[str, str] = {c: c for c in COLORS}
COLOR_SYNONYMS.update({"grey": "gray", "violet": "purple", "golden": "yellow", "gold": "yellow"})
#: Gold size words -> spec size.
SIZE_SYNONYMS: dict[str, str] = {"small": "small", "tiny": "small", "little": "small", "large": "large",
                                 "big": "large", "huge": "large", "giant": "large", "medium": "medium"}
#: Gold spatial relation -> spec relation (gold relations not here are open relations).
RELATION_SYNONYMS: dict[str, str] = {
    "left of": "left of", "to the left of": "left of", "on the left of": "left of", "left": "left of",
    "right of": "right of", "to the right of": "right of", "on the right of": "right of", "right": "right of",
    "above": "above", "over": "above", "below": "below", "beneath": "below", "under": "under",
    "underneath": "under", "on": "on top of", "on top of": "on top of", "atop": "on top of", "upon": "on top of",
    "next to": "next to", "beside": "next to", "near": "next to", "by": "next to", "close to": "next to",
    "alongside": "next to",
}
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
            "on top of": "under", "under": "on top of", "next to": "next to"}
#: Spec background -> the entity noun it stands for in DSG-1k's entity tuples (scored as a predicted entity).
BACKGROUND_NOUNS: dict[str, str] = {"sky": "sky", "grass": "grass", "sand": "sand", "wooden table": "table"}
#: Head-noun synonyms applied on both sides before matching (a small, fixed list; document any change).
NOUN_SYNONYMS: dict[str, str] = {
    "beach": "sand", "desert": "sand", "someone": "person", "somebody": "person", "lawn": "grass", "field": "grass", "meadow": "grass",
    "people": "person", "man": "man", "men": "man", "women": "woman", "guy": "man", "lady": "woman",
    "kid": "child", "children": "child", "puppy": "dog", "kitten": "cat", "automobile": "car",
    "t-shirt": "shirt", "tshirt": "shirt", "bicycle": "bike", "cellphone": "phone", "telephone": "phone",
    "television": "tv", "aeroplane": "airplane", "plane": "airplane",
}


def head(noun: str) -> str:
    """Head noun used for matching: last word, lower case, singular, synonym-mapped."""
    words = re.findall(r"[a-z0-9]+(?:['’-][a-z0-9]+)*", noun.lower().replace("_", " "))
    words = [w for w in words if not w.isdigit()]
    if not words:
        return noun.strip().lower()
    w = words[-1].removesuffix("'s")
    w = NOUN_SYNONYMS.get(w, w)
    w = singular(w)
    return NOUN_SYNONYMS.get(w, w)


def _full(noun: str) -> str:
    return singular(" ".join(re.findall(r"[a-z0-9'-]+", noun.lower().replace("_", " "))))


def _noun_match(a: str, b: str) -> bool:
    return head(a) == head(b) or _full(a) == head(b) or _full(b) == head(a)


@dataclass
class DsgItem:
    """The gold tuples of one DSG-1k prompt (nouns as written in the annotation)."""

    item_id: str
    source: str
    text: str
    entities: list[str] = field(default_factory=list)  # entity - whole
    parts: list[str] = field(default_factory=list)  # entity - part
    attributes: list[tuple[str, str, str]] = field(default_factory=list)  # (detail, noun, value)
    counts: list[tuple[str, str]] = field(default_factory=list)  # (noun, "==N")
    spatial: list[tuple[str, str, str]] = field(default_factory=list)  # (subject, object, relation)


_TUPLE = re.compile(r"^\s*([a-z]+)\s*-\s*(.+?)\s*\((.*)\)\s*$", re.S)


def _args(inner: str) -> list[str]:
    return [a.strip() for a in next(csv.reader([inner], skipinitialspace=True))]


def load_dsg(path: str | Path) -> list[DsgItem]:
    """Read ``dsg-1k-anns.csv`` into one :class:`DsgItem` per prompt, in file order.

    Raises:
        FileNotFoundError: naming the path. SpecError: a malformed tuple (naming the row).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "dsg-1k-anns.csv"
    if not p.is_file():
        raise FileNotFoundError(f"DSG-1k file {str(p)!r} does not exist; pass ../shared/benchmarks/dsg-1k.")
    items: dict[str, DsgItem] = {}
    with p.open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), 2):
            iid = row["item_id"]
            it = items.get(iid)
            if it is None:
                it = items[iid] = DsgItem(iid, iid.rsplit("_", 1)[0], row["text"])
            m = _TUPLE.match(row["tuple"])
            if m is None:
                raise SpecError(f"{p}:{lineno}: tuple={row['tuple']!r} is not 'kind - detail (args)'.")
            broad, detail, args = m.group(1), m.group(2).strip(), _args(m.group(3))
            if broad == "entity" and detail == "whole" and args:
                it.entities.append(args[0])
            elif broad == "entity" and args:
                it.parts.append(args[0])
            elif detail == "count" and len(args) >= 2:
                it.counts.append((args[0], args[1]))
            elif broad == "attribute" and len(args) >= 2:
                it.attributes.append((detail, args[0], args[1]))
            elif broad == "relation" and detail == "spatial" and len(args) >= 3:
                it.spatial.append((args[0], args[1], args[2]))
    return list(items.values())


@dataclass
class PRCounts:
    """Counts for precision and recall: matched predictions / predictions, matched gold / gold."""

    tp_pred: int = 0
    n_pred: int = 0
    tp_gold: int = 0
    n_gold: int = 0

    def add(self, other: PRCounts) -> None:
        self.tp_pred += other.tp_pred
        self.n_pred += other.n_pred
        self.tp_gold += other.tp_gold
        self.n_gold += other.n_gold

    @property
    def precision(self) -> float:
        return self.tp_pred / self.n_pred if self.n_pred else float("nan")

    @property
    def recall(self) -> float:
        return self.tp_gold / self.n_gold if self.n_gold else float("nan")


def _value_color(value: str) -> str | None:
    words = re.findall(r"[a-z]+", value.lower())
    if len(words) > 2:  # "different colors", "black and white striped" ...: not one spec colour
        return None
    for w in words:
        if w in COLOR_SYNONYMS:
            return COLOR_SYNONYMS[w]
    return None


def _exact_count(value: str) -> int | None:
    m = re.fullmatch(r"\s*==\s*(\d+)\s*", value)
    if m is None:
        return None
    n = int(m.group(1))
    return n if 2 <= n <= 10 else None


def _open_items(spec: Spec) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(noun, value) open attributes and (subject, relation, reference) open relations of a spec."""
    attrs: list[tuple[str, str]] = []
    rels: list[tuple[str, str, str]] = []
    for oa in spec.open_attributes:
        attrs.append((spec.entities[oa.entity].noun, oa.value))
    for r in spec.open_relations:
        rels.append((spec.entities[r.subject].noun, r.relation, spec.entities[r.reference].noun))
    return attrs, rels


def score_item(item: DsgItem, spec: Spec | None, misses: list[tuple[str, str, str]] | None = None
               ) -> dict[str, PRCounts]:
    """Per-category counts for one prompt (``spec`` None: the decomposer failed; nothing predicted).

    ``misses``: when given, every unmatched item is appended as ``(category, "missed" | "extra", item)``
    (a missed gold tuple, a prediction no gold tuple matches)."""
    out = {c: PRCounts() for c in DSG_CATEGORIES}

    def note(cat: str, gold: Sequence[Any], pred: Sequence[Any], match: Callable[[Any, Any], bool],
             all_gold: Sequence[Any] | None = None) -> None:
        if misses is None:
            return
        for g in gold:
            if not any(match(p, g) for p in pred):
                misses.append((cat, "missed", repr(g)))
        for p in pred:
            if not any(match(p, g) for g in (gold if all_gold is None else all_gold)):
                misses.append((cat, "extra", repr(p)))

    ents = list(spec.entities) if spec is not None else []
    # entity (a background counts as the entity it names, unless an entity already has that noun)
    c = out["entity"]
    nouns = [e.noun for e in ents]
    bg = BACKGROUND_NOUNS.get(spec.background or "") if spec is not None else None
    if bg is not None and all(head(n) != bg for n in nouns):
        nouns.append(bg)
    c.n_pred = len(nouns)
    c.tp_pred = sum(any(_noun_match(n, g) for g in item.entities + item.parts) for n in nouns)
    c.n_gold = len(item.entities)
    c.tp_gold = sum(any(_noun_match(n, g) for n in nouns) for g in item.entities)
    note("entity", item.entities, nouns, _noun_match, item.entities + item.parts)
    # color and size
    for cat, attr_name in (("color", "color"), ("size", "size")):
        c = out[cat]
        gold: list[tuple[str, str]] = []
        for detail, noun, value in item.attributes:
            if cat == "color":
                if detail == "color" and (v := _value_color(value)) is not None:
                    gold.append((noun, v))
            elif detail in ("size", "scale"):
                words = re.findall(r"[a-z]+", value.lower())
                if len(words) == 1 and words[0] in SIZE_SYNONYMS:
                    gold.append((noun, SIZE_SYNONYMS[words[0]]))
        pred = [(e.noun, getattr(e, attr_name)) for e in ents if getattr(e, attr_name) is not None]
        c.n_pred, c.n_gold = len(pred), len(gold)
        c.tp_pred = sum(any(_noun_match(pn, gn) and pv == gv for gn, gv in gold) for pn, pv in pred)
        c.tp_gold = sum(any(_noun_match(pn, gn) and pv == gv for pn, pv in pred) for gn, gv in gold)
        note(cat, gold, pred, lambda p, g: _noun_match(p[0], g[0]) and p[1] == g[1])
    # count
    c = out["count"]
    excl = {(x.noun, x.count) for x in (spec.exclusions if spec is not None else ())}
    total: dict[str, int] = {}
    for e in ents:
        total[e.noun] = total.get(e.noun, 0) + e.count
    pred_n = [(e.noun, e.count) for e in ents if e.count >= 2 and (e.noun, total[e.noun] + 1) in excl]
    gold_n = [(n, k) for n, v in item.counts if (k := _exact_count(v)) is not None]
    c.n_pred, c.n_gold = len(pred_n), len(gold_n)
    c.tp_pred = sum(any(_noun_match(pn, gn) and pk == gk for gn, gk in gold_n) for pn, pk in pred_n)
    c.tp_gold = sum(any(_noun_match(pn, gn) and pk == gk for pn, pk in pred_n) for gn, gk in gold_n)
    note("count", gold_n, pred_n, lambda p, g: _noun_match(p[0], g[0]) and p[1] == g[1])
    # spatial
    c = out["spatial"]
    gold_r = [(s, RELATION_SYNONYMS[r.lower().strip()], o) for s, o, r in item.spatial
              if r.lower().strip() in RELATION_SYNONYMS]
    pred_r = ([(ents[r.subject].noun, r.relation, ents[r.reference].noun) for r in spec.relations]
              if spec is not None else [])

    def rel_match(p: tuple[str, str, str], g: tuple[str, str, str]) -> bool:
        ps, pr, po = p
        gs, gr, go = g
        return (pr == gr and _noun_match(ps, gs) and _noun_match(po, go)) or (
            _INVERSE[pr] == gr and _noun_match(ps, go) and _noun_match(po, gs))

    c.n_pred, c.n_gold = len(pred_r), len(gold_r)
    c.tp_pred = sum(any(rel_match(p, g) for g in gold_r) for p in pred_r)
    c.tp_gold = sum(any(rel_match(p, g) for p in pred_r) for g in gold_r)
    note("spatial", gold_r, pred_r, rel_match)
    # open attributes and relations (only what the spec does not already express)
    o_attrs, o_rels = _open_items(spec) if spec is not None else ([], [])
    c = out["open_attr"]
    gold_a = [(n, v) for d, n, v in item.attributes
              if not (d == "color" and _value_color(v) is not None)]
    c.n_pred, c.n_gold = len(o_attrs), len(gold_a)

    def attr_match(p: tuple[str, str], g: tuple[str, str]) -> bool:
        return _noun_match(p[0], g[0]) and bool(set(re.findall(r"[a-z]+", p[1].lower()))
                                                & set(re.findall(r"[a-z]+", g[1].lower())))

    every_attr = [(n, v) for _, n, v in item.attributes]
    c.tp_pred = sum(any(attr_match(p, g) for g in every_attr) for p in o_attrs)
    c.tp_gold = sum(any(attr_match(p, g) for p in o_attrs) for g in gold_a)
    c = out["open_rel"]
    gold_o = [(s, r.lower().strip(), o) for s, o, r in item.spatial if r.lower().strip() not in RELATION_SYNONYMS]
    all_sp = [(s, r.lower().strip(), o) for s, o, r in item.spatial]
    c.n_pred, c.n_gold = len(o_rels), len(gold_o)

    def orel_match(p: tuple[str, str, str], g: tuple[str, str, str]) -> bool:
        return p[1].lower() == g[1] and _noun_match(p[0], g[0]) and _noun_match(p[2], g[2])

    c.tp_pred = sum(any(orel_match(p, g) for g in all_sp) for p in o_rels)
    c.tp_gold = sum(any(orel_match(p, g) for p in o_rels) for g in gold_o)
    return out


@dataclass
class DsgReport:
    """Result of :func:`score_dsg`: counts per category (overall and per source), errors, speed."""

    overall: dict[str, PRCounts]
    per_source: dict[str, dict[str, PRCounts]]
    n_prompts: int
    errors: list[tuple[str, str]]  # (item_id, message)
    seconds: float
    #: (item_id, category, "missed" | "extra", item) of every unmatched gold tuple and prediction
    misses: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def prompts_per_s(self) -> float:
        return self.n_prompts / self.seconds if self.seconds > 0 else float("inf")


def score_dsg(items: Sequence[DsgItem], parse: Callable[[str], Spec]) -> DsgReport:
    """Parse every prompt with ``parse`` and score it (a :class:`SpecError` counts as an empty spec)."""
    overall = {c: PRCounts() for c in DSG_CATEGORIES}
    per_source: dict[str, dict[str, PRCounts]] = defaultdict(lambda: {c: PRCounts() for c in DSG_CATEGORIES})
    errors: list[tuple[str, str]] = []
    specs: list[Spec | None] = []
    t0 = time.perf_counter()
    for it in items:
        try:
            specs.append(parse(it.text))
        except SpecError as exc:
            specs.append(None)
            errors.append((it.item_id, str(exc)))
    seconds = time.perf_counter() - t0
    misses: list[tuple[str, str, str, str]] = []
    for it, spec in zip(items, specs, strict=True):
        item_misses: list[tuple[str, str, str]] = []
        for cat, cnt in score_item(it, spec, item_misses).items():
            overall[cat].add(cnt)
            per_source[it.source][cat].add(cnt)
        misses += [(it.item_id, *m) for m in item_misses]
    return DsgReport(overall, dict(sorted(per_source.items())), len(items), errors, seconds, misses)


def misses_markdown(rep: DsgReport, per_kind: int) -> str:
    """Up to ``per_kind`` unmatched items per category and kind (missed gold tuple / extra prediction), with the
    prompt's id (``source_n``), then the count of each."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for iid, cat, kind, what in rep.misses:
        groups[(cat, kind)].append((iid, what))
    lines = ["DSG-1k misses (category, kind: count; then examples as item_id: tuple)"]
    for (cat, kind), rows in sorted(groups.items()):
        lines.append(f"\n{cat}, {kind}: {len(rows)}")
        lines += [f"- {iid}: {what}" for iid, what in rows[:per_kind]]
    return "\n".join(lines)


def assertion_keys(spec: Spec) -> set[tuple[Any, ...]]:
    """Assertions of a spec as comparable keys (kind, nouns, value, count), independent of group order."""
    keys: set[tuple[Any, ...]] = set()
    for a in spec.assertions():
        noun = spec.entities[a.entity].noun if a.entity is not None else None
        ref = spec.entities[a.reference].noun if a.reference is not None else None
        keys.add((a.kind, noun, ref, a.value, a.count))
    return keys


@dataclass
class SpecReport:
    """Result of :func:`score_specs`: exact specs, assertion P/R, errors, speed."""

    n: int
    exact: int
    assertions: PRCounts
    errors: list[tuple[str, str]]
    seconds: float
    misses: list[tuple[str, list[Any], list[Any]]]  # (prompt, missing gold keys, extra predicted keys)


def score_specs(gold: Iterable[Spec], parse: Callable[[str], Spec]) -> SpecReport:
    """Parse each gold spec's prompt; count exact matches (same assertion keys) and assertion P/R."""
    pr = PRCounts()
    exact = n = 0
    errors: list[tuple[str, str]] = []
    misses: list[tuple[str, list[Any], list[Any]]] = []
    seconds = 0.0
    for g in gold:
        n += 1
        t0 = time.perf_counter()
        try:
            got: Spec | None = parse(g.prompt)
        except SpecError as exc:
            got = None
            errors.append((g.prompt, str(exc)))
        seconds += time.perf_counter() - t0
        gk = assertion_keys(g)
        pk = assertion_keys(got) if got is not None else set()
        pr.n_gold += len(gk)
        pr.n_pred += len(pk)
        pr.tp_gold += len(gk & pk)
        pr.tp_pred += len(gk & pk)
        if gk == pk:
            exact += 1
        else:
            misses.append((g.prompt, sorted(gk - pk, key=repr), sorted(pk - gk, key=repr)))
    return SpecReport(n, exact, pr, errors, seconds, misses)


def _f(x: float) -> str:
    return "—" if x != x else f"{x:.3f}"


def markdown_table(rows: Mapping[str, Mapping[str, PRCounts]], categories: Sequence[str] = DSG_CATEGORIES) -> str:
    """A markdown table: one row per key of ``rows``, P / R (gold n) per category."""
    head_ = "| | " + " | ".join(f"{c} P | {c} R (n)" for c in categories) + " |"
    sep = "|---|" + "---|---|" * len(categories)
    lines = [head_, sep]
    for name, cats in rows.items():
        cells = []
        for c in categories:
            k = cats[c]
            cells.append(f"{_f(k.precision)} | {_f(k.recall)} ({k.n_gold})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dsg_markdown(rep: DsgReport) -> str:
    """The DSG-1k report as markdown (overall then per source)."""
    rows: dict[str, Mapping[str, PRCounts]] = {"**all**": rep.overall, **rep.per_source}
    return (
        f"DSG-1k: {rep.n_prompts} prompts, {len(rep.errors)} parse errors, "
        f"{rep.prompts_per_s:.0f} prompts/s\n\n" + markdown_table(rows)
    )


def spec_markdown(name: str, rep: SpecReport) -> str:
    """One markdown row: prompts, exact, assertion P/R, errors, prompts/s."""
    pps = rep.n / rep.seconds if rep.seconds > 0 else float("inf")
    return (f"| {name} | {rep.n} | {rep.exact} | {_f(rep.assertions.precision)} | {_f(rep.assertions.recall)} "
            f"| {len(rep.errors)} | {pps:.0f} |")


def decompose_report(
    parse: Callable[[str], Spec],
    *,
    benchmarks: str | Path | None = None,
    long_n: int = 500,
    heldout: str | Path | None = None,
    misses: int = 0,
) -> str:
    """The full decomposition report as markdown: DSG-1k (if ``benchmarks`` has ``dsg-1k/``), GenEval metadata
    (if it has ``geneval/``), the generated long test split (``long_n`` prompts, 0 to skip) and a held-out
    phrasing JSONL (GenEval-format records with gold specs; skipped when None). ``misses`` > 0 appends up to that
    many DSG-1k misses per category and kind (:func:`misses_markdown`)."""

    parts: list[str] = []
    rows = ["| set | prompts | exact | assertion P | assertion R | errors | prompts/s |",
            "|---|---|---|---|---|---|---|"]
    root = Path(benchmarks) if benchmarks is not None else None
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"benchmarks={str(root)!r} is not a folder; pass the folder holding dsg-1k/ and "
                                "geneval/ (e.g. ../shared/benchmarks).")
    if root is not None and (root / "geneval" / "evaluation_metadata.jsonl").is_file():
        gold = read_geneval_jsonl(str(root / "geneval" / "evaluation_metadata.jsonl"))
        rows.append(spec_markdown("GenEval metadata", score_specs(gold, parse)))
    if long_n > 0:
        rows.append(spec_markdown(f"long test split ({long_n})", score_specs(long_prompts("test", long_n), parse)))
    if heldout is not None:
        rows.append(spec_markdown(f"held-out phrasings ({Path(heldout).name})",
                                  score_specs(read_geneval_jsonl(str(heldout)), parse)))
    parts.append("\n".join(rows))
    if root is not None and (root / "dsg-1k").is_dir():
        rep = score_dsg(load_dsg(root / "dsg-1k"), parse)
        parts.append(dsg_markdown(rep))
        if misses > 0:
            parts.append(misses_markdown(rep, misses))
    return "\n\n".join(parts)
