"""VLM critic: one yes/no question per assertion, scored from the answer's first-token logits.

The critic asks a vision-language model (any ``transformers`` ``AutoModelForImageTextToText``: Llava,
Idefics3, SmolVLM, Qwen2-VL, ...) one question per assertion of the spec, e.g.
``"Is it true that the dog is right of the teddy bear? Answer yes or no."``, formatted with the model's
chat template and batched. The confidence is VQAScore-style::

    confidence = P(yes) / (P(yes) + P(no))

where ``P(yes)`` sums the next-token probabilities of the tokenizer's "yes" variants (``yes``, ``Yes``,
``YES`` and their space-prefixed forms, each kept only if it is a single known token) at the first answer
position, and ``P(no)`` likewise; so no free text is parsed. ``holds = "yes"`` when confidence >= 0.5.

The verdict is ``"unknown"`` (confidence 0.5, with the reason) - never an invented score - when the
tokenizer has no single-token yes or no, the logits are not finite, or ``P(yes) + P(no)`` is below
``min_yes_no_mass`` (the model is not answering yes/no at all).

Scores: ``alignment`` is the mean verdict confidence (:meth:`poser_env.core.feedback.Feedback.alignment_of`,
unknowns count 0.5). ``fidelity`` and ``aesthetics`` are the confidences of one extra yes/no question each
(``fidelity_question``, ``aesthetics_question``); pass None to skip one, and it is reported as 1.0 ("not
measured", ``metadata["fidelity_measured"] = False``). An unknown answer to them gives 0.5.

Nothing loads until the first call (or :meth:`VLMCritic.load`). Weights come from a local folder or a
hub id; ``local_files_only`` defaults to True (no network), ``trust_remote_code`` to False.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Unpack

import numpy as np

from poser_env.core.feedback import Critic, CriticError, Feedback, Holds, Verdict
from poser_env.core.hf import (
    HFModel,
    HFOptions,
    ModelLoadError,
    check_device,
    check_dtype,
    check_model_id,
    fetch_hint,
    resolve_dtype,
)
from poser_env.core.image import check_image
from poser_env.core.spec import Assertion, Spec

__all__ = [
    "DEFAULT_AESTHETICS_QUESTION",
    "DEFAULT_FIDELITY_QUESTION",
    "DEFAULT_QUESTION_TEMPLATE",
    "DEFAULT_REASON_PROMPT",
    "NO_VARIANTS",
    "YES_VARIANTS",
    "ModelLoadError",
    "VLMCritic",
    "YesNoScore",
    "check_device",
    "check_dtype",
    "check_model_id",
    "fetch_hint",
    "resolve_dtype",
    "score_yes_no",
    "yes_no_token_ids",
]

#: Question asked per assertion; ``{statement}`` is :attr:`poser_env.core.spec.Assertion.text`.
DEFAULT_QUESTION_TEMPLATE = "Is it true that {statement}? Answer yes or no."
DEFAULT_REASON_PROMPT = "It is not true that {statement}. In one short sentence, what is wrong in the image?"
DEFAULT_FIDELITY_QUESTION = "Is this image free of visual artifacts and distortions? Answer yes or no."
DEFAULT_AESTHETICS_QUESTION = "Is this image well composed and pleasing to look at? Answer yes or no."
#: Strings whose single-token encodings count as "yes" / "no".
YES_VARIANTS: tuple[str, ...] = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO_VARIANTS: tuple[str, ...] = ("no", "No", "NO", " no", " No", " NO")

def yes_no_token_ids(tokenizer: Any, variants: Sequence[str]) -> tuple[int, ...]:
    """Ids of the variants that encode to exactly one known (non-unk) token, sorted and de-duplicated."""
    ids: set[int] = set()
    unk = getattr(tokenizer, "unk_token_id", None)
    for v in variants:
        try:
            enc = tokenizer.encode(v, add_special_tokens=False)
        except Exception:  # a tokenizer that cannot encode the string simply has no such token
            continue
        if len(enc) == 1 and enc[0] != unk:
            ids.add(int(enc[0]))
    return tuple(sorted(ids))


@dataclass(frozen=True)
class YesNoScore:
    """The first-token yes/no reading of one question.

    Attributes:
        confidence: P(yes)/(P(yes)+P(no)) in [0, 1], or 0.5 when unknown.
        p_yes: Summed probability of the yes tokens (NaN when unknown for lack of logits).
        p_no: Summed probability of the no tokens.
        unknown: True when the answer could not be interpreted.
        reason: Why it is unknown ("" otherwise).
    """

    confidence: float
    p_yes: float
    p_no: float
    unknown: bool = False
    reason: str = ""


def score_yes_no(logits: np.ndarray, yes_ids: Sequence[int], no_ids: Sequence[int], min_mass: float) -> YesNoScore:
    """Read one answer from first-token ``logits`` (1-D, vocabulary size). Never invents a score."""
    if not yes_ids or not no_ids:
        missing = "yes" if not yes_ids else "no"
        return YesNoScore(0.5, math.nan, math.nan, True, f"the tokenizer has no single token for {missing!r}")
    logits = np.asarray(logits, dtype=np.float64)
    if not np.all(np.isfinite(logits)):
        return YesNoScore(0.5, math.nan, math.nan, True, "the model returned non-finite logits")
    z = logits - logits.max()
    p = np.exp(z)
    p /= p.sum()
    p_yes, p_no = float(p[list(yes_ids)].sum()), float(p[list(no_ids)].sum())
    mass = p_yes + p_no
    if not mass > min_mass:
        return YesNoScore(
            0.5, p_yes, p_no, True,
            f"P(yes)+P(no)={mass:.3g} is below min_yes_no_mass={min_mass:g}: the model did not answer yes/no",
        )
    return YesNoScore(float(np.clip(p_yes / mass, 0.0, 1.0)), p_yes, p_no)


class VLMCritic(HFModel, Critic):
    """Critic that asks a vision-language model one yes/no question per assertion (VQAScore-style).

    Args:
        model: Local folder (saved with ``save_pretrained``) or hub id of an image-text-to-text model.
        **options: ``device`` (torch device, default ``"cpu"``), ``dtype`` (``"float32"`` default,
            ``"float16"``, ``"bfloat16"``, ``"auto"`` or a ``torch.dtype``), ``local_files_only`` (never touch
            the network, default True), ``trust_remote_code`` (default False); see :class:`poser_env.core.hf.HFModel`.
        batch_size: Questions per forward pass, >= 1 (default 8).
        question_template: Question per assertion; must contain ``{statement}``.
        fidelity_question: Extra yes/no question scored as fidelity, or None (fidelity reported as 1.0).
        aesthetics_question: Extra yes/no question scored as aesthetics, or None (reported as 1.0).
        min_yes_no_mass: When P(yes)+P(no) at the first answer token is at most this (in [0, 1)), the
            verdict is unknown. Default 0.05.
        explain_max_new_tokens: When > 0, also generate a free-text description of the image (greedy,
            this many tokens at most) and append it to ``Feedback.text``. Default 0 (off).
        explain_prompt: The question used for that description.
        reason_max_new_tokens: When > 0, the model also writes a short reason for each failing assertion
            (verdict "no"): one batched greedy generation of at most this many tokens per failing assertion,
            carried in the verdict's ``reason``, in ``Feedback.text`` and in ``metadata["reasons"]``
            (assertion id -> reason). Default 0 (off).
        reason_prompt: The request for a reason; ``{statement}`` is the assertion's text.
        prompt_template: Used only when the processor has no chat template: a string with ``{question}``
            and the model's image token, e.g. ``"USER: <image>\\n{question} ASSISTANT:"``.

    Raises:
        ValueError: a bad argument (named in the message).
    """

    name = "vlm"
    model_class = "AutoModelForImageTextToText"
    model_role = "VLM critic model"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        batch_size: int = 8,
        question_template: str = DEFAULT_QUESTION_TEMPLATE,
        fidelity_question: str | None = DEFAULT_FIDELITY_QUESTION,
        aesthetics_question: str | None = DEFAULT_AESTHETICS_QUESTION,
        min_yes_no_mass: float = 0.05,
        explain_max_new_tokens: int = 0,
        explain_prompt: str = "Describe the objects in this image, their colours and positions.",
        prompt_template: str | None = None,
        reason_max_new_tokens: int = 0,
        reason_prompt: str = DEFAULT_REASON_PROMPT,
        **options: Unpack[HFOptions],
    ) -> None:
        super().__init__(model, **options)
        if isinstance(reason_max_new_tokens, bool) or not isinstance(reason_max_new_tokens, int) or not (
                0 <= reason_max_new_tokens <= 256):
            raise ValueError(f"reason_max_new_tokens={reason_max_new_tokens!r} must be an int in [0, 256] (0 = off), "
                             "e.g. 24.")
        if "{statement}" not in reason_prompt:
            raise ValueError(f"reason_prompt={reason_prompt!r} must contain '{{statement}}', e.g. "
                             f"{DEFAULT_REASON_PROMPT!r}.")
        self.reason_max_new_tokens = reason_max_new_tokens
        self.reason_prompt = reason_prompt
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an int >= 1, e.g. 8.")
        self.batch_size = batch_size
        if "{statement}" not in question_template:
            raise ValueError(
                f"question_template={question_template!r} must contain '{{statement}}', e.g. "
                f"{DEFAULT_QUESTION_TEMPLATE!r}."
            )
        self.question_template = question_template
        self.fidelity_question = fidelity_question
        self.aesthetics_question = aesthetics_question
        if not isinstance(min_yes_no_mass, (int, float)) or not 0.0 <= float(min_yes_no_mass) < 1.0:
            raise ValueError(f"min_yes_no_mass={min_yes_no_mass!r} must be a number in [0, 1), e.g. 0.05.")
        self.min_yes_no_mass = float(min_yes_no_mass)
        if not isinstance(explain_max_new_tokens, int) or explain_max_new_tokens < 0:
            raise ValueError(f"explain_max_new_tokens={explain_max_new_tokens!r} must be an int >= 0 (0 = off).")
        self.explain_max_new_tokens = explain_max_new_tokens
        self.explain_prompt = explain_prompt
        if prompt_template is not None and "{question}" not in prompt_template:
            raise ValueError(
                f"prompt_template={prompt_template!r} must contain '{{question}}' and the image token, e.g. "
                "'USER: <image>\\n{question} ASSISTANT:'."
            )
        self.prompt_template = prompt_template
        self.name = f"vlm:{self.model_id}"
        self._processor: Any = None
        self._yes_ids: tuple[int, ...] = ()
        self._no_ids: tuple[int, ...] = ()

    def _repr_extra(self) -> str:
        return f", batch_size={self.batch_size}"

    def _accept(self, preprocessor: Any, model: Any) -> None:
        tokenizer = getattr(preprocessor, "tokenizer", None)
        if tokenizer is None:
            raise ModelLoadError(f"the processor of {self.model_id!r} has no tokenizer; use an image-text-to-text model.")
        self._processor = preprocessor
        self._yes_ids = yes_no_token_ids(tokenizer, YES_VARIANTS)
        self._no_ids = yes_no_token_ids(tokenizer, NO_VARIANTS)

    # ------------------------------------------------------------------ prompts
    def question(self, assertion: Assertion) -> str:
        """The yes/no question asked for ``assertion``."""
        return self.question_template.format(statement=assertion.text)

    def _prompt(self, question: str) -> str:
        proc = self._processor
        if getattr(proc, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            return str(proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        if self.prompt_template is None:
            raise CriticError(
                f"the processor of {self.model_id!r} has no chat template; pass prompt_template= with "
                "'{question}' and the model's image token, e.g. 'USER: <image>\\n{question} ASSISTANT:'."
            )
        return self.prompt_template.format(question=question)

    def _inputs(self, pil: Any, prompts: list[str], padding_side: str) -> Any:
        proc = self._processor
        tok = proc.tokenizer
        old = tok.padding_side
        tok.padding_side = padding_side
        try:
            batch = proc(text=prompts, images=[pil] * len(prompts), return_tensors="pt", padding=True)
        finally:
            tok.padding_side = old
        batch.pop("labels", None)  # PaliGemma's processor adds training labels; scoring needs none
        batch = batch.to(self.device)
        # pixel values come as float32; a half-precision model needs them in its dtype (ids stay integer)
        return batch.to(self._model.dtype)

    # ------------------------------------------------------------------ scoring
    def score_questions(self, image: np.ndarray, questions: Sequence[str]) -> list[YesNoScore]:
        """Yes/no scores of free-form ``questions`` about ``image`` (HxWx3 uint8), in order."""
        import torch
        from PIL import Image


        check_image(image)
        self.load()
        pil = Image.fromarray(image)
        prompts = [self._prompt(q) for q in questions]
        out: list[YesNoScore] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            # right padding: pads sit after each prompt, so a causal model's last real position is exact
            batch = self._inputs(pil, chunk, "right")
            with torch.inference_mode():
                logits = self._model(**batch).logits
            last = batch["attention_mask"].sum(dim=1) - 1
            rows = logits[torch.arange(logits.shape[0], device=logits.device), last].float().cpu().numpy()
            out.extend(score_yes_no(r, self._yes_ids, self._no_ids, self.min_yes_no_mass) for r in rows)
        return out

    def explain(self, image: np.ndarray) -> str:
        """A greedy free-text description of ``image`` (``explain_max_new_tokens`` tokens at most)."""
        return self.generate_answers(image, [self.explain_prompt], max(1, self.explain_max_new_tokens))[0]

    def generate_answers(self, image: np.ndarray, questions: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy free-text answers to ``questions`` about ``image``, batched (``batch_size`` per pass), each
        at most ``max_new_tokens`` tokens."""
        import torch
        from PIL import Image

        self.load()
        pil = Image.fromarray(image)
        prompts = [self._prompt(q) for q in questions]
        out: list[str] = []
        tok = self._processor.tokenizer
        for start in range(0, len(prompts), self.batch_size):
            # left padding: generation continues right after each prompt
            batch = self._inputs(pil, prompts[start:start + self.batch_size], "left")
            with torch.inference_mode():
                ids = self._model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=tok.pad_token_id)
            new = ids[:, batch["input_ids"].shape[1]:]
            out += [str(tok.decode(row, skip_special_tokens=True)).strip() for row in new]
        return out

    def _judge(self, image: np.ndarray, spec: Spec) -> Feedback:
        assertions = spec.assertions()
        questions = [self.question(a) for a in assertions]
        extra = [q for q in (self.fidelity_question, self.aesthetics_question) if q is not None]
        scores = self.score_questions(image, [*questions, *extra])
        verdicts: list[Verdict] = []
        for a, q, s in zip(assertions, questions, scores):
            if s.unknown:
                verdicts.append(Verdict(a.id, "unknown", 0.5, f"unknown: {s.reason} ({q!r})", a.kind))
            else:
                holds: Holds = "yes" if s.confidence >= 0.5 else "no"
                verdicts.append(Verdict(a.id, holds, s.confidence, f"VLM P(yes)={s.confidence:.2f} for {q!r}", a.kind))
        rest = iter(scores[len(assertions):])
        meta: dict[str, Any] = {
            "critic": self.name,
            "questions": questions,
            "p_yes": [s.p_yes for s in scores[: len(assertions)]],
            "p_no": [s.p_no for s in scores[: len(assertions)]],
        }
        quality: dict[str, float] = {}
        for key, extra_q in (("fidelity", self.fidelity_question), ("aesthetics", self.aesthetics_question)):
            meta[f"{key}_measured"] = extra_q is not None
            if extra_q is None:
                quality[key] = 1.0
                continue
            s = next(rest)
            quality[key] = s.confidence
            if s.unknown:
                meta[f"{key}_unknown_reason"] = s.reason
        reasons: dict[str, str] = {}
        if self.reason_max_new_tokens > 0:
            failing = [(i, a) for i, (a, v) in enumerate(zip(assertions, verdicts)) if v.holds == "no"]
            answers = self.generate_answers(image, [self.reason_prompt.format(statement=a.text) for _, a in failing],
                                            self.reason_max_new_tokens) if failing else []
            for (i, a), why in zip(failing, answers):
                reasons[a.id] = why
                v = verdicts[i]
                verdicts[i] = Verdict(v.assertion_id, v.holds, v.confidence, f"{v.reason}; why: {why}", v.kind)
            meta["reasons"] = reasons
        lines = []
        for a, v in zip(assertions, verdicts):
            if v.holds == "no":
                why = f": {reasons[a.id]}" if reasons.get(a.id) else ""
                lines.append(f"not {a.text} (p={v.confidence:.2f}){why}")
            elif v.holds == "unknown":
                lines.append(f"cannot tell whether {a.text}")
        n_yes = sum(v.ok for v in verdicts)
        text = f"{n_yes} of {len(verdicts)} assertions hold"
        if lines:
            text += "; " + "; ".join(lines)
        if self.explain_max_new_tokens > 0:
            explanation = self.explain(image)
            meta["explanation"] = explanation
            if explanation:
                text += f". The model says: {explanation}"
        return Feedback(
            verdicts=tuple(verdicts),
            alignment=Feedback.alignment_of(verdicts),
            fidelity=quality["fidelity"],
            aesthetics=quality["aesthetics"],
            text=text,
            background=None,
            style=None,
            metadata=meta,
        )
