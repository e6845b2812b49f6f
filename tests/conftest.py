"""Shared test fixtures: the reference fixtures in ../shared/golden and the repo root."""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("VISDIAL_GOLDEN", REPO_ROOT.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The reference fixture folder; its absence is an error, never a skip."""
    if not (GOLDEN_DIR / "README.md").is_file():
        pytest.fail(f"reference fixtures not found at {GOLDEN_DIR} (set VISDIAL_GOLDEN)")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def single_thread_env() -> dict:
    """The environment of a CLI subprocess: torch (OpenMP, MKL) on one thread. Tests that run
    several subprocesses at once, or one beside a busy test process, need it: on a 2-core machine,
    processes that each spread over every core slow one another down many times over."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module's in-process tests: the tiny fixture model gains nothing
    from threads, and on a busy machine their barriers cost more than the arithmetic."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
