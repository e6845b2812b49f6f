"""Loggers against real sinks: a visdom 0.2.4 server on 127.0.0.1, TensorBoard event files, metrics.jsonl."""
import json
import socket
import subprocess
import sys
import time

import pytest

from utils.training.loggers import TrainingLogger


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_visdom_server(env_path):
    """An offline visdom server on a free port of 127.0.0.1; returns (process, port) once it listens."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from visdom.server.run_server import main; main()",
         "-port", str(port), "-bind_local", "-env_path", str(env_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.2)
    process.kill()
    pytest.fail("visdom server did not start")


@pytest.fixture
def visdom_server(tmp_path):
    """An offline visdom server; yields its port."""
    process, port = start_visdom_server(tmp_path / "visdom_env")
    yield port
    process.terminate()
    process.wait(timeout=10)


def read_tensorboard(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_visdom_receives_loss_and_validation_curves(tmp_path, visdom_server):
    import visdom
    logger = TrainingLogger(tmp_path / "run", visdom={"server": "http://127.0.0.1", "port": visdom_server,
                                                      "env": "test_env"})
    assert logger.visdom.connected
    logger.log_train(10, {"loss": 3.0, "lm_loss": 2.0})
    logger.log_train(20, {"loss": 2.5, "lm_loss": 1.5})
    logger.log_validation(20, {"mrr": 0.4, "r_1_round_1": 0.3})
    logger.flush()
    client = visdom.Visdom(server="http://127.0.0.1", port=visdom_server, use_incoming_socket=False)
    loss = json.loads(client.get_window_data("loss", env="test_env"))
    lines = {trace["name"]: (trace["x"], trace["y"]) for trace in loss["content"]["data"]}
    assert lines["tot loss"] == ([10, 20], [3.0, 2.5])
    assert lines["lm loss"] == ([10, 20], [2.0, 1.5])
    val = json.loads(client.get_window_data("Retrieval Val Metrics", env="test_env"))
    assert [(t["name"], t["y"]) for t in val["content"]["data"]] == [("mrr", [0.4])]
    assert json.loads(client.get_window_data("Retrieval Round Val Metrics Round -1", env="test_env"))
    logger.close()


# Third-party noise: whatever the visdom server does, the user sees one warning line, never the
# client's tracebacks, "waiting" lines or session messages, and training goes on.

def test_visdom_unreachable_is_one_warning_line_and_logging_goes_on(tmp_path, repo_root):
    port = free_port()  # nobody listens there
    # A process of its own: stderr exactly as a user sees it (pytest captures warnings and logging)
    script = f"""
from utils.training.loggers import TrainingLogger
logger = TrainingLogger({str(tmp_path)!r}, visdom={{"server": "http://127.0.0.1", "port": {port}, "env": "x"}})
assert not logger.visdom.connected
logger.log_text("options")
logger.log_train(1, {{"loss": 1.0}})
logger.log_validation(1, {{"mrr": 0.5}})
logger.flush()
logger.close()
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: ") and f"127.0.0.1:{port}" in lines[0], lines[0]
    assert "not reachable" in lines[0] and "training goes on" in lines[0]
    assert result.stdout == "", "the visdom client printed to stdout"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["event"], r["iteration"]) for r in records] == [("train", 1), ("val", 1)]


def test_visdom_server_that_stops_mid_run_is_one_warning_line(tmp_path, capfd):
    process, port = start_visdom_server(tmp_path / "visdom_env")
    try:
        logger = TrainingLogger(tmp_path / "run", visdom={"server": "http://127.0.0.1", "port": port, "env": "x"})
        assert logger.visdom.connected
        logger.log_train(1, {"loss": 1.0})
    finally:
        process.terminate()
        process.wait(timeout=10)
    capfd.readouterr()
    for iteration in (2, 3):
        logger.log_train(iteration, {"loss": 1.0, "lm_loss": 0.5})
        logger.log_validation(iteration, {"mrr": 0.5})
    logger.flush()
    logger.close()
    out, err = capfd.readouterr()
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert f"127.0.0.1:{port} stopped answering" in lines[0] and lines[0].startswith("warning: ")
    assert not logger.visdom.connected
    iterations = [json.loads(line)["iteration"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert iterations == [1, 2, 2, 3, 3]


def test_tensorboard_and_metrics_file(tmp_path):
    logger = TrainingLogger(tmp_path, tensorboard=True)
    logger.log_train(0, {"loss": 4.0, "nsp_loss": 0.7}, lr=1e-5)
    logger.log_train(10, {"loss": float("nan"), "nsp_loss": 0.6}, lr=2e-5)
    logger.log_validation(10, {"mrr": 0.25, "ndcg": 0.3})
    logger.log_event("checkpoint", 10, path="x.ckpt")
    logger.close()
    scalars = read_tensorboard(tmp_path / "tensorboard")
    assert scalars["loss/nsp_loss"] == [(0, pytest.approx(0.7)), (10, pytest.approx(0.6))]
    assert scalars["val/mrr"] == [(10, pytest.approx(0.25))]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["train", "train", "val", "checkpoint"]
    assert records[1]["loss"] == "nan" and records[1]["lr"] == 2e-5
    assert records[2]["ndcg"] == 0.3


def test_disabled_logger_writes_nothing(tmp_path):
    logger = TrainingLogger(tmp_path / "rank1", enabled=False, tensorboard=True)
    logger.log_train(1, {"loss": 1.0})
    logger.log_validation(1, {"mrr": 1.0})
    logger.close()
    assert not (tmp_path / "rank1").exists()


def test_train_py_sends_loss_and_validation_curves(golden_dir, tmp_path, visdom_server):
    import visdom
    import train
    from tests.train_helpers import fixture_flags
    train.main(fixture_flags(golden_dir, tmp_path, "logged", "-max_iterations", "2", "-val_every", "2",
                             "-num_options", "10", "-num_val_samples", "1", "-tensorboard", "1",
                             "-enable_visdom", "1", "-visdom_server", "http://127.0.0.1",
                             "-visdom_server_port", str(visdom_server), "-visdom_env", "train_test"))
    scalars = read_tensorboard(tmp_path / "logged" / "tensorboard")
    assert [step for step, _ in scalars["loss/loss"]] == [0, 1]
    assert [step for step, _ in scalars["val/mrr"]] == [2]
    client = visdom.Visdom(server="http://127.0.0.1", port=visdom_server, use_incoming_socket=False)
    loss = json.loads(client.get_window_data("loss", env="train_test"))
    assert {trace["name"]: trace["x"] for trace in loss["content"]["data"]}["tot loss"] == [0, 1]
    val = json.loads(client.get_window_data("Retrieval Val Metrics", env="train_test"))
    assert {trace["name"] for trace in val["content"]["data"]} >= {"mrr", "r@1", "ndcg"}
