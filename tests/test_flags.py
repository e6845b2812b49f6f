"""One meaning per flag, resolved in one place: -precision (auto; fp16 needs CUDA at every entry
point), -eval_tokens_per_batch 0, the flags that mean nothing in a run (stated, not refused), and
each split's description (dataloader/visdial_json.SPLITS)."""
import dataclasses
import io
import re

import pytest
import torch

import evaluate
import train
from dataloader.tokenizer import load_tokenizer
from dataloader.visdial_json import EVALUATED_SPLITS, SPLITS
from models import build_model
from options import EvalOptions, TrainOptions, parse_options, resolve_precision
from scripts import chat as chat_cli
from tests.train_helpers import fixture_flags
from utils.errors import UserError
from utils.evaluation import DialogRanker
from utils.evaluation.scoring import resolve_tokens_per_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
FP16_ON_CPU = re.escape("-precision fp16 needs a CUDA device (use fp32 or bf16 on the CPU)")


def test_precision_values_resolve_in_one_function():
    assert [resolve_precision(name, CPU) for name in ("auto", "fp32", "bf16")] == ["fp32", "fp32", "bf16"]
    with pytest.raises(UserError, match="^-precision fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(UserError, match="^-precision must be auto or one of fp32, bf16, fp16, got 'fp8'$"):
        resolve_precision("fp8", CPU)


def test_fp16_on_the_cpu_is_refused_by_every_entry_point_before_any_work(golden_dir, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=f"^{FP16_ON_CPU}$"):
        train.main(fixture_flags(golden_dir, tmp_path, "fp16", "-precision", "fp16", "-max_iterations", "1"))
    assert not (tmp_path / "fp16").exists()
    flags = ["-model_config", str(golden_dir / "model_config.json"),
             "-vocab", str(golden_dir / "bert-base-uncased-vocab.txt"), "-visdial_image_feats", str(golden_dir / "visdial_img_feat.lmdb"), "-max_seq_len", "108"]
    with pytest.raises(UserError, match=f"^{FP16_ON_CPU}$"):
        evaluate.main([*flags, "-split", "val", "-precision", "fp16", "-save_path", str(tmp_path), "-save_name", "e",
                       "-visdial_processed_val", str(golden_dir / "visdial_processed" / "val_processed.json")])
    assert list(tmp_path.iterdir()) == []
    tokenizer = load_tokenizer(str(golden_dir / "bert-base-uncased-vocab.txt"))
    with pytest.raises(UserError, match=f"^{FP16_ON_CPU}$"):
        DialogRanker(build_model(golden_dir / "model_config.json"), tokenizer, precision="fp16")
    stdin = io.StringIO("is it sunny?\n")
    monkeypatch.setattr("sys.stdin", stdin)
    (tmp_path / "candidates.txt").write_text("yes\nno\n")
    with pytest.raises(UserError, match=f"^{FP16_ON_CPU}$"):
        chat_cli.main(["-start_path", str(golden_dir / "model_raw.pt"), *flags, "-device", "cpu", "-precision", "fp16",
                       "-candidates", str(tmp_path / "candidates.txt")])
    assert stdin.tell() == 0  # refused before a question was read
    ranker = DialogRanker(build_model(golden_dir / "model_config.json"), tokenizer, precision="bf16")
    assert ranker.precision == "bf16"


def test_eval_tokens_per_batch_zero_means_the_device_default_everywhere(golden_dir):
    assert [resolve_tokens_per_batch(value, CPU) for value in (0, None, 100)] == [4096, 4096, 100]
    assert resolve_tokens_per_batch(0, torch.device("cuda")) == 65536
    model = build_model(golden_dir / "model_config.json")
    tokenizer = load_tokenizer(str(golden_dir / "bert-base-uncased-vocab.txt"))
    assert DialogRanker(model, tokenizer, tokens_per_batch=0).tokens_per_batch == 4096
    assert DialogRanker(model, tokenizer, tokens_per_batch=300).tokens_per_batch == 300


def test_flags_that_mean_nothing_in_a_run_are_stated_and_every_preset_still_loads(repo_root):
    presets = sorted((repo_root / "config" / "presets").glob("*.yml"))
    assert len(presets) == 8
    for preset in presets:
        options = parse_options(["-config", str(preset)], TrainOptions)
        assert options.problems() == []
        notes = options.unused_flags(world_size=1)
        assert any(line.startswith("note: -batch_size ") for line in notes) == (options.mode == "dense"), preset
    dense = parse_options(["-config", str(repo_root / "config/presets/dense.yml"), "-batch_size", "80"], TrainOptions)
    assert dense.batch_size == 80 and dense.unused_flags(world_size=8) == [
        "note: -batch_size 80 is not used in dense mode: an iteration takes one annotated round per process (all "
        "its options, -dense_chunk sequences per forward pass)"]
    assert parse_options(["-n_gpus", "2"], TrainOptions).unused_flags(world_size=2) == []
    assert parse_options([], TrainOptions).unused_flags(world_size=1) == []  # the default: no line on every run
    assert parse_options(["-n_gpus", "2"], TrainOptions).unused_flags(world_size=1) == [
        "note: -n_gpus 2 is not used: this run has 1 process(es), as torchrun started it (--nproc_per_node)"]


def test_a_dense_run_states_its_unused_batch_size(golden_dir, tmp_path, capsys):
    train.main(fixture_flags(golden_dir, tmp_path, "dense", "-mode", "dense", "-max_iterations", "1", "-val_every",
                             "-1", "-num_options", "10", "-dense_chunk", "10", "-n_gpus", "1"))
    out = capsys.readouterr().out
    assert "note: -batch_size 2 is not used in dense mode" in out and "-n_gpus" not in out


def test_each_split_is_described_once_and_its_flags_exist():
    assert list(SPLITS) == ["train", "val", "test"] and EVALUATED_SPLITS == ("val", "test")
    fields = {field.name for options in (TrainOptions, EvalOptions) for field in dataclasses.fields(options)}
    for split in SPLITS.values():
        named = [split.json_flag, split.dense_annotations_flag, split.samples_flag]
        assert all(flag in fields for flag in named if flag), split
    assert [split.name for split in SPLITS.values() if split.last_round_only] == ["test"]
    assert {split.name: split.evalai_phase for split in SPLITS.values()} == {"train": "", "val": "val",
                                                                               "test": "test-std"}
    assert parse_options(["-split", "val"], EvalOptions).split == "val"
    with pytest.raises(UserError, match="-split: invalid choice: 'train'"):
        parse_options(["-split", "train"], EvalOptions)
    assert parse_options(["-split", "test", "-report", "r"], EvalOptions).problems() == [
        "-val_evalai, -report and -question_types need -split val"]
