"""What the benchmarks in scripts/ share: synthetic VisDial of realistic lengths read through the
project's own datasets (synthetic.py), the reference's way of scoring as a baseline (reference.py),
and timing, peak memory and FLOP counts on the CPU or a GPU (measure.py)."""
