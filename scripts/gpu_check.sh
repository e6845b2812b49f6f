#!/usr/bin/env bash
# The GPU checks in one command, for one GPU and about 7 minutes (docs/performance.md): conformance,
# the toy ViLBERT trained in bf16 and compared with fp32, the benchmark rows; each step under a time limit.
#   bash scripts/gpu_check.sh OUT_DIR
# Each step's exit code and seconds go to OUT_DIR/summary.txt; exit code 1 when any step failed.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/usage.sh"
expect_arguments 1 "$@"
OUT="$(mkdir -p "$1" && cd "$1" && pwd)" || { echo "error: $1: cannot make the output folder" >&2; exit 2; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=0

step() {  # NAME LIMIT_S LOG COMMAND...: run under a time limit, output to LOG, a summary line
    local name=$1 limit=$2 log=$3 started=$SECONDS
    shift 3
    timeout "$limit" "$@" > "$log" 2>&1
    local code=$?
    [ "$code" -eq 0 ] || failed=1
    echo "$name: exit $code, $((SECONDS - started)) s (limit $limit s), log $(basename "$log")" | tee -a "$OUT/summary.txt"
}

: > "$OUT/summary.txt"
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, " + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"))' \
    | tee -a "$OUT/summary.txt"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee -a "$OUT/summary.txt"

for candidate in "${VISDIAL_GOLDEN:-}" ../shared/golden shared/golden; do
    [ -n "$candidate" ] && [ -f "$candidate/README.md" ] && { export VISDIAL_GOLDEN="$candidate"; break; }
done
if [ -f "${VISDIAL_GOLDEN:-}/README.md" ]; then
    step conformance 100 "$OUT/conformance.txt" "$PYTHON" -m pytest -p no:xdist -q -s -rA -m gpu tests/test_gpu.py
    if ! grep -q "1 passed" "$OUT/conformance.txt"; then
        echo "conformance: the GPU test did not pass (skipped: no CUDA device?)" | tee -a "$OUT/summary.txt"
        failed=1
    fi
else
    echo "conformance: not run: no reference fixtures (VISDIAL_GOLDEN, ../shared/golden, shared/golden)" | tee -a "$OUT/summary.txt"
    failed=1
fi

TOY="$OUT/toy"
# the demo's toy VisDial (utils/benchmarking/toy.py); its data flags, one a line, in flags.txt
step "toy data" 120 "$OUT/toy_data.log" "$PYTHON" -c '
import sys
from utils.benchmarking.toy import make_toy_visdial
flags = make_toy_visdial(sys.argv[1], train_dialogs=1000, val_dialogs=300, test_dialogs=20, whole_image_dialogs=1000)
open(sys.argv[2], "w").write("\n".join(flags) + "\n")' "$TOY/data" "$TOY/flags.txt"
TOY_FLAGS=()
[ -f "$TOY/flags.txt" ] && mapfile -t TOY_FLAGS < "$TOY/flags.txt"
step "toy training" 150 "$OUT/train.log" "$PYTHON" train.py -config config/presets/toy.yml "${TOY_FLAGS[@]}" -seed 0 \
    -save_path "$TOY/runs" -save_name vilbert
step precision 60 "$OUT/precision.txt" "$PYTHON" scripts/benchmark_precision.py "${TOY_FLAGS[@]}" -num_workers 0 \
    -start_path "$TOY/runs/vilbert/visdial_dialog_encoder_2000.ckpt" --compare bf16 tf32 --out "$OUT/precision.json"

# the benchmark gets what is left of 540 s (a row it cuts, and the rows after it, are `not run`)
LIMIT=$(( 540 - SECONDS - 30 ))
[ "$LIMIT" -ge 60 ] || LIMIT=60
step benchmark $(( LIMIT + 40 )) "$OUT/benchmark.txt" "$PYTHON" scripts/benchmark.py -out "$OUT/benchmark.json" \
    --time_limit "$LIMIT" --rows "matmul bf16" "eval bf16" "eval fp32" "input eval" "train bf16" "input train" \
    "dense chunk 100" "eval compiled" "eval reference"
exit $failed
