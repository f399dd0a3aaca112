"""CLIP critic end to end on a tiny random CLIP saved to a temp folder (no downloads)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from critic.clip import CLIPCritic, alternatives
from critic.testing import save_tiny_clip, save_tiny_llama
from critic.vlm import ModelLoadError
from poser_env.core.feedback import Feedback
from poser_env.core.optional import MissingExtraError
from poser_env.core.spec import COLORS, Entity, Exclusion, Relation, Spec

SPEC = Spec(
    entities=(Entity("dog", 1, "red"), Entity("clock", 2, pattern="striped", size="large")),
    relations=(Relation(0, "left of", 1), Relation(1, "next to", 0)),
    exclusions=(Exclusion("cat"), Exclusion("cup", 3)),
    background="sky",
    style="photo",
    prompt="a red dog left of two large striped clocks, no cat, sky background, photo",
)
IMAGE = np.random.default_rng(1).integers(0, 256, size=(20, 28, 3), dtype=np.uint8)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip"))


@pytest.fixture(scope="module")
def critic(folder):
    return CLIPCritic(folder)


def test_end_to_end(folder):
    c = CLIPCritic(folder)
    assert not c.loaded
    fb = c(IMAGE, SPEC)
    assert c.loaded and isinstance(fb, Feedback)
    ids = [a.id for a in SPEC.assertions()]
    assert [v.assertion_id for v in fb.verdicts] == ids
    for v in fb.verdicts:
        assert v.holds in ("yes", "no") and (v.holds == "yes") == (v.confidence >= 0.5)
        assert v.reason.startswith("CLIP cos=")
    assert fb.alignment == pytest.approx(_sigmoid((fb.metadata["prompt_similarity"] - 0.22) / 0.03))
    assert fb.fidelity == 1.0 and fb.metadata["fidelity_measured"] is False
    assert fb == c(IMAGE, SPEC)  # deterministic


def test_similarities_match_clip_forward(critic, folder):
    from PIL import Image
    from transformers import AutoProcessor, CLIPModel

    texts = ["a red dog", "there are two clocks", "the background is sky"]
    ours = critic.similarities(IMAGE, texts)
    proc = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    inputs = proc(text=texts, images=[Image.fromarray(IMAGE)], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
        ref = (out.logits_per_image[0] / model.logit_scale.exp()).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert np.all(np.abs(ours) <= 1.0 + 1e-9)


def test_features_as_tensor_or_output_object(critic, monkeypatch):
    """transformers 5 returns an output object from get_*_features, 4 returned a tensor: same result."""
    ref = critic.similarities(IMAGE, ["a dog", "a cat"])
    model = critic._model
    orig_img, orig_txt = model.get_image_features, model.get_text_features
    monkeypatch.setattr(model, "get_image_features", lambda **kw: orig_img(**kw).pooler_output)
    monkeypatch.setattr(model, "get_text_features", lambda **kw: orig_txt(**kw).pooler_output)
    np.testing.assert_allclose(critic.similarities(IMAGE, ["a dog", "a cat"]), ref, atol=1e-7)


def test_contrast_calibration_formula(critic, monkeypatch):
    critic.load()
    texts_seen: list[list[str]] = []

    def fake(image, texts):
        texts_seen.append(texts)
        # statement cosines 0.30, alternatives 0.25 except the colour alternative 'blue' at 0.40
        return np.array([0.40 if t.endswith(" blue") else 0.30 if i <= len(SPEC.assertions()) else 0.25
                         for i, t in enumerate(texts)])

    monkeypatch.setattr(critic, "similarities", fake)
    fb = critic(IMAGE, SPEC)
    temp = float(critic._model.logit_scale.detach().exp())
    assert fb.metadata["temperature"] == pytest.approx(temp)
    color = fb.verdict("e0.color")
    assert color.holds == "no" and color.confidence == pytest.approx(_sigmoid(temp * (0.30 - 0.40)))
    assert "'the dog is blue'" in color.reason
    for v in fb.verdicts:
        if v.assertion_id != "e0.color":
            assert v.holds == "yes" and v.confidence == pytest.approx(_sigmoid(temp * 0.05))
    assert "not the dog is red" in fb.text
    assert len(texts_seen) == 1 and texts_seen[0][0] == SPEC.prompt


def test_logistic_calibration(folder):
    c = CLIPCritic(folder, calibration="logistic", center=0.1, scale=0.05)
    fb = c(IMAGE, SPEC)
    for v, cos in zip(fb.verdicts, fb.metadata["similarities"]):
        assert v.confidence == pytest.approx(_sigmoid((cos - 0.1) / 0.05))
    assert fb.alignment == pytest.approx(_sigmoid((fb.metadata["prompt_similarity"] - 0.1) / 0.05))


def test_unknown_on_non_finite_similarity(critic, monkeypatch):
    critic.load()
    monkeypatch.setattr(critic, "similarities", lambda image, texts: np.full(len(texts), np.nan))
    fb = critic(IMAGE, SPEC)
    assert all(v.holds == "unknown" and v.confidence == 0.5 for v in fb.verdicts)
    assert all("non-finite CLIP similarity" in v.reason for v in fb.verdicts)
    assert fb.alignment == 0.5


def test_long_texts_are_truncated(critic):
    long = " ".join(["a red dog left of a blue cat"] * 40)  # far beyond the 64 positions of the tiny model
    assert np.isfinite(critic.similarities(IMAGE, [long])).all()


def test_empty_prompt_uses_entity_phrases(critic, monkeypatch):
    seen: list[str] = []
    orig = critic.similarities
    monkeypatch.setattr(critic, "similarities", lambda image, texts: (seen.append(texts[0]), orig(image, texts))[1])
    critic(IMAGE, Spec(entities=(Entity("dog", 2, "red"), Entity("cat"))))
    assert seen == ["two red dogs, a cat"]


def test_alternatives():
    alt = {a.id: alternatives(a, SPEC) for a in SPEC.assertions()}
    assert alt["e0.color"] == [f"the dog is {c}" for c in COLORS if c != "red"]
    assert alt["e0.exists"] == ["there is no dog", "there are two red dogs"]
    assert alt["e1.count"] == ["there is a large striped clock", "there are three large striped clocks"]
    assert alt["e1.pattern"] == ["the clocks are plain", "the clocks are dotted", "the clocks are checkered"]
    assert alt["e1.size"] == ["the clocks are small", "the clocks are medium"]
    assert alt["r0"] == ["the dog is right of the clock"]
    assert alt["r1"] == ["the clock is far from the dog"]
    assert alt["x0"] == ["there is a cat"] and alt["x1"] == ["there are 3 cups"]
    assert "the background is grass" in alt["background"] and "the background is sky" not in alt["background"]
    assert alt["style"] == ["the style is watercolor", "the style is sketch", "the style is pixel art"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calibration": "softmax"}, "calibration='softmax' must be 'contrast' or 'logistic'"),
        ({"center": 2.0}, "center=2.0 must be a cosine in [-1, 1]"),
        ({"scale": 0}, "scale=0 must be a number > 0"),
        ({"temperature": -1.0}, "temperature=-1.0 must be a number > 0 or None"),
        ({"batch_size": 0}, "batch_size=0 must be an int >= 1"),
        ({"device": "cuda0"}, "device='cuda0' is not a torch device"),
        ({"dtype": "int8"}, "dtype='int8' is not supported"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError) as exc:
        CLIPCritic("some/clip", **kwargs)
    assert message in str(exc.value)


def test_missing_model_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as exc:
        CLIPCritic(str(tmp_path / "absent"))(IMAGE, SPEC)
    assert "cannot load the CLIP critic model" in str(exc.value) and "huggingface-cli download" in str(exc.value)
    with pytest.raises(ModelLoadError, match="huggingface-cli download no-org/no-clip --local-dir <folder>"):
        CLIPCritic("no-org/no-clip").load()


def test_not_a_clip_model_error(tmp_path):
    folder = save_tiny_llama(tmp_path / "llama")
    with pytest.raises(ModelLoadError, match="has no get_image_features/get_text_features; use a CLIP-style"):
        CLIPCritic(str(folder)).load()


def test_missing_transformers_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install \"image-poser\[diffusers\]\""):
        CLIPCritic("some/clip").load()
