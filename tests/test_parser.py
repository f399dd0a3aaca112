"""Rule-based parser: GenEval metadata match, long-prompt precision/recall, features, errors, properties."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poser_env.core.commands import CommandError
from poser_env.core.grammar import parse_command, parse_command_text
from poser_env.core.parser import MAX_PROMPT_CHARS, ParseError, parse
from poser_env.core.spec import COLORS, RELATIONS, Entity, Exclusion, Relation, Spec, SpecError

GENEVAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "geneval" / "evaluation_metadata.jsonl"


# ------------------------------------------------------------------------------------------ GenEval
@pytest.mark.skipif(not GENEVAL.exists(), reason="../shared/benchmarks/geneval is absent")
def test_geneval_metadata_match_is_100_percent() -> None:
    records = [json.loads(line) for line in GENEVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) == 553
    mismatches = [(r, parse(r["prompt"]).to_geneval()) for r in records if parse(r["prompt"]).to_geneval() != r]
    assert not mismatches, f"{len(mismatches)} of 553 differ, first: {mismatches[0]}"


def _project_prompts() -> object:
    return pytest.importorskip("poser_env.prompts")


def test_geneval_style_generated_prompts_match_exactly() -> None:
    prompts = _project_prompts()
    specs = prompts.geneval_style("test", 300)  # type: ignore[attr-defined]
    bad = [s.prompt for s in specs if parse(s.prompt).to_geneval() != s.to_geneval()]
    assert not bad, bad[:5]


def _tuples(spec: Spec) -> Counter[tuple[object, ...]]:
    """Assertions as (kind, noun, reference noun, value, count) tuples (ids and order do not matter)."""
    out: Counter[tuple[object, ...]] = Counter()
    for a in spec.assertions():
        noun = spec.entities[a.entity].noun if a.entity is not None else None
        ref = spec.entities[a.reference].noun if a.reference is not None else None
        out[(a.kind, noun, ref, a.value, a.count)] += 1
    return out


def test_long_prompts_assertion_precision_and_recall() -> None:
    prompts = _project_prompts()
    specs = prompts.long_prompts("test", 400)  # type: ignore[attr-defined]
    tp = fp = fn = 0
    for s in specs:
        truth, got = _tuples(s), _tuples(parse(s.prompt))
        tp += sum((truth & got).values())
        fp += sum((got - truth).values())
        fn += sum((truth - got).values())
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.98 and recall >= 0.98, (precision, recall)


# ------------------------------------------------------------------------------------------ features
@pytest.mark.parametrize(
    ("prompt", "noun", "count"),
    [
        ("a cup", "cup", 1), ("an apple", "apple", 1), ("one dog", "dog", 1), ("two dogs", "dog", 2),
        ("ten cats", "cat", 10), ("3 mice", "mouse", 3), ("a pair of shoes", "shoe", 2),
        ("four people", "person", 4), ("two wine glasses", "wine glass", 2), ("five knives", "knife", 5),
        ("two sheep", "sheep", 2), ("three hair driers", "hair drier", 3), ("two teddy bears", "teddy bear", 2),
        ("four baseball gloves", "baseball glove", 4), ("two buses", "bus", 2), ("cats", "cat", 2),
        ("10 birds", "bird", 10), ("a fire hydrant", "fire hydrant", 1), ("two children", "child", 2),
    ],
)
def test_numbers_and_plurals(prompt: str, noun: str, count: int) -> None:
    spec = parse(prompt)
    assert spec.entities == (Entity(noun, count),)


def test_explicit_cardinal_means_exactly_n() -> None:
    assert parse("three clocks").exclusions == (Exclusion("clock", 4),)
    assert parse("a clock").exclusions == ()
    assert parse("a pair of shoes").exclusions == ()


@pytest.mark.parametrize(
    ("prompt", "entity"),
    [
        ("a grey cat", Entity("cat", color="gray")),
        ("a light blue car", Entity("car", color="blue")),
        ("a striped cup", Entity("cup", pattern="striped")),
        ("a cup with stripes", Entity("cup", pattern="striped")),
        ("a polka-dot umbrella", Entity("umbrella", pattern="dotted")),
        ("a polka dot umbrella", Entity("umbrella", pattern="dotted")),
        ("a spotted dog", Entity("dog", pattern="dotted")),
        ("a plaid shirt", Entity("shirt", pattern="checkered")),
        ("a tiny mouse", Entity("mouse", size="small")),
        ("a huge red checkered kite", Entity("kite", color="red", pattern="checkered", size="large")),
        ("a medium vase", Entity("vase", size="medium")),
        ("an orange", Entity("orange")),
        ("an orange orange", Entity("orange", color="orange")),
        ("a yellow orange", Entity("orange", color="yellow")),
        ("a sleek black pencil", Entity("pencil", color="black")),
    ],
)
def test_attributes(prompt: str, entity: Entity) -> None:
    assert parse(prompt).entities == (entity,)


@pytest.mark.parametrize(
    ("phrase", "relation"),
    [
        ("to the left of", "left of"), ("on the left of", "left of"), ("left of", "left of"),
        ("on the left side of", "left of"), ("to the right of", "right of"), ("right of", "right of"),
        ("above", "above"), ("over", "above"), ("below", "below"), ("beneath", "below"),
        ("under", "under"), ("underneath", "under"), ("on top of", "on top of"), ("on", "on top of"),
        ("atop", "on top of"), ("next to", "next to"), ("beside", "next to"), ("near", "next to"),
    ],
)
def test_relation_variants(phrase: str, relation: str) -> None:
    spec = parse(f"a dog {phrase} a clock")
    assert relation in RELATIONS
    assert [e.noun for e in spec.entities] == ["dog", "clock"]
    assert spec.relations == (Relation(0, relation, 1),)


def test_unmapped_relations_keep_both_objects() -> None:
    spec = parse("a dog in front of a car")
    assert [e.noun for e in spec.entities] == ["dog", "car"] and spec.relations == ()


def test_conjunctions_sentences_and_coreference() -> None:
    spec = parse("Two cups sit beside a plate. They are blue and striped. A cat is under them. The plate is red.")
    cups, plate, cat = spec.entities
    assert cups == Entity("cup", 2, color="blue", pattern="striped")
    assert plate == Entity("plate", color="red") and cat == Entity("cat")
    assert set(spec.relations) == {Relation(0, "next to", 1), Relation(2, "under", 0)}
    spec = parse("a dog. it is red. the dog is left of a cat, a cup and a bowl.")
    assert spec.entities[0] == Entity("dog", color="red")
    assert [e.noun for e in spec.entities] == ["dog", "cat", "cup", "bowl"]
    assert spec.relations == (Relation(0, "left of", 1),)


def test_definite_reference_resolves_to_nearest_group() -> None:
    spec = parse("There are three red clocks. There is a dog. The clocks are on top of the dog.")
    assert len(spec.entities) == 2 and spec.relations == (Relation(0, "on top of", 1),)


def test_relation_chain() -> None:
    spec = parse("a cup left of a dog left of a cat")
    assert spec.relations == (Relation(0, "left of", 1), Relation(1, "left of", 2))


@pytest.mark.parametrize(
    ("prompt", "background", "style"),
    [
        ("a cat on a wooden table", "wooden table", None),
        ("a kite in the sky", "sky", None),
        ("a dog on grass", "grass", None),
        ("a dog at night", "night", None),
        ("a crab on the beach", "sand", None),
        ("a crab on sand", "sand", None),
        ("a cup on a plain background", "plain", None),
        ("a cup. The background is grass.", "grass", None),
        ("a cup. Everything is set against a night background.", "night", None),
        ("a cat in watercolor style", None, "watercolor"),
        ("a sketch of a cat", None, "sketch"),
        ("pixel art of a cat", None, "pixel art"),
        ("a photorealistic cat", None, "photo"),
        ("The style is photo. A cat.", None, "photo"),
        ("a photo of a cat", None, None),  # GenEval's neutral framing
    ],
)
def test_background_and_style(prompt: str, background: str | None, style: str | None) -> None:
    spec = parse(prompt)
    assert (spec.background, spec.style) == (background, style)
    assert [e.noun for e in spec.entities] == [("crab" if "crab" in prompt else "kite" if "kite" in prompt else
                                               "dog" if "dog" in prompt else "cup" if "cup" in prompt else "cat")]


def test_exclusions() -> None:
    assert parse("a dog and no cats").exclusions == (Exclusion("cat"),)
    assert parse("a dog without any cats or birds").exclusions == (Exclusion("cat"), Exclusion("bird"))
    assert parse("A dog. There are no cats.").exclusions == (Exclusion("cat"),)
    assert [e.noun for e in parse("a dog with no cat").entities] == ["dog"]


def test_unknown_and_multiword_nouns() -> None:
    spec = parse("a zorblax next to a parking meter and a tennis racket")
    assert [e.noun for e in spec.entities] == ["zorblax", "parking meter", "tennis racket"]


def test_geneval_tags() -> None:
    assert parse("a photo of a dog").tag == "single_object"
    assert parse("a photo of a dog and a cat").tag == "two_object"
    assert parse("a photo of two dogs").tag == "counting"
    assert parse("a photo of a red dog").tag == "colors"
    assert parse("a photo of a dog above a cat").tag == "position"
    assert parse("a photo of a red dog and a blue cat").tag == "color_attr"
    assert parse("a dog").tag is None
    assert parse("a striped dog, a cat and a cup on grass").tag == "long"


def test_deterministic() -> None:
    p = "Two red clocks left of a blue dog. No cats. In watercolor style."
    assert parse(p).to_json() == parse(p).to_json()
    assert parse(p).prompt == p


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad", ["", "   \n\t "])
def test_empty_prompt_error(bad: str) -> None:
    with pytest.raises(ParseError, match=r"prompt=.* is empty; pass a prompt"):
        parse(bad)


@pytest.mark.parametrize("bad", [None, 3, b"a cat", ["a cat"]])
def test_non_string_error(bad: object) -> None:
    with pytest.raises(ParseError, match=r"not a string; pass the prompt text"):
        parse(bad)  # type: ignore[arg-type]


def test_nothing_drawable_error() -> None:
    with pytest.raises(ParseError, match=r"names nothing drawable .* name at least one object"):
        parse("very quickly and then, of course!")
    with pytest.raises(ParseError, match="nothing drawable"):
        parse("no cats")


def test_too_long_error() -> None:
    with pytest.raises(ParseError, match=r"more than MAX_PROMPT_CHARS"):
        parse("a cat " * (MAX_PROMPT_CHARS // 6 + 1))


def test_parse_error_is_a_spec_error() -> None:
    assert issubclass(ParseError, SpecError) and issubclass(ParseError, ValueError)


# ------------------------------------------------------------------------------------------ properties
_VOCAB = ["a", "an", "the", "two", "3", "red", "grey", "striped", "big", "cup", "cups", "dog", "it", "them",
          "they", "and", "no", "without", "left", "of", "on", "top", "next", "to", "is", "are", ",", ".",
          "orange", "teddy", "bear", "in", "watercolor", "style", "at", "night", "sky", "the", "second", "'s",
          "pair", "with", "stripes", "background", "photo", "beneath", "over", "all", "some", "polka", "dot"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=80), st.lists(st.sampled_from(_VOCAB), max_size=25).map(" ".join)))
def test_any_string_gives_a_spec_or_parse_error(text: str) -> None:
    try:
        spec = parse(text)
    except ParseError:
        return
    assert isinstance(spec, Spec) and (spec.entities or spec.background)
    meta = spec.to_geneval()
    assert Spec.from_geneval(meta).to_geneval() == meta  # valid, and round-trips through GenEval's format


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(_VOCAB), max_size=15).map(" ".join)),
       st.sampled_from(["", "generate: ", "add: ", "remove: ", "recolor: ", "retexture: ", "resize: ", "move: ",
                        "background: ", "restyle: ", "refine: "]))
def test_any_command_text_gives_a_command_or_command_error(text: str, prefix: str) -> None:
    try:
        parsed = parse_command_text(prefix + text)
    except CommandError:
        return
    assert isinstance(parsed.spec, Spec)


# ------------------------------------------------------------------------------------------ commands
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("recolor: make the second clock blue", dict(op="recolor", noun="clock", index=1, value="blue")),
        ("recolor: make the last orange blue", dict(op="recolor", noun="orange", index=-1, value="blue")),
        ("recolor: turn the red clock blue", dict(op="recolor", noun="clock", value="blue")),
        ("retexture: make the clocks striped", dict(op="retexture", noun="clock", index=None, value="striped")),
        ("retexture: give the cup stripes", dict(op="retexture", noun="cup", value="striped")),
        ("resize: make the dog large", dict(op="resize", noun="dog", value="large")),
        ("add: a blue dog right of the clock", dict(op="add", noun="dog", relation="right of", reference="clock")),
        ("add: two more red clocks left of the dog", dict(op="add", noun="clock", relation="left of",
                                                           reference="dog")),
        ("remove: one clock", dict(op="remove", noun="clock", count=1, index=None)),
        ("remove: two clocks", dict(op="remove", noun="clock", count=2)),
        ("remove: the cat", dict(op="remove", noun="cat", count=None)),
        ("remove: the third cup", dict(op="remove", noun="cup", count=1, index=2)),
        ("move: put the dog right of the teddy bear", dict(op="move", noun="dog", relation="right of",
                                                            reference="teddy bear")),
        ("move: move the second cup to the left of the dog", dict(op="move", noun="cup", index=1,
                                                                   relation="left of", reference="dog")),
        ("background: change the background to a wooden table", dict(op="background", value="wooden table")),
        ("background: grass", dict(op="background", value="grass")),
        ("restyle: make it a watercolor", dict(op="restyle", value="watercolor")),
        ("restyle: pixel art", dict(op="restyle", value="pixel art")),
        ("refine: improve the details", dict(op="refine", noun=None)),
    ],
)
def test_command_grammar(text: str, expected: dict[str, object]) -> None:
    parsed = parse_command(text)
    for key, value in expected.items():
        assert getattr(parsed, key) == value, (key, parsed)


def test_command_specs() -> None:
    add = parse_command_text("add: a blue dog right of the clock")
    assert add.spec.entities == (Entity("dog", color="blue"),)  # the clock is already there
    rec = parse_command_text("recolor: make the second clock blue")
    assert rec.spec.entities == (Entity("clock", color="blue"),)
    gen = parse_command_text("two red clocks left of a blue dog")
    assert gen.op == "generate" and gen.spec == parse("two red clocks left of a blue dog")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("recolor: make the dog", r"names no new colour .*write e\.g\. 'recolor: make the second clock blue'"),
        ("retexture: make the dog", r"names no new pattern"),
        ("resize: make the dog", r"names no new size"),
        ("move: put the dog somewhere", r"names no relation"),
        ("move: put the dog left of", r"names no reference object"),
        ("background: something nice", r"names no background"),
        ("restyle: fancy", r"names no style"),
        ("remove: ", r"has an empty instruction after 'remove'"),
        ("", r"has an empty instruction after 'generate'"),
        ("add: the", r"names no object to add"),
        ("recolor: of and", r"names no object to edit"),
        ("generate: ,,,", r"describes nothing to draw"),
    ],
)
def test_command_errors(text: str, match: str) -> None:
    with pytest.raises(CommandError, match=match):
        parse_command_text(text)


def test_command_non_string_error() -> None:
    with pytest.raises(CommandError, match="must be a string"):
        parse_command_text(7)  # type: ignore[arg-type]


def test_colour_vocabulary_is_the_spec_one() -> None:
    for c in COLORS:
        assert parse(f"a {c} cup").entities[0].color == c
