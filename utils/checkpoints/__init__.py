"""Checkpoints in one place (as the VisDial starter's CheckpointManager): every file a model or a
run is saved to or read from goes through this surface.

    read_checkpoint(path)                  any torch.save file, weights only (pickled code refused)
    load_model_weights(model, path)        a model's weights from our checkpoints, the reference's,
                                           a DDP one or a raw state dict; load_bert_weights: a
                                           Hugging Face BERT into the text stream
    save_run_state(path, state, ...)       a training run's checkpoint, atomically
    read_run_state(path, options, say)     read one for -continue and check it against the options
                                           and the model config's content (before any heavy work)
    restore_run_state(checkpoint, state, context, say)   put it back into a run, exactly

weights.py: files and model weights; run_checkpoint.py: what a run's checkpoint holds and exact
resume. Imports run downward: this package sits above options.py and below evaluation/.
"""
from utils.checkpoints.run_checkpoint import (Checkpoint, Progress, estimated_checkpoint_bytes, git_commit,
                                              read_run_state, restore_run_state, save_run_state)
from utils.checkpoints.weights import (LoadReport, extract_state_dict, load_bert_weights, load_model_weights,
                                       read_checkpoint, save_checkpoint)

__all__ = ["Checkpoint", "LoadReport", "Progress", "estimated_checkpoint_bytes", "extract_state_dict", "git_commit",
           "load_bert_weights", "load_model_weights", "read_checkpoint", "read_run_state", "restore_run_state",
           "save_checkpoint", "save_run_state"]
