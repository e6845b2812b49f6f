"""From files to batches: json readers (visdial_json.py), image feature stores (feature_store.py),
the tokenizer, input encoding, datasets, collate, the resumable sampling order (sampling.py) and
the preprocessing length rules (preprocess.py). Readers know nothing about BERT; datasets do."""
