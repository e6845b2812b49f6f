"""`-precision auto` (options.resolve_precision): bf16 for training on a GPU with bf16, fp32 for
evaluation (bf16 moved a trained model's val MRR by more than 0.001) and on the CPU; a named
precision is kept as given; evaluate.py and DialogRanker resolve it as evaluation."""
import pytest
import torch

import evaluate
import options
from tests.test_evaluate import golden_args
from utils.evaluation import run

GPU, CPU = torch.device("cuda", 0), torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_is_bf16_for_training_on_a_bf16_gpu_and_fp32_for_evaluation(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert options.resolve_precision("auto", GPU) == "bf16"
    assert options.resolve_precision("auto", GPU, evaluation=True) == "fp32"
    assert options.resolve_precision("bf16", GPU, evaluation=True) == "bf16"  # asked for: kept
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert options.resolve_precision("auto", GPU) == "fp32"


def test_auto_is_fp32_on_the_cpu_for_both():
    assert options.resolve_precision("auto", CPU) == options.resolve_precision("auto", CPU, evaluation=True) == "fp32"
    assert options.resolve_precision("fp16", GPU) == "fp16"


def test_evaluate_py_resolves_auto_as_evaluation(golden_dir, tmp_path, monkeypatch):
    asked = []
    resolve = options.resolve_precision

    def recording(name, device, evaluation=False):
        asked.append((name, evaluation))
        return resolve(name, device, evaluation)

    monkeypatch.setattr(run, "resolve_precision", recording)
    evaluate.main(golden_args(golden_dir, tmp_path, "-split", "val", "-precision", "auto"))
    assert asked == [("auto", True)]
