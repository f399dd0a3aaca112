"""CLIP critic: image-text similarity of each assertion phrase and of the whole prompt.

Any ``transformers`` CLIP-style dual encoder loaded with ``AutoModel`` that has ``get_image_features`` and
``get_text_features`` works (tested: CLIP; SigLIP loads too but is trained with ``padding="max_length"``
texts and a sigmoid loss, so its cosines need their own ``center``/``scale``). Similarities are cosines in [-1, 1] between the
L2-normalised projected embeddings.

Calibration (how a cosine becomes a confidence in [0, 1]):

* ``"contrast"`` (default): each assertion is compared with its alternatives - the same statement with
  every other colour / pattern / size / background / style, the opposite relation ("left of" vs
  "right of", "next to" vs "far from"), one fewer / one more object for counts, and the negation for
  existence and exclusion ("there is a dog" vs "there is no dog")::

      confidence = sigmoid(T * (cos(image, statement) - max_alt cos(image, alternative)))

  i.e. CLIP's own two-way softmax between the statement and its strongest alternative, with ``T`` the
  model's learned temperature (``logit_scale.exp()``, 100 for OpenAI CLIP) unless ``temperature`` is set.
  CLIP is known to handle negation and counting poorly; these verdicts are weak for those kinds.
* ``"logistic"``: ``confidence = sigmoid((cos - center) / scale)``; the defaults (center 0.22, scale 0.03)
  roughly fit OpenAI CLIP ViT-L/14 on photos (matching pairs ~0.3, unrelated ~0.15); recalibrate them for
  another model.

``alignment`` is ``sigmoid((cos(image, prompt) - center) / scale)`` for the whole prompt (or, when the spec
has no prompt text, the entity phrases joined with commas), whatever the calibration. ``fidelity`` and
``aesthetics`` are not measured by CLIP and are reported as 1.0 (``metadata["fidelity_measured"] = False``).
A non-finite similarity gives an ``"unknown"`` verdict (confidence 0.5), never an invented score.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Any, ClassVar, Literal, Unpack

import numpy as np

from poser_env.core.feedback import Critic, Feedback, Holds, Verdict
from poser_env.core.hf import HFModel, HFOptions, ModelLoadError
from poser_env.core.image import check_image
from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, SIZES, STYLES, Assertion, Spec
from poser_env.core.text import plural

__all__ = ["OPPOSITE_RELATIONS", "CLIPCritic", "alternatives"]

Calibration = Literal["contrast", "logistic"]

#: The alternative a relation is contrasted with.
OPPOSITE_RELATIONS: dict[str, str] = {
    "left of": "right of", "right of": "left of", "above": "below", "below": "above",
    "on top of": "under", "under": "on top of", "next to": "far from",
}


def _swap_tail(text: str, value: str, options: tuple[str, ...]) -> list[str]:
    if not text.endswith(value):
        return []
    head = text[: len(text) - len(value)]
    return [head + o for o in options if o != value]


def alternatives(assertion: Assertion, spec: Spec) -> list[str]:
    """Statements that contradict ``assertion`` (see the module docstring), possibly empty."""

    a, kind = assertion, assertion.kind
    if kind in ("color", "pattern", "size", "background", "style") and a.value is not None:
        opts = {"color": COLORS, "pattern": PATTERNS, "size": SIZES, "background": BACKGROUNDS, "style": STYLES}[kind]
        return _swap_tail(a.text, a.value, opts)
    if kind == "relation" and a.value in OPPOSITE_RELATIONS:
        return [a.text.replace(f" {a.value} ", f" {OPPOSITE_RELATIONS[a.value]} ", 1)]
    if kind in ("exists", "count") and a.entity is not None:
        e = spec.entities[a.entity]
        out = [f"there is no {e.noun}"] if e.count == 1 else []
        for n in (e.count - 1, e.count + 1):
            if 1 <= n <= 10:
                alt = replace(e, count=n)
                out.append(f"there {'is' if n == 1 else 'are'} {alt.phrase()}")
        return out
    if kind == "exclusion" and a.value is not None:
        n = a.count or 1
        return [f"there is a {a.value}" if n == 1 else f"there are {n} {plural(a.value)}"]
    return []


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _features(out: Any) -> Any:
    """Projected embeddings from ``get_*_features`` (a tensor in transformers 4, an output object in 5)."""
    if hasattr(out, "pooler_output") and not hasattr(out, "ndim"):
        return out.pooler_output
    if isinstance(out, tuple):
        return out[0]
    return out


class CLIPCritic(HFModel, Critic):
    """Critic scoring each assertion by CLIP image-text similarity.

    Args:
        model: Local folder or hub id of a CLIP-style model (``AutoModel`` + ``AutoProcessor``).
        **options: ``device`` (torch device, default ``"cpu"``), ``dtype`` (``"float32"`` default,
            ``"float16"``, ``"bfloat16"``, ``"auto"`` or a ``torch.dtype``), ``local_files_only`` (never touch
            the network, default True), ``trust_remote_code`` (default False); see :class:`poser_env.core.hf.HFModel`.
        calibration: ``"contrast"`` (default) or ``"logistic"`` (see the module docstring).
        center: Cosine mapped to confidence 0.5 by the logistic calibration and the alignment, in [-1, 1].
        scale: Cosine width of the logistic, > 0.
        temperature: Multiplier of the cosine difference in the contrast calibration, > 0; None uses the
            model's ``logit_scale.exp()`` (or 100 when it has none).
        batch_size: Texts per text-encoder pass, >= 1.

    Raises:
        ValueError: a bad argument (named in the message).
    """

    name = "clip"
    model_role = "CLIP critic model"

    #: dtype on accelerators when ``dtype=None`` (CLIP checkpoints ship float16/float32 weights).
    cuda_dtype: ClassVar[str] = "float16"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        calibration: Calibration = "contrast",
        center: float = 0.22,
        scale: float = 0.03,
        temperature: float | None = None,
        batch_size: int = 64,
        **options: Unpack[HFOptions],
    ) -> None:
        super().__init__(model, **options)
        if calibration not in ("contrast", "logistic"):
            raise ValueError(f"calibration={calibration!r} must be 'contrast' or 'logistic'.")
        self.calibration: Calibration = calibration
        if not isinstance(center, (int, float)) or not -1.0 <= float(center) <= 1.0:
            raise ValueError(f"center={center!r} must be a cosine in [-1, 1], e.g. 0.22.")
        if not isinstance(scale, (int, float)) or not float(scale) > 0:
            raise ValueError(f"scale={scale!r} must be a number > 0, e.g. 0.03.")
        if temperature is not None and (not isinstance(temperature, (int, float)) or not float(temperature) > 0):
            raise ValueError(f"temperature={temperature!r} must be a number > 0 or None (use the model's).")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an int >= 1, e.g. 64.")
        self.center, self.scale = float(center), float(scale)
        self.temperature = None if temperature is None else float(temperature)
        self.batch_size = batch_size
        self.name = f"clip:{self.model_id}"
        self._processor: Any = None

    def _repr_extra(self) -> str:
        return f", calibration={self.calibration!r}"

    def _accept(self, preprocessor: Any, model: Any) -> None:
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ModelLoadError(
                f"model {self.model_id!r} ({type(model).__name__}) has no get_image_features/get_text_features; "
                "use a CLIP-style dual encoder such as 'openai/clip-vit-large-patch14'."
            )
        self._processor = preprocessor

    # ------------------------------------------------------------------ embeddings
    def _max_text_len(self) -> int | None:
        cfg = getattr(self._model.config, "text_config", None)
        n = getattr(cfg, "max_position_embeddings", None)
        return int(n) if n else None

    def image_embedding(self, image: np.ndarray) -> np.ndarray:
        """L2-normalised image embedding (1-D float64) of an HxWx3 uint8 image."""
        import torch
        from PIL import Image


        check_image(image)
        self.load()
        pix = self._processor(images=[Image.fromarray(image)], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            f = _features(self._model.get_image_features(pixel_values=pix.to(self.device, self._model.dtype)))
        v = f[0].float().cpu().numpy().astype(np.float64)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings, shape (len(texts), dim), float64; long texts are truncated."""
        import torch

        self.load()
        tok = self._processor.tokenizer
        rows = []
        max_len = self._max_text_len()
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            enc = tok(chunk, padding=True, truncation=max_len is not None, max_length=max_len, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                f = _features(self._model.get_text_features(**enc))
            rows.append(f.float().cpu().numpy().astype(np.float64))
        m = np.concatenate(rows, axis=0) if rows else np.zeros((0, 1))
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    def similarities(self, image: np.ndarray, texts: list[str]) -> np.ndarray:
        """Cosine similarity in [-1, 1] of ``image`` with each text, shape (len(texts),)."""
        return self.text_embeddings(texts) @ self.image_embedding(image)

    def _temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        ls = getattr(self._model, "logit_scale", None)
        return float(ls.detach().float().exp().item()) if ls is not None else 100.0

    def _logistic(self, cos: float) -> float:
        return _sigmoid((cos - self.center) / self.scale)

    # ------------------------------------------------------------------ judging
    def _judge(self, image: np.ndarray, spec: Spec) -> Feedback:
        assertions = spec.assertions()
        prompt = spec.prompt.strip() or ", ".join(e.phrase() for e in spec.entities) or "an image"
        alts = [alternatives(a, spec) if self.calibration == "contrast" else [] for a in assertions]
        texts = [prompt, *(a.text for a in assertions)]
        spans: list[tuple[int, int]] = []
        for alt in alts:
            spans.append((len(texts), len(texts) + len(alt)))
            texts.extend(alt)
        self.load()
        sims = self.similarities(image, texts)
        temp = self._temperature()
        verdicts: list[Verdict] = []
        for i, (a, (s0, s1)) in enumerate(zip(assertions, spans)):
            cos = float(sims[1 + i])
            alt_cos = sims[s0:s1]
            if not (math.isfinite(cos) and np.all(np.isfinite(alt_cos))):
                verdicts.append(Verdict(a.id, "unknown", 0.5, "unknown: non-finite CLIP similarity", a.kind))
                continue
            if s1 > s0:
                j = int(np.argmax(alt_cos))
                conf = _sigmoid(temp * (cos - float(alt_cos[j])))
                reason = f"CLIP cos={cos:.3f} vs {float(alt_cos[j]):.3f} for {texts[s0 + j]!r}"
            else:
                conf = self._logistic(cos)
                reason = f"CLIP cos={cos:.3f}"
            holds: Holds = "yes" if conf >= 0.5 else "no"
            verdicts.append(Verdict(a.id, holds, float(np.clip(conf, 0.0, 1.0)), reason, a.kind))
        prompt_cos = float(sims[0])
        alignment = self._logistic(prompt_cos) if math.isfinite(prompt_cos) else 0.5
        failing = [f"not {a.text}" for a, v in zip(assertions, verdicts) if v.holds == "no"]
        text = f"{sum(v.ok for v in verdicts)} of {len(verdicts)} assertions hold (CLIP)"
        if failing:
            text += "; " + "; ".join(failing)
        meta = {
            "critic": self.name,
            "calibration": self.calibration,
            "prompt_similarity": prompt_cos,
            "similarities": [float(sims[1 + i]) for i in range(len(assertions))],
            "temperature": temp,
            "fidelity_measured": False,
            "aesthetics_measured": False,
        }
        return Feedback(
            verdicts=tuple(verdicts),
            alignment=float(np.clip(alignment, 0.0, 1.0)),
            fidelity=1.0,
            aesthetics=1.0,
            text=text,
            metadata=meta,
        )
