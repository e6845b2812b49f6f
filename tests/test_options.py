"""Options: the reference's flags and defaults, aliases, YAML presets, validation lines."""
import subprocess
import sys

import pytest

import options
from utils.errors import UserError


def parse(*argv):
    return options.parse_options(list(argv), options.TrainOptions)


def test_reference_defaults():
    parsed = parse()
    assert (parsed.batch_size, parsed.batch_multiply, parsed.num_epochs) == (80, 1, 20)
    assert (parsed.lr, parsed.image_lr, parsed.mask_prob) == (2e-5, 2e-5, 0.15)
    assert (parsed.sequences_per_image, parsed.num_negative_samples, parsed.num_options) == (8, 1, 100)
    assert (parsed.visdial_tot_rounds, parsed.max_seq_len, parsed.n_gpus) == (11, 256, 8)
    assert parsed.num_workers == min(8, options.CPU_COUNT)  # the reference's 8, or fewer on a smaller machine
    assert parsed.visdom_server == "http://localhost" and parsed.visdom_server_port == 7777
    assert parsed.save_path == "checkpoints/" and parsed.save_name == "" and not parsed.resume
    assert parsed.model_config == "config/bert_base_6layer_6conect.json"
    assert (parsed.warmup_steps, parsed.total_steps, parsed.min_lr) == (10000, 200000, 1e-5)
    assert (parsed.mode, parsed.keep_checkpoints, parsed.nan_policy) == ("base", 3, "stop")
    assert parsed.problems() == []


def test_single_and_double_dash_and_continue():
    parsed = parse("-batch_size", "40", "--lr", "1e-4", "-continue", "-save_name", "run", "--overfit")
    assert (parsed.batch_size, parsed.lr, parsed.resume, parsed.overfit) == (40, 1e-4, True, True)
    assert parsed.to_dict()["continue"] is True and "resume" not in parsed.to_dict()


def test_preset_values_and_command_line_override(tmp_path):
    preset = tmp_path / "p.yml"
    preset.write_text("mode: dense\nbatch_multiply: 10\nlr: 1e-4\nnsp_loss_coeff: 0\noverfit: true\n")
    parsed = parse("-config", str(preset), "-batch_multiply", "3")
    assert (parsed.mode, parsed.batch_multiply, parsed.lr, parsed.nsp_loss_coeff) == ("dense", 3, 1e-4, 0.0)
    assert isinstance(parsed.lr, float) and parsed.overfit is True and parsed.config == str(preset)


@pytest.mark.parametrize("text, message", [
    ("learning_rate: 1\n", "unknown option 'learning_rate'"),
    ("batch_size: many\n", "option 'batch_size' must be an integer, got 'many'"),
    ("mode: sparse\n", "option 'mode' must be one of base, dense"),
    ("overfit: 3\n", "option 'overfit' must be true or false"),
    ("- 1\n- 2\n", "a preset must be a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_presets_name_the_file_and_the_problem(tmp_path, text, message):
    preset = tmp_path / "bad.yml"
    preset.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        parse("-config", str(preset))
    assert str(error.value).startswith(str(preset)) and "\n" not in str(error.value)


def test_missing_preset(tmp_path):
    with pytest.raises(UserError, match="absent.yml: preset not found"):
        parse("-config", str(tmp_path / "absent.yml"))


@pytest.mark.parametrize("preset", ["base", "dense", "dense_nsp", "dense_listmle", "dense_approxndcg"])
def test_shipped_presets_reproduce_the_readme_commands(repo_root, preset):
    parsed = parse("-config", str(repo_root / "config" / "presets" / f"{preset}.yml"))
    assert (parsed.batch_size, parsed.mask_prob, parsed.sequences_per_image) == (80, 0.1, 2)
    if preset == "base":
        assert (parsed.mode, parsed.batch_multiply, parsed.lr, parsed.image_lr) == ("base", 1, 2e-5, 2e-5)
        assert parsed.start_path == "checkpoints-release/vqa_pretrained_weights"
    else:
        assert (parsed.mode, parsed.batch_multiply, parsed.lr, parsed.image_lr) == ("dense", 10, 1e-4, 1e-4)
        assert parsed.nsp_loss_coeff == (1.0 if preset == "dense_nsp" else 0.0)
        assert parsed.start_path == "checkpoints-release/basemodel"
        assert parsed.dense_loss == {"dense_listmle": "listmle", "dense_approxndcg": "approxndcg"}.get(preset, "ce")
    assert parsed.problems() == []


def test_validation_reports_one_line_per_problem():
    parsed = parse("-num_options", "101", "-visdial_tot_rounds", "12", "-sequences_per_image", "9",
                   "-batch_size", "0", "-mask_prob", "1.5", "-num_negative_samples", "-1", "-continue",
                   "-dense_loss", "listmle", "-approxndcg_temperature", "0")
    problems = parsed.problems()
    flags = ["-num_options", "-visdial_tot_rounds", "-sequences_per_image", "-batch_size", "-mask_prob",
             "-num_negative_samples", "-continue", "-dense_loss listmle needs -mode dense",
             "-approxndcg_temperature"]
    assert len(problems) == len(flags)
    for flag in flags:
        assert sum(problem.startswith(flag) for problem in problems) == 1, flag


def test_train_cli_prints_each_problem_without_traceback(repo_root):
    result = subprocess.run([sys.executable, "train.py", "-num_options", "1", "-lr", "-1"],
                            cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: -num_options must be in 2..100")
    assert any(line.startswith("error: -lr must be") for line in lines) and "Traceback" not in result.stderr
