"""A real-image judge: GenEval-style rules over an open-vocabulary detector (OWLv2) from ``transformers``.

:class:`DetectorJudge` scores a generated image against a :class:`~poser_env.core.spec.Spec` the way GenEval
does, but with models that ``transformers`` can load:

1. **Detect.** The spec's nouns (:attr:`poser_env.core.spec.Spec.nouns`) are the text queries of an OWLv2
   (or OWL-ViT) open-vocabulary detector, each as ``query_template`` (default ``"a photo of a {noun}"``).
   The raw output goes through the processor's ``post_process_grounded_object_detection`` (boxes in
   pixels), keeping boxes scored above ``min_score`` (default 0.1). OWLv2 pads images to a square at the
   bottom/right before detecting; its post-processing scales boxes to that padded square, and they are
   then clipped to the image. Boxes narrower or shorter than 1 px after clipping are dropped. OWL detectors predict one box
   per image patch, so many boxes cover the same object: a greedy per-noun non-maximum suppression drops
   a box whose IoU with a better-scored box of the same noun is at least ``nms_threshold`` (default 0.5;
   1.0 turns it off, which is GenEval's own default for Mask2Former). At most 16 boxes per noun are kept.
2. **Colour.** Each box gets one of ``colors`` (default GenEval's ten, :data:`poser_env.core.spec.GENEVAL_COLORS`):

   * pixel method (default): the central ``center_fraction`` (default 0.5) of the box, in each axis, is
     converted from sRGB to CIELAB (D65); the per-channel median Lab colour is compared with the Lab value
     of each reference colour in :data:`REFERENCE_COLORS` (sRGB fills of SceneSim's palette) and the
     nearest by Euclidean distance (CIE76 delta E) wins (ties: the first in ``colors``). The centre is used
     because the box's corners are mostly background.
   * CLIP method (when ``clip_model`` is given): GenEval's zero-shot colour classifier - for each noun,
     the text embeddings of ``"a photo of a {color} {noun}"``, ``"a photo of a {color}-colored {noun}"``
     and ``"a photo of a {color} object"`` are L2-normalised, averaged per colour and normalised again;
     the box crop's image embedding picks the colour of highest cosine.
3. **Rules.** The detections go to :func:`poser_env.core.rules.evaluate` - the very rules the SceneSim judge uses -
   with GenEval's thresholds (score > 0.3; > 0.9 for the ``counting`` tag) unless ``threshold`` is set.

How it differs from the official GenEval judge (``djghosh13/geneval``), stated plainly:

* GenEval detects with **Mask2Former** (Swin-S, mmdetection) **instance segmentation trained on COCO's 80
  classes**, with its own calibrated confidence scores and per-object **masks**. This judge uses an
  **open-vocabulary box detector** (OWLv2): any noun can be asked for, there are no masks, and its
  sigmoid scores are calibrated differently (OWLv2 scores of correct boxes are often 0.2-0.6), so
  GenEval's 0.3 / 0.9 thresholds do not mean the same thing here; ``threshold`` lets you set your own.
* GenEval classifies colour with **CLIP ViT-L/14 on the masked object crop** (background greyed out by the
  mask). This judge classifies colour by the pixel method above, or by CLIP on the **unmasked box crop**
  when ``clip_model`` is given.
* We add per-noun NMS (OWL boxes overlap); GenEval's default NMS threshold is 1.0 (none).
* Background and style assertions (our extension) are not judged: their verdicts are ``"unknown"``.

**So scores from this judge are not comparable to published GenEval numbers.** Use it to compare methods
with each other under the same judge, and report it as "GenEval-style (OWLv2 judge)".

Nothing loads until the first call (or :meth:`DetectorJudge.load`). Weights come from a local folder or a
hub id; ``local_files_only`` defaults to True (no network), ``trust_remote_code`` to False. Grounding DINO
is not supported (its post-processing matches token spans, not one query per noun).

Example::

    judge = DetectorJudge("/models/owlv2-base-patch16-ensemble", device="cuda")
    fb = judge(image, spec)          # image: HxWx3 uint8
    fb.all_hold, [d.color for d in fb.detections]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar, Self

import numpy as np

from poser_env.core import device as devices
from poser_env.core.color import srgb_to_lab
from poser_env.core.feedback import Critic, CriticError, Detection, Feedback
from poser_env.core.hf import (
    ModelLoadError,
    check_device,
    check_model_id,
    fetch_hint,
    free_accelerator_memory,
    needs_torchvision,
    torchvision_hint,
)
from poser_env.core.optional import require
from poser_env.core.rules import MAX_PER_CLASS, evaluate
from poser_env.core.spec import COLOR_RGB, COLORS, GENEVAL_COLORS, Spec

__all__ = [
    "CLIP_COLOR_TEMPLATES",
    "REFERENCE_COLORS",
    "DetectorJudge",
    "GroundedCritic",
    "classify_color",
    "nms",
    "srgb_to_lab",
]

#: sRGB (0..255) reference of each colour name for the pixel method (SceneSim's fill palette).
REFERENCE_COLORS: dict[str, tuple[int, int, int]] = dict(COLOR_RGB)
#: GenEval's colour prompts (``{color}``, ``{noun}``), averaged per colour for the CLIP method.
CLIP_COLOR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {color} {noun}",
    "a photo of a {color}-colored {noun}",
    "a photo of a {color} object",
)
_OWL_TYPES = ("owlv2", "owlvit")


def _check_colors(colors: Sequence[str]) -> tuple[str, ...]:
    out = tuple(colors)
    bad = [c for c in out if c not in COLORS]
    if not out or bad:
        raise ValueError(f"colors={list(out)!r} must be a non-empty subset of {list(COLORS)}; e.g. GENEVAL_COLORS.")
    return out


def classify_color(
    image: np.ndarray,
    box: Sequence[float] | np.ndarray,
    *,
    colors: Sequence[str] = GENEVAL_COLORS,
    center_fraction: float = 0.5,
) -> str:
    """The pixel method: nearest reference colour (CIE76) to the median Lab colour of the box's centre.

    Args:
        image: HxWx3 uint8.
        box: ``(x1, y1, x2, y2)`` in pixels, y down (clipped to the image).
        colors: Candidate names, a subset of :data:`poser_env.core.spec.COLORS` (default GenEval's ten).
        center_fraction: Fraction in (0, 1] of the box's width and height, centred, whose pixels are used
            (at least one pixel).

    Raises:
        ValueError: an unknown colour name or ``center_fraction`` outside (0, 1].
    """
    names = _check_colors(colors)
    if not 0.0 < float(center_fraction) <= 1.0:
        raise ValueError(f"center_fraction={center_fraction!r} must be in (0, 1], e.g. 0.5.")
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    hw, hh = (x2 - x1) * center_fraction / 2.0, (y2 - y1) * center_fraction / 2.0
    c0 = int(np.clip(np.floor(cx - hw), 0, w - 1))
    r0 = int(np.clip(np.floor(cy - hh), 0, h - 1))
    c1 = int(np.clip(np.ceil(cx + hw), c0 + 1, w))
    r1 = int(np.clip(np.ceil(cy + hh), r0 + 1, h))
    lab = srgb_to_lab(image[r0:r1, c0:c1, :3].reshape(-1, 3))
    med = np.median(lab, axis=0)
    refs = srgb_to_lab(np.array([REFERENCE_COLORS[n] for n in names], dtype=np.float64))
    return names[int(np.argmin(np.linalg.norm(refs - med, axis=1)))]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first (ties keep input order).

    A box is dropped when its IoU with an already kept box is >= ``iou_threshold``; ``iou_threshold`` 1.0
    keeps every box (GenEval's default).

    Args:
        boxes: ``(n, 4)`` boxes ``(x1, y1, x2, y2)``. scores: ``(n,)``. iou_threshold: in [0, 1].
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if iou_threshold >= 1.0:
        return order
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep: list[int] = []
    for i in order:
        if keep:
            k = np.asarray(keep)
            iw = np.clip(np.minimum(b[k, 2], b[i, 2]) - np.maximum(b[k, 0], b[i, 0]), 0.0, None)
            ih = np.clip(np.minimum(b[k, 3], b[i, 3]) - np.maximum(b[k, 1], b[i, 1]), 0.0, None)
            inter = iw * ih
            iou = inter / np.maximum(area[k] + area[i] - inter, 1e-12)
            if np.any(iou >= iou_threshold):
                continue
        keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


class DetectorJudge(Critic):
    """GenEval-style judge of real images: OWLv2 detections + colour classification + :func:`poser_env.core.rules.evaluate`.

    ``judge(image, spec) -> Feedback``: one verdict per ``spec.assertions()`` (background/style ``"unknown"``),
    ``alignment`` the fraction of the judged (not ``"unknown"``) verdicts that hold (in [0, 1]; 1.0 if none), ``fidelity``/``aesthetics`` 1.0 (not measured,
    ``metadata["fidelity_measured"] = False``), ``detections`` every box kept after post-processing and NMS
    (labels are the spec's nouns, colours classified), ``text`` the failing reasons. Deterministic for a
    given model and image. See the module docstring for the method and how it differs from GenEval.

    Args:
        model: Local folder (``save_pretrained``) or hub id of an OWLv2 / OWL-ViT detector
            (``AutoModelForZeroShotObjectDetection`` + ``AutoProcessor``), e.g.
            ``"google/owlv2-base-patch16-ensemble"``.
        device: Torch device, e.g. ``"cpu"`` (default) or ``"cuda:0"``.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` (aliases fp16/bf16), ``"auto"`` or a ``torch.dtype``;
            None (default): float32 on CPU, :attr:`cuda_dtype` (float16, as OWLv2's card runs it) on accelerators.
        local_files_only: Never touch the network (default True).
        trust_remote_code: Allow custom model code from the hub (default False).
        clip_model: Folder or hub id of a CLIP model for GenEval's zero-shot colour classification, or None
            (default) for the pixel method. Loaded lazily with the same device, dtype and flags.
        colors: Colour names a box can get, a subset of :data:`poser_env.core.spec.COLORS` (default GenEval's ten).
        threshold: Score a detection must exceed to count, in [0, 1], or None (default) for GenEval's 0.3
            (0.9 for the ``counting`` tag).
        min_score: Boxes at or below this score (in [0, 1)) are dropped in post-processing (default 0.1).
        nms_threshold: IoU in [0, 1] at which a worse box of the same noun is suppressed (default 0.5;
            1.0 = no NMS).
        center_fraction: Central fraction of a box used by the pixel colour method, in (0, 1] (default 0.5).
        query_template: Detector text query per noun; must contain ``{noun}`` (default
            ``"a photo of a {noun}"``, OWL's convention).

    Raises:
        ValueError: a bad argument (named in the message).
    """

    name = "detector-judge"

    #: dtype on accelerators when ``dtype=None``.
    cuda_dtype: ClassVar[str] = "float16"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str = "cpu",
        dtype: Any = None,
        local_files_only: bool = True,
        trust_remote_code: bool = False,
        clip_model: str | os.PathLike[str] | None = None,
        colors: Sequence[str] = GENEVAL_COLORS,
        threshold: float | None = None,
        min_score: float = 0.1,
        nms_threshold: float = 0.5,
        center_fraction: float = 0.5,
        query_template: str = "a photo of a {noun}",
    ) -> None:
        self.model_id = check_model_id(model)
        self.device = check_device(device)
        self.dtype = devices.default_dtype(dtype, self.device, self.cuda_dtype)
        self.local_files_only = bool(local_files_only)
        self.trust_remote_code = bool(trust_remote_code)
        self.clip_model = None if clip_model is None else check_model_id(clip_model, "clip_model")
        self.colors = _check_colors(colors)
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold={threshold!r} must be in [0, 1] or None (GenEval's 0.3 / 0.9).")
        self.threshold = None if threshold is None else float(threshold)
        if not isinstance(min_score, (int, float)) or not 0.0 <= min_score < 1.0:
            raise ValueError(f"min_score={min_score!r} must be in [0, 1), e.g. 0.1.")
        self.min_score = float(min_score)
        if not isinstance(nms_threshold, (int, float)) or not 0.0 <= nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold={nms_threshold!r} must be in [0, 1] (1.0 turns NMS off), e.g. 0.5.")
        self.nms_threshold = float(nms_threshold)
        if not isinstance(center_fraction, (int, float)) or not 0.0 < center_fraction <= 1.0:
            raise ValueError(f"center_fraction={center_fraction!r} must be in (0, 1], e.g. 0.5.")
        self.center_fraction = float(center_fraction)
        if "{noun}" not in query_template:
            raise ValueError(f"query_template={query_template!r} must contain '{{noun}}', e.g. 'a photo of a {{noun}}'.")
        self.query_template = query_template
        self._model: Any = None
        self._processor: Any = None
        self._clip: Any = None
        self._clip_processor: Any = None
        self._clip_text: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return (f"DetectorJudge({self.model_id!r}, device={self.device!r}, dtype={self.dtype!r}, "
                f"clip_model={self.clip_model!r}, loaded={self.loaded})")

    @property
    def loaded(self) -> bool:
        """True once the detector (and the CLIP model, if any) are in memory."""
        return self._model is not None and (self.clip_model is None or self._clip is not None)

    # ------------------------------------------------------------------ loading
    def _from_pretrained(self, model_id: str, role: str, model_class: str) -> tuple[Any, Any]:

        require("torch", "diffusers")
        transformers = require("transformers", "diffusers")
        kw = {"local_files_only": self.local_files_only, "trust_remote_code": self.trust_remote_code}
        try:
            processor = transformers.AutoProcessor.from_pretrained(model_id, **kw)
            model = getattr(transformers, model_class).from_pretrained(
                model_id, **devices.dtype_kwargs("transformers", self.dtype), **kw)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            if needs_torchvision(exc):
                raise ModelLoadError(
                    f"cannot load the {role} {model_id!r}: its processor needs torchvision, which is not installed "
                    f"({type(exc).__name__}).\nFix: {torchvision_hint()}") from exc
            raise ModelLoadError(
                f"cannot load the {role} {model_id!r} (local_files_only={self.local_files_only}): {exc}\n"
                f"Fix: {fetch_hint(model_id, self.local_files_only)}"
            ) from exc
        model.to(self.device)
        model.eval()
        return processor, model

    def load(self) -> Self:
        """Load the detector (and the CLIP colour model, if given) now; otherwise done on first call.

        Raises:
            MissingExtraError: torch or transformers is not installed (names the pip command).
            ModelLoadError: a model cannot be found or loaded, or the detector is not an OWL model (names
                the id/path and how to fetch one).
        """
        if self._model is None:
            processor, model = self._from_pretrained(self.model_id, "detector model",
                                                     "AutoModelForZeroShotObjectDetection")
            mtype = getattr(model.config, "model_type", "")
            if mtype not in _OWL_TYPES or not hasattr(processor, "post_process_grounded_object_detection"):
                raise ModelLoadError(
                    f"model {self.model_id!r} is a {mtype!r} ({type(model).__name__}); DetectorJudge supports "
                    f"OWL detectors {list(_OWL_TYPES)}, e.g. 'google/owlv2-base-patch16-ensemble'."
                )
            self._processor, self._model = processor, model
        if self.clip_model is not None and self._clip is None:
            processor, model = self._from_pretrained(self.clip_model, "CLIP colour model", "AutoModel")
            if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
                raise ModelLoadError(
                    f"clip_model {self.clip_model!r} ({type(model).__name__}) has no get_image_features/"
                    "get_text_features; pass a CLIP folder such as 'openai/clip-vit-large-patch14'."
                )
            self._clip_processor, self._clip = processor, model
        return self

    def close(self) -> None:
        """Free the detector and CLIP models (and the accelerator's cached memory); idempotent. They load again on
        the next call."""
        if self._model is None and self._clip is None:
            return
        self._processor = self._model = self._clip_processor = self._clip = None
        self._clip_text = {}
        free_accelerator_memory(self.device)

    # ------------------------------------------------------------------ detection
    def _raw_detections(self, image: np.ndarray, nouns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detector boxes ``(n, 4)`` in pixels (before clipping), scores ``(n,)``, noun indices ``(n,)``."""
        import torch

        h, w = image.shape[:2]
        queries = [self.query_template.format(noun=n) for n in nouns]
        inputs = self._processor(text=[queries], images=[image], return_tensors="pt")
        dtype = self._model.dtype
        inputs = {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        with torch.no_grad():
            out = self._model(**inputs)
        # (h, w): OWLv2's post-processing itself scales to the padded square max(h, w); OWL-ViT's per axis
        res = self._processor.post_process_grounded_object_detection(
            out, threshold=self.min_score, target_sizes=[(h, w)], text_labels=[list(nouns)]
        )[0]
        boxes = res["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
        scores = res["scores"].detach().float().cpu().numpy().reshape(-1)
        labels = res["labels"].detach().cpu().numpy().reshape(-1).astype(np.int64)
        return boxes, scores, labels

    def detections_from_boxes(
        self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, nouns: Sequence[str]
    ) -> tuple[Detection, ...]:
        """Post-processed detector output -> :class:`~poser_env.core.feedback.Detection` with colours.

        Clips boxes to the image, drops non-finite scores/boxes and boxes under 1 px in a side, runs per-noun
        NMS, keeps at most 16 per noun, classifies colours. Order: by noun (``nouns`` order), best score first.

        Args:
            image: HxWx3 uint8. boxes: ``(n, 4)`` pixels. scores: ``(n,)`` in [0, 1]. labels: ``(n,)`` indices
            into ``nouns``.
        """
        h, w = image.shape[:2]
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not (len(b) == len(s) == len(lab)):
            raise CriticError(f"detector returned {len(b)} boxes, {len(s)} scores, {len(lab)} labels; expected equal.")
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0.0, float(w))
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0.0, float(h))
        ok = (np.all(np.isfinite(b), axis=1) & np.isfinite(s) & (b[:, 2] - b[:, 0] >= 1.0)
              & (b[:, 3] - b[:, 1] >= 1.0) & (lab >= 0) & (lab < len(nouns)))
        picked: list[tuple[str, np.ndarray, float]] = []
        for k, noun in enumerate(nouns):
            idx = np.flatnonzero(ok & (lab == k))
            kept = idx[nms(b[idx], s[idx], self.nms_threshold)][:MAX_PER_CLASS]
            picked += [(noun, b[i], float(np.clip(s[i], 0.0, 1.0))) for i in kept]
        colors = self._colors(image, [(n, box) for n, box, _ in picked])
        return tuple(
            Detection(label=n, box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])), score=sc, color=c)
            for (n, box, sc), c in zip(picked, colors)
        )

    def _colors(self, image: np.ndarray, items: Sequence[tuple[str, np.ndarray]]) -> list[str]:
        if not items:
            return []
        if self._clip is None:
            return [classify_color(image, box, colors=self.colors, center_fraction=self.center_fraction)
                    for _, box in items]
        return self._clip_colors(image, items)

    def _clip_features(self, out: Any) -> Any:
        feats = out.pooler_output if hasattr(out, "pooler_output") and not hasattr(out, "ndim") else out
        return feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def _clip_text_classifier(self, noun: str) -> np.ndarray:
        """``(n_colors, d)`` unit text embeddings (GenEval's template average) for ``noun``, cached."""
        import torch

        if noun not in self._clip_text:
            texts = [t.format(color=c, noun=noun) for c in self.colors for t in CLIP_COLOR_TEMPLATES]
            enc = self._clip_processor(text=texts, return_tensors="pt", padding=True)
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                f = self._clip_features(self._clip.get_text_features(**enc)).float()
            f = f.reshape(len(self.colors), len(CLIP_COLOR_TEMPLATES), -1).mean(dim=1)
            f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            self._clip_text[noun] = f.cpu().numpy().astype(np.float64)
        return self._clip_text[noun]

    def _clip_colors(self, image: np.ndarray, items: Sequence[tuple[str, np.ndarray]]) -> list[str]:
        import torch

        crops = []
        for _, box in items:
            x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
            x2, y2 = max(int(np.ceil(box[2])), x1 + 1), max(int(np.ceil(box[3])), y1 + 1)
            crops.append(np.ascontiguousarray(image[y1:y2, x1:x2, :3]))
        pix = self._clip_processor(images=crops, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            f = self._clip_features(self._clip.get_image_features(pixel_values=pix.to(self.device, self._clip.dtype)))
        img = f.float().cpu().numpy().astype(np.float64)
        out = []
        for (noun, _), v in zip(items, img):
            sims = self._clip_text_classifier(noun) @ v
            if not np.all(np.isfinite(sims)):
                raise CriticError(f"CLIP colour model {self.clip_model!r} returned non-finite similarities.")
            out.append(self.colors[int(np.argmax(sims))])
        return out

    # ------------------------------------------------------------------ judging
    def detect(self, image: np.ndarray, nouns: Sequence[str]) -> tuple[Detection, ...]:
        """Detections (boxes in pixels, colours) of ``nouns`` in ``image`` (HxWx3 uint8): the boxes region
        experts (inpainting, moves, box insertion) edit."""
        self.load()
        if not nouns:
            return ()
        boxes, scores, labels = self._raw_detections(image, list(nouns))
        return self.detections_from_boxes(image, boxes, scores, labels, list(nouns))

    def device_bytes(self) -> int:
        """Parameter + buffer bytes of the loaded detector (and CLIP colour model), for memory budgets."""
        total = 0
        for m in (self._model, self._clip):
            if m is not None:
                total += sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
        return total

    def _judge(self, image: np.ndarray, spec: Spec) -> Feedback:
        self.load()
        h, w = image.shape[:2]
        nouns = spec.nouns
        if nouns:
            boxes, scores, labels = self._raw_detections(image, nouns)
        else:
            boxes, scores, labels = np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
        dets = self.detections_from_boxes(image, boxes, scores, labels, nouns)
        verdicts = evaluate(spec, dets, width=int(w), height=int(h), threshold=self.threshold)
        judged = [v for v in verdicts if v.holds != "unknown"]
        alignment = sum(v.ok for v in judged) / len(judged) if judged else 1.0
        failing = [v.reason for v in verdicts if not v.ok]
        return Feedback(
            verdicts=verdicts,
            alignment=alignment,
            text="all assertions hold" if not failing else "; ".join(failing),
            detections=dets,
            metadata={"judge": self.name, "model": self.model_id, "fidelity_measured": False,
                      "color_method": "pixel" if self.clip_model is None else f"clip:{self.clip_model}",
                      "n_raw_boxes": len(boxes)},
        )


class GroundedCritic(Critic):
    """A critic with a detector beside it (SLD-style grounding): the critic's verdicts and scores, plus the
    detector's boxes of the prompt's nouns as ``Feedback.detections``, so region experts (inpainting, moves,
    box insertion) edit the target's box instead of the whole canvas.

    The VLM and CLIP critics judge without boxes; ``make_critic("vlm:<id>", detector="<owlv2 id>")`` wraps
    them in this. Detections the critic already returned are kept (the detector's are added after them).

    Args:
        critic: The judging critic.
        detector: A :class:`DetectorJudge` (only its :meth:`DetectorJudge.detect` is used).
    """

    def __init__(self, critic: Critic, detector: DetectorJudge) -> None:
        if not isinstance(critic, Critic):
            raise ValueError(f"critic={critic!r} must be a poser_env.core.feedback.Critic.")
        if not isinstance(detector, DetectorJudge):
            raise ValueError(f"detector={detector!r} must be a critic.detector_judge.DetectorJudge.")
        self.critic = critic
        self.detector = detector
        self.name = f"{getattr(critic, 'name', type(critic).__name__)}+detector:{detector.model_id}"

    def load(self) -> Self:
        """Load the critic (when it loads models) and the detector now."""
        load = getattr(self.critic, "load", None)
        if callable(load):
            load()
        self.detector.load()
        return self

    def device_bytes(self) -> int:
        """Bytes on the device of the critic and the detector (for memory budgets)."""
        inner = getattr(self.critic, "device_bytes", None)
        return (int(inner()) if callable(inner) else 0) + self.detector.device_bytes()

    def _judge(self, image: np.ndarray, spec: Spec) -> Feedback:
        fb = self.critic(image, spec)
        dets = self.detector.detect(image, spec.nouns)
        meta = {**dict(fb.metadata), "detector": self.detector.model_id, "n_detections": len(dets)}
        return replace(fb, detections=(*fb.detections, *dets), metadata=meta)
