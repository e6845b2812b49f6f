"""Checks against the reference implementation's fixtures (../shared/golden): model.py, data.py,
evaluation.py, sharing common.py. scripts/check_reference.py prints them as a table."""
