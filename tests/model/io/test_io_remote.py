"""Released weights at a ``gs://`` URL (a GCS emulator on loopback, :mod:`gcs_emulator`) load
exactly as their local copy: the Hugging Face fixture folder and a GGUF file give the same
parameters bit for bit, the records name the URL (not the local staging folder), the staging
folder is gone when the process ends, ``ropex.generate`` on the URL gives the local run's token
ids, and a URL that holds nothing is one line naming the flag, exit 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cli_runs
import gcs_emulator

BUCKET = 'ropex-weights'
FIXTURES = os.path.join(cli_runs.ROOT, 'tests', 'fixtures')
LLAMA = os.path.join(FIXTURES, 'hf', 'llama')
GGUF = os.path.join(FIXTURES, 'gguf', 'qwen3.gguf')
FLAX = os.path.join(FIXTURES, 'flax', 'gemma2')   # tiny/ + its sidecar and tokenizer above


@pytest.fixture(scope='module')
def bucket(tmp_path_factory):
  with gcs_emulator.serve(BUCKET, tmp_path_factory.mktemp('gcs')) as url:
    for name in sorted(os.listdir(LLAMA)):
      with open(os.path.join(LLAMA, name), 'rb') as f:
        gcs_emulator.upload(url, BUCKET, f'models/llama/{name}', f.read())
    with open(GGUF, 'rb') as f:
      gcs_emulator.upload(url, BUCKET, 'models/qwen3.gguf', f.read())
    for folder, _, files in os.walk(FLAX):
      for name in files:
        with open(os.path.join(folder, name), 'rb') as f:
          rel = os.path.relpath(os.path.join(folder, name), FLAX)
          gcs_emulator.upload(url, BUCKET, f'models/gemma2/{rel}', f.read())
    yield url


_COMPARE = r'''
import json, sys
import jax, numpy as np
from ropex.model import io
from ropex.model.io import remote
from ropex.data.tokenizers import make_tokenizer
from ropex.model.io import tokenizer as tokenizer_io
out = {}
for local, url in zip(sys.argv[1:-1:2], sys.argv[2:-1:2]):
  a, b = io.load_model(local), io.load_model(url)
  la, lb = (jax.tree_util.tree_flatten_with_path(x.params)[0] for x in (a, b))
  out[url] = {
      'same_paths': [p for p, _ in la] == [p for p, _ in lb],
      'equal': all(np.array_equal(np.asarray(x), np.asarray(y)) and x.dtype == y.dtype
                   for (_, x), (_, y) in zip(la, lb)),
      'leaves': len(la),
      'source': b.source, 'local_source': a.source,
      'model_equal': a.model.to_dict() == b.model.to_dict(),
      'read_model_path': io.read_model(url)[1]['path'],
      'tokens_equal': a.tokenizer.encode('hello world') == b.tokenizer.encode('hello world'),
      'tokenizer_path': b.tokenizer_path, 'tokenizer_source': b.tokenizer_source}
  if b.tokenizer_path:   # evaluate's config: the URL recorded, the copy read
    data = io.experiment_config(b, 64).data
    out[url]['data'] = [data.tokenizer, data.tokenizer_path, make_tokenizer(data).encode(
        'hello world') == a.tokenizer.encode('hello world'),
        tokenizer_io.readable(data.tokenizer_path).startswith(remote._root[0])]
out['staging'] = remote._root[0]
from ropex.training import init_from   # train.init_from=gs://...: released weights, the URL kept
source = init_from.parse(sys.argv[2])
params, _, recorded = init_from._official_tree(source)
ref = jax.tree_util.tree_leaves(io.load_model(sys.argv[1]).params)
got = jax.tree_util.tree_leaves(params)
out['init_from'] = {'kind': source.kind, 'path': recorded['path'], 'equal': len(got) == len(
    ref) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(got, ref))}
from ropex.errors import ConfigError
for bad in sys.argv[-1].split(','):   # a missing folder, a missing .gguf, a folder of no format
  try:
    io.load_model(bad, what='train.init_from')
  except ConfigError as e:
    out.setdefault('errors', []).append(str(e))
print(json.dumps(out))
'''


def test_gs_weights_load_as_their_local_copy(bucket, tmp_path):
  hf, gguf = f'gs://{BUCKET}/models/llama', f'gs://{BUCKET}/models/qwen3.gguf'
  flax = f'gs://{BUCKET}/models/gemma2/tiny'
  bad = [f'gs://{BUCKET}/nothing', f'gs://{BUCKET}/nothing.gguf', f'gs://{BUCKET}/models']
  r = subprocess.run([sys.executable, '-c', _COMPARE, LLAMA, hf, GGUF, gguf, f'{FLAX}/tiny', flax,
                      ','.join(bad)],
                     cwd=tmp_path,
                     env=gcs_emulator.env(bucket), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  for url, local in ((hf, LLAMA), (gguf, GGUF), (flax, f'{FLAX}/tiny')):
    o = out[url]
    assert o['same_paths'] and o['equal'] and o['leaves'] > 5 and o['model_equal'], o
    assert o['source']['path'] == url and o['read_model_path'] == url
    assert o['local_source']['path'] == os.path.abspath(local)
    local_root, url_root = os.path.dirname(os.path.abspath(local)), url.rsplit('/', 1)[0]
    assert o['source'] == {k: v.replace(local_root, url_root) if isinstance(v, str) else v
                           for k, v in o['local_source'].items()}   # Flax: its sidecar's URL
    assert o['tokens_equal']
  assert out[hf]['tokenizer_path'].startswith(out['staging'])   # read from the local copy
  assert out[hf]['tokenizer_source'] == f'{hf}/tokenizer.json'   # recorded as the URL
  assert out[hf]['data'] == ['huggingface', f'{hf}/tokenizer.json', True, True]
  assert out[gguf]['data'] == ['gguf', gguf, True, True]   # rebuilt from the file, its URL named
  assert out[flax]['data'] == ['sentencepiece', f'gs://{BUCKET}/models/gemma2/tokenizer.model',
                               True, True]   # from the folder above, as locally
  assert out[gguf]['tokenizer_path'].startswith(out['staging'])
  copied = [x for x in r.stderr.splitlines() if 'ropex: copying' in x]
  assert len(copied) == 3, r.stderr   # once per URL, though loaded and read_model'd
  size = sum(os.path.getsize(os.path.join(LLAMA, n)) for n in os.listdir(LLAMA)
             if n not in ('config.hub.json', 'golden.npz'))   # the files the format needs
  assert f'copying 5 files ({size} bytes' in copied[0] and hf in copied[0], copied[0]
  assert f'({os.path.getsize(GGUF)} bytes' in copied[1] and gguf in copied[1], copied[1]
  flax_files = sum(len(f) for _, _, f in os.walk(FLAX))   # the folder, sidecar and tokenizer
  assert f'copying {flax_files} files' in copied[2] and flax in copied[2], copied[2]
  assert not os.path.exists(out['staging'])   # removed when the process ended
  assert out['init_from'] == {'kind': 'released', 'path': hf, 'equal': True}
  allowed = _allowed()
  assert out['errors'] == [
      f"train.init_from='{bad[0]}' does not exist (or is not a folder); allowed: {allowed}",
      f"train.init_from='{bad[1]}' does not exist; allowed: {allowed}",
      f"train.init_from='{bad[2]}' is neither a Hugging Face checkpoint folder (config.json + "
      '*.safetensors), an official Gemma Flax checkpoint nor a .gguf file']


def _generate(model, url, cwd):
  return subprocess.run([sys.executable, '-m', 'ropex.generate', f'--model={model}',
                         '--prompt=hello world', '--max_new_tokens=3', '--json'], cwd=cwd,
                        env=gcs_emulator.env(url), capture_output=True, text=True, timeout=300)


def test_generate_reads_gs_weights_and_refuses_an_empty_url(bucket, tmp_path):
  local = _generate(LLAMA, bucket, tmp_path)
  remote = _generate(f'gs://{BUCKET}/models/llama', bucket, tmp_path)
  assert local.returncode == 0, local.stderr[-2000:]
  assert remote.returncode == 0, remote.stderr[-2000:]
  a, b = json.loads(local.stdout), json.loads(remote.stdout)
  assert len(a['ids']) == 3 and (a['prompt_ids'], a['ids']) == (b['prompt_ids'], b['ids'])
  missing = f'gs://{BUCKET}/models/nothing'
  os.makedirs(tmp_path / 'gs:' / BUCKET / 'models' / 'nothing')   # never read instead
  r = _generate(missing, bucket, tmp_path)
  lines = [x for x in r.stderr.splitlines() if x.startswith('ropex.generate: ')]
  assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
  assert lines == [f"ropex.generate: --model='{missing}' does not exist; give a ropex workdir "
                   'or a folder of released weights'], r.stderr


def _allowed():
  from ropex.model.io import remote  # pylint: disable=g-import-not-at-top
  return remote.ALLOWED


def test_export_from_gs_writes_the_local_exports_files(bucket, tmp_path):
  outs = {}
  for name, model in (('local', LLAMA), ('gs', f'gs://{BUCKET}/models/llama')):
    outs[name] = tmp_path / name
    r = subprocess.run([sys.executable, '-m', 'ropex.export', f'--model={model}',
                        f'--out={outs[name]}'], cwd=tmp_path, env=gcs_emulator.env(bucket),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
  names = sorted(os.listdir(outs['local']))
  assert 'model.safetensors' in names and 'config.json' in names
  assert sorted(os.listdir(outs['gs'])) == names
  for n in names:
    assert (outs['gs'] / n).read_bytes() == (outs['local'] / n).read_bytes(), n


def test_evaluate_and_analyze_of_gs_weights_record_the_urls_never_the_copy(bucket, tmp_path):
  """End to end on the URL (smallest settings): what evaluate (results.json, the config in its
  group key) and analyze (summary.json, report) write names the URL of the weights and of their
  tokenizer, never the local staging folder, which both runs removed when they ended; analyze
  tokenized the prompts with the fixture's own tokenizer."""
  hf = f'gs://{BUCKET}/models/llama'
  (tmp_path / 'docs.jsonl').write_text(json.dumps({'text': 'the quick brown fox jumps over '
                                                   'the lazy dog ' * 4}) + '\n')
  (tmp_path / 'prompts.jsonl').write_text('{"text": "the quick brown fox"}\n')
  (tmp_path / 'tmp').mkdir()
  env = dict(gcs_emulator.env(bucket), TMPDIR=str(tmp_path / 'tmp'))
  runs = {'evaluate': ['--suite=perplexity', f'--data=text:{tmp_path}/docs.jsonl:text',
                       '--lengths=16', '--examples=1'],
          'analyze': [f'--prompts={tmp_path}/prompts.jsonl', '--top_heads=0', '--max_len=24']}
  for entry, flags in runs.items():
    r = subprocess.run([sys.executable, '-m', f'ropex.{entry}', f'--model={hf}',
                        f'--out={tmp_path / entry}', *flags], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'ropex: copying 5 files' in r.stderr
  staging = str(tmp_path / 'tmp')
  assert os.listdir(staging) == []   # each run's copy removed when it ended
  results = json.loads((tmp_path / 'evaluate' / 'results.json').read_text())
  config = json.loads(results['run']['group'])   # the run's whole config, as compare groups it
  assert results['run']['imported_from']['path'] == hf == config['imported_from']['path']
  assert (results['run']['tokenizer'], config['data']['tokenizer_path']) == (
      'huggingface', f'{hf}/tokenizer.json')
  summary = json.loads((tmp_path / 'analyze' / 'summary.json').read_text())
  assert (summary['weights'], summary['source']['path'], summary['tokenizer']) == (
      hf, hf, f'{hf}/tokenizer.json')
  report = (tmp_path / 'analyze' / 'report.md').read_text()
  for text in ((tmp_path / 'evaluate' / 'results.json').read_text(), json.dumps(summary), report):
    assert staging not in text and 'ropex-weights-' not in text
  from ropex.model.io import tokenizer  # pylint: disable=import-outside-toplevel
  arrays = np.load(tmp_path / 'analyze' / 'arrays.npz')
  expected = [0] + tokenizer.load(os.path.join(LLAMA, 'tokenizer.json')).encode(
      'the quick brown fox')   # bos (0) + the fixture tokenizer's ids
  assert arrays['tokens_PT'][0, :arrays['lengths_P'][0]].tolist() == expected


_DESCRIBE = r'''
import contextlib, io as io_lib, json, os, sys
from absl import flags
from ropex import describe
from ropex.model.io import remote
flags.FLAGS(['describe', f'--model={sys.argv[1]}'])
printed = {}
for model in sys.argv[1:]:   # python -m ropex.describe --model=MODEL, the URL first
  flags.FLAGS.model = model
  with contextlib.redirect_stdout(io_lib.StringIO()) as text:
    describe.main([])
  printed[model] = text.getvalue()
  if model == sys.argv[1]:
    root = remote._root[0]
    staged = sorted(os.path.relpath(os.path.join(d, f), root)
                    for d, _, names in os.walk(root) for f in names)
print(json.dumps({'printed': printed, 'staged': staged}))
'''


def test_describe_of_a_gs_hugging_face_folder_copies_its_config_json_alone(bucket, tmp_path):
  """describe reads no weights, so of a URL it copies config.json and no *.safetensors (the
  staging folder, listed after describe ran); it prints what it prints for the local folder,
  the URL in place of the path."""
  hf = f'gs://{BUCKET}/models/llama'
  r = subprocess.run([sys.executable, '-c', _DESCRIBE, hf, LLAMA], cwd=tmp_path,
                     env=gcs_emulator.env(bucket), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out['staged'] == ['0/llama/config.json'], out['staged']
  size = os.path.getsize(os.path.join(LLAMA, 'config.json'))
  assert f'copying 1 files ({size} bytes: config.json) of {hf}' in r.stderr, r.stderr
  local, remote = out['printed'][LLAMA], out['printed'][hf]
  assert 'parameters: total' in local and os.path.abspath(LLAMA) in local
  assert remote == local.replace(os.path.abspath(LLAMA), hf).replace(LLAMA, hf)
