"""Tiny random Qwen2.5-VL, Gemma 3, LLaVA-OneVision and InternVL models, built in-process for tests.

Each builder mirrors its family's real checkpoint layout where the backend depends on it: the
chat template's shape, the special tokens the processor looks up on the tokenizer, and (for
Gemma 3) a tokenizer EOS that differs from the end-of-turn token generation stops at. Importing
this module adds the builders to ``tiny_models.BUILDERS``, so ``tiny_model("gemma3", root)`` works.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import (
    BUILDERS,
    make_tokenizer,
    qwen_tokenizer_and_text,
    save_model,
    save_qwen_family,
    text_config,
)

from selfsynth.models.processors import build_without_video

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] | trim }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}{{ c['text'] | trim }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# ChatML with a placeholder the processor expands ("<image>" for OneVision, "<IMG_CONTEXT>" for InternVL).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}IMAGE\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen25vl(out: str | Path, seed: int = 0) -> Path:
    """Tiny Qwen2.5-VL: 2-block windowed ViT (4 px patches, 2x2 merge, one full-attention block) + Qwen2."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok, text = qwen_tokenizer_and_text()
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=32,
        patch_size=4,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=16,  # 2 x 2 merged patches per window: a 32 px image has 4 windows
        fullatt_block_indexes=[1],
    )
    return save_qwen_family(
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        tok,
        text,
        vision,
        out,
        seed,
    )


def build_gemma3(out: str | Path, seed: int = 0) -> Path:
    """Tiny Gemma 3: 2-layer SigLIP (32 px, 8 px patches, pooled to 4 tokens) + 2-layer Gemma 3 text model.

    As in the real checkpoints, the tokenizer's EOS is ``<eos>`` while turns end with
    ``<end_of_turn>``, which ``generation_config.json`` lists as a second EOS; one of the two
    layers is sliding-window attention with a window shorter than the prompt.
    """
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tok = make_tokenizer(
        bos="<bos>",
        eos="<eos>",
        extra={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        more=("<start_of_turn>", "<end_of_turn>"),
    )
    ids = tok.convert_tokens_to_ids
    end_of_turn = ids("<end_of_turn>")
    text = Gemma3TextConfig(
        **{**text_config(len(tok), tok), "eos_token_id": [tok.eos_token_id, end_of_turn]},
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
    )
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    cfg = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    proc = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tok,
        image_seq_length=4,
        chat_template=GEMMA3_TEMPLATE,
    )
    return save_model(
        Gemma3ForConditionalGeneration, cfg, proc, out, seed, eos_ids=[tok.eos_token_id, end_of_turn]
    )


def build_llava_onevision(out: str | Path, seed: int = 0) -> Path:
    """Tiny LLaVA-OneVision: SigLIP (32 px, 8 px patches) with any-resolution tiling + 2-layer Qwen2.

    Images of different shapes get different numbers of tiles and of image tokens.
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tok = make_tokenizer(eos="<|im_end|>", more=("<video>",))
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    cfg = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=Qwen2Config(**text_config(len(tok), tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    image_proc = LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    )
    proc = build_without_video(
        LlavaOnevisionProcessor,
        image_proc,
        tok,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=CHATML_TEMPLATE.replace("IMAGE", "<image>"),
    )
    return save_model(LlavaOnevisionForConditionalGeneration, cfg, proc, out, seed)


def build_internvl(out: str | Path, seed: int = 0) -> Path:
    """Tiny InternVL: 2-layer InternViT (32 px tiles, 8 px patches, pixel shuffle -> 4 tokens a tile) + Qwen2.

    Dynamic tiling is on (up to 2 tiles plus a thumbnail), so wide images get more tiles.
    """
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    tok = make_tokenizer(
        eos="<|im_end|>",
        extra={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    vision = InternVLVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    cfg = InternVLConfig(
        vision_config=vision,
        text_config=Qwen2Config(**text_config(len(tok), tok)),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    image_proc = GotOcr2ImageProcessorPil(
        size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1, max_patches=2
    )
    proc = build_without_video(
        InternVLProcessor,
        image_proc,
        tok,
        image_seq_length=4,
        chat_template=CHATML_TEMPLATE.replace("IMAGE", "<IMG_CONTEXT>"),
    )
    return save_model(InternVLForConditionalGeneration, cfg, proc, out, seed)


FAMILY_BUILDERS = {
    "qwen25vl": build_qwen25vl,
    "gemma3": build_gemma3,
    "llava_onevision": build_llava_onevision,
    "internvl": build_internvl,
}
BUILDERS.update(FAMILY_BUILDERS)
