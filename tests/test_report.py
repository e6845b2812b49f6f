"""utils/evaluation/report.py: page content for known ranks, self-containedness, and a headless Chromium render."""
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest
import torch

from utils.errors import UserError
from utils.evaluation.metrics import visdial_metrics
from utils.evaluation.report import DialogPicture, DialogText, image_files, shaded_picture, write_report

DIALOGS, ROUNDS, OPTIONS = 4, 10, 100


def make_inputs():
    """Scores where the ground truth of dialog d, round r sits at rank r + 1 (1-based)."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(DIALOGS, ROUNDS, OPTIONS, generator=generator)
    gt_option_inds = torch.randint(OPTIONS, (DIALOGS, ROUNDS), generator=generator)
    for d in range(DIALOGS):
        for r in range(ROUNDS):
            order = [o for o in scores[d, r].argsort(descending=True).tolist() if o != gt_option_inds[d, r]]
            order.insert(r, int(gt_option_inds[d, r]))
            scores[d, r, order] = torch.linspace(1.0, 0.0, OPTIONS)
    dialogs = [DialogText(image_id=1000 + d, caption=f"caption <{d}> & co",
                          questions=[f"question {d}-{r}?" for r in range(ROUNDS)],
                          options=[[f"option {d}-{r}-{o}" for o in range(OPTIONS)] for r in range(ROUNDS)])
               for d in range(DIALOGS)]
    round_id = torch.tensor([1, 3, 3, 10])
    gt_relevance = torch.zeros(DIALOGS, OPTIONS)
    gt_relevance[:, 7] = 0.5
    gt_relevance[torch.arange(DIALOGS), gt_option_inds[torch.arange(DIALOGS), round_id - 1]] = 1.0
    metrics = visdial_metrics(scores, gt_option_inds, round_id, gt_relevance)
    return metrics, scores, gt_option_inds, dialogs, round_id, gt_relevance


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    metrics, scores, gt_option_inds, dialogs, round_id, gt_relevance = make_inputs()
    out_dir = tmp_path_factory.mktemp("report")
    page = write_report(out_dir, metrics, scores, gt_option_inds, dialogs, round_id, gt_relevance,
                        num_sample_dialogs=3)
    return page, scores, gt_option_inds, metrics


def test_page_is_self_contained_and_the_plots_are_pngs(report):
    page, *_ = report
    text = page.read_text()
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)="(?!data:)', text), "only embedded resources"
    for name in ("per_round_metrics.png", "gt_rank_histogram.png"):
        assert (page.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count('src="data:image/png;base64,') == 2


def test_page_shows_metrics_ranks_top5_and_relevance(report):
    page, scores, gt_option_inds, metrics = report
    text = page.read_text()
    assert f"{metrics['mrr']:.4f}" in text and f"{metrics['ndcg']:.4f}" in text
    for label in ("R@1", "R@5", "R@10", "Mean rank", "MRR", "NDCG"):
        assert f"<th>{label}</th>" in text
    assert text.count("<section") == 3
    sections = text.split("<section")[1:]
    for round_index in range(ROUNDS):  # dialog 0: the ground truth of round r is at rank r + 1
        assert f"option 0-{round_index}-{int(gt_option_inds[0, round_index])} <span class=rank>" \
               f"rank {round_index + 1}</span>" in sections[0]
    best = scores[1, 4].argsort(descending=True)[:5].tolist()
    row = sections[1].split("question 1-4?")[1].split("</tr>")[0]
    assert re.findall(r"option 1-4-(\d+) <span class=score>", row) == [str(o) for o in best]
    assert 'class="gt"' in row, "the ground truth (rank 5) is highlighted in the top 5"
    assert "caption &lt;0&gt; &amp; co" in sections[0], "texts are escaped"
    assert sections[1].count("dense-annotated round") == 1 and "relevance 0.5" in sections[1]


def test_mismatched_inputs_are_user_errors(tmp_path):
    metrics, scores, gt_option_inds, dialogs, *_ = make_inputs()
    with pytest.raises(UserError, match="do not match"):
        write_report(tmp_path, metrics, scores, gt_option_inds, dialogs[:2])
    with pytest.raises(UserError, match="per-round"):
        write_report(tmp_path, {"mrr": 0.5}, scores, gt_option_inds, dialogs)


def chromium(*arguments, user_data_dir):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is not installed: run scripts/test.sh (it installs it) or apt-get install chromium"
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={user_data_dir}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_page_renders_in_headless_chromium(report, tmp_path):
    page, *_ = report
    screenshot = tmp_path / "screenshot.png"
    result = chromium(f"--screenshot={screenshot}", "--window-size=1200,1600", page.as_uri(),
                      user_data_dir=tmp_path / "profile-1")
    assert screenshot.is_file(), result.stderr[-2000:]
    pixels = matplotlib.image.imread(screenshot)[..., :3]
    assert pixels.std() > 0.05, "the screenshot is blank"
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.02, "too few drawn pixels"
    dom = chromium("--dump-dom", page.as_uri(), user_data_dir=tmp_path / "profile-2").stdout
    for label in ("MRR", "NDCG", "R@1", "Mean rank"):
        assert f"<th>{label}</th>" in dom
    assert dom.count('class="dialog"') == 3


GREEN = (0, 200, 0)


def green_picture(path, size=(320, 240)) -> None:
    from PIL import Image

    Image.new("RGB", size, GREEN).save(path)


def decoded(img_tag: str):
    """The pixels [h, w, 3] (0..255) of an <img> tag's embedded JPEG."""
    import base64
    import io

    from PIL import Image

    data = re.search(r'src="data:image/jpeg;base64,([^"]+)"', img_tag).group(1)
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("RGB")).astype(float)


def test_image_files_are_found_by_the_id_at_the_end_of_their_name(tmp_path):
    for name in ("185565.png", "COCO_val2014_000000000042.jpg", "7.JPEG", "notes.txt", "cover.png", "12.gif"):
        (tmp_path / name).write_bytes(b"")
    assert image_files(tmp_path) == {185565: tmp_path / "185565.png", 42: tmp_path / "COCO_val2014_000000000042.jpg",
                                     7: tmp_path / "7.JPEG"}
    (tmp_path / "COCO_train2014_000000185565.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="names image 185565, as"):
        image_files(tmp_path)
    with pytest.raises(UserError, match="must be a folder"):
        image_files(tmp_path / "185565.png")


def test_shaded_picture_lights_the_boxes_by_weight(tmp_path):
    green_picture(tmp_path / "1.png")
    regions = [((0, 0, 320, 240), 0.1), ((10, 10, 90, 90), 0.6), ((200, 120, 300, 220), 0.3),
               ((120, 10, 180, 60), 0.0)]
    tag = shaded_picture(tmp_path / "1.png", regions)
    pixels = decoded(tag)
    scale = pixels.shape[1] / 320

    def green_at(x1, y1, x2, y2):  # the middle of a box, away from its outline
        rows, columns = slice(int((y1 + 12) * scale), int((y2 - 12) * scale)), \
            slice(int((x1 + 12) * scale), int((x2 - 12) * scale))
        return pixels[rows, columns, 1].mean()

    heaviest, middle, unweighted = green_at(10, 10, 90, 90), green_at(200, 120, 300, 220), green_at(120, 10, 180, 60)
    assert heaviest == pytest.approx(200, abs=12) and heaviest > middle + 30 > unweighted + 30
    assert unweighted == pytest.approx(200 * 0.35, abs=12), "a box of weight 0 stays dark"
    assert "region 0 (whole image): 0.100; region 1: 0.600" in tag and "whole image: 0.10" in tag
    (tmp_path / "bad.png").write_text("not a picture")
    with pytest.raises(UserError, match="bad.png: not a picture"):
        shaded_picture(tmp_path / "bad.png", regions)


def test_pictures_of_the_sample_dialogs_render_in_headless_chromium(tmp_path):
    metrics, scores, gt_option_inds, dialogs, round_id, gt_relevance = make_inputs()
    green_picture(tmp_path / "1000.png")
    regions = [((0, 0, 320, 240), 0.2), ((20, 20, 200, 200), 0.8)]
    pictures = [DialogPicture(tmp_path / "1000.png", [regions] * ROUNDS), DialogPicture(None, [regions] * ROUNDS)]
    page = write_report(tmp_path / "report", metrics, scores, gt_option_inds, dialogs, round_id, gt_relevance,
                        num_sample_dialogs=3, pictures=pictures)
    text = page.read_text()
    sections = text.split("<section")[1:]
    assert sections[0].count('<img class="shaded"') == ROUNDS and "where the top answer looked" in sections[0]
    assert sections[1].count("no picture of this image in -images") == ROUNDS
    assert "where the top answer looked" not in sections[2]
    assert not re.search(r'(src|href)="(?!data:)', text), "only embedded resources"
    screenshot = tmp_path / "screenshot.png"
    result = chromium(f"--screenshot={screenshot}", "--window-size=1200,1400", page.as_uri(),
                      user_data_dir=tmp_path / "profile-1")
    assert screenshot.is_file(), result.stderr[-2000:]
    pixels = matplotlib.image.imread(screenshot)[..., :3] * 255
    lit = (pixels[..., 1] > 150) & (pixels[..., 0] < 60) & (pixels[..., 2] < 60)
    assert lit.sum() > 5000, "the lit box of the green picture is on the screen"
    dom = chromium("--dump-dom", page.as_uri(), user_data_dir=tmp_path / "profile-2").stdout
    assert dom.count('class="shaded"') == ROUNDS
