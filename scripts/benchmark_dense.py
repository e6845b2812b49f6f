"""Dense finetuning step: peak memory and seconds versus chunk size and number of options.

Compares the exact chunked loss of utils/training/steps.dense_step (`-dense_chunk`) with one graph over
all options (what the reference did with 80 options on 8 GPUs). One annotated round of realistic
VisDial length (round 5: about 15 + 12 * 5 tokens of history, then a 2..8-token answer), dropout
on, fp32, on this machine's CPU (or the GPU when there is one).

Each measurement runs in a fresh process. Peak memory is the growth of the process's resident
set during the first step (the kernel's high-water mark is reset before it; on a GPU, the
allocator's); the time is the steady state of the following steps (utils/benchmarking/measure.py:
the median of --steps synchronised steps after the first, whose extra time is the `warm-up s`).

    python scripts/benchmark_dense.py              # small config (4 + 2 layers, hidden 256)
    python scripts/benchmark_dense.py --paper      # also the paper config (slow on a CPU)
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

from utils.errors import ArgumentParser, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]

SMALL_CONFIG_CHANGES = {
    "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4, "num_hidden_layers": 4,
    "v_hidden_size": 256, "v_intermediate_size": 1024, "v_num_attention_heads": 4, "v_num_hidden_layers": 2,
    "bi_hidden_size": 256, "bi_num_attention_heads": 4, "bi_intermediate_size": 1024,
    "v_biattention_id": [0, 1], "t_biattention_id": [2, 3],
}
HISTORY_TOKENS = 15 + 12 * 5
REGIONS = 37


def model_config(name: str):
    from models import BertConfig
    values = json.loads((REPO_ROOT / "config" / "bert_base_6layer_6conect.json").read_text())
    if name == "small":
        values.update(SMALL_CONFIG_CHANGES)
    return BertConfig.from_dict(values, source=name)


def dense_batch(num_options: int, generator):
    """One annotated round: num_options sequences sharing a history, one image."""
    import torch
    option_lengths = torch.randint(2, 9, (num_options,), generator=generator)
    lengths = HISTORY_TOKENS + option_lengths + 1
    width = int(lengths.max())
    attention_mask = torch.arange(width)[None, :] < lengths[:, None]
    tokens = torch.randint(1000, 30000, (num_options, width), generator=generator) * attention_mask
    labels = torch.ones(num_options, dtype=torch.long)
    labels[0] = 0
    return {
        "tokens": tokens, "segments": torch.zeros_like(tokens), "attention_mask": attention_mask,
        "image_feat": torch.rand(1, REGIONS, 2048, generator=generator),
        "image_loc": torch.rand(1, REGIONS, 5, generator=generator), "image_mask": torch.ones(1, REGIONS),
        "image_index": torch.zeros(num_options, dtype=torch.long),
        "gt_relevance": torch.randint(0, 5, (1, num_options), generator=generator) / 4.0,
        "next_sentence_labels": labels,
    }


def measure(config_name: str, num_options: int, chunk: int, steps: int) -> dict:
    """One configuration in this process; chunk 0 means one graph over all options."""
    import torch
    from models import VisualDialogEncoder
    from models.losses import dense_loss
    from utils.benchmarking.measure import memory_bytes, peak_memory_bytes, reset_peak_memory, steady_state
    from utils.training.steps import StepSettings, _score_chunk, dense_step

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = VisualDialogEncoder(model_config(config_name)).to(device).train()
    batch = dense_batch(num_options, torch.Generator().manual_seed(0))
    settings = StepSettings(device, dense_chunk=chunk or num_options)

    def one_graph_step():
        scores = _score_chunk(model, batch, torch.arange(num_options), settings)
        loss, _ = dense_loss(scores.view(1, num_options, 2), batch["gt_relevance"].to(device),
                             batch["next_sentence_labels"].to(device), 1.0)
        loss.backward()

    step = one_graph_step if chunk == 0 else (lambda: dense_step(model, batch, settings))

    def fresh_step() -> int:
        model.zero_grad(set_to_none=True)
        step()
        return 1

    reset_peak_memory(device)
    base = memory_bytes(device)
    steady = steady_state(fresh_step, device, 0.0, steps)  # the first step: the peak memory of a step
    peak = peak_memory_bytes(device) - base
    return {"config": config_name, "options": num_options, "chunk": chunk or "one graph",
            "seconds": 1 / steady.rate, "warm_up_s": steady.warm_up_s, "peak_mib": peak / 2**20,
            "device": device.type}


def run_in_subprocess(config_name: str, num_options: int, chunk: int, steps: int) -> dict:
    command = [sys.executable, __file__, "--one", config_name, str(num_options), str(chunk), str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="also measure the paper config")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (the time: their median)")
    parser.add_argument("--one", nargs=4, metavar=("CONFIG", "OPTIONS", "CHUNK", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, options, chunk, steps = args.one
        print(json.dumps(measure(name, int(options), int(chunk), int(steps))))
        return

    grid = [("small", options, chunk) for options in (25, 50, 100) for chunk in (0, 25, 10)
            if chunk < options]
    grid.insert(grid.index(("small", 100, 25)), ("small", 100, 50))
    if args.paper:
        grid += [("paper", 20, 0), ("paper", 100, 20), ("paper", 100, 5)]
    print(f"{'config':<7} {'options':>7} {'chunk':>10} {'s/step':>8} {'warm-up s':>10} {'peak MiB':>9}")
    for name, options, chunk in grid:
        row = run_in_subprocess(name, options, chunk, args.steps)
        print(f"{row['config']:<7} {row['options']:>7} {str(row['chunk']):>10} {row['seconds']:>8.2f} "
              f"{row['warm_up_s']:>10.2f} {row['peak_mib']:>9.0f}", flush=True)
    print(f"device: {row['device']}; history {HISTORY_TOKENS} tokens + answer; fp32; dropout on")


if __name__ == "__main__":
    run_cli(main)
