#!/usr/bin/env bash
# Downloads the preprocessed VisDial v1.0 data to data/visdial/ (the reference's file names) and
# the bert-base-uncased WordPiece vocabulary to data/bert-base-uncased/vocab.txt (`-vocab` flag).
#   bash scripts/download_preprocessed.sh
# VISDIAL_DATA_URL replaces the base URL of the data files (a mirror); VISDIAL_VOCAB_URL the vocab's.
# Rerunning resumes partial files and skips complete ones.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/download_common.sh

DATA_URL="${VISDIAL_DATA_URL:-https://s3.amazonaws.com/visdial-bert/data}"
VOCAB_URL="${VISDIAL_VOCAB_URL:-https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt}"
VOCAB_SHA256=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3

# Image features of all splits (LMDB; the reference names the remote file visdial_image_feats.lmdb).
download "$DATA_URL/visdial_image_feats.lmdb" data/visdial/visdial_img_feat.lmdb

# Preprocessed dialogs, the train dialogs with dense annotations, and the dense annotations.
for name in train val test train_dense train_dense_annotations val_dense_annotations; do
    download "$DATA_URL/visdial_1.0_${name}_processed.json" "data/visdial/visdial_1.0_${name}_processed.json"
done

download "$VOCAB_URL" data/bert-base-uncased/vocab.txt "$VOCAB_SHA256"
echo "[download] data ready in data/visdial/ and data/bert-base-uncased/"
