"""Loading at scale on 2 processes (loopback, gloo, 2 CPU devices each): ``load_model(path,
mesh=placement)`` with the parameters split over both processes' devices (fsdp=4). Each process
holds only its half of every split tensor (its shards equal the one-process load's slices), its
peak resident memory grows by about its half of the model, not the whole; the forward pass on
the global mesh gives transformers' logits (Hugging Face folder and GGUF file) and the
one-process load's."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import cli_runs
from ropex import model as model_lib
from ropex.model import io

import test_io_load_memory

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', '..', 'fixtures')
HF_FOLDER = os.path.join(FIXTURES, 'hf', 'llama')           # safetensors, llama3 rope
GGUF_FILE = os.path.join(FIXTURES, 'gguf', 'qwen3.gguf')     # float32 GGUF, q/k norms


def _two_processes(out_dir, big, *fixtures) -> list[dict]:
  address = f'127.0.0.1:{cli_runs.free_port()}'
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'two_process_load.py'), address,
                             str(i), str(out_dir), big, *fixtures], cwd=cli_runs.ROOT,
                            env=cli_runs.env(devices=2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=180) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def _one_process_logits(path, tokens):
  imported = io.load_model(path)
  forward = jax.jit(model_lib.Transformer(imported.cfg).apply)
  return np.asarray(forward({'params': imported.params}, jnp.asarray(tokens)))


def _halves(reports, name):
  """Each process holds exactly half of every split tensor, and the two halves of the
  embedding are different column blocks that together make it whole."""
  for r in reports:
    assert r[name]['split_fractions'] == [0.5], (name, r[name])
  first, second = ({tuple(map(tuple, block)) for block in r[name]['embedding_ranges']}
                   for r in reports)
  assert first and second and not first & second
  columns = sorted(c for _, c in first | second)
  rows, width = reports[0][name]['embedding_shape']
  assert all(r == (0, rows) for r, _ in first | second) and len(columns) == 4
  assert columns[0][0] == 0 and columns[-1][1] == width
  assert all(a[1] == b[0] for a, b in zip(columns, columns[1:]))


def test_two_processes_each_hold_their_half_and_give_transformers_logits(tmp_path):
  """(a) the Hugging Face llama fixture and (b) the float32 qwen3 GGUF, loaded on fsdp=4 over
  2 processes x 2 devices: every shard equals the one-process load's slice (checked in each
  process), each process holds half, the gathered logits equal transformers' within the
  single-process tolerance (1e-4) and the one-process forward's (1e-5). A random ~150 MB
  checkpoint measures the memory: each process's peak resident memory grows by at least the
  shards it holds (so the measurement is real) and by less than its half plus three copies of
  the largest tensor in flight (the file's mapped pages, the array read from them, its slices
  on the way to the devices), which is under 0.85 of the model; a process holding the whole
  model would grow by more than all of it. Measured: 0.70."""
  big = str(tmp_path / 'big')
  size = test_io_load_memory.llama_folder(big, V=8192, D=512, F=2048, L=8, N=4, H=128)
  reports = _two_processes(tmp_path, big, HF_FOLDER, GGUF_FILE)
  assert [r['process'] for r in reports] == [0, 1]
  assert all(r['local_devices'] == 2 and r['devices'] == 4 for r in reports)

  for name, path in (('llama', HF_FOLDER), ('qwen3.gguf', GGUF_FILE)):
    _halves(reports, name)
    golden = np.load(os.path.join(FIXTURES, 'hf', name.split('.')[0], 'golden.npz'))
    logits = np.load(tmp_path / f'{name}.npy')
    assert logits.shape == golden['logits'].shape
    assert np.abs(logits - golden['logits']).max() < 1e-4, name
    np.testing.assert_array_equal(logits.argmax(-1), golden['greedy'])
    np.testing.assert_allclose(logits, _one_process_logits(path, golden['input_ids']),
                               atol=1e-5, rtol=0)

  _halves(reports, 'big')
  for r in reports:
    m = r['big']
    params = m['total']                   # float32 parameters: the file less its header
    assert size - 1e5 < params <= size and m['held'] < 0.51 * params, m
    bound = m['held'] + 3 * m['largest']
    assert bound < 0.85 * params                      # the bound excludes a whole copy
    assert m['held'] <= m['growth'] < bound, m
