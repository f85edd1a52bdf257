"""Mechanistic analysis of ropex models (Barbero et al., 2025, Sections 3-5) as a Python API.

- :mod:`chunks` — the one map from a positional encoding to its frequency chunks.
- :mod:`capture` — runs a model and collects per-layer q / k (after the PE), attention
  probabilities and next-token losses, for scanned or unscanned parameters.
- :mod:`frequency` — mean 2-norm of every frequency chunk per layer and head.
- :mod:`heads` — diagonal / previous-token / BOS scores and offset profiles per head.
- :mod:`ablation` — zero chosen chunks of chosen heads (a PE wrapper, no model changes).
- :mod:`pipeline` — all of the above on a set of prompts, with the report (:mod:`report`).
- :mod:`theory` — the paper's theoretical claims as numerical checks.
- :mod:`prompts` — built-in text, prompt files, or the run's synthetic tasks.

``python -m ropex.analyze`` is the command-line entry point.
"""
