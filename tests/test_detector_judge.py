"""DetectorJudge: tiny random OWLv2 (and CLIP) built in code, saved and loaded back; scripted detector outputs."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from critic.detector_judge import (
    REFERENCE_COLORS,
    DetectorJudge,
    classify_color,
    nms,
    srgb_to_lab,
)
from critic.testing import save_tiny_clip, save_tiny_owlv2
from critic.vlm import ModelLoadError
from poser_env.core.feedback import Feedback
from poser_env.core.spec import COLORS, GENEVAL_COLORS, Entity, Exclusion, Relation, Spec


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_owlv2(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def _spec(**kw: Any) -> Spec:
    """Two red dogs left of a blue cup, no cat (overridable)."""
    base: dict[str, Any] = dict(
        entities=(Entity("dog", 2, color="red"), Entity("cup", color="blue")),
        relations=(Relation(0, "left of", 1),),
        exclusions=(Exclusion("cat"),),
        prompt="two red dogs left of a blue cup",
    )
    base.update(kw)
    return Spec(**base)


# ---------------------------------------------------------------------------- end to end on a tiny OWLv2
def test_end_to_end_tiny_owlv2(owl_dir: Path) -> None:
    judge = DetectorJudge(owl_dir, nms_threshold=1.0)
    assert not judge.loaded and "loaded=False" in repr(judge)
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    spec = _spec(background="sky")
    fb = judge(img, spec)
    assert judge.loaded
    assert isinstance(fb, Feedback)
    assert [v.assertion_id for v in fb.verdicts] == [a.id for a in spec.assertions()]
    assert fb.verdict("background").holds == "unknown"
    assert 0.0 <= fb.alignment <= 1.0
    assert fb.detections, "the random tiny detector should keep some boxes above min_score"
    for d in fb.detections:
        x1, y1, x2, y2 = d.box
        assert 0.0 <= x1 < x2 <= 64.0 and 0.0 <= y1 < y2 <= 48.0
        assert d.label in spec.nouns and d.color in GENEVAL_COLORS and 0.0 <= d.score <= 1.0
    assert fb.metadata["color_method"] == "pixel" and fb.metadata["fidelity_measured"] is False
    # deterministic: the same image gives the same feedback
    assert judge(img, spec) == fb


def test_end_to_end_with_clip_colours(owl_dir: Path, clip_dir: Path) -> None:
    judge = DetectorJudge(owl_dir, clip_model=clip_dir)
    img = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    fb = judge(img, _spec())
    assert fb.metadata["color_method"] == f"clip:{clip_dir}"
    assert fb.detections and all(d.color in GENEVAL_COLORS for d in fb.detections)
    assert judge(img, _spec()) == fb


def test_spec_without_nouns_skips_the_detector(owl_dir: Path) -> None:
    fb = DetectorJudge(owl_dir)(np.zeros((16, 16, 3), np.uint8), Spec(entities=(), style="photo"))
    assert [v.holds for v in fb.verdicts] == ["unknown"] and fb.detections == () and fb.alignment == 1.0


# ---------------------------------------------------------------------------- scripted detector output
class FakeOwl:
    """Stands in for the OWLv2 model: returns fixed boxes (cx, cy, w, h in [0, 1] of the padded square)."""

    dtype = torch.float32

    def __init__(self, items: list[tuple[int, float, tuple[float, float, float, float]]], n_queries: int) -> None:
        logits = torch.full((1, len(items), n_queries), -20.0)
        for q, (label, score, _) in enumerate(items):
            logits[0, q, label] = math.log(score / (1.0 - score))
        self.out = SimpleNamespace(logits=logits, pred_boxes=torch.tensor([[b for _, _, b in items]]))
        self.calls = 0

    def __call__(self, **inputs: Any) -> SimpleNamespace:
        self.calls += 1
        assert inputs["pixel_values"].dtype == torch.float32 and inputs["input_ids"].shape[0] == self.out.logits.shape[2]
        return self.out


def _xyxy_to_cxcywh(box: tuple[float, float, float, float], side: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return ((x1 + x2) / 2 / side, (y1 + y2) / 2 / side, (x2 - x1) / side, (y2 - y1) / side)


RED_DOG_1 = (5.0, 40.0, 25.0, 60.0)
RED_DOG_2 = (10.0, 65.0, 30.0, 85.0)
BLUE_CUP = (70.0, 45.0, 90.0, 65.0)


def _scene(monkeypatch: pytest.MonkeyPatch, judge: DetectorJudge, nouns: tuple[str, ...],
           dog_score: float = 0.95) -> tuple[np.ndarray, FakeOwl]:
    """A 100x100 grey image with two red dogs on the left and a blue cup on the right, and the matching
    scripted detector output (plus a duplicate dog box for NMS, and a faint cup box below min_score)."""
    img = np.full((100, 100, 3), 140, np.uint8)
    for box, color in ((RED_DOG_1, "red"), (RED_DOG_2, "red"), (BLUE_CUP, "blue")):
        x1, y1, x2, y2 = (int(v) for v in box)
        img[y1:y2, x1:x2] = REFERENCE_COLORS[color]
    dog, cup = nouns.index("dog"), nouns.index("cup")
    items = [
        (dog, dog_score, _xyxy_to_cxcywh(RED_DOG_1, 100)),
        (dog, dog_score - 0.01, _xyxy_to_cxcywh((6.0, 41.0, 26.0, 61.0), 100)),  # duplicate: IoU 0.82 -> NMS
        (dog, dog_score - 0.02, _xyxy_to_cxcywh(RED_DOG_2, 100)),
        (cup, 0.97, _xyxy_to_cxcywh(BLUE_CUP, 100)),
        (cup, 0.05, _xyxy_to_cxcywh((40.0, 5.0, 60.0, 25.0), 100)),  # below min_score 0.1: dropped
    ]
    judge.load()
    fake = FakeOwl(items, len(nouns))
    monkeypatch.setattr(judge, "_model", fake)
    return img, fake


def _holds(fb: Feedback) -> dict[str, str]:
    return {v.assertion_id: v.holds for v in fb.verdicts}


def test_scripted_detections_all_hold(owl_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    judge = DetectorJudge(owl_dir)
    spec = _spec()
    img, fake = _scene(monkeypatch, judge, spec.nouns)
    fb = judge(img, spec)
    assert fake.calls == 1
    assert _holds(fb) == {"e0.count": "yes", "e0.color": "yes", "e1.exists": "yes", "e1.color": "yes",
                          "r0": "yes", "x0": "yes"}
    assert fb.all_hold and fb.alignment == 1.0
    got = [(d.label, tuple(round(v, 3) for v in d.box), d.color) for d in fb.detections]
    assert got == [("dog", RED_DOG_1, "red"), ("dog", RED_DOG_2, "red"), ("cup", BLUE_CUP, "blue")]
    assert [d.score for d in fb.detections] == pytest.approx([0.95, 0.93, 0.97])
    assert fb.metadata["n_raw_boxes"] == 4  # post-processing dropped the 0.05 box; NMS then the duplicate


@pytest.mark.parametrize(
    ("spec_kw", "expected"),
    [
        # three dogs asked for, two found
        ({"entities": (Entity("dog", 3, color="red"), Entity("cup", color="blue"))},
         {"e0.count": "no", "e0.color": "no", "e1.exists": "yes", "e1.color": "yes", "r0": "no", "x0": "yes"}),
        # the cup is blue, not green
        ({"entities": (Entity("dog", 2, color="red"), Entity("cup", color="green"))},
         {"e0.count": "yes", "e0.color": "yes", "e1.exists": "yes", "e1.color": "no", "r0": "yes", "x0": "yes"}),
        # the dogs are left of the cup, not right of it
        ({"relations": (Relation(0, "right of", 1),)},
         {"e0.count": "yes", "e0.color": "yes", "e1.exists": "yes", "e1.color": "yes", "r0": "no", "x0": "yes"}),
        # "exactly one dog" (GenEval counting style): the second dog fires the exclusion
        ({"entities": (Entity("dog"), Entity("cup", color="blue")), "exclusions": (Exclusion("dog", 2),),
          "relations": ()},
         {"e0.exists": "yes", "e1.exists": "yes", "e1.color": "yes", "x0": "no"}),
    ],
)
def test_scripted_detections_failures(
    owl_dir: Path, monkeypatch: pytest.MonkeyPatch, spec_kw: dict[str, Any], expected: dict[str, str]
) -> None:
    judge = DetectorJudge(owl_dir)
    spec = _spec(**spec_kw)
    img, _ = _scene(monkeypatch, judge, spec.nouns)
    fb = judge(img, spec)
    assert _holds(fb) == expected
    assert fb.alignment == pytest.approx(sum(v == "yes" for v in expected.values()) / len(expected))


def test_counting_tag_uses_genevals_0_9_threshold(owl_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tag="counting", relations=(), exclusions=())
    judge = DetectorJudge(owl_dir)
    img, _ = _scene(monkeypatch, judge, spec.nouns, dog_score=0.85)  # dogs at 0.85 / 0.83: above 0.3, below 0.9
    assert _holds(judge(img, spec))["e0.count"] == "no"
    judge2 = DetectorJudge(owl_dir, threshold=0.5)
    img, _ = _scene(monkeypatch, judge2, spec.nouns, dog_score=0.85)
    assert _holds(judge2(img, spec))["e0.count"] == "yes"


def test_nms_off_keeps_the_duplicate(owl_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    judge = DetectorJudge(owl_dir, nms_threshold=1.0)
    spec = _spec()
    img, _ = _scene(monkeypatch, judge, spec.nouns)
    assert sum(d.label == "dog" for d in judge(img, spec).detections) == 3


def test_owlv2_boxes_are_scaled_to_the_padded_square(owl_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OWLv2 pads a 100x50 image to 100x100 (bottom): normalised boxes refer to the square, not to (50, 100)."""
    judge = DetectorJudge(owl_dir)
    judge.load()
    spec = Spec(entities=(Entity("cup"),))
    monkeypatch.setattr(judge, "_model", FakeOwl([(0, 0.9, (0.25, 0.25, 0.2, 0.2)),
                                                  (0, 0.8, (0.5, 0.45, 0.2, 0.2))], 1))
    fb = judge(np.zeros((50, 100, 3), np.uint8), spec)
    assert [d.box for d in fb.detections] == [pytest.approx((15.0, 15.0, 35.0, 35.0)),
                                              pytest.approx((40.0, 35.0, 60.0, 50.0))]  # clipped at the bottom


# ---------------------------------------------------------------------------- colour and NMS helpers
@pytest.mark.parametrize("color", COLORS)
def test_classify_color_solid_patches(color: str) -> None:
    img = np.zeros((30, 30, 3), np.uint8)
    img[5:25, 5:25] = REFERENCE_COLORS[color]
    names = COLORS if color == "gray" else GENEVAL_COLORS
    assert classify_color(img, (5, 5, 25, 25), colors=names) == color


def test_classify_color_uses_the_centre_not_the_background() -> None:
    img = np.full((40, 40, 3), 250, np.uint8)  # white background fills most of the box
    img[14:26, 14:26] = REFERENCE_COLORS["green"]
    assert classify_color(img, (0, 0, 40, 40), center_fraction=0.25) == "green"
    assert classify_color(img, (0, 0, 40, 40), center_fraction=1.0) == "white"


def test_srgb_to_lab_reference_points() -> None:
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]]))
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert lab[1] == pytest.approx([0.0, 0.0, 0.0], abs=0.01)
    assert lab[2] == pytest.approx([53.24, 80.09, 67.20], abs=0.05)


def test_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    scores = np.array([0.5, 0.9, 0.7, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 1.0).tolist() == [1, 2, 0, 3]
    assert nms(boxes, scores, 0.99).tolist() == [1, 2, 0]  # the exact duplicate (IoU 1) goes even at 0.99


# ---------------------------------------------------------------------------- promised errors
def test_bad_device_is_named() -> None:
    with pytest.raises(ValueError, match=r"device='gpu0'.*'cuda:0'"):
        DetectorJudge("x", device="gpu0")


def test_missing_model_folder_names_path_and_fetch(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-owlv2"
    judge = DetectorJudge(missing)
    with pytest.raises(ModelLoadError, match=r"no-such-owlv2(.|\n)*huggingface-cli download"):
        judge(np.zeros((8, 8, 3), np.uint8), _spec())
    assert not judge.loaded


def test_missing_clip_folder_names_path(owl_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"CLIP colour model(.|\n)*no-clip(.|\n)*huggingface-cli download"):
        DetectorJudge(owl_dir, clip_model=tmp_path / "no-clip").load()


def test_non_owl_detector_is_refused(clip_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=str(clip_dir)):
        DetectorJudge(clip_dir).load()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dtype": "float64"}, "dtype='float64'"),
        ({"colors": ("red", "teal")}, "colors=.*teal"),
        ({"colors": ()}, "colors=.*non-empty"),
        ({"threshold": 1.5}, "threshold=1.5"),
        ({"min_score": 1.0}, "min_score=1.0"),
        ({"nms_threshold": -0.1}, "nms_threshold=-0.1"),
        ({"center_fraction": 0.0}, "center_fraction=0.0"),
        ({"query_template": "a photo"}, "query_template='a photo'.*noun"),
        ({"clip_model": ""}, "clip_model=''"),
    ],
)
def test_bad_arguments_are_named(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DetectorJudge("x", **kw)


def test_bad_model_id_and_inputs(owl_dir: Path) -> None:
    with pytest.raises(ValueError, match="model=''"):
        DetectorJudge("")
    judge = DetectorJudge(owl_dir)
    with pytest.raises(ValueError, match=r"spec must be a poser_env\.core\.spec\.Spec"):
        judge(np.zeros((8, 8, 3), np.uint8), "a dog")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        judge(np.zeros((8, 8), np.uint8), _spec())
    assert not judge.loaded  # inputs are checked before anything loads
    with pytest.raises(ValueError, match="center_fraction=2"):
        classify_color(np.zeros((8, 8, 3), np.uint8), (0, 0, 4, 4), center_fraction=2)
