"""Precision, memory and local weights of every model kind, checked on a CUDA-less machine.

- one device/dtype rule (poser_env.core.device) behind experts and critics;
- the dtype each model kind loads in for device="cuda" is its card's, read from the kwargs passed to
  ``from_pretrained`` (patched: nothing loads on CUDA);
- the right dtype keyword for the installed library version (``dtype=`` vs ``torch_dtype=``);
- the memory budget counts the critic, the decomposer and the detector; offload and quantization options
  reach diffusers; local folders: variants, missing pieces, ``models=`` overrides; torchvision messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import diffusers
import torch
import transformers

from critic.clip import CLIPCritic
from critic.detector_judge import DetectorJudge
from critic.vlm import VLMCritic
from experts.diffusers import PipelineSpec, ResidencyManager, diffusers_registry, load_diffusers_experts, residency
from experts.testing import save_tiny_pipelines, torch_threads
from poser_env.core import device as devices
from poser_env.core import hf as _hf
from poser_env.core.expert import ExpertError
from poser_env.llm import LLMDecomposer


class _Stop(OSError):
    """Raised by the patched from_pretrained after recording its arguments."""


def _recorder(calls: list[dict[str, Any]]):
    def fake(cls, *args: Any, **kwargs: Any) -> Any:
        calls.append({"cls": cls.__name__, "args": args, **kwargs})
        raise _Stop("recorded")
    return classmethod(fake)


# ---------------------------------------------------------------------- one rule
@pytest.mark.parametrize("value, canon", [("fp16", "float16"), ("FP16", "float16"), ("half", "float16"),
                                          ("bf16", "bfloat16"), ("float32", "float32"), (torch.bfloat16, "bfloat16")])
def test_one_dtype_rule_for_experts_and_critics(value: Any, canon: str) -> None:
    assert devices.check_dtype(value) == canon
    assert residency.check_dtype(value) == canon  # experts
    assert _hf.check_dtype(value) == canon  # critics and decomposer
    assert PipelineSpec("org/m", dtype=value).dtype == canon


@pytest.mark.parametrize("bad", ["float64", "int8", "", None, torch.float64])
def test_bad_dtype_named_everywhere(bad: Any) -> None:
    for check in (devices.check_dtype, residency.check_dtype, _hf.check_dtype):
        with pytest.raises(ValueError, match=r"dtype=.* is not supported"):
            check(bad)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "cpu", "xpu:0", "meta"])
def test_one_device_rule(device: str) -> None:
    assert residency.check_device(device) == _hf.check_device(device) == device


def test_default_dtype_follows_device_and_card() -> None:
    assert devices.default_dtype(None, "cpu", "bfloat16") == "float32"
    assert devices.default_dtype(None, "cuda:0", "bfloat16") == "bfloat16"
    assert devices.default_dtype("fp16", "cuda", "bfloat16") == "float16"


def test_dtype_keyword_follows_the_installed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.dtype_kwargs("diffusers", "bf16") == {"dtype": torch.bfloat16}  # diffusers 0.42 reads dtype=
    from diffusers.pipelines import pipeline_utils

    monkeypatch.delattr(pipeline_utils, "_resolve_dtype")  # an older diffusers silently ignores dtype=
    assert devices.dtype_kwargs("diffusers", "bf16") == {"torch_dtype": torch.bfloat16}
    assert devices.dtype_kwargs("transformers", "fp16") == {"dtype": torch.float16}  # transformers 5 reads dtype=
    monkeypatch.setattr(devices, "_transformers_version", lambda: (4, 55))
    assert devices.dtype_kwargs("transformers", "fp16") == {"torch_dtype": torch.float16}


# ---------------------------------------------------------------------- card dtype on CUDA, per model kind
@pytest.mark.parametrize("name", diffusers_registry().names())
def test_every_registry_entry_loads_in_its_card_dtype_on_cuda(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (ex,) = load_diffusers_experts(None, [name], device="cuda")
    card_dtype = diffusers_registry().entry(name).kwargs["dtype"]
    assert ex.dtype == card_dtype in ("float16", "bfloat16")
    cls = getattr(diffusers, ex.spec.pipeline_class)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cls, "from_pretrained", _recorder(calls))
    with pytest.raises(ExpertError):
        residency._default_loader(ex.spec, "cuda")
    assert calls[0]["dtype"] == getattr(torch, card_dtype) and "torch_dtype" not in calls[0]
    cpu = load_diffusers_experts(None, [name], device="cpu")[0]
    assert cpu.dtype == "float32"


@pytest.mark.parametrize("kind, cls, card", [
    ("vlm critic", VLMCritic, "bfloat16"), ("clip critic", CLIPCritic, "float16"),
    ("llm decomposer", LLMDecomposer, "bfloat16"), ("detector", DetectorJudge, "float16"),
])
def test_every_transformers_model_kind_loads_in_its_card_dtype_on_cuda(
    kind: str, cls: Any, card: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    for auto in ("AutoModelForImageTextToText", "AutoModel", "AutoModelForCausalLM", "AutoModelForZeroShotObjectDetection",
                 "CLIPModel"):
        monkeypatch.setattr(getattr(transformers, auto), "from_pretrained", _recorder(calls))
    for proc in ("AutoProcessor", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, proc), "from_pretrained", classmethod(lambda c, *a, **k: object()))
    model = cls("/models/x", device="cuda")
    assert model.dtype == card and cls("/models/x").dtype == "float32"
    with pytest.raises(Exception):
        model.load()
    assert calls and calls[-1]["dtype"] == getattr(torch, card), kind


# ---------------------------------------------------------------------- memory budget covers every model
class _Model:
    def __init__(self, n: int) -> None:
        self.n = n

    def device_bytes(self) -> int:
        return self.n


def test_budget_counts_reserved_models() -> None:
    mgr = ResidencyManager("cpu", budget_bytes=1000)
    critic, llm = _Model(300), _Model(0)
    mgr.reserve("critic", critic)
    mgr.reserve("decomposer", llm)
    llm.n = 500  # loads later: counted from then on
    report = mgr.memory_report()
    assert report.reserved == {"critic": 300, "decomposer": 500} and report.device_bytes == 800
    with pytest.raises(ValueError, match="device_bytes"):
        mgr.reserve("judge", "big")


def test_pipeline_that_does_not_fit_beside_the_critic_is_refused(tmp_path: Path) -> None:
    with torch_threads(1):
        folder = save_tiny_pipelines(tmp_path, kinds=("text-to-image",))["text-to-image"]
        probe = ResidencyManager("cpu")
        spec = PipelineSpec(str(folder), local_files_only=True)
        probe.pipeline(spec)
        need = probe.memory_report().device_bytes
        mgr = ResidencyManager("cpu", budget_bytes=need + 100)
        mgr.reserve("critic", _Model(200))
        with pytest.raises(ExpertError, match=r"plus 200 bytes of \['critic'\]"):
            mgr.pipeline(spec)
        mgr.reserve("critic", None)
        mgr.pipeline(spec)


def test_env_reserves_critic_and_decomposer(tmp_path: Path) -> None:
    import gymnasium as gym

    from critic.testing import save_tiny_clip, save_tiny_llama
    from experts.testing import write_tiny_registry

    with torch_threads(1):
        folders = save_tiny_pipelines(tmp_path / "p", kinds=("text-to-image",))
        reg = write_tiny_registry(tmp_path / "r.toml", folders)
        env = gym.make("poser_env/ImagePoserDiffusers-v0", registry=str(reg), critic=f"clip:{save_tiny_clip(tmp_path / 'c')}",
                       decomposer=f"llm:{save_tiny_llama(tmp_path / 'l')}", local_files_only=True,
                       text_encoder="hashing", expert_kwargs={"memory_budget_bytes": 10**9},
                       prompt_source=["a red cup"])
        env.reset(seed=0)
        u = env.unwrapped
        assert u.decomposer.device == "cpu" and u.decomposer.dtype == "float32"  # follows the env
        report = u.experts[0].manager.memory_report()
        assert set(report.reserved) == {"critic", "decomposer"} and report.reserved["critic"] > 0
        assert report.device_bytes >= sum(report.reserved.values())


# ---------------------------------------------------------------------- offload and quantization plumbing
class _FakePipe:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.components: dict[str, Any] = {"unet": torch.nn.Linear(4, 4)}

    def to(self, device: str) -> _FakePipe:
        self.calls.append(f"to:{device}")
        return self

    def enable_model_cpu_offload(self, device: str) -> None:
        self.calls.append(f"model:{device}")

    def enable_sequential_cpu_offload(self, device: str) -> None:
        self.calls.append(f"sequential:{device}")


@pytest.mark.parametrize("offload, expected, location", [("model", "model:cuda", "cpu-offload"),
                                                          ("sequential", "sequential:cuda", "sequential-offload"),
                                                          ("none", "to:cuda", "device")])
def test_offload_modes_reach_the_pipeline(offload: str, expected: str, location: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    pipe = _FakePipe()
    mgr = ResidencyManager("cuda", loader=lambda spec, dev: pipe, budget_bytes=10**6)
    monkeypatch.setattr(mgr, "_cuda_stats", lambda: None)  # no CUDA allocator here
    mgr.pipeline(PipelineSpec("org/m", offload=offload))
    assert pipe.calls[-1] == expected
    (base,) = mgr.memory_report().bases
    assert base.location == location
    assert mgr.memory_report().device_bytes == {"device": 80, "cpu-offload": 80, "sequential-offload": 0}[location]


def test_cpu_offload_flag_is_model_offload() -> None:
    assert PipelineSpec("org/m", cpu_offload=True).offload == "model"
    with pytest.raises(ValueError, match="offload='disk'"):
        PipelineSpec("org/m", offload="disk")
    with pytest.raises(ValueError, match="quantization='int3'"):
        PipelineSpec("org/m", quantization="int3")
    (ex,) = load_diffusers_experts(None, ["flux-dev"], device="cuda", offload="sequential", quantization="bnb-nf4")
    assert ex.spec.offload == "sequential" and ex.spec.quantization == "bnb-nf4"


def test_quantization_without_its_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    spec = PipelineSpec("org/m", quantization="bnb-nf4", dtype="bf16")
    with pytest.raises(ExpertError, match=r"bitsandbytes.*image-poser\[quant\]"):
        residency.quantization_config(spec, diffusers.FluxPipeline)


def test_quantization_config_reaches_from_pretrained(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    made: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object())
    monkeypatch.setattr(diffusers, "BitsAndBytesConfig", lambda **kw: made.append(("bnb", kw)) or "BNB")
    monkeypatch.setattr(diffusers, "PipelineQuantizationConfig", lambda quant_mapping: ("PQC", quant_mapping))
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(diffusers.FluxPipeline, "from_pretrained", _recorder(calls))
    spec = PipelineSpec("org/flux", pipeline_class="FluxPipeline", dtype="bf16", quantization="bnb-nf4")
    with pytest.raises(ExpertError):
        residency._default_loader(spec, "cuda")
    assert calls[0]["quantization_config"] == ("PQC", {"transformer": "BNB"})
    assert made == [("bnb", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                             "bnb_4bit_compute_dtype": torch.bfloat16})]
    unet = residency.quantization_config(PipelineSpec("org/sd", quantization="bnb-int8"), diffusers.StableDiffusionPipeline)
    assert unet == ("PQC", {"unet": "BNB"})


# ---------------------------------------------------------------------- local weights
@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with torch_threads(1):
        return save_tiny_pipelines(tmp_path_factory.mktemp("local"), kinds=("text-to-image",))["text-to-image"]


def test_variant_on_a_plain_save_pretrained_folder_loads_with_a_warning(sd_folder: Path) -> None:
    with torch_threads(1), pytest.warns(UserWarning, match="variant='fp16': no weight file"):
        pipe = residency._default_loader(PipelineSpec(str(sd_folder), variant="fp16", local_files_only=True), "cpu")
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_missing_pieces_name_the_file_and_the_fix(sd_folder: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sd_folder, broken)
    for p in (broken / "unet").glob("*.safetensors"):
        p.unlink()
    with pytest.raises(ExpertError, match=r"unet.*no weights.*save_pretrained"):
        residency._default_loader(PipelineSpec(str(broken)), "cpu")
    shutil.rmtree(broken)
    shutil.copytree(sd_folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ExpertError, match=r"component 'vae'.*is missing.*null"):
        residency._default_loader(PipelineSpec(str(broken)), "cpu")
    (broken / "model_index.json").unlink()
    with pytest.raises(ExpertError, match=r"no model_index\.json"):
        residency._default_loader(PipelineSpec(str(broken)), "cpu")


def test_models_override_points_an_entry_at_a_local_folder(sd_folder: Path) -> None:
    (ex,) = load_diffusers_experts(None, ["sd15"], models={"sd15": sd_folder}, local_files_only=True)
    assert ex.model == str(sd_folder) and ex.steps == 30  # the entry's settings stay
    from poser_env.core.registry import RegistryError

    with pytest.raises(RegistryError, match="sd16"):
        load_diffusers_experts(None, ["sd15"], models={"sd16": sd_folder})


# ---------------------------------------------------------------------- torchvision
def test_torchvision_hint_matches_the_installed_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert devices.torchvision_hint() == ("pip install torchvision==0.28.0 --index-url "
                                          "https://download.pytorch.org/whl/cpu")
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    assert devices.torchvision_hint() == "pip install torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cu124"


def test_missing_torchvision_is_named_when_a_processor_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(cls, *a: Any, **k: Any) -> Any:
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library but it was not found")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", classmethod(fail))
    with pytest.raises(_hf.ModelLoadError, match=r"(?s)needs torchvision.*pip install torchvision==") as err:
        VLMCritic("/models/qwen2-vl").load()
    assert "hf download" not in str(err.value) and "huggingface-cli" not in str(err.value)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(diffusers.QwenImageEditPipeline, "from_pretrained", classmethod(
        lambda c, *a, **k: (_ for _ in ()).throw(AttributeError("type object 'VIDEO_PROCESSOR_MAPPING' has no "
                                                                "attribute '_extra_content'"))))
    with pytest.raises(ExpertError, match=r"needs torchvision.*pip install torchvision"):
        residency._default_loader(PipelineSpec("Qwen/Qwen-Image-Edit", pipeline_class="QwenImageEditPipeline"), "cpu")
    assert not calls
