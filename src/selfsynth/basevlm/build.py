"""Build, pretrain and cache the embedded base VLM: LLaVA with a frozen EfficientNet-Lite0 tower.

What ``selfsynth base build`` and ``ensure_base_model`` produce is a standard Hugging Face LLaVA
checkpoint: ``LlavaForConditionalGeneration`` (tower: ``selfsynth_efficientnet``; projector;
a small Llama decoder trained from scratch), a byte-level BPE tokenizer with a ChatML template,
and a ``LlavaProcessor`` whose image processor needs no torchvision. It loads with plain
``AutoModelForImageTextToText.from_pretrained(dir)`` / ``AutoProcessor.from_pretrained(dir)``
after ``import selfsynth``.

The build draws its own pretraining world (seeds apart from every task world; many species with
few images each, so part values vary independently), trains the tokenizer, encodes every image
once with the frozen tower, pretrains projector + decoder on generic captions, VQA and
label-use drills that never name a species (``corpus``; an auxiliary part probe speeds up
grounding, ``probe``), and writes ``build_manifest.json`` last: its presence with a
matching fingerprint means "done", so a second call returns at once. Work in progress lives in
``DIR/_work`` (checkpoints every few hundred steps) so a killed build resumes; it is removed
when the build is done.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfsynth.cache import default_cache_root
from selfsynth.errors import ConfigError
from selfsynth.io import fingerprint, read_json, write_json
from selfsynth.runs import hashed_settings

logger = logging.getLogger(__name__)

MANIFEST = "build_manifest.json"
# Bump when a code change alters what a build produces, so cached builds are not reused.
BUILD_VERSION = 8
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class BaseSettings:
    """Everything that decides the built model (all of it goes into the fingerprint)."""

    seed: int = 0
    # pretraining world: its own seeds, never the task world's (0/0) nor the eval world's.
    # Many species with few images each: part values vary independently, so the model learns
    # parts rather than a handful of whole-species templates.
    species: int = 400
    train_per_class: int = 10
    species_seed: int = 1001
    image_seed: int = 1002
    image_size: int = 128  # of the pretraining world's images
    # The tower sees each image resized to tower_size and pools its maps to token_grid x
    # token_grid tokens; upsampling brings small parts (an eye ring) to the scale ImageNet
    # filters respond to, without adding tokens.
    tower_size: int = 256
    token_grid: int = 4
    fine_features: bool = True  # tower tokens also carry the stride-16 map (see tower.py)
    normalize_features: bool = True  # standardised tower tokens (see tower.py)
    colour_cells: int = 4  # mean pixel colour of 4 x 4 cells per token (see tower.py)
    # tokenizer: world text plus concept phrases of this many species seeds (and made-up names)
    vocab_size: int = 2048
    concept_seeds: int = 12
    # decoder (Llama), trained from scratch
    hidden_size: int = 192
    layers: int = 4
    heads: int = 3
    intermediate_size: int = 512
    max_positions: int = 1024
    # pretraining: first text-only copy drills, then images; the copy skill has appeared by 650
    # text steps, and later steps are better spent on images
    text_steps: int = 650
    text_mix: int = 0  # text-only copy-drill rows added to every image step
    # rows per text-only step (0: batch_size); smaller batches are cheaper but leave the copy
    # skill weaker
    text_batch_size: int = 0
    # image steps: descriptions keep improving well past 1,000, and 1,500 fits the build time
    # that the shorter text phase freed
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 30
    part_loss: float = 1.0  # auxiliary part probe on the projector output (see probe.py)
    # the probe reads part values with linear heads ("linear") or as the decoder's value words
    # ("words", see probe.PartProbe), which the decoder learns to read far sooner
    probe_readout: str = "words"
    # the probe also reads pose, facing and background (``corpus.part_targets_for``)
    probe_scene: bool = True
    # targets of the describe prompts: "captions" uses the world's full caption styles,
    # "clauses" names each part before its value ("its crown is red",
    # ``world.text.clause_caption``)
    describe_targets: str = "captions"
    # attention of the decoder while pretraining: eager is faster than SDPA on CPU at these
    # sizes (see devices.attention_for) but makes another model at float level; the saved
    # model loads with either
    attention: str = "eager"
    checkpoint_every: int = 200
    # bf16 autocast for pretraining and for encoding its images where the CPU has native bf16
    # matmuls ("auto"; see pretrain.TrainSettings); "fp32" gives the same build on every
    # machine, at more time
    cpu_precision: str = "auto"

    def fingerprint(self) -> str:
        return fingerprint({"version": BUILD_VERSION, **hashed_settings(self, _UNHASHED_DEFAULTS)})


# Settings left out of the fingerprint at these values, because the default build's fingerprint
# (and so its cache folder, ``base-<fingerprint>``) was computed without them.
_UNHASHED_DEFAULTS: dict[str, Any] = {"text_batch_size": 0, "describe_targets": "captions"}


def settings_from(**overrides: Any) -> BaseSettings:
    """``BaseSettings`` with keyword overrides; an unknown name is a ConfigError with the valid ones."""
    names = {f.name for f in dataclasses.fields(BaseSettings)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ConfigError(
            f"unknown base-model setting(s) {', '.join(bad)}; valid: {', '.join(sorted(names))}"
        )
    # checked here, not where each is used: a wrong value would otherwise surface only after
    # the world, tokenizer and image encoding (minutes) are done
    for name, allowed in SETTING_CHOICES.items():
        if name in overrides and overrides[name] not in allowed:
            raise ConfigError(
                f"base-model setting {name}={overrides[name]!r}: choose one of {', '.join(allowed)}"
            )
    return BaseSettings(**overrides)


# settings with a fixed set of values (the command line offers the same choices)
SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "describe_targets": ("captions", "clauses"),
    "attention": ("sdpa", "eager"),
    "probe_readout": ("linear", "words"),
}


def is_built(out: str | Path, settings: BaseSettings | None = None) -> bool:
    """True when ``out`` holds a finished build (of ``settings``, when given)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return False
    if settings is None:
        return True
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint") == settings.fingerprint()
    except (OSError, json.JSONDecodeError):
        return False


def build_architecture(tokenizer: Any, s: BaseSettings) -> Any:
    """A fresh LLaVA model: pretrained frozen tower, random projector and decoder (seeded)."""
    import torch
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from selfsynth.basevlm.tower_config import EfficientNetTowerConfig

    if s.tower_size % s.token_grid or s.tower_size // s.token_grid < 32:
        raise ConfigError(
            f"tower_size {s.tower_size} must be a multiple of token_grid {s.token_grid} "
            "with at least 32 pixels per token (the tower's stride)"
        )
    vision = EfficientNetTowerConfig(
        image_size=s.tower_size,
        patch_size=s.tower_size // s.token_grid,
        fine_features=s.fine_features,
        normalize=s.normalize_features,
        colour_cells=s.colour_cells,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.heads,
        max_position_embeddings=s.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
        image_seq_length=vision.num_patches,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    torch.manual_seed(s.seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def build_processor(tokenizer: Any, image_size: int, patch_size: int = 32) -> Any:
    """LlavaProcessor: PIL-only resize to ``image_size`` square + ImageNet normalisation."""
    from transformers import LlavaImageProcessorPil, LlavaProcessor

    square = {"height": image_size, "width": image_size}
    image_processor = LlavaImageProcessorPil(
        size=square,
        crop_size=square,
        do_center_crop=False,
        do_pad=False,
        do_resize=True,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
        image_token=tokenizer.image_token,
        num_additional_image_tokens=0,
    )


def ensure_base_model(cache_dir: str | Path | None = None, *, progress: bool = True, **settings: Any) -> Path:
    """The cached base model for ``settings`` (built first if missing): ``<cache>/base-<fingerprint>``."""
    s = settings_from(**settings)
    out = Path(cache_dir) if cache_dir else default_cache_root()
    out = out / f"base-{s.fingerprint()}"
    build_base_model(out, s, progress=progress)
    return out


def build_base_model(
    out: str | Path,
    settings: BaseSettings | None = None,
    *,
    force: bool = False,
    threads: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or resume, or find cached) the base model in ``out``; returns the manifest."""
    import torch

    s = settings or BaseSettings()
    out = Path(out)
    fp = s.fingerprint()
    if is_built(out, s) and not force:
        logger.info("base model in %s is up to date (fingerprint %s)", out, fp)
        return read_json(out / MANIFEST)
    if (out / MANIFEST).is_file() and not force:
        raise ConfigError(
            f"{out} holds a base model built with other settings; pass --force to rebuild it "
            "there or choose another --out"
        )
    if (
        out.exists()
        and any(out.iterdir())
        and not (out / "_work").is_dir()
        and not (out / MANIFEST).is_file()
    ):
        raise ConfigError(
            f"{out} exists and is not a base-model build directory; choose an empty or new --out"
        )
    (out / MANIFEST).unlink(missing_ok=True)
    work = out / "_work"
    _claim_work_dir(work, fp)
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        manifest = _build(out, work, s, progress=progress)
    finally:
        torch.set_num_threads(old_threads)
    write_json(out / MANIFEST, manifest)  # last: its presence means "done"
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _claim_work_dir(work: Path, fp: str) -> None:
    """Keep partial work of the same settings (resume); wipe partial work of other settings."""
    stamp = work / "settings_fingerprint"
    if work.is_dir() and (not stamp.is_file() or stamp.read_text().strip() != fp):
        logger.info("discarding partial work of other settings in %s", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp + "\n")


def _build(out: Path, work: Path, s: BaseSettings, *, progress: bool = True) -> dict[str, Any]:
    import torch

    from selfsynth.basevlm import corpus as base_data
    from selfsynth.basevlm.pretrain import TrainSettings, encode_images, pretrain
    from selfsynth.basevlm.tokenizer import train_tokenizer
    from selfsynth.models.devices import cpu_bf16

    t0 = time.time()
    timings: dict[str, float] = {}
    world = base_data.ensure_world(work / "world", s, progress=progress)
    timings["world_s"] = round(time.time() - t0, 1)

    t = time.time()
    tok_dir = work / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(base_data.tokenizer_corpus(world, s), vocab_size=s.vocab_size)
        tokenizer.save_pretrained(tok_dir)
    timings["tokenizer_s"] = round(time.time() - t, 1)

    model = build_architecture(tokenizer, s)
    model.model.language_model.set_attn_implementation(s.attention)  # the tower has no attention
    processor = build_processor(tokenizer, s.tower_size, model.config.vision_config.patch_size)
    records = base_data.load_records(world)
    # resolved once per workload (measured on this machine under "auto"): the manifest says which
    encode_bf16 = cpu_bf16(s.cpu_precision, "encode")
    bf16 = cpu_bf16(s.cpu_precision, "train")

    t = time.time()
    feats_path = work / "features.pt"
    if feats_path.is_file():
        feats = torch.load(feats_path, weights_only=True)
    else:
        # half precision halves the largest buffer of the build; training casts batches back
        feats = encode_images(
            model,
            processor,
            base_data.LazyImages([r.image for r in records]),
            dtype=torch.float16,
            bf16=encode_bf16,
            progress=progress,
        )
        tmp = feats_path.with_name("features.pt.tmp")
        torch.save(feats, tmp)
        os.replace(tmp, feats_path)
    timings["features_s"] = round(time.time() - t, 1)

    triples = base_data.make_triples(world, records, seed=s.seed, describe_targets=s.describe_targets)
    # the training settings a build exposes carry the same names in both dataclasses
    shared = {f.name for f in dataclasses.fields(TrainSettings)} & {f.name for f in dataclasses.fields(s)}
    train = TrainSettings(**{name: getattr(s, name) for name in shared})
    result = pretrain(
        model,
        tokenizer,
        feats,
        triples,
        train,
        parts=base_data.part_targets_for(records, scene=s.probe_scene),
        text=base_data.text_drills(
            records,
            seed=s.seed,
            n=max(1, s.text_steps * (s.text_batch_size or s.batch_size) + s.steps * s.text_mix),
            avoid=base_data.species_label_set(world),
        ),
        checkpoint=work / "checkpoint.pt",
        progress=progress,
    )
    timings["pretrain_s"] = round(result.seconds, 1)

    from selfsynth.models.precision_probe import machine_key

    model.save_pretrained(out)
    processor.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = n_params - sum(p.numel() for p in model.model.vision_tower.parameters())
    return {
        "kind": "selfsynth-base-vlm",
        "fingerprint": s.fingerprint(),
        "settings": dataclasses.asdict(s),
        "build_version": BUILD_VERSION,
        # "auto" precision resolves per machine, and kernels differ between CPUs: the same
        # settings give another model at float level elsewhere (docs/notes/base-model.md)
        "precision": "bf16" if bf16 else "fp32",
        "encode_precision": "bf16" if encode_bf16 else "fp32",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": machine_key(),  # CPU model, kernel levels (a oneDNN cap included), threads, torch
        "parameters": n_params,
        "trainable_parameters": n_train,
        "images": len(records),
        "examples": len(triples),
        "loss_first": result.losses[0] if result.losses else None,
        "loss_last": result.losses[-1] if result.losses else None,
        "losses": [round(x, 4) for x in result.losses],
        "timings": timings,
        "seconds": round(time.time() - t0, 1),
    }
