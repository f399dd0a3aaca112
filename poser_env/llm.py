"""LLM decomposer: a causal language model turns a prompt into a spec, the rules check it.

The model (any ``transformers`` ``AutoModelForCausalLM`` with a tokenizer, ideally an instruction-tuned
one with a chat template) is asked - through its chat template - for one JSON object in GenEval's
metadata schema, extended for long prompts (see :data:`SCHEMA_TEXT`)::

    {"include": [{"class": "clock", "count": 2, "color": "red"},
                 {"class": "dog", "count": 1, "color": "blue", "position": ["right of", 0]}],
     "exclude": [], "relations": [], "background": null, "style": null}

Generation is greedy (deterministic). The first JSON object in the answer is extracted and validated
(:func:`spec_from_llm_text`) against the JSON schema ``poser_env/data/llm_spec_schema.json`` and then for
meaning: counts 1-10, relation indices in range, and - unless ``require_nouns_in_prompt=False`` - every noun
must occur in the prompt (no invented objects). With ``open_vocab=True`` (the decomposer's default) a
colour, pattern or size outside SceneSim's vocabulary and any ``"attributes"`` become open attributes, a
relation outside :data:`poser_env.core.spec.RELATIONS` an open relation, and an unknown background or style is
listed in ``spec.unexpressed`` (see :mod:`poser_env.core.spec`, "Open spec"); with ``open_vocab=False`` they are
errors. The instructions and few-shot examples are versioned data (``poser_env/data/llm_prompt.toml``,
:data:`PROMPT_VERSION`, recorded in ``spec.metadata["prompt_version"]``).
Any failure falls back to the rule parser (:func:`poser_env.core.parser.parse`) and the reason is recorded in
``spec.metadata["fallback_reason"]`` and :attr:`LLMDecomposer.last_fallback_reason`.
``plan``, ``revise`` and ``current`` delegate to the rule decomposer (:class:`poser_env.decomposer.RuleDecomposer`).

Nothing loads until the first :meth:`LLMDecomposer.parse` (or :meth:`LLMDecomposer.load`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import resources
from typing import TYPE_CHECKING, Any, Unpack

from poser_env.core.hf import HFModel, HFOptions
from poser_env.core.lru import LRUCache
from poser_env.core.optional import require
from poser_env.core.parser import clean_prompt, parse
from poser_env.core.spec import BACKGROUNDS, COLORS, MAX_OPEN_CHARS, PATTERNS, RELATIONS, SIZES, STYLES, Spec, SpecError
from poser_env.core.text import singular
from poser_env.decomposer import RuleDecomposer

if TYPE_CHECKING:
    from poser_env.core.commands import Command
    from poser_env.core.feedback import Feedback
    from poser_env.planner import Plan

__all__ = [
    "FEW_SHOT",
    "PROMPT_VERSION",
    "SCHEMA",
    "SCHEMA_TEXT",
    "SYSTEM_PROMPT",
    "LLMDecomposer",
    "LLMOutputError",
    "extract_json_object",
    "spec_from_llm_text",
]

_TOP_KEYS = frozenset({"tag", "include", "exclude", "relations", "background", "style", "prompt", "unexpressed"})
_ITEM_KEYS = frozenset({"class", "count", "color", "pattern", "size", "position", "attributes"})
_EXCLUDE_KEYS = frozenset({"class", "count"})

SCHEMA_TEXT = (
    'Answer with one JSON object and nothing else. Keys: "include": a list of object groups, each '
    '{"class": singular noun, "count": integer 1-10, optional "color": one of ' + json.dumps(list(COLORS))
    + ', optional "pattern": one of ' + json.dumps(list(PATTERNS)) + ', optional "size": one of '
    + json.dumps(list(SIZES)) + ', optional "position": [relation, index of the reference group in include]}; '
    'optional "exclude": a list of {"class": noun, "count": integer} that must not appear; optional "relations": '
    "a list of [subject index, relation, reference index] for relations beyond each group's position; "
    "relations are one of " + json.dumps(list(RELATIONS)) + '; optional "background": one of '
    + json.dumps(list(BACKGROUNDS)) + '; optional "style": one of ' + json.dumps(list(STYLES)) + "."
)
_DATA = resources.files("poser_env").joinpath("data")
#: JSON schema of the model's answer (``poser_env/data/llm_spec_schema.json``).
SCHEMA: dict[str, Any] = json.loads(_DATA.joinpath("llm_spec_schema.json").read_text(encoding="utf-8"))
_PROMPT_DATA = tomllib.loads(_DATA.joinpath("llm_prompt.toml").read_text(encoding="utf-8"))
#: Version of the instructions and few-shot examples (``poser_env/data/llm_prompt.toml``).
PROMPT_VERSION: int = int(_PROMPT_DATA["version"])
_VOCAB = {"{colors}": COLORS, "{patterns}": PATTERNS, "{sizes}": SIZES, "{relations}": RELATIONS,
          "{backgrounds}": BACKGROUNDS, "{styles}": STYLES}
_system = str(_PROMPT_DATA["system"])
for _key, _words in _VOCAB.items():
    _system = _system.replace(_key, json.dumps(list(_words)))
#: The instructions given to the model (versioned data, vocabularies filled in).
SYSTEM_PROMPT: str = _system
#: (prompt, answer) few-shot examples shown to the model before the prompt.
FEW_SHOT: tuple[tuple[str, str], ...] = tuple((str(e["prompt"]), str(e["answer"])) for e in _PROMPT_DATA["examples"])


class LLMOutputError(SpecError):
    """The LLM's answer is not a valid spec; the message says why."""


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object (``{...}``) in ``text`` (code fences and prose around it are ignored).

    Raises:
        LLMOutputError: no JSON object could be decoded.
    """
    if not isinstance(text, str):
        raise LLMOutputError(f"LLM output must be a string, got {type(text).__name__}.")
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise LLMOutputError(f"no JSON object in the LLM output {text[:120]!r}")


def _check_int(value: Any, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise LLMOutputError(f"{where}={value!r} must be an integer from {lo} to {hi}")
    return value


def _check_schema(obj: dict[str, Any]) -> None:
    """Validate against :data:`SCHEMA` with the ``jsonschema`` library (an error names the path)."""
    jsonschema = require("jsonschema", "diffusers")
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.path).lstrip(".") or "answer"
        raise LLMOutputError(f"{where}: {e.message} (schema {SCHEMA['$id']})")


def _open_word(value: Any, where: str) -> str:

    if not isinstance(value, str):
        raise LLMOutputError(f"{where}={value!r} must be a string")
    v = " ".join(re.sub(r"[^\w '-]", " ", value.lower()).split())
    if not v or len(v) > MAX_OPEN_CHARS:
        raise LLMOutputError(f"{where}={value!r} must be a word or short phrase (1 to {MAX_OPEN_CHARS} characters)")
    return v


def _check_vocab(value: Any, where: str, choices: Sequence[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise LLMOutputError(f"{where}={value!r} is not one of {list(choices)}")
    return value.strip().lower()


def _norm_noun(value: Any, where: str) -> str:

    if not isinstance(value, str) or not value.strip():
        raise LLMOutputError(f"{where}={value!r} must be a non-empty noun")
    return singular(" ".join(value.lower().split()))


def _prompt_words(prompt: str) -> str:

    words = re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", prompt.lower())
    return " " + " ".join(singular(w) for w in words) + " "


def spec_from_llm_text(
    text: str, prompt: str, *, require_nouns_in_prompt: bool = True, open_vocab: bool = False
) -> Spec:
    """Validate an LLM answer against the spec schema and build the spec for ``prompt``.

    Args:
        text: The model's raw answer (it may hold prose or code fences around the JSON object).
        prompt: The prompt it was asked to decompose (becomes ``spec.prompt``).
        require_nouns_in_prompt: Reject nouns that do not occur in the prompt (singular or plural).
        open_vocab: Keep words outside SceneSim's vocabulary as the open spec (see the module docstring);
            when False they are errors.

    Raises:
        LLMOutputError: naming the first problem found.
    """
    obj = extract_json_object(text)
    open_attrs: list[list[Any]] = []
    open_rels: list[list[Any]] = []
    unexpressed: list[str] = []
    unknown = sorted(set(obj) - _TOP_KEYS)
    if unknown:
        raise LLMOutputError(f"unknown keys {unknown}; allowed: {sorted(_TOP_KEYS)}")
    include = obj.get("include")
    if not isinstance(include, list) or not include:
        raise LLMOutputError(f"'include'={include!r} must be a non-empty list of object groups")
    words = _prompt_words(prompt)
    meta: dict[str, Any] = {"prompt": prompt, "include": []}
    nouns: list[str] = []
    n = len(include)
    for i, item in enumerate(include):
        if not isinstance(item, Mapping):
            raise LLMOutputError(f"include[{i}]={item!r} must be an object with 'class' and 'count'")
        bad = sorted(set(item) - _ITEM_KEYS)
        if bad:
            raise LLMOutputError(f"include[{i}] has unknown keys {bad}; allowed: {sorted(_ITEM_KEYS)}")
        noun = _norm_noun(item.get("class"), f"include[{i}].class")
        nouns.append(noun)
        rec: dict[str, Any] = {"class": noun, "count": _check_int(item.get("count", 1), f"include[{i}].count", 1, 10)}
        for key, choices in (("color", COLORS), ("pattern", PATTERNS), ("size", SIZES)):
            raw = item.get(key)
            if open_vocab and isinstance(raw, str) and raw.strip().lower() not in choices:
                open_attrs.append([i, _open_word(raw, f"include[{i}].{key}")])
                continue
            v = _check_vocab(raw, f"include[{i}].{key}", choices)
            if v is not None:
                rec[key] = v
        attrs = item.get("attributes") or []
        if not isinstance(attrs, list):
            raise LLMOutputError(f"include[{i}].attributes={attrs!r} must be a list of words")
        for k, a in enumerate(attrs):
            word = _open_word(a, f"include[{i}].attributes[{k}]")
            if not open_vocab:
                raise LLMOutputError(f"include[{i}].attributes[{k}]={a!r}: open attributes need open_vocab=True")
            for key, choices in (("color", COLORS), ("pattern", PATTERNS), ("size", SIZES)):
                if word in choices and key not in rec:
                    rec[key] = word  # a closed word listed as an attribute goes where it belongs
                    break
            else:
                if word not in COLORS and word not in PATTERNS and word not in SIZES:
                    open_attrs.append([i, word])
        pos = item.get("position")
        if pos:
            if not isinstance(pos, (list, tuple)) or len(pos) != 2:
                raise LLMOutputError(f"include[{i}].position={pos!r} must be [relation, reference index]")
            ref = _check_int(pos[1], f"include[{i}].position[1]", 0, n - 1)
            if ref == i:
                raise LLMOutputError(f"include[{i}].position refers to the group itself")
            if open_vocab and isinstance(pos[0], str) and pos[0].strip().lower() not in RELATIONS:
                open_rels.append([i, _open_word(pos[0], f"include[{i}].position[0]"), ref])
            else:
                rel = _check_vocab(pos[0], f"include[{i}].position[0]", RELATIONS)
                rec["position"] = [rel, ref]
        meta["include"].append(rec)
    exclude = obj.get("exclude") or []
    if not isinstance(exclude, list):
        raise LLMOutputError(f"'exclude'={exclude!r} must be a list")
    meta["exclude"] = []
    for k, x in enumerate(exclude):
        if not isinstance(x, Mapping) or sorted(set(x) - _EXCLUDE_KEYS):
            raise LLMOutputError(f"exclude[{k}]={x!r} must be {{'class': noun, 'count': integer}}")
        noun = _norm_noun(x.get("class"), f"exclude[{k}].class")
        nouns.append(noun)
        meta["exclude"].append({"class": noun, "count": _check_int(x.get("count", 1), f"exclude[{k}].count", 1, 11)})
    relations = obj.get("relations") or []
    if not isinstance(relations, list):
        raise LLMOutputError(f"'relations'={relations!r} must be a list of [subject, relation, reference]")
    meta["relations"] = []
    for j, r in enumerate(relations):
        if not isinstance(r, (list, tuple)) or len(r) != 3:
            raise LLMOutputError(f"relations[{j}]={r!r} must be [subject index, relation, reference index]")
        s = _check_int(r[0], f"relations[{j}][0]", 0, n - 1)
        ref = _check_int(r[2], f"relations[{j}][2]", 0, n - 1)
        if s == ref:
            raise LLMOutputError(f"relations[{j}] relates group {s} to itself")
        if open_vocab and isinstance(r[1], str) and r[1].strip().lower() not in RELATIONS:
            open_rels.append([s, _open_word(r[1], f"relations[{j}][1]"), ref])
            continue
        meta["relations"].append([s, _check_vocab(r[1], f"relations[{j}][1]", RELATIONS), ref])
    for key, choices in (("background", BACKGROUNDS), ("style", STYLES)):
        raw = obj.get(key)
        if open_vocab and isinstance(raw, str) and raw.strip().lower() not in choices:
            unexpressed.append(f"{key}: {_open_word(raw, key)}")
            continue
        v = _check_vocab(raw, key, choices)
        if v is not None:
            meta[key] = v
    for k, u in enumerate(obj.get("unexpressed") or []):
        if not isinstance(u, str):
            raise LLMOutputError(f"unexpressed[{k}]={u!r} must be a string")
        unexpressed.append(u)
    if open_attrs:
        meta["attributes"] = open_attrs
    if open_rels:
        meta["open_relations"] = open_rels
    if unexpressed:
        meta["unexpressed"] = unexpressed
    tag = obj.get("tag")
    if isinstance(tag, str) and tag:
        meta["tag"] = tag
    if require_nouns_in_prompt:
        missing = [w for w in nouns if f" {w} " not in words]
        if missing:
            raise LLMOutputError(f"nouns {missing} do not occur in the prompt {prompt!r} (invented objects)")
    _check_schema(obj)
    try:
        return Spec.from_geneval(meta)
    except (SpecError, TypeError, ValueError) as exc:
        raise LLMOutputError(f"the JSON is not a valid spec: {exc}") from exc


class LLMDecomposer(HFModel):
    """Decomposer whose ``parse`` asks a causal LLM for the spec, with the rule parser as fallback.

    Args:
        model: Local folder or hub id of an ``AutoModelForCausalLM`` (with its tokenizer).
        **options: ``device`` (torch device, default ``"cpu"``), ``dtype`` (``"float32"`` default,
            ``"float16"``, ``"bfloat16"``, ``"auto"`` or a ``torch.dtype``), ``local_files_only`` (never touch
            the network, default True), ``trust_remote_code`` (default False); see :class:`poser_env.core.hf.HFModel`.
        max_new_tokens: Most tokens generated per prompt, >= 1 (default 384).
        fallback: When True (default) invalid output falls back to the rule parser; when False it raises
            :class:`LLMOutputError`.
        require_nouns_in_prompt: Reject specs naming objects absent from the prompt (default True).
        system_prompt: Instructions given to the model (default :data:`SYSTEM_PROMPT`).
        few_shot: (prompt, answer) examples shown before the prompt (default :data:`FEW_SHOT`).
        open_vocab: Keep attributes and relations outside SceneSim's vocabulary as the open spec (default
            True; SceneSim refuses such specs by name, see :meth:`poser_env.core.spec.Spec.require_closed`).
        cache_size: Raw answers remembered per prompt (greedy decoding is deterministic), >= 0 (default 256).
        rules: The decomposer that plans, revises and provides the fallback parse; None uses
            :func:`poser_env.core.parser.parse` for the fallback and builds
            :class:`poser_env.decomposer.RuleDecomposer` on the first ``plan``/``revise``.

    Attributes:
        last_fallback_reason: Why the last ``parse`` fell back to the rules (None when the LLM's spec was used).
        last_output: The model's raw answer for the last ``parse``.
    """

    name = "llm"
    preprocessor_class = "AutoTokenizer"
    model_class = "AutoModelForCausalLM"
    model_role = "LLM decomposer model"
    load_error = OSError

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        max_new_tokens: int = 384,
        fallback: bool = True,
        require_nouns_in_prompt: bool = True,
        system_prompt: str = SYSTEM_PROMPT,
        few_shot: Sequence[tuple[str, str]] = FEW_SHOT,
        open_vocab: bool = True,
        cache_size: int = 256,
        rules: Any = None,
        **options: Unpack[HFOptions],
    ) -> None:
        super().__init__(model, **options)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 1, e.g. 384.")
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size={cache_size!r} must be an int >= 0 (0 disables the cache).")
        self.max_new_tokens = max_new_tokens
        self.fallback = bool(fallback)
        self.require_nouns_in_prompt = bool(require_nouns_in_prompt)
        self.system_prompt = system_prompt
        self.few_shot = tuple((str(p), str(a)) for p, a in few_shot)
        self.open_vocab = bool(open_vocab)
        self.cache_size = cache_size
        self._rules = rules
        self._tokenizer: Any = None
        self._cache: LRUCache[str, str] = LRUCache(cache_size)
        self.last_fallback_reason: str | None = None
        self.last_output: str | None = None

    @property
    def rules(self) -> Any:
        """The rule decomposer used for planning, revising and the fallback parse."""
        if self._rules is None:

            self._rules = RuleDecomposer()
        return self._rules

    def _fallback_parse(self, prompt: str) -> Spec:
        if self._rules is not None:
            return self._rules.parse(prompt)  # type: ignore[no-any-return]

        return parse(prompt)

    def _accept(self, preprocessor: Any, model: Any) -> None:
        self._tokenizer = preprocessor

    def prompt_text(self, prompt: str) -> str:
        """The full model input for ``prompt`` (chat template, or a plain format when it has none)."""
        self.load()
        user = f"Description: {prompt}\nJSON:"
        if getattr(self._tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": self.system_prompt}]
            for ex_prompt, ex_answer in self.few_shot:
                messages += [{"role": "user", "content": f"Description: {ex_prompt}\nJSON:"},
                             {"role": "assistant", "content": ex_answer}]
            messages.append({"role": "user", "content": user})
            return str(self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        shots = "".join(f"Description: {p}\nJSON: {a}\n\n" for p, a in self.few_shot)
        return f"{self.system_prompt}\n\n{shots}{user}"

    def generate(self, prompt: str) -> str:
        """The model's raw (greedy) answer for ``prompt``."""
        import torch

        text = self.prompt_text(prompt)
        tok = self._tokenizer
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            ids = self._model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        return str(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)).strip()

    def parse_output(self, text: str, prompt: str) -> Spec:
        """Turn a raw answer into a spec, falling back to the rules (reason recorded) when it is invalid.

        Raises:
            LLMOutputError: invalid output and ``fallback=False``.
            poser_env.core.parser.ParseError: the fallback rule parser cannot use the prompt either.
        """
        self.last_output = text
        try:
            spec = spec_from_llm_text(text, prompt, require_nouns_in_prompt=self.require_nouns_in_prompt,
                                      open_vocab=self.open_vocab)
        except LLMOutputError as exc:
            if not self.fallback:
                raise
            self.last_fallback_reason = str(exc)
            spec = self._fallback_parse(prompt)
            return replace(spec, metadata={**dict(spec.metadata), "decomposer": "rules-fallback",
                                           "prompt_version": PROMPT_VERSION,
                                           "fallback_reason": str(exc), "llm_output": text})
        self.last_fallback_reason = None
        return replace(spec, metadata={**dict(spec.metadata), "decomposer": "llm", "llm_output": text,
                                       "prompt_version": PROMPT_VERSION})

    def parse(self, prompt: str) -> Spec:
        """Decompose ``prompt`` into a spec (see the module docstring)."""
        prompt = clean_prompt(prompt)  # not a string, empty or too long: a ParseError naming the fix
        cached = self._cache.get(prompt)
        if cached is not None:
            return self.parse_output(cached, prompt)
        text = self.generate(prompt)
        spec = self.parse_output(text, prompt)
        self._cache.put(prompt, text)
        return spec

    def plan(self, spec: Spec) -> Plan:
        """The initial plan for ``spec`` (delegated to the rule decomposer's planner)."""
        return self.rules.plan(spec)  # type: ignore[no-any-return]

    def revise(self, plan: Plan, feedback: Feedback, *, executed: bool = True) -> Plan:
        """``plan`` revised from ``feedback`` (delegated to the rule decomposer's planner)."""
        return self.rules.revise(plan, feedback, executed=executed)  # type: ignore[no-any-return]

    def current(self, plan: Plan) -> Command | None:
        """The command to run now, or None when the plan is finished (delegated)."""
        return self.rules.current(plan)  # type: ignore[no-any-return]
