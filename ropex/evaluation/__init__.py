"""Evaluation beyond the training length: perplexity by context length, loss by position,
retrieval (needle / passkey) and the synthetic tasks over length x depth, evaluation-time
positional overrides, figures and multi-run comparisons. Entry point: ``python -m ropex.evaluate``.

Modules: ``scoring`` (per-token loss / accuracy, bounded memory), ``rows`` (evaluation rows),
``perplexity``, ``grid`` (the one task interface and depth x length sweep), ``generation``
(greedy decoding, RULER's string_match metrics), ``tasks``, ``retrieval``, ``ruler`` /
``ruler_tasks`` / ``words`` (the RULER-style suite), ``data_spec`` (``--data``), ``overrides``,
``suite`` (everything for one model), ``sampling`` (standard errors over units, Wilson
intervals, sizing), ``intervals`` (seed groups, t intervals, Welch's test, Holm; also used by
``ropex.experiments.report``), ``reporting`` (tables, paired differences, seed groups, figures,
``compare``), ``study``.
"""
