"""LLM decomposer: loading path on a tiny random Llama (no downloads), parsing/validation on fixed strings."""

from __future__ import annotations

import json
import sys

import pytest

from poser_env.core.optional import MissingExtraError
from poser_env.core.spec import Entity, Exclusion, OpenAttribute, OpenRelation, Relation, Spec, SpecError
from poser_env.llm import (
    FEW_SHOT,
    PROMPT_VERSION,
    SCHEMA,
    SYSTEM_PROMPT,
    LLMDecomposer,
    LLMOutputError,
    extract_json_object,
    spec_from_llm_text,
)

PROMPT = "two red clocks left of a blue dog"
GOOD = {
    "include": [
        {"class": "clock", "count": 2, "color": "red", "position": ["left of", 1]},
        {"class": "dog", "count": 1, "color": "blue"},
    ]
}
EXPECTED = Spec(
    entities=(Entity("clock", 2, "red"), Entity("dog", 1, "blue")),
    relations=(Relation(0, "left of", 1),),
    prompt=PROMPT,
)


def _parser_parse(prompt: str) -> Spec:
    from poser_env.core.parser import parse

    return parse(prompt)


# ---------------------------------------------------------------------- fixed strings
def test_valid_json_gives_the_spec():
    assert spec_from_llm_text(json.dumps(GOOD), PROMPT) == EXPECTED


def test_json_inside_prose_and_fences_and_plural_nouns():
    text = (
        "Sure! Here is the checklist:\n```json\n"
        '{"include": [{"class": "Clocks", "count": 2, "color": "Red", "position": ["left of", 1]}, '
        '{"class": "dog", "count": 1, "color": "blue"}]}\n```\nHope it helps {not json}.'
    )
    assert spec_from_llm_text(text, PROMPT) == EXPECTED


def test_extended_schema():
    prompt = "a striped large cup next to three cats under a dog on grass, watercolor, no birds"
    text = json.dumps({
        "include": [
            {"class": "cup", "count": 1, "pattern": "striped", "size": "large", "position": ["next to", 1]},
            {"class": "cat", "count": 3},
            {"class": "dog", "count": 1},
        ],
        "relations": [[1, "under", 2]],
        "exclude": [{"class": "bird", "count": 1}],
        "background": "grass",
        "style": "watercolor",
        "tag": "long",
    })
    spec = spec_from_llm_text(text, prompt)
    assert spec == Spec(
        entities=(Entity("cup", 1, pattern="striped", size="large"), Entity("cat", 3), Entity("dog")),
        relations=(Relation(0, "next to", 1), Relation(1, "under", 2)),
        exclusions=(Exclusion("bird"),),
        background="grass",
        style="watercolor",
        prompt=prompt,
        tag="long",
    )


def test_extract_json_object():
    assert extract_json_object('x {"a": {"b": 1}} y {"c": 2}') == {"a": {"b": 1}}
    assert extract_json_object('[1, 2] {bad} {"ok": true}') == {"ok": True}
    with pytest.raises(LLMOutputError, match="no JSON object in the LLM output"):
        extract_json_object("[1, 2, 3] and nothing else")
    with pytest.raises(LLMOutputError, match="must be a string"):
        extract_json_object(None)  # type: ignore[arg-type]


def _with(**changes):
    obj = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        if k.startswith("item0_"):
            obj["include"][0][k[6:]] = v
        else:
            obj[k] = v
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("the clocks are red", "no JSON object in the LLM output"),
        (_with(objects=[]), "unknown keys ['objects']"),
        (json.dumps({"include": []}), "'include'=[] must be a non-empty list"),
        (json.dumps({"include": ["clock"]}), "include[0]='clock' must be an object"),
        (_with(item0_colour="red"), "include[0] has unknown keys ['colour']"),
        (_with(item0_class=""), "include[0].class='' must be a non-empty noun"),
        (_with(item0_count=0), "include[0].count=0 must be an integer from 1 to 10"),
        (_with(item0_count="2"), "include[0].count='2' must be an integer from 1 to 10"),
        (_with(item0_count=True), "include[0].count=True must be an integer"),
        (_with(item0_color="teal"), "include[0].color='teal' is not one of"),
        (_with(item0_pattern="plaid"), "include[0].pattern='plaid' is not one of"),
        (_with(item0_size="huge"), "include[0].size='huge' is not one of"),
        (_with(item0_position=["behind", 1]), "include[0].position[0]='behind' is not one of"),
        (_with(item0_position=["left of", 5]), "include[0].position[1]=5 must be an integer from 0 to 1"),
        (_with(item0_position=["left of", 0]), "include[0].position refers to the group itself"),
        (_with(item0_position="left of the dog"), "must be [relation, reference index]"),
        (_with(exclude={"class": "cat"}), "'exclude'={'class': 'cat'} must be a list"),
        (_with(exclude=[{"class": "cat", "n": 1}]), "exclude[0]="),
        (_with(relations=[[0, "above"]]), "relations[0]=[0, 'above'] must be [subject index, relation, reference index]"),
        (_with(relations=[[1, "above", 1]]), "relations[0] relates group 1 to itself"),
        (_with(relations="none"), "'relations'='none' must be a list"),
        (_with(background="space"), "background='space' is not one of"),
        (_with(style="anime"), "style='anime' is not one of"),
        (_with(item0_class="lamp"), "nouns ['lamp'] do not occur in the prompt"),
    ],
)
def test_invalid_outputs(text, message):
    with pytest.raises(LLMOutputError) as exc:
        spec_from_llm_text(text, PROMPT)
    assert message in str(exc.value)
    assert isinstance(exc.value, SpecError)


def test_invented_nouns_allowed_when_asked():
    spec = spec_from_llm_text(_with(item0_class="lamp"), PROMPT, require_nouns_in_prompt=False)
    assert spec.entities[0].noun == "lamp"


def test_fallback_records_reason_and_valid_output_clears_it():
    pytest.importorskip("poser_env.core.parser")
    dec = LLMDecomposer("unused/model")
    spec = dec.parse_output("I cannot help with that.", PROMPT)
    assert spec == _parser_parse(PROMPT)
    assert dec.last_fallback_reason is not None and "no JSON object" in dec.last_fallback_reason
    assert spec.metadata["decomposer"] == "rules-fallback"
    assert spec.metadata["fallback_reason"] == dec.last_fallback_reason
    assert spec.metadata["llm_output"] == "I cannot help with that." == dec.last_output
    spec = dec.parse_output(json.dumps(GOOD), PROMPT)
    assert spec == EXPECTED and spec.metadata["decomposer"] == "llm"
    assert dec.last_fallback_reason is None
    assert not dec.loaded  # parsing fixed strings never loads a model


def test_no_fallback_raises():
    dec = LLMDecomposer("unused/model", fallback=False, open_vocab=False)
    with pytest.raises(LLMOutputError, match=r"include\[0\]\.color='teal'"):
        dec.parse_output(_with(item0_color="teal"), PROMPT)
    with pytest.raises(LLMOutputError, match=r"include\[0\]\.count=11"):
        LLMDecomposer("unused/model", fallback=False).parse_output(_with(item0_count=11), PROMPT)


class _FakeRules:
    def __init__(self):
        self.calls = []

    def parse(self, prompt):
        self.calls.append(("parse", prompt))
        return Spec(entities=(Entity("thing"),), prompt=prompt)

    def plan(self, spec):
        self.calls.append(("plan", spec))
        return "plan"

    def revise(self, plan, feedback, *, executed=True):
        self.calls.append(("revise", plan, feedback, executed))
        return "revised"

    def current(self, plan):
        self.calls.append(("current", plan))
        return None


def test_plan_revise_and_fallback_delegate_to_rules():
    rules = _FakeRules()
    dec = LLMDecomposer("unused/model", rules=rules)
    assert dec.plan(EXPECTED) == "plan" and dec.revise("plan", "fb", executed=False) == "revised"
    assert dec.current("plan") is None
    assert dec.parse_output("garbage", "a thing").entities == (Entity("thing"),)
    assert rules.calls[1] == ("revise", "plan", "fb", False)
    assert [c[0] for c in rules.calls] == ["plan", "revise", "current", "parse"]


def test_plan_with_rule_decomposer_and_protocol():
    pytest.importorskip("poser_env.decomposer")
    from poser_env.core.commands import Command
    from poser_env.decomposer import Decomposer, RuleDecomposer, make_decomposer

    dec = LLMDecomposer("unused/model")
    assert isinstance(dec, Decomposer)
    plan = dec.plan(EXPECTED)
    assert plan == RuleDecomposer().plan(EXPECTED)
    assert isinstance(dec.current(plan), Command)
    made = make_decomposer("llm:unused/model", max_attempts=2, max_new_tokens=5)
    assert isinstance(made, LLMDecomposer) and made.max_new_tokens == 5 and not made.loaded


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens=0 must be an int >= 1"),
        ({"cache_size": -1}, "cache_size=-1 must be an int >= 0"),
        ({"device": "tpu"}, "device='tpu' is not a torch device"),
        ({"dtype": "int8"}, "dtype='int8' is not supported"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError) as exc:
        LLMDecomposer("some/llm", **kwargs)
    assert message in str(exc.value)


@pytest.mark.parametrize(("bad", "message"), [
    ("", r"prompt='' is empty"),
    ("\x00\x01", r"is empty"),
    (3, r"prompt=3 is a int, not a string"),
    ("a cat " * 3000, r"more than MAX_PROMPT_CHARS"),
])
def test_empty_prompt_error(bad, message):
    with pytest.raises(SpecError, match=message):
        LLMDecomposer("some/llm").parse(bad)


def test_missing_transformers_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install \"image-poser\[diffusers\]\""):
        LLMDecomposer("some/llm").load()


# ---------------------------------------------------------------------- loading path (tiny random Llama)
@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from critic.testing import save_tiny_llama

    return str(save_tiny_llama(tmp_path_factory.mktemp("llm") / "llama"))


def test_missing_model_error(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as exc:
        LLMDecomposer(str(tmp_path / "absent")).parse(PROMPT)
    assert "cannot load the LLM decomposer model" in str(exc.value) and "huggingface-cli download" in str(exc.value)
    with pytest.raises(OSError, match="huggingface-cli download no-org/no-llm --local-dir <folder>"):
        LLMDecomposer("no-org/no-llm").load()


def test_tiny_llama_loading_path(llama_folder, monkeypatch):
    pytest.importorskip("poser_env.core.parser")
    dec = LLMDecomposer(llama_folder, max_new_tokens=12)
    assert not dec.loaded
    text = dec.prompt_text(PROMPT)
    assert dec.loaded
    assert text.startswith("<|system|> " + SYSTEM_PROMPT) and text.endswith("<|assistant|> ")
    assert f"Description: {PROMPT}" in text
    spec = dec.parse(PROMPT)
    raw = dec.last_output
    assert isinstance(raw, str)
    # a random model does not write a valid spec: the rules take over and say why
    assert spec.metadata["decomposer"] == "rules-fallback" and dec.last_fallback_reason
    assert spec == _parser_parse(PROMPT)
    # greedy decoding is deterministic: a fresh decomposer writes the same answer
    other = LLMDecomposer(llama_folder, max_new_tokens=12)
    assert other.generate(PROMPT) == raw
    # answers are cached per prompt
    monkeypatch.setattr(dec, "generate", lambda prompt: (_ for _ in ()).throw(AssertionError("not cached")))
    assert dec.parse(PROMPT) == spec


def test_tiny_llama_plain_format_without_chat_template(llama_folder):
    dec = LLMDecomposer(llama_folder, max_new_tokens=2).load()
    dec._tokenizer.chat_template = None
    shots = "".join(f"Description: {p}\nJSON: {a}\n\n" for p, a in FEW_SHOT)
    assert dec.prompt_text("a dog") == f"{SYSTEM_PROMPT}\n\n{shots}Description: a dog\nJSON:"
    assert isinstance(dec.generate("a dog"), str)


def test_tiny_llama_writes_scripted_json(llama_folder):
    """Force the real model's logits token by token: generate -> decode -> extract -> validate, end to end."""
    from critic.testing import scripted_output

    prompt = "two red clocks and a blue dog"
    answer = '{"include":[{"class":"clock","count":2,"color":"red"},{"class":"dog","count":1,"color":"blue"}]}'
    dec = LLMDecomposer(llama_folder, max_new_tokens=64, cache_size=0).load()
    with scripted_output(dec, answer) as script:
        assert dec._tokenizer.unk_token_id not in script  # the word-level vocabulary holds every token
        spec = dec.parse(prompt)
    assert dec.last_output == answer
    assert dec.last_fallback_reason is None and spec.metadata["decomposer"] == "llm"
    assert spec == Spec(entities=(Entity("clock", 2, "red"), Entity("dog", 1, "blue")), prompt=prompt)
    # the hook is gone after the block, and a word outside the tiny vocabulary is refused by name
    assert not dec._model.get_output_embeddings()._forward_hooks
    with pytest.raises(ValueError, match="answer='xylophonist' has a token outside the tiny vocabulary"), \
            scripted_output(dec, "xylophonist"):
        pass


# ---------------------------------------------------------------------- open spec (fixed model outputs)
OPEN_PROMPT = "a teal scarf inside a wooden basket, next to a red cup, under a starry sky, no dogs"
OPEN_ANSWER = json.dumps({
    "include": [
        {"class": "scarf", "count": 1, "color": "teal", "position": ["inside", 1]},
        {"class": "basket", "count": 1, "attributes": ["wooden"]},
        {"class": "cup", "count": 1, "attributes": ["red"], "position": ["next to", 1]},
    ],
    "exclude": [{"class": "dog", "count": 1}],
    "background": "starry sky",
})


def test_open_spec_from_fixed_output():
    spec = spec_from_llm_text(OPEN_ANSWER, OPEN_PROMPT, open_vocab=True)
    assert spec.entities == (Entity("scarf"), Entity("basket"), Entity("cup", color="red"))
    assert spec.relations == (Relation(2, "next to", 1),)
    assert spec.open_attributes == (OpenAttribute(0, "teal"), OpenAttribute(1, "wooden"))
    assert spec.open_relations == (OpenRelation(0, "inside", 1),)
    assert spec.exclusions == (Exclusion("dog"),)
    assert spec.background is None and spec.unexpressed == ("background: starry sky",)
    texts = {a.id: a.text for a in spec.assertions()}
    assert texts["a0"] == "the scarf is teal" and texts["a1"] == "the basket is wooden"
    assert texts["o0"] == "the scarf is inside the basket"
    with pytest.raises(SpecError, match=r"outside SceneSim's vocabulary \(the scarf is teal; the basket is wooden; "
                                         r"the scarf is inside the basket\)"):
        spec.require_closed()
    assert Spec.from_geneval(spec.to_geneval()) == spec  # the open spec round-trips


def test_open_spec_reaches_the_vlm_questions():
    from critic.vlm import VLMCritic

    spec = spec_from_llm_text(OPEN_ANSWER, OPEN_PROMPT, open_vocab=True)
    critic = VLMCritic("unused/vlm")  # nothing loads until the first judgement
    questions = [critic.question(a) for a in spec.assertions()]
    assert any("the scarf is teal" in q for q in questions)
    assert any("the scarf is inside the basket" in q for q in questions)


def test_closed_vocab_refuses_open_words():
    with pytest.raises(LLMOutputError, match=r"include\[0\]\.color='teal' is not one of"):
        spec_from_llm_text(OPEN_ANSWER, OPEN_PROMPT, open_vocab=False)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"include": [{"class": "scarf", "attributes": "teal"}]}, "include[0].attributes='teal' must be a list"),
        ({"include": [{"class": "scarf", "attributes": [""]}]}, "must be a word or short phrase"),
        ({"include": [{"class": "scarf", "attributes": ["x" * 41]}]}, "must be a word or short phrase"),
        ({"include": [{"class": "scarf", "count": 1}], "unexpressed": [3]}, "unexpressed[0]=3 must be a string"),
        ({"include": [{"class": "scarf", "position": ["inside", 0]}]}, "refers to the group itself"),
    ],
)
def test_open_spec_errors(answer, message):
    with pytest.raises(LLMOutputError) as exc:
        spec_from_llm_text(json.dumps(answer), OPEN_PROMPT, open_vocab=True)
    assert message in str(exc.value)


def test_schema_is_enforced_with_jsonschema():
    pytest.importorskip("jsonschema")
    assert SCHEMA["$id"].endswith("/2")
    long_noun = {"include": [{"class": "scarf " * 20, "count": 1}]}
    with pytest.raises(LLMOutputError, match=r"include\[0\]\.class: .* is too long"):
        spec_from_llm_text(json.dumps(long_noun), "scarf " * 20, open_vocab=True)


def test_prompt_is_versioned_with_few_shot_examples():
    assert PROMPT_VERSION == 2
    assert len(FEW_SHOT) >= 2
    for prompt, answer in FEW_SHOT:  # every example is a valid answer for its prompt
        spec_from_llm_text(answer, prompt, open_vocab=True)
    dec = LLMDecomposer("unused/model")
    spec = dec.parse_output(OPEN_ANSWER, OPEN_PROMPT)
    assert spec.metadata["prompt_version"] == PROMPT_VERSION and spec.metadata["decomposer"] == "llm"
    assert spec.open_attributes  # the decomposer emits the open spec by default


def test_scenesim_refuses_an_open_spec_by_name_and_rules_say_unknown():
    import numpy as np

    from critic.scene import SceneCritic
    from poser_env.core.rules import evaluate

    spec = spec_from_llm_text(OPEN_ANSWER, OPEN_PROMPT, open_vocab=True)
    with pytest.raises(SpecError, match=r"outside SceneSim's vocabulary .*spec\.closed\(\)"):
        SceneCritic()(np.zeros((64, 64, 3), np.uint8), spec)
    verdicts = {v.assertion_id: v for v in evaluate(spec, (), width=64, height=64)}
    assert verdicts["a0"].holds == "unknown" and "VLM critic" in verdicts["a0"].reason
    assert verdicts["o0"].holds == "unknown"
    closed = spec.closed()  # the documented, reported reduction
    assert closed.is_closed and "the scarf is teal" in closed.unexpressed
    SceneCritic()(np.zeros((64, 64, 3), np.uint8), closed)  # judged without complaint
