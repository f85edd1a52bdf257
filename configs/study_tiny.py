"""A length-generalisation study of the ``make demo`` runs (``python -m ropex.demo``, RoPE and
p-RoPE at θ = 10 on ``assoc_recall`` examples of 16-64 tokens, 3 seeds): every run as trained,
with position interpolation (positions / 4) and with θ raised to 500k at evaluation time, at
0.5x-4x the longest training example, on perplexity and the RULER-style needle tasks (the
tasks written in the ``assoc_recall`` token format the runs were trained on).

  python -m ropex.study --config configs/study_tiny.py
  python -m ropex.study --config configs/study_tiny.py --config.runs='runs/seeds/*'

Fields: see ``ropex.evaluation.study``.
"""
import ml_collections


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.name = 'tiny length generalisation'
  c.runs = '/tmp/ropex-demo/*'
  c.variants = ('base=|pi4=model.pe.position_scale=4|theta500k=model.pe.max_wavelength=500000')
  c.lengths = '32,64,128,256'
  c.depths = '0,0.5,1'
  c.suite = 'perplexity,ruler'
  c.ruler = 'niah_single,niah_multikey,niah_multivalue'
  c.data = 'auto'
  c.examples = 16
  c.task_examples = 8
  c.seed = 0
  c.step = 0
  c.out = '/tmp/ropex-study'
  c.reuse = True
  return c
