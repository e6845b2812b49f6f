"""Which regions an answer looked at (utils/evaluation/explain.py, DialogRanker(explain=True)) and the
pointing score (utils/evaluation/pointing.py), on the reference fixtures' model and val split: the
co-attention probabilities are the ones the model weighs the regions with and change no output, the
weights are a distribution over the real regions (0 on padding) of the current round's tokens, the
ranking is the same with and without explain, and the pointing score counts hits as defined."""

import pytest
import torch

from dataloader.collate import collate_dialog_batch
from dataloader.question_types import load_question_types, write_question_types
from dataloader.tokenizer import encode_texts
from models.layers import merge_heads, split_heads
from tests.test_ranker import MAX_SEQ_LEN, ranker, val_data, val_queries  # noqa: F401 (the fixtures)
from utils.errors import UserError
from utils.evaluation import DialogRanker
from utils.evaluation.explain import current_round_tokens, pointing_chance, points_at
from utils.evaluation.pointing import pointing_metrics
from utils.evaluation.scoring import score_sequences

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def batch_of(ranker: DialogRanker, query) -> dict:
    """The collated batch of one query, as DialogRanker builds it."""
    inputs, _ = ranker._image_inputs(query.image, {})
    item = {**ranker.encoder.encode(query.caption, query.history, query.question, query.candidates), **inputs}
    return collate_dialog_batch([{name: torch.from_numpy(value) for name, value in item.items()}])


def test_coattention_is_what_weighs_the_regions_and_changes_no_output(ranker, val_data):
    batch = batch_of(ranker, val_queries(val_data)[13])
    model = ranker.model
    inputs = dict(tokens=batch["tokens"], segments=batch["segments"], attention_mask=batch["attention_mask"],
                  image_feat=batch["image_feat"], image_loc=batch["image_loc"], image_mask=batch["image_mask"],
                  image_index=batch["image_index"], output_lm_scores=False, output_img_scores=False)
    captured = {}
    layer = model.bert_pretrained.bert.encoder.c_layer[0].biattention
    hook = layer.register_forward_hook(lambda module, args, output: captured.update(args=args, output=output))
    with torch.no_grad():
        plain = model(**inputs)
        explained = model(**inputs, output_coattention=True)
    hook.remove()
    assert plain.coattention_t2v is None
    assert torch.equal(plain.nsp_scores, explained.nsp_scores), "asking for the co-attention changes no score"
    config = model.config
    probs = explained.coattention_t2v
    assert probs.shape == (len(batch["tokens"]), len(config.v_biattention_id), config.bi_num_attention_heads,
                           batch["tokens"].shape[1], batch["image_mask"].shape[1])
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(probs.shape[:-1]))
    image = captured["args"][0]
    text_context, _, layer_probs = captured["output"]
    assert torch.equal(layer_probs, probs[:, 0]), "layer 0 of the co-attention comes first"
    value = split_heads(layer.value1(image), layer.num_heads)
    torch.testing.assert_close(merge_heads(layer_probs @ value), text_context, rtol=1e-4, atol=1e-5)


def test_the_current_round_is_the_last_question_and_the_answer(ranker):
    caption, history, question, answers = "a dog on a sofa", [("is it big ?", "yes it is")], "what color ?", \
        ["brown", "it is white and black"]
    item = ranker.encoder.encode(caption, history, question, answers)
    tokens, segments = torch.from_numpy(item["tokens"]), torch.from_numpy(item["segments"])
    selected = current_round_tokens(segments, tokens != 0)
    question_ids, *answer_ids = encode_texts(ranker.encoder.tokenizer, [question, *answers])
    for row, answer in enumerate(answer_ids):
        assert tokens[row][selected[row]].tolist() == list(question_ids) + list(answer)


def test_weights_are_a_distribution_over_the_real_regions_and_the_ranking_is_unchanged(ranker, val_data, golden_dir):
    queries = val_queries(val_data)
    plain, explained = ranker.rank_many(queries), ranker.rank_many(queries, explain=True)
    assert [[(answer.answer, answer.probability) for answer in ranking] for ranking in explained] == plain
    store = ranker.features
    padded_somewhere = False
    for query, ranking in zip(queries, explained):
        raw = store.read_raw(query.image)
        boxes = [(0.0, 0.0, float(raw["image_w"]), float(raw["image_h"]))] + \
            [tuple(float(value) for value in box) for box in raw["boxes"]]
        real = min(len(boxes), 37)
        padded_somewhere |= real < 37
        for answer in ranking:
            weights = torch.tensor([region.weight for region in answer.regions])
            assert [region.region for region in answer.regions] == list(range(real))
            assert [region.box for region in answer.regions] == boxes[:real]
            assert (weights >= 0).all() and weights.sum().item() == pytest.approx(1.0, abs=1e-5)
        top = ranking[0].top_regions(3)
        assert [region.weight for region in top] == sorted((r.weight for r in ranking[0].regions), reverse=True)[:3]
    assert padded_somewhere, "the fixture has images with padded regions"
    batch = batch_of(ranker, queries[0])
    weights = torch.full((len(batch["tokens"]), batch["image_mask"].shape[1]), -1.0)
    score_sequences(ranker.model, batch, 5000, "fp32", weights)
    real = int(batch["image_mask"][0].sum())
    assert real < weights.shape[1] and (weights[:, real:] == 0).all(), "zero on padded regions"
    by_answer = {answer.answer: [region.weight for region in answer.regions] for answer in explained[0]}
    for row, candidate in enumerate(queries[0].candidates):
        assert weights[row, :real].tolist() == pytest.approx(by_answer[candidate], abs=1e-7)


def test_explaining_the_language_only_model_is_a_user_error(repo_root, ranker, val_data):
    from models import build_model

    model = build_model(repo_root / "tests" / "fixtures" / "language_only_tiny.json", "language_only")
    text_only = DialogRanker(model, ranker.encoder.tokenizer, ranker.features, max_seq_len=MAX_SEQ_LEN)
    query = val_queries(val_data)[0]
    assert text_only.rank(*query)  # ranking works
    with pytest.raises(UserError, match="no text-to-image co-attention"):
        text_only.rank(*query, explain=True)


def test_points_at_and_chance_by_hand():
    weights = torch.tensor([[0.1, 0.6, 0.3, 0.0], [0.5, 0.2, 0.3, 0.0], [0.2, 0.2, 0.6, 0.0]])
    relevant = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]], dtype=torch.bool)
    real = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert points_at(weights, relevant).tolist() == [True, False, True]
    assert pointing_chance(relevant, real).tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 4])


def test_pointing_metrics_count_the_rounds_whose_heaviest_region_is_relevant(ranker, val_data, tmp_path):
    dialogs = val_data["dialogs"]
    rounds, expected = [], {"hit": [], "miss": []}
    for dialog in dialogs:
        for number, turn in enumerate(dialog["dialog"][:4], start=1):
            history = [(val_data["questions"][t["question"]], val_data["answers"][t["answer"]])
                       for t in dialog["dialog"][:number - 1]]
            answer = ranker.rank(dialog["image_id"], dialog["caption"], history,
                                 val_data["questions"][turn["question"]], [val_data["answers"][turn["answer"]]],
                                 explain=True)[0]
            heaviest = answer.top_regions(2)
            kind = "hit" if number % 2 else "miss"
            region = heaviest[0].region if kind == "hit" else heaviest[1].region
            rounds.append({"image_id": dialog["image_id"], "round_id": number, "question_type": kind,
                           "relevant_regions": [region]})
            expected[kind].append(1 / len(answer.regions))
    path = tmp_path / "types.json"
    write_question_types(path, {"hit": "the heaviest region", "miss": "the second heaviest", "none": "unused"}, rounds)
    metrics = pointing_metrics(ranker, val_data, len(dialogs), load_question_types(path), str(path))
    assert metrics == {"pointing_rounds_hit": 6, "pointing_hit": 1.0,
                       "pointing_chance_hit": pytest.approx(sum(expected["hit"]) / 6),
                       "pointing_rounds_miss": 6, "pointing_miss": 0.0,
                       "pointing_chance_miss": pytest.approx(sum(expected["miss"]) / 6)}
    assert pointing_metrics(ranker, val_data, 0, load_question_types(path), str(path)) == {}
    rounds[0]["relevant_regions"] = [37]
    write_question_types(path, {"hit": "", "miss": ""}, rounds)
    with pytest.raises(UserError, match=f"{path}: round 1 of image {dialogs[0]['image_id']} lists region 37"):
        pointing_metrics(ranker, val_data, len(dialogs), load_question_types(path), str(path))
