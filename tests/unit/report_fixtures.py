"""A fabricated run directory (results, metrics, samples, concepts, Z*, tiny PNGs) for the report tests."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from selfsynth.metrics.answers import answer_metrics
from selfsynth.metrics.grounding import cite_phrases

BANK = {
    "Red Finch": ["red crown", "conical beak", "white wing bars"],
    "Blue Tit": ["blue crown", "black mask", "yellow breast"],
}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def make_run(
    root: Path, name: str = "demo", method: str = "ours", seed: int = 0, rounds: int = 2, shift: float = 0.0
):
    """Write a run as the pipeline would; returns its directory. ``shift`` varies the numbers per seed."""
    run = root / name
    run.mkdir(parents=True)
    images = root / "world" / name  # under the data root every run shares, as the report requires
    images.mkdir(parents=True)
    answers = {
        0: ["This is an image of a bird.", "A bird with a blue crown.", "A small bird."],
        1: [
            "This is a Red Finch: red crown and a conical beak.",
            "A Blue Tit with a black mask and a red crown. See http://example.org",
            "This is a Red Finch with white wing bars.",
        ],
    }
    labels = ["Red Finch", "Blue Tit", "Red Finch"]
    visible = [["red crown", "conical beak"], ["black mask"], ["white wing bars"]]
    for i, color in enumerate([(200, 30, 30), (30, 30, 200), (180, 40, 40)]):
        Image.new("RGB", (32, 24), color).save(images / f"t{i}.png")
        Image.new("RGB", (16, 16), color).save(images / f"train{i}.png")
    config = {
        "name": name,
        "method": method,
        "seed": seed,
        "rounds": rounds,
        "data": {"format": "world", "root": str(root / "world"), "kind": "birds"},
        "model": {"path": "models/tiny"},
        "concepts": {"openai": {"base_url": "https://api.example.com/v1"}},
    }
    results = {"name": name, "method": method, "config": config, "rounds": []}
    for stage in ["base", *[f"round_{r}" for r in range(1, rounds + 1)]]:
        rows = [
            {
                "id": f"t{i}",
                "image": str(images / f"t{i}.png"),
                "label": labels[i],
                "question": "What is the species of this bird? Explain why.",
                "answer": answers[0 if stage == "base" else 1][i],
                "visible_concepts": visible[i],
            }
            for i in range(3)
        ]
        metrics = answer_metrics(rows, labels=list(BANK), bank=BANK, grounding=True, citer=cite_phrases)
        metrics.update(name=stage, general_vqa=0.5 + shift, general_n=10)
        if stage != "base":
            metrics["acc_substring"] = min(1.0, metrics["acc_substring"] - 0.1 / int(stage[-1]) + shift)
        d = run / stage / "evaluate"
        d.mkdir(parents=True)
        (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (d / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        if stage == "base":
            results["base"] = metrics
        else:
            results["rounds"].append({"round": int(stage[-1]), **metrics, "train_pairs": 24})
    results["final_model"] = str(run / f"round_{rounds}" / "finetune" / "merged")
    results["seconds"] = 12.5
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    (run / "concepts").mkdir()
    (run / "concepts" / "concepts.json").write_text(json.dumps(BANK), encoding="utf-8")
    sel = [
        {
            "id": f"train{i}",
            "label": lab,
            "selected": BANK[lab][:2],
            "scores": {c: -1.5 + j for j, c in enumerate(BANK[lab])},
        }
        for i, lab in enumerate(labels)
    ]
    (run / "concepts" / "selection.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in sel), encoding="utf-8"
    )
    syn = run / "round_1" / "synthesize"
    syn.mkdir(parents=True)
    pairs = [{"id": f"train{i}#0", "image": str(images / f"train{i}.png")} for i in range(3)]
    (syn / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return run


# The training images' visible concepts (Z* is each class's first two concepts: see make_run)
TRAIN_VISIBLE = {
    "train0": ["red crown", "conical beak"],
    "train1": ["black mask"],
    "train2": ["white wing bars"],
}
TRAIN_PAIRS = {
    1: [
        ("train0#0", "This is a Red Finch with a red crown and a conical beak.", "explain"),
        ("train1#0", "This is a Blue Tit with a blue crown and a black mask.", "explain"),
        ("train2#0", "This is an image of Red Finch.", "fallback"),
    ],
    2: [
        ("train0#0", "This is a Red Finch with a red crown and a conical beak.", "explain"),
        ("train1#0", "A Blue Tit with a black mask.", "cot"),
        ("train2#0", "This is a Red Finch with white wing bars and a yellow breast.", "explain"),
    ],
}


def add_stage_grounding(run: Path, visibility: bool = True) -> dict:
    """Add the per-stage citation figures to ``run``'s results.json as the loop would; returns the results."""
    from selfsynth.metrics.stage_grounding import StageGrounding
    from selfsynth.records import QA, Example

    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    sel = [json.loads(x) for x in (run / "concepts" / "selection.jsonl").read_text().splitlines()]
    train = [Example(i, f"{i}.png", "", "train", {"visible_concepts": v}) for i, v in TRAIN_VISIBLE.items()]
    staged = StageGrounding.of(
        BANK, {r["id"]: r["selected"] for r in sel}, train, visibility=visibility, citer=cite_phrases
    )
    labels = {r["id"]: r["label"] for r in sel}
    results["zstar_grounding"] = staged.zstar()
    staged.fill(results["base"], run / "base")
    for m in results["rounds"]:
        rnd = m["round"]
        pairs = [QA(i, "", "q", a, labels[i.split("#")[0]], k) for i, a, k in TRAIN_PAIRS[rnd]]
        staged.fill(m, run / f"round_{rnd}", "synthesize" if rnd == 1 else "sample", pairs)
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return results


class Checker(HTMLParser):
    """Well-formed nesting of non-void tags, data-URI images only."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            src = dict(attrs).get("src") or ""
            self.images.append(src)
            if not src.startswith("data:image/"):
                self.errors.append(f"img src is not a data URI: {src[:40]}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.handle_starttag(tag, attrs)
            if tag not in VOID:
                self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            return
        self.stack.pop()


def check_html(text: str) -> Checker:
    assert "http://" not in text and "https://" not in text
    c = Checker()
    c.feed(text)
    c.close()
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed: {c.stack}"
    return c
