"""Train visdial-bert: base training (MLM + NSP + masked regions) or dense-annotation finetuning.

The paper's three runs (config/presets/*.yml hold their flags; flags given after -config win):

    python train.py -config config/presets/base.yml        # base model from the VQA weights
    python train.py -config config/presets/dense.yml       # dense finetuning, no NSP loss
    python train.py -config config/presets/dense_nsp.yml   # dense finetuning with the NSP loss

One process uses one GPU (or the CPU). For several GPUs or nodes, launch it with torchrun:

    torchrun --nproc_per_node=8 train.py -config config/presets/base.yml
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
             --nproc_per_node=8 train.py -config config/presets/base.yml

Everything a run writes goes to its folder <save_path>/<save_name>/: config.yml (the resolved
options and the git commit), metrics.jsonl, visdial_dialog_encoder_<iteration>.ckpt (every epoch,
the last -keep_checkpoints kept, and always one at the end), visdial_dialog_encoder_best.ckpt
(best val MRR) and tensorboard/. SIGTERM or SIGINT finishes the current iteration, saves a
checkpoint and exits; `-continue` with the same -save_name resumes exactly where it stopped.
"""
import hashlib
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml
from tqdm import tqdm

import options as train_options
from evaluate import evaluate_val
from models import build_model
from utils import checkpointing
from utils.distributed import (DistributedContext, all_ranks_agree, any_rank, barrier,
                               broadcast_from_main, setup_distributed, teardown_distributed,
                               wrap_model)
from utils.errors import UserError, run_cli
from utils.training.loggers import TrainingLogger
from utils.training.schedule import WarmupLinearSchedule, build_optimizer
from utils.evaluation.scoring import default_precision
from utils.training.steps import StepSettings, base_step, dense_step
from utils.training.data import build_training_data

REPO_ROOT = Path(__file__).resolve().parent


@dataclass
class Progress:
    """Where the run is: what a checkpoint needs besides weights and optimizer state.

    iteration: iterations done (the reference's iter_id of the next one); epoch, position: the
    epoch and the number of its batches consumed; window_finite: no non-finite loss since the
    last optimizer step; best_mrr: the best validation MRR so far (-1: none yet).
    """
    iteration: int = 0
    epoch: int = 0
    position: int = 0
    window_finite: bool = True
    best_mrr: float = -1.0
    skipped_records: int = 0
    skipped_steps: int = 0


class StopRequest:
    """Turns SIGTERM / SIGINT into a request to stop after the current iteration.

    A second signal of the same kind stops at once (the default behaviour).
    """

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


def capture_rng_states() -> dict:
    """The states of Python's, NumPy's and torch's generators (tensors and plain values only,
    so a checkpoint holding them loads with weights_only=True)."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)),
                  *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict) -> None:
    """Undo `capture_rng_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def parameters_sha256(model: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: equal on all ranks when they hold the same weights."""
    digest = hashlib.sha256()
    for _, parameter in sorted(model.named_parameters()):
        digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resolve_run_dir(options: train_options.TrainOptions, context: DistributedContext) -> Path:
    """<save_path>/<save_name>, or <save_path>/<UTC time stamp> without -save_name (as the
    reference); every rank gets rank 0's name."""
    name = options.save_name
    if not name:
        name = datetime.now(timezone.utc).strftime("%d-%b-%y-%H-%M-%S") + (
            f"_{options.visdom_env}" if options.visdom_env else "")
    return Path(options.save_path) / broadcast_from_main(name)


def estimated_checkpoint_bytes(model: torch.nn.Module) -> int:
    """Weights + two AdamW moments + a little slack."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters()) * 3 * 1.1) + 2**20


class Trainer:
    """One training run: builds everything from the options, then `run()`."""

    def __init__(self, options: train_options.TrainOptions, context: DistributedContext):
        self.options = options
        self.context = context
        self.device = context.device
        self.precision = default_precision(self.device) if options.precision == "auto" else options.precision
        if self.precision == "fp16" and self.device.type != "cuda":
            raise UserError("-precision fp16 needs a CUDA device (use fp32 or bf16 on the CPU)")
        self.run_dir = resolve_run_dir(options, context)
        self.resume_path = self._resume_source() if options.resume else None
        self.progress = Progress()

        random.seed(options.seed)
        np.random.seed(options.seed)
        torch.manual_seed(options.seed)
        self.model = build_model(options.model_config, options.model_type)
        if options.bert_init and not options.resume:
            self._say(checkpointing.load_bert_weights(self.model, options.bert_init).describe(options.bert_init))
        if options.start_path and not options.resume:
            report = checkpointing.load_model_weights(self.model, options.start_path, strict=False)
            self._say(report.describe(options.start_path))
        self.model.to(self.device)

        if context.is_main:
            checkpointing.check_writable(self.run_dir, estimated_checkpoint_bytes(self.model))
            removed = checkpointing.remove_stale_temporaries(self.run_dir)
            if removed:
                self._say(f"removed {len(removed)} incomplete file(s) of a killed save")
        barrier()

        # the data files are checked before the optimizer is built (its first use imports
        # torch._dynamo, seconds), so that a bad file fails fast
        self.data = build_training_data(options, context)
        self.optimizer = build_optimizer(self.model, options.lr, options.image_lr)
        self.schedule = WarmupLinearSchedule(self.optimizer, options.warmup_steps, options.total_steps,
                                             options.min_lr)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        if options.resume:
            self._resume()

        train_model = wrap_model(self.model, context)
        self.train_model = torch.compile(train_model) if options.compile else train_model
        self.settings = StepSettings(
            device=self.device, precision=self.precision, loss_divisor=options.batch_multiply,
            grad_scaler=self.grad_scaler, dense_chunk=options.dense_chunk,
            coefficients={"lm": options.lm_loss_coeff, "nsp": options.nsp_loss_coeff,
                          "img": options.img_loss_coeff})
        self.step_function = dense_step if options.mode == "dense" else base_step
        self.logger = TrainingLogger(
            self.run_dir, enabled=context.is_main, tensorboard=bool(options.tensorboard),
            visdom={"server": options.visdom_server, "port": options.visdom_server_port,
                    "env": options.visdom_env} if options.enable_visdom else None)
        if context.is_main:
            self._write_run_config()
            self.logger.log_text(yaml.safe_dump(options.to_dict(), sort_keys=False))

    # ---- bookkeeping ------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        if self.context.is_main:
            tqdm.write(message)

    def _write_run_config(self) -> None:
        commit = checkpointing.git_commit(REPO_ROOT)
        text = f"# visdial-bert run, git commit {commit}\n" + yaml.safe_dump(self.options.to_dict(), sort_keys=False)
        checkpointing.atomic_write(self.run_dir / "config.yml", lambda file: file.write(text.encode()))

    def _training_state(self) -> dict:
        """Everything needed to continue exactly (see `_resume`), gathered from every rank."""
        local = {"rng": capture_rng_states(),
                 "parameters_sha256": parameters_sha256(self.model),
                 "pending_gradients": {name: p.grad.detach().cpu() for name, p in self.model.named_parameters()
                                       if p.grad is not None}}
        if self.context.is_distributed:
            per_rank = [None] * self.context.world_size
            torch.distributed.all_gather_object(per_rank, local)
        else:
            per_rank = [local]
        return {
            "model_state_dict": self.model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": {"warmup_steps": self.schedule.warmup_steps,
                                     "total_steps": self.schedule.total_steps,
                                     "min_lr": self.schedule.min_lr},
            "grad_scaler_state_dict": self.grad_scaler.state_dict() if self.grad_scaler else {},
            "iter_id": self.progress.iteration,
            "epoch": self.progress.epoch,
            "progress": asdict(self.progress),
            "per_rank": per_rank,
            "world_size": self.context.world_size,
            "options": self.options.to_dict(),
            "git_commit": checkpointing.git_commit(REPO_ROOT),
        }

    def save(self, path: Optional[Path] = None) -> Path:
        """Write a checkpoint (rank 0) after gathering the state of every rank; keep the last K."""
        path = path or checkpointing.checkpoint_path(self.run_dir, self.progress.iteration)
        state = self._training_state()
        if self.context.is_main:
            checkpointing.save_checkpoint(path, state)
            if path.name != checkpointing.BEST_CHECKPOINT:
                checkpointing.prune_checkpoints(self.run_dir, self.options.keep_checkpoints)
            self.logger.log_event("checkpoint", self.progress.iteration, path=str(path))
        barrier()
        return path

    def _resume_source(self) -> Path:
        """The checkpoint -continue resumes from: the newest of the run folder, or, when it has
        none, -start_path (the reference's way); UserError when there is neither."""
        if checkpointing.list_checkpoints(self.run_dir) or not self.options.start_path:
            return checkpointing.latest_checkpoint(self.run_dir)
        return Path(self.options.start_path)

    def _resume(self) -> None:
        """Restore model, optimizer, schedule position, data position, random generators and
        gradients accumulated since the last optimizer step, from `self.resume_path`."""
        path = self.resume_path
        content = checkpointing.read_checkpoint(path)
        missing = [key for key in ("model_state_dict", "optimizer_state_dict", "progress", "per_rank")
                   if key not in content]
        if missing:
            raise UserError(f"{path}: cannot continue from this checkpoint (no {', '.join(missing)}); "
                            "use it with -start_path without -continue to start from its weights")
        checkpointing.load_state_into(self.model, content["model_state_dict"], path, strict=True)
        try:
            self.optimizer.load_state_dict(content["optimizer_state_dict"])
        except (ValueError, KeyError) as error:
            raise UserError(f"{path}: its optimizer state does not fit this model ({error})") from None
        if self.grad_scaler and content["grad_scaler_state_dict"]:
            self.grad_scaler.load_state_dict(content["grad_scaler_state_dict"])
        self.progress = Progress(**content["progress"])
        per_rank = content["per_rank"]
        if content["world_size"] != self.context.world_size:
            self._say(f"warning: {path} was written by {content['world_size']} processes, this run has "
                      f"{self.context.world_size}: data order and random draws will not continue exactly")
        mine = per_rank[min(self.context.rank, len(per_rank) - 1)]
        parameters = dict(self.model.named_parameters())
        for name, gradient in mine["pending_gradients"].items():
            parameters[name].grad = gradient.to(self.device)
        restore_rng_states(mine["rng"])
        self._say(f"continuing from {path}: iteration {self.progress.iteration}, epoch {self.progress.epoch}")

    # ---- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Train until the last epoch or -max_iterations; returns the process exit code."""
        options, progress = self.options, self.progress
        batches_per_epoch = self.data.batches_per_epoch
        if batches_per_epoch == 0:
            raise UserError(f"{self.data.source}: too few training items for one batch "
                            f"({self.data.num_items} items)")
        self._say(f"{batches_per_epoch} iterations per epoch; run folder {self.run_dir}")
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
            if last_saved is None or last_saved.name != checkpointing.checkpoint_path(
                    self.run_dir, progress.iteration).name:
                last_saved = self.save()
            self._say(f"training done: {progress.iteration} iterations, final checkpoint {last_saved}")
            return 0
        finally:
            bar.close()
            self.stop.close()
            self.logger.flush()
            self.logger.close()

    def _take_good_records(self, wrapped: dict) -> Optional[dict]:
        """The batch without its unreadable records; stops at the first one unless -skip_bad_records."""
        bad = wrapped["bad_records"]
        if bad and not self.options.skip_bad_records:
            raise UserError(f"{bad[0]}; use -skip_bad_records to skip and count such records")
        for message in bad:
            self.progress.skipped_records += 1
            self.logger.log_event("bad_record", self.progress.iteration, message=message,
                                  skipped_records=self.progress.skipped_records)
        return wrapped["batch"]

    def _iteration(self, batch: dict):
        """One iteration as the reference's loop: backward, then (every -batch_multiply
        iterations, never at iteration 0, so its gradient joins the next one) an optimizer step
        at the rate of scheduler step iteration + 1."""
        options, progress = self.options, self.progress
        iteration = progress.iteration
        will_step = iteration % options.batch_multiply == 0 and iteration > 0
        self.train_model.train()
        result = self.step_function(self.train_model, batch, self.settings, sync_gradients=will_step)
        if not all_ranks_agree(result.finite):
            self._non_finite(batch, result)
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
        where = f"non-finite loss ({result.loss}) at iteration {self.progress.iteration}, images {image_ids}"
        if self.options.nan_policy == "stop":
            saved = checkpointing.list_checkpoints(self.run_dir)
            last_good = saved[-1][1] if saved else "none yet"
            raise UserError(f"{where}; training stopped before the weights were updated; "
                            f"last good checkpoint: {last_good}")
        self.progress.window_finite = False
        self._say(f"warning: {where}; skipping this optimizer step (-nan_policy skip)")

    def _optimizer_step(self, iteration: int) -> None:
        progress = self.progress
        if progress.window_finite:
            self.schedule.apply(iteration + 1)
            if self.grad_scaler:
                self.grad_scaler.unscale_(self.optimizer)
            if self.options.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
            if self.grad_scaler:
                self.grad_scaler.step(self.optimizer)
                self.grad_scaler.update()
            else:
                self.optimizer.step()
        else:
            progress.skipped_steps += 1
            self.logger.log_event("skipped_step", iteration, skipped_steps=progress.skipped_steps)
        self.optimizer.zero_grad(set_to_none=True)
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
        self.logger.log_train(iteration, losses, epoch=epoch,
                              lr=self.schedule.rates(iteration + 1),
                              skipped_records=self.progress.skipped_records,
                              skipped_steps=self.progress.skipped_steps)

    def _end_of_epoch(self) -> Path:
        """Checkpoint every epoch; with -val_every 0, validate on the reference's schedule: every
        8 // sequences_per_image epochs in base training, every epoch in dense finetuning."""
        path = self.save()
        if self.options.val_every == 0 and self.data.validation is not None:
            epochs = 1 if self.options.mode == "dense" else max(1, 8 // self.options.sequences_per_image)
            if self.progress.epoch % epochs == 0:
                self._validate()
        self.logger.flush()
        return path

    def _validate(self) -> None:
        """Val metrics with the evaluation code; a new best MRR also saves the best checkpoint."""
        metrics = evaluate_val(self.model, self.data.validation, precision=self.precision,
                               num_workers=self.options.num_workers)
        self.logger.log_validation(self.progress.iteration, metrics)
        self._say("  ".join(f"{name}: {value:.4f}" for name, value in metrics.items() if "round" not in name))
        mrr = metrics.get("mrr", -1.0)
        if mrr > self.progress.best_mrr:
            self.progress.best_mrr = mrr
            self.save(self.run_dir / checkpointing.BEST_CHECKPOINT)

    def _stop_for_signal(self) -> int:
        path = self.save()
        self._say(f"stopped by {self.stop.signal_name} after iteration {self.progress.iteration}; "
                  f"checkpoint {path}. Resume with the same flags plus: "
                  f"-continue -save_path {self.options.save_path} -save_name {self.run_dir.name}")
        return 128 + int(getattr(signal, self.stop.signal_name))


def main(argv=None) -> None:
    options = train_options.parse_options(train_options.build_train_parser(), argv,
                                          train_options.TrainOptions)
    problems = train_options.validate_train_options(options)
    if problems:  # run_cli prefixes the first line; every problem gets its own "error:" line
        raise UserError("\nerror: ".join(problems))
    context = setup_distributed()
    try:
        exit_code = Trainer(options, context).run()
    finally:
        teardown_distributed()
    if exit_code:
        sys.exit(exit_code)


if __name__ == "__main__":
    run_cli(main)
