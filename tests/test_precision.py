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


def test_training_validates_as_evaluation_and_trains_as_training(golden_dir, tmp_path, monkeypatch):
    """Under -precision auto the validation that picks the best checkpoint runs as evaluate.py does
    (fp32 on a GPU too), while the steps keep the training precision."""
    import train
    from tests.train_helpers import fixture_flags
    from utils.training import trainer

    asked, validated = [], []
    resolve = options.resolve_precision

    def recording(name, device, evaluation=False):
        asked.append((name, evaluation))
        return resolve(name, device, evaluation)

    def evaluate_val(model, dataset, precision, **kwargs):
        validated.append(precision)
        return {"mrr": 0.5}

    monkeypatch.setattr(train, "resolve_precision", recording)
    monkeypatch.setattr(trainer, "evaluate_val", evaluate_val)
    train.main(fixture_flags(golden_dir, tmp_path, "auto", "-max_iterations", "2", "-val_every", "2"))
    assert sorted(asked) == [("auto", False), ("auto", True)] and validated == ["fp32"]
