"""The GPU benchmark: the paper-size model on one GPU, every figure in one command of at most 8 minutes.

    python scripts/benchmark_gpu.py -out gpu_benchmark.json     # on a CUDA GPU (rows within --time_limit 420 s)
    python scripts/benchmark_gpu.py --rows "eval bf16" "train bf16" -out some.json   # only these rows
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
                        on the same batch; fails when a score differs by more than 1e-5 or a rank moves
                        beyond near-ties
  train bf16 compiled   base training through torch.compile (train.py -compile), against eager

Every throughput figure is a steady state (utils/benchmarking/measure.steady_state): a first pass
over every shape the row meets, then the median rate of 3 synchronised windows of at least 3 s each
(whole passes; --smoke: one pass a window); the first pass's excess over that rate is the row's
one-time `warm-up s` (first shapes and their attention plans, the allocator, DataLoader workers,
compiling). A run pays a warm-up for each batch shape it meets: the val and test projections add,
to the sequences at the steady rate, the warm-up a shape cost in the row times the batch shapes of
the whole synthetic val (VisDial val's 2,064 dialogs on the GPU; counted by planning). Input rows
time a stream of batches after the workers have started. Compiled against eager is judged up to
near-ties: the largest score difference and the ranks that differ beyond it.

Each row has a figure, the warm-up, the peak memory (the GPU allocator's; on the CPU the process's resident
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
import itertools
import json
import math
import signal
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset, VisdialDenseDataset
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import load_tokenizer
from models import build_model
from options import TrainOptions, parse_options
from utils.benchmarking.agreement import rank_agreement
from utils.benchmarking.measure import (SteadyState, count_flops, cpu_seconds, describe_device, memory_bytes,
                                        peak_memory_bytes, reset_peak_memory, steady_state)
from utils.benchmarking.reference import score_padded_reference_style, spread_weights
from utils.benchmarking.synthetic import write_synthetic_visdial
from utils.benchmarking.toy import make_toy_visdial
from utils.distributed import DistributedContext
from utils.errors import ArgumentParser, UserError, run_cli
from utils.evaluation.metrics import NEAR_TIE
from utils.evaluation.scoring import length_batches, resolve_tokens_per_batch, score_dataset, score_sequences
from utils.files import write_json
from utils.input_files import is_json_number, read_json
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
VAL_DIALOGS = 2064          # VisDial v1.0 val
VAL_SEQUENCES = VAL_DIALOGS * 10 * 100
TEST_SEQUENCES = 8000 * 100
TRAIN_IMAGES = 123_287       # VisDial v1.0 train dialogs
DENSE_ROUNDS = 2_000         # VisDial v1.0 train rounds with dense annotations
MAX_SEQ_LEN = 256
SEQUENCE_FIELDS = ("tokens", "segments", "attention_mask", "image_index")
GIB = 2 ** 30
COMPILED_ATOL = 1e-5  # compiled fp32 scores may differ from eager by this much (the conformance tolerance)


@dataclass(frozen=True)
class Sizes:
    """How much each row does, and its limits: the GPU run's, or the smoke run's."""
    synthetic_dialogs: int      # synthetic VisDial dialogs (one image each; GPU: as many as VisDial val)
    eval_options: int           # options per round of the eval rows (VisDial: 100)
    eval_dialogs: int           # dialogs of the eval bf16 row (fp32: eval_fp32_dialogs)
    eval_fp32_dialogs: int
    reference_sequences: int
    reference_chunk: int        # sequences per forward pass of the reference's way
    budgets: tuple
    workers: int                # DataLoader workers
    input_train_images: int     # train items of an epoch of the input train row (the synthetic dialogs repeated)
    train_batch_size: int       # sequences a step (the paper's: 80)
    dense_chunks: tuple
    window_s: float             # each throughput window lasts at least this long (whole passes)
    repeats: int                # windows per throughput figure (the figure: their median)
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
    synthetic_dialogs=VAL_DIALOGS, eval_options=100, eval_dialogs=96, eval_fp32_dialogs=8, reference_sequences=1000,
    reference_chunk=200, budgets=(16384, 32768, 65536, 131072), workers=8, input_train_images=6000,
    train_batch_size=80, dense_chunks=(100, 50, 25, 10), window_s=3.0, repeats=3, toy_train_dialogs=600,
    toy_batch_size=64,
    toy_iterations=300, fp16_initial_scale=2.0 ** 32, compile_dialogs=2, compile_backend="inductor",
    compile_one_layer_each=False, estimate_scale=1.0, time_limit_s=420, row_limit_s=240)
SMOKE_SIZES = Sizes(
    synthetic_dialogs=8, eval_options=4, eval_dialogs=1, eval_fp32_dialogs=1, reference_sequences=10,
    reference_chunk=10, budgets=(1024,), workers=1, input_train_images=16, train_batch_size=4,
    dense_chunks=(100, 50, 25, 10), window_s=0.0, repeats=3, toy_train_dialogs=40, toy_batch_size=4, toy_iterations=24,
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
    warm_up_s: Optional[float] = None
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


ROW_STATUSES = ("ok", "failed", "skipped", "not run")
ROW_VALUES = {  # Row field -> (is this value of its type, what it must be)
    "name": (lambda value: isinstance(value, str), "a string"),
    "status": (lambda value: value in ROW_STATUSES, f"one of {', '.join(ROW_STATUSES)}"),
    "figure": (lambda value: value is None or is_json_number(value), "a finite number or null"),
    "unit": (lambda value: isinstance(value, str), "a string"),
    "warm_up_s": (lambda value: value is None or is_json_number(value) and value >= 0, "a number >= 0 or null"),
    "peak_memory_gib": (lambda value: value is None or is_json_number(value) and value >= 0, "a number >= 0 or null"),
    "projection": (lambda value: isinstance(value, str), "a string"),
    "note": (lambda value: isinstance(value, str), "a string"),
    "seconds": (lambda value: is_json_number(value) and value >= 0, "a number >= 0"),
    "cpu_seconds": (lambda value: is_json_number(value) and value >= 0, "a number >= 0"),
    "details": (lambda value: isinstance(value, dict), "an object"),
}


class RowTimeout(Exception):
    """A row ran past its own time limit."""


def _duration(work: float, rate: float, warm_up_s: float = 0.0) -> str:
    """The time of `work` units at `rate` a second after a one-time `warm_up_s`, in minutes or hours."""
    seconds = warm_up_s + work / rate
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _sequence_lengths(items: list) -> torch.Tensor:
    """The collate function of the shape count: the real length of every sequence of a chunk."""
    return collate_dialog_batch(items)["attention_mask"].sum(dim=1)


def format_row(row: Row) -> str:
    figure = "-" if row.figure is None else f"{row.figure:,.4g} {row.unit}"
    warm_up = "-" if row.warm_up_s is None else f"{row.warm_up_s:.1f}"
    memory = "-" if row.peak_memory_gib is None else f"{row.peak_memory_gib:.2f} GiB"
    text = "; ".join(part for part in (row.projection, row.note) if part)
    return (f"{row.name:<20} {figure:>20} {warm_up:>10} {memory:>10} {row.seconds:>6.1f} {row.status:>7}  "
            f"{text}")


def format_table(header: dict, rows: list[Row]) -> str:
    columns = (f"{'row':<20} {'figure':>20} {'warm-up s':>10} {'peak mem':>10} {'s':>6} {'status':>7}  "
               "projection; note")
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
        start, start_cpu = time.perf_counter(), cpu_seconds()
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
        row.cpu_seconds = round(cpu_seconds() - start_cpu, 1)
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

    def __init__(self, bench: Benchmark, precision: str):
        """precision: the mixed precision of the device (bf16, or fp16 where bf16 is missing)."""
        self.bench, self.device, self.sizes, self.smoke = bench, bench.device, bench.sizes, bench.args.smoke
        self.model_config = bench.args.model_config
        self.precision = precision
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
        self.shape_counts: dict[tuple[int, int], int] = {}

    def _eval_model(self, config: Path) -> torch.nn.Module:
        """A model whose scores spread out as a trained one's (so that ranks are meaningful), in eval mode."""
        model = build_model(config)
        spread_weights(model, torch.Generator().manual_seed(0))
        return model.to(self.device).eval()

    def _gib(self) -> float:
        return round(peak_memory_bytes(self.device) / GIB, 2)

    def _collated(self, dialogs: int) -> dict:
        """The first `dialogs` val dialogs collated as one batch."""
        return collate_dialog_batch([self.val[index] for index in range(dialogs)])

    def _steady(self, function: Callable[[], float], row: Row, host_only: bool = False) -> SteadyState:
        """The steady state of `function` (measure.steady_state with this run's windows; `host_only`:
        work of the CPU alone, nothing to synchronise); the row's warm-up."""
        device = torch.device("cpu") if host_only else self.device
        steady = steady_state(function, device, self.sizes.window_s, self.sizes.repeats)
        row.warm_up_s = round(steady.warm_up_s, 2)
        row.details["rates"] = steady.rates
        return steady

    def _batch_shapes(self, dialogs: int, tokens: int) -> int:
        """Distinct (sequences, length) shapes of the forward passes that score_dataset makes over
        the first `dialogs` val dialogs (its chunks of 16 dialogs; planned with the workers, not run)."""
        if (dialogs, tokens) not in self.shape_counts:
            loader = DataLoader(Subset(self.val, range(dialogs)), batch_size=16, num_workers=self.sizes.workers,
                                collate_fn=_sequence_lengths)
            self.shape_counts[dialogs, tokens] = len({(len(indices), int(lengths[indices].max())) for lengths in loader
                                                      for indices in length_batches(lengths, tokens)})
        return self.shape_counts[dialogs, tokens]

    # evaluation ---------------------------------------------------------------------------------

    def evaluation(self, precision: str) -> Callable[[Row], None]:
        def measure(row: Row) -> None:
            dialogs = Subset(self.val, range(self.sizes.eval_fp32_dialogs if precision == "fp32"
                                             else self.sizes.eval_dialogs))

            def score() -> int:
                return score_dataset(self.eval_model, dialogs, collate_dialog_batch, precision=precision,
                                     num_workers=self.sizes.workers, progress=False).scores.numel()

            steady = self._steady(score, row)
            self.figures[f"eval {precision}"] = steady.rate
            tokens = resolve_tokens_per_batch(0, self.device)
            # each new batch shape costs a first call (attention plans): the synthetic val's shapes at
            # the warm-up a shape cost here (all of the warm-up counted per shape: an upper bound)
            met, val_shapes = self._batch_shapes(len(dialogs), tokens), self._batch_shapes(len(self.val), tokens)
            val_warm_up = steady.warm_up_s / met * val_shapes
            row.figure, row.unit, row.peak_memory_gib = steady.rate, "seq/s", self._gib()
            row.projection = (f"val {_duration(VAL_SEQUENCES, steady.rate, val_warm_up)} with a warm-up of "
                              f"{val_warm_up:.0f} s ({val_shapes} batch shapes in {len(self.val):,} synthetic dialogs, "
                              f"{steady.warm_up_s / met:.2f} s a shape), test "
                              f"{_duration(TEST_SEQUENCES, steady.rate, val_warm_up)}")
            row.note = (f"{steady.first.result:,} sequences in {met} batch shapes, {tokens} tokens a batch, "
                        f"{self.sizes.workers} workers (each pass starts them, as evaluate.py does once); "
                        f"{steady.describe(self.sizes.window_s)}" + (", TF32 off" if precision == "fp32" else ""))
            row.details.update(batch_shapes=met, val_batch_shapes=val_shapes, val_warm_up_s=round(val_warm_up, 1))
        return measure

    def reference(self, row: Row) -> None:
        count = self.sizes.reference_sequences
        batch = {name: value[:count] if name in SEQUENCE_FIELDS else value for name, value in self._collated(1).items()}
        scores = {}

        def score() -> int:
            scores["reference"] = score_padded_reference_style(self.eval_model, batch, MAX_SEQ_LEN,
                                                               self.sizes.reference_chunk)
            return count

        steady = self._steady(score, row)
        ours = score_sequences(self.eval_model, batch, resolve_tokens_per_batch(0, self.device), "fp32")
        agreement = rank_agreement(ours, scores["reference"])
        ratios = [f"ours {name.split()[1]} {self.figures[name] / steady.rate:.1f}x" for name in
                  (f"eval {self.precision}", "eval fp32") if name in self.figures]
        row.figure, row.unit, row.peak_memory_gib = steady.rate, "seq/s", self._gib()
        row.projection = f"val {_duration(VAL_SEQUENCES, steady.rate, steady.warm_up_s)}"
        row.note = "; ".join(ratios + [f"ours fp32 on the same {count} sequences: {agreement.describe()}",
                                       steady.describe(self.sizes.window_s)])
        row.details.update(ranks_moved=agreement.ranks_moved, beyond_near_ties=agreement.beyond_near_ties)

    def budget(self, tokens: int) -> Callable[[Row], None]:
        def measure(row: Row) -> None:
            dialogs = min(16, self.sizes.eval_dialogs)
            batch = self._collated(dialogs)

            def score() -> int:
                return len(score_sequences(self.eval_model, batch, tokens, self.precision))

            steady = self._steady(score, row)
            row.figure, row.unit, row.peak_memory_gib = steady.rate, "seq/s", self._gib()
            row.note = (f"{self.precision}, one chunk of {len(batch['tokens'])} sequences in "
                        f"{self._batch_shapes(dialogs, tokens)} batch shapes; {steady.describe(self.sizes.window_s)}")
        return measure

    def input_eval(self, row: Row) -> None:
        dialogs = self.sizes.eval_dialogs
        loader = DataLoader(Subset(self.val, range(dialogs)), batch_size=16, num_workers=self.sizes.workers,
                            collate_fn=collate_dialog_batch, pin_memory=self.device.type == "cuda",
                            persistent_workers=self.sizes.workers > 0)
        steady = self._steady(lambda: sum(batch["tokens"].shape[0] for batch in loader), row, host_only=True)
        consumed = self.figures.get(f"eval {self.precision}")
        row.figure, row.unit = steady.rate, "seq/s"
        row.note = (f"{self.sizes.workers} workers build val items, collate and pin (persistent: started once, in "
                    f"the warm-up); {steady.describe(self.sizes.window_s)}"
                    + (f"; {steady.rate / consumed:.1f}x what eval {self.precision} consumes" if consumed else ""))

    # training -----------------------------------------------------------------------------------

    def _train_dataset(self) -> VisdialDataset:
        """The synthetic train split as base training reads it (built once)."""
        options = self.train_options
        if self.train_dataset is None:
            self.train_dataset = VisdialDataset(
                "train", self.data.train, self.features, self.tokenizer, max_seq_len=MAX_SEQ_LEN,
                mask_prob=options.mask_prob, sequences_per_image=options.sequences_per_image,
                num_negative_samples=options.num_negative_samples)
        return self.train_dataset

    def _train_data(self, workers: int, dataset: Dataset) -> TrainingData:
        """Base-training batches of the paper's shape over `dataset`, through the loader train.py uses."""
        options = self.train_options
        images = options.batch_size // options.sequences_per_image
        return TrainingData(dataset, self.data.train, images, True, options.seed, workers,
                            DistributedContext(0, 1, 0, self.device), None)

    def _batches(self, count: int) -> list[dict]:
        """`count` base-training batches (read once, then reused by every training row)."""
        data, epoch = self._train_data(0, self._train_dataset()), 0
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
            batches, overflows, iterations = self._batches(1 if self.smoke else 4), [], itertools.count()

            def step(batch: dict) -> None:
                iteration = next(iterations)
                base_step(train_model, batch, settings)
                if not state.step_optimizer(iteration, options.grad_clip):
                    overflows.append(iteration)

            def steps() -> int:  # one pass over the batches: every length the row meets
                for batch in batches:
                    step(batch)
                return len(batches)

            steady = self._steady(steps, row)  # the warm-up of a compiled model is its compiling
            flops = None if compiled else count_flops(lambda: step(batches[0]))
            name = f"train {precision}" + (" compiled" if compiled else "")
            self.figures[name] = steady.rate
            row.figure, row.unit, row.peak_memory_gib = options.batch_size * steady.rate, "seq/s", self._gib()
            epoch = TRAIN_IMAGES * options.sequences_per_image
            row.projection = (f"an epoch of VisDial train ({epoch:,} sequences): "
                              f"{_duration(epoch, row.figure, steady.warm_up_s)}")
            notes = [f"{steady.rate:.2f} steps/s of {options.batch_size} sequences, "
                     f"{steady.describe(self.sizes.window_s)} (steps/s)"]
            if flops:
                notes.append(f"{flops / 1e12:.2f} TFLOP a step, {flops * steady.rate / 1e12:.1f} TFLOP/s")
                row.details["flops_per_step"] = flops
            if compiled:
                eager = self.figures.get(f"train {precision}")
                notes.append(f"backend {self.sizes.compile_backend}"
                             + (", one layer of each kind" if self.sizes.compile_one_layer_each else "")
                             + (f", {steady.rate / eager:.2f}x eager" if eager and not self.smoke else ""))
            if precision == "fp16":
                notes.append(f"{len(overflows)} steps skipped by the GradScaler for overflow")
            if self.smoke and precision != "fp32":
                notes.append(f"CPU autocast {precision}")
            row.note = "; ".join(notes)
        return measure

    def input_train(self, row: Row) -> None:
        dataset = self._train_dataset()
        # the synthetic dialogs repeated into a long epoch: the stream restarts its workers once an epoch, as training
        repeated = Subset(dataset, [index % len(dataset) for index in range(self.sizes.input_train_images)])
        data = self._train_data(self.sizes.workers, repeated)
        stream = (wrapped["batch"] for epoch in itertools.count() for wrapped in data.epoch_batches(epoch))
        per_call = max(1, data.batches_per_epoch // 10)
        steady = self._steady(lambda: sum(len(next(stream)["image_id"]) for _ in range(per_call)), row,
                              host_only=True)
        steps = self.figures.get(f"train {self.precision}")
        row.figure, row.unit = steady.rate, "images/s"
        row.note = (f"{self.sizes.workers} workers, {data.batch_images} images ({self.train_options.batch_size} "
                    f"sequences) a batch, epochs of {data.batches_per_epoch} batches; worker start-up in the warm-up; "
                    f"{steady.describe(self.sizes.window_s)}")
        if steps:
            row.note += (f"; train {self.precision} needs {steps * data.batch_images:,.0f} images/s "
                         f"({steps:.2f} steps/s): {steady.rate / (steps * data.batch_images):.1f}x that")

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

            def iteration() -> int:
                dense_step(model, batch, settings)
                return 1

            steady = self._steady(iteration, row)
            peak_gib = self._gib()
            baseline = memory_bytes(self.device)  # the weights and the gradients of the steps before
            reset_peak_memory(self.device)
            iteration()
            step_gib = (peak_memory_bytes(self.device) - baseline) / GIB
            seconds = 1 / steady.rate
            row.figure, row.unit, row.peak_memory_gib = seconds, "s/iteration", peak_gib
            row.projection = f"{DENSE_ROUNDS:,} annotated rounds: {seconds * DENSE_ROUNDS / 60:.1f} min an epoch"
            row.note = (f"{precision}, {len(batch['tokens'])} options of {batch['tokens'].shape[1]} tokens; the step "
                        f"itself {step_gib:.2f} GiB above the weights and gradients"
                        + ("" if self.device.type == "cuda" else " (CPU resident set: blurred by the allocator)")
                        + f"; {steady.describe(self.sizes.window_s)} (iterations/s)")
            row.details["step_memory_gib"] = round(step_gib, 3)
        return measure

    # fp16 on toy data ---------------------------------------------------------------------------

    def toy_fp16(self, row: Row) -> None:
        folder = self.bench.folder / "toy"
        data_flags = make_toy_visdial(folder, self.sizes.toy_train_dialogs, val_dialogs=4, test_dialogs=2)
        iterations = self.sizes.toy_iterations
        options = parse_options([
            "-config", str(REPO_ROOT / "config/presets/toy.yml"), *data_flags, "-precision", "fp16",
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
                          TrainingLogger(run_folder.path), "fp16", "fp16")
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
        scores = {}

        def scorer(name: str, scored_model: torch.nn.Module) -> Callable[[], int]:
            def score() -> int:
                scores[name] = score_sequences(scored_model, batch, budget, "fp32")
                return len(scores[name])
            return score

        eager = steady_state(scorer("eager", model), self.device, self.sizes.window_s, self.sizes.repeats)
        steady = self._steady(scorer("compiled", compiled), row)  # its warm-up: compiling
        shape = (self.sizes.compile_dialogs, -1, self.sizes.eval_options)
        difference = float((scores["compiled"] - scores["eager"]).abs().max())
        # two scorings that differ by d may swap options whose eager scores lie within d: near-ties
        agreement = rank_agreement(scores["compiled"].view(shape), scores["eager"].view(shape),
                                   tolerance=max(NEAR_TIE, difference))
        row.status = "ok" if difference <= COMPILED_ATOL and agreement.beyond_near_ties == 0 else "failed"
        row.figure, row.unit = steady.rate / eager.rate, "x eager fp32"
        row.note = (f"{len(batch['tokens'])} sequences; backend {self.sizes.compile_backend}, dynamic shapes"
                    + (", one layer of each kind" if self.sizes.compile_one_layer_each else "")
                    + f"; against eager fp32: {agreement.describe()} (fails above {COMPILED_ATOL:g} or beyond "
                      f"near-ties); {steady.describe(self.sizes.window_s)}")
        row.details.update(ranks_moved=agreement.ranks_moved, beyond_near_ties=agreement.beyond_near_ties,
                           max_score_difference=difference)


def run_rows(bench: Benchmark) -> None:
    """Every row (or those of --rows), the most important first (what is left out when time runs short
    comes last). The estimates are guessed seconds on an H200, not measured. The names of --rows are
    checked before the set-up (the synthetic data, the model on the device)."""
    mixed = "bf16" if bench.device.type != "cuda" or torch.cuda.is_bf16_supported() else "fp16"
    plan = [(f"eval {mixed}", 70, lambda rows: rows.evaluation(mixed)),
            ("eval fp32", 30, lambda rows: rows.evaluation("fp32")),
            ("eval reference", 15, lambda rows: rows.reference)]
    plan += [(f"eval budget {tokens}", 20, lambda rows, tokens=tokens: rows.budget(tokens))
             for tokens in bench.sizes.budgets]
    plan.append(("input eval", 10, lambda rows: rows.input_eval))
    plan += [(f"train {precision}", 20, lambda rows, precision=precision: rows.training(precision))
             for precision in dict.fromkeys(("fp32", mixed, "fp16"))]
    plan.append(("input train", 15, lambda rows: rows.input_train))
    plan += [(f"dense chunk {chunk}", 15, lambda rows, chunk=chunk: rows.dense(chunk))
             for chunk in bench.sizes.dense_chunks]
    plan += [("fp16 toy run", 45, lambda rows: rows.toy_fp16), ("eval compiled", 90, lambda rows: rows.compiled_eval),
             (f"train {mixed} compiled", 150, lambda rows: rows.training(mixed, compiled=True))]
    names = [name for name, _, _ in plan]
    unknown = [name for name in bench.args.rows if name not in names]
    if unknown:
        raise UserError(f"--rows: no row named {', '.join(map(repr, unknown))} (the rows: {', '.join(names)})")
    rows = Rows(bench, mixed)
    for name, estimate_s, measure in plan:
        if not bench.args.rows or name in bench.args.rows:
            bench.row(name, estimate_s, measure(rows))


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
    parser.add_argument("--rows", nargs="+", default=[], metavar="NAME",
                        help='only these rows, by their names (e.g. "eval bf16" "dense chunk 100")')
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
