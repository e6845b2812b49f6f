"""The GPU benchmark: the paper-size model on one GPU, every figure in one command of at most 8 minutes.

    python scripts/benchmark_gpu.py -out gpu_benchmark.json     # on a CUDA GPU (rows within --time_limit 420 s)
    python scripts/benchmark_gpu.py --smoke -out smoke.json     # every row on the CPU with a tiny model
    python -m scripts.benchmark_gpu ...                         # the same, from the repository root

Every row runs the project's own code with the paper's model (config/bert_base_6layer_6conect.json,
random weights) on data read through the project's own datasets: synthetic VisDial of realistic
lengths (utils/benchmarking/synthetic.py: round r about 15 + 12 r tokens, 37 image regions).

  eval <precision>      sequences/s of the evaluation engine as evaluate.py runs it (score_dataset of
                        utils/evaluation/scoring.py: DataLoader workers, pinned chunks, the device's token
                        budget), and the projected time for VisDial v1.0 val (2,064 dialogs x 10 rounds x 100
                        options = 2.06 M sequences) and test (8,000 dialogs x 100 options of their last round)
  eval reference        the reference's way (every sequence padded to 256, all heads, fp32): the ratio
  eval budget <N>       bf16 sequences/s and peak memory at -eval_tokens_per_batch N
  input eval | train    what the input side alone delivers with the DataLoader workers (no model), against
                        what the rows above consume
  train <precision>     base training at the paper's batch (config/presets/base.yml: -batch_size 80,
                        -sequences_per_image 2, -batch_multiply 1): utils/training/steps.base_step and train.py's
                        optimizer step (RunState.step_optimizer, through the GradScaler in fp16)
  dense chunk <C>       dense fine-tuning over all 100 options of an annotated round (steps.dense_step,
                        -dense_chunk C): seconds per iteration, and the memory of the step itself
  fp16 toy run          train.py's loop (utils/training/trainer.Trainer) for 300 iterations in fp16 on toy data
                        from preprocessing/make_toy_data.py. The GradScaler starts at 2^32 instead of 2^16, more
                        than fp16 gradients hold, so the first optimizer steps overflow and are skipped, counted
                        and reported while the scale backs off; the loss must stay finite and fall
  eval compiled         torch.compile of the evaluation model (evaluate.py -compile): speed-up over eager fp32
                        on the same batch, and whether the ranks are identical
  train bf16 compiled   base training through torch.compile (train.py -compile), against eager

Each row has a figure, the peak memory (the GPU allocator's; on the CPU the process's resident
set) and a projection or note. The rows go to stdout as they finish, then as a table, and to
`-out` (JSON) as soon as each exists, so a run stopped early keeps what it measured; `-resume`
keeps the rows of `-out` that are ok and runs the others. Rows run in the order above within
`--time_limit`: a row that would not finish in what is left is `not run`, a row over its own
limit fails, and the run goes on. Exit code 1 when a row failed; 2 (one line) without a GPU.

--smoke runs every row on the CPU with a tiny model (config/toy_model.json; the fp16 toy run, as
on a GPU, the toy generator's own) and
small sizes, so that the suite keeps this script working:
one thread, fp16 through CPU autocast and the CPU GradScaler, torch.compile with the `eager` backend (tracing
without code generation) on a one-layer-each variant of the model; the notes say so.
"""
import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Subset

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset, VisdialDenseDataset
from dataloader.feature_store import open_feature_store
from dataloader.preprocess import preprocess
from dataloader.tokenizer import load_tokenizer
from models import build_model
from options import TrainOptions, parse_options
from utils.benchmarking.measure import (count_flops, describe_device, memory_bytes, peak_memory_bytes,
                                        reset_peak_memory, timed)
from utils.benchmarking.reference import score_padded_reference_style, spread_weights
from utils.benchmarking.synthetic import write_synthetic_visdial
from utils.distributed import DistributedContext
from utils.errors import ArgumentParser, UserError, run_cli
from utils.evaluation.metrics import scores_to_ranks
from utils.evaluation.scoring import resolve_tokens_per_batch, score_dataset, score_sequences
from utils.files import write_json
from utils.input_files import read_json
from utils.training.data import TrainingData, build_training_data
from utils.training.loggers import TrainingLogger
from utils.checkpoints import git_commit
from utils.training.run_folder import RunFolder
from utils.training.run_state import RunState
from utils.training.steps import StepSettings, base_step, dense_step
from utils.training.trainer import Trainer

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO_ROOT / "config" / "bert_base_6layer_6conect.json"
SMOKE_CONFIG = REPO_ROOT / "config" / "toy_model.json"
VAL_SEQUENCES = 2064 * 10 * 100
TEST_SEQUENCES = 8000 * 100
TRAIN_IMAGES = 123_287       # VisDial v1.0 train dialogs
DENSE_ROUNDS = 2_000         # VisDial v1.0 train rounds with dense annotations
MAX_SEQ_LEN = 256
SEQUENCE_FIELDS = ("tokens", "segments", "attention_mask", "image_index")
GIB = 2 ** 30


@dataclass(frozen=True)
class Sizes:
    """How much each row does, and its limits: the GPU run's, or the smoke run's."""
    synthetic_dialogs: int      # synthetic VisDial dialogs (one image each)
    eval_options: int           # options per round of the eval rows (VisDial: 100)
    eval_dialogs: int           # dialogs of the eval bf16 row (fp32: eval_fp32_dialogs)
    eval_fp32_dialogs: int
    reference_sequences: int
    reference_chunk: int        # sequences per forward pass of the reference's way
    budgets: tuple
    workers: int                # DataLoader workers
    train_batch_size: int       # sequences a step (the paper's: 80)
    train_steps: int
    warmup_steps: int
    dense_chunks: tuple
    dense_steps: int
    toy_train_dialogs: int
    toy_batch_size: int
    toy_iterations: int
    fp16_initial_scale: float
    compile_dialogs: int
    compile_backend: str
    compile_one_layer_each: bool  # compile a variant of the model with one layer of each kind
    estimate_scale: float         # the rows' time estimates (guessed seconds on an H200, not measured) times this
    time_limit_s: float
    row_limit_s: float


GPU_SIZES = Sizes(
    synthetic_dialogs=120, eval_options=100, eval_dialogs=96, eval_fp32_dialogs=8, reference_sequences=1000,
    reference_chunk=200, budgets=(16384, 32768, 65536, 131072), workers=8, train_batch_size=80, train_steps=10,
    warmup_steps=3, dense_chunks=(100, 50, 25, 10), dense_steps=3, toy_train_dialogs=600, toy_batch_size=64,
    toy_iterations=300, fp16_initial_scale=2.0 ** 32, compile_dialogs=2, compile_backend="inductor",
    compile_one_layer_each=False, estimate_scale=1.0, time_limit_s=420, row_limit_s=240)
SMOKE_SIZES = Sizes(
    synthetic_dialogs=8, eval_options=4, eval_dialogs=1, eval_fp32_dialogs=1, reference_sequences=10,
    reference_chunk=10, budgets=(1024,), workers=1, train_batch_size=4, train_steps=1, warmup_steps=1,
    dense_chunks=(100, 50, 25, 10), dense_steps=1, toy_train_dialogs=40, toy_batch_size=4, toy_iterations=24,
    fp16_initial_scale=2.0 ** 20, compile_dialogs=1, compile_backend="eager", compile_one_layer_each=True,
    estimate_scale=0.2, time_limit_s=300, row_limit_s=120)


@dataclass
class Row:
    """One measurement. status: ok | failed | skipped (impossible on this machine; the note says
    why) | not run (too little time left)."""
    name: str
    status: str = "ok"
    figure: Optional[float] = None
    unit: str = ""
    peak_memory_gib: Optional[float] = None
    projection: str = ""
    note: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    details: dict = field(default_factory=dict)


def read_rows(path: str) -> list[Row]:
    """The rows of an earlier `-out` file (for -resume); UserError when it is not one."""
    content = read_json(path, "result file of benchmark_gpu.py")
    rows = content.get("rows") if isinstance(content, dict) else None
    fields = {row_field.name for row_field in dataclasses.fields(Row)}
    if not isinstance(rows, list) or not all(isinstance(row, dict) and set(row) == fields for row in rows):
        raise UserError(f"{path}: not a result file of benchmark_gpu.py (a rows list of {sorted(fields)}); "
                        "cannot -resume from it")
    for number, row in enumerate(rows):
        for name, value in row.items():
            if not ROW_VALUES[name][0](value):
                raise UserError(f"{path}: row {number} ({row['name']!r}): {name} must be {ROW_VALUES[name][1]}, "
                                f"got {value!r}; cannot -resume from it")
    return [Row(**row) for row in rows]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


ROW_STATUSES = ("ok", "failed", "skipped", "not run")
ROW_VALUES = {  # Row field -> (is this value of its type, what it must be)
    "name": (lambda value: isinstance(value, str), "a string"),
    "status": (lambda value: value in ROW_STATUSES, f"one of {', '.join(ROW_STATUSES)}"),
    "figure": (lambda value: value is None or _number(value), "a finite number or null"),
    "unit": (lambda value: isinstance(value, str), "a string"),
    "peak_memory_gib": (lambda value: value is None or _number(value) and value >= 0, "a number >= 0 or null"),
    "projection": (lambda value: isinstance(value, str), "a string"),
    "note": (lambda value: isinstance(value, str), "a string"),
    "seconds": (lambda value: _number(value) and value >= 0, "a number >= 0"),
    "cpu_seconds": (lambda value: _number(value) and value >= 0, "a number >= 0"),
    "details": (lambda value: isinstance(value, dict), "an object"),
}


class RowTimeout(Exception):
    """A row ran past its own time limit."""


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (DataLoader workers, make_toy_data.py)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _duration(sequences: float, rate: float) -> str:
    seconds = sequences / rate
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def format_row(row: Row) -> str:
    figure = "-" if row.figure is None else f"{row.figure:,.4g} {row.unit}"
    memory = "-" if row.peak_memory_gib is None else f"{row.peak_memory_gib:.2f} GiB"
    text = "; ".join(part for part in (row.projection, row.note) if part)
    return f"{row.name:<20} {figure:>20} {memory:>10} {row.seconds:>6.1f} {row.status:>7}  {text}"


def format_table(header: dict, rows: list[Row]) -> str:
    columns = f"{'row':<20} {'figure':>20} {'peak mem':>10} {'s':>6} {'status':>7}  projection; note"
    lines = [describe_run(header), columns]
    return "\n".join(lines + [format_row(row) for row in rows])


def describe_run(header: dict) -> str:
    return (f"{header['device']} | torch {header['torch']} | CUDA {header['cuda']} | commit {header['commit']} | "
            f"{'smoke run: CPU, ' if header['smoke'] else ''}model {Path(header['model_config']).name} | "
            f"{header['started']}")


class Benchmark:
    """Runs rows in order within the time limit and writes each result as soon as it exists."""

    def __init__(self, args: argparse.Namespace, device: torch.device, sizes: Sizes, folder: Path):
        self.args, self.device, self.sizes, self.folder = args, device, sizes, folder
        self.started = time.perf_counter()
        self.rows: list[Row] = []
        self.done = {}
        if args.resume and args.out and Path(args.out).is_file():
            self.done = {row.name: row for row in read_rows(args.out) if row.status == "ok"}
        self.header = {"smoke": args.smoke, **describe_device(device), "commit": git_commit(),
                       "model_config": str(args.model_config), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                       "default_tokens_per_batch": resolve_tokens_per_batch(0, device)}

    def row(self, name: str, estimate_s: float, measure: Callable[[Row], None]) -> Row:
        """Run one row (`measure` fills in its Row) unless -resume has it or too little time is left."""
        row = self.done.get(name) or Row(name)
        left = self.sizes.time_limit_s - (time.perf_counter() - self.started)
        if name in self.done:
            pass
        elif left < estimate_s * self.sizes.estimate_scale:
            row.status = "not run"
            row.note = f"about {estimate_s * self.sizes.estimate_scale:.0f} s needed, {left:.0f} s left of --time_limit"
        else:
            self._measure(row, measure, limit=min(left, self.sizes.row_limit_s))
        self.rows.append(row)
        self._write(complete=False)
        print(format_row(row), flush=True)
        return row

    def _measure(self, row: Row, measure: Callable[[Row], None], limit: float) -> None:
        def stop(signum, frame):
            raise RowTimeout()

        signal.signal(signal.SIGALRM, stop)
        signal.alarm(max(1, int(limit)))
        reset_peak_memory(self.device)
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        try:
            measure(row)
        except RowTimeout:
            row.status, row.note = "failed", f"over its time limit of {limit:.0f} s"
        except Exception as error:  # reported in the row; the next row runs
            traceback.print_exc()
            row.status = "failed"
            row.note = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"[:300]
        finally:
            signal.alarm(0)
        row.seconds = round(time.perf_counter() - start, 1)
        row.cpu_seconds = round(_cpu_seconds() - start_cpu, 1)
        if row.peak_memory_gib is None and row.status == "ok":
            row.peak_memory_gib = round(peak_memory_bytes(self.device) / GIB, 2)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _write(self, complete: bool) -> None:
        if self.args.out:
            write_json(self.args.out, {**self.header, "complete": complete,
                                       "rows": [dataclasses.asdict(row) for row in self.rows]})

    def finish(self) -> int:
        """Write and print the final table; the exit code (1 when a row failed)."""
        self._write(complete=True)
        print("\n" + format_table(self.header, self.rows), flush=True)
        return 1 if any(row.status == "failed" for row in self.rows) else 0


class Rows:
    """The measurements; they share the synthetic data, the evaluation model and each other's figures."""

    def __init__(self, bench: Benchmark):
        self.bench, self.device, self.sizes, self.smoke = bench, bench.device, bench.sizes, bench.args.smoke
        self.model_config = bench.args.model_config
        self.precision = "bf16" if self.device.type != "cuda" or torch.cuda.is_bf16_supported() else "fp16"
        self.figures: dict[str, float] = {}
        self.data = write_synthetic_visdial(bench.folder / "synthetic", self.sizes.synthetic_dialogs)
        self.features = open_feature_store(self.data.features)
        self.tokenizer = load_tokenizer(str(self.data.vocab))
        self.val = VisdialDataset("val", self.data.val, self.features, self.tokenizer, self.data.val_dense,
                                  max_seq_len=MAX_SEQ_LEN, num_options=self.sizes.eval_options)
        self.eval_model = self._eval_model(self.model_config)
        self.train_options = parse_options(["-config", str(REPO_ROOT / "config/presets/base.yml"),
                                            "-batch_size", str(self.sizes.train_batch_size)], TrainOptions)
        self.train_dataset, self.train_batches = None, []

    def _eval_model(self, config: Path) -> torch.nn.Module:
        """A model whose scores spread out as a trained one's (so that ranks are meaningful), in eval mode."""
        model = build_model(config)
        spread_weights(model, torch.Generator().manual_seed(0))
        return model.to(self.device).eval()

    def _gib(self) -> float:
        return round(peak_memory_bytes(self.device) / GIB, 2)

    def _collated(self, dialogs: int) -> dict:
        return collate_dialog_batch([self.val[index] for index in range(dialogs)])

    # evaluation ---------------------------------------------------------------------------------

    def evaluation(self, precision: str) -> Callable[[Row], None]:
        def measure(row: Row) -> None:
            dialogs = self.sizes.eval_fp32_dialogs if precision == "fp32" else self.sizes.eval_dialogs

            def score(count: int):
                return score_dataset(self.eval_model, Subset(self.val, range(count)), collate_dialog_batch,
                                     precision=precision, num_workers=self.sizes.workers, progress=False)

            score(1)  # warm-up: kernels, allocator, workers
            reset_peak_memory(self.device)
            timing = timed(lambda: score(dialogs), self.device)
            rate = timing.result.scores.numel() / timing.seconds
            self.figures[f"eval {precision}"] = rate
            row.figure, row.unit, row.peak_memory_gib = rate, "seq/s", self._gib()
            row.projection = f"val {_duration(VAL_SEQUENCES, rate)}, test {_duration(TEST_SEQUENCES, rate)}"
            row.note = (f"{timing.result.scores.numel()} sequences, {resolve_tokens_per_batch(0, self.device)} tokens "
                        f"a batch, {self.sizes.workers} workers" + (", TF32 off" if precision == "fp32" else ""))
        return measure

    def reference(self, row: Row) -> None:
        count = self.sizes.reference_sequences
        batch = {name: value[:count] if name in SEQUENCE_FIELDS else value for name, value in self._collated(1).items()}
        warm_up = {name: value[:2] if name in SEQUENCE_FIELDS else value for name, value in batch.items()}
        score_padded_reference_style(self.eval_model, warm_up, MAX_SEQ_LEN, self.sizes.reference_chunk)
        reset_peak_memory(self.device)
        timing = timed(lambda: score_padded_reference_style(self.eval_model, batch, MAX_SEQ_LEN,
                                                            self.sizes.reference_chunk), self.device)
        rate = count / timing.seconds
        ours = score_sequences(self.eval_model, batch, resolve_tokens_per_batch(0, self.device), "fp32")
        moved = int((scores_to_ranks(ours.view(1, 1, -1)) != scores_to_ranks(timing.result.view(1, 1, -1))).sum())
        ratios = [f"ours {name.split()[1]} {self.figures[name] / rate:.1f}x" for name in ("eval bf16", "eval fp32")
                  if name in self.figures]
        row.figure, row.unit, row.peak_memory_gib = rate, "seq/s", self._gib()
        row.projection = f"val {_duration(VAL_SEQUENCES, rate)}"
        row.note = "; ".join(ratios + [f"ours fp32 on the same {count} sequences: {moved} ranks differ, max |d score| "
                                       f"{(ours - timing.result).abs().max():.1e}"])
        row.details = {"ranks_moved": moved}

    def budget(self, tokens: int) -> Callable[[Row], None]:
        def measure(row: Row) -> None:
            batch = self._collated(min(16, self.sizes.eval_dialogs))
            score_sequences(self.eval_model, self._collated(1), tokens, self.precision)
            reset_peak_memory(self.device)
            timing = timed(lambda: score_sequences(self.eval_model, batch, tokens, self.precision), self.device)
            row.figure, row.unit, row.peak_memory_gib = len(batch["tokens"]) / timing.seconds, "seq/s", self._gib()
            row.note = f"{self.precision}, one chunk of {len(batch['tokens'])} sequences"
        return measure

    def input_eval(self, row: Row) -> None:
        dialogs = self.sizes.eval_dialogs
        loader = DataLoader(Subset(self.val, range(dialogs)), batch_size=16, num_workers=self.sizes.workers,
                            collate_fn=collate_dialog_batch, pin_memory=self.device.type == "cuda")
        timing = timed(lambda: sum(batch["tokens"].shape[0] for batch in loader), torch.device("cpu"))
        rate = timing.result / timing.seconds
        consumed = self.figures.get(f"eval {self.precision}")
        row.figure, row.unit = rate, "seq/s"
        row.note = (f"{self.sizes.workers} workers build val items, collate and pin; {dialogs / timing.seconds:.1f} "
                    "dialogs/s" + (f"; {rate / consumed:.1f}x what eval {self.precision} consumes" if consumed else ""))

    # training -----------------------------------------------------------------------------------

    def _train_data(self, workers: int) -> TrainingData:
        """Base-training batches of the paper's shape, through the loader train.py uses."""
        options = self.train_options
        if self.train_dataset is None:
            self.train_dataset = VisdialDataset(
                "train", self.data.train, self.features, self.tokenizer, max_seq_len=MAX_SEQ_LEN,
                mask_prob=options.mask_prob, sequences_per_image=options.sequences_per_image,
                num_negative_samples=options.num_negative_samples)
        images = options.batch_size // options.sequences_per_image
        return TrainingData(self.train_dataset, self.data.train, images, True, options.seed, workers,
                            DistributedContext(0, 1, 0, self.device), None)

    def _batches(self, count: int) -> list[dict]:
        """`count` base-training batches (read once, then reused by every training row)."""
        data, epoch = self._train_data(0), 0
        while len(self.train_batches) < count:
            self.train_batches += [wrapped["batch"] for wrapped in data.epoch_batches(epoch)]
            epoch += 1
        return self.train_batches[:count]

    def _compile_config(self) -> Path:
        """The model config of the compiled rows: the benchmark's, or (smoke) a variant of it with one
        text, one image and one co-attention layer, which traces in a fraction of the time."""
        if not self.sizes.compile_one_layer_each:
            return self.model_config
        config = json.loads(Path(self.model_config).read_text())
        config.update(num_hidden_layers=1, v_num_hidden_layers=1, v_biattention_id=[0], t_biattention_id=[0])
        path = self.bench.folder / "one_layer_each.json"
        path.write_text(json.dumps(config))
        return path

    def training(self, precision: str, compiled: bool = False) -> Callable[[Row], None]:
        def measure(row: Row) -> None:
            options = self.train_options
            model = build_model(self._compile_config() if compiled else self.model_config).to(self.device).train()
            state = RunState.start(model, options, precision)
            if compiled:
                torch._dynamo.reset()  # compiled afresh, not from what an earlier row compiled
            train_model = torch.compile(model, backend=self.sizes.compile_backend) if compiled else model
            settings = StepSettings(self.device, precision, options.batch_multiply, state.grad_scaler,
                                    {"lm": options.lm_loss_coeff, "nsp": options.nsp_loss_coeff,
                                     "img": options.img_loss_coeff})
            # four batch lengths: a compiled model recompiles once for dynamic shapes, as in training
            batches, overflows = self._batches(1 if self.smoke else 4), []

            def step(iteration: int) -> None:
                base_step(train_model, batches[iteration % len(batches)], settings)
                if not state.step_optimizer(iteration, options.grad_clip):
                    overflows.append(iteration)

            # warm-up: eager, its first step counts the FLOPs; compiled, it compiles
            flops = None if compiled else count_flops(lambda: step(0))
            warm_up = range(0 if compiled else 1, max(self.sizes.warmup_steps, len(batches) if compiled else 0))
            compiling = timed(lambda: [step(iteration) for iteration in warm_up], self.device)
            reset_peak_memory(self.device)
            timing = timed(lambda: [step(iteration) for iteration in range(self.sizes.train_steps)], self.device)
            steps_per_s = self.sizes.train_steps / timing.seconds
            name = f"train {precision}" + (" compiled" if compiled else "")
            self.figures[name] = steps_per_s
            row.figure, row.unit, row.peak_memory_gib = options.batch_size * steps_per_s, "seq/s", self._gib()
            epoch = TRAIN_IMAGES * options.sequences_per_image
            row.projection = f"an epoch of VisDial train ({epoch:,} sequences): {_duration(epoch, row.figure)}"
            notes = [f"{steps_per_s:.2f} steps/s of {options.batch_size} sequences"]
            if flops:
                notes.append(f"{flops / 1e12:.2f} TFLOP a step, {flops * steps_per_s / 1e12:.1f} TFLOP/s")
                row.details["flops_per_step"] = flops
            if compiled:
                eager = self.figures.get(f"train {precision}")
                notes.append(f"compiling {compiling.seconds:.0f} s (backend {self.sizes.compile_backend}"
                             + (", one layer of each kind" if self.sizes.compile_one_layer_each else "") + ")"
                             + (f", {steps_per_s / eager:.2f}x eager" if eager and not self.smoke else ""))
            if precision == "fp16":
                notes.append(f"{len(overflows)} steps skipped by the GradScaler for overflow")
            if self.smoke and precision != "fp32":
                notes.append(f"CPU autocast {precision}")
            row.note = "; ".join(notes)
        return measure

    def input_train(self, row: Row) -> None:
        data = self._train_data(self.sizes.workers)
        epochs = math.ceil(8 / data.batches_per_epoch)

        def read() -> int:
            return sum(len(wrapped["batch"]["image_id"]) for epoch in range(epochs)
                       for wrapped in data.epoch_batches(epoch))

        timing = timed(read, torch.device("cpu"))
        rate = timing.result / timing.seconds
        steps = self.figures.get(f"train {self.precision}")
        row.figure, row.unit = rate, "images/s"
        row.note = (f"{self.sizes.workers} workers, {data.batch_images} images "
                    f"({self.train_options.batch_size} sequences) a batch")
        if steps:
            row.note += (f"; train {self.precision} needs {steps * data.batch_images:,.0f} images/s "
                         f"({steps:.2f} steps/s): {rate / (steps * data.batch_images):.1f}x that")

    def dense(self, chunk: int) -> Callable[[Row], None]:
        def measure(row: Row) -> None:
            precision = self.precision if self.device.type == "cuda" else "fp32"
            dataset = VisdialDenseDataset(self.data.train, self.data.train_dense, self.features, self.tokenizer,
                                          max_seq_len=MAX_SEQ_LEN)
            # the smoke run takes the shortest annotated round, the GPU run the first one
            rounds = [annotation["round_id"] for annotation in dataset.dense_annotations]
            batch = collate_dialog_batch([dataset[rounds.index(min(rounds)) if self.smoke else 0]])
            model = build_model(self.model_config).to(self.device).train()
            settings = StepSettings(self.device, precision, dense_chunk=chunk, coefficients={"nsp": 1.0})
            if not self.smoke:
                dense_step(model, batch, settings)  # warm-up; its gradients stay allocated, as in training
            baseline = memory_bytes(self.device)
            reset_peak_memory(self.device)
            seconds = statistics.median(timed(lambda: dense_step(model, batch, settings), self.device).seconds
                                        for _ in range(self.sizes.dense_steps))
            step_gib = (peak_memory_bytes(self.device) - baseline) / GIB
            row.figure, row.unit, row.peak_memory_gib = seconds, "s/iteration", self._gib()
            row.projection = f"{DENSE_ROUNDS:,} annotated rounds: {seconds * DENSE_ROUNDS / 60:.1f} min an epoch"
            row.note = (f"{precision}, {len(batch['tokens'])} options of {batch['tokens'].shape[1]} tokens; the step "
                        f"itself {step_gib:.2f} GiB above the weights and gradients"
                        + ("" if self.device.type == "cuda" else " (CPU resident set: blurred by the allocator)"))
            row.details = {"step_memory_gib": round(step_gib, 3)}
        return measure

    # fp16 on toy data ---------------------------------------------------------------------------

    def _toy_data(self, folder: Path) -> dict:
        """Toy VisDial from make_toy_data.py's command line, preprocessed; the processed file paths."""
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        generated = subprocess.run(
            [sys.executable, "-m", "preprocessing.make_toy_data", "-out", str(folder), "-seed", "0",
             "-train_dialogs", str(self.sizes.toy_train_dialogs), "-val_dialogs", "4", "-test_dialogs", "2"],
            cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
        if generated.returncode:
            raise RuntimeError(f"make_toy_data.py failed: {(generated.stderr.strip().splitlines() or ['?'])[-1]}")
        raw = {"visdial_train": "train", "visdial_val": "val", "visdial_test": "test",
               "visdial_val_ndcg": "val_dense_annotations", "visdial_train_ndcg": "train_dense_annotations"}
        files = {name: str(folder / f"visdial_1.0_{split}.json") for name, split in raw.items()}
        for name in ("save_path_train", "save_path_val", "save_path_test", "save_path_train_dense_samples",
                     "save_path_val_ndcg", "save_path_train_ndcg"):
            files[name] = str(folder / f"{name}.json")
        preprocess(files, MAX_SEQ_LEN, str(folder / "vocab.txt"))
        return files

    def toy_fp16(self, row: Row) -> None:
        folder = self.bench.folder / "toy"
        files = self._toy_data(folder)
        iterations = self.sizes.toy_iterations
        options = parse_options([
            "-config", str(REPO_ROOT / "config/presets/toy.yml"), "-vocab", str(folder / "vocab.txt"),
            "-visdial_image_feats", str(folder / "visdial_img_feat.lmdb"),
            "-visdial_processed_train", files["save_path_train"], "-visdial_tot_rounds", "2",
            "-model_config", str(folder / "model_config.json"), "-precision", "fp16",
            "-batch_size", str(self.sizes.toy_batch_size),
            "-max_iterations", str(iterations), "-total_steps", str(iterations), "-warmup_steps", str(iterations // 6),
            "-log_every", "1", "-num_workers", str(0 if self.smoke else self.sizes.workers), "-val_every", "-1",
            "-save_path", str(folder / "runs"), "-save_name", "fp16"], TrainOptions)
        context = DistributedContext(0, 1, 0, self.device)
        torch.manual_seed(options.seed)
        model = build_model(options.model_config).to(self.device)
        run_folder = RunFolder(Path(options.save_path) / options.save_name)
        run_folder.path.mkdir(parents=True)
        state = RunState.start(model, options, "fp16")
        state.grad_scaler = torch.amp.GradScaler(self.device.type, init_scale=self.sizes.fp16_initial_scale)
        trainer = Trainer(options, context, run_folder, state, build_training_data(options, context), model,
                          TrainingLogger(run_folder.path), "fp16")
        with open(run_folder.path / "train.log", "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            exit_code = trainer.run()

        records = [json.loads(line) for line in (run_folder.path / "metrics.jsonl").read_text().splitlines()]
        losses = [record["loss"] for record in records if record["event"] == "train"]
        overflows = [record["iteration"] for record in records if record["event"] == "overflow_step"]
        window = max(1, len(losses) // 10)
        first, last = statistics.fmean(losses[:window]), statistics.fmean(losses[-window:])
        finite = all(math.isfinite(loss) for loss in losses)
        checks = {"every iteration ran": exit_code == 0 and len(losses) == iterations == state.progress.iteration,
                  "every loss finite": finite, "the loss fell": finite and last < first,
                  "overflowed steps were skipped and reported": bool(overflows) and
                  state.progress.overflow_steps == len(overflows)}
        scale = state.grad_scaler.get_scale()
        shown = ", ".join(map(str, overflows[:3])) + (", ..." if len(overflows) > 3 else "")
        row.status = "ok" if all(checks.values()) else "failed"
        row.figure, row.unit = last, "final loss"
        row.note = (f"{iterations} iterations, loss {first:.3f} -> {last:.3f} (mean of the first and last {window}); "
                    f"{len(overflows)} steps skipped for fp16 overflow (iterations {shown or 'none'}), loss scale "
                    f"2^{math.log2(self.sizes.fp16_initial_scale):.0f} -> 2^{math.log2(scale):.0f}; "
                    + ("; ".join(f"FAILED: {name}" for name, passed in checks.items() if not passed) or
                       "every check passed")
                    + ("; CPU autocast fp16, CPU GradScaler" if self.smoke else ""))
        row.details = {"losses": losses, "overflow_iterations": overflows, "final_loss_scale": scale, "checks": checks}

    # torch.compile ------------------------------------------------------------------------------

    def compiled_eval(self, row: Row) -> None:
        model = self._eval_model(self._compile_config()) if self.sizes.compile_one_layer_each else self.eval_model
        batch = self._collated(self.sizes.compile_dialogs)
        budget = resolve_tokens_per_batch(0, self.device)
        torch._dynamo.reset()
        compiled = torch.compile(model, dynamic=True, backend=self.sizes.compile_backend)  # as evaluate.py
        eager = [timed(lambda: score_sequences(model, batch, budget, "fp32"), self.device) for _ in range(2)][-1]
        first = timed(lambda: score_sequences(compiled, batch, budget, "fp32"), self.device)
        again = timed(lambda: score_sequences(compiled, batch, budget, "fp32"), self.device)
        shape = (self.sizes.compile_dialogs, -1, self.sizes.eval_options)
        moved = int((scores_to_ranks(again.result.view(shape)) != scores_to_ranks(eager.result.view(shape))).sum())
        row.status = "ok" if moved == 0 else "failed"
        row.figure, row.unit = eager.seconds / again.seconds, "x eager fp32"
        row.note = (f"{len(batch['tokens'])} sequences; compiling {first.seconds - again.seconds:.0f} s (backend "
                    f"{self.sizes.compile_backend}, dynamic shapes"
                    + (", one layer of each kind" if self.sizes.compile_one_layer_each else "")
                    + f"); {moved} ranks differ from eager fp32, max |d score| "
                      f"{(again.result - eager.result).abs().max():.1e}")
        row.details = {"ranks_moved": moved}


def run_rows(bench: Benchmark) -> None:
    """Every row, the most important first (what is left out when time runs short comes last)."""
    rows = Rows(bench)
    bench.row(f"eval {rows.precision}", 20, rows.evaluation(rows.precision))
    bench.row("eval fp32", 20, rows.evaluation("fp32"))
    bench.row("eval reference", 15, rows.reference)
    for tokens in bench.sizes.budgets:
        bench.row(f"eval budget {tokens}", 5, rows.budget(tokens))
    bench.row("input eval", 10, rows.input_eval)
    for precision in dict.fromkeys(("fp32", rows.precision, "fp16")):
        bench.row(f"train {precision}", 15, rows.training(precision))
    bench.row("input train", 10, rows.input_train)
    for chunk in bench.sizes.dense_chunks:
        bench.row(f"dense chunk {chunk}", 10, rows.dense(chunk))
    bench.row("fp16 toy run", 45, rows.toy_fp16)
    bench.row("eval compiled", 60, rows.compiled_eval)
    bench.row(f"train {rows.precision} compiled", 120, rows.training(rows.precision, compiled=True))


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("-out", "--out", default="", help="JSON file of the rows, written after each row")
    parser.add_argument("-resume", "--resume", action="store_true",
                        help="keep the rows of -out that are ok, run the others")
    parser.add_argument("--smoke", action="store_true", help="every row on the CPU with a tiny model")
    parser.add_argument("--model_config", default="",
                        help="model config (default: the paper's; with --smoke config/toy_model.json)")
    parser.add_argument("--time_limit", type=float, default=0,
                        help=f"seconds for all rows (default {GPU_SIZES.time_limit_s:.0f}; "
                             f"--smoke {SMOKE_SIZES.time_limit_s:.0f})")
    parser.add_argument("--workdir", default="", help="folder for the generated data (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        raise UserError(f"no CUDA GPU here (torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}): "
                        "this benchmark needs one; --smoke runs every row on the CPU with a tiny model")
    device = torch.device("cpu") if args.smoke else torch.device("cuda", 0)
    if args.smoke:
        torch.set_num_threads(1)  # a check that every row runs: one thread is steadiest on a busy machine
    sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
    if args.time_limit:
        sizes = dataclasses.replace(sizes, time_limit_s=args.time_limit)
    args.model_config = Path(args.model_config or (SMOKE_CONFIG if args.smoke else PAPER_CONFIG))
    if not args.model_config.is_file():
        raise UserError(f"{args.model_config}: model config not found (--model_config)")
    with contextlib.ExitStack() as stack:
        folder = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bench = Benchmark(args, device, sizes, folder)
        print(describe_run(bench.header) + f" | time limit {sizes.time_limit_s:.0f} s", flush=True)
        run_rows(bench)
        exit_code = bench.finish()
    sys.exit(exit_code)


if __name__ == "__main__":
    run_cli(main)
