#!/usr/bin/env bash
# Downloads the released checkpoints to checkpoints-release/ (the reference's file names):
#   basemodel                      pretrained on Conceptual Captions and VQA, finetuned on VisDial
#   basemodel_dense                basemodel + dense-annotation finetuning
#   basemodel_dense_nsp            basemodel + dense-annotation finetuning + NSP loss
#   vqa_pretrained_weights         ViLBERT pretrained on Conceptual Captions and VQA (start of training)
#   concep_cap_pretrained_weights  ViLBERT pretrained on Conceptual Captions
#   bash scripts/download_checkpoints.sh
# VISDIAL_CKPT_URL replaces the base URL (a mirror). Reruns resume partial files, skip complete ones.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/download_common.sh

CKPT_URL="${VISDIAL_CKPT_URL:-https://s3.amazonaws.com/visdial-bert/checkpoints}"

download "$CKPT_URL/bestmodel_no_dense_finetuning" checkpoints-release/basemodel
download "$CKPT_URL/bestmodel_plus_dense" checkpoints-release/basemodel_dense
download "$CKPT_URL/bestmodel_plus_dense_plus_nsp" checkpoints-release/basemodel_dense_nsp
download "$CKPT_URL/vqa_weights" checkpoints-release/vqa_pretrained_weights
download "$CKPT_URL/concep_cap_weights" checkpoints-release/concep_cap_pretrained_weights
echo "[download] checkpoints ready in checkpoints-release/"
