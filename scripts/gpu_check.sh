#!/usr/bin/env bash
# One short check (< 10 min) of selfsynth on a machine with NVIDIA GPUs: bf16, SDPA attention, the
# accelerate / torchrun path with every GPU, and the vLLM engine. Prints a pass/fail table.
#
#   bash scripts/gpu_check.sh                 # uses .venv (make install) and .venv-vllm if present
#   PY=python VLLM_PY=/path/to/python bash scripts/gpu_check.sh
#
# Everything runs on tiny random models built on the spot: nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VLLM_PY=${VLLM_PY:-.venv-vllm/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORK=$(mktemp -d -t selfsynth-gpu-check-XXXX)
trap 'rm -rf "$WORK"' EXIT
declare -a NAMES RESULTS

record() {  # name, exit code, note
  NAMES+=("$1")
  if [ "$2" -eq 0 ]; then RESULTS+=("pass  $3"); elif [ "$2" -eq 77 ]; then RESULTS+=("skip  $3"); else RESULTS+=("FAIL  $3 (log: $WORK/$1.log)"); fi
}

step() {  # name, note, command...
  local name=$1 note=$2
  shift 2
  echo "== $name" >&2
  timeout 300 "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  record "$name" "$rc" "$note"
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then tail -20 "$WORK/$name.log" >&2; fi
}

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$NGPU" -eq 0 ]; then
  echo "no CUDA device visible to $PY: every GPU check is skipped" >&2
fi

# bf16 generation + 3 LoRA steps on one GPU, and SDPA against eager attention (same greedy text).
step bf16_sdpa "tiny LLaVA on cuda:0: bf16 generate, LoRA steps, sdpa == eager" "$PY" - "$WORK" "$NGPU" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "tests/unit")
work, ngpu = Path(sys.argv[1]), int(sys.argv[2])
if ngpu == 0:
    sys.exit(77)
import torch
from tiny_models import build_llava, make_images

from selfsynth.config import FinetuneConfig
from selfsynth.models.vlm import VLM
from selfsynth.records import QA

model = build_llava(work / "llava")
images = [str(p) for p in make_images(work / "images", 4)]
texts = {}
for attn in ("eager", "sdpa"):
    vlm = VLM.load(model, dtype="bf16", device="cuda", attention=attn)
    assert vlm.dtype == torch.bfloat16, vlm.dtype
    texts[attn] = vlm.generate(images, ["describe the image ."] * 4, max_new_tokens=12)
print("eager", texts["eager"][0], "sdpa", texts["sdpa"][0])
assert texts["eager"] == texts["sdpa"], "sdpa and eager greedy outputs differ"
qa = [QA(str(i), images[i % 4], "what is this ?", "a small red bird", "x", "simple") for i in range(8)]
cfg = FinetuneConfig(epochs=1, batch_size=4, micro_batch_size=4, lr=1e-3)
info = vlm.train_lora(qa, cfg, work / "lora", progress=False)
print(info)
EOF

# The SFT entry under accelerate with every GPU (DDP over NCCL).
step accelerate_sft "accelerate launch --num_processes $NGPU -m selfsynth sft" "$PY" - "$WORK" "$NGPU" <<'EOF'
import json, subprocess, sys
from pathlib import Path

sys.path.insert(0, "tests/unit")
work, ngpu = Path(sys.argv[1]), int(sys.argv[2])
if ngpu == 0:
    sys.exit(77)
from tiny_models import build_llava, make_images

model = build_llava(work / "llava_sft")
make_images(work / "sft_images", 8)
with open(work / "train.jsonl", "w") as f:
    for i in range(32):
        f.write(json.dumps({"id": str(i), "image": f"sft_images/img{i % 8}.png", "question": "what bird ?",
                            "answer": "a red finch", "label": "x"}) + "\n")
launch = [sys.executable, "-m", "accelerate.commands.launch", f"--num_processes={ngpu}", "--mixed_precision=bf16"]
launch += ["--multi_gpu"] if ngpu > 1 else []
out = subprocess.run([*launch, "-m", "selfsynth", "-q", "sft", str(model), str(work / "train.jsonl"),
                      str(work / "sft_out"), "batch_size=8", f"micro_batch_size={max(1, 8 // ngpu)}", "epochs=1"],
                     capture_output=True, text=True)
print(out.stdout[-2000:], out.stderr[-4000:])
assert out.returncode == 0
summary = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
assert summary["processes"] == ngpu, summary
EOF

# The whole micro loop under torchrun on every GPU: generation stages sharded, DDP fine-tune.
step loop_torchrun "micro loop, torchrun --nproc_per_node $NGPU" bash -c "
  [ '$NGPU' -eq 0 ] && exit 77
  $PY - '$WORK' <<'EOF'
import sys
from pathlib import Path
from selfsynth.data.world import make_world
from selfsynth.basevlm.build import ensure_base_model
work = Path(sys.argv[1])
make_world(work / 'world', species=4, train_per_class=6, test_per_class=3, species_seed=0, image_seed=0, size=128)
base = ensure_base_model(cache_dir=work / 'base', species=4, train_per_class=12, text_steps=40, steps=80,
                         hidden_size=96, layers=2, heads=4, intermediate_size=256, vocab_size=1024,
                         concept_seeds=2, batch_size=16, lr=3e-3, checkpoint_every=40)
(work / 'base_path').write_text(str(base))
EOF
  $PY -m torch.distributed.run --nproc_per_node=$NGPU -m selfsynth -q run configs/world.yaml \
    data.root=$WORK/world model.path=\$(cat $WORK/base_path) rounds=2 chunk_size=4 describe.prompts=2 \
    describe.samples=2 describe.max_new_tokens=24 synthesize.questions=2 synthesize.fallback=label \
    sample.questions=1 sample.samples=2 finetune.epochs=1 finetune.batch_size=8 \
    finetune.micro_batch_size=\$((8 / $NGPU > 0 ? 8 / $NGPU : 1)) evaluate.max_new_tokens=32 --run-dir $WORK/run
"

# The vLLM engine's own tests, in the vLLM environment (make test-vllm builds it).
if [ -x "$VLLM_PY" ]; then
  step vllm "vLLM engine tests (tests/vllm) in $VLLM_PY" "$VLLM_PY" -m pytest -q -x tests/vllm
else
  record vllm 77 "no $VLLM_PY: run make test-vllm first"
fi

echo
printf '%-16s %s\n' check result
for i in "${!NAMES[@]}"; do printf '%-16s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}"; done
for r in "${RESULTS[@]}"; do [[ $r == FAIL* ]] && exit 1; done
exit 0
