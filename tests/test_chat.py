"""scripts/chat.py: scripted sessions on the fixture data and on toy data (each turn is what
DialogRanker.rank gives for the same inputs), its commands, and its bad inputs (one `error:` line,
exit code 2)."""
import io
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from models import BertConfig, build_model
from preprocessing.make_toy_data import make_toy_data
from scripts import chat as chat_cli
from utils.errors import run_cli
from utils.evaluation import DialogRanker

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CANDIDATES = ["yes", "no", "white", "two", "a red car", "it is sunny", "on the left"]


def golden_flags(golden_dir, *extra) -> list[str]:
    return ["-start_path", str(golden_dir / "model_raw.pt"), "-model_config", str(golden_dir / "model_config.json"),
            "-vocab", str(golden_dir / "bert-base-uncased-vocab.txt"),
            "-visdial_image_feats", str(golden_dir / "visdial_img_feat.lmdb"), "-max_seq_len", "108",
            "-device", "cpu", *extra]


@pytest.fixture(scope="module")
def golden_ranker(golden_dir) -> DialogRanker:
    return DialogRanker.from_checkpoint(golden_dir / "model_raw.pt", model_config=golden_dir / "model_config.json",
                                        vocab=golden_dir / "bert-base-uncased-vocab.txt",
                                        features=golden_dir / "visdial_img_feat.lmdb", device="cpu", max_seq_len=108)


@pytest.fixture(scope="module")
def val_dialogs(golden_dir) -> dict:
    return json.loads((golden_dir / "visdial_processed" / "val_processed.json").read_text())["data"]


def chat_events(argv: list[str], script: str, monkeypatch, capsys) -> list[dict]:
    """The JSON events of a chat (-json) reading `script` from standard input."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    chat_cli.main([*argv, "-json"])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def assert_turns_are_rankings(ranker, events, pool) -> None:
    """Every turn shows the top 5 of DialogRanker.rank for its image, caption, history and question,
    and its history holds the answers of the turns before it (since the image or the last reset)."""
    caption, history = None, []
    for event in events:
        if event["event"] in ("image", "reset"):
            caption = event.get("caption", caption)
            history = []
            continue
        expected = ranker.rank(event["image_id"], caption, history, event["question"], pool)[:5]
        assert [(a["answer"], a["probability"]) for a in event["answers"]] == \
            [(answer, pytest.approx(probability, abs=1e-6)) for answer, probability in expected]
        assert event["round"] == len(history) + 1
        assert event["answer"] == (expected[0][0] if event["answered_by"] == "model" else event["answer"])
        history.append((event["question"], event["answer"]))


def test_a_scripted_session_on_the_fixture_data(golden_dir, tmp_path, golden_ranker, val_dialogs, monkeypatch,
                                                capsys):
    (tmp_path / "answers.txt").write_text("\n".join(CANDIDATES) + "\n\n")
    first, second = (dialog["image_id"] for dialog in val_dialogs["dialogs"][:2])
    script = (f"what color is it ?\nis it sunny ? = it is sunny\n\nhow many people ?\n:reset\nwhere is it ?\n"
              f":image {second}\nwhat is it ?\n:quit\nnever read ?\n")
    events = chat_events(golden_flags(golden_dir, "-dialogs", str(golden_dir / "visdial_processed" / "val_processed.json"),
                                      "-candidates", str(tmp_path / "answers.txt"), "-image_id", str(first)),
                         script, monkeypatch, capsys)
    assert [event["event"] for event in events] == ["image", "turn", "turn", "turn", "reset", "turn", "image", "turn"]
    assert [event["image_id"] for event in events] == [first] * 6 + [second] * 2
    assert events[0]["caption"] == val_dialogs["dialogs"][0]["caption"]
    assert events[6]["caption"] == val_dialogs["dialogs"][1]["caption"]
    assert [event.get("answered_by") for event in events[1:4]] == ["model", "user", "model"]
    assert events[2]["answer"] == "it is sunny"
    assert [event.get("round") for event in events if event["event"] == "turn"] == [1, 2, 3, 1, 1]
    assert_turns_are_rankings(golden_ranker, events, CANDIDATES)


def test_a_candidates_file_and_input_saved_with_a_byte_order_mark_and_crlf(golden_dir, tmp_path, val_dialogs,
                                                                            monkeypatch, capsys):
    """As an editor on Windows saves them: the same session as plain UTF-8 with LF line ends."""
    sessions = []
    for form in (str.encode, lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()):
        (tmp_path / "answers.txt").write_bytes(form("\n".join(CANDIDATES) + "\n"))
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(form(":reset\nwhat color is it ?\n"))))
        chat_cli.main(golden_flags(golden_dir, "-candidates", str(tmp_path / "answers.txt"), "-image_id",
                                   str(val_dialogs["dialogs"][0]["image_id"]), "-dialogs",
                                   str(golden_dir / "visdial_processed" / "val_processed.json"), "-json"))
        sessions.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    assert sessions[1] == sessions[0] and [event["event"] for event in sessions[0]] == ["image", "reset", "turn"]
    assert {answer["answer"] for answer in sessions[0][2]["answers"]} <= set(CANDIDATES)


def test_the_default_pool_is_the_most_frequent_answers_of_the_dialogs(golden_dir, val_dialogs, monkeypatch, capsys):
    counts = Counter(val_dialogs["answers"][turn["answer"]] for dialog in val_dialogs["dialogs"]
                     for turn in dialog["dialog"])
    assert counts.most_common(4)[3][1] > counts.most_common(6)[5][1]  # the top 5 does not depend on ties
    events = chat_events(golden_flags(golden_dir, "-dialogs", str(golden_dir / "visdial_processed" / "val_processed.json"),
                                      "-pool_size", "5", "-seed", "3"), "is it a dog ?\n", monkeypatch, capsys)
    assert events[0]["image_id"] in {dialog["image_id"] for dialog in val_dialogs["dialogs"]}
    assert {answer["answer"] for answer in events[1]["answers"]} == {answer for answer, _ in counts.most_common(5)}


def test_an_image_without_a_caption_takes_the_first_line_as_its_caption(golden_dir, tmp_path, golden_ranker,
                                                                         monkeypatch, capsys):
    (tmp_path / "answers.txt").write_text("\n".join(CANDIDATES))
    image_id = golden_ranker.features.image_ids()[-1]
    events = chat_events(golden_flags(golden_dir, "-candidates", str(tmp_path / "answers.txt"), "-image_id",
                                      str(image_id)), "two cats on a sofa\nare they asleep ?\n", monkeypatch, capsys)
    assert events[0] == {"event": "image", "image_id": image_id, "caption": "two cats on a sofa"}
    assert_turns_are_rankings(golden_ranker, events, CANDIDATES)


def test_a_scripted_session_on_toy_data_with_a_trained_model_format(tmp_path, monkeypatch, capsys):
    toy = tmp_path / "toy"
    make_toy_data(toy, seed=1, train_dialogs=4, val_dialogs=2, test_dialogs=2)
    torch.manual_seed(0)
    model = build_model(BertConfig.from_json_file(toy / "model_config.json"), "vilbert")
    torch.save({"model_state_dict": model.state_dict()}, tmp_path / "model.ckpt")
    raw = json.loads((toy / "visdial_1.0_val.json").read_text())["data"]
    dialog = raw["dialogs"][0]
    questions = [raw["questions"][turn["question"]] for turn in dialog["dialog"][:3]]
    flags = ["-start_path", str(tmp_path / "model.ckpt"), "-model_config", str(toy / "model_config.json"),
             "-vocab", str(toy / "vocab.txt"), "-visdial_image_feats", str(toy / "visdial_img_feat.lmdb"),
             "-device", "cpu", "-dialogs", str(toy / "visdial_1.0_val.json"), "-image_id", str(dialog["image_id"])]
    events = chat_events(flags, "\n".join(questions) + "\n", monkeypatch, capsys)
    assert [event["question"] for event in events[1:]] == questions
    pool = [answer for answer, _ in Counter(raw["answers"][turn["answer"]] for d in raw["dialogs"]
                                            for turn in d["dialog"]).most_common(100)]
    ranker = DialogRanker.from_checkpoint(tmp_path / "model.ckpt", model_config=toy / "model_config.json",
                                          vocab=toy / "vocab.txt", features=toy / "visdial_img_feat.lmdb", device="cpu")
    assert events[0]["caption"] == dialog["caption"]
    assert_turns_are_rankings(ranker, events, pool)


def test_why_shows_the_regions_the_last_answer_looked_at(golden_dir, tmp_path, golden_ranker, val_dialogs,
                                                           monkeypatch, capsys):
    """:why after a model's and after a user's answer: the top regions of DialogRanker's explanation
    of that answer in its round (history before it), in -json mode and as text."""
    (tmp_path / "answers.txt").write_text("\n".join(CANDIDATES))
    dialog = val_dialogs["dialogs"][0]
    flags = golden_flags(golden_dir, "-dialogs", str(golden_dir / "visdial_processed" / "val_processed.json"),
                         "-candidates", str(tmp_path / "answers.txt"), "-image_id", str(dialog["image_id"]))
    events = chat_events(flags, "what color is it ?\n:why\nis it sunny ? = on the left\n:why\n", monkeypatch, capsys)
    assert [event["event"] for event in events] == ["image", "turn", "why", "turn", "why"]
    history = []
    for turn, why in ((events[1], events[2]), (events[3], events[4])):
        expected = golden_ranker.rank(dialog["image_id"], dialog["caption"], history, turn["question"],
                                      [turn["answer"]], explain=True)[0]
        assert (why["question"], why["answer"], why["round"]) == (turn["question"], turn["answer"], turn["round"])
        regions = why["explain"]["regions"]
        assert [(r["region"], tuple(r["box"]), r["weight"]) for r in regions] == \
            [(r.region, r.box, pytest.approx(r.weight, abs=1e-7)) for r in expected.top_regions(5)]
        assert [r["weight"] for r in regions] == sorted((r["weight"] for r in regions), reverse=True)
        history.append((turn["question"], turn["answer"]))
    assert events[3]["answered_by"] == "user"

    monkeypatch.setattr(sys, "stdin", io.StringIO("what color is it ?\n:why\n"))
    chat_cli.main(flags)
    text = capsys.readouterr().out
    top = events[2]["explain"]["regions"][0]
    assert f"why {events[1]['answer']!r}" in text
    assert f"region {top['region']:>2}  weight {top['weight']:.3f}  box ({top['box'][0]:.0f}, " in text
    assert text.count("  weight ") == 5


def write_bad_features(folder) -> None:
    folder.mkdir()
    np.savez(folder / "7.npz", features=np.ones((2, 16), np.float32), boxes=np.array([[0, 0, 4, 4]] * 2, np.float32),
             image_w=8, image_h=8)


BAD_CHATS = {  # name -> (extra flags, standard input, words of the error line)
    "image not in the store": (["-image_id", "99"], "", "visdial_img_feat.lmdb: image 99 is not in"),
    "empty question": ([], "is it red ?\n = yes\n", "standard input line 2: the question is empty in '= yes'"),
    "no answer after =": ([], "is it red ? =\n", "standard input line 1: no answer after '='"),
    "unknown command": ([], ":frobnicate\n", "standard input line 1: unknown command ':frobnicate'"),
    ":image without an id": ([], ":image left\n", "standard input line 1: :image needs an image id"),
    ":image not in the store": ([], ":image 99\n", "standard input line 1: "),
    ":why before a question": ([], ":why\n", "standard input line 1: :why explains the last answer: ask a question"),
    ":why after :reset": ([], "is it red ?\n:reset\n:why\n", "standard input line 3: :why explains the last"),
    "question too long": ([], "is it " * 80 + "?\n", "more than max_seq_len 108"),
    "no candidate pool": (["-candidates", "", "-dialogs", ""], "", "-candidates FILE"),
    "empty candidates file": (["-candidates", "{tmp}/empty.txt"], "", "empty.txt: holds no answers"),
    "repeated candidate": (["-candidates", "{tmp}/twice.txt"], "", "twice.txt: line 3 repeats the answer 'no'"),
    "dialogs not a VisDial file": (["-dialogs", "{tmp}/twice.txt"], "", "twice.txt"),
    "features of the wrong width": (["-visdial_image_feats", "{tmp}/npz"], "", "model_config.json"),
    "checkpoint missing": (["-start_path", "{tmp}/none.ckpt"], "", "none.ckpt"),
    "candidate without tokens": (["-candidates", "{tmp}/invisible.txt"], "is it red ?\n",
                                 "invisible.txt: the candidate answer '\\u200b' is empty (it has no tokens)"),
    "a line that is not UTF-8": ([], b"is it red ?\n\xff\xfe\n", "standard input line 2: not UTF-8 text"),
    "a lone surrogate (lenient decoding)": ([], "is it red ?\nis it \udcff ?\n",
                                            "standard input line 2: not UTF-8 text"),
}


@pytest.mark.parametrize("case", BAD_CHATS)
def test_bad_input_is_one_error_line_and_exit_code_2(case, golden_dir, tmp_path, monkeypatch, capsys):
    flags, script, words = BAD_CHATS[case]
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "twice.txt").write_text("yes\nno\nno\n")
    (tmp_path / "answers.txt").write_text("\n".join(CANDIDATES))
    (tmp_path / "invisible.txt").write_text("yes\n\u200b\nno\n")   # a zero-width space: no token
    write_bad_features(tmp_path / "npz")
    argv = golden_flags(golden_dir, "-image_id", "456606", "-candidates", str(tmp_path / "answers.txt"),
                        "-dialogs", str(golden_dir / "visdial_processed" / "val_processed.json"),
                        *(flag.format(tmp=tmp_path) for flag in flags))
    # bytes come as standard input does (sys.stdin.buffer); text as a decoded stream without one
    stdin = io.TextIOWrapper(io.BytesIO(script)) if isinstance(script, bytes) else io.StringIO(script)
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: chat_cli.main(argv))
    assert exit_info.value.code == 2
    error = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note: ")]
    assert len(error) == 1 and error[0].startswith("error: ") and words in error[0], error


@pytest.mark.parametrize("flags, script, words", [
    (["-image_id", "99"], "", "visdial_img_feat.lmdb: image 99 is not in this feature store"),
    (["-image_id", "492072"], "a caption\nis it red ?\n:image\n", "standard input line 3: :image needs an image id"),
], ids=["flag", "standard input"])
def test_the_command_line_contract(flags, script, words, golden_dir, tmp_path, repo_root, single_thread_env):
    (tmp_path / "answers.txt").write_text("\n".join(CANDIDATES))
    argv = golden_flags(golden_dir, "-candidates", str(tmp_path / "answers.txt"), *flags)
    result = subprocess.run([sys.executable, str(repo_root / "scripts" / "chat.py"), *argv], input=script,
                            capture_output=True, text=True, env=single_thread_env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {words}"] or \
        (len(result.stderr.strip().splitlines()) == 1 and words in result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "answers.txt"]


def test_a_reader_that_goes_away_ends_the_chat_quietly(golden_dir, tmp_path, repo_root, single_thread_env):
    """`chat.py ... | head -1`: the turns after the first line meet a closed pipe; exit code 141 (as a
    Unix tool killed by SIGPIPE), nothing on stderr: no traceback, no "Exception ignored" at exit."""
    (tmp_path / "answers.txt").write_text("\n".join(CANDIDATES))
    argv = golden_flags(golden_dir, "-candidates", str(tmp_path / "answers.txt"), "-image_id", "492072", "-json")
    questions = "a caption\n" + "is it red ?\n" * 300   # more output than a pipe buffers
    command = " ".join(f"'{arg}'" for arg in [sys.executable, str(repo_root / "scripts" / "chat.py"), *argv])
    result = subprocess.run(["bash", "-c", f'{command} | head -1; echo "exit ${{PIPESTATUS[0]}}" >&2'],
                            input=questions, capture_output=True, text=True, env=single_thread_env, cwd=tmp_path,
                            timeout=300)
    assert json.loads(result.stdout)["event"] == "image"
    assert result.stderr == "exit 141\n", result.stderr
