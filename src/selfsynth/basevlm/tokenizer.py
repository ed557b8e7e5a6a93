"""Train the embedded base VLM's byte-level BPE tokenizer and give it a ChatML chat template.

Byte-level BPE can spell any string, so a name the base model never saw in training (a species
name that only the fine-tuning data contains) still tokenizes. The merges are trained on world
text plus many made-up, species-like names (``corpus.tokenizer_corpus``), so a real name
splits into name-like pieces that the model has learned to read and copy.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # end of a turn, and the model's EOS
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, IMAGE_TOKEN)

# ChatML, with images placed where the message lists them (LLaVA puts the image first).
# ``content`` may be a plain string or a list of {"type": "image"} / {"type": "text"} items.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def render_prompt(question: str, *, image: bool = True) -> str:
    """The text the chat template renders for one user turn plus the assistant header.

    The pretraining loop formats its examples with this instead of running Jinja per example;
    a unit test checks it equals ``apply_chat_template``'s output.
    """
    body = (IMAGE_TOKEN + "\n" if image else "") + question
    return f"{IM_START}user\n{body}{IM_END}\n{IM_START}assistant\n"


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 2048, min_frequency: int = 2, model_max_length: int = 1024
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE merges on ``texts`` and wrap them as a transformers tokenizer.

    Padding is on the left, as batched generation needs; training code that pads itself is free
    to pad either side.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok, model_max_length=model_max_length)


def wrap_tokenizer(tok, *, model_max_length: int = 1024) -> PreTrainedTokenizerFast:  # noqa: ANN001
    """A ``tokenizers.Tokenizer`` with our special tokens -> a saved-and-reloadable HF tokenizer."""
    for t in SPECIAL_TOKENS:
        if tok.token_to_id(t) is None:
            raise ValueError(f"tokenizer lacks the special token {t}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=model_max_length,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
