"""Every pipeline class the packaged registry names, built tiny in code, loaded through the registry by path.

For each registry entry: a tiny random pipeline of its class is saved with ``save_pretrained`` (entries that
share a model share the folder, as with real weights), the entry is loaded through
:func:`load_diffusers_experts` from a copy of the packaged registry that only swaps the model for the
folder (and shrinks steps/size), and one call of every operation the entry serves runs on the CPU on a
two-object scene; the first operation runs twice with the same seed and gives the same bytes. Classes that
cannot be built here are listed in :data:`experts.testing.NOT_BUILDABLE` with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from experts.diffusers import diffusers_registry, load_diffusers_experts
from experts.testing import (
    NOT_BUILDABLE,
    registry_classes,
    torch_threads,
    two_object_scene,
    write_tiny_copy_of_registry,
)
from poser_env.core.commands import OPS
from poser_env.core.feedback import Detection

CLASSES = registry_classes()
ENTRIES = sorted(CLASSES)
#: One command per planner operation, on the scene of :func:`_scene` (a clock top left, a dog bottom right).
COMMANDS: dict[str, str] = {
    "generate": "generate: a red clock left of a dog",
    "add": "add: a blue cup right of the clock",
    "remove": "remove: the dog",
    "recolor": "recolor: make the clock blue",
    "retexture": "retexture: make the clock striped",
    "resize": "resize: make the dog large",
    "move": "move: put the dog below the clock",
    "background": "background: change the background to a wooden table",
    "restyle": "restyle: make it a watercolor",
    "refine": "refine: improve the details",
}
DETECTIONS = (Detection("clock", (2.0, 2.0, 12.0, 12.0), 0.9, color="red"), Detection("dog", (18.0, 16.0, 30.0, 28.0), 0.8))


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    with torch_threads(1):
        yield write_tiny_copy_of_registry(tmp_path_factory.mktemp("tiny_registry"))


def test_every_registry_class_is_built_or_explained(tiny_registry: tuple[Path, dict[str, str]]) -> None:
    _, built = tiny_registry
    missing = {c for n, c in CLASSES.items() if n not in built}
    assert missing == set(NOT_BUILDABLE) & set(CLASSES.values())
    assert len(set(built.values())) >= 17  # SD, SDXL (3), SD3, FLUX (3), PixArt, SANA, Qwen-Image, IP2P, GLIGEN...
    assert {"Kandinsky3Pipeline", "Kandinsky3Img2ImgPipeline"} <= set(built.values())


def test_every_op_has_real_experts() -> None:
    reg = diffusers_registry()
    serving = {op: [] for op in OPS}  # type: dict[str, list[str]]
    for e in load_diffusers_experts():
        for op in e.ops:
            serving[op].append(e.name)
    assert all(serving[op] for op in OPS), serving
    assert sum(len(v) >= 2 for v in serving.values()) == len(OPS), serving  # every op has two or more
    for name in reg.names():
        card = reg.entry(name).card
        for field in ("vram_gb", "vram_gb_model_offload", "vram_gb_sequential", "profile_24gb", "profile_48gb",
                      "profile_80gb", "gpu_seconds", "family"):
            assert field in card, (name, field)
        assert card["profile_24gb"] in ("resident", "model-offload", "sequential-offload", "nf4")


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_runs_every_op_it_serves(tiny_registry: tuple[Path, dict[str, str]], name: str) -> None:
    path, built = tiny_registry
    if name not in built:
        pytest.skip(f"{CLASSES[name]} cannot be built tiny here: {NOT_BUILDABLE[CLASSES[name]]}")
    with torch_threads(1):
        (ex,) = load_diffusers_experts(path, [name], local_files_only=True)
        assert ex.spec.pipeline_class == CLASSES[name]
        scene = two_object_scene()
        outs: dict[str, Any] = {}
        for op in sorted(ex.ops):
            image = None if ex.kind == "text-to-image" else scene
            out = ex(COMMANDS[op], image, seed=5, detections=DETECTIONS)
            assert out.image.shape == (32, 32, 3) and out.image.dtype == np.uint8, (name, op)
            assert out.metadata["op"] == op
            outs[op] = out
        first = sorted(ex.ops)[0]
        again = ex(COMMANDS[first], None if ex.kind == "text-to-image" else scene, seed=5, detections=DETECTIONS)
        assert again.image.tobytes() == outs[first].image.tobytes(), "same seed, same image"
        assert type(ex.load()).__name__ == CLASSES[name]
    if "move" in outs and ex.task in ("inpaint", "gligen"):  # region experts: remove at the box, insert at the new one
        assert outs["move"].metadata["move"]["from"] == [18.0, 16.0, 30.0, 28.0]
