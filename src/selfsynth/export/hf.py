"""The ``hf`` export: a Hugging Face ``datasets`` dataset on disk, images embedded, with a dataset card.

``datasets.load_from_disk(OUT)`` reads it back anywhere (the image bytes are in the Arrow file,
not a path to the run's data); ``OUT/README.md`` is the card, YAML metadata first, so the folder
can be pushed to the Hub as is. ``datasets`` is an optional dependency (``selfsynth[hf]``),
imported only here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from selfsynth.errors import SelfsynthError
from selfsynth.export.pairs import Pair
from selfsynth.io import atomic_write_text

COLUMNS = {  # column -> what it holds, for the card
    "id": "pair id: `<image id>#<question index>`",
    "image_id": "the training image's id in its dataset",
    "image": "the image (embedded bytes)",
    "question": "what the model is asked",
    "answer": "the answer it is trained to give",
    "label": "the image's class",
    "kind": "question kind: simple, explain, cot, fallback (label-only answer) or general",
    "round": "the loop round whose fine-tuning trained on the pair",
    "concepts": "the image's selected concepts Z* (information-bottleneck selection)",
    "concept_scores": "the IB score of each selected concept, in the same order",
    "rs_score": "contrastive rejection-sampling score of the answer (rounds >= 2; null otherwise)",
}


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise SelfsynthError(
            "the hf export format needs the datasets library: pip install 'selfsynth[hf]'"
        ) from None
    return datasets


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    return next((tag for limit, tag in bounds if n < limit), "1M<n<10M")


def card(pairs: Sequence[Pair], name: str, source: dict[str, Any]) -> str:
    """The dataset card: YAML metadata, then what the rows are and where they come from."""
    meta = {
        "pretty_name": name,
        "language": ["en"],
        "task_categories": ["image-text-to-text", "visual-question-answering"],
        "tags": ["synthetic", "selfsynth", "fine-grained-classification"],
        "size_categories": [size_category(len(pairs))],
    }
    kinds = Counter(p.kind for p in pairs)
    labels = {p.label for p in pairs if p.label}
    origin = ", ".join(f"{k}: `{v}`" for k, v in source.items() if v not in (None, ""))
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        f"# {name}",
        "",
        "Training pairs of the self-synthesized data loop (Shi et al., ICLR 2025) as written by "
        "`selfsynth export --format hf`: each row is an image, a question and the answer a round's "
        "fine-tuning trained on, with the image's selected concepts and the scores behind them.",
        "",
        f"- {len(pairs)} pairs, {len({p.image for p in pairs})} images, {len(labels)} classes",
        "- kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
    ]
    if origin:
        lines.append(f"- source: {origin}")
    lines += [
        "- the images keep the license of the dataset they come from",
        "",
        "| column | meaning |",
        "|---|---|",
        *(f"| `{c}` | {text} |" for c, text in COLUMNS.items()),
        "",
        "```python",
        "from datasets import load_from_disk",
        'ds = load_from_disk("PATH/TO/THIS/FOLDER")',
        "```",
        "",
    ]
    return "\n".join(lines)


def write_hf(pairs: Sequence[Pair], out_dir: Path, name: str, source: dict[str, Any]) -> None:
    """Save ``pairs`` with ``save_to_disk`` into ``out_dir``, then the card next to the Arrow files."""
    datasets = _datasets()
    string = datasets.Value("string")
    features = datasets.Features(
        {
            "id": string,
            "image_id": string,
            "image": datasets.Image(),
            "question": string,
            "answer": string,
            "label": string,
            "kind": string,
            "round": datasets.Value("int32"),
            "concepts": [string],
            "concept_scores": [datasets.Value("float32")],
            "rs_score": datasets.Value("float32"),
        }
    )
    # Bytes without a path: the Image feature keeps a path instead of the bytes when one names a file.
    data: dict[str, list[Any]] = {c: [] for c in features}
    for p in pairs:
        for c in features:
            data[c].append(
                {"bytes": Path(p.image).read_bytes(), "path": None} if c == "image" else getattr(p, c)
            )
    info = datasets.DatasetInfo(
        description=f"{name}: training pairs exported by selfsynth", features=features
    )
    ds = datasets.Dataset.from_dict(data, features=features, info=info)
    ds.save_to_disk(str(out_dir))
    atomic_write_text(out_dir / "README.md", card(pairs, name, source))
