"""preprocessing -keep_all_val: every raw val dialog kept, late rounds with their history cut."""
import json

import pytest
import torch

import evaluate
from dataloader.datasets import VisdialDataset
from dataloader.tokenizer import load_tokenizer
from dataloader.visdial_json import load_visdial_json
from preprocessing.pre_process_visdial import parse_args, preprocess
from tests.test_evaluate import golden_args
from tests.test_preprocessing import preprocessing_argv
from utils.conformance.data import RAW_FILES, VOCAB_FILE
from utils.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MAX_SEQ_LEN = 108  # the golden fixture's (dataset_items.pt meta), which preprocessing_argv passes


@pytest.fixture(scope="module")
def kept(golden_dir, tmp_path_factory):
    """The processed files of the golden raw data with -keep_all_val, and the summary."""
    folder = tmp_path_factory.mktemp("keep_all_val")
    summary = preprocess(parse_args(preprocessing_argv(golden_dir, folder) + ["-keep_all_val"]))
    return folder, "\n".join(summary.lines)


def raw_val(golden_dir):
    return json.loads((golden_dir / "visdial_raw" / RAW_FILES["visdial_val"]).read_text())["data"]


def test_every_raw_val_dialog_is_kept_that_the_default_drops(golden_dir, kept):
    folder, summary = kept
    raw_ids = [dialog["image_id"] for dialog in raw_val(golden_dir)["dialogs"]]
    default = json.loads((golden_dir / "visdial_processed" / "val_processed.json").read_text())["data"]["dialogs"]
    ours = json.loads((folder / "val_processed.json").read_text())["data"]["dialogs"]
    dropped = set(raw_ids) - {dialog["image_id"] for dialog in default}
    assert dropped == {239137}
    assert [dialog["image_id"] for dialog in ours] == raw_ids
    annotations = json.loads((folder / "val_dense_annotations_processed.json").read_text())
    assert [annotation["image_id"] for annotation in annotations] == raw_ids
    assert "val dialogs kept with the history of late rounds cut" in summary and "239137" in summary
    # the dialogs the default keeps are unchanged
    assert [dialog for dialog in ours if dialog["image_id"] != 239137] == default


def test_late_rounds_lose_early_history_the_caption_stays_and_every_option_fits(golden_dir, kept):
    folder, _ = kept
    data = raw_val(golden_dir)
    position = [dialog["image_id"] for dialog in data["dialogs"]].index(239137)
    raw_rounds = data["dialogs"][position]["dialog"]
    tokenizer = load_tokenizer(str(golden_dir / VOCAB_FILE))
    ids = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def sequence(round_index: int, first_kept: int, option: int) -> list:
        """[CLS] caption [SEP] q a of rounds first_kept..round_index-1, q [SEP] option [SEP], from the raw texts."""
        tokens = [cls] + ids(data["dialogs"][position]["caption"]) + [sep]
        for turn in raw_rounds[first_kept:round_index]:
            tokens += ids(data["questions"][turn["question"]]) + [sep] + ids(data["answers"][turn["answer"]]) + [sep]
        return tokens + ids(data["questions"][raw_rounds[round_index]["question"]]) + [sep] + \
            ids(data["answers"][option]) + [sep]

    dataset = VisdialDataset("val", folder / "val_processed.json", golden_dir / "visdial_img_feat.lmdb",
                             golden_dir / VOCAB_FILE, folder / "val_dense_annotations_processed.json",
                             max_seq_len=MAX_SEQ_LEN)
    item = dataset[position]
    lengths = (item["tokens"] != 0).sum(axis=1).reshape(10, 100)  # 0 is [PAD], never a real token
    assert int(lengths.max()) <= MAX_SEQ_LEN  # every option of every round fits
    cut_rounds = 0
    for round_index, turn in enumerate(raw_rounds):
        longest = max(turn["answer_options"], key=lambda option: len(ids(data["answers"][option])))
        first_kept = next(start for start in range(round_index + 1)
                          if len(sequence(round_index, start, longest)) <= MAX_SEQ_LEN)
        cut_rounds += first_kept > 0
        row = round_index * 100  # the ground truth is the round's first option
        expected = sequence(round_index, first_kept, turn["answer"])
        assert item["tokens"][row, :len(expected)].tolist() == expected, round_index
        assert int(lengths[round_index, 0]) == len(expected)
    assert cut_rounds >= 1 and len(sequence(9, 0, longest)) > MAX_SEQ_LEN


def test_evaluation_covers_every_dialog(golden_dir, kept, tmp_path):
    folder, _ = kept
    evaluate.main(golden_args(golden_dir, tmp_path, "-split", "val", "-val_evalai",
                              "-visdial_processed_val", str(folder / "val_processed.json"),
                              "-visdial_processed_val_dense_annotations",
                              str(folder / "val_dense_annotations_processed.json"),
                              "-save_scores", str(tmp_path / "scores.pt")))
    raw_ids = [dialog["image_id"] for dialog in raw_val(golden_dir)["dialogs"]]
    entries = json.loads((tmp_path / "golden_val_predictions.json").read_text())
    assert sorted((entry["image_id"], entry["round_id"]) for entry in entries) == sorted(
        (image_id, round_id) for image_id in raw_ids for round_id in range(1, 11))
    assert torch.load(tmp_path / "scores.pt", weights_only=True)["image_id"].tolist() == raw_ids
    metrics = json.loads((tmp_path / "golden_metrics.json").read_text())
    assert 1 <= metrics["mean"] <= 100 and "ndcg" in metrics


def test_a_history_start_out_of_range_is_refused(kept, tmp_path):
    folder, _ = kept
    content = json.loads((folder / "val_processed.json").read_text())
    content["data"]["dialogs"][2]["dialog"][9]["history_start"] = 10
    broken = tmp_path / "val.json"
    broken.write_text(json.dumps(content))
    with pytest.raises(UserError, match=r"val.json: dialog of image 239137, round 10: history_start 10 is out of "
                                        r"range \(0..9\)"):
        load_visdial_json(broken, "val", processed=True)
