#!/usr/bin/env bash
# The whole system on a generated toy VisDial, with zero downloads, in about three minutes on CPU:
#   bash scripts/demo.sh
# Sets up .venv (like scripts/test.sh), generates the toy data, preprocesses it with the real
# preprocessing script, trains the base objective (MLM + NSP + masked regions), finetunes on the
# dense annotations, evaluates val (metrics table + HTML report) and test (EvalAI submission file).
# DEMO_DIR (default: demo_output) is where everything goes; DEMO_SEED changes the toy data and the runs.
# The demo deletes DEMO_DIR when it starts, so it only takes a folder it made itself (marked by the
# file .made-by-demo.sh), a new one, or an empty one: anything else is refused before any work.
set -euo pipefail
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

step() { printf '\n== [%3ds] %s\n' "$((SECONDS - started))" "$1"; }

# The processed files and features every train.py / evaluate.py call reads; the toy questions
# never need the history, so sequences keep only the previous round (-visdial_tot_rounds 2). The
# model config is the one the generator writes: its vocab_size fits this data's vocabulary.
DATA_FLAGS=(
    -visdial_tot_rounds 2
    -vocab "$DATA/vocab.txt"
    -model_config "$DATA/model_config.json"
    -visdial_image_feats "$DATA/visdial_img_feat.lmdb"
    -visdial_processed_train "$DATA/visdial_1.0_train_processed.json"
    -visdial_processed_val "$DATA/visdial_1.0_val_processed.json"
    -visdial_processed_test "$DATA/visdial_1.0_test_processed.json"
    -visdial_processed_train_dense "$DATA/visdial_1.0_train_dense_processed.json"
    -visdial_processed_train_dense_annotations "$DATA/visdial_1.0_train_dense_annotations_processed.json"
    -visdial_processed_val_dense_annotations "$DATA/visdial_1.0_val_dense_annotations_processed.json"
)

newest_checkpoint() {  # RUN_FOLDER -> its checkpoint with the highest iteration number
    ls "$1"/visdial_dialog_encoder_[0-9]*.ckpt | sort -V | tail -n 1
}

step "1/6 generating the toy VisDial in $DATA"
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR" && touch "$DEMO_MARK"
python preprocessing/make_toy_data.py -out "$DATA" -seed "$SEED" -val_dialogs 20

step "2/6 preprocessing it (preprocessing/pre_process_visdial.py)"
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

step "3/6 base training: MLM + NSP + masked regions (train.py -mode base)"
python train.py -config config/presets/toy.yml "${DATA_FLAGS[@]}" -seed "$SEED" \
    -max_iterations 100 -total_steps 100 -save_path "$RUNS" -save_name base
BASE_CHECKPOINT="$(newest_checkpoint "$RUNS/base")"

step "4/6 dense-annotation finetuning (train.py -mode dense)"
python train.py -config config/presets/toy.yml "${DATA_FLAGS[@]}" -seed "$SEED" \
    -mode dense -nsp_loss_coeff 1 -batch_size 100 -lr 1e-3 -image_lr 1e-3 -warmup_steps 10 \
    -max_iterations 120 -total_steps 120 -start_path "$BASE_CHECKPOINT" -save_path "$RUNS" -save_name dense
DENSE_CHECKPOINT="$(newest_checkpoint "$RUNS/dense")"

step "5/6 val metrics and report (evaluate.py -split val)"
python evaluate.py -split val "${DATA_FLAGS[@]}" -num_workers 0 \
    -start_path "$DENSE_CHECKPOINT" -save_path "$DEMO_DIR" -save_name val -report "$DEMO_DIR/report"

step "6/6 test predictions for EvalAI (evaluate.py -split test)"
python evaluate.py -split test "${DATA_FLAGS[@]}" -num_workers 0 \
    -start_path "$DENSE_CHECKPOINT" -save_path "$DEMO_DIR" -save_name test

step "done in $((SECONDS - started)) s"
cat <<SUMMARY
  toy data           $DATA/
  base checkpoint    $BASE_CHECKPOINT
  dense checkpoint   $DENSE_CHECKPOINT
  val metrics        $DEMO_DIR/val_metrics.json
  report             $DEMO_DIR/report/index.html
  test predictions   $DEMO_DIR/test_predictions.json  (the EvalAI upload format)
SUMMARY

# Chat with the trained model about the first val image (scripts/chat.py): its first three
# questions are asked; the model's top answers go into the history.
CHAT_IMAGE=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["data"]["dialogs"][0]["image_id"])' \
    "$DATA/visdial_1.0_val_processed.json")
step "chat about val image $CHAT_IMAGE (scripts/chat.py, three questions from its dialog)"
python -c 'import json, sys
data = json.load(open(sys.argv[1]))["data"]
print("\n".join(data["questions"][turn["question"]] for turn in data["dialogs"][0]["dialog"][:3]))' \
    "$DATA/visdial_1.0_val_processed.json" |
python scripts/chat.py -start_path "$DENSE_CHECKPOINT" -model_config "$DATA/model_config.json" \
    -vocab "$DATA/vocab.txt" -visdial_image_feats "$DATA/visdial_img_feat.lmdb" -visdial_tot_rounds 2 \
    -dialogs "$DATA/visdial_1.0_val_processed.json" -image_id "$CHAT_IMAGE"
