"""Optimizer groups and learning-rate schedule against the reference (golden keys.json)."""
import json

import pytest
import torch

from models import MODEL_TYPES, build_model
from models.vilbert import BertConfig, VisualDialogEncoder
from models.optimizer import configure_optimizer, is_language_parameter
from utils.training.schedule import WarmupLinearSchedule, warmup_linear_rate


def build_on_meta(config_path):
    with torch.device("meta"):
        return VisualDialogEncoder(BertConfig.from_json_file(config_path))


def test_language_rule_matches_reference_list_for_paper_config(repo_root, golden_dir):
    language_names = set(json.loads((golden_dir / "language_weights.json").read_text()))
    model = build_on_meta(repo_root / "config" / "bert_base_6layer_6conect.json")
    names = [name for name, _ in model.named_parameters()]
    assert len(names) > 500
    mismatched = [name for name in names
                  if is_language_parameter(VisualDialogEncoder, name) != (name in language_names)]
    assert mismatched == []
    assert not is_language_parameter(VisualDialogEncoder, "bert_pretrained.bert.t_pooler.dense.weight")
    assert is_language_parameter(VisualDialogEncoder, "module.bert_pretrained.bert.encoder.layer.3.output.dense.bias")


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_parameter_of_every_model_type_has_a_declared_rate_and_an_undeclared_one_is_our_bug(
        golden_dir, model_type):
    with torch.device("meta"):
        model = build_model(golden_dir / "model_config.json", model_type)
    rates = {name: is_language_parameter(type(model), name) for name, _ in model.named_parameters()}
    assert any(rates.values()) and not all(rates.values())
    with pytest.raises(AssertionError, match=f"{type(model).__name__} gives parameter bert_pretrained.adapter.w "
                                             "no learning rate"):
        is_language_parameter(type(model), "bert_pretrained.adapter.w")
    model.bert_pretrained.adapter = torch.nn.Linear(2, 2, device="meta")
    with pytest.raises(AssertionError, match="bert_pretrained.adapter.weight no learning rate"):
        configure_optimizer(model, lr=1e-3, image_lr=1e-4)


def test_groups_give_every_parameter_the_reference_lr_and_decay(golden_dir):
    keys = json.loads((golden_dir / "keys.json").read_text())
    args = keys["train_args"]
    model = build_on_meta(golden_dir / "model_config.json")
    optimizer = configure_optimizer(model, lr=args["lr"], image_lr=args["image_lr"])
    ours = {}
    for group in optimizer.param_groups:
        assert group["eps"] == 1e-6
        for name in group["names"]:
            ours[name] = (group["lr"], group["weight_decay"])
    expected = {g["param"]: (g["lr"], g["weight_decay"]) for g in keys["optimizer_groups"]}
    assert ours == expected
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(expected)


def test_schedule_reproduces_reference_rates(golden_dir):
    keys = json.loads((golden_dir / "keys.json").read_text())
    model = build_on_meta(golden_dir / "model_config.json")
    optimizer = configure_optimizer(model, lr=keys["train_args"]["lr"], image_lr=keys["train_args"]["image_lr"])
    schedule = WarmupLinearSchedule(optimizer, warmup_steps=10000, total_steps=200000)
    for step, expected in enumerate(keys["lr_after_each_scheduler_step"], start=1):
        # the fixture lists the distinct rates after each step
        assert sorted(set(schedule.apply(step))) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("step, expected", [
    (0, 1e-5),            # warm-up starts at the floor, not 0
    (5000, 5e-5),         # half-way through warm-up: base / 2
    (10000, 1e-4),        # peak
    (105000, 5e-5),       # half-way through the decay
    (199000, 1e-5),       # decayed below the floor
    (250000, 1e-5),       # past the end
])
def test_warmup_linear_shape(step, expected):
    assert warmup_linear_rate(1e-4, step, 10000, 200000, 1e-5) == pytest.approx(expected, rel=1e-12)


def test_no_floor_when_min_lr_zero():
    assert warmup_linear_rate(1e-4, 0, 10, 100, 0.0) == 0.0
    assert warmup_linear_rate(1e-4, 100, 10, 100, 0.0) == 0.0
