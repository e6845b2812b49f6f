"""What every conformance check shares: a result row (scripts/check_reference.py prints them as a
table), tensor comparison, the fixture's model."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from models import build_model

# Tolerances suggested by the fixture README (float32 reference, other thread counts / batches).
ATOL_LM = 1e-4
ATOL = 1e-5


@dataclass
class CheckResult:
    """One row of the conformance table."""

    name: str
    passed: bool
    max_abs_diff: Optional[float] = None
    detail: str = ""


def absent(name: str, path: Path) -> CheckResult:
    """A check whose fixture file is missing: reported as absent, never as passed."""
    return CheckResult(name, False, None, f"absent: {path.name}")


def compare(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL,
            where: Optional[torch.Tensor] = None) -> CheckResult:
    """Compare two tensors (only at `where` if given) with atol = rtol = `atol`; integer and boolean
    tensors must be equal exactly."""
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if actual.shape != expected.shape:
        return CheckResult(name, False, None,
                           f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if where is not None:
        actual, expected = actual[where], expected[where]
    if not expected.is_floating_point():
        same = torch.equal(actual.long(), expected.long())
        mismatches = int((actual.long() != expected.long()).sum())
        return CheckResult(name, same, 0.0 if same else None,
                           "" if same else f"{mismatches} values differ")
    difference = (actual.double() - expected.double()).abs()
    max_diff = float(difference.max()) if difference.numel() else 0.0
    passed = bool(torch.all(difference <= atol + atol * expected.double().abs()))
    return CheckResult(name, passed, max_diff)


def load_fixture(path: Path):
    """A fixture file's content (tensors and plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def fixture_model(fixtures: Path, checkpoint: str = "model_raw.pt"):
    """The fixture's model (model_config.json + a checkpoint) in eval mode, or a UserError."""
    return build_model(fixtures / "model_config.json", checkpoint=fixtures / checkpoint).eval()
