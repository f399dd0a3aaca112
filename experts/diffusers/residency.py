"""Keep diffusers pipelines resident on an accelerator under a memory budget.

A :class:`ResidencyManager` owns every pipeline of a set of experts. Pipelines are grouped by *base*
(model id or folder, dtype, variant, revision): the first task asked of a base loads it from disk with the
task's pipeline class; every other task of the same base is derived with ``from_pipe``, so the weights
exist once (e.g. SD 1.5 text-to-image and image-to-image share one UNet, VAE and text encoder).

The unit of residency is the base. Before a base moves onto the device, least-recently-used bases are
evicted until the bytes on the device plus the newcomer fit ``budget_bytes``: evicted bases move to
``offload_device`` (``evict_to="cpu"``, fast to bring back) or are dropped and reloaded from disk later
(``evict_to="release"``). A base in use (inside :meth:`ResidencyManager.use`) is never evicted. With
``cpu_offload=True`` on CUDA, a base runs through ``enable_model_cpu_offload`` (one component on the GPU
at a time) and counts its largest component against the budget.

Memory is counted from parameter and buffer bytes of the pipeline's ``torch.nn.Module`` components
(shared modules counted once); on CUDA the report adds ``torch.cuda`` allocator statistics.

Everything torch/diffusers is imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import inspect
import json
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from poser_env.core.device import (
    DTYPES,
    check_device,
    check_dtype,
    dtype_kwargs,
    is_oom,
    needs_torchvision,
    retry_on_oom,
    torch_dtype,
    torchvision_hint,
)
from poser_env.core.expert import ExpertError

__all__ = [
    "DTYPES",
    "TASKS",
    "BaseInfo",
    "MemoryReport",
    "PipelineSpec",
    "ResidencyManager",
    "check_device",
    "check_dtype",
    "is_oom",
    "missing_model_message",
    "module_bytes",
    "torch_dtype",
]

#: Tasks a diffusers expert can run, and the diffusers class that loads each by default.
TASKS: dict[str, str] = {
    "text-to-image": "AutoPipelineForText2Image",
    "image-to-image": "AutoPipelineForImage2Image",
    "instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline",
    "inpaint": "AutoPipelineForInpainting",
    "instruct-edit": "FluxKontextPipeline",
    "gligen": "StableDiffusionGLIGENPipeline",
}
#: Offload modes: ``"none"`` (resident), ``"model"`` (``enable_model_cpu_offload``: one component on the
#: accelerator at a time) and ``"sequential"`` (``enable_sequential_cpu_offload``: one layer at a time).
OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "sequential")
#: Quantization backends of the denoiser (transformer/UNet), with the package each needs.
QUANTIZATION: dict[str, str] = {"bnb-nf4": "bitsandbytes", "bnb-int8": "bitsandbytes", "torchao-int8wo": "torchao"}
EvictTo = Literal["cpu", "release"]


def missing_model_message(model: str, exc: BaseException | None = None, *, local_files_only: bool = False) -> str:
    """Message for a model that could not be found: names the id and how to fetch it."""
    why = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})" if exc is not None and str(exc) else ""
    if _looks_like_path(model):
        return (f"model folder {model!r} does not exist or is not a diffusers pipeline folder (no model_index.json)"
                f"{why}. Point model= at a folder written by pipeline.save_pretrained(...) or by "
                f"`hf download <hub-id> --local-dir {model}`.")
    offline = " (offline: local_files_only=True or HF_HUB_OFFLINE=1)" if local_files_only else ""
    return (f"model {model!r} is not available{offline}{why}. Fetch it on a machine with network access with "
            f"`hf download {model}` (or `huggingface-cli download {model}`), then run again, or point model= at a "
            "local folder.")


def _looks_like_path(model: str) -> bool:
    """A local folder rather than a hub id (``"org/name"``): absolute/relative/home paths, or existing paths."""
    return (model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1
            or Path(model).expanduser().exists())


def offline_mode() -> bool:
    """Whether the Hugging Face hub is in offline mode (``HF_HUB_OFFLINE`` set to a true value)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class PipelineSpec:
    """What to load: a model (hub id or local folder) for one task, with dtype and loading options.

    Attributes:
        model: Hub id (``"stabilityai/sd-turbo"``) or local folder of a saved diffusers pipeline.
        task: One of :data:`TASKS`.
        pipeline_class: Name of a diffusers class to load with instead of the task's default (e.g.
            ``"StableDiffusionXLImg2ImgPipeline"``); None for the default of :data:`TASKS`.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        variant: Weights variant (``"fp16"``) or None.
        revision: Hub revision or None.
        local_files_only: Never touch the network (also implied by ``HF_HUB_OFFLINE=1``).
        cpu_offload: Use ``enable_model_cpu_offload`` (CUDA only; ignored on CPU); same as ``offload="model"``.
        offload: One of :data:`OFFLOAD_MODES` (accelerators only; ignored on CPU).
        quantization: One of :data:`QUANTIZATION` (quantize the transformer/UNet on load; needs that package:
            ``pip install "image-poser[quant]"``) or None.
        load_kwargs: Extra ``from_pretrained`` keyword arguments, as sorted ``(key, value)`` pairs.
    """

    model: str
    task: str = "text-to-image"
    pipeline_class: str | None = None
    dtype: str = "float32"
    variant: str | None = None
    revision: str | None = None
    local_files_only: bool = False
    cpu_offload: bool = False
    load_kwargs: tuple[tuple[str, Any], ...] = ()
    offload: str = "none"
    quantization: str | None = None

    def __post_init__(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(f"offload={self.offload!r} must be one of {list(OFFLOAD_MODES)}.")
        if self.cpu_offload and self.offload == "none":
            object.__setattr__(self, "offload", "model")
        object.__setattr__(self, "cpu_offload", self.offload != "none")
        if self.quantization is not None and self.quantization not in QUANTIZATION:
            raise ValueError(f"quantization={self.quantization!r} must be one of {sorted(QUANTIZATION)} or None.")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model={self.model!r} must be a hub id such as 'stabilityai/sd-turbo' or a folder path.")
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} must be one of {sorted(TASKS)}.")
        object.__setattr__(self, "dtype", check_dtype(self.dtype))

    @property
    def base_key(self) -> tuple[str, str, str | None, str | None, str | None]:
        """Pipelines with the same base key share weights: (model, dtype, variant, revision, quantization)."""
        return (self.model, self.dtype, self.variant, self.revision, self.quantization)


@dataclass(frozen=True)
class BaseInfo:
    """Residency facts of one base (a model loaded once, shared by its tasks).

    Attributes:
        model: Model id or folder.
        dtype: Dtype name.
        tasks: Tasks derived from it so far.
        bytes: Parameter + buffer bytes of its modules (shared modules counted once).
        location: ``"device"``, ``"offloaded"`` (on ``offload_device``) or ``"cpu-offload"`` (accelerate hooks).
        last_used: ``time.monotonic()`` of the last use, seconds.
        in_use: How many callers hold it right now.
    """

    model: str
    dtype: str
    tasks: tuple[str, ...]
    bytes: int
    location: str
    last_used: float
    in_use: int


@dataclass(frozen=True)
class MemoryReport:
    """Memory in use, from :meth:`ResidencyManager.memory_report`.

    Attributes:
        device: The manager's device.
        budget_bytes: Budget for bases on the device (None: unlimited).
        device_bytes: Bytes of bases on the device (counted from parameters; for ``cpu-offload`` bases, their
            largest component).
        offloaded_bytes: Bytes of bases parked on ``offload_device``.
        bases: One :class:`BaseInfo` per known base, least recently used first.
        cuda: ``torch.cuda`` allocator statistics in bytes when the device is CUDA (``allocated``,
            ``reserved``, ``max_allocated``, ``free``, ``total``), else None.
        counters: ``loads`` (from disk), ``derived`` (``from_pipe``), ``evictions``, ``releases``,
            ``oom_retries``.
        reserved: Bytes of the other models on the device (critic, decomposer, detector) counted against the
            budget, by name (see :meth:`ResidencyManager.reserve`); ``device_bytes`` includes them.
    """

    device: str
    budget_bytes: int | None
    device_bytes: int
    offloaded_bytes: int
    bases: tuple[BaseInfo, ...]
    cuda: dict[str, int] | None
    counters: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)

    def per_pipeline(self) -> dict[str, int]:
        """``"model [task, ...]" -> bytes`` for every base."""
        return {f"{b.model} [{', '.join(b.tasks)}]": b.bytes for b in self.bases}


def module_bytes(*pipelines: Any) -> tuple[int, int]:
    """(total, largest component) parameter + buffer bytes of the ``nn.Module`` components of ``pipelines``.

    A tensor reachable from several pipelines (shared through ``from_pipe``) is counted once.
    """
    import torch

    seen: set[int] = set()
    total = 0
    largest = 0
    for pipe in pipelines:
        for comp in getattr(pipe, "components", {}).values():
            if not isinstance(comp, torch.nn.Module):
                continue
            n = 0
            for t in list(comp.parameters()) + list(comp.buffers()):
                if id(t) in seen:
                    continue
                seen.add(id(t))
                n += t.numel() * t.element_size()
            total += n
            largest = max(largest, n)
    return total, largest


@dataclass
class _Base:
    spec: PipelineSpec
    pipes: dict[str, Any]
    bytes: int = 0
    largest: int = 0
    location: str = "offloaded"
    last_used: float = 0.0
    in_use: int = 0

    @property
    def footprint(self) -> int:
        """Bytes counted on the device: all of them resident, the largest component under model offload,
        none under sequential offload (one layer at a time, freed after use)."""
        return {"cpu-offload": self.largest, "sequential-offload": 0}.get(self.location, self.bytes)


def _default_loader(spec: PipelineSpec, device: str) -> Any:
    """Load ``spec`` from its hub id or folder with the task's pipeline class (onto the CPU)."""
    import diffusers

    cls_name = spec.pipeline_class or TASKS[spec.task]
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise ExpertError(f"pipeline_class={cls_name!r} is not a diffusers class (diffusers {diffusers.__version__}).")
    local_only = spec.local_files_only or offline_mode()
    model = spec.model
    variant = spec.variant
    if _looks_like_path(model):
        folder = Path(model).expanduser()
        variant = check_local_folder(folder, variant)
        model = str(folder)
    kwargs: dict[str, Any] = {**dtype_kwargs("diffusers", spec.dtype), "local_files_only": local_only,
                              **dict(spec.load_kwargs)}
    if variant is not None:
        kwargs["variant"] = variant
    if spec.revision is not None:
        kwargs["revision"] = spec.revision
    if spec.quantization is not None:
        kwargs["quantization_config"] = quantization_config(spec, cls)
    try:
        pipe = cls.from_pretrained(model, **kwargs)
    except Exception as exc:  # hub/cache misses are OSError subclasses; bad folders ValueError
        if needs_torchvision(exc):
            raise ExpertError(
                f"model {spec.model!r} ({cls_name}) needs torchvision, which is not installed "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); install it with "
                f"`{torchvision_hint()}`.") from exc
        if not isinstance(exc, (OSError, ValueError)):
            raise
        raise ExpertError(missing_model_message(spec.model, exc, local_files_only=local_only)) from exc
    return pipe


def quantization_config(spec: PipelineSpec, cls: Any) -> Any:
    """diffusers' ``PipelineQuantizationConfig`` quantizing the denoiser (``transformer`` or ``unet``) of ``cls``
    with ``spec.quantization``; ExpertError naming the package to install when its backend is missing."""

    import diffusers

    assert spec.quantization is not None
    package = QUANTIZATION[spec.quantization]
    if importlib.util.find_spec(package) is None:
        raise ExpertError(
            f"quantization={spec.quantization!r} needs the {package} package, which is not installed; "
            f"`pip install \"image-poser[quant]\"` (or `pip install {package}`), or set quantization=None.")

    params = set(inspect.signature(cls.__init__).parameters)
    denoiser = "transformer" if "transformer" in params else "unet"
    compute = torch_dtype(spec.dtype)
    qc: Any
    if spec.quantization == "bnb-nf4":
        qc = diffusers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    elif spec.quantization == "bnb-int8":
        qc = diffusers.BitsAndBytesConfig(load_in_8bit=True)
    else:
        qc = diffusers.TorchAoConfig("int8wo")
    return diffusers.PipelineQuantizationConfig(quant_mapping={denoiser: qc})


_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CONFIG_FILES = ("config.json", "scheduler_config.json", "preprocessor_config.json", "tokenizer_config.json",
                 "vocab.json", "tokenizer.json", "spiece.model", "processor_config.json", "special_tokens_map.json")


def check_local_folder(folder: Path, variant: str | None) -> str | None:
    """Check a local pipeline folder before ``from_pretrained``; returns the variant to load with.

    Raises :class:`ExpertError` naming the missing file (``model_index.json``, a component's folder, its
    config or weights) and the fix. A ``variant`` (``"fp16"``) that no weight file in the folder carries (a
    folder written by ``save_pretrained`` without ``variant=``) loads the plain files with a warning: the dtype
    still applies, only the file names differ.
    """

    fix = (f"re-save it with pipeline.save_pretrained({str(folder)!r}) or fetch it with "
           f"`hf download <hub-id> --local-dir {folder}`")
    index = folder / "model_index.json"
    if not folder.is_dir():
        raise ExpertError(f"model folder {str(folder)!r} does not exist; {fix}.")
    if not index.is_file():
        raise ExpertError(f"model folder {str(folder)!r} has no model_index.json, so it is not a diffusers pipeline "
                          f"folder; {fix}.")
    try:
        components = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExpertError(f"{str(index)!r} is not valid JSON ({exc}); {fix}.") from exc
    weights: list[Path] = []
    for name, value in components.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        sub = folder / name
        if not sub.is_dir():
            raise ExpertError(f"model folder {str(folder)!r} lists component {name!r} ({value[1]}) in model_index.json "
                              f"but {str(sub)!r} is missing; {fix}, or set \"{name}\": [null, null] in model_index.json "
                              "if the pipeline can run without it.")
        files = [p for p in sub.iterdir() if p.is_file()]
        if not any(p.name in _CONFIG_FILES for p in files):
            raise ExpertError(f"component folder {str(sub)!r} has no config file (config.json, scheduler_config.json "
                              f"or tokenizer files); {fix}.")
        if (sub / "config.json").is_file() and value[0] in ("diffusers", "transformers"):
            w = [p for p in files if p.name.endswith(_WEIGHT_SUFFIXES) or p.name.endswith(".index.json")]
            if not w:
                raise ExpertError(f"component folder {str(sub)!r} has a config.json but no weights "
                                  f"(*.safetensors or *.bin); {fix}.")
            weights += w
    if variant is not None and weights and not any(f".{variant}." in p.name for p in weights):
        warnings.warn(f"variant={variant!r}: no weight file in {str(folder)!r} carries it (files such as "
                      f"{weights[0].name!r}); loading the plain files (dtype still applies). Drop variant= for this "
                      "folder to silence this.", UserWarning, stacklevel=3)
        return None
    return variant


class ResidencyManager:
    """LRU residency of diffusers pipelines on one device, under a byte budget.

    Args:
        device: Torch device the pipelines run on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        budget_bytes: Most bytes of pipeline weights on ``device`` at once (>= 1), or None for no limit.
            A sensible value on an 80 GB GPU is ~60e9, leaving room for activations.
        evict_to: ``"cpu"`` moves evicted pipelines to ``offload_device`` (fast to bring back, uses host RAM);
            ``"release"`` drops them (reloaded from disk on next use).
        offload_device: Where evicted pipelines go when ``evict_to="cpu"``.
        loader: ``loader(spec, device) -> pipeline`` loading a base from disk (default: ``from_pretrained`` of
            the task's class); tests inject fakes here.

    Thread-safe: one lock guards the bookkeeping; pipelines run outside it (see :meth:`use`). A pickled copy
    (``copy.deepcopy``, env pickling) keeps the configuration and drops the loaded pipelines.
    """

    def __init__(
        self,
        device: str = "cpu",
        *,
        budget_bytes: int | None = None,
        evict_to: EvictTo = "cpu",
        offload_device: str = "cpu",
        loader: Callable[[PipelineSpec, str], Any] | None = None,
    ) -> None:
        self.device = check_device(device)
        if budget_bytes is not None and (isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int)
                                         or budget_bytes < 1):
            raise ValueError(f"budget_bytes={budget_bytes!r} must be a positive int (bytes) or None for no limit.")
        if evict_to not in ("cpu", "release"):
            raise ValueError(f"evict_to={evict_to!r} must be 'cpu' (park on offload_device) or 'release' (drop).")
        self.budget_bytes = budget_bytes
        self.evict_to: EvictTo = evict_to
        self.offload_device = check_device(offload_device, "offload_device")
        self._loader = loader or _default_loader
        self._bases: OrderedDict[tuple[Any, ...], _Base] = OrderedDict()  # LRU first
        self._lock = threading.RLock()
        self.counters: dict[str, int] = {"loads": 0, "derived": 0, "evictions": 0, "releases": 0, "oom_retries": 0}
        self._reserved: dict[str, Any] = {}

    def reserve(self, name: str, model: Any) -> None:
        """Count another model on the device against the budget: the VLM/CLIP critic, the LLM decomposer, the
        detector. ``model`` is an int (bytes) or an object with ``device_bytes() -> int`` (read at every budget
        check, so a model that loads later counts from then on). Pipelines are evicted to make room for them.
        ``model=None`` removes the reservation."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name={name!r} must be a non-empty string such as 'critic'.")
        if model is None:
            self._reserved.pop(name, None)
            return
        if not (isinstance(model, int) and not isinstance(model, bool) and model >= 0) and not callable(
                getattr(model, "device_bytes", None)):
            raise ValueError(f"model={model!r} must be bytes (int >= 0) or have a device_bytes() method.")
        self._reserved[name] = model

    def reserved_bytes(self) -> dict[str, int]:
        """Bytes of each reserved model now (see :meth:`reserve`)."""
        return {k: int(v if isinstance(v, int) else v.device_bytes()) for k, v in self._reserved.items()}

    # ------------------------------------------------------------------ public
    def pipeline(self, spec: PipelineSpec) -> Any:
        """The pipeline of ``spec`` on the device (loaded, derived or brought back as needed); marks it used."""
        with self._lock:
            base = self._ensure(spec)
            return base.pipes[spec.task]

    @contextlib.contextmanager
    def use(self, spec: PipelineSpec) -> Iterator[Any]:
        """Context manager yielding the pipeline of ``spec``; its base cannot be evicted while inside."""
        with self._lock:
            base = self._ensure(spec)
            base.in_use += 1
            pipe = base.pipes[spec.task]
        try:
            yield pipe
        finally:
            with self._lock:
                base.in_use -= 1
                base.last_used = time.monotonic()

    def evict(self, spec_or_key: PipelineSpec | tuple[Any, ...], *, release: bool | None = None) -> bool:
        """Move a base off the device (or drop it when ``release`` or ``evict_to="release"``); True if done."""
        key = spec_or_key.base_key if isinstance(spec_or_key, PipelineSpec) else spec_or_key
        with self._lock:
            base = self._bases.get(key)
            if base is None or base.in_use:
                return False
            self._evict(key, base, release=self.evict_to == "release" if release is None else release)
            return True

    def evict_all(self, *, keep: PipelineSpec | None = None, release: bool | None = None) -> int:
        """Evict every base not in use except ``keep``'s; returns how many were evicted."""
        keep_key = keep.base_key if keep is not None else None
        n = 0
        with self._lock:
            drop = self.evict_to == "release" if release is None else release
            for key, base in list(self._bases.items()):
                if key == keep_key or base.in_use or (base.location == "offloaded" and not drop):
                    continue
                self._evict(key, base, release=drop)
                n += 1
        self._empty_cache()
        return n

    def on_device(self, spec: PipelineSpec) -> bool:
        """Whether ``spec``'s base is on the device (or under CPU offload hooks)."""
        with self._lock:
            b = self._bases.get(spec.base_key)
            return b is not None and b.location != "offloaded"

    def memory_report(self) -> MemoryReport:
        """Bytes in use per base, totals, counters and (on CUDA) allocator statistics."""
        with self._lock:
            bases = tuple(
                BaseInfo(b.spec.model, b.spec.dtype, tuple(b.pipes), b.bytes, b.location, b.last_used, b.in_use)
                for b in self._bases.values()
            )
            dev = sum(b.footprint for b in self._bases.values() if b.location != "offloaded")
            off = sum(b.bytes for b in self._bases.values() if b.location == "offloaded")
            counters = dict(self.counters)
        reserved = self.reserved_bytes()
        return MemoryReport(self.device, self.budget_bytes, dev + sum(reserved.values()), off, bases,
                            self._cuda_stats(), counters, reserved)

    # ------------------------------------------------------------------ internals
    def _ensure(self, spec: PipelineSpec) -> _Base:
        key = spec.base_key
        base = self._bases.get(key)
        derived = False
        if base is None:
            pipe = self._load(spec)
            base = _Base(spec=spec, pipes={spec.task: pipe})
            base.bytes, base.largest = module_bytes(pipe)
            self._bases[key] = base
        elif spec.task not in base.pipes:
            base.pipes[spec.task] = self._derive(base, spec)
            base.bytes, base.largest = module_bytes(*base.pipes.values())
            derived = True
        if base.location == "offloaded":
            self._bring_on(key, base, spec)
        elif derived:
            self._place(base, spec)  # the derived pipeline shares modules already there; place any new ones
        self._bases.move_to_end(key)
        base.last_used = time.monotonic()
        return base

    def _load(self, spec: PipelineSpec) -> Any:
        self._check_device_available()
        pipe = self._loader(spec, self.device)
        self.counters["loads"] += 1
        with contextlib.suppress(Exception):
            pipe.set_progress_bar_config(disable=True)
        return pipe

    def _derive(self, base: _Base, spec: PipelineSpec) -> Any:
        import diffusers

        cls_name = spec.pipeline_class or TASKS[spec.task]
        cls = getattr(diffusers, cls_name, None)
        if cls is None:
            raise ExpertError(f"pipeline_class={cls_name!r} is not a diffusers class.")
        src = next(iter(base.pipes.values()))
        # A fresh scheduler of the same config, not the base's: schedulers carry state between calls (diffusers'
        # add_noise, run by image-to-image and inpaint, moves alphas_cumprod to the device for good), so a shared one
        # made the base's later outputs depend on what the derived pipeline had run (1 level in ~5% of the pixels
        # of a float16 text-to-image on an H200, examples/benchmarks/gpu_check.py). Weights stay shared.
        own: dict[str, Any] = {}
        if getattr(src, "scheduler", None) is not None:
            own["scheduler"] = type(src.scheduler).from_config(src.scheduler.config)
        try:
            pipe = cls.from_pipe(src, **dtype_kwargs("diffusers", spec.dtype), **own)
        except (ValueError, TypeError, KeyError) as exc:
            raise ExpertError(
                f"cannot derive a {spec.task!r} pipeline from {type(src).__name__} of model {spec.model!r} "
                f"with {cls_name}.from_pipe ({exc}); give this entry its own model or pipeline_class."
            ) from exc
        self.counters["derived"] += 1
        with contextlib.suppress(Exception):
            pipe.set_progress_bar_config(disable=True)
        return pipe

    def _bring_on(self, key: tuple[Any, ...], base: _Base, spec: PipelineSpec) -> None:
        mode = spec.offload if self.device != "cpu" else "none"
        need = {"none": base.bytes, "model": base.largest, "sequential": 0}[mode]
        if self.budget_bytes is not None:
            reserved = self.reserved_bytes()
            if need + sum(reserved.values()) > self.budget_bytes:
                others = f" plus {sum(reserved.values())} bytes of {sorted(reserved)}" if reserved else ""
                raise ExpertError(
                    f"model {spec.model!r} needs {need / 1e9:.3f} GB ({need} bytes) on {self.device}{others}, more "
                    f"than budget_bytes={self.budget_bytes}; raise the budget, use dtype='float16', offload='model' "
                    "or 'sequential', or quantization='bnb-nf4'."
                )
            for other_key, other in list(self._bases.items()):
                if self._device_bytes() + need <= self.budget_bytes:
                    break
                if other_key != key and other.location != "offloaded" and not other.in_use:
                    self._evict(other_key, other, release=self.evict_to == "release")
            if self._device_bytes() + need > self.budget_bytes:
                raise ExpertError(
                    f"cannot fit model {spec.model!r} ({need} bytes) in budget_bytes={self.budget_bytes}: "
                    f"{self._device_bytes()} bytes are held by pipelines in use and reserved models "
                    f"({sorted(self.reserved_bytes())}); wait or raise the budget."
                )
        self._check_device_available()

        def count() -> None:
            self.counters["oom_retries"] += 1

        try:
            retry_on_oom(lambda: self._place(base, spec), lambda: self.evict_all(keep=spec), count)
        except Exception as exc:
            if is_oom(exc):
                raise ExpertError(
                    f"out of memory moving model {spec.model!r} ({base.bytes} bytes) to {self.device} even after "
                    "evicting every other pipeline; use dtype='float16', cpu_offload=True or a smaller model."
                ) from exc
            raise

    def _place(self, base: _Base, spec: PipelineSpec) -> None:
        if spec.offload != "none" and self.device != "cpu":
            for pipe in base.pipes.values():
                if not getattr(pipe, "_poser_offload", False):
                    if spec.offload == "sequential":
                        pipe.enable_sequential_cpu_offload(device=self.device)
                    else:
                        pipe.enable_model_cpu_offload(device=self.device)
                    pipe._poser_offload = True
            base.location = "sequential-offload" if spec.offload == "sequential" else "cpu-offload"
        else:
            for pipe in base.pipes.values():
                pipe.to(self.device)
            base.location = "device"

    def _evict(self, key: tuple[Any, ...], base: _Base, *, release: bool) -> None:
        if release:
            del self._bases[key]
            base.pipes.clear()
            self.counters["releases"] += 1
            gc.collect()
        else:
            if base.location == "device":
                for pipe in base.pipes.values():
                    pipe.to(self.offload_device)
            base.location = "offloaded"
            self.counters["evictions"] += 1
        self._empty_cache()

    def _device_bytes(self) -> int:
        return (sum(b.footprint for b in self._bases.values() if b.location != "offloaded")
                + sum(self.reserved_bytes().values()))

    def _check_device_available(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ExpertError(
                    f"device={self.device!r} but torch.cuda.is_available() is False (torch {torch.__version__}); "
                    "pass device='cpu' or install a CUDA build of torch."
                )

    def _empty_cache(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _cuda_stats(self) -> dict[str, int] | None:
        if not self.device.startswith("cuda"):
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        dev = torch.device(self.device)
        free, total = torch.cuda.mem_get_info(dev)
        return {
            "allocated": int(torch.cuda.memory_allocated(dev)),
            "reserved": int(torch.cuda.memory_reserved(dev)),
            "max_allocated": int(torch.cuda.max_memory_allocated(dev)),
            "free": int(free),
            "total": int(total),
        }

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the configuration only: loaded pipelines are dropped and load again on first use."""
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_bases"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return (f"ResidencyManager(device={self.device!r}, budget_bytes={self.budget_bytes}, "
                f"evict_to={self.evict_to!r}, bases={len(self._bases)})")
