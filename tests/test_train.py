"""train.py end to end on the fixture data: checkpoints, exact resume, dense mode, presets."""
import json

import pytest
import torch

import evaluate
import train
from models import build_model
from models.weights import load_model_weights
from tests.train_helpers import assert_bit_identical, final_weights, fixture_flags, read_metrics
from utils.errors import UserError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def uninterrupted(one_torch_thread, golden_dir, tmp_path_factory):
    """6 iterations (2 epochs of 3), gradients accumulated over 2 iterations, no validation."""
    save_path = tmp_path_factory.mktemp("runs")
    train.main(fixture_flags(golden_dir, save_path, "whole", "-max_iterations", "6",
                             "-batch_multiply", "2", "-val_every", "-1"))
    return save_path / "whole"


def test_run_writes_config_metrics_and_loadable_checkpoints(uninterrupted, golden_dir):
    names = sorted(path.name for path in uninterrupted.iterdir())
    assert "config.yml" in names and "metrics.jsonl" in names
    # epoch ends at 3 and 6; the final one is the epoch-6 checkpoint
    assert [n for n in names if n.endswith(".ckpt")] == ["visdial_dialog_encoder_3.ckpt",
                                                          "visdial_dialog_encoder_6.ckpt"]
    content = torch.load(uninterrupted / "visdial_dialog_encoder_6.ckpt", weights_only=True)
    assert content["iter_id"] == 6 and content["progress"]["epoch"] == 2
    assert content["options"]["batch_multiply"] == 2
    model = build_model(golden_dir / "model_config.json")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_model_weights(model, uninterrupted / "visdial_dialog_encoder_6.ckpt", strict=True)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    train_records = [r for r in read_metrics(uninterrupted) if r["event"] == "train"]
    assert [r["iteration"] for r in train_records] == list(range(6))
    assert all(r["loss"] > 0 and "img_loss" in r for r in train_records)


def test_resume_is_bit_identical(uninterrupted, golden_dir, tmp_path):
    flags = fixture_flags(golden_dir, tmp_path, "split", "-batch_multiply", "2", "-val_every", "-1")
    train.main(flags + ["-max_iterations", "4"])      # stops mid-epoch with a gradient pending
    stopped = torch.load(tmp_path / "split" / "visdial_dialog_encoder_4.ckpt", weights_only=True)
    assert stopped["progress"]["position"] == 1 and stopped["per_rank"][0]["pending_gradients"]
    train.main(flags + ["-max_iterations", "6", "-continue"])
    iterations = [r["iteration"] for r in read_metrics(tmp_path / "split") if r["event"] == "train"]
    assert iterations == list(range(6))       # continued at 4, not restarted
    assert_bit_identical(final_weights(tmp_path / "split", 6), final_weights(uninterrupted, 6))
    # the reference's way: -continue -start_path CHECKPOINT, here into a fresh run folder
    moved = fixture_flags(golden_dir, tmp_path, "moved", "-batch_multiply", "2", "-val_every", "-1")
    train.main(moved + ["-max_iterations", "6", "-continue",
                        "-start_path", str(tmp_path / "split" / "visdial_dialog_encoder_4.ckpt")])
    assert_bit_identical(final_weights(tmp_path / "moved", 6), final_weights(uninterrupted, 6))
    initial = torch.load(tmp_path / "split" / "visdial_dialog_encoder_3.ckpt", weights_only=True)
    assert not torch.equal(initial["model_state_dict"]["bert_pretrained.cls.bi_seq_relationship.weight"],
                           final_weights(uninterrupted, 6)["bert_pretrained.cls.bi_seq_relationship.weight"])


def test_continue_from_start_path_is_honoured_or_refused_in_one_line(uninterrupted, golden_dir, tmp_path):
    """-continue -start_path resumes from that checkpoint: the folder's newest; an older one of a folder that
    holds newer ones is refused before anything is written (it would mix two runs' checkpoints)."""
    flags = fixture_flags(golden_dir, tmp_path, "run", "-batch_multiply", "2", "-val_every", "-1")
    train.main(flags + ["-max_iterations", "4"])
    older, newest = (tmp_path / "run" / f"visdial_dialog_encoder_{number}.ckpt" for number in (3, 4))
    before = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "run").iterdir()}
    with pytest.raises(UserError) as error:
        train.main(flags + ["-max_iterations", "6", "-continue", "-start_path", str(older)])
    assert str(error.value) == (f"-start_path: {older} is not the newest checkpoint of the run folder "
                                f"{tmp_path / 'run'} ({newest.name}); continuing from it there would mix two runs' "
                                "checkpoints: give another -save_name (a new run folder), or leave out -start_path")
    assert {path.name: path.stat().st_mtime_ns for path in (tmp_path / "run").iterdir()} == before
    train.main(flags + ["-max_iterations", "6", "-continue", "-start_path", str(newest)])
    assert_bit_identical(final_weights(tmp_path / "run", 6), final_weights(uninterrupted, 6))


def test_continue_refuses_flags_that_break_exact_resume_and_notes_the_others(uninterrupted, golden_dir, tmp_path,
                                                                             capsys):
    flags = fixture_flags(golden_dir, tmp_path, "changed", "-batch_multiply", "2", "-val_every", "-1")
    train.main(flags + ["-max_iterations", "4"])
    checkpoint = tmp_path / "changed" / "visdial_dialog_encoder_4.ckpt"
    with pytest.raises(UserError, match="cannot continue exactly, changed since this checkpoint: "
                                        "-batch_size 2 -> 4, -seed 0 -> 3 ") as error:
        train.main(flags + ["-max_iterations", "6", "-continue", "-batch_size", "4", "-seed", "3"])
    assert str(error.value).startswith(str(checkpoint)) and "-start_path" in str(error.value)
    assert sorted(path.name for path in (tmp_path / "changed").glob("*.ckpt")) == [
        "visdial_dialog_encoder_3.ckpt", checkpoint.name]
    assert "batch_size: 2\n" in (tmp_path / "changed" / "config.yml").read_text()
    capsys.readouterr()
    train.main(flags + ["-max_iterations", "6", "-continue", "-log_every", "2", "-keep_checkpoints", "5"])
    assert ("warning: changed since visdial_dialog_encoder_4.ckpt, without changing the training: "
            "-keep_checkpoints 3 -> 5, -log_every 1 -> 2") in capsys.readouterr().out
    assert_bit_identical(final_weights(tmp_path / "changed", 6), final_weights(uninterrupted, 6))


def test_dense_mode_with_validation_and_best_checkpoint(golden_dir, tmp_path):
    train.main(fixture_flags(golden_dir, tmp_path, "dense", "-mode", "dense", "-num_epochs", "1",
                             "-dense_chunk", "40", "-nsp_loss_coeff", "1", "-keep_checkpoints", "1",
                             "-num_options", "10", "-num_val_samples", "2"))
    run_dir = tmp_path / "dense"
    records = read_metrics(run_dir)
    train_records = [r for r in records if r["event"] == "train"]
    assert len(train_records) == 3 and all({"ce_loss", "nsp_loss"} <= r.keys() for r in train_records)
    val = [r for r in records if r["event"] == "val"]
    assert len(val) == 1 and 0 < val[0]["mrr"] <= 1 and 0 <= val[0]["ndcg"] <= 1 and "r_1_round_1" in val[0]
    assert sorted(p.name for p in run_dir.glob("*.ckpt")) == ["visdial_dialog_encoder_3.ckpt",
                                                              "visdial_dialog_encoder_best.ckpt"]


def test_start_path_loads_reference_checkpoint_weights(golden_dir, tmp_path, capsys):
    train.main(fixture_flags(golden_dir, tmp_path, "from_ref", "-max_iterations", "1", "-val_every", "-1",
                             "-start_path", str(golden_dir / "model_ckpt.pt")))
    assert "loaded 199 tensors" in capsys.readouterr().out
    # one iteration never steps (the reference's loop): the weights are the reference's
    reference = torch.load(golden_dir / "model_raw.pt", weights_only=True)
    assert_bit_identical(final_weights(tmp_path / "from_ref", 1), dict(reference))


def test_base_preset_run_is_scored_by_evaluate(golden_dir, repo_root, tmp_path):
    import evaluate
    flags = fixture_flags(golden_dir, tmp_path, "preset", "-max_iterations", "2", "-val_every", "-1",
                          "-start_path", str(golden_dir / "model_ckpt.pt"))
    train.main(["-config", str(repo_root / "config" / "presets" / "base.yml"), *flags])
    config = (tmp_path / "preset" / "config.yml").read_text()
    assert "mask_prob: 0.1" in config and "git commit" in config   # from the preset, traced to the code
    data_flags = flags[:flags.index("-max_seq_len")]
    evaluate.main([*data_flags, "-max_seq_len", "108", "-split", "test", "-num_workers", "0",
                   "-visdial_processed_test", str(golden_dir / "visdial_processed" / "test_processed.json"),
                   "-start_path", str(tmp_path / "preset" / "visdial_dialog_encoder_2.ckpt"),
                   "-save_path", str(tmp_path), "-save_name", "scored"])
    predictions = json.loads((tmp_path / "scored_predictions.json").read_text())
    assert len(predictions) == 4 and all(sorted(p["ranks"]) == list(range(1, 101)) for p in predictions)


def test_language_only_model_trains_without_region_loss(golden_dir, tmp_path):
    train.main(fixture_flags(golden_dir, tmp_path, "text", "-max_iterations", "2", "-val_every", "-1",
                             "-model_type", "language_only"))
    records = [r for r in read_metrics(tmp_path / "text") if r["event"] == "train"]
    assert len(records) == 2 and all("img_loss" not in r and r["lm_loss"] > 0 for r in records)
    assert "bert_pretrained.bert.pooler.dense.weight" in final_weights(tmp_path / "text", 2)
    golden = golden_dir / "visdial_processed"
    evaluate.main(["-split", "val", "-model_type", "language_only", "-model_config", str(golden_dir / "model_config.json"),
                   "-start_path", str(tmp_path / "text" / "visdial_dialog_encoder_2.ckpt"),
                   "-vocab", str(golden_dir / "bert-base-uncased-vocab.txt"),
                   "-visdial_image_feats", str(golden_dir / "visdial_img_feat.lmdb"),
                   "-visdial_processed_val", str(golden / "val_processed.json"),
                   "-visdial_processed_val_dense_annotations", str(golden / "val_dense_annotations_processed.json"),
                   "-max_seq_len", "108", "-num_workers", "0", "-save_path", str(tmp_path), "-save_name", "text"])
    metrics = json.loads((tmp_path / "text_metrics.json").read_text())
    assert 1 <= metrics["mean"] <= 100 and 0 < metrics["mrr"] <= 1 and "ndcg" in metrics


def test_listmle_dense_run_resumes_bit_identically_and_counts_unannotated_rounds(golden_dir, tmp_path, capsys):
    """ListMLE's tie order comes from the run's saved CPU generator: a resumed run draws the same.
    A round whose relevances are all 0 is left out and counted (a warning, skipped_rounds events)."""
    annotations = json.loads((golden_dir / "visdial_processed" / "train_dense_annotations_processed.json").read_text())
    annotations[1]["relevance"] = [0.0] * len(annotations[1]["relevance"])
    annotation_file = tmp_path / "annotations.json"
    annotation_file.write_text(json.dumps(annotations))

    def flags(name):
        return fixture_flags(golden_dir, tmp_path, name, "-mode", "dense", "-dense_loss", "listmle",
                             "-dense_chunk", "50", "-val_every", "-1", "-num_epochs", "1",
                             "-visdial_processed_train_dense_annotations", str(annotation_file))
    train.main(flags("whole") + ["-max_iterations", "3"])
    assert "warning: -dense_loss listmle skips annotated rounds whose relevances are all 0" in capsys.readouterr().out
    train.main(flags("split") + ["-max_iterations", "2"])
    train.main(flags("split") + ["-max_iterations", "3", "-continue"])
    assert_bit_identical(final_weights(tmp_path / "split", 3), final_weights(tmp_path / "whole", 3))
    records = read_metrics(tmp_path / "whole")
    steps = [r for r in records if r["event"] == "train"]
    assert len(steps) == 3 and all("listmle_loss" in r and "ce_loss" not in r for r in steps)
    assert sum(r["rounds"] for r in records if r["event"] == "skipped_rounds") == 1


def test_continue_compares_the_model_config_by_content_not_by_path(golden_dir, tmp_path):
    """A config moved (same values, other path and layout) resumes; one edited in place is refused,
    naming the keys that changed; a checkpoint without the stored config (written before it was
    stored) still resumes, its -model_config path compared as before."""
    values = json.loads((golden_dir / "model_config.json").read_text())
    config = tmp_path / "model.json"
    config.write_text(json.dumps(values))

    def flags(name, config_path, iterations):
        return fixture_flags(golden_dir, tmp_path, name, "-val_every", "-1", "-model_config", str(config_path),
                             "-max_iterations", str(iterations))
    train.main(flags("run", config, 1))
    checkpoint = tmp_path / "run" / "visdial_dialog_encoder_1.ckpt"
    saved = torch.load(checkpoint, weights_only=True)["model_config"]
    assert saved["values"]["hidden_size"] == values["hidden_size"] and len(saved["sha256"]) == 64

    moved = tmp_path / "elsewhere" / "same.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps(dict(reversed(list(values.items()))), indent=4))
    train.main(flags("run", moved, 2) + ["-continue"])
    assert (tmp_path / "run" / "visdial_dialog_encoder_2.ckpt").is_file()

    config.write_text(json.dumps({**values, "hidden_dropout_prob": 0.2, "pooling_method": "sum"}))
    with pytest.raises(UserError) as error:
        train.main(flags("run", config, 3) + ["-continue"])
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "run" / "visdial_dialog_encoder_2.ckpt"))
    assert f"the model config {config} changed" in message
    assert "hidden_dropout_prob 0.1 -> 0.2, pooling_method 'mul' -> 'sum'" in message
    assert not (tmp_path / "run" / "visdial_dialog_encoder_3.ckpt").exists()

    old = torch.load(tmp_path / "run" / "visdial_dialog_encoder_2.ckpt", weights_only=True)
    del old["model_config"]
    torch.save(old, tmp_path / "run" / "visdial_dialog_encoder_2.ckpt")
    with pytest.raises(UserError, match="changed since this checkpoint: -model_config "):
        train.main(flags("run", config, 3) + ["-continue"])
    train.main(flags("run", moved, 3) + ["-continue"])
    assert (tmp_path / "run" / "visdial_dialog_encoder_3.ckpt").is_file()
