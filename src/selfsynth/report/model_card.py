"""The model card (``README.md``) of a merged model: Hugging Face metadata, method, metrics, recipe, use.

The loop writes it into ``round_r/finetune/merged/`` right after the merge and again once that
round is evaluated, and ``selfsynth demo`` into ``final_model/``. It reads only what the run
already holds (``results.json``'s content, the base model's ``README.md`` and ``config.json``),
so writing it costs milliseconds. It is a plain file beside the weights: no stage fingerprint
reads a merged folder's files, and the weights are never touched.

What the card states about the base model it takes from the base model's own folder: the Hub id
from the Hugging Face cache path (``models--org--name``) or ``config.json``'s ``_name_or_path``,
the license from the front matter of its ``README.md``. When the folder does not say,
``base_model`` is left out and the license is ``unknown``, rather than guessed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from selfsynth.io import atomic_write_text

CARD = "README.md"
TAGS = ["selfsynth", "self-synthesized-data", "vision-language", "lora", "fine-grained-classification"]
_HUB_CACHE = re.compile(r"models--([^/]+?)--([^/]+)")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DATASET_CACHE = re.compile(r"datasets--([^/]+?)--([^/]+)")
PAPER = (
    "Shi et al., *Enhancing Cognition and Explainability of Multimodal Foundation Models with "
    "Self-Synthesized Data*, ICLR 2025"
)
METHODS = {
    "ours": (
        "Round 1 trains on answers the base model wrote when told each training image's label and "
        "its visual concepts selected by information bottleneck (Z*); every later round trains on "
        "the previous round's model's own answers, kept by contrastive rejection sampling (the "
        "answer must name the right class and is scored against the image's Z* versus other "
        "concepts)."
    ),
    "nofilter": (
        "The no-filtering ablation: round 1 as in the full method (answers written from the label "
        "and the image's selected concepts Z*), but every later round keeps the first answer "
        "sampled for each question as is, without contrastive rejection sampling."
    ),
    "nl": 'The NL baseline: one round trained on "This is an image of {label}." (names only, no explanation).',
    "lge": (
        "The L+GE baseline: one round trained on answers the base model wrote when told the label and "
        "every expert concept of its class (a class-level, not image-level, explanation)."
    ),
}


def front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata block at the top of a model card ({} when there is none or it is broken)."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def base_facts(base_dir: str | Path) -> dict[str, Any]:
    """What the base model's folder says about itself: Hub id, license, whether it is the embedded model."""
    base = Path(base_dir)
    if not str(base_dir):
        return {
            "folder": "",
            "hub_id": None,
            "license": "unknown",
            "license_name": None,
            "license_link": None,
            "embedded": False,
        }
    meta = front_matter(_read(base / CARD))
    config_text = _read(base / "config.json")
    try:
        config = json.loads(config_text) if config_text else {}
    except json.JSONDecodeError:
        config = {}
    hub_id = None
    if m := _HUB_CACHE.search(base.resolve().as_posix()):
        hub_id = f"{m.group(1)}/{m.group(2)}"
    elif _REPO_ID.match(str(config.get("_name_or_path", ""))) and not Path(config["_name_or_path"]).exists():
        hub_id = config["_name_or_path"]
    elif "selfsynth" in (meta.get("tags") or []) and meta.get("base_model"):
        hub_id = meta["base_model"]  # a model tuned by selfsynth: name the root of the chain
    license_ = meta.get("license")
    return {
        "folder": base.name,
        "hub_id": hub_id,
        "license": license_ if isinstance(license_, str) and license_ else "unknown",
        "license_name": meta.get("license_name"),
        "license_link": meta.get("license_link"),
        "embedded": "selfsynth_efficientnet" in config_text,  # needs `import selfsynth` to load
    }


def _dataset_name(data: dict[str, Any]) -> str:
    """The dataset as the Hub would name it where that is known, else the local folder's name."""
    root = str(data.get("root", ""))
    if m := _DATASET_CACHE.search(root):
        return f"{m.group(1)}/{m.group(2)}"
    if data.get("format") == "world":
        return "selfsynth-world"
    return Path(root).name or str(data.get("format", "unknown"))


def _metrics_table(results: dict[str, Any], rnd: int, rl: bool = False) -> list[str]:
    from selfsynth.report.tables import COLUMNS, DASH

    rows: list[tuple[str, dict[str, Any] | None]] = [("Base model", results.get("base"))]
    evaluated = {r.get("round"): r for r in results.get("rounds", []) if r.get("round", 0) <= rnd}
    for r in range(1, rnd + 1):
        label = f"Round {r}" + (" (this model)" if r == rnd and not rl else "")
        rows.append((label, evaluated.get(r)))
    if rl:
        rows.append(("RL round (this model)", results.get("rl")))
    cols = [c for c in COLUMNS if any(m and m.get(c[1]) is not None for _, m in rows)]
    lines = ["| model | " + " | ".join(h for h, _, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, m in rows:
        cells = [f(m.get(k)) for _, k, f in cols] if m else ["not evaluated yet"] + [DASH] * (len(cols) - 1)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _recipe(cfg: dict[str, Any]) -> list[str]:
    ft, sel, syn, smp = (cfg.get(k) or {} for k in ("finetune", "select", "synthesize", "sample"))
    items = [
        ("method", cfg.get("method")),
        ("rounds", cfg.get("rounds")),
        ("seed", cfg.get("seed")),
        ("data", f"{(cfg.get('data') or {}).get('format')} ({(cfg.get('data') or {}).get('kind')})"),
        ("concepts", (cfg.get("concepts") or {}).get("source")),
        (
            "LoRA",
            f"r {ft.get('lora_r')}, alpha {ft.get('lora_alpha')}, dropout {ft.get('lora_dropout')}, "
            f"targets {ft.get('target_modules')}, projector trained: {ft.get('train_projector')}",
        ),
        (
            "training",
            f"lr {ft.get('lr')}, {ft.get('epochs')} epochs, global batch {ft.get('batch_size')}, "
            f"warmup {ft.get('warmup_ratio')}, general pairs per domain pair {ft.get('general_mix')}",
        ),
        ("IB selection", f"k {sel.get('k')}, tau {sel.get('tau')}, at least {sel.get('min_keep')} concepts"),
        (
            "round-1 synthesis",
            f"{syn.get('questions')} questions per image, temperature {syn.get('temperature')}",
        ),
        (
            "rejection sampling",
            f"{smp.get('questions')} questions x {smp.get('samples')} samples, "
            f"temperature {smp.get('temperature')}, top-p {smp.get('top_p')}, negatives {smp.get('negatives')}, "
            f"fallback {smp.get('fallback')}",
        ),
    ]
    return [f"- {k}: {v}" for k, v in items]


def _usage(folder: str, question: str, embedded: bool) -> list[str]:
    lines = ["```python"]
    if embedded:
        lines.append("import selfsynth  # registers the embedded model's vision tower with transformers")
    lines += [
        "from PIL import Image",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        f'model_dir = "{folder}"  # this folder',
        "processor = AutoProcessor.from_pretrained(model_dir)",
        "model = AutoModelForImageTextToText.from_pretrained(model_dir)",
        f"question = {json.dumps(question)}",
        'messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]',
        "prompt = processor.apply_chat_template(messages, add_generation_prompt=True)",
        'inputs = processor(images=Image.open("image.png").convert("RGB"), text=prompt, return_tensors="pt")',
        "out = model.generate(**inputs, max_new_tokens=128, do_sample=False)",
        'print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        "Or from the shell: `selfsynth chat MODEL_DIR --image IMAGE` (a terminal chat) and",
        "`selfsynth serve MODEL_DIR` (an OpenAI-compatible server whose answers list the concepts cited).",
    ]
    return lines


def _rl_lines(cfg: dict[str, Any]) -> list[str]:
    rl = cfg.get("rl") or {}
    return [
        "After the last round, one GRPO round trained this model on its own sampled answers "
        f"({rl.get('group')} per image, {rl.get('steps')} steps, lr {rl.get('lr')}, KL {rl.get('kl')}), "
        f"rewarded for naming the right class, +{rl.get('cite_bonus')} per cited concept of the image's "
        f"Z* (up to {rl.get('cite_cap')}) and -{rl.get('outside_penalty')} per cited concept outside it.",
    ]


def render_card(
    results: dict[str, Any], rnd: int, folder: str, base: dict[str, Any], rl: bool = False
) -> str:
    """The card of round ``rnd``'s model (``rl``: of the RL round after it); ``results`` as so far."""
    cfg = results.get("config") or {}
    total = 1 if results.get("method") in ("nl", "lge") else int(cfg.get("rounds") or rnd)
    meta: dict[str, Any] = {}
    if base["hub_id"]:
        meta.update(base_model=base["hub_id"], base_model_relation="finetune")
    meta["datasets"] = [_dataset_name(cfg.get("data") or {})]
    meta["library_name"] = "transformers"
    meta["license"] = base["license"]
    if base["license"] == "other":
        meta.update({k: base[k] for k in ("license_name", "license_link") if base[k]})
    meta.update(pipeline_tag="image-text-to-text", tags=TAGS)
    measured = [r for r in [results.get("base"), *results.get("rounds", []), rl and results.get("rl")] if r]
    question = next(
        (m["question"] for m in reversed(measured) if m.get("question")), "What is this? Explain why."
    )
    split = results.get("evaluated_on", "test")
    n = next((m.get("n") for m in reversed(measured) if m.get("n")), None)
    base_name = f"`{base['hub_id']}`" if base["hub_id"] else f"The local model `{base['folder']}`"
    license_line = (
        f"License: `{base['license']}`, as the base model's card states."
        if base["license"] != "unknown"
        else "License: unknown. The base model's folder does not state one; this model's weights carry the "
        "base model's terms, so check those before sharing it."
    )
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        f"# {results.get('name', 'run')}: round {rnd} of {total}" + (" and an RL round" if rl else ""),
        "",
        f"{base_name} fine-tuned to name fine-grained classes and explain each answer with the visual "
        f"evidence in the image, by self-synthesized data ({PAPER}), as implemented by selfsynth. "
        "The LoRA of every round is merged into the weights: this folder is a plain transformers checkpoint.",
        "",
        "## Method",
        "",
        METHODS.get(str(results.get("method")), f"Method `{results.get('method')}`."),
        f"Each round trains a new LoRA on the previous round's merged model and merges it; this model "
        f"is round {rnd} of {total}" + (", then an RL round." if rl else "."),
        *(_rl_lines(cfg) if rl else []),
        "",
        "## Results",
        "",
        f'Greedy answers to "{question}" on the {split} split'
        + (f" ({n} images)" if n else "")
        + "; every round known when this card was written. Acc. sub.: the class name appears in the "
        "answer; strict: the first class named is right; EE / CS: explanation existence and cognition "
        "score; Ground. P/R and Halluc.: cited concepts really in the image (where the data knows).",
        "",
        *_metrics_table(results, rnd, rl),
        "",
        "## Recipe",
        "",
        *_recipe(cfg),
        "",
        "## Use",
        "",
        *_usage(folder, question, base["embedded"]),
        "",
        "## License and limits",
        "",
        license_line,
        "The training answers are the model's own, filtered automatically; explanations can still cite "
        "features that are not in the image.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(model_dir: str | Path, results: dict[str, Any], rnd: int, rl: bool = False) -> Path:
    """Write (or refresh) ``model_dir/README.md``; an unchanged card is not rewritten.

    ``rl``: the folder holds the model of the RL round after round ``rnd`` (``results["rl"]``).
    """
    folder = Path(model_dir)
    base = base_facts((results.get("config") or {}).get("model", {}).get("path", ""))
    text = render_card(results, rnd, folder.name, base, rl)
    path = folder / CARD
    if _read(path) != text:
        atomic_write_text(path, text)
    return path
