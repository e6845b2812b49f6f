#!/usr/bin/env bash
# Downloads the preprocessed VisDial v1.0 data to data/visdial/ and the bert-base-uncased vocabulary
# to data/bert-base-uncased/vocab.txt, each checked (docs/data.md).
#   bash scripts/download_preprocessed.sh
# VISDIAL_DATA_URL and VISDIAL_VOCAB_URL replace the base URLs (a mirror).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/usage.sh"
expect_arguments 0 "$@"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/download_common.sh
start_content_checker lmdb numpy

DATA_URL="${VISDIAL_DATA_URL:-https://s3.amazonaws.com/visdial-bert/data}"
VOCAB_URL="${VISDIAL_VOCAB_URL:-https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt}"
VOCAB_SHA256=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3

# Image features of all splits: the remote visdial_image_feats.lmdb is LMDB's data file itself.
download "$DATA_URL/visdial_image_feats.lmdb" data/visdial/visdial_img_feat.lmdb lmdb

for name in train val test train_dense train_dense_annotations val_dense_annotations; do
    download "$DATA_URL/visdial_1.0_${name}_processed.json" "data/visdial/visdial_1.0_${name}_processed.json" json
done

download "$VOCAB_URL" data/bert-base-uncased/vocab.txt "sha256:$VOCAB_SHA256"
echo "[download] data ready in data/visdial/ and data/bert-base-uncased/"
