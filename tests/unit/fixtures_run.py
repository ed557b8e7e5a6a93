"""A finished 2-round run directory written by hand, with the files and rows the stages write.

Layout and rows follow the stage code: ``select`` writes ``concepts/selection.jsonl`` rows
``{id, label, selected, scores}``; ``synthesize`` writes QA rows plus ``keep``/``repaired`` in
``round_1/synthesize/part-*.jsonl``; ``sample`` writes per-question rows with every candidate's
score in ``round_2/sample/part-*.jsonl`` and the accepted QA (``meta.score``) in
``accepted.jsonl``; ``finetune`` writes the shuffled mix of task and general pairs to
``round_N/finetune/train.jsonl``. Every stage folder ends with its ``_manifest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from fixtures_data import make_image

from selfsynth.records import QA

CONCEPTS = {
    "azure finch": ["blue crown", "short conical beak", "white wing bars"],
    "crimson tit": ["red breast", "black eye mask", "forked tail"],
}
SELECTION = [
    {
        "id": "a/1",
        "label": "azure finch",
        "selected": ["blue crown", "white wing bars"],
        "scores": {"blue crown": 0.91, "short conical beak": 0.12, "white wing bars": 0.55},
    },
    {
        "id": "b/1",
        "label": "crimson tit",
        "selected": ["red breast"],
        "scores": {"red breast": 0.8, "black eye mask": 0.3, "forked tail": 0.1},
    },
]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _done(folder: Path, **info: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_manifest.json").write_text(json.dumps({"stage": folder.name, "fingerprint": "f", **info}))


def build_run(tmp: Path) -> Path:
    """RUN with round 1 (synthesized) and round 2 (rejection-sampled) pairs; images share a file name."""
    data = tmp / "data"
    # Two classes' images with the same file name: copies must not overwrite each other.
    img_a = str(make_image(data / "images" / "azure" / "1.png", 1).resolve())
    img_b = str(make_image(data / "images" / "crimson" / "1.png", 2).resolve())
    run = tmp / "run"
    (run / "config.yaml").parent.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"name: test\nmethod: ours\nrounds: 2\ndata:\n  format: world\n  root: {data}\n", encoding="utf-8"
    )
    (run / "concepts").mkdir()
    (run / "concepts" / "concepts.json").write_text(json.dumps(CONCEPTS))
    _jsonl(run / "concepts" / "selection.jsonl", SELECTION)
    _done(run / "concepts" / "select", images=2)

    r1 = [
        QA("a/1#0", img_a, "What bird is this?", "An azure finch: blue crown.", "azure finch", "simple"),
        QA("a/1#1", img_a, "Explain.", "It is an azure finch with white wing bars.", "azure finch"),
        QA(
            "b/1#2",
            img_b,
            "What bird is this?",
            "This is an image of crimson tit.",
            "crimson tit",
            "fallback",
        ),
    ]
    parts = [{**q.to_dict(), "keep": q.kind != "fallback", "repaired": False} for q in r1]
    _jsonl(run / "round_1" / "synthesize" / "part-00000.jsonl", parts)
    _done(run / "round_1" / "synthesize", asked=3, kept=3)
    general = QA("cap:a/1#0", img_a, "Describe the bird.", "A small bird on a branch.", "", "general")
    _jsonl(
        run / "round_1" / "finetune" / "train.jsonl",
        [r1[1].to_dict(), general.to_dict(), r1[0].to_dict(), r1[2].to_dict()],
    )
    _done(run / "round_1" / "finetune", domain_pairs=3, general_pairs=1)

    sample_rows = [
        {
            "id": "a/1#0",
            "image_id": "a/1",
            "image": img_a,
            "label": "azure finch",
            "kind": "explain",
            "question": "Why?",
            "candidates": ["A crimson tit.", "An azure finch, blue crown."],
            "names_label": [False, True],
            "scores": [0.2, 0.61],
        },
        {
            "id": "b/1#0",
            "image_id": "b/1",
            "image": img_b,
            "label": "crimson tit",
            "kind": "cot",
            "question": "Think, then answer.",
            "candidates": ["An azure finch."],
            "names_label": [False],
            "scores": [0.4],
        },
    ]
    _jsonl(run / "round_2" / "sample" / "part-00000.jsonl", sample_rows)
    r2 = [
        QA("a/1#0", img_a, "Why?", "An azure finch, blue crown.", "azure finch", "explain", {"score": 0.61}),
        QA("b/1#0", img_b, "What is this?", "This is an image of crimson tit.", "crimson tit", "fallback"),
    ]
    _jsonl(run / "round_2" / "sample" / "accepted.jsonl", [q.to_dict() for q in r2])
    _done(run / "round_2" / "sample", questions=2, accepted=1, fallback=1)
    _jsonl(
        run / "round_2" / "finetune" / "train.jsonl", [r2[1].to_dict(), general.to_dict(), r2[0].to_dict()]
    )
    _done(run / "round_2" / "finetune", domain_pairs=2, general_pairs=1)
    return run
