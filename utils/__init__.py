"""Everything above the model and the data, one layer per package, and below it what every layer uses.

    checkpoints/   reading, writing, checking and resuming checkpoints (one small surface)
    training/      the training loop and what it needs (steps, run state, run folder, schedule,
                   loggers, training data); train.py builds a run from these
    evaluation/    scoring, metrics, the report, val evaluation, the EvalAI files; evaluate.py
                   runs it, training validates with it
    conformance/   the checks against the reference's fixtures (scripts/check_reference.py)

    errors.py, inputs.py (reading with limits), outputs.py (checking outputs against inputs, then
    writing them atomically), distributed.py, random_state.py: the shared base (at most six modules)

Imports run downward only: entry points, then training and conformance, then evaluation, then
checkpoints, then options.py, then models/ and dataloader/, then the shared base
(tests/test_layering.py).
"""
