"""Question-type files, per-type metrics (model and random ranking), the comparison table, the
by-word typing of real VisDial questions, and evaluate.py -question_types end to end."""
import json
import math

import pytest
import torch

import evaluate
from dataloader.question_types import load_question_types, write_question_types
from options import EvalOptions
from preprocessing import question_types_by_word
from utils.errors import UserError
from utils.evaluation.question_types import (comparison_table, format_table_html, format_table_text,
                                             load_compared_metrics, question_type_metrics)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def types_file(tmp_path, rounds, descriptions=None):
    path = tmp_path / "types.json"
    write_question_types(path, descriptions or {"look": "needs the image", "read": "needs the text"}, rounds)
    return load_question_types(path)


def scores_ranking_gt_at(ranks: list[list[int]], num_options: int = 10) -> torch.Tensor:
    """Scores [D, R, O] whose ground truth (option 0) lands at the given 1-based ranks."""
    scores = torch.zeros(len(ranks), len(ranks[0]), num_options)
    for d, row in enumerate(ranks):
        for r, rank in enumerate(row):
            order = torch.arange(num_options, 0, -1, dtype=torch.float32)   # option j has rank j + 1
            order[[0, rank - 1]] = order[[rank - 1, 0]]
            scores[d, r] = order
    return scores


def test_per_type_metrics_average_the_rounds_of_each_type(tmp_path):
    types = types_file(tmp_path, [{"image_id": 7, "round_id": 1, "question_type": "look"},
                                  {"image_id": 7, "round_id": 2, "question_type": "read"},
                                  {"image_id": 9, "round_id": 1, "question_type": "look"}])
    scores = scores_ranking_gt_at([[1, 4], [2, 5]])               # image 9 round 2 has no type
    metrics = question_type_metrics(scores, torch.zeros(2, 2, dtype=torch.long), torch.tensor([7, 9]), types)
    assert metrics["rounds_type_look"] == 2 and metrics["rounds_type_read"] == 1 and metrics["rounds_untyped"] == 1
    assert metrics["mrr_type_look"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["r_1_type_look"] == pytest.approx(0.5) and metrics["mean_type_look"] == pytest.approx(1.5)
    assert metrics["mrr_type_read"] == pytest.approx(1 / 4) and metrics["r_5_type_read"] == 1.0
    # a random ranking of 10 options: E[1/rank] = H_10 / 10, P(rank 1) = 1/10
    expected_mrr = sum(1 / k for k in range(1, 11)) / 10
    assert metrics["random_mrr"] == pytest.approx(expected_mrr, abs=0.03)
    assert metrics["random_r_1"] == pytest.approx(0.1, abs=0.03)
    assert metrics["random_mrr_type_look"] == pytest.approx(expected_mrr, abs=0.04)


def test_types_without_rounds_are_left_out_and_the_random_ranking_is_seeded(tmp_path):
    types = types_file(tmp_path, [{"image_id": 1, "round_id": 1, "question_type": "read"}])
    scores = torch.rand(1, 1, 100)
    first = question_type_metrics(scores, torch.zeros(1, 1, dtype=torch.long), torch.tensor([1]), types)
    again = question_type_metrics(scores, torch.zeros(1, 1, dtype=torch.long), torch.tensor([1]), types)
    assert first == again and "rounds_type_look" not in first and "rounds_untyped" not in first


@pytest.mark.parametrize("content, problem", [
    ({"rounds": []}, "not a question-type file"),
    ({"question_types": {}, "rounds": []}, "at least one type"),
    ({"question_types": {"a": "x"}, "rounds": [{"image_id": 1, "round_id": 0, "question_type": "a"}]},
     "1-based"),
    ({"question_types": {"a": "x"}, "rounds": [{"image_id": 1, "round_id": 1, "question_type": "b"}]},
     "'b' is not one of question_types"),
    ({"question_types": {"a": "x"}, "rounds": [{"image_id": 1, "round_id": 1, "question_type": "a"}] * 2},
     "listed twice"),
    *[({"question_types": {"a": "x"}, "rounds": [{"image_id": 1, "round_id": 1, "question_type": "a",
                                                  field: regions}]}, f"{field} must be")
      for regions in ([], [-1], [1.0], ["2"], 3, None) for field in ("relevant_regions", "object_regions")],
])
def test_bad_question_type_files_are_one_line_errors(tmp_path, content, problem):
    path = tmp_path / "types.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=problem) as error:
        load_question_types(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_relevant_and_object_regions_are_read_where_a_round_lists_them(tmp_path):
    types = types_file(tmp_path, [{"image_id": 5, "round_id": 1, "question_type": "a", "relevant_regions": [3, 0],
                                   "object_regions": [1, 3, 4]},
                                  {"image_id": 5, "round_id": 2, "question_type": "a", "relevant_regions": [2]},
                                  {"image_id": 5, "round_id": 3, "question_type": "a"}], {"a": "x"})
    assert types.regions == {(5, 1): (3, 0), (5, 2): (2,)} and types.of(5, 3) == "a"
    assert types.objects == {(5, 1): (1, 3, 4)}


def run_metrics(mrr_look: float, mrr_read: float) -> dict:
    return {"mrr": (mrr_look + mrr_read) / 2, "r@1": 0.5, "rounds_type_look": 4, "rounds_type_read": 6,
            "mrr_type_look": mrr_look, "r_1_type_look": 0.25, "mrr_type_read": mrr_read, "r_1_type_read": 0.5,
            "random_mrr": 0.05, "random_r_1": 0.01, "random_mrr_type_look": 0.06, "random_r_1_type_look": 0.02,
            "random_mrr_type_read": 0.04, "random_r_1_type_read": 0.0}


def test_comparison_table_puts_runs_and_the_random_ranking_side_by_side():
    table = comparison_table({"vilbert": run_metrics(0.9, 0.3), "language_only": run_metrics(0.4, 0.3)})
    assert table.rows == ["look", "read", "all"] and table.labels == ["vilbert", "language_only", "random"]
    assert table.rounds == {"look": 4, "read": 6, "all": 10}
    assert table.cells["vilbert"]["look"] == (0.9, 0.25) and table.cells["random"]["all"] == (0.05, 0.01)
    text = format_table_text(table).splitlines()
    assert text[0].split() == ["question", "type", "rounds", "vilbert", "language_only", "random"]
    assert text[2].split() == ["look", "4", "0.900", "0.250", "0.400", "0.250", "0.060", "0.020"]
    page = format_table_html(table, {"look": "needs the image"})
    assert "<td>needs the image</td><td>4</td><td>0.900</td>" in page
    other_rounds = {**run_metrics(0.4, 0.3), "rounds_type_look": 5}
    with pytest.raises(UserError, match="language_only: its question types or their round counts differ"):
        comparison_table({"vilbert": run_metrics(0.9, 0.3), "language_only": other_rounds})


def test_compared_metrics_files_are_checked(tmp_path):
    good, plain = tmp_path / "good.json", tmp_path / "plain.json"
    good.write_text(json.dumps(run_metrics(0.4, 0.3)))
    plain.write_text(json.dumps({"mrr": 0.5}))
    assert load_compared_metrics({"baseline": str(good)}, "vilbert")["baseline"]["mrr_type_look"] == 0.4
    for path, problem in ((plain, "no per-question-type metrics"), (tmp_path / "absent.json", "file not found")):
        with pytest.raises(UserError, match=problem):
            load_compared_metrics({"b": str(path)}, "vilbert")


def test_compare_metrics_is_a_list_of_labelled_files():
    options = EvalOptions(split="val", question_types="types.json", compare_metrics="base=a.json,other=b.json")
    assert options.compared_metrics == [("base", "a.json"), ("other", "b.json")]
    assert options.input_paths()["-compare_metrics other"] == "b.json"     # no output may overwrite it
    assert options.problems() == []
    assert EvalOptions(split="val", question_types="t.json", compare_metrics="a.json,=b.json").problems() == [
        "-compare_metrics: 'a.json' is not LABEL=FILE", "-compare_metrics: '=b.json' is not LABEL=FILE"]
    assert EvalOptions(split="val", compare_metrics="base=a.json").problems() == [
        "-compare_metrics needs -question_types"]
    assert EvalOptions(split="test", question_types="t.json").problems() == [
        "-val_evalai, -report and -question_types need -split val"]


def test_questions_are_typed_by_their_first_words():
    assert [question_types_by_word.question_type(q) for q in (
        "what color is the car ?", "How many people are there?", "is it sunny ?", "what is he holding ?",
        "where is the dog ?", "any people ?", "thanks")] == [
        "color", "counting", "yes_no", "what", "where", "yes_no", "other"]


def test_typing_by_word_never_writes_over_its_input(tmp_path):
    source = tmp_path / "val.json"
    source.write_text('{"split": "val"}')
    with pytest.raises(UserError, match="the output -out is the input -visdial_json"):
        question_types_by_word.main(["-visdial_json", str(source), "-out", str(source)])
    assert source.read_text() == '{"split": "val"}'


def evaluate_flags(golden_dir, tmp_path, types_path) -> list[str]:
    """evaluate.py's flags for the fixture's val split with the question-type file `types_path`."""
    processed = golden_dir / "visdial_processed"
    return ["-split", "val", "-model_config", str(golden_dir / "model_config.json"),
            "-start_path", str(golden_dir / "model_raw.pt"), "-vocab", str(golden_dir / "bert-base-uncased-vocab.txt"),
            "-visdial_image_feats", str(golden_dir / "visdial_img_feat.lmdb"),
            "-visdial_processed_val", str(processed / "val_processed.json"),
            "-visdial_processed_val_dense_annotations", str(processed / "val_dense_annotations_processed.json"),
            "-max_seq_len", "108", "-num_workers", "0", "-save_path", str(tmp_path),
            "-question_types", str(types_path)]


def test_evaluate_reports_metrics_per_question_type(golden_dir, tmp_path, capsys):
    """By-word types of the fixture's val dialogs through evaluate.py: metrics, table, report."""
    processed = golden_dir / "visdial_processed"
    types_path = tmp_path / "val_types.json"
    question_types_by_word.main(["-visdial_json", str(processed / "val_processed.json"), "-out", str(types_path)])
    common = evaluate_flags(golden_dir, tmp_path, types_path)
    evaluate.main([*common, "-save_name", "first"])
    metrics = json.loads((tmp_path / "first_metrics.json").read_text())
    expected = json.loads((golden_dir / "val_metrics_end2end.json").read_text())["metrics"]
    assert metrics["mrr"] == pytest.approx(expected["mrr"], abs=1e-6)      # the usual metrics are unchanged
    types = load_question_types(types_path)
    counts = {name: sum(value == name for value in types.by_round.values()) for name in types.descriptions}
    assert {key[len("rounds_type_"):]: value for key, value in metrics.items() if key.startswith("rounds_type_")} \
        == {name: count for name, count in counts.items() if count}
    weighted = sum(metrics[f"mrr_type_{name}"] * count for name, count in counts.items() if count) / sum(counts.values())
    assert weighted == pytest.approx(metrics["mrr"], abs=1e-5)
    assert all(0 < metrics[f"random_mrr_type_{name}"] < 0.2 for name, count in counts.items() if count)
    capsys.readouterr()

    report = tmp_path / "report"
    evaluate.main([*common, "-save_name", "second", "-compare_metrics", f"again={tmp_path / 'first_metrics.json'}",
                   "-report", str(report)])
    table = capsys.readouterr().out
    assert "question type" in table and "vilbert" in table and "again" in table and "random" in table
    page = (report / "index.html").read_text()
    assert "Per question type" in page and "yes / no questions" in page and "<th colspan=\"2\">again</th>" in page
    assert not math.isnan(json.loads((tmp_path / "second_metrics.json").read_text())["random_mrr"])


def test_evaluate_reports_the_pointing_score_and_shows_the_pictures(golden_dir, tmp_path, capsys):
    """Rounds with relevant regions get a pointing score beside chance (one over the image's
    regions, read from the feature store), printed and in the metrics; -images puts each sample
    round's picture (COCO-style names) on the report; the language-only model gets neither."""
    from PIL import Image

    from dataloader.feature_store import open_feature_store

    processed = golden_dir / "visdial_processed"
    data = json.loads((processed / "val_processed.json").read_text())["data"]
    store = open_feature_store(golden_dir / "visdial_img_feat.lmdb")
    rounds, chance = [], {"near": [], "far": []}
    for dialog in data["dialogs"]:
        regions = min(store.read_raw(dialog["image_id"])["features"].shape[0] + 1, 37)
        for number in range(1, len(dialog["dialog"]) + 1):
            name = "near" if number <= 5 else "far"
            rounds.append({"image_id": dialog["image_id"], "round_id": number, "question_type": name,
                           "relevant_regions": [1, 2] if name == "near" else [3]})
            chance[name].append((2 if name == "near" else 1) / regions)
    types_path = tmp_path / "types.json"
    write_question_types(types_path, {"near": "rounds 1-5", "far": "rounds 6-10"}, rounds)
    images = tmp_path / "images"
    images.mkdir()
    for dialog in data["dialogs"][:2]:
        Image.new("RGB", (64, 48), (0, 200, 0)).save(images / f"COCO_val2014_{dialog['image_id']:012d}.jpg")
    common = evaluate_flags(golden_dir, tmp_path, types_path)
    evaluate.main([*common, "-report", str(tmp_path / "report"), "-images", str(images)])
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "val_metrics.json").read_text())
    for name in ("near", "far"):
        assert metrics[f"pointing_rounds_{name}"] == len(chance[name]) == 15
        assert metrics[f"pointing_chance_{name}"] == pytest.approx(sum(chance[name]) / 15)
        assert 0 <= metrics[f"pointing_{name}"] <= 1
        assert metrics[f"deletion_rounds_{name}"] == 15 and 0 <= metrics[f"deletion_{name}"] <= 1
        assert f"{name:<14}{15:>7}{metrics[f'pointing_{name}']:>10.3f}{metrics[f'pointing_chance_{name}']:>9.3f}" \
               f"{metrics[f'deletion_{name}']:>10.3f}{metrics[f'deletion_chance_{name}']:>9.3f}" in printed
    page = (tmp_path / "report" / "index.html").read_text()
    sections = page.split("<section")[1:]
    assert [section.count('<img class="shaded"') for section in sections] == [10, 10, 0]
    assert sections[2].count("no picture of this image in -images") == 10
    with pytest.raises(UserError, match="-images needs -report"):
        evaluate.main([*common, "-images", str(images), "-save_name", "again"])
    with pytest.raises(UserError, match="-images: the language_only model reads no image"):
        evaluate.main([*common, "-model_type", "language_only", "-report", str(tmp_path / "again"),
                       "-images", str(images), "-save_name", "again"])
    duplicate = images / f"{data['dialogs'][0]['image_id']}.png"
    Image.new("RGB", (8, 8)).save(duplicate)
    for folder, problem in ((tmp_path / "nowhere", "-images must be a folder of pictures named by image id"),
                            (images, f"names image {data['dialogs'][0]['image_id']}, as {duplicate.name} does")):
        with pytest.raises(UserError, match=problem):  # before any scoring, so nothing is written
            evaluate.main([*common, "-report", str(tmp_path / "again"), "-images", str(folder), "-save_name", "again"])
    assert not (tmp_path / "again_metrics.json").exists() and not (tmp_path / "again").exists()
