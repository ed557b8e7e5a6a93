"""The real round loop (``pipeline.run``) on a 2-class JSONL dataset, with a scripted model engine.

The engine answers every prompt with the same sentence (it names "azure finch" and cites two of
its concepts), and its ``train_lora`` is a 3-step loop that writes ``train_log.jsonl`` rows and
calls ``on_step`` as ``models.sft.train_lora`` does, so a whole run takes seconds and every
stage, manifest, model card and tracking call is the pipeline's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fixtures_data import make_image

from selfsynth.config import load_config
from selfsynth.models import backend

LABELS = ["azure finch", "crimson tit"]
BANK = {
    "azure finch": ["blue crown", "short beak", "white wing bars"],
    "crimson tit": ["red breast", "black mask", "forked tail"],
}
ANSWER = "This is an azure finch: it has a blue crown and white wing bars."
STEPS = 3


def train_row(step: int) -> dict[str, Any]:
    """What the scripted training logs at ``step`` (the fields ``sft.train_lora`` writes)."""
    return {
        "step": step,
        "loss": 2.0 / step,
        "lr": 1e-3 * step,
        "tokens": 10,
        "grad_norm": 0.5,
        "seconds": 0.0,
    }


class ScriptedVLM:
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def generate(self, images, prompts, *, n=1, **kwargs):
        return [[ANSWER] * n for _ in prompts]

    def answer_logprobs(self, images, questions, answers, *, batch_size=32):
        return [-float(len(a)) for a in answers]

    def loss(self, images, questions, answers):
        return 1.0

    def train_lora(self, examples, cfg, out_dir, *, seed=0, progress=True, on_step=None, **kwargs):
        out = Path(out_dir)
        for step in range(1, STEPS + 1):
            row = train_row(step)
            with open(out / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if on_step is not None:
                on_step(row)
        (out / "adapter").mkdir(exist_ok=True)
        return {"steps": STEPS}

    def merge(self, adapter_dir, out_dir):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text('{"model_type": "scripted"}', encoding="utf-8")
        (out / "model.safetensors").write_bytes(b"scripted weights")
        return out


def register(monkeypatch) -> None:
    monkeypatch.setattr(backend, "_ENGINES", dict(backend._ENGINES))
    backend.register_engine("scripted", lambda path, cfg, cache_dir: ScriptedVLM(path))


def make_data(root: Path) -> Path:
    for split, per_class in (("train", 3), ("test", 2)):
        rows = []
        for li, label in enumerate(LABELS):
            for i in range(per_class):
                make_image(root / split / f"{li}_{i}.png", seed=li * 10 + i)
                rows.append({"image": f"{split}/{li}_{i}.png", "label": label, "id": f"{split}-{li}-{i}"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "bank.json").write_text(json.dumps(BANK), encoding="utf-8")
    return root


def make_base(folder: Path, readme: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    if readme:
        (folder / "README.md").write_text(readme, encoding="utf-8")
    return folder


def config(data: Path, base: Path, *overrides: str):
    return load_config(
        None,
        [
            f"data.root={data}",
            "data.format=jsonl",
            f"model.path={base}",
            "model.engine=scripted",
            f"concepts.path={data / 'bank.json'}",
            "rounds=2",
            "describe.prompts=1",
            "describe.samples=1",
            "synthesize.questions=1",
            "sample.questions=1",
            "sample.samples=2",
            "evaluate.general=false",
            *overrides,
        ],
    )


def manifests(run_dir: Path) -> dict[str, tuple[str, int]]:
    """Every stage's (fingerprint, manifest mtime): equal before and after a resume that redid nothing."""
    return {
        str(m.parent.relative_to(run_dir)): (json.loads(m.read_text())["fingerprint"], m.stat().st_mtime_ns)
        for m in sorted(run_dir.rglob("_manifest.json"))
    }
