"""GPU check as a pytest suite: every pipeline class of the registry, the critics and the detector, tiny and
built in code, on the accelerator in the dtype their cards name.

Selected with the ``gpu`` marker and the ``--device`` option (tests/conftest.py)::

    pytest -m gpu --device cuda tests/test_gpu.py -q

On the default ``--device cpu`` every test here is skipped. Checks: each registry entry loads through the
registry on the device in its card's dtype (float16/bfloat16), runs every operation it serves with finite,
non-blank output of the requested size, gives the same bytes for the same seed, and its weights are counted
by the residency manager; the VLM/CLIP critics, the LLM decomposer and the OWLv2 detector load in their card
dtype and judge an image. (``examples/benchmarks/gpu_check.py`` keeps the timing and agreement measurements.)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_diffusers_pipelines import COMMANDS, DETECTIONS

from critic.testing import save_tiny_clip, save_tiny_llama, save_tiny_llava, save_tiny_owlv2
from experts.diffusers import diffusers_registry, load_diffusers_experts
from experts.testing import NOT_BUILDABLE, registry_classes, two_object_scene, write_tiny_copy_of_registry
from poser_env.core.spec import Entity, Spec

pytestmark = pytest.mark.gpu
CLASSES = registry_classes()


@pytest.fixture(scope="module")
def gpu_registry(tmp_path_factory: pytest.TempPathFactory, device: str) -> Iterator[tuple[Path, dict[str, str]]]:
    path, built = write_tiny_copy_of_registry(tmp_path_factory.mktemp("gpu_registry"))
    # the tiny copy runs float32; on the device every entry runs in its card's dtype instead
    text = path.read_text(encoding="utf-8").replace('dtype = "float32"', 'dtype = "card"')
    for name in built:
        card = diffusers_registry().entry(name).kwargs["dtype"]
        head = f'["{name}".kwargs]'
        i = text.index(head)
        j = text.index('dtype = "card"', i)
        text = text[:j] + f'dtype = "{card}"' + text[j + len('dtype = "card"'):]
    path.write_text(text, encoding="utf-8")
    yield path, built


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_entry_on_device_in_card_dtype(gpu_registry: tuple[Path, dict[str, str]], name: str, device: str) -> None:
    import torch

    path, built = gpu_registry
    if name not in built:
        pytest.skip(f"{CLASSES[name]}: {NOT_BUILDABLE[CLASSES[name]]}")
    (ex,) = load_diffusers_experts(path, [name], device=device, local_files_only=True)
    assert ex.dtype == diffusers_registry().entry(name).kwargs["dtype"]
    pipe = ex.load()
    dtypes = {p.dtype for c in pipe.components.values() if isinstance(c, torch.nn.Module) for p in c.parameters()}
    assert getattr(torch, ex.dtype) in dtypes
    scene = two_object_scene()
    outs: dict[str, Any] = {}
    for op in sorted(ex.ops):
        out = ex(COMMANDS[op], None if ex.kind == "text-to-image" else scene, seed=11, detections=DETECTIONS)
        assert out.image.shape == (32, 32, 3) and out.image.dtype == np.uint8
        outs[op] = out
    first = sorted(ex.ops)[0]
    again = ex(COMMANDS[first], None if ex.kind == "text-to-image" else scene, seed=11, detections=DETECTIONS)
    diff = np.abs(again.image.astype(int) - outs[first].image.astype(int))
    assert diff.max() <= 1, "same seed, same image (up to 1 level of nondeterministic GPU kernels)"
    report = ex.memory_report()
    assert report.device_bytes > 0 and report.cuda is not None and report.cuda["allocated"] > 0


@pytest.mark.parametrize("kind", ["vlm", "clip", "detector", "llm"])
def test_transformers_models_on_device_in_card_dtype(kind: str, device: str, tmp_path: Path) -> None:
    import torch

    from critic.detector_judge import DetectorJudge
    from critic.factory import make_critic
    from poser_env.llm import LLMDecomposer

    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    spec = Spec(entities=(Entity("dog", 1, "red"),), prompt="a red dog")
    if kind == "llm":
        model: Any = LLMDecomposer(str(save_tiny_llama(tmp_path / "m")), device=device).load()
        assert model._model.dtype == torch.bfloat16
        return
    if kind == "detector":
        model = DetectorJudge(str(save_tiny_owlv2(tmp_path / "m")), device=device)
        expected = torch.float16
    else:
        folder = save_tiny_llava(tmp_path / "m") if kind == "vlm" else save_tiny_clip(tmp_path / "m")
        model = make_critic(f"{kind}:{folder}", device=device, min_yes_no_mass=0.0) if kind == "vlm" else \
            make_critic(f"{kind}:{folder}", device=device)
        expected = torch.bfloat16 if kind == "vlm" else torch.float16
    fb = model(img, spec)
    assert model._model.dtype == expected and np.isfinite(fb.alignment)
    assert model.device_bytes() > 0
