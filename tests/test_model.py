"""The ViLBERT encoder and the language-only baseline: conformance and invariants."""
import json
from pathlib import Path

import pytest
import torch

from models import MODEL_TYPES, BertConfig, LanguageOnlyDialogEncoder, VisualDialogEncoder, build_model
from utils.errors import UserError


def test_paper_config_has_the_reference_parameter_count(repo_root):
    with torch.device("meta"):  # shapes only: no memory for, and no initialisation of, 250M weights
        model = build_model(repo_root / "config" / "bert_base_6layer_6conect.json")
    assert sum(p.numel() for p in model.parameters()) == 250_090_109
    assert len(model.state_dict()) == 535


def tiny_config(golden_dir, **changes) -> BertConfig:
    values = json.loads((golden_dir / "model_config.json").read_text())
    values.update(changes)
    return BertConfig.from_dict(values)


def random_batch(num_sequences=4, length=12, num_images=2, regions=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1000, 2000, (num_sequences, length), generator=generator)
    lengths = torch.tensor([length, length - 3, 6, 4][:num_sequences])
    attention = torch.arange(length)[None] < lengths[:, None]
    tokens = tokens * attention
    segments = (torch.arange(length)[None] // 3 % 2).expand(num_sequences, -1) * attention
    feat = torch.randn(num_images, regions, 2048, generator=generator)
    loc = torch.rand(num_images, regions, 5, generator=generator)
    mask = torch.ones(num_images, regions)
    mask[1, -2:] = 0
    index = torch.arange(num_sequences) % num_images
    return tokens, segments, attention, feat, loc, mask, index


def test_image_index_equals_copying_the_image_per_sequence(golden_dir):
    model = VisualDialogEncoder(tiny_config(golden_dir)).eval()
    tokens, segments, attention, feat, loc, mask, index = random_batch()
    with torch.no_grad():
        shared = model(tokens, segments, attention, feat, loc, mask, image_index=index)
        copied = model(tokens, segments, attention, feat[index], loc[index], mask[index])
    torch.testing.assert_close(shared.nsp_scores, copied.nsp_scores, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(shared.img_scores, copied.img_scores, atol=1e-5, rtol=1e-5)


def test_scores_do_not_depend_on_padding(golden_dir):
    model = VisualDialogEncoder(tiny_config(golden_dir)).eval()
    tokens, segments, attention, feat, loc, mask, index = random_batch()
    pad = lambda x: torch.nn.functional.pad(x, (0, 20))  # noqa: E731
    with torch.no_grad():
        short = model(tokens, segments, attention, feat, loc, mask, image_index=index)
        long = model(pad(tokens), pad(segments), pad(attention), feat, loc, mask, image_index=index)
    torch.testing.assert_close(short.nsp_scores, long.nsp_scores, atol=1e-5, rtol=1e-5)


def test_ranking_path_skips_heads_and_gives_the_same_scores(golden_dir):
    model = VisualDialogEncoder(tiny_config(golden_dir)).eval()
    batch = random_batch()
    with torch.no_grad():
        full = model(*batch[:6], image_index=batch[6])
        ranking = model(*batch[:6], image_index=batch[6], output_lm_scores=False,
                        output_img_scores=False)
    assert ranking.lm_scores is None and ranking.img_scores is None
    assert torch.equal(full.nsp_scores, ranking.nsp_scores)


def test_losses_are_zero_not_nan_without_masked_tokens_or_regions(golden_dir):
    model = VisualDialogEncoder(tiny_config(golden_dir)).eval()
    tokens, segments, attention, feat, loc, mask, index = random_batch()
    out = model(tokens, segments, attention, feat, loc, mask, image_index=index,
                lm_labels=torch.full_like(tokens, -1), nsp_labels=torch.zeros(4, dtype=torch.long),
                image_label=torch.full(mask.shape, -1), image_target=torch.rand(2, 5, 1601))
    assert out.lm_loss.item() == 0.0 and out.img_loss.item() == 0.0
    assert torch.isfinite(out.nsp_loss)


def test_lm_loss_only_counts_labelled_tokens(golden_dir):
    model = VisualDialogEncoder(tiny_config(golden_dir)).eval()
    tokens, segments, attention, feat, loc, mask, index = random_batch()
    labels = torch.full_like(tokens, -1)
    labels[0, 2], labels[2, 1] = 1996, 2003
    out = model(tokens, segments, attention, feat, loc, mask, image_index=index, lm_labels=labels)
    log_probs = out.lm_scores.log_softmax(-1)
    expected = -(log_probs[0, 2, 1996] + log_probs[2, 1, 2003]) / 2
    torch.testing.assert_close(out.lm_loss, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("changes", [{"fusion_method": "sum"}, {"with_coattention": False},
                                     {"fixed_t_layer": 1, "fixed_v_layer": 0},
                                     {"predict_feature": True, "v_target_size": 2048}])
def test_config_variants_build_and_train(golden_dir, changes):
    model = VisualDialogEncoder(tiny_config(golden_dir, **changes))
    tokens, segments, attention, feat, loc, mask, index = random_batch()
    target = feat if changes.get("predict_feature") else torch.rand(2, 5, 1601).softmax(-1)
    out = model(tokens, segments, attention, feat, loc, mask, image_index=index,
                nsp_labels=torch.tensor([0, 1, 0, 1]), image_label=(mask > 0).long(),
                image_target=target)
    (out.nsp_loss + out.img_loss).backward()
    frozen = model.bert_pretrained.bert.encoder.layer[0].attention.self.query.weight.grad
    assert (frozen is None) == (changes.get("fixed_t_layer", 0) > 0)
    assert torch.isfinite(out.img_loss)


def test_with_coattention_false_ignores_the_image(golden_dir):
    model = VisualDialogEncoder(tiny_config(golden_dir, with_coattention=False)).eval()
    tokens, segments, attention, feat, loc, mask, index = random_batch()
    with torch.no_grad():
        text_a = model(tokens, segments, attention, feat, loc, mask, image_index=index,
                       output_hidden_states=True).sequence_output_t
        text_b = model(tokens, segments, attention, feat * 2, loc, mask, image_index=index,
                       output_hidden_states=True).sequence_output_t
    assert torch.equal(text_a, text_b)


@pytest.mark.parametrize("changes, message", [
    ({"in_batch_pairs": True}, "in_batch_pairs is not supported"),
    ({"fast_mode": True}, "fast_mode is not supported"),
    ({"fusion_method": "concat"}, "fusion_method"),
    ({"t_biattention_id": [2, 9]}, "num_hidden_layers"),
    ({"num_attention_heads": 3}, "not a multiple"),
    ({"colour": 1}, "unknown model config key"),
])
def test_unsupported_configs_are_rejected_clearly(golden_dir, changes, message):
    with pytest.raises(UserError, match=message):
        VisualDialogEncoder(tiny_config(golden_dir, **changes))


def test_language_only_baseline_scores_and_trains(repo_root):
    model = build_model(repo_root / "tests" / "fixtures" / "language_only_tiny.json",
                        "language_only")
    assert isinstance(model, LanguageOnlyDialogEncoder)
    names = set(model.state_dict())
    assert "bert_pretrained.cls.seq_relationship.weight" in names
    assert "bert_pretrained.bert.pooler.dense.weight" in names
    tokens, segments, attention, *_ = random_batch()
    labels = torch.full_like(tokens, -1)
    labels[1, 3] = 2054
    out = model(tokens, segments, attention, lm_labels=labels, nsp_labels=torch.tensor([0, 1, 1, 0]),
                image_feat=None, output_img_scores=False)
    assert out.nsp_scores.shape == (4, 2) and out.lm_scores.shape == (4, 12, 30522)
    (out.lm_loss + out.nsp_loss).backward()
    assert model.bert_pretrained.bert.encoder.layer[0].attention.self.query.weight.grad is not None


def test_a_fresh_model_starts_with_both_poolers_alive_and_a_checkpoint_overrides_it(golden_dir):
    """Pooler biases 1.0 at init (every other bias 0, as the reference), so no ReLU pooler unit
    starts dead on a small input; loading a checkpoint puts its own biases back."""
    model = VisualDialogEncoder(tiny_config(golden_dir))
    bert = model.bert_pretrained.bert
    for pooler in (bert.t_pooler, bert.v_pooler):
        assert torch.equal(pooler.dense.bias, torch.ones_like(pooler.dense.bias))
    other_biases = [module.bias for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear) and "pooler" not in name and module.bias is not None]
    assert other_biases and all(not bias.any() for bias in other_biases)
    tokens, segments, attention, feat, loc, mask, index = random_batch()
    with torch.no_grad():
        out = model.eval()(tokens, segments, attention, feat, loc, mask, index, output_lm_scores=False,
                           output_img_scores=False, output_hidden_states=True)
    assert (out.pooled_output_t > 0).float().mean() > 0.9 and (out.pooled_output_v > 0).float().mean() > 0.9
    reference = torch.load(golden_dir / "model_raw.pt", weights_only=True)
    model.load_state_dict(reference)
    assert torch.equal(bert.t_pooler.dense.bias, reference["bert_pretrained.bert.t_pooler.dense.bias"])


def registry_paths(golden_dir, tmp_path, model_type) -> dict:
    """Every way a model type reaches the registry (models.MODEL_TYPES), as a call."""
    import evaluate
    import train
    from models import checked_model_config, model_class
    from scripts import chat
    from tests.train_helpers import fixture_flags
    from utils.evaluation import DialogRanker

    config, vocab = golden_dir / "model_config.json", golden_dir / "bert-base-uncased-vocab.txt"
    flags = fixture_flags(golden_dir, tmp_path, "run")

    def preset() -> str:
        (tmp_path / "preset.yml").write_text(f"model_type: {json.dumps(model_type)}\n")
        return str(tmp_path / "preset.yml")

    return {
        "model_class": lambda: model_class(model_type),
        "build_model": lambda: build_model(config, model_type),
        "checked_model_config": lambda: checked_model_config(config, model_type, 30522, vocab, 108),
        "DialogRanker.from_checkpoint": lambda: DialogRanker.from_checkpoint(
            tmp_path / "absent.ckpt", model_config=config, vocab=vocab, device="cpu", model_type=model_type),
        "train.py -model_type": lambda: train.main([*flags, "-model_type", str(model_type)]),
        "train.py preset": lambda: train.main([*flags, "-config", preset()]),
        "evaluate.py -model_type": lambda: evaluate.main(["-model_type", str(model_type)]),
        "chat.py -model_type": lambda: chat.main(["-model_type", str(model_type), "-start_path", "absent.ckpt",
                                                  "-candidates", "absent.txt"]),
    }


REGISTRY_CASES = [(path, model_type) for path in registry_paths(Path("."), Path("."), "bogus")
                  for model_type in ("bogus", "ViLBERT", *([["vilbert"]] if path != "train.py preset" else []))]
"""(A list in a preset is refused as no string: `must be a string ... got ['vilbert']`.)"""


@pytest.mark.parametrize("path, model_type", REGISTRY_CASES, ids=str)
def test_every_path_to_the_model_type_registry_refuses_an_unknown_type(path, model_type, golden_dir, tmp_path):
    """One line naming the type given and the known ones, before any file is read (none falls
    through to ViLBERT); nothing is written."""
    with pytest.raises(UserError) as error:
        registry_paths(golden_dir, tmp_path, model_type)[path]()
    message = str(error.value)
    assert "\n" not in message and str(model_type).strip("[]'") in message
    assert all(name in message for name in MODEL_TYPES)
    assert {item.name for item in tmp_path.iterdir()} <= {"preset.yml"}
