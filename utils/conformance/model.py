"""Conformance checks against a reference fixture folder (laid out like ../shared/golden).

Each check returns `CheckResult`s; `scripts/check_reference.py` prints them as a table. This
module holds the shared pieces and the model checks; the data and evaluation checks live in
`utils/conformance/data.py` and `utils/conformance/evaluation.py`.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from utils.errors import UserError

# Tolerances suggested by the fixture README (float32 reference, other thread counts / batches).
ATOL_LM = 1e-4
ATOL = 1e-5


@dataclass
class CheckResult:
    """One row of the conformance table."""

    name: str
    passed: bool
    max_abs_diff: Optional[float] = None
    detail: str = ""


def absent(name: str, path: Path) -> CheckResult:
    """A check whose fixture file is missing: reported as absent, never as passed."""
    return CheckResult(name, False, None, f"absent: {path.name}")


def compare(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL,
            where: Optional[torch.Tensor] = None) -> CheckResult:
    """Compare two tensors (only at `where` if given) with atol = rtol = `atol`.

    Integer and boolean tensors must be equal exactly.
    """
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if actual.shape != expected.shape:
        return CheckResult(name, False, None,
                           f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if where is not None:
        actual, expected = actual[where], expected[where]
    if not expected.is_floating_point():
        same = torch.equal(actual.long(), expected.long())
        mismatches = int((actual.long() != expected.long()).sum())
        return CheckResult(name, same, 0.0 if same else None,
                           "" if same else f"{mismatches} values differ")
    difference = (actual.double() - expected.double()).abs()
    max_diff = float(difference.max()) if difference.numel() else 0.0
    passed = bool(torch.all(difference <= atol + atol * expected.double().abs()))
    return CheckResult(name, passed, max_diff)


def _load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def fixture_model(fixtures: Path, checkpoint: str = "model_raw.pt"):
    """The fixture's model (model_config.json + a checkpoint) in eval mode, or a UserError."""
    from models import build_model
    from utils.checkpointing import load_model_weights

    model = build_model(fixtures / "model_config.json")
    load_model_weights(model, fixtures / checkpoint, strict=True)
    return model.eval()


def padded_rows(rows: List[torch.Tensor], num_rows: int) -> torch.Tensor:
    """Trimmed fixture rows ([n_k, D] each) -> zero-padded [K, num_rows, D]."""
    out = torch.zeros(len(rows), num_rows, rows[0].shape[-1], dtype=rows[0].dtype)
    for index, row in enumerate(rows):
        out[index, :row.shape[0]] = row
    return out


def check_keys(fixtures: Path) -> List[CheckResult]:
    """Parameter names, shapes, dtypes, the tied decoder and the unique parameter count."""
    path = fixtures / "keys.json"
    if not path.is_file():
        return [absent("keys.json", path)]
    from models import build_model

    reference = json.loads(path.read_text())
    model = build_model(fixtures / "model_config.json")
    ours = [[name, list(value.shape), str(value.dtype)] for name, value in model.state_dict().items()]
    expected = [[name, list(shape), dtype] for name, shape, dtype in reference["state_dict"]]
    results = [CheckResult("keys.json: names, shapes, dtypes", ours == expected, None,
                           "" if ours == expected else _first_difference(ours, expected))]
    state = model.state_dict()
    tied = all(state[a].data_ptr() == state[b].data_ptr() for a, b in reference["tied"])
    results.append(CheckResult("keys.json: tied LM decoder", tied))
    unique = sum(parameter.numel() for parameter in model.parameters())
    results.append(CheckResult("keys.json: unique parameters", unique == reference[
        "num_parameters_unique"], None, f"{unique} vs {reference['num_parameters_unique']}"))
    return results


def _first_difference(ours: list, expected: list) -> str:
    for mine, theirs in zip(ours, expected):
        if mine != theirs:
            return f"first difference: {mine} vs {theirs}"
    return f"{len(ours)} keys vs {len(expected)}"


def check_checkpoints(fixtures: Path) -> List[CheckResult]:
    """Both fixture checkpoints load strictly and hold the same weights."""
    from utils.checkpointing import extract_state_dict, read_checkpoint

    results, states = [], {}
    for name in ("model_raw.pt", "model_ckpt.pt"):
        path = fixtures / name
        if not path.is_file():
            results.append(absent(f"{name} loads strictly", path))
            continue
        try:
            fixture_model(fixtures, name)
            states[name] = extract_state_dict(read_checkpoint(path), path)
            results.append(CheckResult(f"{name} loads strictly", True))
        except UserError as error:
            results.append(CheckResult(f"{name} loads strictly", False, None, str(error)))
    if len(states) == 2:
        raw, wrapped = states["model_raw.pt"], states["model_ckpt.pt"]
        same = raw.keys() == wrapped.keys() and all(torch.equal(raw[k], wrapped[k]) for k in raw)
        results.append(CheckResult("model_ckpt.pt weights == model_raw.pt", same))
    return results


def _case_tensors(images: Dict, inputs: Dict):
    """Image tensors of a forward case: [K, 37, .] rows, with masked rows zeroed if labelled."""
    num_regions = images["image_loc"].shape[1]
    feat = padded_rows(images["image_feat"], num_regions)
    target = padded_rows(images["image_target"], num_regions)
    loc, mask = images["image_loc"], images["image_mask"]
    if "image_feat_zeroed_rows" in inputs:
        count = inputs["image_feat_zeroed_rows"].shape[0]
        feat, target, loc, mask = feat[:count].clone(), target[:count], loc[:count], mask[:count]
        feat[inputs["image_feat_zeroed_rows"]] = 0
    return feat, loc, mask, target


def check_forward_cases(fixtures: Path) -> List[CheckResult]:
    """Every stored output of every forward case, at real positions; losses of labelled cases."""
    path = fixtures / "forward_cases.pt"
    if not path.is_file():
        return [absent("forward_cases.pt", path)]
    model = fixture_model(fixtures)
    cases = _load(path)
    meta, results = cases["meta"], []
    for case_name, case in cases["cases"].items():
        inputs, expected = case["inputs"], case["outputs"]
        feat, loc, mask, target = _case_tensors(cases["images"], inputs)
        labels = {}
        if "next_sentence_labels" in inputs:
            labels = dict(lm_labels=inputs["mask"], nsp_labels=inputs["next_sentence_labels"],
                          image_label=inputs["image_label"], image_target=target)
        with torch.no_grad():
            out = model(inputs["tokens"], inputs["segments"], inputs["attention_mask"], feat, loc,
                        mask, image_index=inputs["image_index"], output_hidden_states=True,
                        **labels)
        text = inputs["attention_mask"].bool()
        regions = mask[inputs["image_index"]].bool()
        results += _compare_outputs(case_name, out, expected, meta, text, regions)
        if labels:
            coeffs = expected["loss_coeffs"]
            total = coeffs[0] * out.lm_loss + coeffs[1] * out.nsp_loss + coeffs[2] * out.img_loss
            for name, value in (("masked_lm_loss", out.lm_loss), ("nsp_loss", out.nsp_loss),
                                ("masked_img_loss", out.img_loss), ("loss", total)):
                results.append(compare(f"{case_name}: {name}", value, expected[name]))
    return results


def _compare_outputs(case: str, out, expected: Dict, meta: Dict, text: torch.Tensor,
                     regions: torch.Tensor) -> List[CheckResult]:
    lm, img = out.lm_scores, out.img_scores
    ours = {
        "nsp_scores": (out.nsp_scores, None, ATOL),
        "lm_scores_logsumexp": (lm.logsumexp(-1), text, ATOL_LM),
        "lm_scores_max": (lm.max(-1).values, text, ATOL_LM),
        "lm_scores_argmax": (lm.argmax(-1), text, None),
        "lm_scores_cols": (lm[..., meta["lm_cols"]], text, ATOL_LM),
        "lm_scores_rows": (_rows(lm, expected["lm_scores_rows_index"]), None, ATOL_LM),
        "img_scores_logsumexp": (img.logsumexp(-1), regions, ATOL),
        "img_scores_max": (img.max(-1).values, regions, ATOL),
        "img_scores_argmax": (img.argmax(-1), regions, None),
        "img_scores_cols": (img[..., meta["img_cols"]], regions, ATOL),
        "img_scores_rows": (_rows(img, expected["img_scores_rows_index"]), None, ATOL),
        "sequence_output_t": (out.sequence_output_t, text, ATOL),
        "sequence_output_v": (out.sequence_output_v, regions, ATOL),
        "pooled_output_t": (out.pooled_output_t, None, ATOL),
        "pooled_output_v": (out.pooled_output_v, None, ATOL),
        "embedding_output": (out.embedding_output, text, ATOL),
        "v_embedding_output": (out.v_embedding_output, regions, ATOL),
    }
    results = []
    for name, (actual, where, atol) in ours.items():
        if name not in expected:
            results.append(CheckResult(f"{case}: {name}", False, None, "absent in the fixture"))
            continue
        results.append(compare(f"{case}: {name}", actual, expected[name], atol or ATOL, where))
    return results


def _rows(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Full score rows at (sequence, position) pairs: index [M, 2] -> [M, C]."""
    return scores[index[:, 0], index[:, 1]]


def check_dense_finetune(fixtures: Path) -> List[CheckResult]:
    """The dense fine-tuning losses recomputed from the stored NSP scores, for the reference's
    80 sampled options and for all 100."""
    import torch.nn.functional as F

    from models.losses import dense_relevance_loss

    path = fixtures / "forward_cases.pt"
    if not path.is_file():
        return [absent("dense_finetune", path)]
    dense = _load(path)["dense_finetune"]
    relevance = dense["gt_relevance"]
    selected = dense["option_indices"]
    all_labels = torch.ones(relevance.shape[0], dtype=torch.long)
    all_labels[dense["gt_option"]] = 0
    results = []
    for prefix, scores, rel, labels in (
            ("", dense["nsp_scores_selected"], relevance[selected], dense["nsp_labels_selected"]),
            ("all100_", dense["nsp_scores_all"], relevance, all_labels)):
        ce = dense_relevance_loss(scores[None], rel[None])
        nsp = F.cross_entropy(scores, labels)
        for name, value in (("ce_loss", ce), ("nsp_loss", nsp), ("loss_nsp_coeff_0", ce),
                            ("loss_nsp_coeff_1", ce + nsp)):
            results.append(compare(f"dense_finetune: {prefix}{name}", value,
                                   dense[prefix + name]))
    return results


def check_dense_scores(fixtures: Path) -> List[CheckResult]:
    """The model's NSP scores of all 100 options of the dense item equal `nsp_scores_all`."""
    cases_path, items_path = fixtures / "forward_cases.pt", fixtures / "dataset_items.pt"
    for path in (cases_path, items_path):
        if not path.is_file():
            return [absent("dense_finetune: nsp_scores_all", path)]
    dense = _load(cases_path)["dense_finetune"]
    items = _load(items_path)
    item = items["dense_train"][0]
    image = items["images"][int(item["image_id"].reshape(-1)[0])]
    num_regions = image["image_loc"].shape[0]
    feat = padded_rows([image["image_feat"]], num_regions)
    tokens = item["tokens"].long().reshape(-1, item["tokens"].shape[-1])
    segments = item["segments"].long().reshape(tokens.shape)
    sep_indices = item["sep_indices"].long().reshape(tokens.shape[0], -1)
    hist_len = item["hist_len"].long().reshape(-1)
    lengths = sep_indices.gather(1, hist_len[:, None]).squeeze(1) + 1
    attention = torch.arange(tokens.shape[1])[None] < lengths[:, None]
    model = fixture_model(fixtures)
    with torch.no_grad():
        out = model(tokens, segments, attention, feat, image["image_loc"][None],
                    image["image_mask"][None], image_index=torch.zeros(len(tokens), dtype=torch.long),
                    output_lm_scores=False, output_img_scores=False)
    return [compare("dense_finetune: nsp_scores_all", out.nsp_scores, dense["nsp_scores_all"])]


def model_checks(fixtures: Path) -> List[CheckResult]:
    """All model checks of a fixture folder."""
    return (check_keys(fixtures) + check_checkpoints(fixtures) + check_forward_cases(fixtures)
            + check_dense_finetune(fixtures) + check_dense_scores(fixtures))
