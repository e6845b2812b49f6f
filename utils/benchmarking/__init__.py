"""What the benchmarks in scripts/ share: synthetic and toy VisDial, the reference's way of scoring,
steady-state timing, and rank agreement up to near-ties."""
