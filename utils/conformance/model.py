"""Conformance checks of the model against a fixture folder (laid out like ../shared/golden): parameter
names, shapes and dtypes, strict loading of both checkpoint formats, every stored output of every
forward case (LM scores to 1e-4, the rest to 1e-5) with its losses, and the dense fine-tuning losses."""
from pathlib import Path
from typing import Dict, List

import torch

from models import build_model
from models.losses import dense_loss, pretraining_loss
from utils.conformance.common import ATOL, ATOL_LM, CheckResult, absent, compare, fixture_model, load_fixture
from utils.errors import UserError
from utils.inputs import read_json

CPU = torch.device("cpu")


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
    reference = read_json(path, "fixture")
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
    results, states = [], {}
    for name in ("model_raw.pt", "model_ckpt.pt"):
        path = fixtures / name
        if not path.is_file():
            results.append(absent(f"{name} loads strictly", path))
            continue
        try:
            states[name] = fixture_model(fixtures, name).state_dict()
            results.append(CheckResult(f"{name} loads strictly", True))
        except UserError as error:
            results.append(CheckResult(f"{name} loads strictly", False, None, str(error)))
    if len(states) == 2:
        raw, wrapped = states["model_raw.pt"], states["model_ckpt.pt"]
        same = all(torch.equal(raw[key], wrapped[key]) for key in raw)
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


def check_forward_cases(fixtures: Path, device: torch.device = CPU) -> List[CheckResult]:
    """Every stored output of every forward case (run on `device`), at real positions; losses of
    labelled cases."""
    path = fixtures / "forward_cases.pt"
    if not path.is_file():
        return [absent("forward_cases.pt", path)]
    model = fixture_model(fixtures).to(device)
    cases = load_fixture(path)
    meta, results = cases["meta"], []
    for case_name, case in cases["cases"].items():
        inputs, expected = case["inputs"], case["outputs"]
        feat, loc, mask, target = _case_tensors(cases["images"], inputs)
        inputs = {name: value.to(device) for name, value in inputs.items()}
        feat, loc, mask, target = (tensor.to(device) for tensor in (feat, loc, mask, target))
        labels = {}
        if "next_sentence_labels" in inputs:
            labels = dict(lm_labels=inputs["mask"], nsp_labels=inputs["next_sentence_labels"],
                          image_label=inputs["image_label"], image_target=target)
        with torch.no_grad():
            out = model(inputs["tokens"], inputs["segments"], inputs["attention_mask"], feat, loc,
                        mask, image_index=inputs["image_index"], output_hidden_states=True,
                        **labels)
        text = inputs["attention_mask"].bool().cpu()
        regions = mask[inputs["image_index"]].bool().cpu()
        results += _compare_outputs(case_name, out, expected, meta, text, regions)
        if labels:
            coeffs = expected["loss_coeffs"]
            total, _ = pretraining_loss(out.lm_loss, out.nsp_loss, out.img_loss,
                                        {"lm": coeffs[0], "nsp": coeffs[1], "img": coeffs[2]})
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
    path = fixtures / "forward_cases.pt"
    if not path.is_file():
        return [absent("dense_finetune", path)]
    dense = load_fixture(path)["dense_finetune"]
    relevance = dense["gt_relevance"]
    selected = dense["option_indices"]
    all_labels = torch.ones(relevance.shape[0], dtype=torch.long)
    all_labels[dense["gt_option"]] = 0
    results = []
    for prefix, scores, rel, labels in (
            ("", dense["nsp_scores_selected"], relevance[selected], dense["nsp_labels_selected"]),
            ("all100_", dense["nsp_scores_all"], relevance, all_labels)):
        without_nsp, parts = dense_loss(scores[None], rel[None], labels, 0.0)
        with_nsp, _ = dense_loss(scores[None], rel[None], labels, 1.0)
        for name, value in (("ce_loss", parts["ce_loss"]), ("nsp_loss", parts["nsp_loss"]),
                            ("loss_nsp_coeff_0", without_nsp), ("loss_nsp_coeff_1", with_nsp)):
            results.append(compare(f"dense_finetune: {prefix}{name}", value,
                                   dense[prefix + name]))
    return results


def check_dense_scores(fixtures: Path, device: torch.device = CPU) -> List[CheckResult]:
    """The model's NSP scores (computed on `device`) of all 100 options of the dense item equal
    `nsp_scores_all`."""
    cases_path, items_path = fixtures / "forward_cases.pt", fixtures / "dataset_items.pt"
    for path in (cases_path, items_path):
        if not path.is_file():
            return [absent("dense_finetune: nsp_scores_all", path)]
    dense = load_fixture(cases_path)["dense_finetune"]
    items = load_fixture(items_path)
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
    model = fixture_model(fixtures).to(device)
    with torch.no_grad():
        out = model(*(tensor.to(device) for tensor in (tokens, segments, attention, feat, image["image_loc"][None],
                                                       image["image_mask"][None])),
                    image_index=torch.zeros(len(tokens), dtype=torch.long, device=device),
                    output_lm_scores=False, output_img_scores=False)
    return [compare("dense_finetune: nsp_scores_all", out.nsp_scores, dense["nsp_scores_all"])]


def model_checks(fixtures: Path, device: torch.device = CPU) -> List[CheckResult]:
    """All model checks of a fixture folder, the forward passes on `device` in fp32 (compared on the CPU)."""
    return (check_keys(fixtures) + check_checkpoints(fixtures) + check_forward_cases(fixtures, device)
            + check_dense_finetune(fixtures) + check_dense_scores(fixtures, device))
