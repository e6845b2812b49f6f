"""Loading checkpoints: accepted layouts, clear one-line errors, and no code execution."""
import pickle

import pytest
import torch

from models import build_model
from models.weights import load_bert_weights, load_model_weights
from scripts import check_reference
from utils.errors import UserError
from utils.inputs import read_checkpoint


@pytest.fixture(scope="module")
def tiny_model(golden_dir):
    return build_model(golden_dir / "model_config.json")


@pytest.fixture(scope="module")
def raw_state(golden_dir):
    return torch.load(golden_dir / "model_raw.pt", weights_only=True)


def test_training_wrapper_and_prefixed_keys_load_the_same_weights(tiny_model, raw_state, tmp_path):
    expected = raw_state["bert_pretrained.cls.bi_seq_relationship.weight"]
    layouts = {
        "wrapper.pt": {"model_state_dict": raw_state, "iter_id": 3},
        "ddp.pt": {"module." + key: value for key, value in raw_state.items()},
        "vilbert.pt": {key[len("bert_pretrained."):]: value for key, value in raw_state.items()},
    }
    for name, content in layouts.items():
        torch.save(content, tmp_path / name)
        torch.nn.init.zeros_(tiny_model.bert_pretrained.cls.bi_seq_relationship.weight)
        report = load_model_weights(tiny_model, tmp_path / name, strict=True)
        assert report.missing == [] and report.unexpected == []
        assert torch.equal(tiny_model.bert_pretrained.cls.bi_seq_relationship.weight, expected)


def test_wrong_shape_names_the_key_and_both_shapes(tiny_model, raw_state, tmp_path):
    state = dict(raw_state)
    key = "bert_pretrained.bert.v_pooler.dense.weight"
    state[key] = torch.zeros(7, 48)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(UserError) as error:
        load_model_weights(tiny_model, tmp_path / "bad.pt")
    message = str(error.value)
    assert "\n" not in message
    assert key in message and "(7, 48)" in message and "(32, 48)" in message


def test_missing_and_unexpected_keys_are_listed_by_name(tiny_model, raw_state, tmp_path):
    state = dict(raw_state)
    state.pop("bert_pretrained.bert.t_pooler.dense.bias")
    state["bert_pretrained.extra_head.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(UserError, match="1 missing keys.*t_pooler.dense.bias"):
        load_model_weights(tiny_model, tmp_path / "partial.pt", strict=True)
    report = load_model_weights(tiny_model, tmp_path / "partial.pt", strict=False)
    text = report.describe("partial.pt")
    assert "bert_pretrained.bert.t_pooler.dense.bias" in text
    assert "bert_pretrained.extra_head.weight" in text


def test_missing_file_and_non_checkpoint_give_one_line(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "notes.txt").write_text("these are not weights")
    with pytest.raises(UserError, match="not a PyTorch checkpoint") as error:
        read_checkpoint(tmp_path / "notes.txt")
    assert "\n" not in str(error.value)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="expected a dict"):
        read_checkpoint(tmp_path / "list.pt")


class WritesAFile:
    """Unpickling this would create a file: a checkpoint that runs code."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_checkpoint_that_needs_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model_state_dict": WritesAFile(str(marker))}, tmp_path / "evil.pt",
               pickle_module=pickle)
    with pytest.raises(UserError, match="refused"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_bert_init_loads_a_hugging_face_bert_into_the_text_stream(golden_dir, tmp_path):
    from transformers import BertConfig as HFConfig
    from transformers import BertForPreTraining

    hf = BertForPreTraining(HFConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=4,
                                     num_attention_heads=2, intermediate_size=64))
    hf.save_pretrained(tmp_path / "bert")
    model = build_model(golden_dir / "model_config.json")
    report = load_bert_weights(model, tmp_path / "bert")
    ours = model.bert_pretrained.bert
    assert torch.equal(ours.encoder.layer[3].output.dense.weight,
                       hf.bert.encoder.layer[3].output.dense.weight)
    assert torch.equal(ours.embeddings.word_embeddings.weight,
                       hf.bert.embeddings.word_embeddings.weight)
    assert "bert_pretrained.bert.encoder.layer.0.attention.self.query.weight" in report.loaded
    assert any("pooler" in key for key in report.unexpected)


def test_bert_init_accepts_old_gamma_beta_names(golden_dir, raw_state, tmp_path):
    old = {"bert.embeddings.LayerNorm.gamma": torch.full((16,), 3.0),
           "bert.embeddings.LayerNorm.beta": torch.full((16,), -1.0)}
    torch.save(old, tmp_path / "pytorch_model.bin")
    model = build_model(golden_dir / "model_config.json")
    load_bert_weights(model, tmp_path)
    norm = model.bert_pretrained.bert.embeddings.LayerNorm
    assert torch.all(norm.weight == 3.0) and torch.all(norm.bias == -1.0)


def test_check_reference_reports_an_absent_fixture_file_as_failed(golden_dir, tmp_path, capsys):
    partial = tmp_path / "fixtures"
    partial.mkdir()
    for name in ("model_config.json", "model_raw.pt", "keys.json"):
        (partial / name).symlink_to(golden_dir / name)
    with pytest.raises(SystemExit) as exit_info:
        check_reference.main(["--fixtures", str(partial), "--only", "model"])
    stdout = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert "absent: model_ckpt.pt" in stdout and "absent: forward_cases.pt" in stdout
    assert "PASS  keys.json: names, shapes, dtypes" in stdout
