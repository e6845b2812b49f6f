"""Tokenizer: ids equal the reference's on every fixture text; clear errors for bad vocabularies."""
import json

import pytest
import torch

from utils.errors import UserError
from dataloader.tokenizer import encode_texts, load_tokenizer, special_token_ids


@pytest.fixture(scope="module")
def tokenizer(golden_dir):
    return load_tokenizer(str(golden_dir / "bert-base-uncased-vocab.txt"))


def split_at_separators(sequence: list[int], sep: int) -> list[list[int]]:
    """[CLS] u1 [SEP] u2 [SEP] ... 0 0 -> [u1, u2, ...]."""
    utterances, current = [], []
    for token in sequence[1:]:
        if token == sep:
            utterances.append(current)
            current = []
        elif token == 0:
            break
        else:
            current.append(token)
    return utterances


def test_ids_equal_reference_on_every_fixture_text(golden_dir, tokenizer):
    items = torch.load(golden_dir / "dataset_items.pt", weights_only=True)
    sep = items["meta"]["SEP"]
    processed = golden_dir / "visdial_processed"
    for split, file_name in (("val", "val_processed.json"), ("test", "test_processed.json")):
        data = json.loads((processed / file_name).read_text())["data"]
        questions, answers = encode_texts(tokenizer, data["questions"]), encode_texts(tokenizer, data["answers"])
        for dialog, item in zip(data["dialogs"], items[split]):
            caption = encode_texts(tokenizer, [dialog["caption"]])[0]
            rounds = dialog["dialog"]
            last = len(rounds) - 1 if split == "test" else 0
            history = [caption]
            for turn in rounds[:last]:
                history += [questions[turn["question"]], answers[turn["answer"]]]
            history.append(questions[rounds[last]["question"]])
            for option_position, sequence in enumerate(item["tokens"][0].long().tolist()):
                option = rounds[last]["answer_options"][option_position] if split == "test" else rounds[0]["answer"]
                assert split_at_separators(sequence, sep) == history + [answers[option]]
                if split == "val":
                    break


def test_no_special_tokens_and_vocabulary_is_used(tokenizer):
    ids = encode_texts(tokenizer, ["Is the café open?", ""])
    assert ids[1] == []
    assert 101 not in ids[0] and 102 not in ids[0]
    assert tokenizer.convert_ids_to_tokens(ids[0]) == ["is", "the", "cafe", "open", "?"]
    assert special_token_ids(tokenizer) == {"CLS": 101, "SEP": 102, "MASK": 103, "PAD": 0}


def test_folder_with_vocab(golden_dir, tmp_path, tokenizer):
    (tmp_path / "vocab.txt").write_text((golden_dir / "bert-base-uncased-vocab.txt").read_text())
    folder_tokenizer = load_tokenizer(str(tmp_path))
    assert encode_texts(folder_tokenizer, ["a laptop"]) == encode_texts(tokenizer, ["a laptop"])


@pytest.mark.parametrize("make_vocab, message", [
    (lambda tmp: tmp / "missing" / "vocab.txt", "vocabulary file not found"),
    (lambda tmp: tmp, "not a BERT WordPiece vocabulary"),
])
def test_bad_vocabularies(tmp_path, make_vocab, message):
    with pytest.raises(UserError, match=message):
        load_tokenizer(str(make_vocab(tmp_path)))


def test_small_vocab_file_is_refused(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("hello\nworld\n")
    with pytest.raises(UserError, match=f"{vocab}: not a BERT WordPiece vocabulary"):
        load_tokenizer(str(vocab))
