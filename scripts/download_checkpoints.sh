#!/usr/bin/env bash
# Downloads the released checkpoints to checkpoints-release/ (the reference's file names):
#   basemodel                      pretrained on Conceptual Captions and VQA, finetuned on VisDial
#   basemodel_dense                basemodel + dense-annotation finetuning
#   basemodel_dense_nsp            basemodel + dense-annotation finetuning + NSP loss
#   vqa_pretrained_weights         ViLBERT pretrained on Conceptual Captions and VQA (start of training)
#   concep_cap_pretrained_weights  ViLBERT pretrained on Conceptual Captions
#   bash scripts/download_checkpoints.sh                   # all of them
#   bash scripts/download_checkpoints.sh basemodel_dense   # only the ones named
# VISDIAL_CKPT_URL replaces the base URL (a mirror). Every file is checked before it is put in place
# (size, and `torch.load(weights_only=True)` opens it; see download_common.sh); reruns resume partial
# files and check, then skip, complete ones. Exit code 2 and one `error:` line when a file cannot be
# fetched or fails its check.
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
