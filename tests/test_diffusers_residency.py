"""Residency manager: LRU eviction under a byte budget, shared weights, memory report (tiny pipelines, CPU)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("diffusers")

from experts.diffusers import PipelineSpec, ResidencyManager
from experts.diffusers.residency import check_device, check_dtype, is_oom, module_bytes
from poser_env.core.expert import ExpertError

sys.path.insert(0, str(Path(__file__).parent))
from experts.testing import save_tiny_pipelines, torch_threads


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    with torch_threads(1):
        yield save_tiny_pipelines(tmp_path_factory.mktemp("tiny_residency"))


@pytest.fixture(scope="module")
def specs(folders: dict[str, Path]) -> dict[str, PipelineSpec]:
    return {
        "t2i": PipelineSpec(str(folders["text-to-image"]), "text-to-image", local_files_only=True),
        "i2i": PipelineSpec(str(folders["text-to-image"]), "image-to-image", local_files_only=True),
        "ip2p": PipelineSpec(str(folders["instruct-pix2pix"]), "instruct-pix2pix", local_files_only=True),
        "inpaint": PipelineSpec(str(folders["inpaint"]), "inpaint", local_files_only=True),
    }


@pytest.fixture(scope="module")
def base_bytes(specs: dict[str, PipelineSpec]) -> int:
    mgr = ResidencyManager("cpu")
    return max(module_bytes(mgr.pipeline(s))[0] for s in specs.values())


def _locations(mgr: ResidencyManager) -> dict[str, str]:
    return {Path(b.model).name: b.location for b in mgr.memory_report().bases}


def test_budget_forces_lru_eviction_to_cpu(specs: dict[str, PipelineSpec], base_bytes: int) -> None:
    mgr = ResidencyManager("cpu", budget_bytes=int(base_bytes * 2.5), evict_to="cpu")  # room for two bases
    mgr.pipeline(specs["t2i"])
    mgr.pipeline(specs["ip2p"])
    assert _locations(mgr) == {"text-to-image": "device", "instruct-pix2pix": "device"}
    mgr.pipeline(specs["t2i"])  # t2i is now the most recently used
    mgr.pipeline(specs["inpaint"])  # evicts the least recently used: ip2p
    assert _locations(mgr) == {"text-to-image": "device", "instruct-pix2pix": "offloaded", "inpaint": "device"}
    report = mgr.memory_report()
    assert report.device_bytes <= report.budget_bytes
    assert report.counters["evictions"] == 1 and report.counters["loads"] == 3
    mgr.pipeline(specs["ip2p"])  # comes back from the CPU without reloading; t2i is LRU now
    assert mgr.counters["loads"] == 3
    assert _locations(mgr)["text-to-image"] == "offloaded"
    assert [Path(b.model).name for b in mgr.memory_report().bases][-1] == "instruct-pix2pix"


def test_budget_release_reloads_from_disk(specs: dict[str, PipelineSpec], base_bytes: int) -> None:
    mgr = ResidencyManager("cpu", budget_bytes=int(base_bytes * 1.5), evict_to="release")  # one base at a time
    first = mgr.pipeline(specs["t2i"])
    mgr.pipeline(specs["ip2p"])
    assert _locations(mgr) == {"instruct-pix2pix": "device"} and mgr.counters["releases"] == 1
    again = mgr.pipeline(specs["t2i"])
    assert again is not first and mgr.counters["loads"] == 3
    assert mgr.memory_report().device_bytes <= int(base_bytes * 1.5)


def test_tasks_of_one_model_share_weights_and_count_once(specs: dict[str, PipelineSpec], base_bytes: int) -> None:
    mgr = ResidencyManager("cpu", budget_bytes=int(base_bytes * 1.5))
    t2i = mgr.pipeline(specs["t2i"])
    i2i = mgr.pipeline(specs["i2i"])
    assert type(i2i).__name__ == "StableDiffusionImg2ImgPipeline"
    assert i2i.unet is t2i.unet and i2i.vae is t2i.vae
    # but not the scheduler: schedulers keep state between calls (add_noise moves alphas_cumprod to the device),
    # which changed the text-to-image outputs after an image-to-image call on a GPU
    assert i2i.scheduler is not t2i.scheduler and dict(i2i.scheduler.config) == dict(t2i.scheduler.config)
    report = mgr.memory_report()
    assert len(report.bases) == 1 and report.bases[0].tasks == ("text-to-image", "image-to-image")
    assert report.device_bytes == module_bytes(t2i)[0]  # not doubled: it fits the 1.5x budget
    assert report.counters == {**report.counters, "loads": 1, "derived": 1}
    assert list(report.per_pipeline().values()) == [report.device_bytes]


def test_base_larger_than_budget_is_refused(specs: dict[str, PipelineSpec], base_bytes: int) -> None:
    mgr = ResidencyManager("cpu", budget_bytes=base_bytes // 10)
    with pytest.raises(ExpertError, match=f"budget_bytes={base_bytes // 10}") as err:
        mgr.pipeline(specs["t2i"])
    assert "offload='model'" in str(err.value) and "quantization='bnb-nf4'" in str(err.value)


def test_bases_in_use_are_not_evicted(specs: dict[str, PipelineSpec], base_bytes: int) -> None:
    mgr = ResidencyManager("cpu", budget_bytes=int(base_bytes * 1.5))
    with mgr.use(specs["t2i"]) as pipe:
        assert pipe is not None
        with pytest.raises(ExpertError, match="held by pipelines in use"):
            mgr.pipeline(specs["ip2p"])
        assert mgr.evict(specs["t2i"]) is False
    mgr.pipeline(specs["ip2p"])  # released: now it can go
    assert _locations(mgr)["text-to-image"] == "offloaded"


def test_explicit_evict_and_evict_all(specs: dict[str, PipelineSpec]) -> None:
    mgr = ResidencyManager("cpu")
    for key in ("t2i", "ip2p", "inpaint"):
        mgr.pipeline(specs[key])
    assert mgr.evict(specs["t2i"]) is True and not mgr.on_device(specs["t2i"])
    assert mgr.evict_all(keep=specs["inpaint"]) == 1
    assert _locations(mgr) == {"text-to-image": "offloaded", "instruct-pix2pix": "offloaded", "inpaint": "device"}
    assert mgr.evict_all(release=True) == 3 and mgr.memory_report().bases == ()


def test_cpu_offload_flag_is_a_no_op_on_cpu(folders: dict[str, Path]) -> None:
    mgr = ResidencyManager("cpu")
    spec = PipelineSpec(str(folders["text-to-image"]), cpu_offload=True, local_files_only=True)
    mgr.pipeline(spec)
    assert mgr.memory_report().bases[0].location == "device"
    assert mgr.memory_report().cuda is None


def test_custom_loader_receives_spec_and_device() -> None:
    seen: list[Any] = []

    class Tiny:
        components: ClassVar[dict[str, Any]] = {}

        def to(self, device: str) -> Any:
            return self

    def loader(spec: PipelineSpec, device: str) -> Any:
        seen.append((spec.model, device))
        return Tiny()

    mgr = ResidencyManager("cpu", loader=loader)
    mgr.pipeline(PipelineSpec("org/model"))
    mgr.pipeline(PipelineSpec("org/model"))
    assert seen == [("org/model", "cpu")]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget_bytes": 0}, "budget_bytes=0"),
        ({"budget_bytes": 1.5}, "budget_bytes=1.5"),
        ({"evict_to": "disk"}, "evict_to='disk'"),
        ({"device": "gpu0"}, "device='gpu0'"),
        ({"offload_device": "ram"}, "offload_device='ram'"),
    ],
)
def test_bad_manager_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResidencyManager(**kwargs)


def test_spec_and_helpers_validate() -> None:
    with pytest.raises(ValueError, match="task='paint'"):
        PipelineSpec("org/m", "paint")
    assert PipelineSpec("org/m", dtype="fp16").dtype == "float16"
    assert PipelineSpec("org/m", "text-to-image").base_key == PipelineSpec("org/m", "inpaint").base_key
    assert check_dtype("BF16") == "bfloat16" and check_device("cuda:1") == "cuda:1"
    import torch

    assert is_oom(torch.OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA out of memory."))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_pickled_manager_keeps_config_and_reloads(specs: dict[str, PipelineSpec]) -> None:
    import pickle

    mgr = ResidencyManager("cpu", budget_bytes=10**9, evict_to="release")
    mgr.pipeline(specs["t2i"])
    copy = pickle.loads(pickle.dumps(mgr))
    assert (copy.device, copy.budget_bytes, copy.evict_to) == ("cpu", 10**9, "release")
    assert copy.memory_report().bases == () and len(mgr.memory_report().bases) == 1
    assert copy.pipeline(specs["t2i"]) is not mgr.pipeline(specs["t2i"])
