"""Evaluation: scoring.py (the ranking engine), metrics.py, report.py, validation.py (val metrics,
used by training too), evalai.py (the test-server files) and run.py (what evaluate.py runs)."""
