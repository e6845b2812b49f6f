"""The pointing score and the deletion test of a model per question type, on the val rounds whose
relevant regions are known (docs/explain.md: what each metric measures and its chance level)."""
from __future__ import annotations

import torch

from dataloader.question_types import QuestionTypes
from utils.errors import UserError
from utils.evaluation.explain import deletion_outcomes, points_at, pointing_chance
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
    """pointing_rounds_T, pointing_T, pointing_chance_T, deletion_rounds_T, deletion_T and
    deletion_chance_T per type T (deletion_T where a round has two object regions) for the first
    `num_dialogs` dialogs of the processed val split's `data`; {} when the file lists no relevant
    regions for them. `source` names the question-type file in the UserError of a region the image
    does not have."""
    rounds = [(dialog, number) for dialog in data["dialogs"][:num_dialogs]
              for number in range(1, len(dialog["dialog"]) + 1)
              if (dialog["image_id"], number) in question_types.regions]
    if not rounds:
        return {}
    queries = [round_query(data, dialog, number - 1, data["answers"][dialog["dialog"][number - 1]["answer"]])
               for dialog, number in rounds]
    answers = [ranking[0] for ranking in ranker.rank_many(queries, explain=True)]
    width = max(len(answer.regions) for answer in answers)
    weights, drops = torch.zeros(len(answers), width), torch.zeros(len(answers), width)
    relevant, real, objects = (torch.zeros(len(answers), width, dtype=torch.bool) for _ in range(3))
    for row, ((dialog, number), answer, query) in enumerate(zip(rounds, answers, queries)):
        key, seen = (dialog["image_id"], number), len(answer.regions)
        listed = (*question_types.regions[key], *question_types.objects.get(key, ()))
        if max(listed) >= seen:
            raise UserError(f"{source}: round {number} of image {dialog['image_id']} lists region {max(listed)}, but "
                            f"the model sees {seen} regions of that image (0..{seen - 1})")
        weights[row, :seen] = torch.tensor([region.weight for region in answer.regions])
        relevant[row, list(question_types.regions[key])] = True
        real[row, :seen] = True
        objects[row, list(question_types.objects.get(key, range(1, seen)))] = True
        deleted = sorted({int(weights[row].argmax())} | set(objects[row].nonzero().view(-1).tolist()))
        scores = ranker.scores_without(query, deleted)[:, 0]
        drops[row, deleted] = scores[0] - scores[1:]
    hits, chance = points_at(weights, relevant), pointing_chance(relevant, real)
    compared = objects.sum(dim=1) >= 2
    deletion, deletion_chance = deletion_outcomes(drops[compared], weights[compared].argmax(dim=1), objects[compared])
    names = [question_types.of(dialog["image_id"], number) for dialog, number in rounds]
    metrics: dict[str, float] = {}
    for name in question_types.descriptions:
        selected = torch.tensor([round_name == name for round_name in names])
        if selected.any():
            metrics[f"pointing_rounds_{name}"] = int(selected.sum())
            metrics[f"pointing_{name}"] = hits[selected].double().mean().item()
            metrics[f"pointing_chance_{name}"] = chance[selected].mean().item()
            measured = selected[compared]
            metrics[f"deletion_rounds_{name}"] = int(measured.sum())
            if measured.any():
                metrics[f"deletion_{name}"] = deletion[measured].mean().item()
                metrics[f"deletion_chance_{name}"] = deletion_chance[measured].mean().item()
    return metrics


def format_pointing_text(metrics: dict, label: str) -> str:
    """The pointing and deletion metrics as a small aligned table (type, rounds, the model's share
    and chance for each; '-' where no round has two object regions)."""
    names = [key[len("pointing_rounds_"):] for key in metrics if key.startswith("pointing_rounds_")]
    lines = ["pointing: share of rounds whose most-weighted region for the ground truth is a relevant one; "
             "deletion: share of object regions whose masking lowers the ground truth less than masking that region",
             f"{'type':<14}{'rounds':>7}{'pointing':>10}{'chance':>9}{'deletion':>10}{'chance':>9}   ({label})"]
    for name in names:
        deletion = (f"{metrics[f'deletion_{name}']:>10.3f}{metrics[f'deletion_chance_{name}']:>9.3f}"
                    if f"deletion_{name}" in metrics else f"{'-':>10}{'-':>9}")
        lines.append(f"{name:<14}{metrics[f'pointing_rounds_{name}']:>7}{metrics[f'pointing_{name}']:>10.3f}"
                     f"{metrics[f'pointing_chance_{name}']:>9.3f}{deletion}")
    return "\n".join(lines)
