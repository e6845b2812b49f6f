"""What the benchmarks in scripts/ share: synthetic VisDial of realistic lengths read through the
project's own datasets (synthetic.py), the demo's toy VisDial generated and preprocessed (toy.py),
the reference's way of scoring as a baseline (reference.py), steady-state timing, peak memory and
FLOP counts on the CPU or a GPU (measure.py), and how far two scorings' ranks agree up to
near-ties (agreement.py)."""
