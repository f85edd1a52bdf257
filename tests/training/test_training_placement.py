"""Evaluation and analysis on a mesh (8 CPU devices, tests/conftest.py): parameters restored
directly into their shards, or placed once; sharded scoring and capture give the numbers of one
device; float32 logits in scoring whatever the compute dtype."""
import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ropex import model as model_lib
from ropex.analysis import capture, pipeline
from ropex.analysis.prompts import Prompts
from ropex.evaluation import scoring
from ropex.config import loading
from ropex.model.config import ModelConfig
from ropex.training import checkpoint, inference, workdir as workdir_lib
from ropex.training.placement import Placement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEP = 7


def tiny_config():
  config = loading.load(os.path.join(ROOT, 'configs', 'tiny.py'))
  config.mesh.update(data=2, fsdp=4, tensor=1)
  return config


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A workdir with config.json and one checkpoint of (random) parameters at step 7."""
  config = tiny_config()
  cfg = ModelConfig.from_config(config.model)
  params = nn.unbox(model_lib.Transformer(cfg).init(jax.random.key(3),
                                                    jnp.zeros((1, 8), jnp.int32))['params'])
  workdir = str(tmp_path_factory.mktemp('run'))
  workdir_lib.write_config(config, workdir, primary=True)
  path = os.path.join(checkpoint.checkpoint_dir(workdir), str(STEP), 'state')
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(path, {'params': params, 'step': np.int32(STEP)})
  return workdir, config, cfg, params


def test_restore_is_sharded_on_the_runs_mesh(saved):
  workdir, _, cfg, params = saved
  config, restored, step, placement = inference.load_sharded(workdir)
  assert step == STEP and dict(placement.mesh.shape) == {'data': 2, 'fsdp': 4, 'tensor': 1}
  emb = restored['embedder']['input_embedding']                 # [V, D], D over fsdp
  assert emb.sharding.spec == jax.sharding.PartitionSpec('tensor', 'fsdp')
  assert {s.data.shape for s in emb.addressable_shards} == {(512, 32)}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               restored, params)
  assert config.model.to_dict() == saved[1].model.to_dict()


def rows(n=5, T=24, vocab=512, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (n, T + 1))
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
          'positions': np.broadcast_to(np.arange(T), (n, T)).copy(),
          'segment_ids': np.ones((n, T), np.int64)}


def test_sharded_scoring_equals_one_device(saved):
  _, config, cfg, params = saved
  placement = Placement.from_config(config)
  r = rows()
  one = scoring.Scorer(cfg, params, attention_chunk=16, loss_chunk=8, tokens_per_batch=72)
  mesh = scoring.Scorer(cfg, params, attention_chunk=16, loss_chunk=8, tokens_per_batch=72,
                        placement=placement)
  assert one.batch_size(24, 5) == 3 and mesh.batch_size(24, 5) == 8  # data x fsdp shards
  leaf = mesh.params['layers']['layer_0']['mlp']['linear']
  assert len({s.device for s in leaf.addressable_shards}) == 8 and not leaf.is_fully_replicated
  loss_one, correct_one = one.score(r)
  loss_mesh, correct_mesh = mesh.score(r)
  assert loss_one.shape == (5, 24) and np.all(loss_one > 0)   # really computed
  np.testing.assert_allclose(loss_mesh, loss_one, rtol=2e-5, atol=2e-5)
  np.testing.assert_array_equal(correct_mesh, correct_one)


def test_sharded_capture_equals_one_device(saved):
  _, config, cfg, params = saved
  flat, flat_params = capture.for_analysis(cfg, params)
  placement = Placement.from_config(config)
  tokens = rows(n=8, T=16)['inputs']   # 8 rows: one per batch shard
  valid = np.ones_like(tokens, bool)
  one = capture.capture(flat, flat_params, tokens, valid)
  mesh = capture.capture(flat, placement.place(flat_params, flat), tokens, valid,
                         placement=placement)
  assert one.nll_BT[:, :-1].min() > 0
  np.testing.assert_allclose(mesh.nll_BT, one.nll_BT, rtol=2e-5, atol=2e-5)
  for a, b in zip(mesh.probs + mesh.q, one.probs + one.q):
    np.testing.assert_allclose(a, b, atol=2e-5)


def _prompts(n=5, T=20, vocab=512):
  """Rows of different lengths (BOS=1 first), so the padded batch rows and the padding inside
  rows are both exercised."""
  rng = np.random.default_rng(4)
  lengths = np.array([T, T - 3, T - 7, T, 9][:n])
  tokens = np.zeros((n, T), np.int32)
  for i, L in enumerate(lengths):
    tokens[i, :L] = np.concatenate([[1], rng.integers(3, vocab, L - 1)])
  return Prompts([f'row {i}' for i in range(n)], tokens, lengths, description='random rows')


def test_sharded_analysis_equals_one_device(saved):
  """The whole analysis (capture, head scores, frequency usage, every ablation) on the run's
  2 x 4 mesh gives the numbers of one device."""
  _, config, cfg, params = saved
  kw = dict(top_heads=2, ablate_fraction=0.25, batch_size=3)
  one = pipeline.analyze(cfg, params, _prompts(), **kw)
  mesh = pipeline.analyze(cfg, params, _prompts(), placement=Placement.from_config(config), **kw)
  assert one.loss > 1.0 and len(one.ablations) == 6   # 2 heads alone + together, x 2 bands
  assert any(abs(r['loss_after'] - r['loss_before']) > 1e-4 for r in one.ablations)
  np.testing.assert_allclose(mesh.loss, one.loss, rtol=1e-5)
  np.testing.assert_allclose(mesh.maps_LNTS, one.maps_LNTS, atol=2e-5)
  assert mesh.head_scores.queries == one.head_scores.queries > 0
  assert mesh.usage.tokens == one.usage.tokens == int(_prompts().lengths_P.sum())
  np.testing.assert_allclose(mesh.usage.q_LNC, one.usage.q_LNC, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mesh.usage.k_LKC, one.usage.k_LKC, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mesh.head_scores.scores_LNS, one.head_scores.scores_LNS, atol=2e-5)
  np.testing.assert_allclose(mesh.head_scores.offsets_LNO, one.head_scores.offsets_LNO,
                             atol=2e-5)
  assert [(r['heads'], r['band']) for r in mesh.ablations] == [
      (r['heads'], r['band']) for r in one.ablations]
  for a, b in zip(mesh.ablations, one.ablations):
    np.testing.assert_allclose([a['loss_after'], a['pattern_after']],
                               [b['loss_after'], b['pattern_after']], rtol=1e-4, atol=2e-5)


def test_analyze_cli_restores_sharded_and_matches_one_device(saved, tmp_path):
  """``ropex.analyze --workdir`` (8 devices: the run's data=2 x fsdp=4 mesh) writes the summary
  of the same analysis run in-process on one device."""
  workdir, config, cfg, params = saved
  out = subprocess.run([sys.executable, '-m', 'ropex.analyze', '--workdir', workdir, '--out',
                        str(tmp_path / 'a'), '--prompts', 'text', '--max_len', '24',
                        '--top_heads', '1', '--batch_size', '2', '--nohtml'],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / 'a' / 'summary.json').read_text())
  assert summary['mesh'] == 'data=2 x fsdp=4 x tensor=1' and summary['step'] == STEP
  from ropex.analysis import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  from ropex.data import tokenizers  # pylint: disable=g-import-not-at-top
  batch = prompts_lib.tokenize(prompts_lib.DEFAULT_PROMPTS,
                               tokenizers.make_tokenizer(config.data), 24, cfg.vocab_size)
  one = pipeline.analyze(cfg, params, batch, top_heads=1, batch_size=2)
  assert summary['prompts'] == len(batch.texts) and one.loss > 1.0
  np.testing.assert_allclose(summary['loss'], one.loss, rtol=1e-5)
  np.testing.assert_allclose([r['loss_after'] for r in summary['ablations']],
                             [r['loss_after'] for r in one.ablations], rtol=1e-4)


def test_scoring_logits_are_float32_with_bfloat16_compute(saved):
  _, _, cfg, params = saved
  bf16 = dataclasses.replace(cfg, dtype='bfloat16')
  x = jnp.zeros((1, 8), jnp.int32)
  jaxpr = jax.make_jaxpr(lambda p: scoring._score_batch(bf16, 8, p, x, x, x, x + 1))(params)
  vocab_dots = [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name == 'dot_general'
                and e.outvars[0].aval.shape[-1] == cfg.vocab_size]
  assert vocab_dots and all(e.outvars[0].aval.dtype == jnp.float32 for e in vocab_dots)


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      inner = getattr(value, 'jaxpr', value)
      if hasattr(inner, 'eqns'):
        yield from _eqns(inner)
