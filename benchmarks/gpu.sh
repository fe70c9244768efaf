#!/usr/bin/env bash
# Every speed benchmark on the GPUs of this machine, into one markdown file (default benchmarks/gpu_results.md).
#   bash benchmarks/gpu.sh [OUT]
# Needs .venv (make .venv/.installed) and CUDA. CIFAR-10 under data/ if present, else a fake set (timings only).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/gpu_results.md}
PY=${PY:-.venv/bin/python}
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 1 ]; then echo "no CUDA device: run this on a GPU machine" >&2; exit 1; fi
section() { printf '\n## %s\n\n```\n' "$1" >> "$OUT"; }
endsection() { printf '```\n' >> "$OUT"; }
{
  echo "# GPU benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  $PY -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0), '| GPUs:', torch.cuda.device_count())"
} > "$OUT"

section "vs_reference: seconds per epoch, (a) reference loop, (b) lt-lightning loader, (c) on device (1 GPU)"
$PY benchmarks/vs_reference.py --device cuda --epochs 3 --repeats 3 2>/dev/null | tail -6 >> "$OUT"; endsection

section "vs_reference --full: 200 epochs of (a) and (c), wall time and balanced accuracy (1 GPU)"
$PY benchmarks/vs_reference.py --device cuda --full 2>/dev/null | tail -3 >> "$OUT"; endsection

section "throughput: LongTailClassifier vs a plain loop (1 GPU, bf16-mixed)"
$PY benchmarks/throughput.py --device cuda --precision bf16-mixed 2>/dev/null | tail -8 >> "$OUT"; endsection

section "step time of each method relative to CE (1 GPU)"
$PY benchmarks/step_time.py --accelerator gpu --precision bf16-mixed 2>/dev/null | tail -20 >> "$OUT"; endsection

section "compile / channels-last cost (1 GPU, bf16-mixed)"
$PY benchmarks/compile_cost.py --accelerator gpu --precision bf16-mixed 2>/dev/null | tail -8 >> "$OUT"; endsection

section "data path at 224 px: split-list loader vs ImageFolder"
$PY benchmarks/data_path.py --workers 0 4 8 --batches 20 --batch 64 2>/dev/null | tail -16 >> "$OUT"; endsection

if [ "$GPUS" -ge 2 ]; then
  section "DDP scaling of the file-backed path: 1 vs $GPUS GPUs (ResNet-50, bf16-mixed)"
  $PY benchmarks/ddp_scaling.py --accelerator gpu --devices "$GPUS" 2>/dev/null | tail -5 >> "$OUT"; endsection
fi
echo "wrote $OUT"
