"""Experiment configs: the library defaults every ``configs/*.py`` starts from
(:mod:`~ropex.config.defaults`), loading a config file with its string args
(:mod:`~ropex.config.loading`) and dotted ``a.b=value`` overrides (:mod:`~ropex.config.overrides`).
"""
