"""Metrics per question type (evaluate.py -question_types), a seeded random ranking of the same rounds,
and the table that compares runs (-compare_metrics)."""
from __future__ import annotations

import html
from dataclasses import dataclass

import torch

from dataloader.question_types import QuestionTypes
from utils.errors import UserError
from utils.evaluation.metrics import scores_to_ranks
from utils.inputs import is_json_number, read_json

RANDOM_DRAWS = 200
RANDOM_SEED = 0
RANDOM_LABEL = "random"
ALL_ROUNDS = "all"


def _rank_metrics(gt_ranks: torch.Tensor) -> dict[str, float]:
    ranks = gt_ranks.double()
    return {"mrr": ranks.reciprocal().mean().item(), "r_1": (ranks <= 1).double().mean().item(),
            "r_5": (ranks <= 5).double().mean().item(), "mean": ranks.mean().item()}


def question_type_metrics(scores: torch.Tensor, gt_option_inds: torch.Tensor, image_ids: torch.Tensor,
                          question_types: QuestionTypes, random_draws: int = RANDOM_DRAWS) -> dict[str, float]:
    """scores [D, R, O], gt_option_inds [D, R], image_ids [D] -> for every type T of the file with rounds
    here: rounds_type_T, mrr_type_T, r_1_type_T, r_5_type_T, mean_type_T, random_mrr_type_T,
    random_r_1_type_T; random_mrr and random_r_1 over all rounds; rounds_untyped when some have no type."""
    gt_index = gt_option_inds.long().reshape(*scores.shape[:2], 1)
    gt_ranks = scores_to_ranks(scores.float()).gather(2, gt_index).squeeze(2)               # [D, R]
    random_mrr, random_r_1 = random_ranking_metrics(scores.shape, gt_index, random_draws)   # [D, R] each

    names = [[question_types.of(int(image_id), number) for number in range(1, scores.shape[1] + 1)]
             for image_id in image_ids.view(-1).tolist()]                                   # [D][R], None: no type
    metrics: dict[str, float] = {"random_mrr": random_mrr.mean().item(), "random_r_1": random_r_1.mean().item()}
    for name in question_types.descriptions:
        selected = torch.tensor([[round_name == name for round_name in row] for row in names], dtype=torch.bool)
        if not selected.any():
            continue
        metrics[f"rounds_type_{name}"] = int(selected.sum())
        for key, value in _rank_metrics(gt_ranks[selected]).items():
            metrics[f"{key}_type_{name}"] = value
        metrics[f"random_mrr_type_{name}"] = random_mrr[selected].mean().item()
        metrics[f"random_r_1_type_{name}"] = random_r_1[selected].mean().item()
    untyped = sum(row.count(None) for row in names)
    if untyped:
        metrics["rounds_untyped"] = untyped
    return metrics


def random_ranking_metrics(shape: torch.Size, gt_index: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reciprocal rank and R@1 [D, R] of the ground truth under uniformly random scores of `shape` [D, R, O],
    averaged over `draws` seeded draws."""
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    reciprocal, first = torch.zeros(shape[:2], dtype=torch.float64), torch.zeros(shape[:2], dtype=torch.float64)
    for _ in range(draws):
        ranks = scores_to_ranks(torch.rand(shape, generator=generator)).gather(2, gt_index).squeeze(2)
        reciprocal += ranks.double().reciprocal()
        first += (ranks == 1).double()
    return reciprocal / draws, first / draws


def type_names(metrics: dict) -> list[str]:
    return [key[len("rounds_type_"):] for key in metrics if key.startswith("rounds_type_")]


@dataclass
class TypeTable:
    """Per-type MRR and R@1 of several runs: `cells[label][row] = (mrr, r@1)`, rows the types then "all"."""
    rows: list[str]
    rounds: dict[str, int]
    labels: list[str]
    cells: dict[str, dict[str, tuple[float, float]]]


def comparison_table(runs: dict[str, dict]) -> TypeTable:
    """The table of runs (label -> metrics with per-type values, the same types and round counts) and of
    the random ranking of the first run's rounds."""
    first_label, first = next(iter(runs.items()))
    rows = type_names(first)
    for label, metrics in runs.items():
        if [(name, metrics.get(f"rounds_type_{name}")) for name in type_names(metrics)] != \
                [(name, first[f"rounds_type_{name}"]) for name in rows]:
            raise UserError(f"{label}: its question types or their round counts differ from those of "
                            f"{first_label} (compare runs evaluated on the same rounds with the same types file)")
    rounds = {name: int(first[f"rounds_type_{name}"]) for name in rows}
    rounds[ALL_ROUNDS] = sum(rounds.values()) + int(first.get("rounds_untyped", 0))
    cells = {label: {**{name: (metrics[f"mrr_type_{name}"], metrics[f"r_1_type_{name}"]) for name in rows},
                     ALL_ROUNDS: (metrics["mrr"], metrics["r@1"])}
             for label, metrics in runs.items()}
    cells[RANDOM_LABEL] = {**{name: (first[f"random_mrr_type_{name}"], first[f"random_r_1_type_{name}"])
                              for name in rows},
                           ALL_ROUNDS: (first["random_mrr"], first["random_r_1"])}
    return TypeTable(rows + [ALL_ROUNDS], rounds, list(runs) + [RANDOM_LABEL], cells)


def load_compared_metrics(compared: dict[str, str], own_label: str) -> dict[str, dict]:
    """label -> path of other runs' metrics files -> label -> metrics, each checked to hold the per-type
    values the table shows; UserError for a label equal to `own_label` or the random ranking's."""
    runs = {}
    for label, path in compared.items():
        if label in (own_label, RANDOM_LABEL):
            raise UserError(f"-compare_metrics: the label {label!r} ({path}) is the "
                            f"{'evaluated model' if label == own_label else 'random ranking'}'s own column; "
                            "give it another label")
        metrics = read_json(path, "metrics file")
        if not isinstance(metrics, dict) or not type_names(metrics) or "mrr" not in metrics:
            raise UserError(f"{path}: has no per-question-type metrics (evaluate it with -question_types)")
        for name in type_names(metrics):
            rounds = metrics[f"rounds_type_{name}"]
            if not (isinstance(rounds, int) and not isinstance(rounds, bool) and rounds >= 0):
                raise UserError(f"{path}: rounds_type_{name} must be an integer >= 0, got {rounds!r}")
        for key in ("mrr", "r@1", *(f"{kind}_type_{name}" for name in type_names(metrics) for kind in ("mrr", "r_1"))):
            if not is_json_number(metrics.get(key)):
                raise UserError(f"{path}: {key} must be a finite number, got {metrics.get(key)!r}")
        runs[label] = metrics
    return runs


def format_table_text(table: TypeTable) -> str:
    width = max(14, *(len(label) + 2 for label in table.labels))
    lines = [f"{'question type':<14}{'rounds':>7}" + "".join(f"{label:>{width}}" for label in table.labels),
             f"{'':<14}{'':>7}" + "".join(f"{'MRR   R@1':>{width}}" for _ in table.labels)]
    for row in table.rows:
        cells = "".join(f"{f'{mrr:.3f} {r1:.3f}':>{width}}" for mrr, r1 in
                        (table.cells[label][row] for label in table.labels))
        lines.append(f"{row:<14}{table.rounds[row]:>7}{cells}")
    return "\n".join(lines)


def format_table_html(table: TypeTable, descriptions: dict[str, str] | None = None) -> str:
    descriptions = descriptions or {}
    header = "".join(f'<th colspan="2">{html.escape(label)}</th>' for label in table.labels)
    subheader = "<th>MRR</th><th>R@1</th>" * len(table.labels)
    rows = []
    for row in table.rows:
        cells = "".join(f"<td>{mrr:.3f}</td><td>{r1:.3f}</td>" for mrr, r1 in
                        (table.cells[label][row] for label in table.labels))
        rows.append(f"<tr><td>{html.escape(row)}</td><td>{html.escape(descriptions.get(row, ''))}</td>"
                    f"<td>{table.rounds[row]}</td>{cells}</tr>")
    return (f'<table class="types"><tr><th rowspan="2">question type</th><th rowspan="2">what answers it</th>'
            f'<th rowspan="2">rounds</th>{header}</tr><tr>{subheader}</tr>{"".join(rows)}</table>')
