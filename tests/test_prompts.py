"""The project's prompt generators (poser_env.prompts)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from poser_env.core.spec import GENEVAL_TAGS, read_geneval_jsonl
from poser_env.prompts import (
    COCO_NOUNS,
    MAX_OBJECTS,
    NOUNS,
    PromptSource,
    geneval_style,
    long_prompts,
    split_of,
    write_jsonl,
)

GENEVAL_FORMS = {
    "single_object": r"a photo of an? [a-z ]+",
    "two_object": r"a photo of an? [a-z ]+ and an? [a-z ]+",
    "counting": r"a photo of (two|three|four) [a-z ]+",
    "colors": r"a photo of an? (red|orange|yellow|green|blue|purple|pink|brown|black|white) [a-z ]+",
    "position": r"a photo of an? [a-z ]+ (left of|right of|above|below) an? [a-z ]+",
    "color_attr": r"a photo of an? \w+ [a-z ]+ and an? \w+ [a-z ]+",
}


def test_vocabulary() -> None:
    assert len(COCO_NOUNS) == 80 and len(set(COCO_NOUNS)) == 80
    assert len(NOUNS) > 120 and len(set(NOUNS)) == len(NOUNS)


def test_geneval_style_tags_and_phrasing() -> None:
    specs = geneval_style("train", 60)
    assert [s.tag for s in specs] == [t for t in GENEVAL_TAGS for _ in range(10)]
    for s in specs:
        assert re.fullmatch(GENEVAL_FORMS[str(s.tag)], s.prompt), s.prompt
    counting = [s for s in specs if s.tag == "counting"]
    for s in counting:
        (e,) = s.entities
        assert 2 <= e.count <= 4 and s.exclusions[0].noun == e.noun and s.exclusions[0].count == e.count + 1
    pos = next(s for s in specs if s.tag == "position")
    meta = pos.to_geneval()
    # GenEval lists the reference group first and the subject points at it
    assert meta["include"][0]["class"] == pos.entities[1].noun
    assert meta["include"][1]["position"] == [pos.relations[0].relation, 0]
    ca = next(s for s in specs if s.tag == "color_attr")
    assert ca.entities[0].color != ca.entities[1].color and ca.entities[0].noun != ca.entities[1].noun


def test_splits_are_disjoint_and_fixed() -> None:
    train = geneval_style("train", 300) + long_prompts("train", 100)
    test = geneval_style("test", 300) + long_prompts("test", 100)
    assert not {s.prompt for s in train} & {s.prompt for s in test}
    assert all(split_of(s.prompt) == "train" for s in train)
    assert all(split_of(s.prompt) == "test" for s in test)
    # other seeds draw other prompts but never cross the split
    other = geneval_style("test", 60, seed=7)
    assert all(split_of(s.prompt) == "test" for s in other)
    assert [s.prompt for s in other] != [s.prompt for s in test[:60]]


def test_deterministic() -> None:
    assert [s.to_json() for s in geneval_style("test", 30)] == [s.to_json() for s in geneval_style("test", 30)]
    assert [s.to_json() for s in long_prompts("test", 10)] == [s.to_json() for s in long_prompts("test", 10)]


def test_small_tag_spaces_repeat() -> None:
    specs = geneval_style("test", 600, tags=("single_object",))
    assert len(specs) == 600
    distinct = {s.prompt for s in specs}
    assert 20 < len(distinct) < 600  # one text per noun, repeated in order


def test_long_prompts_shape() -> None:
    specs = long_prompts("train", 150)
    openers = set()
    for s in specs:
        assert s.tag == "long"
        assert 4 <= len(s.entities) <= 10
        assert 40 <= len(s.prompt.split()) <= 120, s.prompt
        assert sum(e.count for e in s.entities) <= MAX_OBJECTS
        assert 1 <= len(s.relations) <= 4
        assert all(r.reference < r.subject for r in s.relations)  # acyclic
        assert s.background is not None and s.style is not None
        assert len({e.noun for e in s.entities}) == len(s.entities)
        for e in s.entities:  # explicit numbers mean exactly that many
            if e.count > 1:
                assert any(x.noun == e.noun and x.count == e.count + 1 for x in s.exclusions)
        openers.add(s.prompt.split()[0])
    assert len(openers) >= 3  # several phrasings
    kinds = {r.relation for s in specs for r in s.relations}
    assert len(kinds) == 7
    assert any(e.pattern for s in specs for e in s.entities) and any(e.size for s in specs for e in s.entities)


def test_parser_reads_every_generated_prompt() -> None:
    from poser_env.core.parser import parse

    for s in geneval_style("test", 120) + long_prompts("test", 60):
        p = parse(s.prompt)
        assert (p.entities, p.relations, p.exclusions, p.background, p.style, p.tag) == (
            s.entities, s.relations, s.exclusions, s.background, s.style, s.tag), s.prompt


def test_jsonl_round_trip(tmp_path) -> None:
    specs = geneval_style("test", 12) + long_prompts("test", 4)
    path = tmp_path / "p.jsonl"
    assert write_jsonl(path, specs) == 16
    back = read_geneval_jsonl(str(path))
    for a, b in zip(specs, back):
        assert (a.prompt, a.tag, a.background, a.style) == (b.prompt, b.tag, b.background, b.style)
        assert set(a.entities) == set(b.entities) and len(a.relations) == len(b.relations)
        assert sorted(x.text for x in a.assertions()) == sorted(x.text for x in b.assertions())


def test_prompt_source() -> None:
    src = PromptSource("mixed", "test", 40)
    a = [src.sample(np.random.default_rng(3)).prompt for _ in range(3)]
    assert len(set(a)) == 1
    rng = np.random.default_rng(0)
    drawn = {src.sample(rng).prompt for _ in range(50)}
    assert len(drawn) > 10 and len(src) == 40
    assert {s.tag for s in src.pool} >= {"long", "counting"}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: geneval_style("valid", 5), "split='valid'"),
        (lambda: geneval_style("train", -1), "n=-1"),
        (lambda: geneval_style("train", 5, tags=("shapes",)), "tag='shapes'"),
        (lambda: geneval_style("train", 5, tags=()), "tags=()"),
        (lambda: long_prompts("dev", 5), "split='dev'"),
        (lambda: PromptSource("short"), "kind='short'"),
        (lambda: PromptSource("long", "train", 0), "n=0"),
        (lambda: PromptSource().sample(0), "rng=0"),  # type: ignore[arg-type]
        (lambda: split_of(3), "prompt=3"),  # type: ignore[arg-type]
        (lambda: write_jsonl("never-written.jsonl", ["a cup"]), "Spec"),  # type: ignore[list-item]
    ],
)
def test_errors(call, match) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        call()
