#!/usr/bin/env bash
# The whole system on a generated toy VisDial, zero downloads, about three minutes on 2 CPU cores:
# ViLBERT and the language-only baseline trained side by side, scored per question type (docs/learning.md).
#   bash scripts/demo.sh
# DEMO_DIR (default: demo_output, only a folder the demo made, a new or an empty one) and DEMO_SEED.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/usage.sh"
expect_arguments 0 "$@"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEMO_DIR="${DEMO_DIR:-demo_output}"
DEMO_MARK="$DEMO_DIR/.made-by-demo.sh"
if [ -e "$DEMO_DIR" ] && [ ! -f "$DEMO_MARK" ] && [ -n "$(ls -A "$DEMO_DIR" 2>/dev/null || echo not-a-folder)" ]; then
    echo "error: $DEMO_DIR: DEMO_DIR exists and was not made by scripts/demo.sh (no .made-by-demo.sh in it), so it is not deleted; set DEMO_DIR to a new folder" >&2
    exit 2
fi
source scripts/setup_env.sh

SEED="${DEMO_SEED:-0}"
DATA="$DEMO_DIR/data"
RUNS="$DEMO_DIR/checkpoints"
started=$SECONDS
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # two processes at a time on 2 cores, one thread each

step() { printf '\n== [%3ds] %s\n' "$((SECONDS - started))" "$1"; }

# A toy question needs at most the caption or the previous round: -visdial_tot_rounds 2.
DATA_FLAGS=(
    -visdial_tot_rounds 2
    -vocab "$DATA/vocab.txt"
    -model_config "$DATA/model_config.json"
    -visdial_image_feats "$DATA/visdial_img_feat.lmdb"
    -visdial_processed_train "$DATA/visdial_1.0_train_processed.json"
    -visdial_processed_val "$DATA/visdial_1.0_val_processed.json"
    -visdial_processed_test "$DATA/visdial_1.0_test_processed.json"
    -visdial_processed_val_dense_annotations "$DATA/visdial_1.0_val_dense_annotations_processed.json"
)

newest_checkpoint() {  # RUN_FOLDER -> its checkpoint with the highest iteration number
    ls "$1"/visdial_dialog_encoder_[0-9]*.ckpt | sort -V | tail -n 1
}

wait_for() {  # PID WHAT LOG: wait for a background job; on failure show its log's end and stop
    if ! wait "$1"; then
        tail -n 5 "$3" >&2
        echo "error: $2 failed (log: $3)" >&2
        exit 2
    fi
}

step "1/6 generating the toy VisDial in $DATA and preprocessing it (preprocessing/pre_process_visdial.py)"
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR" "$RUNS" && touch "$DEMO_MARK"
python preprocessing/make_toy_data.py -out "$DATA" -seed "$SEED" -train_dialogs 1000 -whole_image_dialogs 1000 \
    -val_dialogs 30 -test_dialogs 20 > "$DEMO_DIR/data.log"
PREPROCESS_FLAGS=(-vocab "$DATA/vocab.txt" -quiet)
for name in train val test; do
    PREPROCESS_FLAGS+=(-"visdial_$name" "$DATA/visdial_1.0_$name.json"
                       -"save_path_$name" "$DATA/visdial_1.0_${name}_processed.json")
done
python preprocessing/pre_process_visdial.py "${PREPROCESS_FLAGS[@]}" \
    -visdial_val_ndcg "$DATA/visdial_1.0_val_dense_annotations.json" \
    -visdial_train_ndcg "$DATA/visdial_1.0_train_dense_annotations.json" \
    -save_path_train_dense_samples "$DATA/visdial_1.0_train_dense_processed.json" \
    -save_path_val_ndcg "$DATA/visdial_1.0_val_dense_annotations_processed.json" \
    -save_path_train_ndcg "$DATA/visdial_1.0_train_dense_annotations_processed.json"

step "2/6 training ViLBERT and the language-only baseline side by side (train.py -config config/presets/toy.yml)"
declare -A training_jobs
for model in vilbert language_only; do
    python train.py -config config/presets/toy.yml "${DATA_FLAGS[@]}" -seed "$SEED" -model_type "$model" \
        -save_path "$RUNS" -save_name "$model" > "$RUNS/$model.log" 2>&1 &
    training_jobs[$model]=$!
done
for model in vilbert language_only; do
    wait_for "${training_jobs[$model]}" "training $model" "$RUNS/$model.log"
    echo "$model: $(tr '\r' '\n' < "$RUNS/$model.log" | grep -E '^\[.*Iter' | tail -n 1)"
done
CHECKPOINT="$(newest_checkpoint "$RUNS/vilbert")"
BASELINE_CHECKPOINT="$(newest_checkpoint "$RUNS/language_only")"
EVAL_FLAGS=("${DATA_FLAGS[@]}" -num_workers 0 -save_path "$DEMO_DIR")
QUESTION_TYPES="$DATA/visdial_1.0_val_question_types.json"

step "3/6 test predictions for EvalAI (evaluate.py -split test) and the baseline's val metrics per question type"
python evaluate.py -split test "${EVAL_FLAGS[@]}" -start_path "$CHECKPOINT" -save_name test \
    > "$DEMO_DIR/test.log" 2>&1 &
test_job=$!
python evaluate.py -split val "${EVAL_FLAGS[@]}" -model_type language_only -start_path "$BASELINE_CHECKPOINT" \
    -save_name language_only_val -question_types "$QUESTION_TYPES" > "$DEMO_DIR/language_only_val.log" 2>&1 &
baseline_job=$!
wait_for "$test_job" "scoring the test split" "$DEMO_DIR/test.log"
wait_for "$baseline_job" "scoring val with the baseline" "$DEMO_DIR/language_only_val.log"
grep -h "^wrote" "$DEMO_DIR/test.log" "$DEMO_DIR/language_only_val.log"

step "4/6 ViLBERT's val metrics, pointing score and report (evaluate.py -split val -question_types -report -images)"
python evaluate.py -split val "${EVAL_FLAGS[@]}" -start_path "$CHECKPOINT" -save_name val -report "$DEMO_DIR/report" \
    -images "$DATA/images" -question_types "$QUESTION_TYPES" \
    -compare_metrics "language_only=$DEMO_DIR/language_only_val_metrics.json" \
    > "$DEMO_DIR/val.log" 2>&1 || { tail -n 5 "$DEMO_DIR/val.log" >&2; exit 2; }
sed -n '/^MRR/p; /^NDCG/p; /^wrote/p' "$DEMO_DIR/val.log"

CHAT_IMAGE=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["data"]["dialogs"][0]["image_id"])' \
    "$DATA/visdial_1.0_val_processed.json")
step "5/6 chat about val image $CHAT_IMAGE (scripts/chat.py, three questions from its dialog, then :why)"
python -c 'import json, sys
data = json.load(open(sys.argv[1]))["data"]
print("\n".join(data["questions"][turn["question"]] for turn in data["dialogs"][0]["dialog"][:3]) + "\n:why")' \
    "$DATA/visdial_1.0_val_processed.json" |
python scripts/chat.py -start_path "$CHECKPOINT" -model_config "$DATA/model_config.json" \
    -vocab "$DATA/vocab.txt" -visdial_image_feats "$DATA/visdial_img_feat.lmdb" -visdial_tot_rounds 2 \
    -dialogs "$DATA/visdial_1.0_val_processed.json" -image_id "$CHAT_IMAGE"

step "6/6 what each model learned: val MRR and R@1 per question type (random: a random ranking of the same rounds)"
cat <<SUMMARY
  toy data           $DATA/
  checkpoints        $CHECKPOINT
                     $BASELINE_CHECKPOINT
  val metrics        $DEMO_DIR/val_metrics.json, $DEMO_DIR/language_only_val_metrics.json
  report             $DEMO_DIR/report/index.html
  test predictions   $DEMO_DIR/test_predictions.json  (the EvalAI upload format)

SUMMARY
sed -n '/^question type/,/^all /p' "$DEMO_DIR/val.log"
echo
sed -n '/^pointing/,/^existence/p' "$DEMO_DIR/val.log"
python - "$DEMO_DIR" "$((SECONDS - started))" <<'PYTHON'
import json
import sys

folder, seconds = sys.argv[1], sys.argv[2]
vilbert = json.load(open(f"{folder}/val_metrics.json"))
language_only = json.load(open(f"{folder}/language_only_val_metrics.json"))
print(f"demo: vilbert_mrr={vilbert['mrr']:.4f} language_only_mrr={language_only['mrr']:.4f} "
      f"image_vilbert_mrr={vilbert['mrr_type_one_hop']:.4f} "
      f"image_language_only_mrr={language_only['mrr_type_one_hop']:.4f} "
      f"pointing_vilbert={vilbert['pointing_binding']:.4f} seconds={seconds}")
PYTHON
