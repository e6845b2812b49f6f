"""Faithfulness on the device: the model conformance checks of utils/conformance/model.py (every
output of every forward case, the losses, the dense scores) with the forward passes on a CUDA GPU
in fp32 with TF32 off, against the reference fixtures within the CPU's tolerances (1e-5, LM scores
1e-4). Marked `gpu` (pytest.ini): skipped, with its reason, where torch sees no CUDA device;
`pytest -m gpu -s` runs it alone and prints the largest differences, beside the CPU's."""
import pytest
import torch

from utils.conformance.model import model_checks

pytestmark = pytest.mark.gpu


@pytest.fixture
def fp32_without_tf32():
    """TF32 off for matrix products and cuDNN while the test runs (true fp32 arithmetic)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")
def test_model_conformance_on_the_gpu_in_fp32(golden_dir, fp32_without_tf32):
    results = model_checks(golden_dir, torch.device("cuda"))
    on_the_cpu = model_checks(golden_dir, torch.device("cpu"))
    failed = [f"{result.name}: {result.max_abs_diff} {result.detail}" for result in results if not result.passed]
    for device, checks in ((torch.cuda.get_device_name(), results), ("the CPU", on_the_cpu)):
        measured = [result for result in checks if result.max_abs_diff is not None]
        largest = max(measured, key=lambda result: result.max_abs_diff)
        nsp = max(result.max_abs_diff for result in measured if "nsp_scores" in result.name)
        print(f"\n{device}: {len(checks)} model checks in fp32, {sum(not r.passed for r in checks)} failed; largest "
              f"difference {largest.max_abs_diff:.1e} ({largest.name}), NSP scores {nsp:.1e}")
    assert [result.name for result in results] == [result.name for result in on_the_cpu]  # every check ran
    assert not failed, failed
