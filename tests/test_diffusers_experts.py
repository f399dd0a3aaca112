"""Diffusers experts on tiny random pipelines built in code, loaded through the registry by path."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from experts.diffusers import (
    DiffusersExpert,
    ResidencyManager,
    diffusers_registry,
    load_diffusers_experts,
    target_mask,
)
from poser_env.core.expert import ExpertError
from poser_env.core.feedback import Detection
from poser_env.core.registry import RegistryError

sys.path.insert(0, str(Path(__file__).parent))
from experts.testing import save_tiny_pipelines, torch_threads, write_tiny_registry

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["tiny-t2i", "tiny-img2img", "tiny-ip2p", "tiny-inpaint"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("tiny_diffusers")
    with torch_threads(1):
        folders = save_tiny_pipelines(root)
        reg = write_tiny_registry(root / "registry.toml", folders)
        experts = {e.name: e for e in load_diffusers_experts(reg, local_files_only=True)}
        canvas = experts["tiny-t2i"]("generate: a red clock and a blue dog", seed=7).image
        yield {"root": root, "folders": folders, "registry": reg, "experts": experts, "canvas": canvas}


def _call(tiny: dict[str, Any], name: str, seed: int, **params: Any) -> np.ndarray:
    ex = tiny["experts"][name]
    image = None if ex.kind == "text-to-image" else tiny["canvas"]
    dets = (Detection("clock", (2, 2, 14, 14)), Detection("dog", (16, 16, 30, 30)))
    return ex("recolor: make the clock blue", image, seed=seed, detections=dets, **params).image


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(32, 32), (64, 48)])
def test_every_kind_gives_requested_size(tiny: dict[str, Any], name: str, size: tuple[int, int]) -> None:
    w, h = size
    img = _call(tiny, name, seed=3, width=w, height=h)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert img.std() > 1.0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_image_other_seed_other_image(tiny: dict[str, Any], name: str) -> None:
    a, b, c = _call(tiny, name, 11), _call(tiny, name, 11), _call(tiny, name, 12)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_default_size_from_registry_and_from_input(tiny: dict[str, Any]) -> None:
    assert tiny["canvas"].shape == (32, 32, 3)  # registry width/height = 32
    big = np.ascontiguousarray(np.tile(tiny["canvas"], (2, 1, 1))[:, :, :])  # 64x32 input
    out = tiny["experts"]["tiny-ip2p"]("refine: sharpen it", big, seed=0).image
    assert out.shape == big.shape  # editing experts keep the input size by default


def test_odd_size_is_generated_rounded_and_resized_exactly(tiny: dict[str, Any]) -> None:
    out = tiny["experts"]["tiny-t2i"]("generate: a cup", seed=0, width=36, height=20)
    assert out.image.shape == (20, 36, 3)


def test_op_prefix_is_stripped_into_the_prompt(tiny: dict[str, Any]) -> None:
    out = tiny["experts"]["tiny-ip2p"]("recolor: make the second clock blue", tiny["canvas"], seed=0)
    assert out.metadata["prompt"] == "make the second clock blue"
    assert out.metadata["op"] == "recolor"
    plain = tiny["experts"]["tiny-t2i"]("a plain prompt", seed=0)
    assert plain.metadata["prompt"] == "a plain prompt"


def test_same_model_entries_share_weights(tiny: dict[str, Any]) -> None:
    t2i, i2i = tiny["experts"]["tiny-t2i"], tiny["experts"]["tiny-img2img"]
    p1, p2 = t2i.load(), i2i.load()
    assert p1 is not p2 and p1.unet is p2.unet and p1.vae is p2.vae and p1.text_encoder is p2.text_encoder
    assert t2i.manager is i2i.manager
    report = t2i.memory_report()
    base = next(b for b in report.bases if b.model == t2i.model)
    assert set(base.tasks) == {"text-to-image", "image-to-image"}
    assert report.counters["derived"] >= 1
    from experts.diffusers.residency import module_bytes

    assert base.bytes == module_bytes(p1)[0]  # shared modules counted once


def test_inpaint_mask_from_detections_metadata(tiny: dict[str, Any]) -> None:
    dets = (Detection("clock", (0, 0, 8, 8)), Detection("clock", (20, 20, 30, 30)))
    ex = tiny["experts"]["tiny-inpaint"]
    out = ex("recolor: make the second clock blue", tiny["canvas"], seed=0, detections=dets)
    assert out.metadata["mask_source"] == "detections:clock:#2(1)"
    added = ex("add: a cat", tiny["canvas"], seed=0, detections=dets)
    assert added.metadata["mask_source"] == "placement" and 0 < added.metadata["mask_fraction"] < 0.5
    assert added.metadata["prompt"] == "a cat"
    with pytest.raises(ExpertError, match="no detection matches the target"):  # never the whole canvas
        ex("recolor: make the cat blue", tiny["canvas"], seed=0, detections=dets)
    rm = ex("remove: the clocks", tiny["canvas"], seed=0, detections=dets)
    assert rm.metadata["prompt"] == ex.remove_prompt and "clock" in rm.metadata["negative_prompt"]
    mask = np.zeros((32, 32), dtype=bool)
    mask[:16] = True
    explicit = ex("recolor: make it blue", tiny["canvas"], seed=0, mask=mask)
    assert explicit.metadata["mask_source"] == "params:mask" and explicit.metadata["mask_fraction"] == 0.5


def test_target_mask_rules() -> None:
    dets = [Detection("clock", (20, 0, 30, 10)), Detection("clock", (0, 0, 10, 10)), Detection("dog", (0, 20, 10, 30))]
    m, src = target_mask("make the second clock blue", dets, 32, 32, margin=0)
    assert src == "detections:clock:#2(1)" and m[5, 25] and not m[5, 5] and m.sum() == 100  # reading order
    m, src = target_mask("make the first clock blue", dets, 32, 32, margin=0)
    assert m[5, 5] and not m[5, 25]
    m, src = target_mask("make the clocks striped", dets, 32, 32, margin=0)
    assert src == "detections:clock:all(2)" and m.sum() == 200
    m, src = target_mask("put the dog right of the clock", dets, 32, 32, margin=2)
    assert src.startswith("detections:dog") and m.sum() == 14 * 12  # box grown by 2, clipped at x=0 and y=32
    m, src = target_mask("add a cat", dets, 32, 32, default="center")
    assert src == "default:center" and m.sum() == 16 * 16 and m[16, 16] and not m[0, 0]
    m, src = target_mask("make the last clock red", dets, 32, 32, margin=0)
    assert m[5, 25] and not m[5, 5]
    with pytest.raises(ValueError, match="default_mask"):
        target_mask("x", dets, 8, 8, default="edge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask_margin"):
        target_mask("x", dets, 8, 8, margin=-1)


# ---------------------------------------------------------------------- errors
def test_bad_call_arguments_raise_naming_them(tiny: dict[str, Any]) -> None:
    t2i, ip = tiny["experts"]["tiny-t2i"], tiny["experts"]["tiny-ip2p"]
    with pytest.raises(ValueError, match="params \\['stepz'\\]"):
        t2i("generate: a cup", seed=0, stepz=3)
    with pytest.raises(ValueError, match="steps=0"):
        t2i("generate: a cup", seed=0, steps=0)
    with pytest.raises(ValueError, match="width=5"):
        t2i("generate: a cup", seed=0, width=5)
    with pytest.raises(ValueError, match="image=None"):
        ip("recolor: make it blue", seed=0)
    with pytest.raises(ValueError, match="seed=-1"):
        t2i("generate: a cup", seed=-1)
    with pytest.raises(ValueError, match="mask has shape"):
        tiny["experts"]["tiny-inpaint"]("recolor: x", tiny["canvas"], seed=0, mask=np.ones((3, 3), bool))
    # int(steps * strength) = int(1 * 0.75) = 0 denoising steps: diffusers would crash with a reshape error
    with pytest.raises(ValueError, match=r"steps=1 with strength=0.75 .* use steps >= 2"):
        tiny["experts"]["tiny-img2img"]("refine: sharper", tiny["canvas"], seed=0, steps=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "upscale"}, "task='upscale'"),
        ({"dtype": "float8"}, "dtype='float8'"),
        ({"device": "gpu"}, "device='gpu'"),
        ({"prompt_template": "{prompt}"}, "prompt_template"),
        ({"ops": ["paint"]}, "unknown ops \\['paint'\\]"),
        ({"default_mask": "edge"}, "default_mask='edge'"),
        ({"strength": 0.0}, "strength=0.0"),
        ({"task": "image-to-image", "steps": 1, "strength": 0.5}, r"int\(steps \* strength\) = 0"),
        ({"task": "inpaint", "steps": 3, "strength": 0.3}, "use steps >= 4"),
        ({"cost": -1}, "cost=-1"),
        ({"max_batch": 0}, "max_batch=0"),
        ({"model": ""}, "model=''"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DiffusersExpert(**{"model": "org/name", **kwargs})


def test_missing_folder_names_it_and_the_fetch_command(tmp_path: Path) -> None:
    folder = tmp_path / "not-here"
    ex = DiffusersExpert(str(folder), manager=ResidencyManager("cpu"))
    with pytest.raises(ExpertError, match="not-here") as err:
        ex("generate: a cup", seed=0)
    assert "hf download" in str(err.value)


def test_missing_hub_id_offline_names_it_and_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ex = DiffusersExpert("no-such-org/no-such-model", manager=ResidencyManager("cpu"))
    with pytest.raises(ExpertError, match="no-such-org/no-such-model") as err:
        ex.load()
    msg = str(err.value)
    assert "hf download no-such-org/no-such-model" in msg and "huggingface-cli download" in msg and "offline" in msg


def test_cuda_requested_without_cuda(tiny: dict[str, Any]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    ex = DiffusersExpert(str(tiny["folders"]["text-to-image"]), device="cuda", manager=ResidencyManager("cuda"))
    with pytest.raises(ExpertError, match=r"torch\.cuda\.is_available\(\) is False"):
        ex("generate: a cup", seed=0)


def test_unknown_registry_name_suggests(tiny: dict[str, Any]) -> None:
    with pytest.raises(RegistryError, match="Did you mean 'tiny-t2i'"):
        load_diffusers_experts(tiny["registry"], ["tiny-t2j"])


def test_packaged_registry_is_complete_and_cheap_to_build() -> None:
    reg = diffusers_registry()
    for required in ["sd15", "sdxl", "sdxl-refiner", "sd3-medium", "sd35-large", "flux-schnell", "flux-dev",
                     "pixart-sigma", "sd-turbo", "instruct-pix2pix", "sdxl-inpaint"]:
        assert required in reg
    experts = load_diffusers_experts(device="cuda")  # nothing loads: construction only
    for e in experts:
        assert e.card["vram_gb"] > 0 and e.cost > 0 and e.card["gpu_seconds"] == e.cost
        assert e.device == "cuda" and e.dtype in ("float16", "bfloat16")
    assert {e.dtype for e in load_diffusers_experts(device="cpu")} == {"float32"}


def test_construction_imports_no_torch() -> None:
    code = ("import sys; from experts.diffusers import load_diffusers_experts; "
            "load_diffusers_experts(device='cuda'); print('torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------- failures through fake pipelines
class FakePipe:
    """Stands in for a diffusers pipeline: returns ``images`` or raises what it is told."""

    def __init__(self, mode: str = "ok", fail_times: int = 0) -> None:
        import torch

        self.mode = mode
        self.fail_times = fail_times
        self.calls = 0
        self.layer = torch.nn.Linear(64, 64)  # 16.6 kB of float32 weights

    @property
    def components(self) -> dict[str, Any]:
        return {"unet": self.layer}

    def to(self, device: str) -> FakePipe:
        self.layer.to(device)
        return self

    def set_progress_bar_config(self, **_: Any) -> None:
        pass

    def __call__(self, prompt: list[str], num_inference_steps: int, guidance_scale: float, generator: Any,
                 output_type: str, width: int = 32, height: int = 32) -> Any:
        import torch

        self.calls += 1
        if self.calls <= self.fail_times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        n = len(prompt)
        if self.mode == "nan":
            images = np.full((n, height, width, 3), np.nan, dtype=np.float32)
        elif self.mode == "blank":
            images = np.full((n, height, width, 3), 0.5, dtype=np.float32)
        elif self.mode == "boom":
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        else:
            images = np.stack([torch.rand((height, width, 3), generator=g).numpy() for g in generator])
        return type("Out", (), {"images": images})()


def _fake_expert(pipes: dict[str, FakePipe], model: str, manager: ResidencyManager | None = None) -> DiffusersExpert:
    mgr = manager or ResidencyManager("cpu", loader=lambda spec, device: pipes[spec.model])
    return DiffusersExpert(model, name=f"fake-{model}", steps=1, width=32, height=32, manager=mgr)


def test_nan_output_raises_expert_error() -> None:
    ex = _fake_expert({"nan/model": FakePipe("nan")}, "nan/model")
    with pytest.raises(ExpertError, match="NaN"):
        ex("generate: a cup", seed=0)


def test_blank_output_raises_expert_error() -> None:
    ex = _fake_expert({"blank/model": FakePipe("blank")}, "blank/model")
    with pytest.raises(ExpertError, match="blank image"):
        ex("generate: a cup", seed=0)


def test_other_pipeline_failures_become_expert_errors() -> None:
    ex = _fake_expert({"boom/model": FakePipe("boom")}, "boom/model")
    with pytest.raises(ExpertError, match="mat1 and mat2"):
        ex("generate: a cup", seed=0)


def test_oom_evicts_others_and_retries_once() -> None:
    pipes = {"a/model": FakePipe(), "b/model": FakePipe("ok", fail_times=1)}
    mgr = ResidencyManager("cpu", loader=lambda spec, device: pipes[spec.model])
    a, b = _fake_expert(pipes, "a/model", mgr), _fake_expert(pipes, "b/model", mgr)
    a("generate: a cup", seed=0)
    out = b("generate: a cup", seed=0)
    assert out.image.shape == (32, 32, 3)
    assert pipes["b/model"].calls == 2 and mgr.counters["oom_retries"] == 1
    assert not mgr.on_device(a.spec) and mgr.on_device(b.spec)  # a was evicted to make room


def test_oom_twice_raises_expert_error() -> None:
    pipes = {"c/model": FakePipe("ok", fail_times=5)}
    ex = _fake_expert(pipes, "c/model")
    with pytest.raises(ExpertError, match="out of memory") as err:
        ex("generate: a cup", seed=0)
    assert pipes["c/model"].calls == 2 and "cpu_offload=True" in str(err.value)


# ---------------------------------------------------------------------- examples stay in sync
def _load_example(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod


def test_gpu_example_documents_every_registry_entry() -> None:
    doc = _load_example(ROOT / "examples" / "gpu_episode.py").__doc__
    rows = {line.split()[0]: line.split() for line in doc.splitlines() if line and not line.startswith(("=", " "))}
    reg = diffusers_registry()
    for name in reg.names():
        assert name in rows, f"examples/gpu_episode.py does not document registry entry {name!r}"
        entry = reg.entry(name)
        assert entry.kwargs["dtype"] in rows[name]
        if entry.card.get("weights_gb", 1) > 0:  # shared-weight entries say "+0"
            assert float(rows[name][-2]) == pytest.approx(entry.card["vram_gb"])
        assert float(rows[name][-1]) == pytest.approx(entry.card["gpu_seconds"])


def test_gpu_example_direct_mode_runs_on_cpu(tiny: dict[str, Any], tmp_path: Path) -> None:
    mod = _load_example(ROOT / "examples" / "gpu_episode.py")
    args = mod.parse_args([
        "--mode", "direct", "--registry", str(tiny["registry"]), "--experts", "tiny-t2i", "tiny-ip2p",
        "--commands", "recolor: make the clock green", "move: put the dog left", "--device", "cpu",
        "--out-dir", str(tmp_path), "--local-files-only",
    ])
    with torch_threads(1):
        mod.run_direct(args)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["step00_tiny-t2i.png", "step01_tiny-ip2p.png"]


def test_benchmark_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load_example(ROOT / "examples" / "benchmarks" / "diffusers_perf.py")
    with torch_threads(1):  # main() sets the thread count; restore it afterwards
        res = mod.main(mod.Args(size=32, steps=1, batch=2, repeats=1))
    assert res["cache_hit_s"] > 0 and res["batched_s"] > 0
    assert "cache hit" in capsys.readouterr().out
