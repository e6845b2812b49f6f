"""The report of `evaluate.py -report DIR`: DIR/index.html, self-contained (plots embedded, no scripts),
with per_round_metrics.png and gt_rank_histogram.png beside it, from plain data (no model)."""
import base64
import html
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageDraw

from utils.errors import UserError
from utils.evaluation.metrics import METRIC_LABELS, NDCG, scores_to_ranks
from utils.outputs import atomic_write, write_text

TOP_K = 5
SAMPLE_DIALOGS = 5
PICTURE_WIDTH = 240
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_ID = re.compile(r"(?:^|_)(\d+)$")  # 185565.png, COCO_val2014_000000185565.jpg


@dataclass
class DialogText:
    """The texts of one dialog; `options[r][j]` is the text scored by `scores[dialog, r, j]`."""
    image_id: int
    caption: str
    questions: List[str]
    options: List[List[str]]


@dataclass
class DialogPicture:
    """A sample dialog's picture (None: there is none) and, per round, the ((x1, y1, x2, y2) in pixels,
    weight) of every region for the top answer; region 0 is the whole image."""
    path: Optional[Path]
    regions: List[List[Tuple[Tuple[float, float, float, float], float]]]


def image_files(folder) -> Dict[int, Path]:
    """The pictures of a folder by image id; UserError when it is not a folder or two name the same id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: -images must be a folder of pictures named by image id")
    files: Dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = IMAGE_ID.search(path.stem)
        if path.suffix.lower() not in IMAGE_SUFFIXES or not match:
            continue
        image_id = int(match.group(1))
        if image_id in files:
            raise UserError(f"{path}: names image {image_id}, as {files[image_id].name} does")
        files[image_id] = path
    return files


def read_picture(path: Path) -> Image.Image:
    """The picture at `path` in RGB; UserError naming it when Pillow cannot (safely) decode it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                return opened.convert("RGB")
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UserError(f"{path}: not a picture that can be read ({error})") from None


def check_pictures(files: Dict[int, Path], image_ids: Sequence[int]) -> None:
    """Read the pictures of `image_ids` that `files` holds, before the report needs them (UserError)."""
    for image_id in image_ids:
        if image_id in files:
            read_picture(files[image_id])


def shaded_picture(path: Path, regions: Sequence[Tuple[Sequence[float], float]]) -> str:
    """An <img> of the picture, darkened, each box (not region 0) lit again by its weight over the
    largest, outlined, the three heaviest numbered; its title lists every weight."""
    picture = read_picture(path)
    shaded = Image.blend(picture, Image.new("RGB", picture.size), 0.65)
    draw = ImageDraw.Draw(shaded)
    boxes = range(1, len(regions))
    largest = max((regions[region][1] for region in boxes), default=0.0)
    heaviest = sorted(boxes, key=lambda region: -regions[region][1])[:3]
    for region in sorted(boxes, key=lambda region: regions[region][1]):
        box, weight = regions[region]
        corners = tuple(int(round(value)) for value in box)
        share = weight / largest if largest > 0 else 0.0
        shaded.paste(Image.blend(shaded.crop(corners), picture.crop(corners), share), corners[:2])
        draw.rectangle(corners, outline=(0, 220, 255), width=1 + round(3 * share))
    for rank, region in enumerate(heaviest, start=1):
        x, y = regions[region][0][:2]
        draw.rectangle((x + 3, y + 3, x + 17, y + 19), fill=(0, 220, 255))
        draw.text((x + 6, y + 5), str(rank), fill=(0, 0, 0))
    shaded = shaded.resize((PICTURE_WIDTH, max(1, round(picture.height * PICTURE_WIDTH / picture.width))))
    buffer = io.BytesIO()
    shaded.save(buffer, format="JPEG", quality=80)
    title = "; ".join(f"region {region}{' (whole image)' if region == 0 else ''}: {weight:.3f}"
                      for region, (_, weight) in enumerate(regions))
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    legend = ", ".join(f"{rank}: {regions[region][1]:.2f}" for rank, region in enumerate(heaviest, start=1))
    return (f'<img class="shaded" alt="regions behind the top answer" title="{html.escape(title)}" '
            f'src="data:image/jpeg;base64,{data}">'
            f'<span class=weights>{legend}; whole image: {regions[0][1]:.2f}</span>')


def per_round_ndcg(scores: torch.Tensor, round_id: torch.Tensor, gt_relevance: torch.Tensor) -> Dict[int, float]:
    """NDCG of each round (1-based) over the dialogs annotated at that round."""
    values = {}
    for round_number in sorted(set(round_id.view(-1).tolist())):
        dialogs = (round_id.view(-1) == round_number).nonzero().view(-1)
        ndcg = NDCG()
        ndcg.observe(scores[dialogs, round_number - 1], gt_relevance[dialogs])
        result = ndcg.retrieve()
        if result:
            values[int(round_number)] = result["ndcg"]
    return values


def plot(draw: Callable, path: Path, alt: str) -> str:
    """`draw(axes)` on a new figure, written as a PNG to `path`; returns it as an embedded <img>."""
    import matplotlib  # on first use: half a second that CLIs which plot nothing skip

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # the backend must be chosen before pyplot is imported

    figure, axes = plt.subplots(figsize=(7, 3.6), dpi=100)
    draw(axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write(path, lambda file: file.write(buffer.getvalue()))
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def draw_per_round(axes, metrics: dict, num_rounds: int, ndcg_by_round: Dict[int, float]) -> None:
    rounds = list(range(1, num_rounds + 1))
    axes.plot(rounds, [metrics[f"r_1_round_{r}"] for r in rounds], "o-", label="R@1")
    axes.plot(rounds, [metrics[f"mrr_round_{r}"] for r in rounds], "s-", label="MRR")
    if ndcg_by_round:
        annotated = sorted(ndcg_by_round)
        axes.plot(annotated, [ndcg_by_round[r] for r in annotated], "^--", label="NDCG (annotated dialogs)")
    axes.set_xlabel("dialog round")
    axes.set_ylabel("metric")
    axes.set_xticks(rounds)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    axes.set_title("Metrics per round")


def draw_rank_histogram(axes, gt_ranks: torch.Tensor, num_options: int) -> None:
    axes.hist(gt_ranks.view(-1).numpy(), bins=range(1, num_options + 2), color="#4c72b0")
    axes.set_xlabel("rank of the ground-truth answer (1 = best)")
    axes.set_ylabel("rounds")
    axes.set_xlim(1, num_options + 1)
    axes.set_title(f"Ground-truth rank distribution ({gt_ranks.numel()} rounds)")


def metrics_table(metrics: dict) -> str:
    header = "".join(f"<th>{label}</th>" for key, label, _ in METRIC_LABELS if key in metrics)
    cells = "".join(f"<td>{fmt.format(metrics[key])}</td>" for key, _, fmt in METRIC_LABELS if key in metrics)
    return f'<table class="metrics"><tr>{header}</tr><tr>{cells}</tr></table>'


def dialog_section(index: int, dialog: DialogText, scores: torch.Tensor, ranks: torch.Tensor,
                   gt_option_inds: torch.Tensor, annotated_round: Optional[int],
                   relevance: Optional[torch.Tensor], picture: Optional[DialogPicture] = None) -> str:
    """One sample dialog: per round the question, the GT answer and its rank, the model's top 5, and
    with `picture` where the top answer looked."""
    rows = []
    for round_index, question in enumerate(dialog.questions):
        gt = int(gt_option_inds[round_index])
        round_relevance = relevance if annotated_round == round_index + 1 else None
        top = torch.argsort(ranks[round_index])[:TOP_K].tolist()
        items = []
        for option in top:
            text = html.escape(dialog.options[round_index][option])
            detail = f"{scores[round_index, option]:.3f}"
            if round_relevance is not None:
                detail += f", relevance {float(round_relevance[option]):g}"
            css = ' class="gt"' if option == gt else ""
            items.append(f"<li{css}>{text} <span class=score>({detail})</span></li>")
        gt_text = html.escape(dialog.options[round_index][gt])
        gt_cell = f"{gt_text} <span class=rank>rank {int(ranks[round_index, gt])}</span>"
        if round_relevance is not None:
            gt_cell += f' <span class="dense">dense-annotated round, GT relevance {float(round_relevance[gt]):g}</span>'
        looked = ""
        if picture is not None:
            looked = (f"<td>{shaded_picture(picture.path, picture.regions[round_index])}</td>" if picture.path
                      else "<td class=nopicture>no picture of this image in -images</td>")
        rows.append(f"<tr><td>{round_index + 1}</td><td>{html.escape(question)}</td><td>{gt_cell}</td>"
                    f"<td><ol>{''.join(items)}</ol></td>{looked}</tr>")
    looked_header = "<th>where the top answer looked (shade: weight)</th>" if picture is not None else ""
    return (f'<section class="dialog"><h3>Dialog {index + 1}: image {dialog.image_id}</h3>'
            f"<p class=caption>Caption: {html.escape(dialog.caption)}</p>"
            "<table class=rounds><tr><th>round</th><th>question</th><th>ground-truth answer</th>"
            f"<th>model's top {TOP_K} (score)</th>{looked_header}</tr>{''.join(rows)}</table></section>")


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
table.metrics td { font-size: 1.3em; font-variant-numeric: tabular-nums; }
th { background: #f0f3f8; }
ol { margin: 0; padding-left: 1.4em; }
li.gt { font-weight: bold; color: #1a7f37; }
.score, .caption { color: #666; } .rank { background: #fff3c4; padding: 0 .3em; }
.dense { display: block; color: #8250df; font-size: .9em; }
.plots img { max-width: 49%; }
img.shaded { display: block; border: 1px solid #ccc; } .nopicture, .weights { color: #777; font-size: .85em; }
"""


def write_report(out_dir, metrics: dict, scores, gt_option_inds, dialogs: Sequence[DialogText],
                 round_id=None, gt_relevance=None, title: str = "VisDial evaluation",
                 num_sample_dialogs: int = SAMPLE_DIALOGS, type_table_html: str = "",
                 pictures: Optional[Sequence[DialogPicture]] = None) -> Path:
    """Write index.html and the plots into out_dir (created); returns the page's path.

    metrics: visdial_metrics' dict (per-round values included); scores [dialogs, rounds, options] and
    gt_option_inds [dialogs, rounds], tensors or arrays; dialogs: one DialogText each, options in the
    order of `scores`; round_id [dialogs] and gt_relevance [dialogs, options] optional (dense
    annotations); type_table_html: the per-question-type table; pictures: one per sample dialog.
    """
    scores = torch.as_tensor(scores, dtype=torch.float32)
    gt_option_inds = torch.as_tensor(gt_option_inds, dtype=torch.long)
    if scores.dim() != 3 or gt_option_inds.shape != scores.shape[:2] or len(dialogs) != scores.shape[0]:
        raise UserError(f"report: scores {list(scores.shape)}, gt_option_inds {list(gt_option_inds.shape)} "
                        f"and {len(dialogs)} dialogs do not match")
    num_dialogs, num_rounds, num_options = scores.shape
    missing = [f"r_1_round_{r}" for r in range(1, num_rounds + 1) if f"r_1_round_{r}" not in metrics]
    if missing:
        raise UserError(f"report: the metrics lack the per-round values ({missing[0]}, ...)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    ranks = scores_to_ranks(scores)
    gt_ranks = ranks.gather(2, gt_option_inds.unsqueeze(2)).squeeze(2)
    annotated = round_id is not None and gt_relevance is not None
    if annotated:
        round_id = torch.as_tensor(round_id, dtype=torch.long).view(-1)
        gt_relevance = torch.as_tensor(gt_relevance, dtype=torch.float32)
    ndcg_by_round = per_round_ndcg(scores, round_id, gt_relevance) if annotated else {}

    per_round_plot = plot(lambda axes: draw_per_round(axes, metrics, num_rounds, ndcg_by_round),
                          out_dir / "per_round_metrics.png", "per-round R@1, MRR and NDCG")
    histogram = plot(lambda axes: draw_rank_histogram(axes, gt_ranks, num_options), out_dir / "gt_rank_histogram.png",
                     "histogram of ground-truth ranks")

    samples = [
        dialog_section(d, dialogs[d], scores[d], ranks[d], gt_option_inds[d],
                       int(round_id[d]) if annotated else None,
                       gt_relevance[d] if annotated else None,
                       pictures[d] if pictures is not None and d < len(pictures) else None)
        for d in range(min(num_sample_dialogs, num_dialogs))
    ]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{num_dialogs} dialogs, {num_rounds} rounds, {num_options} answer options per round.
R@k: share of rounds whose ground-truth answer is in the top k; Mean rank of the ground truth;
MRR: mean reciprocal rank; NDCG: normalised discounted cumulative gain on the dense annotations.</p>
<h2>Metrics</h2>
{metrics_table(metrics)}
{f"<h2>Per question type</h2>{type_table_html}" if type_table_html else ""}
<h2>Per round and rank distribution</h2>
<div class="plots">{per_round_plot}
{histogram}</div>
<h2>Sample dialogs</h2>
<p>Ground-truth answers are in <b style="color:#1a7f37">green</b> when in the top {TOP_K}.</p>
{''.join(samples)}
</body></html>
"""
    page_path = out_dir / "index.html"
    write_text(page_path, page)
    return page_path
