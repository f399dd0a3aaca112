"""Diffusers experts: text-to-image, image-to-image, instruction editing and inpainting pipelines.

One class, :class:`DiffusersExpert`, covers the four tasks of :data:`experts.diffusers.residency.TASKS`:

============================ ================================================ ====================== ==========
task                         pipeline (default)                                prompt                 kind
============================ ================================================ ====================== ==========
``"text-to-image"``          ``AutoPipelineForText2Image``                     the instruction        T2I
``"image-to-image"``         ``AutoPipelineForImage2Image`` (``strength``)     the instruction        I2I
``"instruct-pix2pix"``       ``StableDiffusionInstructPix2PixPipeline``        the instruction        I2I
``"inpaint"``                ``AutoPipelineForInpainting`` + a mask from the   the instruction (for   I2I
                             critic's detections of the command's target       ``remove``: see below)
============================ ================================================ ====================== ==========

The command ``"<op>: <instruction>"`` loses its op prefix: ``"recolor: make the second clock blue"`` ->
prompt ``"make the second clock blue"`` (formatted through ``prompt_template``). Seeds go through one
``torch.Generator`` per image, so a batch gives the images the same seeds give one by one.

Construction is cheap (no torch import); weights load on first use through a
:class:`~experts.diffusers.residency.ResidencyManager` shared by the experts of one
:func:`load_diffusers_experts` call. Outputs are HxWx3 uint8 of the requested size.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from experts.diffusers.cache import OutputCache, cache_key
from experts.diffusers.residency import (
    TASKS,
    EvictTo,
    MemoryReport,
    PipelineSpec,
    ResidencyManager,
)
from poser_env.core.commands import OPS, split_op
from poser_env.core.device import check_device, check_dtype, default_dtype, is_oom, retry_on_oom
from poser_env.core.expert import Expert, ExpertError, ExpertKind, ExpertOutput, validate_call
from poser_env.core.grammar import parse_command
from poser_env.core.registry import Registry, import_target
from poser_env.core.text import plural, singular

if TYPE_CHECKING:
    from poser_env.core.feedback import Detection

__all__ = [
    "CALL_PARAMS",
    "DEFAULT_OPS",
    "DEFAULT_REGISTRY",
    "DiffusersExpert",
    "ExpertRequest",
    "diffusers_registry",
    "load_diffusers_experts",
    "shared_manager",
    "target_mask",
]

#: The registry file shipped with the package.
DEFAULT_REGISTRY: Path = Path(__file__).with_name("registry.toml")
#: Default operations per task (a registry entry may override them with ``ops = [...]``).
DEFAULT_OPS: dict[str, frozenset[str]] = {
    "text-to-image": frozenset({"generate"}),
    "image-to-image": frozenset({"refine", "restyle", "background"}),
    "instruct-pix2pix": frozenset({"recolor", "retexture", "restyle", "background", "add", "remove", "refine"}),
    "inpaint": frozenset({"add", "remove", "recolor", "retexture", "resize", "move"}),
    "instruct-edit": frozenset({"add", "remove", "recolor", "retexture", "resize", "move", "background", "restyle",
                                "refine"}),
    "gligen": frozenset({"add", "move"}),
}
#: Tasks whose calls edit a region (a mask or boxes): their outputs keep every pixel outside it.
REGION_TASKS: frozenset[str] = frozenset({"inpaint", "gligen"})
#: Box sizes (fraction of the shorter canvas side) of a new object by its size word.
PLACEMENT_SIZE: dict[str | None, float] = {"small": 0.2, "medium": 0.3, None: 0.3, "large": 0.45}
#: Per-call parameters an expert accepts in ``**params``.
CALL_PARAMS: frozenset[str] = frozenset({
    "steps", "guidance_scale", "width", "height", "strength", "image_guidance_scale", "negative_prompt",
    "prompt", "mask", "boxes", "phrases",
})
_ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "sixth": 5, "seventh": 6,
             "eighth": 7, "ninth": 8, "tenth": 9, "last": -1}
_MANAGERS: dict[str, ResidencyManager] = {}


def shared_manager(device: str = "cpu") -> ResidencyManager:
    """The process-wide default :class:`ResidencyManager` of ``device`` (no budget; created on first use)."""
    device = check_device(device)
    if device not in _MANAGERS:
        _MANAGERS[device] = ResidencyManager(device)
    return _MANAGERS[device]


@dataclass(frozen=True)
class ExpertRequest:
    """One call of a batch: the arguments of ``expert(command, image, seed=..., detections=..., **params)``."""

    command: str
    image: np.ndarray | None = None
    seed: int = 0
    detections: Sequence[Detection] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


def target_mask(
    instruction: str,
    detections: Sequence[Detection],
    height: int,
    width: int,
    *,
    default: Literal["full", "center"] = "full",
    margin: int = 4,
) -> tuple[np.ndarray, str]:
    """Inpainting mask (HxW bool) of the command's target noun, and a note on where it came from.

    The target is the detection label (or its plural) mentioned first in ``instruction``. An ordinal just
    before it (``"the second clock"``) picks that detection in reading order (left to right, then top to
    bottom; ``"last"`` picks the last); otherwise every detection of the label is masked. Boxes grow by
    ``margin`` pixels on each side. When no detection label is mentioned the mask is ``default``: ``"full"``
    (the whole image) or ``"center"`` (the central half in each direction).

    Args:
        instruction: Command text without its op prefix.
        detections: The critic's detections on the image (boxes in pixels of that image).
        height, width: Mask size in pixels (>= 1).
        default: Mask when nothing matches.
        margin: Pixels added around each box (>= 0).
    """
    if default not in ("full", "center"):
        raise ValueError(f"default_mask={default!r} must be 'full' or 'center'.")
    if not isinstance(margin, int) or margin < 0:
        raise ValueError(f"mask_margin={margin!r} must be an int >= 0 (pixels).")
    boxes, source = target_boxes(instruction, detections)
    if not boxes:
        mask = np.zeros((height, width), dtype=bool)
        if default == "full":
            mask[:] = True
        else:
            mask[height // 4: height - height // 4, width // 4: width - width // 4] = True
        return mask, f"default:{default}"
    return boxes_mask(boxes, height, width, margin), source


Box = tuple[float, float, float, float]


def target_boxes(
    instruction: str, detections: Sequence[Detection], noun: str | None = None
) -> tuple[list[Box], str]:
    """Boxes (x1, y1, x2, y2 pixels) of the command's target noun among ``detections``, and where they came from.

    Same rule as :func:`target_mask`: the detection label mentioned first in ``instruction`` (an ordinal just
    before it picks one in reading order); with ``noun`` (the parsed target) only that label counts, so
    ``"move: put the cat left of the dog"`` never picks the dog. Empty with source ``"none"`` when nothing
    matches.
    """
    text = instruction.lower()
    best: tuple[int, str, int | None] | None = None  # (position, label, index)
    labels = {singular(d.label) for d in detections}
    if noun:
        labels &= {singular(noun)}
    for label in sorted(labels):
        for form in {label, plural(label)}:
            m = re.search(rf"(?:\b(\w+)\s+)?\b{re.escape(form)}\b", text)
            if m is None:
                continue
            pos = m.end(0) - len(form)
            idx = _ORDINALS.get(m.group(1) or "")
            if best is None or pos < best[0]:
                best = (pos, label, idx)
    if best is None:
        return [], "none"
    _, label, idx = best
    dets = sorted((d for d in detections if singular(d.label) == label), key=lambda d: (d.box[0], d.box[1]))
    chosen = dets if idx is None or not -len(dets) <= idx < len(dets) else [dets[idx]]
    which = "all" if len(chosen) == len(dets) else f"#{dets.index(chosen[0]) + 1}"
    return [_box(d.box) for d in chosen], f"detections:{label}:{which}({len(chosen)})"


def placement_boxes(
    command: str, detections: Sequence[Detection], height: int, width: int, *, size: tuple[float, float] | None = None,
    exclude: Sequence[Box] = (),
) -> list[Box]:
    """Where an ``add`` (or the second half of a ``move``) puts its object(s): boxes in pixels.

    The box is ``size`` (width, height pixels: the moved object's) or a square of :data:`PLACEMENT_SIZE` of the
    shorter side by the command's size word. With a relation to a detected reference (``"right of the clock"``)
    it sits on that side of the reference's box, centred on it across, one twentieth of the canvas away
    (``"next to"``: the side with more room); otherwise in the free spot (of a 3x3 grid of centres, the centre
    first) overlapping the other detections least. Several objects (``"add: two cups"``) go side by side.
    Boxes are clipped to the canvas. Deterministic.
    """
    parsed = parse_command(command)
    count = 1
    size_word: str | None = None
    if parsed.spec.entities:
        count = max(1, min(int(parsed.spec.entities[0].count or 1), 6))
        size_word = parsed.spec.entities[0].size
    side = PLACEMENT_SIZE.get(size_word, 0.3) * min(height, width)
    bw, bh = size if size is not None else (side, side)
    bw, bh = min(bw, width / count), min(bh, float(height))
    others: list[Box] = [b for b in (_box(d.box) for d in detections) if b not in exclude]
    gap = max(width, height) / 20.0
    ref = None
    if parsed.relation and parsed.reference:
        refs = sorted((d for d in detections if singular(d.label) == singular(parsed.reference)),
                      key=lambda d: -d.score)
        ref = refs[0].box if refs else None
    group_w = bw * count
    if ref is not None:
        rx1, ry1, rx2, ry2 = ref
        rcx, rcy = (rx1 + rx2) / 2, (ry1 + ry2) / 2
        rel = parsed.relation
        if rel == "next to":
            rel = "left of" if rx1 > width - rx2 else "right of"
        if rel == "left of":
            x, y = rx1 - gap - group_w, rcy - bh / 2
        elif rel == "right of":
            x, y = rx2 + gap, rcy - bh / 2
        elif rel == "above":
            x, y = rcx - group_w / 2, ry1 - gap - bh
        else:  # below
            x, y = rcx - group_w / 2, ry2 + gap
    else:
        best: tuple[float, float, float] | None = None
        for fy, fx in [(0.5, 0.5), *[(a, b) for a in (0.25, 0.5, 0.75) for b in (0.25, 0.5, 0.75) if (a, b) != (0.5, 0.5)]]:
            cx, cy = fx * width, fy * height
            cand = (cx - group_w / 2, cy - bh / 2, cx + group_w / 2, cy + bh / 2)
            overlap = sum(_overlap(cand, o) for o in others)
            if best is None or overlap < best[0] - 1e-9:
                best = (overlap, cand[0], cand[1])
        assert best is not None
        x, y = best[1], best[2]
    x = min(max(x, 0.0), max(0.0, width - group_w))
    y = min(max(y, 0.0), max(0.0, height - bh))
    return [(x + i * bw, y, x + (i + 1) * bw, y + bh) for i in range(count)]


def _box(box: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1, y1, x2, y2)


def _overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def boxes_mask(boxes: Sequence[Box], height: int, width: int, margin: int = 0) -> np.ndarray:
    """HxW bool mask of ``boxes`` (pixels, x1 y1 x2 y2) grown by ``margin`` pixels, clipped to the canvas."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        xa, ya = max(0, round(x1) - margin), max(0, round(y1) - margin)
        xb, yb = min(width, round(x2) + margin), min(height, round(y2) + margin)
        mask[ya:yb, xa:xb] = True
    return mask


@dataclass
class _Prepared:
    index: int
    seed: int
    prompt: str
    negative: str | None
    image: Any  # PIL.Image at generation size, or None
    mask: Any  # PIL.Image (L) at generation size, or None
    settings: tuple[Any, ...]
    out_size: tuple[int, int]  # (width, height)
    meta: dict[str, Any]
    key: str | None = None
    keep: np.ndarray | None = None  # HxW bool at output size: pixels to take from ``original``
    original: np.ndarray | None = None  # the input image at output size (for region tasks)
    gligen: tuple[tuple[str, ...], tuple[Box, ...]] | None = None  # phrases and normalised boxes


def _gathered(results: Sequence[ExpertOutput | ExpertError | None],
              return_exceptions: bool) -> list[ExpertOutput | ExpertError]:
    """Every slot's result in request order; the first error is raised unless ``return_exceptions``."""
    out: list[ExpertOutput | ExpertError] = []
    for r in results:
        assert r is not None  # every request got a result or an error
        if isinstance(r, ExpertError) and not return_exceptions:
            raise r
        out.append(r)
    return out


class DiffusersExpert(Expert):
    """A diffusers pipeline behind the shared :class:`~poser_env.core.expert.Expert` contract.

    Args:
        model: Hub id (``"stabilityai/sd-turbo"``) or local folder of a saved pipeline.
        task: ``"text-to-image"``, ``"image-to-image"``, ``"instruct-pix2pix"``, ``"instruct-edit"`` (FLUX.1
            Kontext, Qwen-Image-Edit: image + instruction), ``"inpaint"`` (mask: SD/SDXL inpainting, FLUX.1
            Fill) or ``"gligen"`` (box-conditioned insertion).
        name: Registry name (set by :func:`load_diffusers_experts` to the entry name).
        pipeline_class: diffusers class to load with instead of the task's default, e.g. ``"FluxPipeline"``.
        device: Torch device to run on (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``; None (default): float32 on CPU, float16 on an
            accelerator (registry entries pass their card's dtype).
        variant, revision: Passed to ``from_pretrained``.
        local_files_only: Never use the network (``HF_HUB_OFFLINE=1`` implies it).
        cpu_offload: Run with ``enable_model_cpu_offload`` on CUDA (slower, needs far less VRAM); same as
            ``offload="model"``.
        offload: ``"none"``, ``"model"`` (one component on the GPU at a time) or ``"sequential"`` (one layer at a
            time: the least VRAM, 5-20x slower); accelerators only.
        quantization: ``"bnb-nf4"``, ``"bnb-int8"`` (bitsandbytes) or ``"torchao-int8wo"`` quantizes the
            transformer/UNet on load (``pip install "image-poser[quant]"``; the 24 GB profile of FLUX/Qwen-Image),
            or None.
        steps: Denoising steps per call (>= 1).
        guidance_scale: Classifier-free guidance (>= 0; <= 1 disables it, as for SD-Turbo/FLUX-schnell).
        width, height: Default output size in pixels (8..4096) for text-to-image. Image-to-image tasks default
            to the input image's size. The pipeline runs at the size rounded up to ``size_multiple``; the
            output is resized to the exact size asked.
        strength: How much of the input to re-noise for ``image-to-image``/``inpaint``, in (0, 1].
        image_guidance_scale: InstructPix2Pix image guidance (>= 1 keeps closer to the input).
        negative_prompt: Default negative prompt, or None.
        prompt_template: ``str.format`` template with ``{instruction}`` and ``{op}``.
        remove_prompt: Inpainting prompt for ``remove`` commands (the removed noun goes to the negative prompt).
        default_mask: What a region edit (inpaint, GLIGEN) does when no detection matches its target:
            ``"error"`` (default: an :class:`ExpertError` asking for a detector, never a repainted canvas),
            ``"full"`` (the whole image) or ``"center"`` (the central half). Whole-scene ops (background,
            restyle, refine) use the whole image.
        composite: Region edits keep every pixel outside their mask from the input (the VAE round trip
            otherwise shifts them); True by default.
        mask_margin: Pixels added around each detection box of the mask (>= 0).
        ops: Operations served (default :data:`DEFAULT_OPS` of the task).
        kind: Expert kind; default ``"text-to-image"`` for that task, else ``"image-to-image"``.
        cost: Estimated GPU seconds of one call on an H100-class GPU (>= 0).
        max_batch: Most images per pipeline call in :meth:`generate_many` (>= 1).
        size_multiple: Generation sizes are rounded up to a multiple of this (8 for SD/SDXL, 16 for SD3/FLUX).
        generator_device: Device of the per-image ``torch.Generator`` (default: ``device``; ``"cpu"`` makes the
            initial noise identical on every machine).
        blank_threshold: An output whose pixel standard deviation (0..255 units) is below this is rejected as
            blank (>= 0; 0 disables the check).
        call_kwargs: Extra keyword arguments for every pipeline call (e.g. ``max_sequence_length`` for FLUX);
            arguments the pipeline does not take are dropped and listed in the output metadata.
        load_kwargs: Extra ``from_pretrained`` keyword arguments.
        cache: An :class:`~experts.diffusers.cache.OutputCache` or a folder for one; None disables caching.
        manager: The residency manager (default: :func:`shared_manager` of ``device``).
        card: Model-card facts (VRAM, license...) kept for humans, not used.
    """

    def __init__(
        self,
        model: str,
        task: str = "text-to-image",
        *,
        name: str | None = None,
        pipeline_class: str | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        cpu_offload: bool = False,
        offload: str = "none",
        quantization: str | None = None,
        steps: int = 30,
        guidance_scale: float = 7.5,
        width: int = 512,
        height: int = 512,
        strength: float = 0.75,
        image_guidance_scale: float = 1.5,
        negative_prompt: str | None = None,
        prompt_template: str = "{instruction}",
        remove_prompt: str = "empty background, nothing there",
        default_mask: Literal["error", "full", "center"] = "error",
        composite: bool = True,
        mask_margin: int = 4,
        ops: Sequence[str] | None = None,
        kind: ExpertKind | None = None,
        cost: float = 1.0,
        max_batch: int = 8,
        size_multiple: int = 8,
        generator_device: str | None = None,
        blank_threshold: float = 1.0,
        call_kwargs: Mapping[str, Any] | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
        cache: OutputCache | str | os.PathLike[str] | None = None,
        manager: ResidencyManager | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task={task!r} must be one of {sorted(TASKS)}.")
        self.device = check_device(device)
        self.dtype = check_dtype(default_dtype(dtype, self.device, "float16"))
        self.spec = PipelineSpec(
            model=model, task=task, pipeline_class=pipeline_class, dtype=self.dtype, variant=variant,
            revision=revision, local_files_only=bool(local_files_only), cpu_offload=bool(cpu_offload),
            load_kwargs=tuple(sorted(dict(load_kwargs or {}).items())), offload=offload, quantization=quantization,
        )
        self.task = task
        self.name = name or f"diffusers/{task}:{model}"
        self.kind = kind or ("text-to-image" if task == "text-to-image" else "image-to-image")
        if self.kind not in ("text-to-image", "image-to-image"):
            raise ValueError(f"kind={kind!r} must be 'text-to-image' or 'image-to-image'.")
        op_set = frozenset(ops) if ops is not None else DEFAULT_OPS[task]
        bad = sorted(op_set - set(OPS))
        if bad:
            raise ValueError(f"ops={sorted(op_set)!r} has unknown ops {bad}; choose from {OPS}.")
        self.ops = op_set
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not cost >= 0:
            raise ValueError(f"cost={cost!r} must be a number >= 0 (estimated GPU seconds per call).")
        self.cost = float(cost)
        self.steps = _check_int("steps", steps, 1, 1000)
        self.guidance_scale = _check_float("guidance_scale", guidance_scale, 0.0, 100.0)
        self.width = _check_int("width", width, 8, 4096)
        self.height = _check_int("height", height, 8, 4096)
        self.strength = _check_float("strength", strength, 0.0, 1.0, low_open=True)
        _check_denoised_steps(task, self.steps, self.strength)
        self.image_guidance_scale = _check_float("image_guidance_scale", image_guidance_scale, 0.0, 100.0)
        self.negative_prompt = negative_prompt
        if "{instruction}" not in prompt_template:
            raise ValueError(f"prompt_template={prompt_template!r} must contain '{{instruction}}'.")
        self.prompt_template = prompt_template
        self.remove_prompt = remove_prompt
        if default_mask not in ("error", "full", "center"):
            raise ValueError(f"default_mask={default_mask!r} must be 'error', 'full' or 'center'.")
        self.default_mask: Literal["error", "full", "center"] = default_mask
        self.composite = bool(composite)
        self.mask_margin = _check_int("mask_margin", mask_margin, 0, 4096)
        self.max_batch = _check_int("max_batch", max_batch, 1, 4096)
        self.size_multiple = _check_int("size_multiple", size_multiple, 1, 256)
        self.generator_device = check_device(generator_device, "generator_device") if generator_device else None
        self.blank_threshold = _check_float("blank_threshold", blank_threshold, 0.0, 255.0)
        self.call_kwargs = dict(call_kwargs or {})
        self.cache = OutputCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
        if self.cache is not None and not isinstance(self.cache, OutputCache):
            raise ValueError(f"cache={cache!r} must be an OutputCache, a folder path or None.")
        if manager is not None and manager.device != self.device:
            raise ValueError(f"manager runs on {manager.device!r} but device={self.device!r}; use one device.")
        self._manager = manager
        self.card = dict(card or {})
        self.calls = 0  # pipeline calls made (a batch counts once)

    # ------------------------------------------------------------------ public
    @property
    def manager(self) -> ResidencyManager:
        """The residency manager holding this expert's pipeline."""
        if self._manager is None:
            self._manager = shared_manager(self.device)
        return self._manager

    @property
    def model(self) -> str:
        """Hub id or folder of the model."""
        return self.spec.model

    def load(self) -> Any:
        """Load (or bring back) the pipeline onto the device now and return it; ExpertError if it cannot."""
        return self.manager.pipeline(self.spec)

    def weights_identity(self) -> dict[str, Any]:
        """What identifies the weights this expert loads, for cache keys.

        A local folder: a manifest of every file under it (relative name, size in bytes, modification time in
        ns), hashed - replacing or re-saving the weights changes it; contents are not hashed (GBs per call).
        A hub id: the id, ``revision`` and the commit of the locally cached snapshot when there is one.
        Always with ``variant``, ``pipeline_class`` and ``load_kwargs``.
        """
        spec = self.spec
        ident: dict[str, Any] = {"model": spec.model, "variant": spec.variant, "revision": spec.revision,
                                 "class": spec.pipeline_class, "load_kwargs": dict(spec.load_kwargs)}
        folder = Path(spec.model).expanduser()
        if folder.is_dir():
            h = hashlib.sha256()
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                st = path.stat()
                h.update(f"{path.relative_to(folder).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            ident["manifest"] = h.hexdigest()
        else:
            ident["snapshot"] = _cached_snapshot(spec.model, spec.revision)
        return ident

    def fingerprint(self) -> dict[str, Any]:
        """Every setting that changes this expert's output (for cache keys): weights identity, dtype, device
        type, generator device, task, defaults (steps, guidance, size, strength...), prompt templates, mask
        rules, call kwargs and the card."""
        return {
            "weights": self.weights_identity(), "task": self.task, "dtype": self.dtype,
            "device": self.device.split(":")[0], "generator_device": self.generator_device,
            "defaults": [self.steps, self.guidance_scale, self.width, self.height, self.strength,
                         self.image_guidance_scale, self.size_multiple],
            "prompts": [self.negative_prompt, self.prompt_template, self.remove_prompt],
            "mask": [self.default_mask, self.mask_margin, self.composite], "call_kwargs": self.call_kwargs,
            "card": self.card,
        }

    def memory_report(self) -> MemoryReport:
        """Memory in use by this expert's manager."""
        return self.manager.memory_report()

    def close(self) -> None:
        """Drop this expert's pipeline from its residency manager (device and host memory; other experts of the
        same base lose it too and reload it on their next call). Idempotent; the expert still works afterwards
        (it reloads from disk). A pipeline in use by another thread is left alone."""
        if self._manager is not None:
            self._manager.evict(self.spec, release=True)

    def generate_many(
        self, requests: Sequence[ExpertRequest], *, return_exceptions: bool = False
    ) -> list[ExpertOutput | ExpertError]:
        """Run several requests, batched into as few pipeline calls as possible.

        Requests with the same settings (steps, guidance, size, strength...) share a pipeline call of up to
        ``max_batch`` images; each image has its own generator, so the output is the one an unbatched call with
        the same seed gives (up to float32 summation order inside batched matrix products: at most 1 level of
        a few pixels). Cached results are not recomputed.

        Args:
            requests: The calls, in order.
            return_exceptions: Put each request's :class:`ExpertError` in its slot instead of raising the first.

        Raises:
            ValueError: a bad argument in a request (always raised).
            ExpertError: a request failed and ``return_exceptions`` is False.
        """
        moves = {i for i, r in enumerate(requests)
                 if self.task in REGION_TASKS and split_op(r.command)[0] == "move" and "mask" not in r.params
                 and "boxes" not in r.params}
        if moves:
            return self._generate_moves(requests, moves, return_exceptions)
        fp = self.fingerprint() if self.cache is not None else None  # once per call: it lists the weight files
        prepared = [self._prepare(i, r, fp) for i, r in enumerate(requests)]
        results: list[ExpertOutput | ExpertError | None] = [None] * len(prepared)
        todo: list[_Prepared] = []
        for p in prepared:
            if self.cache is not None:
                t0 = time.perf_counter()
                hit = self.cache.get(p.key or "")
                if hit is not None:
                    meta = {**p.meta, "cache": "hit", "cache_key": p.key}
                    results[p.index] = ExpertOutput(hit.image, p.seed, time.perf_counter() - t0, meta)
                    continue
            todo.append(p)
        groups: dict[tuple[Any, ...], list[_Prepared]] = {}
        for p in todo:
            groups.setdefault(p.settings, []).append(p)
        for group in groups.values():
            for start in range(0, len(group), self.max_batch):
                chunk = group[start:start + self.max_batch]
                for p, res in zip(chunk, self._run_chunk(chunk)):
                    results[p.index] = res
        return _gathered(results, return_exceptions)

    def _generate_moves(
        self, requests: Sequence[ExpertRequest], moves: set[int], return_exceptions: bool
    ) -> list[ExpertOutput | ExpertError]:
        """``move`` on a region expert = remove the target at its box, then insert it at the placement box.

        Both halves run batched with the other requests of the same stage; the result's metadata holds
        ``move = {"from": box, "to": box}`` and both stages' metadata.
        """
        stage1: list[tuple[int, ExpertRequest]] = []
        plan: dict[int, tuple[Box, Box, str]] = {}
        results: list[ExpertOutput | ExpertError | None] = [None] * len(requests)
        for i, r in enumerate(requests):
            if i not in moves:
                stage1.append((i, r))
                continue
            validate_call(self, r.command, r.image, r.seed)
            assert r.image is not None
            h, w = r.image.shape[:2]
            _, instruction = split_op(r.command)
            parsed = parse_command(r.command)
            old, source = target_boxes(instruction, r.detections, parsed.noun)
            if len(old) != 1:
                err = ExpertError(
                    f"expert {self.name!r} cannot move the target of {r.command!r}: {len(old)} matching detections "
                    f"({source}); it needs exactly one box (name it with an ordinal, or run a detector beside the "
                    "critic: critic_kwargs={'detector': '<owlv2 folder or id>'}).")
                if not return_exceptions:
                    raise err
                results[i] = err
                continue
            ob = old[0]
            moved = [d for d in r.detections if tuple(float(v) for v in d.box) != ob]
            new = placement_boxes(r.command, moved, h, w, size=(ob[2] - ob[0], ob[3] - ob[1]), exclude=[ob])[0]
            noun = parsed.noun or instruction
            det = next((d for d in r.detections if tuple(float(v) for v in d.box) == ob), None)
            phrase = " ".join(x for x in ("a", det.color if det is not None else None, noun) if x)
            plan[i] = (ob, new, phrase)
            stage1.append((i, ExpertRequest(f"remove: the {noun}", r.image, r.seed, r.detections,
                                            {**dict(r.params), "boxes": [ob]})))
        first = dict(zip([i for i, _ in stage1], self.generate_many([q for _, q in stage1], return_exceptions=True)))
        stage2: list[tuple[int, ExpertRequest]] = []
        for i, r in enumerate(requests):
            if results[i] is not None:
                continue
            out = first[i]
            if i not in plan or isinstance(out, ExpertError):
                results[i] = out
                continue
            ob, new, phrase = plan[i]
            stage2.append((i, ExpertRequest(f"add: {phrase}", out.image, r.seed, (),
                                            {**dict(r.params), "boxes": [new], "prompt": phrase})))
        second = self.generate_many([q for _, q in stage2], return_exceptions=True) if stage2 else []
        for (i, _), out2 in zip(stage2, second):
            out1 = first[i]
            assert isinstance(out1, ExpertOutput)
            if isinstance(out2, ExpertError):
                results[i] = out2
                continue
            ob, new, phrase = plan[i]
            meta = {**dict(out2.metadata), "op": "move", "command": requests[i].command,
                    "move": {"from": [round(v, 2) for v in ob], "to": [round(v, 2) for v in new], "phrase": phrase},
                    "remove_stage": dict(out1.metadata)}
            results[i] = ExpertOutput(out2.image, out2.seed, out1.elapsed + out2.elapsed, meta)
        return _gathered(results, return_exceptions)

    def generate_batch(self, requests: Sequence[ExpertRequest]) -> list[ExpertOutput]:
        """:meth:`generate_many` raising the first failure; returns one output per request, in order."""
        return [r for r in self.generate_many(requests) if isinstance(r, ExpertOutput)]

    def _generate(
        self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
        detections: Sequence[Detection], **params: Any,
    ) -> ExpertOutput:
        return self.generate_batch([ExpertRequest(command, image, seed, tuple(detections), params)])[0]

    # ------------------------------------------------------------------ preparing
    def _prepare(self, index: int, req: ExpertRequest, fingerprint: dict[str, Any] | None = None) -> _Prepared:
        from PIL import Image

        validate_call(self, req.command, req.image, req.seed)
        params = dict(req.params)
        unknown = sorted(set(params) - CALL_PARAMS)
        if unknown:
            raise ValueError(f"params {unknown} are not accepted by {self.name!r}; accepted: {sorted(CALL_PARAMS)}.")
        op, instruction = split_op(req.command)
        steps = _check_int("steps", params.get("steps", self.steps), 1, 1000)
        guidance = _check_float("guidance_scale", params.get("guidance_scale", self.guidance_scale), 0.0, 100.0)
        strength = _check_float("strength", params.get("strength", self.strength), 0.0, 1.0, low_open=True)
        _check_denoised_steps(self.task, steps, strength)
        igs = _check_float("image_guidance_scale", params.get("image_guidance_scale", self.image_guidance_scale),
                           0.0, 100.0)
        image = req.image
        if self.task == "text-to-image" or image is None:
            dw, dh = self.width, self.height
        else:
            dh, dw = image.shape[:2]
        width = _check_int("width", params.get("width", dw), 8, 4096)
        height = _check_int("height", params.get("height", dh), 8, 4096)
        m = self.size_multiple
        gw, gh = -(-width // m) * m, -(-height // m) * m
        negative = params.get("negative_prompt", self.negative_prompt)
        prompt = params.get("prompt") or self.prompt_template.format(instruction=instruction, op=op)
        meta: dict[str, Any] = {
            "expert": self.name, "model": self.model, "task": self.task, "op": op, "device": self.device,
            "dtype": self.dtype, "steps": steps, "guidance_scale": guidance, "width": width, "height": height,
        }
        pil_image = pil_mask = None
        mask_digest = None
        if self.task != "text-to-image":
            if image is None:
                raise ValueError(f"expert {self.name!r} edits an image but image=None; run a text-to-image expert first.")
            pil_image = Image.fromarray(image).convert("RGB")
            if pil_image.size != (gw, gh):
                pil_image = pil_image.resize((gw, gh), Image.Resampling.LANCZOS)
            if self.task in ("image-to-image", "inpaint"):
                meta["strength"] = strength
            if self.task == "instruct-pix2pix":
                meta["image_guidance_scale"] = igs
        keep = original = None
        gligen = None
        if self.task in REGION_TASKS:
            assert image is not None
            h, w = image.shape[:2]
            mask, source, prompt, negative, boxes = self._region(op, instruction, req, params, prompt, negative)
            if self.task == "gligen":
                phrases = params.get("phrases") or [prompt] * len(boxes)
                if len(phrases) != len(boxes):
                    raise ValueError(f"phrases has {len(phrases)} items for {len(boxes)} boxes; give one per box.")
                gligen = (tuple(str(x) for x in phrases),
                          tuple((x1 / w, y1 / h, x2 / w, y2 / h) for x1, y1, x2, y2 in boxes))
            pil_mask = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
            if pil_mask.size != (gw, gh):
                pil_mask = pil_mask.resize((gw, gh), Image.Resampling.NEAREST)
            mask_digest = hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()
            meta["mask_source"] = source
            meta["mask_fraction"] = float(mask.mean())
            if boxes:
                meta["boxes"] = [tuple(round(v, 2) for v in b) for b in boxes]
            if self.composite:
                if (height, width) == (h, w):
                    keep, original = ~mask, image
                else:
                    keep = ~np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
                    original = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
        meta["prompt"] = prompt
        if negative:
            meta["negative_prompt"] = negative
        settings: tuple[Any, ...] = (steps, guidance, strength, igs, gw, gh, negative is None)
        if gligen is not None:  # GLIGEN takes one layout per call: never batch two requests
            settings = (*settings, index)
        key = None
        if self.cache is not None:
            key = cache_key(
                self.name, req.command, image, req.seed,
                {"prompt": prompt, "negative": negative, "settings": settings[:7], "out": (width, height),
                 "mask": mask_digest, "gligen": gligen, "expert": fingerprint or self.fingerprint()},
            )
        return _Prepared(index, int(req.seed), prompt, negative, pil_image, pil_mask, settings, (width, height),
                         meta, key, keep, original, gligen)

    def _region(
        self, op: str, instruction: str, req: ExpertRequest, params: Mapping[str, Any], prompt: str,
        negative: str | None,
    ) -> tuple[np.ndarray, str, str, str | None, list[Box]]:
        """Mask (HxW bool at input size), its source, prompt, negative prompt and boxes of a region edit."""
        assert req.image is not None
        h, w = req.image.shape[:2]
        boxes: list[Box] = []
        if "mask" in params:
            mask = np.asarray(params["mask"])
            if mask.shape != (h, w):
                raise ValueError(f"mask has shape {mask.shape}; it must be HxW = {(h, w)} like image.")
            return mask.astype(bool), "params:mask", prompt, negative, boxes
        if "boxes" in params:
            boxes = [_check_box(b, w, h) for b in params["boxes"]]
            if not boxes:
                raise ValueError("boxes=[] is empty; give at least one (x1, y1, x2, y2) box in pixels.")
            source = "params:boxes"
        elif op == "add":
            boxes = placement_boxes(req.command, req.detections, h, w)
            source = "placement"
            if not params.get("prompt"):
                parsed = parse_command(req.command)
                if parsed.spec.entities:
                    prompt = self.prompt_template.format(instruction=parsed.spec.entities[0].phrase(), op=op)
        else:
            boxes, source = target_boxes(instruction, req.detections, _target_noun(req.command))
            if not boxes:
                if self.default_mask == "error" and op not in ("background", "restyle", "refine"):
                    raise ExpertError(
                        f"expert {self.name!r} edits a region but no detection matches the target of {req.command!r} "
                        f"(detections: {sorted({d.label for d in req.detections}) or 'none'}); run a detector beside "
                        "the critic (critic_kwargs={'detector': '<owlv2 folder or id>'}) or set default_mask='full'.")
                mask, source = target_mask(instruction, (), h, w, default="center" if self.default_mask == "center"
                                           else "full", margin=self.mask_margin)
                return mask, source, prompt, negative, [(0.0, 0.0, float(w), float(h))]
        if op == "remove" and "prompt" not in params:
            noun = source.split(":")[1] if source.startswith("detections:") else instruction
            prompt = self.remove_prompt
            negative = ", ".join(x for x in (negative, noun) if x)
        return boxes_mask(boxes, h, w, self.mask_margin), source, prompt, negative, boxes

    # ------------------------------------------------------------------ running
    def _call_kwargs(self, pipe: Any, chunk: list[_Prepared]) -> tuple[dict[str, Any], list[str]]:
        import torch

        steps, guidance, strength, igs, gw, gh, no_negative = chunk[0].settings[:7]
        gen_device = self.generator_device or self.device
        kwargs: dict[str, Any] = {
            "prompt": [p.prompt for p in chunk],
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "generator": [torch.Generator(device=gen_device).manual_seed(p.seed) for p in chunk],
            "output_type": "np",
        }
        if not no_negative:
            kwargs["negative_prompt"] = [p.negative or "" for p in chunk]
        if self.task in ("text-to-image", "inpaint", "instruct-edit", "gligen"):
            kwargs["width"], kwargs["height"] = gw, gh
        if self.task == "instruct-edit":
            kwargs["max_area"] = gw * gh  # FLUX.1 Kontext: keep the canvas size (its default resizes to 1 MP)
        if self.task == "gligen":
            assert chunk[0].gligen is not None and len(chunk) == 1
            phrases, boxes = chunk[0].gligen
            kwargs.update(gligen_phrases=list(phrases), gligen_boxes=[list(b) for b in boxes],
                          gligen_inpaint_image=chunk[0].image, gligen_scheduled_sampling_beta=1.0)
        elif self.task != "text-to-image":
            kwargs["image"] = [p.image for p in chunk]
        if self.task in ("image-to-image", "inpaint"):
            kwargs["strength"] = strength
        if self.task == "instruct-pix2pix":
            kwargs["image_guidance_scale"] = igs
        if self.task == "inpaint":
            kwargs["mask_image"] = [p.mask for p in chunk]
        for k, v in self.call_kwargs.items():
            kwargs[k] = v
        accepted = set(inspect.signature(pipe.__call__).parameters)
        dropped = sorted(k for k in kwargs if k not in accepted)
        for k in dropped:
            del kwargs[k]
        return kwargs, dropped

    def _run_chunk(self, chunk: list[_Prepared]) -> list[ExpertOutput | ExpertError]:
        from PIL import Image

        t0 = time.perf_counter()
        dropped: list[str] = []

        def run() -> Any:
            nonlocal dropped
            with self.manager.use(self.spec) as pipe:
                kwargs, dropped = self._call_kwargs(pipe, chunk)  # fresh generators on a retry
                if self.task != "gligen":
                    return pipe(**kwargs)
                # GLIGEN's inpainting loop draws noise with torch.randn_like (the global RNG, not the generator):
                # seed it from the call's seed inside a forked RNG state, so the same seed gives the same image
                import torch

                with torch.random.fork_rng(devices=[self.device] if self.device.startswith("cuda") else []):
                    torch.manual_seed(chunk[0].seed)
                    return pipe(**kwargs)

        def count() -> None:
            self.manager.counters["oom_retries"] += 1

        try:
            result = retry_on_oom(run, lambda: self.manager.evict_all(keep=self.spec), count, passthrough=(ExpertError,))
        except ExpertError as exc:
            return [exc] * len(chunk)
        except Exception as exc:
            if is_oom(exc):
                err = ExpertError(
                    f"expert {self.name!r} ran out of memory on {self.device} with a batch of {len(chunk)} at "
                    f"{chunk[0].settings[4]}x{chunk[0].settings[5]} even after evicting every other pipeline "
                    f"({exc.__class__.__name__}); lower the batch or size, use dtype='float16', cpu_offload=True "
                    "or offload='sequential'."
                )
            else:
                err = ExpertError(f"expert {self.name!r} (model {self.model!r}) failed: "
                                  f"{exc.__class__.__name__}: {exc}")
            err.__cause__ = exc
            return [err] * len(chunk)
        self.calls += 1
        elapsed = time.perf_counter() - t0
        images = np.asarray(result.images if hasattr(result, "images") else result[0])
        if images.ndim == 3:
            images = images[None]
        outs: list[ExpertOutput | ExpertError] = []
        for p, img in zip(chunk, images):
            if img.dtype != np.uint8 and not np.isfinite(img).all():
                outs.append(ExpertError(
                    f"expert {self.name!r} produced NaN/inf pixels for seed {p.seed} (dtype {self.dtype}); fp16 VAEs "
                    "overflow: use dtype='bfloat16' or 'float32', or a fp16-fixed VAE."))
                continue
            arr = img if img.dtype == np.uint8 else (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)
            if arr.shape[:2] != (p.out_size[1], p.out_size[0]):
                arr = np.asarray(Image.fromarray(arr).resize(p.out_size, Image.Resampling.LANCZOS), dtype=np.uint8)
            if p.keep is not None and p.original is not None:  # region edit: pixels outside the mask stay
                arr = np.where(p.keep[..., None], p.original, arr).astype(np.uint8)
            std = float(arr.std())
            if self.blank_threshold > 0 and std < self.blank_threshold:
                outs.append(ExpertError(
                    f"expert {self.name!r} produced a blank image for seed {p.seed} (pixel std {std:.3f} < "
                    f"blank_threshold={self.blank_threshold}); a safety checker or a broken VAE blanks images: "
                    "check the prompt, use dtype='float32'/'bfloat16', or lower blank_threshold."))
                continue
            meta = {**p.meta, "batch_size": len(chunk), "batch_elapsed": elapsed, "cache": "off" if self.cache is None
                    else "miss"}
            if dropped:
                meta["dropped_kwargs"] = dropped
            if p.key is not None and self.cache is not None:
                if self.cache.try_put(p.key, arr, meta) is None:
                    meta["cache"] = "write-failed"
                meta["cache_key"] = p.key
            outs.append(ExpertOutput(np.ascontiguousarray(arr), p.seed, elapsed / len(chunk), meta))
        return outs


# ---------------------------------------------------------------------- helpers
def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ValueError(f"{name}={value!r} must be an int in [{lo}, {hi}].")
    return int(value)


def _check_float(name: str, value: Any, lo: float, hi: float, *, low_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))
    v = float(value) if ok else float("nan")
    if not ok or not (lo < v <= hi if low_open else lo <= v <= hi):
        interval = f"({lo}, {hi}]" if low_open else f"[{lo}, {hi}]"
        raise ValueError(f"{name}={value!r} must be a number in {interval}.")
    return v


def _target_noun(command: str) -> str | None:
    """The parsed target noun of an edit command, or None when the command does not parse."""
    try:
        return parse_command(command).noun
    except ValueError:
        return None


def _cached_snapshot(model: str, revision: str | None) -> str | None:
    """Commit hash of the locally cached hub snapshot of ``model`` (None when not cached or not resolvable)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, revision=revision, local_files_only=True)).name
    except Exception:  # not cached, no hub library, offline: the id and revision still identify it
        return None


def _check_box(box: Any, width: int, height: int) -> Box:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box {box!r} must be (x1, y1, x2, y2) in pixels.") from None
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(f"box {box!r} must satisfy 0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height} (pixels).")
    return (x1, y1, x2, y2)


def _check_denoised_steps(task: str, steps: int, strength: float) -> None:
    """Image-to-image and inpainting run ``int(steps * strength)`` denoising steps (diffusers' rule); zero
    crashes inside the pipeline with an unhelpful reshape error, so refuse it here."""
    if task in ("image-to-image", "inpaint") and int(steps * strength) < 1:
        raise ValueError(
            f"steps={steps} with strength={strength} gives int(steps * strength) = 0 denoising steps for task "
            f"{task!r}; use steps >= {int(np.ceil(1.0 / strength))} or a higher strength (steps * strength must be "
            ">= 1)."
        )


def diffusers_registry(path: str | os.PathLike[str] | None = None) -> Registry[DiffusersExpert]:
    """A :class:`~poser_env.core.registry.Registry` of diffusers experts read from ``path`` (default: the packaged
    ``registry.toml``)."""
    reg: Registry[DiffusersExpert] = Registry("diffusers expert", entry_point_group="image_poser.diffusers_experts",
                                             base=Expert)
    reg.load_toml(DEFAULT_REGISTRY if path is None else Path(path))
    return reg


def load_diffusers_experts(
    registry_path: str | os.PathLike[str] | None = None,
    names: Sequence[str] | None = None,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    local_files_only: bool = False,
    memory_budget_bytes: int | None = None,
    evict_to: EvictTo = "cpu",
    cpu_offload: bool | None = None,
    offload: str | None = None,
    quantization: str | None = None,
    models: Mapping[str, str | os.PathLike[str]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    manager: ResidencyManager | None = None,
    **overrides: Any,
) -> list[DiffusersExpert]:
    """Build diffusers experts from a registry file; nothing loads until the first call.

    Args:
        registry_path: Registry TOML (default: the packaged ``experts/diffusers/registry.toml``).
        names: Entry names to build, in order (default: all). An unknown name raises
            :class:`~poser_env.core.registry.RegistryError` with "did you mean".
        device: Torch device for all of them.
        dtype: dtype for all of them; None uses each entry's recommended dtype on accelerators and
            ``"float32"`` on CPU.
        local_files_only: Never touch the network (``HF_HUB_OFFLINE=1`` has the same effect).
        memory_budget_bytes: Budget of the shared :class:`ResidencyManager` (bytes of weights on ``device``);
            None = unlimited. Ignored when ``manager`` is given.
        evict_to: ``"cpu"`` or ``"release"`` (see :class:`ResidencyManager`). Ignored when ``manager`` is given.
        cpu_offload: Force ``enable_model_cpu_offload`` on (True) or off (False) for all; None keeps each entry's.
        offload: ``"none"``, ``"model"`` or ``"sequential"`` for all (None keeps each entry's; the 24 GB profile
            of the registry cards says which entries need it).
        quantization: ``"bnb-nf4"``, ``"bnb-int8"`` or ``"torchao-int8wo"`` for all (None keeps each entry's).
        models: Entry name -> local folder (or other hub id) replacing the entry's ``model`` - local weights
            without editing the registry TOML. An unknown entry name raises RegistryError.
        cache_dir: Folder of an :class:`OutputCache` shared by all of them; None disables caching.
        manager: An existing manager to share (its device must be ``device``).
        **overrides: Keyword arguments passed to every expert (e.g. ``steps=2``).

    Returns:
        The experts, sharing one residency manager (pipelines of one model share weights).
    """
    device = check_device(device)
    reg = diffusers_registry(registry_path)
    chosen = list(names) if names is not None else reg.names()
    local = {str(k): os.fspath(v) for k, v in dict(models or {}).items()}
    for name in local:
        reg.entry(name)  # RegistryError with "did you mean" for a typo
    if manager is None:
        manager = ResidencyManager(device, budget_bytes=memory_budget_bytes, evict_to=evict_to)
    cache = OutputCache(cache_dir) if cache_dir is not None else None
    experts: list[DiffusersExpert] = []
    for name in chosen:
        entry = reg.entry(name)
        kw: dict[str, Any] = dict(entry.kwargs)
        kw.update(name=name, device=device, manager=manager, local_files_only=local_files_only or
                  bool(kw.get("local_files_only", False)), card=dict(entry.card))
        # the user's dtype, else float32 on CPU and the entry's (the model card's) dtype on accelerators
        kw["dtype"] = default_dtype(dtype, device, kw.get("dtype", "float16"))
        if cpu_offload is not None:
            kw["cpu_offload"] = cpu_offload
            kw.setdefault("offload", "model" if cpu_offload else "none")
            if not cpu_offload:
                kw["offload"] = "none"
        if offload is not None:
            kw["offload"] = offload
        if quantization is not None:
            kw["quantization"] = quantization
        if name in local:
            kw["model"] = local[name]
        if cache is not None:
            kw["cache"] = cache
        kw.update(overrides)
        expert = import_target(entry.target)(**kw)  # not reg.build: its own `name` argument would clash
        if not isinstance(expert, DiffusersExpert):
            raise ValueError(f"registry entry {name!r} built {type(expert).__name__}, not a DiffusersExpert.")
        experts.append(expert)
    return experts
