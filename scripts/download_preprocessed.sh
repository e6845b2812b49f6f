#!/usr/bin/env bash
# Downloads the preprocessed VisDial v1.0 data to data/visdial/ (the reference's file names) and
# the bert-base-uncased WordPiece vocabulary to data/bert-base-uncased/vocab.txt (`-vocab` flag).
#   bash scripts/download_preprocessed.sh
# VISDIAL_DATA_URL replaces the base URL of the data files (a mirror); VISDIAL_VOCAB_URL the vocab's.
# Every file is checked before it is put in place (size, LMDB, JSON, the vocab's sha256; see
# download_common.sh); reruns resume partial files and check, then skip, complete ones. Exit code 2
# and one `error:` line when a file cannot be fetched or fails its check.
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

# Preprocessed dialogs, the train dialogs with dense annotations, and the dense annotations.
for name in train val test train_dense train_dense_annotations val_dense_annotations; do
    download "$DATA_URL/visdial_1.0_${name}_processed.json" "data/visdial/visdial_1.0_${name}_processed.json" json
done

download "$VOCAB_URL" data/bert-base-uncased/vocab.txt "sha256:$VOCAB_SHA256"
echo "[download] data ready in data/visdial/ and data/bert-base-uncased/"
