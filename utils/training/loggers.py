"""Where training reports its progress (rank 0 only): metrics.jsonl always, visdom (`-enable_visdom 1`, the
reference's windows) and TensorBoard (`-tensorboard 1`: `loss/<name>`, `val/<metric>`)."""
import contextlib
import io
import json
import logging
import math
import sys
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import numpy as np

from utils.errors import UserError


class MetricsFile:
    """Appends one JSON object per line (`{"event": "train" | "val" | ..., "iteration": ...}`), unbuffered so
    a killed run keeps what it logged; a line not written whole (a full disk) is cut off again and is a
    UserError naming the file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab", buffering=0)

    def write(self, record: dict) -> None:
        # json has no nan/inf: write them as strings so every line stays valid JSON
        clean = {key: (str(value) if isinstance(value, float) and not math.isfinite(value) else value)
                 for key, value in record.items()}
        line = memoryview((json.dumps(clean) + "\n").encode("utf-8"))
        end = self._file.seek(0, io.SEEK_END)
        try:
            while line:
                line = line[self._file.write(line):]
        except OSError as error:
            with contextlib.suppress(OSError):
                self._file.truncate(end)
            raise UserError(f"{self.path}: cannot append to the metrics log ({error.strerror or error}); "
                            "its earlier lines are kept") from None

    def close(self) -> None:
        self._file.close()


class VisdomLogger:
    """Line plots and text on a visdom server (the reference's VisdomVisualize). A server that cannot be
    reached, or stops answering, is one `warning:` line on stderr, then nothing more is sent; the
    client's own output never shows."""

    PROBE_TIMEOUT_SECONDS = 3

    def __init__(self, server: str, port: int, env: str):
        self.env = env or "main"
        self.address = visdom_address(server, port)
        self._windows = set()
        self._visdom = None
        # The client has no timeout and prints a traceback per failed request: ask the server first.
        problem = http_problem(self.address, self.PROBE_TIMEOUT_SECONDS)
        if problem:
            self._turn_off(f"visdom server {self.address} not reachable ({problem})")
            return
        import visdom
        # The client logs "Setting up a new session..." and the like as warnings: not the user's concern.
        logging.getLogger("visdom").setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self._visdom = visdom.Visdom(server=server, port=port, env=self.env,
                                             use_incoming_socket=False, raise_exceptions=True)
        except ConnectionError:
            self._turn_off(f"visdom server {self.address} not reachable")

    @property
    def connected(self) -> bool:
        return self._visdom is not None

    def _turn_off(self, why: str) -> None:
        print(f"warning: {why}: visdom logging is off, training goes on", file=sys.stderr, flush=True)
        self._visdom = None

    def _send(self, method: str, **kwargs) -> None:
        if self._visdom is None:
            return
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                getattr(self._visdom, method)(**kwargs)
        except ConnectionError:
            self._turn_off(f"visdom server {self.address} stopped answering")

    def line(self, x: float, y: float, window: str, line_name: str, xlabel: str = "Iterations") -> None:
        update = {"update": "append"} if window in self._windows else {}
        opts = {} if update else {"xlabel": xlabel, "ylabel": window, "title": window}
        self._send("line", X=np.array([x]), Y=np.array([y]), win=window, **update, name=line_name,
                   opts={**opts, "showlegend": True})
        self._windows.add(window)

    def text(self, text: str) -> None:
        self._send("text", text=text)

    def save(self) -> None:
        self._send("save", envs=[self.env])


def visdom_address(server: str, port: int) -> str:
    """The base URL the visdom client posts to (`server`'s scheme optional, as visdom accepts)."""
    parsed = urlparse(server if "://" in server else f"http://{server}")
    return f"{parsed.scheme}://{parsed.netloc}:{port}"


def http_problem(url: str, timeout_seconds: float) -> Optional[str]:
    """None if an HTTP server answers at `url` within the timeout, else why not (one line)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds):
            return None
    except OSError as error:  # URLError, HTTPError, timeouts, refused connections
        return str(getattr(error, "reason", error))
    except ValueError as error:  # a malformed address
        return str(error)


# The reference's visdom line names of the training losses.
VISDOM_LOSS_NAMES = {"loss": "tot loss", "lm_nsp_loss": "lm + nsp loss", "lm_loss": "lm loss",
                     "nsp_loss": "nsp loss", "img_loss": "img loss", "ce_loss": "ce loss"}


class TrainingLogger:
    """Fans records out to the run folder's metrics.jsonl, visdom and tensorboard/ (`enabled`: rank 0)."""

    def __init__(self, run_dir: Path, enabled: bool = True, visdom: Optional[dict] = None, tensorboard: bool = False):
        self.enabled = enabled
        self.metrics = MetricsFile(Path(run_dir) / "metrics.jsonl") if enabled else None
        self.visdom = VisdomLogger(**visdom) if enabled and visdom else None
        self.tensorboard = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # seconds to import: only when asked for
            self.tensorboard = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log_text(self, text: str) -> None:
        """The run's options, shown once (visdom text window, TensorBoard text)."""
        if self.visdom:
            self.visdom.text(text)
        if self.tensorboard:
            self.tensorboard.add_text("options", text.replace("\n", "  \n"))

    def log_train(self, iteration: int, losses: dict, **extra) -> None:
        """Losses by name ('loss', 'lm_loss' ...) at an iteration, plus extra fields for the file."""
        if not self.enabled:
            return
        self.metrics.write({"event": "train", "iteration": iteration, **losses, **extra})
        for name, value in losses.items():
            if self.visdom:
                self.visdom.line(iteration, value, "loss", VISDOM_LOSS_NAMES.get(name, name))
            if self.tensorboard:
                self.tensorboard.add_scalar(f"loss/{name}", value, iteration)

    def log_validation(self, iteration: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self.metrics.write({"event": "val", "iteration": iteration, **metrics})
        for name, value in metrics.items():
            if self.visdom:
                window = ("Retrieval Round Val Metrics Round -" + name.split("_")[-1]
                          if "round" in name else "Retrieval Val Metrics")
                self.visdom.line(iteration, value, window, name)
            if self.tensorboard:
                self.tensorboard.add_scalar(f"val/{name}", value, iteration)

    def log_event(self, event: str, iteration: int, **fields) -> None:
        if self.enabled:
            self.metrics.write({"event": event, "iteration": iteration, **fields})

    def flush(self) -> None:
        if self.visdom:
            self.visdom.save()
        if self.tensorboard:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.metrics:
            self.metrics.close()
        if self.tensorboard:
            self.tensorboard.close()
