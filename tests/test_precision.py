"""`-precision auto` (options.resolve_precision): bf16 for training on a GPU with bf16, fp32 for
evaluation (bf16 moved a trained model's val MRR by more than 0.001) and on the CPU; a named
precision is kept as given. Under a faked bf16-capable GPU, evaluate.py, DialogRanker and chat
score in fp32, and training validates in fp32 while its steps run bf16."""
import io
import sys

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


def on_a_bf16_gpu(monkeypatch, *modules) -> list[str]:
    """Make -precision resolve in `modules` as on a CUDA GPU with bf16 (the computation stays on the
    CPU, which runs bf16 autocast too); returns the precisions resolved, in order."""
    resolved, resolve = [], options.resolve_precision
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)

    def as_on_the_gpu(name, device, evaluation=False):
        resolved.append(resolve(name, GPU, evaluation))
        return resolved[-1]

    for module in modules:
        monkeypatch.setattr(module, "resolve_precision", as_on_the_gpu)
    return resolved


def recorded_precisions(monkeypatch, module, name: str, position: int) -> list[str]:
    """The precision argument (at `position`) of every call of `module.name`, which still runs."""
    seen, function = [], getattr(module, name)

    def recording(*args, **kwargs):
        seen.append(args[position])
        return function(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return seen


def test_ranker_and_chat_score_in_fp32_under_auto_on_a_bf16_gpu(golden_dir, tmp_path, monkeypatch, capsys):
    from scripts import chat
    from utils.evaluation import ranker

    resolved = on_a_bf16_gpu(monkeypatch, ranker)
    scored = recorded_precisions(monkeypatch, ranker, "score_sequences", 3)
    (tmp_path / "answers.txt").write_text("yes\nno\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("a caption\nis it sunny ?\n"))  # the image has no caption
    chat.main(["-start_path", str(golden_dir / "model_raw.pt"), "-model_config", str(golden_dir / "model_config.json"),
               "-vocab", str(golden_dir / "bert-base-uncased-vocab.txt"), "-max_seq_len", "108",
               "-visdial_image_feats", str(golden_dir / "visdial_img_feat.lmdb"), "-device", "cpu",
               "-candidates", str(tmp_path / "answers.txt"), "-precision", "auto"])
    assert "Q: is it sunny ?" in capsys.readouterr().out
    assert resolved and set(resolved) == {"fp32"} and scored == ["fp32"]
    asked = ranker.DialogRanker.from_checkpoint(golden_dir / "model_raw.pt", model_config=golden_dir / "model_config.json",
                                                vocab=golden_dir / "bert-base-uncased-vocab.txt", device="cpu",
                                                precision="bf16")
    assert asked.precision == "bf16"  # asked for: kept


def test_training_validates_in_fp32_while_its_steps_run_bf16_under_auto_on_a_bf16_gpu(golden_dir, tmp_path,
                                                                                      monkeypatch):
    """The validation that picks the best checkpoint runs as evaluate.py does."""
    import train
    from tests.train_helpers import fixture_flags
    from utils.training import steps, trainer

    on_a_bf16_gpu(monkeypatch, train)
    stepped, validated = recorded_precisions(monkeypatch, steps, "autocast", 1), []

    def evaluate_val(model, dataset, precision, **kwargs):
        validated.append(precision)
        return {"mrr": 0.5}

    monkeypatch.setattr(trainer, "evaluate_val", evaluate_val)
    train.main(fixture_flags(golden_dir, tmp_path, "auto", "-max_iterations", "2", "-val_every", "2"))
    assert stepped and set(stepped) == {"bf16"} and validated == ["fp32"]
