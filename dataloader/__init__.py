"""From files to batches: readers (json, image features) that know nothing about BERT, then the
tokenizer, encoding, datasets, collate and the resumable sampling order; and preprocessing."""
