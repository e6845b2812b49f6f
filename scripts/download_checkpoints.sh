#!/usr/bin/env bash
# Downloads the released checkpoints to checkpoints-release/ (basemodel, basemodel_dense,
# basemodel_dense_nsp, vqa_pretrained_weights, concep_cap_pretrained_weights), each checked (docs/data.md).
#   bash scripts/download_checkpoints.sh                   # all of them
#   bash scripts/download_checkpoints.sh basemodel_dense   # only the ones named
# VISDIAL_CKPT_URL replaces the base URL (a mirror).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/usage.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/download_common.sh

CKPT_URL="${VISDIAL_CKPT_URL:-https://s3.amazonaws.com/visdial-bert/checkpoints}"
CHECKPOINTS="basemodel basemodel_dense basemodel_dense_nsp vqa_pretrained_weights concep_cap_pretrained_weights"

remote_name() {  # NAME in checkpoints-release/ -> the file's name on the server
    case "$1" in
        basemodel) echo bestmodel_no_dense_finetuning ;;
        basemodel_dense) echo bestmodel_plus_dense ;;
        basemodel_dense_nsp) echo bestmodel_plus_dense_plus_nsp ;;
        vqa_pretrained_weights) echo vqa_weights ;;
        concep_cap_pretrained_weights) echo concep_cap_weights ;;
        *) return 1 ;;
    esac
}

[ $# -gt 0 ] || set -- $CHECKPOINTS
for name in "$@"; do
    remote_name "$name" >/dev/null || fail "unknown checkpoint '$name' (known: $CHECKPOINTS)"
done
start_content_checker torch

for name in "$@"; do
    download "$CKPT_URL/$(remote_name "$name")" "checkpoints-release/$name" checkpoint
done
echo "[download] checkpoints ready in checkpoints-release/"
