"""duravoke's benchmarks: run ``python benchmarks/run.py`` (see benchmarks/README.md)."""
