"""scripts/download_*.sh against a local HTTP server: complete download, resume, skip, 404, no server."""
import hashlib
import os
import shutil
import socket
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPTS = ("download_common.sh", "download_preprocessed.sh", "download_checkpoints.sh")
DATA_FILES = {  # remote name -> local path, as the reference's download_preprocessed.sh
    "visdial_image_feats.lmdb": "data/visdial/visdial_img_feat.lmdb",
    **{f"visdial_1.0_{name}_processed.json": f"data/visdial/visdial_1.0_{name}_processed.json"
       for name in ("train", "val", "test", "train_dense", "train_dense_annotations",
                    "val_dense_annotations")},
}
CHECKPOINT_FILES = {  # remote name -> local path, as the reference's download_checkpoints.sh
    "bestmodel_no_dense_finetuning": "checkpoints-release/basemodel",
    "bestmodel_plus_dense": "checkpoints-release/basemodel_dense",
    "bestmodel_plus_dense_plus_nsp": "checkpoints-release/basemodel_dense_nsp",
    "vqa_weights": "checkpoints-release/vqa_pretrained_weights",
    "concep_cap_weights": "checkpoints-release/concep_cap_pretrained_weights",
}
TOOLS = [tool for tool in ("curl", "wget") if shutil.which(tool)] + ["python"]


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Serves files like http.server, plus `Range: bytes=N-` (which http.server ignores)."""

    requests_seen: list

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
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, golden_dir):
    """A local server with small stand-ins for every file; yields (base URL, root, requests)."""
    root = tmp_path / "served"
    for folder, names in (("data", DATA_FILES), ("checkpoints", CHECKPOINT_FILES)):
        (root / folder).mkdir(parents=True)
        for index, name in enumerate(names):
            (root / folder / name).write_bytes(os.urandom(1000 + 50_000 * index))
    shutil.copy(golden_dir / "bert-base-uncased-vocab.txt", root / "vocab.txt")
    requests_seen = []
    handler = type("Handler", (RangeRequestHandler,), {"requests_seen": requests_seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests_seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def checkout(tmp_path, repo_root) -> Path:
    """A folder with the download scripts, standing in for a clone (they write next to scripts/)."""
    (tmp_path / "clone" / "scripts").mkdir(parents=True)
    for name in SCRIPTS:
        shutil.copy(repo_root / "scripts" / name, tmp_path / "clone" / "scripts" / name)
    return tmp_path / "clone"


def run_script(checkout: Path, script: str, base_url: str, tool: str = "curl"):
    environment = dict(os.environ, VISDIAL_DATA_URL=f"{base_url}/data",
                       VISDIAL_CKPT_URL=f"{base_url}/checkpoints",
                       VISDIAL_VOCAB_URL=f"{base_url}/vocab.txt", VISDIAL_DOWNLOADER=tool)
    return subprocess.run(["bash", str(checkout / "scripts" / script)], capture_output=True,
                          text=True, env=environment, timeout=60)


@pytest.mark.parametrize("tool", TOOLS)
def test_both_scripts_fetch_every_file_to_the_reference_destinations(server, checkout, tool):
    base_url, root, _ = server
    for script in ("download_preprocessed.sh", "download_checkpoints.sh"):
        result = run_script(checkout, script, base_url, tool)
        assert result.returncode == 0, result.stderr
    for folder, names in (("data", DATA_FILES), ("checkpoints", CHECKPOINT_FILES)):
        for remote, local in names.items():
            assert (checkout / local).read_bytes() == (root / folder / remote).read_bytes(), local
    vocab = checkout / "data" / "bert-base-uncased" / "vocab.txt"
    assert hashlib.sha256(vocab.read_bytes()).hexdigest().startswith("07eced37")
    assert not list(checkout.rglob("*.part"))


@pytest.mark.parametrize("tool", TOOLS)
def test_a_partial_file_is_resumed_with_a_range_request(server, checkout, tool):
    base_url, root, requests_seen = server
    remote = root / "checkpoints" / "vqa_weights"
    part = checkout / "checkpoints-release" / "vqa_pretrained_weights.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(remote.read_bytes()[:70_000])
    result = run_script(checkout, "download_checkpoints.sh", base_url, tool)
    assert result.returncode == 0, result.stderr
    assert (checkout / "checkpoints-release" / "vqa_pretrained_weights").read_bytes() == remote.read_bytes()
    assert ("/checkpoints/vqa_weights", "bytes=70000-") in requests_seen
    assert not part.exists()


def test_complete_files_are_skipped_without_a_request(server, checkout):
    base_url, _, requests_seen = server
    assert run_script(checkout, "download_checkpoints.sh", base_url).returncode == 0
    requests_seen.clear()
    result = run_script(checkout, "download_checkpoints.sh", base_url)
    assert result.returncode == 0 and requests_seen == []
    assert result.stdout.count("exists, skipped") == len(CHECKPOINT_FILES)


@pytest.mark.parametrize("tool", TOOLS)
def test_a_dead_link_stops_with_one_line_naming_the_url(server, checkout, tool):
    base_url, root, _ = server
    (root / "checkpoints" / "bestmodel_plus_dense").unlink()
    result = run_script(checkout, "download_checkpoints.sh", base_url, tool)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{base_url}/checkpoints/bestmodel_plus_dense" in lines[0]
    assert "404" in lines[0] and "VISDIAL_CKPT_URL" in lines[0]
    assert (checkout / "checkpoints-release" / "basemodel").is_file(), "files before it were fetched"
    assert not (checkout / "checkpoints-release" / "basemodel_dense").exists()
    assert not (checkout / "checkpoints-release" / "basemodel_dense_nsp").exists(), "stopped at the error"


def test_no_server_is_a_one_line_network_error(checkout):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    result = run_script(checkout, "download_preprocessed.sh", f"http://127.0.0.1:{closed_port}", "curl")
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert f"http://127.0.0.1:{closed_port}/data/visdial_image_feats.lmdb" in lines[0]
    assert "network error" in lines[0]


def test_a_vocab_with_the_wrong_checksum_is_rejected(server, checkout):
    base_url, root, _ = server
    (root / "vocab.txt").write_text("[PAD]\n")
    result = run_script(checkout, "download_preprocessed.sh", base_url)
    assert result.returncode != 0 and "sha256" in result.stderr
    assert not (checkout / "data" / "bert-base-uncased" / "vocab.txt").exists()
