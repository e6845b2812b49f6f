"""The BERT WordPiece tokenizer, configured like the reference's (bert-base-uncased, no special tokens).

Two traps of transformers 5: `BertTokenizer(vocab_file=path)` silently ignores the file (every word
becomes [UNK]), so the vocabulary is read here and passed as a dict; and `encode` adds [CLS]/[SEP],
which the reference's pytorch-transformers 1.2.0 did not, so `encode_texts` asks for none.
"""
from __future__ import annotations

import socket
from pathlib import Path

from utils.errors import UserError
from utils.inputs import read_text

REQUIRED_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MIN_VOCABULARY_SIZE = 1000
MAX_VOCABULARY_BYTES = 64 << 20
"""A vocab.txt of 64 MiB would hold millions of word pieces (bert-base-uncased's has 0.2 MiB)."""


def load_tokenizer(vocab: str):
    """A lower-casing `transformers.BertTokenizer` from a WordPiece vocab.txt, a folder holding one
    (or a saved tokenizer), or a hub name (needs a network or the hub cache); UserError naming
    `vocab` when it cannot be loaded or lacks the BERT special tokens."""
    path = Path(vocab)
    if path.is_dir() and (path / "vocab.txt").exists():
        path = path / "vocab.txt"
    if path.exists() and not path.is_dir():  # a regular text file of a sane size, not a device
        lines = read_text(path, "vocabulary file", MAX_VOCABULARY_BYTES).removesuffix("\n").split("\n")
    from transformers import BertTokenizer

    try:
        if path.is_file():
            tokenizer = BertTokenizer({token: index for index, token in enumerate(lines)}, do_lower_case=True)
        elif path.is_dir():
            tokenizer = BertTokenizer.from_pretrained(str(path), do_lower_case=True)
        elif len(path.parts) > 2 or str(vocab).endswith(".txt"):
            raise UserError(f"{vocab}: vocabulary file not found")
        else:
            tokenizer = _from_hub(str(vocab))
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{vocab}: cannot load a BERT vocabulary (not a vocab.txt, a tokenizer folder, "
                        f"or a hub name reachable offline): {type(error).__name__}") from None
    vocabulary = tokenizer.get_vocab()
    missing = [token for token in REQUIRED_SPECIAL_TOKENS if token not in vocabulary]
    if missing or len(vocabulary) < MIN_VOCABULARY_SIZE:
        raise UserError(f"{vocab}: not a BERT WordPiece vocabulary ({len(vocabulary)} entries"
                        + (f", missing {', '.join(missing)})" if missing else ")"))
    return tokenizer


def _from_hub(name: str):
    """A tokenizer by hub name: from the local hub cache, else downloaded when the hub is reachable."""
    from transformers import BertTokenizer

    try:
        cached = BertTokenizer.from_pretrained(name, do_lower_case=True, local_files_only=True)
        if len(cached.get_vocab()) >= MIN_VOCABULARY_SIZE:  # transformers 5 returns an empty one if absent
            return cached
    except OSError:
        pass
    try:
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError:
        raise UserError(f"{name}: not a local vocabulary file or folder, and the Hugging Face hub is "
                        "unreachable (offline?); pass -vocab path/to/vocab.txt") from None
    return BertTokenizer.from_pretrained(name, do_lower_case=True)


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of every text (one batch call), without [CLS]/[SEP], as the reference's `encode`."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: ~10x less overhead per string than __call__
        return [encoding.ids for encoding in backend.encode_batch(list(texts), add_special_tokens=False)]
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def special_token_ids(tokenizer) -> dict[str, int]:
    """Ids of the tokens the encoders insert: {'CLS': .., 'SEP': .., 'MASK': .., 'PAD': ..}."""
    cls_id, sep_id, mask_id, pad_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", "[MASK]", "[PAD]"])
    return {"CLS": cls_id, "SEP": sep_id, "MASK": mask_id, "PAD": pad_id}
