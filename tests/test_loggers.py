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


@pytest.fixture
def visdom_server(tmp_path):
    """An offline visdom server; yields its port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from visdom.server.run_server import main; main()",
         "-port", str(port), "-bind_local", "-env_path", str(tmp_path / "visdom_env")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("visdom server did not start")
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


def test_visdom_unreachable_warns_and_training_goes_on(tmp_path):
    with pytest.warns(UserWarning, match="not reachable"):
        logger = TrainingLogger(tmp_path, visdom={"server": "http://127.0.0.1", "port": free_port(), "env": "x"})
    logger.log_train(1, {"loss": 1.0})
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == 1.0


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
