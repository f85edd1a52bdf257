"""Experiments across runs: sweeps (:mod:`~ropex.experiments.sweep`), the paper's Table 2
(:mod:`~ropex.experiments.paper`), run summaries and the report table."""
