"""scripts/download_*.sh against a local HTTP server, organised by mechanism.

* Transfer: all five checkpoints by default; a partial file is resumed; a transfer
  cut short by the server (correct Content-Length, body closed early) is an error that the rerun
  resumes; a dead link or no server is one error line.
* Content checks: a web page served with status 200 for every kind of file, an LMDB that is not
  one, a json that does not parse, a checkpoint that is not one, a vocab with the wrong sha256:
  each is refused before it reaches its destination, and the rerun fetches the fixed file; then
  every data file is at its reference destination. A checkpoint goes through the safe reader.
* Files already in place: checked (no network) and skipped, or reported and left alone.
* Setup errors: no Python with the project's packages, an unknown checkpoint name.
Every failure must be exit code 2 and exactly one `error:` line naming the URL (or the file),
without a traceback, with nothing at the destination. Each served file is a small valid file
of its kind (an LMDB feature store, json, a torch checkpoint, the BERT vocab).
"""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = ("usage.sh", "download_common.sh", "download_preprocessed.sh", "download_checkpoints.sh", "check_download.py")
# served path -> local path, as the reference's download scripts, in the order they are fetched
DATA_FILES = {
    "data/visdial_image_feats.lmdb": "data/visdial/visdial_img_feat.lmdb",
    **{f"data/visdial_1.0_{name}_processed.json": f"data/visdial/visdial_1.0_{name}_processed.json"
       for name in ("train", "val", "test", "train_dense", "train_dense_annotations",
                    "val_dense_annotations")},
    "vocab.txt": "data/bert-base-uncased/vocab.txt",
}
CHECKPOINT_FILES = {
    "checkpoints/bestmodel_no_dense_finetuning": "checkpoints-release/basemodel",
    "checkpoints/bestmodel_plus_dense": "checkpoints-release/basemodel_dense",
    "checkpoints/bestmodel_plus_dense_plus_nsp": "checkpoints-release/basemodel_dense_nsp",
    "checkpoints/vqa_weights": "checkpoints-release/vqa_pretrained_weights",
    "checkpoints/concep_cap_weights": "checkpoints-release/concep_cap_pretrained_weights",
}
DESTINATIONS = {**DATA_FILES, **CHECKPOINT_FILES}
TOOLS = [tool for tool in ("curl", "wget") if shutil.which(tool)] + ["python"]
WEB_PAGE = (b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n"
            b"<body><h1>Access denied</h1><p>Please sign in to continue.</p></body></html>\n")

# ---- the files, the server, the checkout -----------------------------------------------------------


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory, golden_dir) -> dict:
    """Served path -> bytes of a small valid file of its kind, for every file the scripts fetch."""
    import torch

    from dataloader.feature_store import write_lmdb_feature_store

    folder = tmp_path_factory.mktemp("valid_files")
    write_lmdb_feature_store(folder / "features", [
        {"image_id": image_id, "image_h": 480, "image_w": 640, "num_boxes": 2,
         "features": np.full((2, 2048), image_id, np.float32), "boxes": [[0, 0, 10, 10], [5, 5, 60, 40]],
         "cls_prob": np.full((2, 1601), 1 / 1601, np.float32)} for image_id in (7, 8)])
    files = {"data/visdial_image_feats.lmdb": (folder / "features" / "data.mdb").read_bytes(),
             "vocab.txt": (golden_dir / "bert-base-uncased-vocab.txt").read_bytes()}
    for path in DATA_FILES:
        if path.endswith(".json"):
            files[path] = json.dumps({"version": "1.0", "split": path, "data": {"dialogs": []}}).encode()
    for index, path in enumerate(CHECKPOINT_FILES):
        torch.save({"model_state_dict": {"weight": torch.arange(index + 3, dtype=torch.float32)}},
                   folder / "checkpoint")
        files[path] = (folder / "checkpoint").read_bytes()
    return files


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Serves files like http.server, plus `Range: bytes=N-` (which http.server ignores). A path
    in `cut_short` announces the whole file but its body stops at the file's middle, every time."""

    requests_seen: list
    cut_short: set

    def do_GET(self):
        self.requests_seen.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        body = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start >= len(body) and start > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        end = max(start, len(body) // 2) if self.path in self.cut_short else len(body)
        self.wfile.write(body[start:end])  # HTTP/1.0: the connection closes after this

    def log_message(self, *args):
        pass


@dataclass
class Server:
    url: str
    root: Path
    requests_seen: list
    cut_short: set
    valid_files: dict

    def serve(self, path: str, content: bytes) -> None:
        (self.root / path).write_bytes(content)

    def restore(self, path: str) -> None:
        self.cut_short.discard(f"/{path}")
        self.serve(path, self.valid_files[path])


@pytest.fixture
def server(tmp_path, valid_files):
    """A local server with a small valid file for every file the scripts fetch."""
    root = tmp_path / "served"
    for path, content in valid_files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)
    requests_seen, cut_short = [], set()
    handler = type("Handler", (RangeRequestHandler,), {"requests_seen": requests_seen, "cut_short": cut_short})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", root, requests_seen, cut_short, valid_files)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def checkout(tmp_path, repo_root) -> Path:
    """A folder with the download scripts and the project code their checks use, standing in for
    a clone (the scripts write next to scripts/)."""
    (tmp_path / "clone" / "scripts").mkdir(parents=True)
    for name in SCRIPTS:
        shutil.copy(repo_root / "scripts" / name, tmp_path / "clone" / "scripts" / name)
    for package in ("utils", "dataloader", "models"):
        (tmp_path / "clone" / package).symlink_to(repo_root / package)
    shutil.copy(repo_root / "scripts" / "__init__.py", tmp_path / "clone" / "scripts" / "__init__.py")
    return tmp_path / "clone"


def run_script(checkout: Path, script: str, base_url: str, tool: str = "curl", *names: str,
               path: str = None):
    """Run a download script as a user would, with the test's Python first on PATH."""
    environment = dict(os.environ, VISDIAL_DATA_URL=f"{base_url}/data",
                       VISDIAL_CKPT_URL=f"{base_url}/checkpoints",
                       VISDIAL_VOCAB_URL=f"{base_url}/vocab.txt", VISDIAL_DOWNLOADER=tool,
                       PATH=path or f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", str(checkout / "scripts" / script), *names], capture_output=True,
                          text=True, env=environment, timeout=120)


def files_under(folder: Path) -> list:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if not path.is_dir())


def assert_in_place(checkout: Path, server: Server, served_paths) -> None:
    """Each served file is at its destination, byte for byte the valid file."""
    for path in served_paths:
        assert (checkout / DESTINATIONS[path]).read_bytes() == server.valid_files[path], DESTINATIONS[path]


def assert_one_error_line(result, *expected: str) -> None:
    """Exit code 2, exactly one `error:` line on stderr holding every expected text, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in: {lines[0]}"


# ---- transfer -------------------------------------------------------------------------------------

LMDB = "data/visdial_image_feats.lmdb"


def test_the_checkpoint_script_fetches_all_five_by_default(server, checkout):
    result = run_script(checkout, "download_checkpoints.sh", server.url)
    assert result.returncode == 0, result.stderr
    assert_in_place(checkout, server, CHECKPOINT_FILES)


@pytest.mark.parametrize("tool", TOOLS)
def test_a_partial_file_is_resumed_with_a_range_request(server, checkout, tool):
    part = checkout / f"{DATA_FILES[LMDB]}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(server.valid_files[LMDB][:20_000])
    result = run_script(checkout, "download_preprocessed.sh", server.url, tool)
    assert result.returncode == 0, result.stderr
    assert_in_place(checkout, server, [LMDB])
    assert (f"/{LMDB}", "bytes=20000-") in server.requests_seen
    assert not part.exists()


@pytest.mark.parametrize("tool", TOOLS)
def test_a_transfer_cut_short_is_an_error_and_the_rerun_resumes_it(server, checkout, tool):
    size = len(server.valid_files[LMDB])
    server.cut_short.add(f"/{LMDB}")
    result = run_script(checkout, "download_preprocessed.sh", server.url, tool)
    assert_one_error_line(result, f"{server.url}/{LMDB}",
                          f"ended early ({size // 2} of the {size} bytes the server announced)", "rerun to resume")
    assert not (checkout / DATA_FILES[LMDB]).exists()
    server.restore(LMDB)
    server.requests_seen.clear()
    result = run_script(checkout, "download_preprocessed.sh", server.url, tool)
    assert result.returncode == 0, result.stderr
    assert_in_place(checkout, server, [LMDB])
    assert (f"/{LMDB}", f"bytes={size // 2}-") in server.requests_seen


@pytest.mark.parametrize("tool", TOOLS)
def test_a_dead_link_stops_with_one_line_naming_the_url(server, checkout, tool):
    (server.root / "data" / "visdial_1.0_val_processed.json").unlink()
    result = run_script(checkout, "download_preprocessed.sh", server.url, tool)
    assert_one_error_line(result, f"{server.url}/data/visdial_1.0_val_processed.json", "404", "VISDIAL_DATA_URL")
    assert files_under(checkout / "data") == ["visdial/visdial_1.0_train_processed.json",
                                              "visdial/visdial_img_feat.lmdb"], \
        "the files before it are in place, none after it, no empty .part"


@pytest.mark.parametrize("tool", TOOLS)
def test_no_server_is_a_one_line_network_error(checkout, tool):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    result = run_script(checkout, "download_preprocessed.sh", f"http://127.0.0.1:{closed_port}", tool)
    assert_one_error_line(result, f"http://127.0.0.1:{closed_port}/{LMDB}", "network error")
    assert files_under(checkout / "data") == []


# ---- content checks -------------------------------------------------------------------------------


@dataclass
class BadFile:
    case: str
    served_path: str  # what it replaces on the server
    content: bytes
    problem: str  # expected in the error line


VAL_JSON, CHECKPOINT = "data/visdial_1.0_val_processed.json", "checkpoints/bestmodel_plus_dense"
WEB_PAGE_PROBLEM = "a web page (HTML), not the file"
SHORT_VOCAB = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
BAD_DATA_FILES = [  # in the order the script fetches them
    BadFile("lmdb_web_page", LMDB, WEB_PAGE, WEB_PAGE_PROBLEM),
    BadFile("lmdb_not_an_lmdb", LMDB, b"\x00" * 8192, "not a readable LMDB feature store"),
    BadFile("json_web_page", VAL_JSON, b"\n  " + WEB_PAGE, WEB_PAGE_PROBLEM),
    BadFile("json_does_not_parse", VAL_JSON, b'{"version": "1.0", "data": {"dialogs": [',
            "not valid JSON (line 1 column"),
    BadFile("vocab_web_page", "vocab.txt", WEB_PAGE, WEB_PAGE_PROBLEM),
    BadFile("vocab_wrong_sha256", "vocab.txt", SHORT_VOCAB,
            f"sha256 is {hashlib.sha256(SHORT_VOCAB).hexdigest()}, expected 07eced37"),
]
BAD_CHECKPOINTS = [
    BadFile("checkpoint_web_page", CHECKPOINT, WEB_PAGE, WEB_PAGE_PROBLEM),
    BadFile("checkpoint_not_a_checkpoint", CHECKPOINT, b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8,
            "not a PyTorch checkpoint"),
]


# The content checks run on the finished .part whichever tool fetched it: every bad file goes
# through curl, and a web page through each of the other tools (the path from each downloader to
# the checks).
BAD_FILE_CASES = [("curl" if "curl" in TOOLS else TOOLS[0], script, names, files, bad_files)
                  for script, names, files, bad_files in [
                      ("download_preprocessed.sh", (), DATA_FILES, BAD_DATA_FILES),
                      ("download_checkpoints.sh", ("basemodel_dense",), {CHECKPOINT: CHECKPOINT_FILES[CHECKPOINT]},
                       BAD_CHECKPOINTS)]]
BAD_FILE_CASES += [(tool, "download_preprocessed.sh", (), DATA_FILES,
                    [bad for bad in BAD_DATA_FILES if bad.case == "json_web_page"])
                   for tool in TOOLS if tool != BAD_FILE_CASES[0][0]]


@pytest.mark.parametrize("tool, script, names, files, bad_files", BAD_FILE_CASES,
                         ids=[f"{case[1].split('_')[1].split('.')[0]}-{case[0]}-{len(case[4])}" for case in BAD_FILE_CASES])
def test_bad_files_never_reach_their_destination_and_each_rerun_fetches_the_fixed_file(
        server, checkout, tool, script, names, files, bad_files):
    """The bad files are served one at a time (one run each, in fetch order). Each run must refuse
    the bad file and leave neither it nor its .part behind (or the rerun would skip or resume it);
    the files before it, fixed earlier, must be in place. The last run, the server fixed, fetches
    every file."""
    order = list(files)
    for bad in bad_files:
        server.serve(bad.served_path, bad.content)
        result = run_script(checkout, script, server.url, tool, *names)
        assert_one_error_line(result, f"{server.url}/{bad.served_path}", bad.problem)
        destination = checkout / files[bad.served_path]
        assert not destination.exists(), bad.case
        assert not Path(f"{destination}.part").exists(), f"{bad.case}: a rerun would resume the bad file"
        assert_in_place(checkout, server, order[:order.index(bad.served_path)])
        server.restore(bad.served_path)
    result = run_script(checkout, script, server.url, tool, *names)
    assert result.returncode == 0, result.stderr
    assert_in_place(checkout, server, files)
    if names:  # the checkpoint script fetched the named checkpoint only
        assert files_under(checkout / "checkpoints-release") == list(names)
    if script == "download_preprocessed.sh":
        digest = hashlib.sha256((checkout / DATA_FILES["vocab.txt"]).read_bytes()).hexdigest()
        assert digest.startswith("07eced37") and not list(checkout.rglob("*.part"))


def test_a_checkpoint_that_would_run_code_is_refused_by_the_safe_reader(server, checkout, tmp_path):
    import datetime

    import torch

    # a zip archive with data.pkl, as torch.save writes, whose loading would call datetime.date
    torch.save({"model_state_dict": {"saved": datetime.date(2020, 1, 1)}}, tmp_path / "bad")
    server.serve(CHECKPOINT, (tmp_path / "bad").read_bytes())
    result = run_script(checkout, "download_checkpoints.sh", server.url, "curl", "basemodel_dense")
    assert_one_error_line(result, f"{server.url}/{CHECKPOINT}",
                          "refused to load: the checkpoint needs pickled code, which is never executed")
    assert files_under(checkout / "checkpoints-release") == []


# ---- files already in place -----------------------------------------------------------------------


def test_complete_files_are_checked_and_skipped_without_a_request(server, checkout):
    assert run_script(checkout, "download_preprocessed.sh", server.url).returncode == 0
    server.requests_seen.clear()
    result = run_script(checkout, "download_preprocessed.sh", server.url)
    assert result.returncode == 0 and server.requests_seen == []
    assert result.stdout.count("exists and passes its check, skipped") == len(DATA_FILES)


def test_a_broken_file_in_place_is_reported_and_left_alone(server, checkout):
    """A file an older version fetched without checks (here: a web page) is named, not deleted."""
    test_json = "data/visdial_1.0_test_processed.json"
    destination = checkout / DATA_FILES[test_json]
    destination.parent.mkdir(parents=True)
    destination.write_bytes(WEB_PAGE)
    result = run_script(checkout, "download_preprocessed.sh", server.url)
    assert_one_error_line(result, DATA_FILES[test_json], f"{server.url}/{test_json}", WEB_PAGE_PROBLEM,
                          "delete it and rerun")
    assert destination.read_bytes() == WEB_PAGE
    assert f"/{test_json}" not in [path for path, _ in server.requests_seen]
    destination.unlink()
    assert run_script(checkout, "download_preprocessed.sh", server.url).returncode == 0
    assert_in_place(checkout, server, [test_json])


# ---- setup errors ---------------------------------------------------------------------------------


def test_no_python_with_the_project_packages_is_one_line_before_any_download(server, checkout, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    bare_path = f"{tmp_path / 'bare' / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    for script in ("download_preprocessed.sh", "download_checkpoints.sh"):
        result = run_script(checkout, script, server.url, "curl", path=bare_path)
        assert_one_error_line(result, "no Python with the project's packages", "scripts/setup_env.sh")
    assert server.requests_seen == []


def test_an_unknown_checkpoint_name_is_one_line_before_any_download(server, checkout):
    result = run_script(checkout, "download_checkpoints.sh", server.url, "curl", "basemodel", "bestmodel")
    assert_one_error_line(result, "unknown checkpoint 'bestmodel'", "basemodel_dense_nsp")
    assert server.requests_seen == []
