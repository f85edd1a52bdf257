"""Evaluation beyond the training length: perplexity by context length, loss by position,
retrieval (needle / passkey) and the synthetic tasks over length x depth, evaluation-time
positional overrides, figures and multi-run comparisons. Entry point: ``python -m ropex.evaluate``.

Modules: ``scoring`` (per-token loss / accuracy, bounded memory, greedy generation), ``rows``
(evaluation rows), ``perplexity``, ``grid`` (the one task interface and depth x length sweep),
``generation`` (greedy decoding, RULER's string_match metrics), ``tasks``, ``retrieval``,
``ruler`` / ``ruler_tasks`` / ``words`` (the RULER-style suite), ``data_spec`` (``--data``),
``overrides``, ``suite`` (everything for one model), ``figures``, ``compare``, ``intervals``
(seed groups, 95% intervals, Welch's test; also used by ``ropex.experiments.report``).
"""
