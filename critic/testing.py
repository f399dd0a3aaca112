# mypy: disable-error-code="call-arg,attr-defined,assignment,arg-type"
"""Tiny random transformers models built in code, for tests (no downloads).

Each ``save_tiny_*`` builder creates a random model with tiny sizes, a word-level tokenizer built with the
``tokenizers`` library (wrapped in :class:`transformers.PreTrainedTokenizerFast`), a simple chat template and a
PIL-backend image processor configured in code, saves everything with ``save_pretrained(folder)`` and
returns the folder, so tests load them back through the real ``from_pretrained(folder)`` path.

Builders are deterministic (``torch.manual_seed``) so the same seed gives the same weights.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

#: Chat template shared by the tiny models: handles string content and content lists with
#: ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` items (the format processors use).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|> "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image> {% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    " <|end|> "
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

#: Words every tiny vocabulary holds (the yes/no variants the VLM critic scores, and prompt words).
BASE_WORDS: tuple[str, ...] = (
    "yes", "Yes", "no", "No",
    "is", "it", "true", "that", "the", "a", "an", "there", "are", "answer", "Answer", "or", "of",
    "Is", "dog", "cat", "clock", "clocks", "cup", "teddy", "bear", "red", "blue", "green", "left", "right",
    "above", "below", "two", "three", "background", "style", "image", "this", "free", "visual", "artifacts",
    "and", "distortions", "well", "composed", "pleasing", "Describe", "photo", "of", "sky", "fewer", "than",
    "{", "}", "[", "]", ":", ",", '"', "include", "class", "count", "color", "?", ".", "1", "2",
)
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<unk>", "<s>", "</s>", "<image>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
)
IDEFICS3_SPECIAL: tuple[str, ...] = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>")


def build_tokenizer(words: tuple[str, ...] = BASE_WORDS, *, extra_special: tuple[str, ...] = (),
                    chat_template: str | None = CHAT_TEMPLATE, wrap_bos_eos: bool = False,
                    fuse_decode: bool = False) -> Any:
    """A word-level fast tokenizer over ``words`` plus :data:`SPECIAL_TOKENS` (and ``extra_special``).

    Unknown words map to ``<unk>``; whitespace and punctuation split words. ``fuse_decode`` decodes by
    concatenating tokens without spaces (so a causal LM can spell compact JSON such as ``{"count":2}``).
    """
    from transformers import PreTrainedTokenizerFast

    specials = (*SPECIAL_TOKENS, *extra_special)
    vocab: dict[str, int] = {}
    for tok in (*specials, *words):
        vocab.setdefault(tok, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if fuse_decode:
        tk.decoder = decoders.Fuse()
    if wrap_bos_eos:  # CLIP-style: "<s> text </s>" (CLIP pools the text at its end token)
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=[t for t in specials if t not in ("<pad>", "<unk>", "<s>", "</s>")],
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    tok.padding_side = "right"
    return tok


def _llama_text_config(vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=False,
    )


def save_tiny_llava(folder: str | Path, *, seed: int = 0, words: tuple[str, ...] = BASE_WORDS) -> Path:
    """Tiny LlavaForConditionalGeneration (CLIP vision tower 16x16 px, patch 8, Llama text) + processor."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    tok = build_tokenizer(words)
    image_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, patch_size=8, projection_dim=16,
    )
    text = _llama_text_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_id,
        vision_feature_select_strategy="default", vision_feature_layer=-1, projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    improc = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(
        image_processor=improc, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_idefics3(folder: str | Path, *, seed: int = 0, words: tuple[str, ...] = BASE_WORDS) -> Path:
    """Tiny Idefics3ForConditionalGeneration (SigLIP-like vision 16x16 px, patch 4, scale 2, Llama text)."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    folder = Path(folder)
    tok = build_tokenizer(words, extra_special=IDEFICS3_SPECIAL)
    image_id = tok.convert_tokens_to_ids("<image>")
    vision = Idefics3VisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, patch_size=4,
    )
    text = _llama_text_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    config = Idefics3Config(vision_config=vision, text_config=text, image_token_id=image_id, scale_factor=2,
                            pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    improc = Idefics3ImageProcessorPil(
        size={"longest_edge": 16}, max_image_size={"longest_edge": 16}, do_image_splitting=False,
    )
    # image_seq_len = (image_size / patch_size)^2 / scale_factor^2 = 16 / 4 = 4
    processor = Idefics3Processor(image_processor=improc, tokenizer=tok, image_seq_len=4, chat_template=CHAT_TEMPLATE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_paligemma(folder: str | Path, *, seed: int = 0, words: tuple[str, ...] = BASE_WORDS) -> Path:
    """Tiny PaliGemmaForConditionalGeneration (SigLIP vision 16x16 px, patch 8, Gemma text), no chat template.

    Like the real checkpoints it has no chat template: prompt it with ``"<image>answer en {question}"``.
    """
    import torch
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    folder = Path(folder)
    tok = build_tokenizer(words, chat_template=None)
    improc = SiglipImageProcessorPil(size={"height": 16, "width": 16})
    improc.image_seq_length = 4  # (16 / 8)^2 patches
    processor = PaliGemmaProcessor(image_processor=improc, tokenizer=tok)  # adds <image> and loc/seg tokens
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, patch_size=8, projection_dim=32,
    )
    text = GemmaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = PaliGemmaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=processor.image_token_id,
        projection_dim=32, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_clip(folder: str | Path, *, seed: int = 0, words: tuple[str, ...] = BASE_WORDS) -> Path:
    """Tiny CLIPModel (16x16 px, patch 8, projection 16) + CLIPProcessor with a word-level tokenizer."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPVisionConfig,
    )

    folder = Path(folder)
    tok = build_tokenizer(words, chat_template=None, wrap_bos_eos=True)
    text = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=64, projection_dim=16, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, patch_size=8, projection_dim=16,
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    improc = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = CLIPProcessor(image_processor=improc, tokenizer=tok)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_llama(folder: str | Path, *, seed: int = 0, words: tuple[str, ...] = BASE_WORDS) -> Path:
    """Tiny LlamaForCausalLM + tokenizer with a chat template (for the LLM decomposer's loading path).

    Its tokenizer decodes without spaces between tokens, so scripted logits can make it write JSON.
    """
    import torch
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    tok = build_tokenizer(words, fuse_decode=True)
    config = _llama_text_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def scripted_output(decomposer: Any, answer: str) -> Iterator[list[int]]:
    """Force a loaded :class:`~poser_env.llm.LLMDecomposer` built on :func:`save_tiny_llama` to write ``answer``:
    a forward hook on the output embeddings makes each step's logits pick the next scripted token (one token per
    word or punctuation mark, then EOS). Yields the scripted token ids; the hook is removed on exit.

    Raises:
        ValueError: a word of ``answer`` is not in the tiny vocabulary.
    """
    import torch

    tok = decomposer._tokenizer
    script = [*tok.convert_tokens_to_ids(re.findall(r"\w+|[^\w\s]", answer)), tok.eos_token_id]
    if tok.unk_token_id in script:
        raise ValueError(f"answer={answer!r} has a token outside the tiny vocabulary; use words of BASE_WORDS.")
    step = {"n": 0}

    def hook(_mod: Any, _inp: Any, out: Any) -> Any:
        new = torch.full_like(out, -1e4)
        new[:, -1, script[min(step["n"], len(script) - 1)]] = 0.0
        step["n"] += 1
        return new

    handle = decomposer._model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield script
    finally:
        handle.remove()


def save_tiny_owlv2(folder: str | Path, *, seed: int = 0, words: tuple[str, ...] = BASE_WORDS,
                    image_size: int = 32) -> Path:
    """Tiny Owlv2ForObjectDetection (ViT ``image_size`` px, patch 8 -> (image_size/8)^2 boxes; 16-token texts)
    + Owlv2Processor (PIL image processor padding to a square and resizing to ``image_size``, word tokenizer)."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    folder = Path(folder)
    tok = build_tokenizer(words, chat_template=None, wrap_bos_eos=True)
    tok.model_max_length = 16  # the processor pads texts to max_length = the text model's positions
    config = Owlv2Config(
        text_config=dict(
            vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        ),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    improc = Owlv2ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Owlv2Processor(image_processor=improc, tokenizer=tok)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
