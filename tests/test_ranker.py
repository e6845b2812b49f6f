"""DialogRanker (utils/evaluation/ranker.py): the probabilities of evaluate.py on the fixture val
split, images given by id, as arrays or in a foreign feature format, the history cut from the
front, and one UserError per bad input."""
import base64
import json

import numpy as np
import pytest
import torch

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import val_option_order
from dataloader.feature_formats import open_image_features
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import encode_texts, load_tokenizer
from options import EvalOptions, parse_options
from tests.test_evaluate import golden_args
from utils.errors import UserError
from utils.evaluation import DialogRanker, RankingQuery
from utils.evaluation import run as evaluation_run
from utils.evaluation.scoring import score_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_SEQ_LEN = 108  # the fixture data's (tests/test_evaluate.py)


@pytest.fixture(scope="module")
def ranker(golden_dir) -> DialogRanker:
    return DialogRanker.from_checkpoint(golden_dir / "model_raw.pt", model_config=golden_dir / "model_config.json",
                                        vocab=golden_dir / "bert-base-uncased-vocab.txt",
                                        features=golden_dir / "visdial_img_feat.lmdb", device="cpu",
                                        max_seq_len=MAX_SEQ_LEN, tokens_per_batch=5000)


@pytest.fixture(scope="module")
def val_data(golden_dir) -> dict:
    return json.loads((golden_dir / "visdial_processed" / "val_processed.json").read_text())["data"]


def val_queries(data: dict) -> list[RankingQuery]:
    """Every round of the val split as a query, its candidates in the order evaluation scores them."""
    texts = data["answers"]
    queries = []
    for dialog in data["dialogs"]:
        rounds = dialog["dialog"]
        for number, turn in enumerate(rounds):
            history = [(data["questions"][t["question"]], texts[t["answer"]]) for t in rounds[:number]]
            candidates = [texts[turn["answer_options"][p]] for p in val_option_order(turn["gt_index"], 100)]
            queries.append(RankingQuery(dialog["image_id"], dialog["caption"], history,
                                        data["questions"][turn["question"]], candidates))
    return queries


def first_query(data: dict) -> RankingQuery:
    return val_queries(data)[3]


@pytest.mark.parametrize("empty", [False, True], ids=["as given", "an empty question and answer"])
def test_every_val_round_gets_the_probabilities_of_evaluate(golden_dir, tmp_path, ranker, empty):
    """Every round, also with an empty question and an empty answer option, which evaluation scores."""
    content = json.loads((golden_dir / "visdial_processed" / "val_processed.json").read_text())
    if empty:
        turn = content["data"]["dialogs"][1]["dialog"][4]
        content["data"]["questions"][turn["question"]] = ""
        content["data"]["answers"][turn["answer_options"][7]] = ""
    (tmp_path / "val.json").write_text(json.dumps(content))
    options = parse_options(golden_args(golden_dir, tmp_path, "-split", "val", "-visdial_processed_val",
                                        str(tmp_path / "val.json")), EvalOptions)
    dataset = evaluation_run.load_split(options)
    model = evaluation_run.load_model(options, dataset, torch.device("cpu"), verbose=False)
    expected = score_dataset(model, dataset, collate_dialog_batch, tokens_per_batch=3000, progress=False).scores
    queries = val_queries(content["data"])
    rankings = ranker.rank_many(queries)
    assert len(rankings) == expected.shape[0] * expected.shape[1] == 30
    for number, (query, ranking) in enumerate(zip(queries, rankings)):
        probabilities = dict(ranking)
        got = torch.tensor([probabilities[candidate] for candidate in query.candidates])
        torch.testing.assert_close(got, expected[number // 10, number % 10], rtol=0, atol=1e-6)
        assert [p for _, p in ranking] == sorted(probabilities.values(), reverse=True)


def test_rank_is_rank_many_and_arrays_rank_like_their_image_id(golden_dir, tmp_path, ranker, val_data):
    query = first_query(val_data)
    by_id = ranker.rank(*query)
    assert by_id == ranker.rank_many([query._asdict()])[0]
    raw = open_feature_store(golden_dir / "visdial_img_feat.lmdb").read_raw(query.image)
    np.savez(tmp_path / "image.npz", **{name: raw[name] for name in ("features", "boxes", "image_w", "image_h")})
    with np.load(tmp_path / "image.npz") as arrays:
        from_arrays = ranker.rank(arrays, *query[1:])
    assert [answer for answer, _ in from_arrays] == [answer for answer, _ in by_id]
    np.testing.assert_allclose([p for _, p in from_arrays], [p for _, p in by_id], rtol=0, atol=1e-6)


def write_tsv(path, records) -> None:
    """The bottom-up-attention TSV of `records` (tests/test_convert_features.py builds it the same way)."""
    lines = []
    for raw in records:
        encoded = [base64.b64encode(np.ascontiguousarray(raw[name], dtype=np.float32).tobytes()).decode()
                   for name in ("boxes", "features")]
        lines.append("\t".join([str(raw["image_id"]), str(raw["image_w"]), str(raw["image_h"]),
                                str(raw["num_boxes"]), *encoded]))
    path.write_text("\n".join(lines) + "\n")


def test_features_in_a_foreign_format_rank_like_the_store(golden_dir, tmp_path, ranker, val_data):
    store = open_feature_store(golden_dir / "visdial_img_feat.lmdb")
    records = [store.read_raw(image_id) for image_id in store.image_ids()]
    write_tsv(tmp_path / "features.tsv", records)
    (tmp_path / "npz").mkdir()
    for raw in records:
        np.savez(tmp_path / "npz" / f"{raw['image_id']}.npz",
                 **{name: raw[name] for name in ("features", "boxes", "image_w", "image_h", "cls_prob")})
    queries = val_queries(val_data)[::7]
    expected = ranker.rank_many(queries)
    tokenizer = load_tokenizer(str(golden_dir / "bert-base-uncased-vocab.txt"))
    for source in (tmp_path / "features.tsv", tmp_path / "npz"):
        notes = []
        features = open_image_features(source, notes.append)
        assert sorted(features.image_ids()) == sorted(store.image_ids())
        imported = DialogRanker(ranker.model, tokenizer, features, max_seq_len=MAX_SEQ_LEN)
        for got, want in zip(imported.rank_many(queries), expected):
            assert [answer for answer, _ in got] == [answer for answer, _ in want]
            np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=0, atol=1e-6)
        assert any("cls_prob" in note for note in notes) == (source.suffix == ".tsv")


def sequence_length(tokenizer, caption, history, question, answer) -> int:
    """Tokens of `[CLS] caption [SEP] (q [SEP] a [SEP])... question [SEP] answer [SEP]`."""
    texts = [caption, *(text for turn in history for text in turn), question, answer]
    return sum(len(ids) + 1 for ids in encode_texts(tokenizer, texts)) + 1


def test_a_long_history_is_cut_from_the_front_and_the_caption_kept(ranker, val_data):
    tokenizer = ranker.encoder.tokenizer
    caption, question = "a dog runs on the beach", "what color is the dog ?"
    candidates = ["brown", "it is a very light shade of brown , almost white"]
    history = [(f"question number {k} about the beach and the waves ?", f"answer number {k} is yes")
               for k in range(12)]
    longest = max(candidates, key=lambda text: len(encode_texts(tokenizer, [text])[0]))
    cut = next(k for k in range(len(history) + 1)
               if sequence_length(tokenizer, caption, history[k:], question, longest) <= MAX_SEQ_LEN)
    assert 0 < cut < len(history)
    item = ranker.encoder.encode(caption, history, question, candidates)
    cut_by_hand = ranker.encoder.encode(caption, history[cut:], question, candidates)
    assert item.keys() == cut_by_hand.keys()
    assert all(np.array_equal(item[name], cut_by_hand[name]) for name in item)
    caption_ids = encode_texts(tokenizer, [caption])[0]
    assert item["tokens"][0, 1:1 + len(caption_ids)].tolist() == caption_ids
    assert item["tokens"].shape[1] == sequence_length(tokenizer, caption, history[cut:], question, longest)
    image = first_query(val_data).image
    assert ranker.rank(image, caption, history, question, candidates) == \
        ranker.rank(image, caption, history[cut:], question, candidates)


def wrong_width_arrays(ranker) -> dict:
    return {"features": np.ones((3, 16), np.float32), "boxes": np.array([[0, 0, 4, 4]] * 3, np.float32),
            "image_w": 8, "image_h": 8}


BAD_QUERIES = {  # what to change in a good query -> words the error must hold
    "no candidates": (dict(candidates=[]), "no candidate"),
    "candidate of a lone surrogate": (dict(candidates=["yes", "n\udcffo"]), "candidate 1 'n\\udcffo' is not valid text"),
    "question of a lone surrogate": (dict(question="is it \ud800 ?"), "the question"),
    "caption of a lone surrogate": (dict(caption="\udfff"), "the caption"),
    "history of a lone surrogate": (dict(history=[("is it sunny ?", "y\udcffs")]), "history entry 0"),
    "repeated candidate": (dict(candidates=["yes", "no", "yes"]), "repeats candidate 0"),
    "image not in the store": (dict(image=123456789), "image 123456789 is not in"),
    "history not pairs": (dict(history=[("is it sunny ?",)]), "history entry 0"),
    "too long even without history": (dict(question="is it " * 120 + "?"), "max_seq_len 108"),
    "features of the wrong width": ("wrong width", "2048"),
    "features with nan": ("nan", "image arrays"),
}


@pytest.mark.parametrize("case", BAD_QUERIES)
def test_bad_input_is_one_user_error(case, ranker, val_data):
    change, words = BAD_QUERIES[case]
    query = first_query(val_data)
    if change == "wrong width":
        query = query._replace(image=wrong_width_arrays(ranker))
    elif change == "nan":
        raw = ranker.features.read_raw(query.image)
        features = raw["features"].copy()
        features[1, 5] = np.nan
        query = query._replace(image={**raw, "features": features})
    else:
        query = query._replace(**change)
    with pytest.raises(UserError) as error:
        ranker.rank(*query)
    assert words in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"^query 1: "):
        ranker.rank_many([first_query(val_data), query])


@pytest.mark.parametrize("parameter, value, problem", [
    ("max_seq_len", "40", "max_seq_len must be an integer, got '40'"),
    ("max_seq_len", 600, "max_seq_len must be in 8..512, got 600"),
    ("max_rounds", 11.0, "max_rounds must be an integer, got 11.0"),
    ("max_rounds", True, "max_rounds must be an integer, got True"),
    ("max_rounds", 1, "max_rounds must be in 2..11 (the caption counts as a round), got 1"),
    ("tokens_per_batch", -1, "tokens_per_batch must be >= 0, got -1"),
    ("precision", ["fp32"], "-precision must be auto or one of fp32, bf16, fp16, got ['fp32']"),
])
def test_a_parameter_of_the_wrong_type_or_range_is_named(parameter, value, problem, golden_dir, ranker):
    """As its flag would be refused; from_checkpoint refuses it before reading any file (here: none exists)."""
    for build in (lambda: DialogRanker(ranker.model, ranker.encoder.tokenizer, **{parameter: value}),
                  lambda: DialogRanker.from_checkpoint(golden_dir / "absent.ckpt", vocab=golden_dir / "absent.txt",
                                                       device="cpu", **{parameter: value})):
        with pytest.raises(UserError) as error:
            build()
        assert str(error.value) == problem
    DialogRanker(ranker.model, ranker.encoder.tokenizer, max_seq_len=np.int64(108), max_rounds=2,
                 tokens_per_batch=0)


def test_features_that_do_not_fit_the_model_config_name_both_files(golden_dir, tmp_path):
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "7.npz", **wrong_width_arrays(None))
    with pytest.raises(UserError) as error:
        DialogRanker.from_checkpoint(golden_dir / "model_raw.pt", model_config=golden_dir / "model_config.json",
                                     vocab=golden_dir / "bert-base-uncased-vocab.txt", features=tmp_path / "npz",
                                     device="cpu", note=lambda line: None)
    assert "model_config.json" in str(error.value) and "npz" in str(error.value)
