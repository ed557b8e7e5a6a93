"""Build tiny random image-text-to-text models (LLaVA, Qwen2-VL, Idefics3) in-process for tests.

Each builder writes a complete model directory (config, random weights, processor with a chat
template, tokenizer) that ``VLM.load`` reads like any real checkpoint, so the tests exercise the
same loading path as a 7B model, in well under a second. The tokenizer is a byte-level BPE trained
here on a few sentences: nothing is fetched from a hub. ``tiny_families`` adds Qwen2.5-VL, Gemma 3,
LLaVA-OneVision and InternVL to ``BUILDERS`` when imported.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsynth.models.processors import build_without_video, save_processor

WORDS = (
    "a small bird with a red crown and white wing bars perched on a branch . "
    "the beak is short and black , the tail is long and forked . "
    "what is the name of this bird ? describe the image . explain why . "
    "this is a picture of a finch sparrow warbler robin with blue green yellow brown feathers"
)

LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% if m['role'] == 'user' %} {% else %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

SPECIALS = (
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<image>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
)


@functools.lru_cache(maxsize=1)
def _bpe_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([WORDS, "USER: ASSISTANT: User: Assistant: user assistant"] * 4, trainer)
    return tok.to_str()


def make_tokenizer(
    eos: str = "</s>", *, bos: str = "<s>", extra: dict[str, str] | None = None, more: tuple[str, ...] = ()
):
    """A byte-level BPE tokenizer (~360 tokens) with the special tokens all three families need.

    ``extra`` adds named special tokens (``tok.boi_token`` and ``tok.boi_token_id`` for
    ``{"boi_token": "<start_of_image>"}``), as a real family's tokenizer_config.json does;
    ``more`` adds unnamed ones. Tokens not in the base vocabulary get new ids.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_bpe_json()),
        bos_token=bos,
        eos_token=eos,
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=dict(extra or {}),
    )
    if more:
        tok.add_tokens(list(more), special_tokens=True)
    return tok


def text_config(vocab: int, tok) -> dict:
    """A 2-layer, 32-wide decoder config (kwargs) with ``tok``'s special ids."""
    return dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )


def build_llava(
    out: str | Path,
    seed: int = 0,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    hidden: int = 32,
    layers: int = 2,
) -> Path:
    """Tiny LLaVA: 2-layer CLIP tower (32 px, 8 px patches -> 16 image tokens) + 2-layer Llama.

    The keyword arguments make bigger variants for benchmarks (e.g. 576 image tokens like LLaVA-1.5).
    """
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = make_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    text = LlamaConfig(
        **{
            **text_config(len(tok), tok),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "max_position_embeddings": 4096,
        }
    )
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return save_model(LlavaForConditionalGeneration, cfg, proc, out, seed)


def qwen_tokenizer_and_text():
    """The tokenizer and text config every tiny Qwen-VL shares (ChatML, M-RoPE over 4 + 2 + 2 dims)."""
    tok = make_tokenizer(eos="<|im_end|>")
    text = text_config(len(tok), tok)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}
    return tok, text


def save_qwen_family(
    config_cls, model_cls, processor_cls, tok, text: dict, vision: dict, out, seed: int
) -> Path:
    """Config, 32 px image processor (4 px patches, 2x2 merge) and processor of a Qwen-VL family, saved."""
    from transformers import Qwen2VLImageProcessorPil

    ids = tok.convert_tokens_to_ids
    cfg = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    image_proc = Qwen2VLImageProcessorPil(
        patch_size=4,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 16 * 16, "longest_edge": 32 * 32},
    )
    # No torchvision here, so no video processor: the same fallback the backend uses when loading.
    proc = build_without_video(processor_cls, image_proc, tok, chat_template=QWEN_TEMPLATE)
    return save_model(model_cls, cfg, proc, out, seed)


def build_qwen2vl(out: str | Path, seed: int = 0) -> Path:
    """Tiny Qwen2-VL: 2-block ViT (4 px patches, 2x2 merge: a 32 px image gives 16 tokens) + 2-layer Qwen2."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok, text = qwen_tokenizer_and_text()
    vision = dict(
        depth=2,
        embed_dim=32,
        hidden_size=32,
        num_heads=2,
        mlp_ratio=2,
        patch_size=4,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
    )
    return save_qwen_family(
        Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, tok, text, vision, out, seed
    )


def build_idefics3(out: str | Path, seed: int = 0) -> Path:
    """Tiny Idefics3: 2-layer SigLIP-style tower (32 px, 8 px patches, scale 2 -> 4 image tokens) + Llama."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tok = make_tokenizer(eos="<end_of_utterance>")
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    text = LlamaConfig(**text_config(len(tok), tok))
    cfg = Idefics3Config(
        vision_config=vision,
        text_config=text,
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    image_proc = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    proc = Idefics3Processor(
        image_processor=image_proc, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS_TEMPLATE
    )
    return save_model(Idefics3ForConditionalGeneration, cfg, proc, out, seed)


def save_model(model_cls, cfg, proc, out: str | Path, seed: int, eos_ids: list[int] | None = None) -> Path:
    """Random weights for ``cfg`` (seeded) saved with ``proc``; ``eos_ids`` go to generation_config.json."""
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    if eos_ids is not None:
        model.generation_config.eos_token_id = eos_ids
    out = Path(out)
    model.save_pretrained(out)
    save_processor(proc, out)
    return out


BUILDERS = {"llava": build_llava, "qwen2vl": build_qwen2vl, "idefics3": build_idefics3}


def make_images(folder: str | Path, n: int, size: int = 32, seed: int = 0) -> list[Path]:
    """``n`` random RGB PNGs of different content (and a few different sizes to test resizing)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        side = size + 8 * (i % 3)
        arr = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        p = folder / f"img{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


_BUILT: dict[str, Path] = {}


def tiny_model(kind: str, root: str | Path) -> Path:
    """The tiny ``kind`` model directory, built once per test session under ``root``."""
    if kind not in _BUILT:
        _BUILT[kind] = BUILDERS[kind](Path(root) / kind)
    return _BUILT[kind]


def tiny_finetune_config(**overrides):
    """LoRA settings for the tiny models: one epoch of r-4 LoRA, fp32 so results compare exactly."""
    from selfsynth.config import FinetuneConfig

    base = dict(
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lr=1e-2,
        epochs=1.0,
        batch_size=6,
        micro_batch_size=3,
        augment=False,
        warmup_ratio=0.0,
        max_length=256,
        cpu_precision="fp32",
    )
    return FinetuneConfig(**{**base, **overrides})
