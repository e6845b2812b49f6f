"""Training: the loop (trainer.py) and what it is built from; the modules: docs/code.md."""
