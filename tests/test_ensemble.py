"""evaluate.py -save_scores and scripts/ensemble.py on the golden fixture data."""
import json
import shutil

import pytest
import torch

import evaluate
from dataloader.datasets import val_option_order
from scripts import ensemble
from tests.test_evaluate import golden_args
from tests.test_evaluate import run_failing as run_evaluate_failing
from utils.errors import UserError
from utils.evaluation.metrics import scores_to_ranks
from utils.evaluation.score_files import combine_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def evaluated(golden_dir, tmp_path_factory):
    """evaluate.py on val (-val_evalai) and on test, each with -save_scores: the folder."""
    folder = tmp_path_factory.mktemp("evaluated")
    evaluate.main(golden_args(golden_dir, folder, "-split", "val", "-val_evalai", "-save_scores",
                              str(folder / "val_scores.pt")))
    evaluate.main(golden_args(golden_dir, folder, "-save_scores", str(folder / "test_scores.pt")))
    return folder


def data_flags(golden_dir, out_dir, name="ensemble"):
    processed = golden_dir / "visdial_processed"
    return ["-visdial_processed_val", str(processed / "val_processed.json"),
            "-visdial_processed_test", str(processed / "test_processed.json"),
            "-visdial_processed_val_dense_annotations", str(processed / "val_dense_annotations_processed.json"),
            "-save_path", str(out_dir), "-save_name", name]


def read_json(path):
    return json.loads(path.read_text())


def test_score_file_holds_the_probabilities_and_their_keys(golden_dir, evaluated):
    content = torch.load(evaluated / "val_scores.pt", weights_only=True)
    dialogs = read_json(golden_dir / "visdial_processed" / "val_processed.json")["data"]["dialogs"]
    reference = torch.load(golden_dir / "eval_scores.pt", weights_only=True)["val_nsp_probs"]
    assert content["split"] == "val" and content["scores"].shape == (len(dialogs), 10, 100)
    torch.testing.assert_close(content["scores"].reshape(-1), reference.reshape(-1).float(), atol=1e-5, rtol=0)
    assert content["image_id"].tolist() == [dialog["image_id"] for dialog in dialogs]
    assert content["round_id"][0].tolist() == list(range(1, 11))
    assert content["option_index"][1, 4].tolist() == val_option_order(dialogs[1]["dialog"][4]["gt_index"], 100)
    test = torch.load(evaluated / "test_scores.pt", weights_only=True)
    test_dialogs = read_json(golden_dir / "visdial_processed" / "test_processed.json")["data"]["dialogs"]
    assert test["scores"].shape == (len(test_dialogs), 1, 100)
    assert test["round_id"][:, 0].tolist() == [dialog["round_id"] for dialog in test_dialogs]


@pytest.mark.parametrize("combine", ["mean_prob", "mean_logprob", "rank"])
def test_ensemble_of_one_file_is_that_model(golden_dir, evaluated, tmp_path, combine):
    ensemble.main(["-split", "val", "-val_evalai", "-scores", str(evaluated / "val_scores.pt"),
                   "-combine", combine, "-weights", "0.3", *data_flags(golden_dir, tmp_path)])
    assert read_json(tmp_path / "ensemble_metrics.json") == read_json(evaluated / "golden_metrics.json")
    assert (read_json(tmp_path / "ensemble_val_predictions.json")
            == read_json(evaluated / "golden_val_predictions.json"))
    ensemble.main(["-scores", str(evaluated / "test_scores.pt"), "-combine", combine,
                   *data_flags(golden_dir, tmp_path)])
    for suffix in ("json", "txt"):
        assert (tmp_path / f"ensemble_predictions.{suffix}").read_bytes() == \
            (evaluated / f"golden_predictions.{suffix}").read_bytes()


def other_model(evaluated, tmp_path, name="other.pt", **changes):
    """A score file of the same keys with other scores (or the given changes to its content)."""
    content = torch.load(evaluated / "val_scores.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    content["scores"] = torch.rand(content["scores"].shape, generator=generator)
    content.update(changes)
    torch.save(content, tmp_path / name)
    return tmp_path / name


def test_swapped_weights_are_symmetric(golden_dir, evaluated, tmp_path):
    first, second = evaluated / "val_scores.pt", other_model(evaluated, tmp_path)
    for combine in ("mean_prob", "mean_logprob", "rank"):
        ensemble.main(["-split", "val", "-scores", str(first), str(second), "-weights", "0.3", "0.7",
                       "-combine", combine, "-save_scores", str(tmp_path / "ab.pt"),
                       *data_flags(golden_dir, tmp_path, "ab")])
        ensemble.main(["-split", "val", "-scores", str(second), str(first), "-weights", "0.7", "0.3",
                       "-combine", combine, "-save_scores", str(tmp_path / "ba.pt"),
                       *data_flags(golden_dir, tmp_path, "ba")])
        assert read_json(tmp_path / "ab_metrics.json") == read_json(tmp_path / "ba_metrics.json")
        assert torch.equal(torch.load(tmp_path / "ab.pt", weights_only=True)["scores"],
                           torch.load(tmp_path / "ba.pt", weights_only=True)["scores"])
    assert read_json(tmp_path / "ab_metrics.json") != read_json(evaluated / "golden_metrics.json")


def test_combinations_follow_their_formulas():
    first = torch.tensor([[[0.9, 0.5, 0.1, 0.4]]])
    second = torch.tensor([[[0.2, 0.6, 0.8, 0.3]]])
    weights = [1.0, 3.0]
    torch.testing.assert_close(combine_scores([first, second], weights, "mean_prob"),
                               torch.tensor([[[0.375, 0.575, 0.625, 0.325]]]))
    geometric = [(0.9 * 0.2 ** 3) ** 0.25, (0.5 * 0.6 ** 3) ** 0.25, (0.1 * 0.8 ** 3) ** 0.25, (0.4 * 0.3 ** 3) ** 0.25]
    torch.testing.assert_close(combine_scores([first, second], weights, "mean_logprob"), torch.tensor([[geometric]]))
    # ranks: first 1, 2, 4, 3; second 4, 2, 1, 3 -> weighted means 3.25, 2, 1.75, 3 -> order 3, 2, 4, 1
    combined = combine_scores([first, second], weights, "rank")
    torch.testing.assert_close(combined, 1 / torch.tensor([[[3.25, 2.0, 1.75, 3.0]]]))
    assert scores_to_ranks(combined).tolist() == [[[4, 2, 1, 3]]]
    # a weight of 0 leaves a model out
    assert torch.equal(combine_scores([first, second], [0.0, 2.0], "mean_prob"), second)


def run_failing(argv, capsys) -> str:
    return run_evaluate_failing(argv, capsys, ensemble.main)


def test_mismatched_files_fail_with_one_line_naming_the_first_mismatch(golden_dir, evaluated, tmp_path, capsys):
    good = evaluated / "val_scores.pt"
    content = torch.load(good, weights_only=True)
    image_ids = content["image_id"].clone()
    image_ids[1:] = image_ids[1:].flip(0)
    options = content["option_index"].clone()
    options[2, 6, [5, 9]] = options[2, 6, [9, 5]]
    cases = {
        "image": (other_model(evaluated, tmp_path, "image.pt", image_id=image_ids), "dialog 1 is image"),
        "options": (other_model(evaluated, tmp_path, "options.pt", option_index=options),
                    "scored round 7: option 5 is answer"),
        "shape": (other_model(evaluated, tmp_path, "shape.pt", scores=content["scores"][:2],
                              image_id=content["image_id"][:2], round_id=content["round_id"][:2],
                              option_index=content["option_index"][:2]),
                  "scores [dialogs, rounds, options] [2, 10, 100]"),
        "split": (evaluated / "test_scores.pt", "scores the test split"),
    }
    for name, (path, expected) in cases.items():
        out = tmp_path / name
        error = run_failing(["-split", "val", "-scores", str(good), str(path), *data_flags(golden_dir, out)], capsys)
        assert error.startswith(f"error: {path}: ") and expected in error, (name, error)
        assert not out.exists()
    # a file of other dialogs than the processed split file
    error = run_failing(["-split", "val", "-scores", str(cases["image"][0]), *data_flags(golden_dir, tmp_path / "d")],
                        capsys)
    assert "dialog 1 is image" in error and not (tmp_path / "d").exists()


def test_bad_score_files_and_flags(golden_dir, evaluated, tmp_path, capsys):
    not_scores = tmp_path / "weights.pt"
    shutil.copy(golden_dir / "model_raw.pt", not_scores)
    error = run_failing(["-scores", str(not_scores), *data_flags(golden_dir, tmp_path)], capsys)
    assert error.startswith(f"error: {not_scores}: not a score file")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": UserError}, unsafe)
    assert "pickled code" in run_failing(["-scores", str(unsafe), *data_flags(golden_dir, tmp_path)], capsys)
    outside = other_model(evaluated, tmp_path, "range.pt", scores=torch.full((3, 10, 100), 1.5))
    assert "probabilities in [0, 1]" in run_failing(["-split", "val", "-scores", str(outside),
                                                     *data_flags(golden_dir, tmp_path)], capsys)
    error = run_failing(["-scores", str(evaluated / "val_scores.pt"), "-weights", "1", "2", "-split", "val",
                         *data_flags(golden_dir, tmp_path)], capsys)
    assert error == "error: -weights: 2 weights for 1 score files"
    error = run_failing(["-split", "val", "-scores", str(evaluated / "val_scores.pt"), "-save_scores",
                         str(evaluated / "val_scores.pt"), *data_flags(golden_dir, tmp_path)], capsys)
    assert "the output -save_scores is the input -scores" in error
    (tmp_path / "link.pt").symlink_to(evaluated / "val_scores.pt")   # one file under two names: a collision
    error = run_failing(["-split", "val", "-scores", str(evaluated / "val_scores.pt"), str(tmp_path / "link.pt"),
                         *data_flags(golden_dir, tmp_path)], capsys)
    assert error == f"error: -scores: {evaluated / 'val_scores.pt'} is given 2 times (weigh a model with -weights)"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.pt", "range.pt", "unsafe.pt", "weights.pt"]
