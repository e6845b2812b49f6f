"""Property tests of the input encoding and collation over random dialogs (hypothesis).

Random val dialogs (any number of rounds, empty and unicode strings, any -visdial_tot_rounds)
go through the real pipeline: processed json -> VisdialDataset -> collate_dialog_batch. Every
sequence must hold exactly one [CLS] at position 0, its [SEP]s exactly at sep_indices, the
tokenised utterances in between (the last 2 * visdial_tot_rounds of them when the context has
more rounds, as the reference's pruneRounds), segments constant per utterance and alternating,
attention on `[CLS] .. last [SEP]` only, zeros after it, and its length within -max_seq_len
(a dialog needing exactly max_seq_len tokens is accepted, one more is refused). The tiny model's
scores (eval mode) must not depend on how much padding a batch adds.

Strings never contain "[" or "]": a literal "[SEP]" in a text becomes the special token, as in
the reference's tokenizer (kept on purpose, so it is not fuzzed here).
"""
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset
from models import build_model
from utils.errors import UserError
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import encode_texts, load_tokenizer, special_token_ids

NUM_OPTIONS_IN_FILE = 100
# letters, digits, punctuation, accents, CJK, emoji, combining marks and blanks, never "[" or "]"
TEXT = st.text(st.characters(blacklist_characters="[]", blacklist_categories=("Cs",)), max_size=12)
WORDS = st.lists(st.sampled_from(["what", "colour", "is", "the", "dog", "yes", "no", "2", "?", "çà", "猫", "😀"]),
                 max_size=6).map(" ".join)
UTTERANCE = st.one_of(TEXT, WORDS, st.just(""))


@pytest.fixture(scope="module")
def tokenizer(golden_dir):
    return load_tokenizer(str(golden_dir / "bert-base-uncased-vocab.txt"))


@pytest.fixture(scope="module")
def features(golden_dir):
    return open_feature_store(golden_dir / "visdial_img_feat.lmdb")


@pytest.fixture(scope="module")
def model(golden_dir):
    torch.manual_seed(0)
    return build_model(golden_dir / "model_config.json").eval()


@st.composite
def val_files(draw, image_ids):
    """(processed val content, dense annotations) of 1-2 random dialogs with 1-10 rounds."""
    questions = draw(st.lists(UTTERANCE, min_size=1, max_size=6))
    answers = draw(st.lists(UTTERANCE, min_size=1, max_size=6))
    dialogs, annotations = [], []
    num_rounds = draw(st.integers(1, 10))  # val items of one batch have the same number of rounds
    for image_id in image_ids[:draw(st.integers(1, 2))]:
        rounds = []
        for _ in range(num_rounds):
            answer = draw(st.integers(0, len(answers) - 1))
            gt_index = draw(st.integers(0, NUM_OPTIONS_IN_FILE - 1))
            options = draw(st.lists(st.integers(0, len(answers) - 1), min_size=NUM_OPTIONS_IN_FILE,
                                    max_size=NUM_OPTIONS_IN_FILE))
            options[gt_index] = answer
            rounds.append({"question": draw(st.integers(0, len(questions) - 1)), "answer": answer,
                           "answer_options": options, "gt_index": gt_index})
        dialogs.append({"image_id": image_id, "caption": draw(UTTERANCE), "dialog": rounds})
        annotations.append({"image_id": image_id, "round_id": draw(st.integers(1, len(rounds))),
                            "gt_relevance": [0.0] * NUM_OPTIONS_IN_FILE})
    content = {"version": "1.0", "split": "val", "data": {"questions": questions, "answers": answers,
                                                          "dialogs": dialogs}}
    return content, annotations


def write_files(folder, content, annotations):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "val.json").write_text(json.dumps(content))
    (folder / "dense.json").write_text(json.dumps(annotations))
    return folder / "val.json", folder / "dense.json"


def expected_utterances(content, tokenizer, dialog_index: int, round_index: int, option_position: int,
                        max_rounds: int) -> tuple[list[list[int]], int]:
    """The tokenised utterances of one val sequence and its start segment, from the docstring rule."""
    data = content["data"]
    dialog = data["dialogs"][dialog_index]
    texts = [dialog["caption"]]
    for turn in dialog["dialog"][:round_index]:
        texts += [data["questions"][turn["question"]], data["answers"][turn["answer"]]]
    turn = dialog["dialog"][round_index]
    texts += [data["questions"][turn["question"]], data["answers"][turn["answer_options"][option_position]]]
    pruned = round_index + 2 > max_rounds  # caption + rounds 1..round_index+1
    if pruned:
        texts = texts[-2 * max_rounds:]
    return encode_texts(tokenizer, texts), 0 if pruned else 1


def option_positions(turn, num_options: int) -> list[int]:
    """Json positions of a val round's options in item order: ground truth, then the others."""
    return [turn["gt_index"]] + [p for p in range(NUM_OPTIONS_IN_FILE) if p != turn["gt_index"]][:num_options - 1]


def check_sequence(batch, row: int, utterances: list[list[int]], start_segment: int, special: dict) -> None:
    tokens, segments = batch["tokens"][row].tolist(), batch["segments"][row].tolist()
    hist_len = int(batch["hist_len"][row])
    seps = batch["sep_indices"][row].tolist()
    length = seps[hist_len] + 1
    assert hist_len == len(utterances) - 1
    assert tokens[0] == special["CLS"] and tokens.count(special["CLS"]) == 1
    assert [i for i, token in enumerate(tokens) if token == special["SEP"]] == seps[:hist_len + 1]
    assert all(position == 0 for position in seps[hist_len + 1:])
    assert batch["attention_mask"][row].tolist() == [i < length for i in range(len(tokens))]
    assert tokens[length:] == [0] * (len(tokens) - length) and segments[length:] == [0] * (len(tokens) - length)
    assert segments[0] == start_segment
    start = 1
    for number, (utterance, sep) in enumerate(zip(utterances, seps)):
        assert tokens[start:sep] == utterance
        assert set(segments[start:sep + 1]) <= {start_segment ^ (number & 1)}
        start = sep + 1


def build(paths, tokenizer, features, max_rounds, num_options, max_seq_len):
    return VisdialDataset("val", paths[0], features, tokenizer, paths[1], max_seq_len=max_seq_len,
                          num_options=num_options, visdial_tot_rounds=max_rounds)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data(), max_rounds=st.integers(2, 11), num_options=st.integers(2, 3))
def test_encoded_batches_keep_the_layout_invariants(data, max_rounds, num_options, tokenizer, features,
                                                    tmp_path_factory):
    image_ids = sorted(features.image_ids())
    content, annotations = data.draw(val_files(image_ids))
    paths = write_files(tmp_path_factory.mktemp("fuzz"), content, annotations)
    special = special_token_ids(tokenizer)
    dataset = build(paths, tokenizer, features, max_rounds, num_options, 512)
    longest = max(int(dataset[index]["sep_indices"].max()) + 1 for index in range(len(dataset)))

    # the boundary: a dialog needing exactly max_seq_len tokens fits, one token less is refused
    dataset = build(paths, tokenizer, features, max_rounds, num_options, longest)
    batch = collate_dialog_batch([dataset[index] for index in range(len(dataset))])
    assert batch["tokens"].shape[1] == longest
    if longest > 8:
        short = build(paths, tokenizer, features, max_rounds, num_options, longest - 1)
        with pytest.raises(UserError, match=f"needs {longest} tokens, more than -max_seq_len {longest - 1}"):
            [short[index] for index in range(len(short))]

    row = 0
    for dialog_index, dialog in enumerate(content["data"]["dialogs"]):
        for round_index, turn in enumerate(dialog["dialog"]):
            for position in option_positions(turn, num_options):
                utterances, start_segment = expected_utterances(content, tokenizer, dialog_index, round_index,
                                                                position, max_rounds)
                check_sequence(batch, row, utterances, start_segment, special)
                assert int(batch["image_index"][row]) == dialog_index
                row += 1
    assert row == batch["tokens"].shape[0]
    assert (batch["lm_labels"] == -1).all()


def nsp_scores(model, batch, extra_padding: int = 0) -> torch.Tensor:
    pad = (0, extra_padding)
    with torch.no_grad():
        out = model(torch.nn.functional.pad(batch["tokens"], pad), torch.nn.functional.pad(batch["segments"], pad),
                    torch.nn.functional.pad(batch["attention_mask"], pad), batch["image_feat"], batch["image_loc"],
                    batch["image_mask"], image_index=batch["image_index"], output_lm_scores=False,
                    output_img_scores=False)
    return torch.softmax(out.nsp_scores, -1)[:, 0]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data(), extra_padding=st.integers(1, 40))
def test_scores_do_not_depend_on_padding(data, extra_padding, tokenizer, features, model, tmp_path_factory):
    image_ids = sorted(features.image_ids())
    content, annotations = data.draw(val_files(image_ids))
    paths = write_files(tmp_path_factory.mktemp("fuzz"), content, annotations)
    dataset = build(paths, tokenizer, features, 11, 2, 512)
    items = [dataset[index] for index in range(len(dataset))]
    together = nsp_scores(model, collate_dialog_batch(items))
    padded = nsp_scores(model, collate_dialog_batch(items), extra_padding)
    alone = torch.cat([nsp_scores(model, collate_dialog_batch([item])) for item in items])
    torch.testing.assert_close(padded, together, rtol=0, atol=1e-5)
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-5)
