"""Benchmarks and ablations, each run from the checkout as ``python -m benchmarks.NAME`` (``--quick``:
seconds, what the test suite runs). ``phantom_runs`` and ``step_timing`` are shared helpers, not
benchmarks. Results: ``benchmarks/results/``."""
