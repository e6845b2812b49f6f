"""The benchmark: the paper's model on this machine's GPU, or its CPU, every figure in one command.

    python scripts/benchmark.py -out benchmark.json                 # every row (the CPU without a CUDA GPU)
    python scripts/benchmark.py --rows "eval fp32" "eval reference"  # only these rows
    python scripts/benchmark.py --smoke -out smoke.json             # every row on the CPU, a tiny model

Rows, in order (docs/performance.md): matmul <precision>, eval <precision>, eval reference, eval budget <N>, input eval,
train <precision>, input train, dense chunk <C>, dense one graph, eval compiled, train <precision> compiled.
Each is a steady state (the first pass apart, then the median of --repeats windows), printed and written to
-out as it finishes; those --time_limit cuts are `not run`; exit code 1 when one failed.
"""
import argparse
import dataclasses
import gc
import itertools
import json
import os
import signal
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Subset

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset, VisdialDenseDataset
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import load_tokenizer
from dataloader.visdial_json import NUM_ANSWER_OPTIONS
from models import build_model
from models.losses import dense_loss
from options import CPU_COUNT, TrainOptions, parse_options
from utils.benchmarking.agreement import rank_agreement
from utils.benchmarking.measure import (SteadyState, count_flops, describe_device, memory_bytes, peak_memory_bytes,
                                        reset_peak_memory, steady_state)
from utils.benchmarking.reference import score_padded_reference_style, spread_weights
from utils.benchmarking.synthetic import write_synthetic_visdial
from utils.distributed import DistributedContext
from utils.errors import ArgumentParser, UserError, bounded, run_cli
from utils.evaluation.metrics import NEAR_TIE
from utils.evaluation.scoring import (autocast, length_batches, resolve_tokens_per_batch, score_dataset,
                                      score_sequences)
from utils.outputs import Output, check_outputs, write_json
from utils.training.checkpoints import git_commit
from utils.training.data import TrainingData
from utils.training.run_state import RunState
from utils.training.steps import StepSettings, score_chunk, base_step, dense_step

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG, SMOKE_CONFIG = REPO_ROOT / "config/bert_base_6layer_6conect.json", REPO_ROOT / "config/toy_model.json"
VAL_DIALOGS = 2064                                      # VisDial v1.0 val: 10 rounds x 100 options each
VAL_SEQUENCES, TEST_SEQUENCES = VAL_DIALOGS * 10 * 100, 8000 * 100
TRAIN_IMAGES, DENSE_ROUNDS = 123_287, 2_000             # VisDial v1.0 train dialogs, and its dense-annotated rounds
MAX_SEQ_LEN = 256
GIB = 2 ** 30
COMPILED_ATOL = 1e-5  # compiled fp32 scores may differ from eager by this much (the conformance tolerance)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much the rows do on a GPU, on the CPU, or in the smoke run (the flags of the same names)."""
    dialogs: int              # val dialogs a pass of eval <mixed precision>
    fp32_dialogs: int         # ... of eval fp32 (--dialogs sets both)
    options: int              # answer options a round (VisDial: 100)
    reference_chunk: int      # sequences a forward pass of the reference's way
    budgets: tuple            # token budgets of the eval budget rows
    workers: int              # DataLoader workers (as evaluate.py's -num_workers)
    batch_size: int           # training sequences a step (the paper's: 80)
    dense_chunks: tuple
    repeats: int              # windows a figure (the figure: their median)
    time_limit: float         # seconds for every row
    window_s: float           # each window lasts at least this long (whole passes)
    synthetic_dialogs: int    # synthetic dialogs written (GPU: VisDial val's, for the val projection)
    train_batches: int        # batches of different lengths a training pass
    input_images: int         # train images an epoch of the input train row
    matmul_size: int


GPU = Sizes(dialogs=96, fp32_dialogs=8, options=100, reference_chunk=200, budgets=(16384, 32768, 65536, 131072),
            workers=min(8, CPU_COUNT), batch_size=80, dense_chunks=(100, 50, 25, 10), repeats=3, time_limit=420,
            window_s=3.0, synthetic_dialogs=VAL_DIALOGS, train_batches=4, input_images=6000, matmul_size=8192)
CPU = dataclasses.replace(GPU, dialogs=1, fp32_dialogs=1, options=4, reference_chunk=20,
                          budgets=(1024, 2048, 4096, 8192), batch_size=8, dense_chunks=(100, 10), time_limit=7200,
                          window_s=0.0, synthetic_dialogs=16, train_batches=1, input_images=600, matmul_size=2048)
SMOKE = dataclasses.replace(CPU, reference_chunk=10, budgets=(1024,), workers=1, batch_size=4, time_limit=300,
                            synthetic_dialogs=8, input_images=16, matmul_size=256)


@dataclasses.dataclass
class Row:
    """One measurement. status: ok | failed | not run (--time_limit reached before or while it ran)."""
    name: str
    status: str = "ok"
    figure: Optional[float] = None
    unit: str = ""
    warm_up_s: Optional[float] = None
    peak_memory_gib: Optional[float] = None
    note: str = ""
    seconds: float = 0.0
    details: dict = dataclasses.field(default_factory=dict)


def format_row(row: Row) -> str:
    figure = "-" if row.figure is None else f"{row.figure:,.4g} {row.unit}"
    warm_up = "-" if row.warm_up_s is None else f"{row.warm_up_s:.1f}"
    memory = "-" if row.peak_memory_gib is None else f"{row.peak_memory_gib:.2f} GiB"
    return f"{row.name:<20} {figure:>20} {warm_up:>9} {memory:>10} {row.seconds:>6.1f} {row.status:>7}  {row.note}"


def _duration(work: float, rate: float, warm_up_s: float = 0.0) -> str:
    """The time of `work` units at `rate` a second after a one-time `warm_up_s`."""
    seconds = warm_up_s + work / rate
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:,.1f} h"


def _sequence_lengths(items: list) -> torch.Tensor:
    return collate_dialog_batch(items)["attention_mask"].sum(dim=1)


class Benchmark:
    """The rows' set-up (synthetic VisDial, the evaluation model); each method fills in the Row it is
    given; `done` holds the rows measured so far."""

    def __init__(self, device: torch.device, sizes: Sizes, model_config: Path, train_options: TrainOptions,
                 folder: Path, smoke: bool, feature_format: str):
        self.device, self.sizes, self.model_config, self.folder, self.smoke = device, sizes, model_config, folder, smoke
        self.mixed = "bf16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "fp16"
        self.fast = self.mixed if device.type == "cuda" else "fp32"  # the budget and dense rows (fp32 on a CPU)
        self.done: dict[str, Row] = {}
        self.data = write_synthetic_visdial(folder / "synthetic", sizes.synthetic_dialogs, 
                                            feature_format=feature_format)
        self.features = open_feature_store(self.data.features)
        self.tokenizer = load_tokenizer(str(self.data.vocab))
        self.val = VisdialDataset("val", self.data.val, self.features, self.tokenizer, self.data.val_dense,
                                  max_seq_len=MAX_SEQ_LEN, num_options=sizes.options)
        self.eval_model = self._eval_model(model_config)
        self.train_options = train_options
        self.train_dataset = VisdialDataset(
            "train", self.data.train, self.features, self.tokenizer, max_seq_len=MAX_SEQ_LEN,
            mask_prob=self.train_options.mask_prob, sequences_per_image=self.train_options.sequences_per_image,
            num_negative_samples=self.train_options.num_negative_samples)
        self.train_batches: list[dict] = []
        self.shape_counts: dict[tuple[int, int], int] = {}

    def _eval_model(self, config: Path) -> torch.nn.Module:
        """A model whose scores spread out as a trained one's (so that ranks mean something), in eval mode."""
        model = build_model(config)
        spread_weights(model, torch.Generator().manual_seed(0))
        return model.to(self.device).eval()

    def _ok(self, name: str) -> Optional[Row]:
        row = self.done.get(name)
        return row if row is not None and row.status == "ok" else None

    def _steady(self, function: Callable[[], float], row: Row, unit: str, host_only: bool = False) -> SteadyState:
        """The steady state of `function` into the row (`host_only`: CPU work, nothing to synchronise)."""
        steady = steady_state(function, torch.device("cpu") if host_only else self.device, self.sizes.window_s,
                              self.sizes.repeats)
        row.figure, row.unit, row.warm_up_s = steady.rate, unit, round(steady.warm_up_s, 2)
        row.details.update(rates=steady.rates, window_seconds=steady.window_seconds,
                           cpu_seconds_per_unit=steady.cpu_seconds_per_unit)
        return steady

    def _collated(self, dialogs: int) -> dict:
        return collate_dialog_batch([self.val[index] for index in range(dialogs)])

    def _batch_shapes(self, dialogs: int, tokens: int) -> int:
        """Distinct (sequences, length) shapes of score_dataset's forward passes over the first `dialogs` val
        dialogs (planned, not run)."""
        if (dialogs, tokens) not in self.shape_counts:
            loader = DataLoader(Subset(self.val, range(dialogs)), batch_size=16, num_workers=self.sizes.workers,
                                collate_fn=_sequence_lengths)
            self.shape_counts[dialogs, tokens] = len({(len(indices), int(lengths[indices].max())) for lengths in loader
                                                      for indices in length_batches(lengths, tokens)})
        return self.shape_counts[dialogs, tokens]

    def _flops_note(self, flops: float, unit: str, rate: float, precision: str) -> str:
        """`flops` a `unit` at `rate` units a second, against the matmul row of `precision`."""
        achieved, ceiling = flops * rate / 1e12, self._ok(f"matmul {precision}")
        return (f"{flops / 1e9:,.4g} GFLOP a {unit}, {achieved:.3g} TFLOP/s"
                + (f" ({achieved / ceiling.figure:.0%} of matmul {precision})" if ceiling else ""))

    def matmul(self, row: Row, precision: str) -> None:
        size = self.sizes.matmul_size
        first, second = (torch.randn(size, size, device=self.device) for _ in range(2))

        def product() -> int:  # the model's own operation: a CPU's plain bf16 `mm` takes a far slower path
            with autocast(self.device, precision):
                torch.nn.functional.linear(first, second)
            return 1

        steady = self._steady(product, row, "TFLOP/s")
        row.figure = 2 * size ** 3 * steady.rate / 1e12
        row.note = f"{size}^3 products, linear in {precision} as the model runs it; " \
                   f"{steady.describe(self.sizes.window_s)}"

    def evaluation(self, row: Row, precision: str) -> None:
        dialogs = Subset(self.val, range(self.sizes.fp32_dialogs if precision == "fp32" else self.sizes.dialogs))

        def score() -> int:
            return score_dataset(self.eval_model, dialogs, collate_dialog_batch, precision=precision,
                                 num_workers=self.sizes.workers, progress=False).scores.numel()

        steady = self._steady(score, row, "seq/s")
        flops = count_flops(score) / steady.first_work  # one more pass: the counter slows what it counts
        tokens = resolve_tokens_per_batch(0, self.device)
        # each batch shape costs a first call (attention plans): the synthetic val's shapes at the
        # warm-up a shape cost here (all of the warm-up counted per shape: an upper bound)
        met, val_shapes = self._batch_shapes(len(dialogs), tokens), self._batch_shapes(len(self.val), tokens)
        val_warm_up = steady.warm_up_s / met * val_shapes
        row.note = (f"val {_duration(VAL_SEQUENCES, steady.rate, val_warm_up)} with a warm-up of {val_warm_up:.0f} s "
                    f"({val_shapes} batch shapes in {len(self.val):,} synthetic dialogs), test "
                    f"{_duration(TEST_SEQUENCES, steady.rate, val_warm_up)}; {int(steady.first_work):,} sequences a "
                    f"pass in {met} batch shapes, {tokens} tokens a batch, workers: {self.sizes.workers}; "
                    f"{self._flops_note(flops, 'sequence', steady.rate, precision)}; "
                    f"{steady.describe(self.sizes.window_s)}")
        row.details.update(batch_shapes=met, val_batch_shapes=val_shapes, val_warm_up_s=round(val_warm_up, 1),
                           flops_per_sequence=flops)

    def reference(self, row: Row) -> None:
        batch, scores = self._collated(1), {}

        def score() -> int:
            scores["reference"] = score_padded_reference_style(self.eval_model, batch, MAX_SEQ_LEN,
                                                               self.sizes.reference_chunk)
            return len(scores["reference"])

        steady = self._steady(score, row, "seq/s")
        ours_fp32 = score_sequences(self.eval_model, batch, resolve_tokens_per_batch(0, self.device), "fp32")
        agreement = rank_agreement(ours_fp32, scores["reference"])
        ratios = [f"ours {precision} {ours.figure / steady.rate:.1f}x "
                  f"({steady.cpu_seconds_per_unit / ours.details['cpu_seconds_per_unit']:.1f}x in CPU seconds)"
                  for precision in dict.fromkeys(("fp32", self.mixed)) if (ours := self._ok(f"eval {precision}"))]
        row.note = "; ".join([f"val {_duration(VAL_SEQUENCES, steady.rate, steady.warm_up_s)}", *ratios,
                              f"ours fp32 on the same {len(ours_fp32)} sequences: {agreement.describe()}",
                              steady.describe(self.sizes.window_s)])
        row.details.update(ranks_moved=agreement.ranks_moved, beyond_near_ties=agreement.beyond_near_ties)

    def budget(self, row: Row, tokens: int) -> None:
        batch = self._collated(min(16, self.sizes.dialogs))
        steady = self._steady(lambda: len(score_sequences(self.eval_model, batch, tokens, self.fast)), row, "seq/s")
        passes = len(length_batches(batch["attention_mask"].sum(dim=1), tokens))
        row.note = (f"{self.fast}, {len(batch['tokens'])} sequences in {passes} forward passes; "
                    f"{steady.describe(self.sizes.window_s)}")

    def input_eval(self, row: Row) -> None:
        loader = DataLoader(Subset(self.val, range(self.sizes.dialogs)), batch_size=16, num_workers=self.sizes.workers,
                            collate_fn=collate_dialog_batch, pin_memory=self.device.type == "cuda",
                            persistent_workers=self.sizes.workers > 0)
        steady = self._steady(lambda: sum(batch["tokens"].shape[0] for batch in loader), row, "seq/s", host_only=True)
        consumed = self._ok(f"eval {self.mixed}")
        row.note = (f"workers: {self.sizes.workers} (started once, in the warm-up) build val items, collate, pin; "
                    f"{steady.describe(self.sizes.window_s)}"
                    + (f"; {steady.rate / consumed.figure:.1f}x what eval {self.mixed} consumes" if consumed else ""))

    def _train_data(self, workers: int, dataset) -> TrainingData:
        """Base-training batches of the paper's shape over `dataset`, through the loader train.py uses."""
        options = self.train_options
        return TrainingData(dataset, self.data.train, options.batch_size // options.sequences_per_image, True,
                            options.seed, workers, DistributedContext(0, 1, 0, self.device), None)

    def input_train(self, row: Row) -> None:
        # the synthetic dialogs repeated into a long epoch: the stream restarts its workers once an epoch, as training
        repeated = Subset(self.train_dataset, [index % len(self.train_dataset)
                                               for index in range(self.sizes.input_images)])
        data = self._train_data(self.sizes.workers, repeated)
        stream = (wrapped["batch"] for epoch in itertools.count() for wrapped in data.epoch_batches(epoch))
        per_call = max(1, data.batches_per_epoch // 10)
        steady = self._steady(lambda: sum(len(next(stream)["image_id"]) for _ in range(per_call)), row, "images/s",
                              host_only=True)
        consumed = self._ok(f"train {self.mixed}")  # sequences/s: images/s times sequences_per_image
        row.note = (f"workers: {self.sizes.workers}, {data.batch_images} images a batch, epochs of "
                    f"{data.batches_per_epoch} batches; {steady.describe(self.sizes.window_s)}"
                    + (f"; {steady.rate * self.train_options.sequences_per_image / consumed.figure:.1f}x what train "
                       f"{self.mixed} consumes" if consumed else ""))

    def _batches(self, count: int) -> list[dict]:
        """`count` base-training batches (read once, then reused by every training row)."""
        data, epoch = self._train_data(0, self.train_dataset), 0
        while len(self.train_batches) < count:
            self.train_batches += [wrapped["batch"] for wrapped in data.epoch_batches(epoch)]
            epoch += 1
        return self.train_batches[:count]

    def _compile_config(self) -> Path:
        """The compiled rows' model config: the benchmark's, or (smoke) one layer of each kind, traced faster."""
        if not self.smoke:
            return self.model_config
        config = json.loads(self.model_config.read_text())
        config.update(num_hidden_layers=1, v_num_hidden_layers=1, v_biattention_id=[0], t_biattention_id=[0])
        path = self.folder / "one_layer_each.json"
        path.write_text(json.dumps(config))
        return path

    def _compile(self, model: torch.nn.Module, **settings) -> torch.nn.Module:
        torch._dynamo.reset()  # compiled afresh, not from what an earlier row compiled
        return torch.compile(model, backend="eager" if self.smoke else "inductor", **settings)

    def training(self, row: Row, precision: str, compiled: bool = False) -> None:
        options = self.train_options
        model = build_model(self._compile_config() if compiled else self.model_config).to(self.device).train()
        train_model = self._compile(model) if compiled else model
        state = RunState.start(model, options, precision)
        settings = StepSettings(self.device, precision, options.batch_multiply, state.grad_scaler,
                                {"lm": options.lm_loss_coeff, "nsp": options.nsp_loss_coeff,
                                 "img": options.img_loss_coeff})
        batches, overflows, iterations = self._batches(self.sizes.train_batches), [], itertools.count()

        def step(batch: dict) -> None:
            iteration = next(iterations)
            base_step(train_model, batch, settings)
            if not state.step_optimizer(iteration, options.grad_clip):
                overflows.append(iteration)

        def steps() -> int:  # one pass over the batches: every length the row meets
            for batch in batches:
                step(batch)
            return len(batches)

        steady = self._steady(steps, row, "seq/s")  # the warm-up of a compiled model is its compiling
        row.figure = options.batch_size * steady.rate
        epoch = TRAIN_IMAGES * options.sequences_per_image
        notes = [f"an epoch of VisDial train ({epoch:,} sequences) {_duration(epoch, row.figure, steady.warm_up_s)}",
                 f"{steady.rate:.3g} steps/s of {options.batch_size} sequences, {steady.describe(self.sizes.window_s)} "
                 "(steps/s)"]
        if compiled and (eager := self._ok(f"train {precision}")):
            notes.append(f"{row.figure / eager.figure:.2f}x eager")
        if not compiled:
            row.details["flops_per_step"] = count_flops(lambda: step(batches[0]))
            notes.append(self._flops_note(row.details["flops_per_step"], "step", steady.rate, precision))
        if precision == "fp16":
            notes.append(f"{len(overflows)} steps skipped by the GradScaler for overflow")
        row.note = "; ".join(notes)

    def dense(self, row: Row, chunk: int) -> None:
        """chunk 0: one graph over all options (the reference's way)."""
        dataset = VisdialDenseDataset(self.data.train, self.data.train_dense, self.features, self.tokenizer,
                                      max_seq_len=MAX_SEQ_LEN)
        rounds = [annotation["round_id"] for annotation in dataset.dense_annotations]
        batch = collate_dialog_batch([dataset[rounds.index(min(rounds))]])  # the shortest annotated round
        options = len(batch["tokens"])
        model = build_model(self.model_config).to(self.device).train()
        settings = StepSettings(self.device, self.fast, dense_chunk=chunk or options, coefficients={"nsp": 1.0})

        def iteration() -> int:
            if chunk:
                dense_step(model, batch, settings)
                return 1
            scores = score_chunk(model, batch, torch.arange(options), settings).view(1, options, 2)
            dense_loss(scores, batch["gt_relevance"].to(self.device),
                       batch["next_sentence_labels"].to(self.device), 1.0)[0].backward()
            return 1

        steady = self._steady(iteration, row, "s/iteration")
        row.figure, row.peak_memory_gib = 1 / steady.rate, round(peak_memory_bytes(self.device) / GIB, 2)
        row.note = (f"{DENSE_ROUNDS:,} annotated rounds: {DENSE_ROUNDS / steady.rate / 60:.1f} min an epoch; "
                    f"{self.fast}, {options} options of {batch['tokens'].shape[1]} tokens; "
                    f"{steady.describe(self.sizes.window_s)} (iterations/s)")
        if self.device.type == "cuda":  # a CPU's resident set keeps what was freed: no step memory there
            baseline = memory_bytes(self.device)  # the weights and the gradients of the steps before
            reset_peak_memory(self.device)
            iteration()
            row.details["step_memory_gib"] = round((peak_memory_bytes(self.device) - baseline) / GIB, 3)
            row.note += f"; the step itself {row.details['step_memory_gib']:.2f} GiB above weights and gradients"

    def compiled_eval(self, row: Row) -> None:
        model = self._eval_model(self._compile_config()) if self.smoke else self.eval_model
        compiled = self._compile(model, dynamic=True)  # as evaluate.py -compile
        batch, scores = self._collated(1), {}
        budget = resolve_tokens_per_batch(0, self.device)

        def scorer(name: str, scored_model: torch.nn.Module) -> Callable[[], int]:
            def score() -> int:
                scores[name] = score_sequences(scored_model, batch, budget, "fp32")
                return len(scores[name])
            return score

        eager = steady_state(scorer("eager", model), self.device, self.sizes.window_s, self.sizes.repeats)
        steady = self._steady(scorer("compiled", compiled), row, "x eager fp32")  # its warm-up: compiling
        row.figure = steady.rate / eager.rate
        difference = float((scores["compiled"] - scores["eager"]).abs().max())
        # two scorings that differ by d may swap options whose eager scores lie within d: near-ties
        agreement = rank_agreement(scores["compiled"].view(-1, self.sizes.options),
                                   scores["eager"].view(-1, self.sizes.options), tolerance=max(NEAR_TIE, difference))
        row.status = "ok" if difference <= COMPILED_ATOL and agreement.beyond_near_ties == 0 else "failed"
        row.note = (f"{len(batch['tokens'])} sequences" + (", one layer of each kind" if self.smoke else "")
                    + f"; {agreement.describe()} (fails above {COMPILED_ATOL:g} or beyond near-ties); "
                    f"{steady.describe(self.sizes.window_s)}")
        row.details.update(beyond_near_ties=agreement.beyond_near_ties, max_score_difference=difference)


def plan_rows(mixed: str, sizes: Sizes) -> list[tuple[str, Callable[[Benchmark, Row], None]]]:
    precisions = list(dict.fromkeys(("fp32", mixed, "fp16")))
    return [*((f"matmul {name}", partial(Benchmark.matmul, precision=name)) for name in precisions[:2]),
            *((f"eval {name}", partial(Benchmark.evaluation, precision=name)) for name in (mixed, "fp32")),
            ("eval reference", Benchmark.reference),
            *((f"eval budget {tokens}", partial(Benchmark.budget, tokens=tokens)) for tokens in sizes.budgets),
            ("input eval", Benchmark.input_eval),
            *((f"train {name}", partial(Benchmark.training, precision=name)) for name in precisions),
            ("input train", Benchmark.input_train),
            *((f"dense chunk {chunk}", partial(Benchmark.dense, chunk=chunk)) for chunk in sizes.dense_chunks),
            ("dense one graph", partial(Benchmark.dense, chunk=0)),
            ("eval compiled", Benchmark.compiled_eval),
            (f"train {mixed} compiled", partial(Benchmark.training, precision=mixed, compiled=True))]


class RowTimeout(BaseException):
    """The run's time limit passed while a row ran (not an Exception: libraries must not wrap it)."""


def measure_row(name: str, measure: Callable[[Row], None], device: torch.device, seconds_left: float) -> Row:
    """Run one measurement into a Row; an exception, or the time limit, fails the row, not the run."""
    row = Row(name)
    if seconds_left < 1:
        row.status, row.note = "not run", "--time_limit reached"
        return row

    def stop(signum, frame):
        raise RowTimeout()

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(int(seconds_left))
    reset_peak_memory(device)
    start = time.perf_counter()
    try:
        measure(row)
    except RowTimeout:
        row = Row(name, "not run", note=f"cut by --time_limit after {time.perf_counter() - start:.0f} s")
    except Exception as error:  # reported in the row; the next row runs
        traceback.print_exc()
        row.status, row.note = "failed", f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"[:300]
    finally:
        signal.alarm(0)
    row.seconds = round(time.perf_counter() - start, 1)
    if row.peak_memory_gib is None and row.status == "ok":
        row.peak_memory_gib = round(peak_memory_bytes(device) / GIB, 2)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=__doc__.split("\n\n", 1)[1])
    positive = bounded(int, 1)
    parser.add_argument("-out", "--out", default="", help="JSON file of the rows, written after each row")
    parser.add_argument("--smoke", action="store_true", help="every row on the CPU with a tiny model")
    parser.add_argument("--rows", nargs="+", default=[], metavar="NAME",
                        help='only these rows, by their names (e.g. "eval bf16" "dense chunk 100")')
    parser.add_argument("--model_config", default="",
                        help="model config (default: the paper's; --smoke: config/toy_model.json)")
    parser.add_argument("--features", choices=("hdf5", "lmdb"), default="hdf5", help="the synthetic feature store")
    for name, kind, what in (("dialogs", positive, "val dialogs a pass of each eval row (GPU: 8 in fp32 unless given)"),
                             ("options", bounded(int, 2, NUM_ANSWER_OPTIONS), "answer options a round"),
                             ("reference_chunk", positive, "sequences a forward pass of the reference's way"),
                             ("workers", bounded(int, 0), "DataLoader workers (0: in the main process)"),
                             ("batch_size", positive, "training sequences a step"),
                             ("repeats", positive, "windows a figure (the figure: their median)"),
                             ("time_limit", bounded(float, 0, above=True), "seconds for every row")):
        parser.add_argument(f"--{name}", type=kind, help=f"{what} (default: GPU {getattr(GPU, name):g}, "
                                                         f"CPU {getattr(CPU, name):g})")
    for name, what in (("budgets", "token budgets of the eval budget rows"), ("dense_chunks", "-dense_chunk values")):
        parser.add_argument(f"--{name}", type=positive, nargs="+", help=f"{what} (default: GPU "
                            f"{' '.join(map(str, getattr(GPU, name)))}, CPU {' '.join(map(str, getattr(CPU, name)))})")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    model_config = Path(args.model_config or (SMOKE_CONFIG if args.smoke else PAPER_CONFIG))
    if not model_config.is_file():
        raise UserError(f"{model_config}: model config not found (--model_config)")
    if args.out:
        check_outputs([Output("-out", Path(args.out), what="the result file")], {"--model_config": model_config})
    device = torch.device("cuda", 0) if torch.cuda.is_available() and not args.smoke else torch.device("cpu")
    given = {field.name: value for field in dataclasses.fields(Sizes)
             if (value := getattr(args, field.name, None)) is not None}
    given.update({"fp32_dialogs": args.dialogs} if args.dialogs else {})
    sizes = dataclasses.replace(SMOKE if args.smoke else GPU if device.type == "cuda" else CPU, **given)
    sizes = dataclasses.replace(sizes, synthetic_dialogs=max(sizes.synthetic_dialogs, sizes.dialogs,
                                                             sizes.fp32_dialogs))
    train_options = parse_options(["-config", str(REPO_ROOT / "config/presets/base.yml"),
                                   "-batch_size", str(sizes.batch_size)], TrainOptions)
    if sizes.batch_size % train_options.sequences_per_image:
        raise UserError(f"--batch_size: must be a multiple of {train_options.sequences_per_image} (sequences an "
                        f"image in config/presets/base.yml), got {sizes.batch_size}")
    if args.smoke:
        torch.set_num_threads(1)  # a check that every row runs: one thread is steadiest on a busy machine
    plan = plan_rows("bf16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "fp16", sizes)
    names = [name for name, _ in plan]
    unknown = [name for name in args.rows if name not in names]
    if unknown:
        raise UserError(f"--rows: no row named {', '.join(map(repr, unknown))} (the rows: {', '.join(names)})")
    header = {"smoke": args.smoke, **describe_device(device), "commit": git_commit(), "model_config": str(model_config),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sizes": dataclasses.asdict(sizes)}
    print(f"{header['device']} | torch {header['torch']} | commit {header['commit']} | {model_config.name} | "
          f"load average {header['load_average']:.1f} | time limit {sizes.time_limit:g} s", flush=True)
    print(f"{'row':<20} {'figure':>20} {'warm-up s':>9} {'peak mem':>10} {'s':>6} {'status':>7}  note", flush=True)
    deadline = time.perf_counter() + sizes.time_limit
    with tempfile.TemporaryDirectory() as folder:
        bench = Benchmark(device, sizes, model_config, train_options, Path(folder), args.smoke, args.features)
        for name, measurement in plan:
            if not args.rows or name in args.rows:
                row = measure_row(name, partial(measurement, bench), device, deadline - time.perf_counter())
                bench.done[name] = row
                print(format_row(row), flush=True)
                if args.out:
                    write_json(args.out, {**header, "rows": [dataclasses.asdict(row) for row in bench.done.values()]})
    failed = [row.name for row in bench.done.values() if row.status == "failed"]
    print(f"failed: {', '.join(failed) or 'none'} (of {len(bench.done)} rows); load average now "
          f"{os.getloadavg()[0]:.1f}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    run_cli(main)
