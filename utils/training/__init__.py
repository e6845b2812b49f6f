"""Training: the loop (trainer.py) and what it is built from.

steps.py (one step of each objective), run_state.py (the model, optimizer, schedule and progress
of a run; its checkpoints are utils/checkpoints/'s), run_folder.py (the run's files), schedule.py
(learning rates), loggers.py (metrics.jsonl, visdom, TensorBoard), data.py (datasets and the
resumable loader of a run).
"""
