"""The training loop: iterations, optimizer steps, logging, validation, checkpoints and signals
(docs/training.md; resume and faults: docs/reliability.md)."""
import signal
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from models.losses import RankingLoss
from options import TrainOptions
from utils.distributed import DistributedContext, all_ranks_agree, any_rank, barrier
from utils.errors import UserError
from utils.evaluation.validation import evaluate_val
from utils.training.checkpoints import CheckpointManager
from utils.training.data import TrainingData
from utils.training.loggers import TrainingLogger
from utils.training.run_state import RunState
from utils.training.steps import StepSettings, base_step, dense_step

MAX_BAD_RECORD_SHARE = 0.5
BAD_RECORD_SHARE_AFTER = 16
"""-skip_bad_records stops once more than this share of the records read are unreadable, judged
from this many records on (one early bad record must not stop a run)."""


class StopRequest:
    """Turns SIGTERM / SIGINT into a request to stop after the current iteration; a second signal of
    the same kind stops at once."""

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._previous = {signum: signal.signal(signum, self._handle)
                          for signum in (signal.SIGTERM, signal.SIGINT)}

    def close(self) -> None:
        """Put the previous handlers back."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


class Trainer:
    """The loop of one built run: train_model (compiled and/or wrapped in DistributedDataParallel)
    runs the steps, state.model (the plain model) is saved and validated."""

    def __init__(self, options: TrainOptions, context: DistributedContext, folder: CheckpointManager, state: RunState,
                 data: TrainingData, train_model: torch.nn.Module, logger: TrainingLogger, precision: str,
                 validation_precision: str):
        self.options, self.context, self.folder, self.state = options, context, folder, state
        self.data, self.train_model, self.logger = data, train_model, logger
        self.validation_precision = validation_precision
        self.step_function = dense_step if options.mode == "dense" else base_step
        self.settings = StepSettings(
            device=context.device, precision=precision, loss_divisor=options.batch_multiply,
            grad_scaler=state.grad_scaler, dense_chunk=options.dense_chunk,
            coefficients={"lm": options.lm_loss_coeff, "nsp": options.nsp_loss_coeff,
                          "img": options.img_loss_coeff},
            ranking=RankingLoss(options.dense_loss, options.approxndcg_temperature,
                                options.dense_target_temperature))
        self.stop: Optional[StopRequest] = None
        self.warned_skipped_rounds = False

    def say(self, message: str) -> None:
        if self.context.is_main:
            tqdm.write(message)

    def run(self) -> int:
        """Train until the last epoch or -max_iterations; returns the process exit code."""
        options, progress = self.options, self.state.progress
        batches_per_epoch = self.data.batches_per_epoch
        if batches_per_epoch == 0:
            raise UserError(f"{self.data.source}: too few training items for one batch "
                            f"({self.data.num_items} items)")
        self.say(f"{batches_per_epoch} iterations per epoch; run folder {self.folder.path}")
        limit = options.max_iterations or options.num_epochs * batches_per_epoch
        last_saved = None
        bar = tqdm(total=limit, initial=min(progress.iteration, limit), unit="it",
                   disable=not self.context.is_main, dynamic_ncols=True)
        started, sequences = time.perf_counter(), 0
        self.stop = StopRequest()
        try:
            while progress.epoch < options.num_epochs and progress.iteration < limit:
                for wrapped in self.data.epoch_batches(progress.epoch, progress.position):
                    progress.position += 1
                    batch = self._take_good_records(wrapped)
                    if batch is not None:
                        result = self._iteration(batch)
                        sequences += batch["tokens"].shape[0]
                        bar.update(1)
                        bar.set_postfix(loss=f"{result.loss:.3f}",
                                        seq_s=f"{sequences / (time.perf_counter() - started):.1f}")
                    if any_rank(self.stop.requested):
                        return self._stop_for_signal()
                    if progress.iteration >= limit:
                        break
                if progress.position >= batches_per_epoch:
                    progress.epoch, progress.position = progress.epoch + 1, 0
                    last_saved = self._end_of_epoch()
            if last_saved is None or last_saved.name != self.folder.checkpoint(progress.iteration).name:
                last_saved = self.save()
            self.say(f"training done: {progress.iteration} iterations, final checkpoint {last_saved}")
            return 0
        finally:
            bar.close()
            self.stop.close()
            self.logger.flush()
            self.logger.close()

    def save(self, best: bool = False) -> Path:
        """Write a checkpoint (all ranks take part, rank 0 writes); keep the last -keep_checkpoints."""
        path = self.folder.save(self.state, self.options, self.context, best)
        if self.context.is_main:
            self.logger.log_event("checkpoint", self.state.progress.iteration, path=str(path))
        barrier()
        return path

    def _take_good_records(self, wrapped: dict) -> Optional[dict]:
        """The batch without its unreadable records (None when none is left). Stops at the first
        unreadable record, or with -skip_bad_records when more than half of those read were."""
        progress, bad = self.state.progress, wrapped["bad_records"]
        progress.records_read += wrapped["num_records"]
        problem = None
        if bad and not self.options.skip_bad_records:
            problem = f"{bad[0]}; use -skip_bad_records to skip and count such records"
        elif bad:
            for message in bad:
                progress.skipped_records += 1
                self.logger.log_event("bad_record", progress.iteration, message=message,
                                      skipped_records=progress.skipped_records)
            if (progress.records_read >= BAD_RECORD_SHARE_AFTER
                    and progress.skipped_records > MAX_BAD_RECORD_SHARE * progress.records_read):
                problem = (f"{progress.skipped_records} of the {progress.records_read} train records read so far "
                           f"are unreadable (more than {MAX_BAD_RECORD_SHARE:.0%}), the last: {bad[-1]}")
        if any_rank(problem is not None):
            raise UserError(problem or "another process stopped on an unreadable record (see its error)")
        return wrapped["batch"]

    def _iteration(self, batch: dict):
        """One iteration as the reference's loop: backward, then (every -batch_multiply
        iterations, never at iteration 0, so its gradient joins the next one) an optimizer step
        at the rate of scheduler step iteration + 1."""
        options, progress = self.options, self.state.progress
        iteration = progress.iteration
        will_step = iteration % options.batch_multiply == 0 and iteration > 0
        self.train_model.train()
        result = self.step_function(self.train_model, batch, self.settings, sync_gradients=will_step)
        if not all_ranks_agree(result.finite):
            self._non_finite(batch, result)
        if result.skipped_rounds:
            self._skipped_rounds(iteration, result.skipped_rounds)
        if will_step:
            self._optimizer_step(iteration)
        progress.iteration += 1
        if iteration % options.log_every == 0:
            self._log_losses(iteration, result)
        if options.val_every > 0 and progress.iteration % options.val_every == 0 and self.data.validation:
            self._validate()
        return result

    def _non_finite(self, batch: dict, result) -> None:
        image_ids = batch["image_id"].reshape(-1).tolist() if "image_id" in batch else "unknown"
        where = f"non-finite loss ({result.loss}) at iteration {self.state.progress.iteration}, images {image_ids}"
        if self.options.nan_policy == "stop":
            raise UserError(f"{where}; training stopped before the weights were updated; "
                            f"last good checkpoint: {self.folder.newest() or 'none yet'}")
        self.state.progress.window_finite = False
        self.say(f"warning: {where}; skipping this optimizer step (-nan_policy skip)")

    def _skipped_rounds(self, iteration: int, count: int) -> None:
        if not self.warned_skipped_rounds:
            self.say(f"warning: -dense_loss {self.options.dense_loss} skips annotated rounds whose relevances are "
                     "all 0 (no order to learn); metrics.jsonl counts them (skipped_rounds events)")
            self.warned_skipped_rounds = True
        self.logger.log_event("skipped_rounds", iteration, rounds=count)

    def _optimizer_step(self, iteration: int) -> None:
        """The optimizer step of a window of -batch_multiply iterations: skipped (and counted) when
        a loss of the window was not finite; an fp16 overflow is counted and reported."""
        state, progress = self.state, self.state.progress
        if not progress.window_finite:
            progress.skipped_steps += 1
            self.logger.log_event("skipped_step", iteration, skipped_steps=progress.skipped_steps)
            state.optimizer.zero_grad(set_to_none=True)
        elif not state.step_optimizer(iteration, self.options.grad_clip):
            progress.overflow_steps += 1
            scale = state.grad_scaler.get_scale()
            self.logger.log_event("overflow_step", iteration, loss_scale=scale,
                                  overflow_steps=progress.overflow_steps)
            self.say(f"fp16 gradients overflowed at iteration {iteration}: optimizer step skipped, "
                     f"loss scale now {scale:g}")
        progress.window_finite = True

    def _log_losses(self, iteration: int, result) -> None:
        """The reference's periodic line, and the losses to every logger."""
        losses = {"loss": result.loss, **result.parts}
        if "lm_loss" in losses:
            losses["lm_nsp_loss"] = losses["lm_loss"] + losses["nsp_loss"]
        epoch = iteration / self.data.batches_per_epoch
        if self.context.is_main:
            stamp = time.strftime("%a %d %b %y %X", time.gmtime())
            parts = "".join(f"[{name}: {value:.3g}]" for name, value in losses.items())
            tqdm.write(f"[{stamp}][Ep: {epoch:.2f}][Iter: {iteration}]{parts}")
        progress = self.state.progress
        self.logger.log_train(iteration, losses, epoch=epoch, lr=self.state.schedule.rates(iteration + 1),
                              skipped_records=progress.skipped_records, skipped_steps=progress.skipped_steps)

    def _end_of_epoch(self) -> Path:
        """Checkpoint every epoch; with -val_every 0, validate on the reference's schedule: every
        8 // sequences_per_image epochs in base training, every epoch in dense finetuning."""
        path = self.save()
        if self.options.val_every == 0 and self.data.validation is not None:
            epochs = 1 if self.options.mode == "dense" else max(1, 8 // self.options.sequences_per_image)
            if self.state.progress.epoch % epochs == 0:
                self._validate()
        self.logger.flush()
        return path

    def _validate(self) -> None:
        """Val metrics with the evaluation code; a new best MRR also saves the best checkpoint."""
        metrics = evaluate_val(self.state.model, self.data.validation, precision=self.validation_precision,
                               num_workers=self.options.num_workers)
        self.logger.log_validation(self.state.progress.iteration, metrics)
        self.say("  ".join(f"{name}: {value:.4f}" for name, value in metrics.items() if "round" not in name))
        mrr = metrics.get("mrr", -1.0)
        if mrr > self.state.progress.best_mrr:
            self.state.progress.best_mrr = mrr
            self.save(best=True)

    def _stop_for_signal(self) -> int:
        path = self.save()
        self.say(f"stopped by {self.stop.signal_name} after iteration {self.state.progress.iteration}; "
                 f"checkpoint {path}. Resume with the same flags plus: "
                 f"-continue -save_path {self.options.save_path} -save_name {self.folder.path.name}")
        return 128 + int(getattr(signal, self.stop.signal_name))
