"""Grounded edits: region experts edit the target's box (from a detector beside the critic), never the canvas.

Tiny SD inpainting and GLIGEN pipelines built in code; a two-object scene (a clock top left, a dog bottom
right) with its detections. Every pixel outside the edited boxes must be byte-identical to the input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from critic.factory import make_critic
from critic.testing import save_tiny_clip, save_tiny_owlv2
from experts.diffusers import DiffusersExpert, ResidencyManager
from experts.diffusers.expert import boxes_mask, placement_boxes
from experts.testing import save_tiny, save_tiny_pipelines, torch_threads, two_object_scene
from poser_env.core.expert import ExpertError
from poser_env.core.feedback import Detection
from poser_env.core.spec import Entity, Spec

CLOCK = (2.0, 2.0, 12.0, 12.0)
DOG = (18.0, 16.0, 30.0, 28.0)
DETS = (Detection("clock", CLOCK, 0.9, color="red"), Detection("dog", DOG, 0.8))


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("grounded")
    with torch_threads(1):
        folders = save_tiny_pipelines(root, kinds=("inpaint",))
        gligen = save_tiny("StableDiffusionGLIGENPipeline", root / "gligen")
        mgr = ResidencyManager("cpu")
        common = {"steps": 2, "width": 32, "height": 32, "manager": mgr, "local_files_only": True, "mask_margin": 2}
        yield {
            "inpaint": DiffusersExpert(str(folders["inpaint"]), "inpaint", name="inpaint", strength=1.0,
                                       ops=["add", "remove", "recolor", "move"], **common),
            "gligen": DiffusersExpert(str(gligen), "gligen", name="gligen", **common),
        }


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(axis=2)


def test_inpainting_changes_only_the_targets_box(experts: dict[str, Any]) -> None:
    scene = two_object_scene()
    with torch_threads(1):
        out = experts["inpaint"]("recolor: make the dog blue", scene, seed=1, detections=DETS)
    allowed = boxes_mask([DOG], 32, 32, margin=2)
    changed = _changed(out.image, scene)
    assert changed.any(), "the dog's box was repainted"
    assert not (changed & ~allowed).any(), "no pixel outside the dog's box (+2 px margin) changed"
    assert not changed[2:12, 2:12].any(), "the clock is untouched"
    assert out.metadata["mask_source"] == "detections:dog:all(1)"
    assert out.metadata["mask_fraction"] == pytest.approx(allowed.mean())


def test_move_removes_at_the_old_box_and_inserts_at_the_new_one(experts: dict[str, Any]) -> None:
    scene = two_object_scene()
    with torch_threads(1):
        out = experts["inpaint"]("move: put the dog below the clock", scene, seed=2, detections=DETS)
    move = out.metadata["move"]
    assert move["from"] == list(DOG)
    new = tuple(move["to"])
    assert new[1] >= CLOCK[3] and new[2] - new[0] == pytest.approx(DOG[2] - DOG[0])  # below, same size
    allowed = boxes_mask([DOG, new], 32, 32, margin=2)
    changed = _changed(out.image, scene)
    assert changed.any() and not (changed & ~allowed).any()
    assert out.metadata["remove_stage"]["mask_source"] == "params:boxes"


def test_add_inpaints_a_placement_box_beside_the_reference(experts: dict[str, Any]) -> None:
    scene = two_object_scene()
    with torch_threads(1):
        out = experts["inpaint"]("add: a blue cup right of the clock", scene, seed=3, detections=DETS)
    (box,) = out.metadata["boxes"]
    assert box[0] >= CLOCK[2]  # right of the clock
    changed = _changed(out.image, scene)
    assert changed.any() and not (changed & ~boxes_mask([box], 32, 32, margin=2)).any()


def test_gligen_inserts_inside_its_box_only(experts: dict[str, Any]) -> None:
    scene = two_object_scene()
    with torch_threads(1):
        out = experts["gligen"]("add: a cat", scene, seed=4, detections=DETS)
    (box,) = out.metadata["boxes"]
    changed = _changed(out.image, scene)
    assert changed.any() and not (changed & ~boxes_mask([box], 32, 32, margin=2)).any()


def test_no_detection_of_the_target_is_an_error_not_a_repainted_canvas(experts: dict[str, Any]) -> None:
    with pytest.raises(ExpertError, match=r"no detection matches the target.*detector"):
        experts["inpaint"]("recolor: make the cat blue", two_object_scene(), seed=0, detections=DETS)
    with pytest.raises(ExpertError, match="cannot move the target"):
        experts["inpaint"]("move: put the cat left of the dog", two_object_scene(), seed=0, detections=DETS)


def test_placement_rules() -> None:
    right = placement_boxes("add: a cup right of the clock", DETS, 32, 32)
    assert right[0][0] > CLOCK[2]
    above = placement_boxes("add: a cup above the dog", DETS, 32, 32)
    assert above[0][3] <= DOG[1]
    free = placement_boxes("add: a cup", DETS, 64, 64)  # nothing named: the freest spot
    assert all(free[0] != d.box for d in DETS)
    two = placement_boxes("add: two small cups", (), 64, 64)
    assert len(two) == 2 and two[0][2] == pytest.approx(two[1][0])
    big = placement_boxes("add: a large cup", (), 100, 100)[0]
    assert big[2] - big[0] == pytest.approx(45.0)
    for b in (*right, *above, *free, *two):
        assert 0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 64


def test_detector_beside_the_scene_critic_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"detector='/models/owl' goes with a model-backed critic \(vlm:/clip:\), "
                                         r"not critic='scene'.*Drop detector="):
        make_critic("scene", detector="/models/owl")


def test_grounded_critic_adds_detector_boxes(tmp_path: Path) -> None:
    clip = save_tiny_clip(tmp_path / "clip")
    owl = save_tiny_owlv2(tmp_path / "owl")
    critic = make_critic(f"clip:{clip}", detector=str(owl), local_files_only=True)
    assert type(critic).__name__ == "GroundedCritic"
    spec = Spec(entities=(Entity("dog", 1), Entity("cup", 1)), prompt="a dog and a cup")
    with torch_threads(1):
        critic.load()
        critic.detector.min_score = 0.0  # a random tiny detector: keep every box
        fb = critic(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8), spec)
    assert fb.metadata["detector"] == str(owl) and fb.metadata["n_detections"] == len(fb.detections) > 0
    assert {d.label for d in fb.detections} <= {"dog", "cup"}
    assert critic.device_bytes() > critic.critic.device_bytes() > 0
