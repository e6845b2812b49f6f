"""The pointing score of a model on the val rounds whose relevant regions are known, per question type.

For every evaluated round that the question-type file gives `relevant_regions` (the toy's binding,
existence and counting rounds), the ground-truth answer is ranked alone with `explain=True`
(utils/evaluation/explain.py): a hit when its region of highest weight is a relevant one. The
metrics, per type T that has such rounds (in the file's order):

    pointing_rounds_T   rounds measured
    pointing_T          share of hits
    pointing_chance_T   the share a uniformly random real region would hit ((relevant) / (real regions))

The same rounds are encoded as evaluation encodes them (DialogRanker: the history, the caption,
-visdial_tot_rounds), one sequence per round, so it costs a fraction of scoring the options.
"""
from __future__ import annotations

import torch

from dataloader.question_types import QuestionTypes
from utils.errors import UserError
from utils.evaluation.explain import points_at, pointing_chance
from utils.evaluation.ranker import DialogRanker, RankingQuery


def round_query(data: dict, dialog: dict, round_index: int, answer: str) -> RankingQuery:
    """The query of round `round_index` (0-based) of a processed val dialog, its history the
    earlier rounds' ground truths, `answer` its one candidate."""
    rounds = dialog["dialog"]
    history = [(data["questions"][turn["question"]], data["answers"][turn["answer"]]) for turn in rounds[:round_index]]
    return RankingQuery(dialog["image_id"], dialog["caption"], history,
                        data["questions"][rounds[round_index]["question"]], [answer])


def pointing_metrics(ranker: DialogRanker, data: dict, num_dialogs: int, question_types: QuestionTypes,
                     source: str) -> dict[str, float]:
    """The metrics of the module docstring for the first `num_dialogs` dialogs of the processed val
    split's `data`; {} when the file lists no relevant regions for them. `source` names the
    question-type file in the UserError of a region the image does not have."""
    rounds = [(dialog, number) for dialog in data["dialogs"][:num_dialogs]
              for number in range(1, len(dialog["dialog"]) + 1)
              if (dialog["image_id"], number) in question_types.regions]
    if not rounds:
        return {}
    queries = [round_query(data, dialog, number - 1, data["answers"][dialog["dialog"][number - 1]["answer"]])
               for dialog, number in rounds]
    answers = [ranking[0] for ranking in ranker.rank_many(queries, explain=True)]
    width = max(len(answer.regions) for answer in answers)
    weights, relevant, real = torch.zeros(len(answers), width), torch.zeros(len(answers), width, dtype=torch.bool), \
        torch.zeros(len(answers), width, dtype=torch.bool)
    for row, ((dialog, number), answer) in enumerate(zip(rounds, answers)):
        regions = question_types.regions[(dialog["image_id"], number)]
        seen = len(answer.regions)
        if max(regions) >= seen:
            raise UserError(f"{source}: round {number} of image {dialog['image_id']} lists region {max(regions)}, but "
                            f"the model sees {seen} regions of that image (0..{seen - 1})")
        weights[row, :len(answer.regions)] = torch.tensor([region.weight for region in answer.regions])
        relevant[row, list(regions)] = True
        real[row, :len(answer.regions)] = True
    hits, chance = points_at(weights, relevant), pointing_chance(relevant, real)
    names = [question_types.of(dialog["image_id"], number) for dialog, number in rounds]
    metrics: dict[str, float] = {}
    for name in question_types.descriptions:
        selected = torch.tensor([round_name == name for round_name in names])
        if selected.any():
            metrics[f"pointing_rounds_{name}"] = int(selected.sum())
            metrics[f"pointing_{name}"] = hits[selected].double().mean().item()
            metrics[f"pointing_chance_{name}"] = chance[selected].mean().item()
    return metrics


def format_pointing_text(metrics: dict, label: str) -> str:
    """The pointing metrics as a small aligned table (type, rounds, the model's share, chance)."""
    names = [key[len("pointing_rounds_"):] for key in metrics if key.startswith("pointing_rounds_")]
    lines = ["pointing: share of rounds whose most-weighted region for the ground truth is a relevant one",
             f"{'type':<14}{'rounds':>7}{label:>14}{'chance':>9}"]
    lines += [f"{name:<14}{metrics[f'pointing_rounds_{name}']:>7}{metrics[f'pointing_{name}']:>14.3f}"
              f"{metrics[f'pointing_chance_{name}']:>9.3f}" for name in names]
    return "\n".join(lines)
