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
from utils.evaluation import DialogRanker, RankingQuery
from utils.evaluation.explain import (current_round_tokens, deletion_outcomes, pointing_chance, points_at,
                                      region_weights)
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


def test_region_weights_of_a_hand_built_coattention():
    """One sequence `[CLS] cap [SEP] q q [SEP] a [SEP] [PAD]` (segments 0 0 0 1 1 1 0 0 0), regions 0-2
    real and 3 padded. The question's and the answer's tokens put their mass on regions 1 and 2,
    differently per head and layer; every other token (caption, [CLS], [SEP]s) on region 0 alone."""
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 0]])
    coattention = torch.zeros(1, 2, 2, 9, 4)                      # [N, layers, heads, L, R]
    coattention[..., 0] = 1.0
    by_layer_and_head = {(0, 0): [0, 1, 0, 0], (0, 1): [0, .5, .5, 0], (1, 0): [0, 0, 1, 0], (1, 1): [.2, .2, .6, 0]}
    for (layer, head), probabilities in by_layer_and_head.items():
        for position in (3, 4, 6):                                 # q, q, a
            coattention[0, layer, head, position] = torch.tensor(probabilities)
    coattention[0, 1, 1, 6] = torch.tensor([0, 0, 1.0, 0])       # the answer, layer 1, head 1
    # per question token: mean of the four rows [.05, .425, .525, 0]; the answer token [0, .375, .625, 0]
    expected = [(2 * .05 + 0) / 3, (2 * .425 + .375) / 3, (2 * .525 + .625) / 3, 0.0]
    assert region_weights(coattention, segments, attention_mask)[0].tolist() == pytest.approx(expected, abs=1e-6)


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


def test_deletion_outcomes_by_hand():
    drops = torch.tensor([[0.0, 0.5, 0.1, 0.3, 9.0],     # the chosen object drops most of the objects
                          [0.2, 0.1, 0.1, 0.4, 0.0]])    # the whole image chosen; two objects tie
    objects = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    hits, chance = deletion_outcomes(drops, torch.tensor([1, 0]), objects)
    # round 0: 0.5 beats 0.1 and 0.3; region 4 is no object, its drop is never compared
    # round 1: 0.2 beats 0.1 twice, not 0.4; chance: of the 6 ordered object pairs only 0.4 > 0.1 twice
    assert hits.tolist() == pytest.approx([1.0, 2 / 3])
    assert chance.tolist() == pytest.approx([0.5, 1 / 3])
    hits, _ = deletion_outcomes(drops, torch.tensor([2, 3]), objects)
    assert hits.tolist() == pytest.approx([0.0, 1.0]), "an object that drops least loses to every other one"


def test_scores_without_a_region_mask_it_as_padding(ranker, val_data):
    query = val_queries(val_data)[13]
    batch = batch_of(ranker, query)
    scores = ranker.scores_without(query, [0, 2, 5])
    assert scores.shape == (4, len(query.candidates))
    plain = [probability for _, probability in sorted(ranker.rank(*query), key=lambda pair: query.candidates.index(pair[0]))]
    assert scores[0].tolist() == pytest.approx(plain, abs=1e-6)
    for row, region in enumerate([0, 2, 5], start=1):
        mask = batch["image_mask"].clone()
        mask[0, region] = 0
        with torch.no_grad():
            nsp = ranker.model(tokens=batch["tokens"], segments=batch["segments"], attention_mask=batch["attention_mask"],
                               image_feat=batch["image_feat"], image_loc=batch["image_loc"], image_mask=mask,
                               image_index=batch["image_index"], output_lm_scores=False, output_img_scores=False).nsp_scores
        assert scores[row].tolist() == pytest.approx(nsp.softmax(dim=-1)[:, 0].tolist(), abs=1e-5)
    assert not torch.allclose(scores[1:], scores[0].expand(3, -1)), "masking a region changes the scores"
    real = int(batch["image_mask"][0].sum())
    for region in (real, -1):
        with pytest.raises(UserError, match=f"region {region} is not a region of this image"):
            ranker.scores_without(query, [region])


def model_outputs(ranker: DialogRanker, query, image_mask=None):
    """The probabilities of the query's candidates [N] and the co-attention [N, C, heads, L, R],
    straight from the model (image_mask [1, R] replaces the image's), and the batch."""
    batch = batch_of(ranker, query)
    with torch.no_grad():
        out = ranker.model(tokens=batch["tokens"], segments=batch["segments"], attention_mask=batch["attention_mask"],
                           image_feat=batch["image_feat"], image_loc=batch["image_loc"],
                           image_mask=batch["image_mask"] if image_mask is None else image_mask,
                           image_index=batch["image_index"], output_lm_scores=False, output_img_scores=False,
                           output_coattention=True)
    return out.nsp_scores.softmax(dim=-1)[:, 0], out.coattention_t2v, batch


def weights_by_hand(ranker: DialogRanker, query) -> list[float]:
    """The region weights of the query's one candidate, walked token by token over the raw
    co-attention: the mean over the question's and the answer's tokens (found by their ids at the
    end of the sequence), every head and every layer."""
    _, coattention, batch = model_outputs(ranker, query)
    tokens, length = batch["tokens"][0].tolist(), int(batch["attention_mask"][0].sum())
    question_ids, answer_ids = encode_texts(ranker.encoder.tokenizer, [query.question, query.candidates[0]])
    answer_start = length - 1 - len(answer_ids)
    question_start = answer_start - 1 - len(question_ids)
    assert tokens[question_start:answer_start - 1] == question_ids and tokens[answer_start:length - 1] == answer_ids
    positions = [*range(question_start, answer_start - 1), *range(answer_start, length - 1)]
    _, layers, heads, _, _ = coattention.shape
    real = int(batch["image_mask"][0].sum())
    return [sum(coattention[0, layer, head, position, region].item() for position in positions
                for layer in range(layers) for head in range(heads)) / (len(positions) * layers * heads)
            for region in range(real)]


def test_pointing_and_deletion_count_what_the_heaviest_region_does(ranker, val_data, tmp_path):
    """Expected values walked by hand from the model's raw outputs; the heaviest region of every
    measured round is ahead of the second by a margin, so no tie-break decides a hit."""
    dialogs = val_data["dialogs"]
    rounds, expected = [], {name: {"chance": [], "deletion": [], "deletion_chance": []} for name in ("hit", "miss")}
    moved_off_the_whole_image = 0
    for dialog in dialogs:
        for number, turn in enumerate(dialog["dialog"][:2], start=1):
            history = [(val_data["questions"][t["question"]], val_data["answers"][t["answer"]])
                       for t in dialog["dialog"][:number - 1]]
            query = RankingQuery(dialog["image_id"], dialog["caption"], history,
                                 val_data["questions"][turn["question"]], [val_data["answers"][turn["answer"]]])
            weights = weights_by_hand(ranker, query)
            first, second = sorted(range(len(weights)), key=lambda region: -weights[region])[:2]
            assert weights[first] - weights[second] > 1e-4, "the heaviest region is not a tie-break's pick"
            moved_off_the_whole_image += first != 0
            kind = "hit" if number % 2 else "miss"
            rounds.append({"image_id": dialog["image_id"], "round_id": number, "question_type": kind,
                           "relevant_regions": [first if kind == "hit" else second]})
            probability, _, batch = model_outputs(ranker, query)
            drops = {}
            for region in range(1, len(weights)) if first == 0 else [0, *range(1, len(weights))]:
                mask = batch["image_mask"].clone()
                mask[0, region] = 0
                drops[region] = (probability - model_outputs(ranker, query, mask)[0]).item()
            boxes = range(1, len(weights))          # no object_regions listed: every box is compared
            others = [box for box in boxes if box != first]
            expected[kind]["chance"].append(1 / len(weights))
            expected[kind]["deletion"].append(sum(drops[first] > drops[box] for box in others) / len(others))
            expected[kind]["deletion_chance"].append(
                sum(drops[a] > drops[b] for a in boxes for b in boxes if a != b) / (len(boxes) * (len(boxes) - 1)))
    assert moved_off_the_whole_image, "a uniform weighting would pick region 0 everywhere"
    path = tmp_path / "types.json"
    write_question_types(path, {"hit": "the heaviest region", "miss": "the second heaviest", "none": "unused"}, rounds)
    metrics = pointing_metrics(ranker, val_data, len(dialogs), load_question_types(path), str(path))
    mean = lambda values: pytest.approx(sum(values) / len(values), abs=1e-6)  # noqa: E731
    assert metrics == {f"{key}_{kind}": value for kind, values in expected.items() for key, value in (
        ("pointing_rounds", 3), ("pointing", 1.0 if kind == "hit" else 0.0), ("pointing_chance", mean(values["chance"])),
        ("deletion_rounds", 3), ("deletion", mean(values["deletion"])),
        ("deletion_chance", mean(values["deletion_chance"])))}
    assert pointing_metrics(ranker, val_data, 0, load_question_types(path), str(path)) == {}
    rounds[0]["relevant_regions"] = [37]
    write_question_types(path, {"hit": "", "miss": ""}, rounds)
    with pytest.raises(UserError, match=f"{path}: round 1 of image {dialogs[0]['image_id']} lists region 37"):
        pointing_metrics(ranker, val_data, len(dialogs), load_question_types(path), str(path))


def test_the_reports_lit_regions_are_those_of_each_sample_rounds_top_answer(golden_dir, tmp_path, ranker, val_data,
                                                                            monkeypatch):
    from options import EvalOptions, parse_options
    from tests.test_evaluate import golden_args
    from utils.evaluation import run as evaluation_run, validation
    from utils.evaluation.scoring import score_dataset

    options = parse_options(golden_args(golden_dir, tmp_path, "-split", "val"), EvalOptions)
    scored = score_dataset(ranker.model, evaluation_run.load_split(options), collate_dialog_batch,
                           tokens_per_batch=3000, progress=False)
    captured = {}
    monkeypatch.setattr(validation, "write_report", lambda *args, pictures, **kwargs: captured.update(pictures=pictures))
    validation.write_val_report(str(tmp_path / "report"), {}, scored, val_data, ranker=ranker, pictures={})
    queries = val_queries(val_data)
    lit = [regions for picture in captured["pictures"] for regions in picture.regions]
    assert len(lit) == len(queries) == 30
    top_is_not_the_truth = 0
    for query, regions in zip(queries, lit):
        top = ranker.rank(*query, explain=True)[0]
        top_is_not_the_truth += top.answer != query.candidates[0]
        assert [box for box, _ in regions] == [region.box for region in top.regions]
        assert [weight for _, weight in regions] == pytest.approx([region.weight for region in top.regions], abs=1e-6)
    assert top_is_not_the_truth >= 5, "rounds whose top answer is not the ground truth tell the two apart"
