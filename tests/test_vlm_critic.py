"""VLM critic end to end on tiny random Llava and Idefics3 models saved to a temp folder (no downloads)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from critic.factory import CRITIC_FORMS, make_critic
from critic.testing import BASE_WORDS, save_tiny_idefics3, save_tiny_llava, save_tiny_paligemma
from critic.vlm import (
    ModelLoadError,
    VLMCritic,
    score_yes_no,
    yes_no_token_ids,
)
from poser_env.core.feedback import CriticError, Feedback
from poser_env.core.optional import MissingExtraError
from poser_env.core.spec import Entity, Exclusion, Relation, Spec

# transformers' PaliGemma processor calls np.array(..., copy=False) on lists (numpy 2 deprecation noise)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

FAMILIES = {"llava": save_tiny_llava, "idefics3": save_tiny_idefics3, "paligemma": save_tiny_paligemma}
#: Extra constructor arguments per family (PaliGemma, like its real checkpoints, has no chat template).
KWARGS = {"llava": {}, "idefics3": {}, "paligemma": {"prompt_template": "<image>answer en {question}"}}
SPEC = Spec(
    entities=(Entity("dog", 1, "red"), Entity("teddy bear", 2)),
    relations=(Relation(0, "right of", 1),),
    exclusions=(Exclusion("cat"),),
    background="sky",
    prompt="a red dog right of two teddy bears, no cat, sky background",
)
IMAGE = np.random.default_rng(0).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    out = {name: str(fn(root / name)) for name, fn in FAMILIES.items()}
    no_yes = tuple(w for w in BASE_WORDS if w.lower() not in ("yes", "no"))
    out["no-yes-no"] = str(save_tiny_llava(root / "no-yes-no", words=no_yes))
    return out


@pytest.fixture(scope="module")
def critics(folders):
    return {name: VLMCritic(folders[name], min_yes_no_mass=0.0, **KWARGS[name]) for name in FAMILIES}


def _force_logits(model, values: dict[int, float]):
    """Hook the LM head so the logits are -1e4 except ``values`` (token id -> logit)."""

    def hook(_mod, _inp, out):
        new = torch.full_like(out, -1e4)
        for i, v in values.items():
            new[..., i] = v
        return new

    return model.get_output_embeddings().register_forward_hook(hook)


# ---------------------------------------------------------------------- end to end
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_end_to_end_verdicts(family, folders):
    critic = VLMCritic(folders[family], min_yes_no_mass=0.0, batch_size=4, **KWARGS[family])
    assert not critic.loaded  # lazy: nothing loads at construction
    fb = critic(IMAGE, SPEC)
    assert critic.loaded
    assert isinstance(fb, Feedback)
    assertions = SPEC.assertions()
    assert [v.assertion_id for v in fb.verdicts] == [a.id for a in assertions]
    assert [v.kind for v in fb.verdicts] == [a.kind for a in assertions]
    for v in fb.verdicts:
        assert v.holds in ("yes", "no")
        assert (v.holds == "yes") == (v.confidence >= 0.5)
        assert "P(yes)=" in v.reason and "Answer yes or no" in v.reason
    assert fb.alignment == pytest.approx(np.mean([v.confidence for v in fb.verdicts]))
    assert fb.metadata["fidelity_measured"] and fb.metadata["aesthetics_measured"]
    assert 0.0 < fb.fidelity < 1.0 and 0.0 < fb.aesthetics < 1.0
    assert fb.text.startswith(f"{sum(v.ok for v in fb.verdicts)} of {len(assertions)} assertions hold")
    assert fb.metadata["questions"][0] == "Is it true that there is a red dog? Answer yes or no."


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_batching_and_determinism(family, folders, critics):
    fb = critics[family](IMAGE, SPEC)
    again = critics[family](IMAGE, SPEC)
    assert fb == again  # same image -> same feedback
    one = VLMCritic(folders[family], min_yes_no_mass=0.0, batch_size=1, **KWARGS[family])(IMAGE, SPEC)
    np.testing.assert_allclose(
        [v.confidence for v in fb.verdicts], [v.confidence for v in one.verdicts], atol=1e-5
    )
    assert fb.fidelity == pytest.approx(one.fidelity, abs=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_confidence_is_p_yes_over_p_yes_plus_no(family, critics):
    critic = critics[family]
    critic.load()
    yes, no = critic._yes_ids, critic._no_ids
    tok = critic._processor.tokenizer
    assert set(yes) == set(tok.convert_tokens_to_ids(["yes", "Yes"]))
    assert set(no) == set(tok.convert_tokens_to_ids(["no", "No"]))
    handle = _force_logits(critic._model, {yes[0]: 2.0, yes[1]: 1.0, no[0]: 0.5, no[1]: -1.0})
    try:
        fb = critic(IMAGE, SPEC)
    finally:
        handle.remove()
    py, pn = math.e**2 + math.e**1, math.e**0.5 + math.e**-1
    assert all(v.holds == "yes" for v in fb.verdicts)
    np.testing.assert_allclose([v.confidence for v in fb.verdicts], py / (py + pn), rtol=1e-6)
    handle = _force_logits(critic._model, {yes[0]: -1.0, no[0]: 1.0})
    try:
        fb = critic(IMAGE, SPEC)
    finally:
        handle.remove()
    assert all(v.holds == "no" for v in fb.verdicts)
    np.testing.assert_allclose([v.confidence for v in fb.verdicts], 1 / (1 + math.e**2), rtol=1e-6)
    assert "not the dog is right of the teddy bear" in fb.text


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_bfloat16_runs_and_agrees(family, folders, critics):
    fb32 = critics[family](IMAGE, SPEC)
    critic = VLMCritic(folders[family], min_yes_no_mass=0.0, dtype="bfloat16")
    fb16 = critic(IMAGE, SPEC)
    assert critic._model.dtype == torch.bfloat16
    np.testing.assert_allclose([v.confidence for v in fb16.verdicts], [v.confidence for v in fb32.verdicts], atol=0.05)


def test_prompt_template_matches_chat_template(folders, critics):
    # the tiny chat template renders exactly this, so both paths must give the same scores
    fb = critics["llava"](IMAGE, SPEC)
    critic = VLMCritic(folders["llava"], min_yes_no_mass=0.0, prompt_template="<|user|> <image> {question} <|end|> <|assistant|>")
    critic.load()
    critic._processor.chat_template = None
    fb2 = critic(IMAGE, SPEC)
    np.testing.assert_allclose([v.confidence for v in fb.verdicts], [v.confidence for v in fb2.verdicts], atol=1e-6)


def test_explanation_goes_into_text(folders):
    critic = VLMCritic(folders["llava"], min_yes_no_mass=0.0, explain_max_new_tokens=4,
                       fidelity_question=None, aesthetics_question=None)
    fb = critic(IMAGE, SPEC)
    assert "explanation" in fb.metadata
    if fb.metadata["explanation"]:
        assert fb.text.endswith(f"The model says: {fb.metadata['explanation']}")
    assert fb.fidelity == 1.0 and fb.aesthetics == 1.0
    assert not fb.metadata["fidelity_measured"] and not fb.metadata["aesthetics_measured"]


# ---------------------------------------------------------------------- unknown verdicts
def test_unknown_when_logits_are_nan(critics):
    critic = critics["idefics3"]
    critic.load()
    handle = critic._model.get_output_embeddings().register_forward_hook(lambda m, i, o: o * float("nan"))
    try:
        fb = critic(IMAGE, SPEC)
    finally:
        handle.remove()
    assert all(v.holds == "unknown" and v.confidence == 0.5 for v in fb.verdicts)
    assert all("non-finite logits" in v.reason for v in fb.verdicts)
    assert fb.alignment == 0.5 and fb.fidelity == 0.5
    assert "non-finite" in fb.metadata["fidelity_unknown_reason"]
    assert "cannot tell whether the dog is right of the teddy bear" in fb.text


def test_unknown_when_tokenizer_has_no_yes_no(folders):
    critic = VLMCritic(folders["no-yes-no"], min_yes_no_mass=0.0)
    fb = critic(IMAGE, SPEC)
    assert critic._yes_ids == () and critic._no_ids == ()
    assert all(v.holds == "unknown" and v.confidence == 0.5 for v in fb.verdicts)
    assert all("no single token for 'yes'" in v.reason for v in fb.verdicts)


def test_unknown_when_yes_no_mass_is_negligible(folders):
    fb = VLMCritic(folders["llava"], min_yes_no_mass=0.99)(IMAGE, SPEC)
    assert all(v.holds == "unknown" for v in fb.verdicts)
    assert all("below min_yes_no_mass=0.99" in v.reason for v in fb.verdicts)


def test_score_yes_no_units():
    logits = np.array([0.0, 1.0, 2.0, 3.0])
    s = score_yes_no(logits, [1], [2], 0.0)
    assert not s.unknown and s.confidence == pytest.approx(1 / (1 + math.e))
    assert score_yes_no(logits, [], [2], 0.0).unknown
    assert "'no'" in score_yes_no(logits, [1], [], 0.0).reason
    assert score_yes_no(np.array([0.0, np.inf, 0.0]), [1], [2], 0.0).unknown
    assert score_yes_no(logits, [1], [2], 0.9).unknown


def test_yes_no_token_ids_skips_unknown_and_multi_token(folders):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folders["llava"], local_files_only=True)
    assert yes_no_token_ids(tok, ["yes", "Yes", "YES", "yes yes"]) == tuple(sorted(tok.convert_tokens_to_ids(["yes", "Yes"])))


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size=0 must be an int >= 1"),
        ({"question_template": "Is {x} so?"}, "question_template='Is {x} so?' must contain '{statement}'"),
        ({"min_yes_no_mass": 1.5}, "min_yes_no_mass=1.5 must be a number in [0, 1)"),
        ({"explain_max_new_tokens": -1}, "explain_max_new_tokens=-1 must be an int >= 0"),
        ({"prompt_template": "USER: <image>"}, "prompt_template='USER: <image>' must contain '{question}'"),
        ({"device": "gpu"}, "device='gpu' is not a torch device"),
        ({"dtype": "float64"}, "dtype='float64' is not supported"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError) as exc:
        VLMCritic("some/model", **kwargs)
    assert message in str(exc.value)


def test_empty_model_id_error():
    with pytest.raises(ValueError, match="model='' must be a local model folder or a hub id"):
        VLMCritic("")


def test_missing_folder_error(tmp_path):
    missing = str(tmp_path / "nope")
    critic = VLMCritic(missing)
    with pytest.raises(ModelLoadError) as exc:
        critic(IMAGE, SPEC)
    msg = str(exc.value)
    assert repr(missing) in msg and "huggingface-cli download <hub-id> --local-dir" in msg


def test_missing_hub_model_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as exc:
        VLMCritic("no-such-org/no-such-vlm").load()
    msg = str(exc.value)
    assert "'no-such-org/no-such-vlm'" in msg
    assert "huggingface-cli download no-such-org/no-such-vlm --local-dir <folder>" in msg
    assert "local_files_only=False" in msg


def test_missing_transformers_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"'transformers' is not installed.*pip install \"image-poser\[diffusers\]\""):
        VLMCritic("some/model").load()


def test_no_chat_template_error(folders):
    critic = VLMCritic(folders["llava"]).load()
    critic._processor.chat_template = None
    with pytest.raises(CriticError, match="has no chat template; pass prompt_template="):
        critic(IMAGE, SPEC)


def test_bad_inputs(critics):
    with pytest.raises(ValueError, match="image must have shape"):
        critics["llava"](IMAGE[..., :2], SPEC)
    with pytest.raises(ValueError, match=r"spec must be a poser_env\.core\.spec\.Spec"):
        critics["llava"](IMAGE, "a dog")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- factory
def test_factory_builds_vlm_and_clip(folders):
    c = make_critic(f"vlm:{folders['llava']}", batch_size=2)
    assert isinstance(c, VLMCritic) and c.batch_size == 2 and c.name == f"vlm:{folders['llava']}"
    assert not c.loaded
    from critic.clip import CLIPCritic

    assert isinstance(make_critic("clip:some/clip", calibration="logistic"), CLIPCritic)


def test_factory_scene():
    pytest.importorskip("critic.scene")
    from critic.scene import SceneCritic

    assert isinstance(make_critic("scene"), SceneCritic)
    # model-loading arguments shared by a configuration are ignored by the model-free critic
    c = make_critic("scene", device="cuda", dtype="float16", local_files_only=True, noise=0.25)
    assert isinstance(c, SceneCritic) and c.noise == 0.25


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("vlmm:/models/x", "Did you mean 'vlm:/models/x'?"),
        ("clp:openai/clip", "Did you mean 'clip:openai/clip'?"),
        ("scen", "Did you mean 'scene'?"),
        ("detector", ""),
    ],
)
def test_factory_unknown_names(name, hint):
    with pytest.raises(ValueError) as exc:
        make_critic(name)
    msg = str(exc.value)
    assert f"unknown critic name={name!r}" in msg and str(list(CRITIC_FORMS)) in msg
    assert hint in msg
    if not hint:
        assert "Did you mean" not in msg


def test_factory_missing_model():
    with pytest.raises(ValueError, match="names no model; write 'vlm:<path-or-id>'"):
        make_critic("vlm:")
    with pytest.raises(ValueError, match="must be a string"):
        make_critic(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- reasons for failing assertions
def test_reasons_for_failing_assertions_are_batched_capped_and_carried(folders):
    critic = VLMCritic(folders["llava"], min_yes_no_mass=0.0, reason_max_new_tokens=3, batch_size=2,
                       fidelity_question=None, aesthetics_question=None)
    critic.load()
    no_id = critic._no_ids[0]
    handle = _force_logits(critic._model, {no_id: 10.0})  # every answer is "no", every generated token too
    try:
        fb = critic(IMAGE, SPEC)
    finally:
        handle.remove()
    ids = [a.id for a in SPEC.assertions()]
    assert all(v.holds == "no" for v in fb.verdicts)
    assert sorted(fb.metadata["reasons"]) == sorted(ids)
    tok = critic._processor.tokenizer
    for v in fb.verdicts:
        why = fb.metadata["reasons"][v.assertion_id]
        assert why and len(tok(why, add_special_tokens=False)["input_ids"]) <= 3
        assert v.reason.endswith(f"why: {why}") and f"): {why}" in fb.text


def test_reasons_off_by_default_and_checked(folders):
    fb = VLMCritic(folders["llava"], min_yes_no_mass=0.0, fidelity_question=None, aesthetics_question=None)(IMAGE, SPEC)
    assert "reasons" not in fb.metadata
    with pytest.raises(ValueError, match="reason_max_new_tokens=-1"):
        VLMCritic(folders["llava"], reason_max_new_tokens=-1)
    with pytest.raises(ValueError, match="reason_prompt="):
        VLMCritic(folders["llava"], reason_prompt="why?")
