"""A ``gs://`` workdir against a real GCS JSON API on loopback (fake-gcs-server, started here).

Both storage stacks are pointed at the emulator: ``etils.epath`` through fsspec/gcsfs
(``EPATH_USE_TF=false``, ``STORAGE_EMULATOR_HOST``; TensorFlow's gfile has no endpoint
setting) and orbax's tensorstore (``TENSORSTORE_GCS_HTTP_URL``, with the test token
``GOOGLE_AUTH_TOKEN_FOR_TESTING``). No credentials, no network beyond 127.0.0.1.
"""

import csv
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

import cli_runs
import gcs_emulator

BUCKET = 'ropex-test'
WORKDIR = f'gs://{BUCKET}/run'
FLAGS = cli_runs.SMALL


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
  with gcs_emulator.serve(BUCKET, tmp_path_factory.mktemp('gcs')) as url:
    yield url


def _objects(url) -> list[str]:
  """Every object name in the bucket, listed through the emulator's JSON API."""
  names, token = [], None
  while True:
    query = '' if token is None else '?pageToken=' + urllib.parse.quote(token)
    page = gcs_emulator.request(url, f'/storage/v1/b/{BUCKET}/o{query}')
    names += [o['name'] for o in page.get('items', [])]
    token = page.get('nextPageToken')
    if not token:
      return sorted(names)


def _run(module, args, url, cwd, timeout=300):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=cwd,
                        env=gcs_emulator.env(url),
                        capture_output=True, text=True, timeout=timeout)


def _train(steps, url, cwd):
  config = os.path.join(cli_runs.ROOT, 'configs', 'tiny.py')
  return _run('ropex.train', [f'--config={config}', f'--workdir={WORKDIR}', *FLAGS,
                              f'--config.train.steps={steps}'], url, cwd)


def test_a_gs_workdir_trains_is_killed_resumes_evaluates_analyzes_and_reports(emulator, tmp_path):
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  killed = _train_and_kill_after(8, emulator, cwd)   # kill -9 once checkpoint 8 is complete
  first = _objects(emulator)
  assert 'run/config.json' in first and 'run/metrics.jsonl' in first
  assert any(n.startswith('run/checkpoints/8/state/') for n in first), first
  done = sorted(int(n.split('/')[2]) for n in first
                if n.startswith('run/checkpoints/') and n.endswith('/ropex_checksums.json'))
  assert 8 in done and killed.returncode == -9
  last = done[-1]   # the newest complete checkpoint in the bucket when the run was killed
  final = last + 4

  r = _train(final, emulator, cwd)  # resumes the killed run from the bucket
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'resumed from the checkpoint at step {last} in {WORKDIR}' in r.stdout + r.stderr
  assert f'finished at step {final}' in r.stdout
  events = [n for n in _objects(emulator) if n.startswith('run/tb/events.out.tfevents.')]
  assert len(events) == 2, events   # one event file per life of the run
  records = _tfrecords(_read_bytes(emulator, sorted(events)[-1]))  # the resumed life's file
  assert sum(b'train/loss' in r for r in records) == 4  # steps last+1..final, all flushed

  r = _run('ropex.evaluate', [f'--workdir={WORKDIR}', '--suite=perplexity', '--lengths=32,64',
                              '--examples=2'], emulator, cwd)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'step {final}' in r.stdout
  r = _run('ropex.report', [WORKDIR, f'--out=gs://{BUCKET}/report'], emulator, cwd)
  assert r.returncode == 0, r.stderr[-3000:]
  header, row = csv.reader(_read(emulator, 'report/runs.csv'))
  row = dict(zip(header, row))
  assert (row['status'], row['step'], row['workdir']) == ('finished', str(final), WORKDIR)

  r = _run('ropex.analyze', [f'--workdir={WORKDIR}', '--top_heads=1'], emulator, cwd)
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(''.join(_read(emulator, 'run/analysis/summary.json')))['step'] == final
  report = ''.join(_read(emulator, 'run/analysis/report.md'))
  assert '](figures/frequency_overview.png)' in report  # links relative to the report

  names = _objects(emulator)
  for name in ('run/config.json', 'run/metrics.jsonl', 'run/eval/results.json',
               'run/eval/perplexity.png', 'report/table.md', 'report/table.csv',
               'report/runs.csv', 'report/loss_curves.png', 'run/analysis/report.html',
               'run/analysis/arrays.npz', 'run/analysis/figures/frequency_overview.png'):
    assert name in names, (name, names)
  assert any(n.startswith(f'run/checkpoints/{final}/state/') for n in names), names
  steps = sorted({int(json.loads(line)['step']) for line in _read(emulator, 'run/metrics.jsonl')})
  assert steps == list(range(1, final + 1))  # both lives' records, in the bucket
  results = json.loads(''.join(_read(emulator, 'run/eval/results.json')))
  assert results['run']['step'] == final and results['perplexity']['lengths'] == [32, 64]
  assert all(p is not None and p > 1 for p in results['perplexity']['perplexity'])
  assert not [p for p in (cwd, cli_runs.ROOT) if os.path.exists(os.path.join(p, 'gs:'))]
  assert os.listdir(cwd) == []  # nothing written locally at all


def _train_and_kill_after(step, url, cwd):
  """Starts a long run on the bucket and kills it (SIGKILL) as soon as the checkpoint of
  ``step`` is complete there (its checksum manifest, written after orbax finished the step)."""
  config = os.path.join(cli_runs.ROOT, 'configs', 'tiny.py')
  log = tempfile.TemporaryFile('w+')   # not a pipe: a full pipe would stall the run
  proc = subprocess.Popen([sys.executable, '-m', 'ropex.train', f'--config={config}',
                           f'--workdir={WORKDIR}', *FLAGS, '--config.train.steps=400'],
                          cwd=cwd, env=gcs_emulator.env(url), stdout=log,
                          stderr=subprocess.STDOUT)
  marker = f'run/checkpoints/{step}/ropex_checksums.json'
  deadline = time.time() + 300
  try:
    while marker not in _objects(url):
      if proc.poll() is not None:
        log.seek(0)
        pytest.fail(f'the run ended (status {proc.returncode}) before checkpoint {step}: '
                    f'{log.read()[-3000:]}')
      if time.time() > deadline:
        pytest.fail(f'checkpoint {step} did not appear in the bucket within 300 s')
      time.sleep(0.05)
  finally:
    proc.kill()
    proc.wait(timeout=60)
    log.close()
  return proc


def _read_bytes(url, name) -> bytes:
  path = f'/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe="")}?alt=media'
  with urllib.request.urlopen(url + path, timeout=10) as r:
    return r.read()


def _read(url, name) -> list[str]:
  return _read_bytes(url, name).decode().splitlines(keepends=True)


def _tfrecords(data: bytes) -> list[bytes]:
  """The records of a TFRecord (event) file: u64 length, u32 crc, data, u32 crc each."""
  records, at = [], 0
  while at < len(data):
    (n,) = struct.unpack('<Q', data[at:at + 8])
    records.append(data[at + 12:at + 12 + n])
    at += 12 + n + 4
  assert at == len(data)  # whole records only: nothing torn or left unflushed
  return records


_READ_BOTH = r'''
import json, sys
from ropex.data import text_files, tokenizers
local, url = sys.argv[1:]
out = {}
for name, root in (('local', local), ('gs', url)):
  docs = text_files.TextFiles(root + '/data/*', 'train', 0.25, ('text',))
  tok = tokenizers.SentencePieceTokenizer(root + '/tok/small.model')
  out[name] = {'files': [f.rsplit('/', 1)[1] for f in docs.files],
               'docs': [docs[i] for i in range(len(docs))],
               'ids': tok.encode('rotary position encoding of the attention head')}
try:
  text_files.matching_files(url + '/data/**/*.txt')
except ValueError as e:  # ropex.errors.ConfigError
  out['recursive'] = str(e)
print(json.dumps(out))
'''


def _upload(url, name, data: bytes):
  gcs_emulator.upload(url, BUCKET, name, data)


def test_a_gs_corpus_and_tokenizer_read_as_the_same_files_locally(emulator, tmp_path):
  corpus = tmp_path / 'corpus'  # data/**: the text, tok/: its SentencePiece model
  (corpus / 'data').mkdir(parents=True)
  words = 'rotary position encoding frequency attention head the of and'.split()
  for i in range(3):
    (corpus / 'data' / f'part{i}.txt').write_text(
        '\n'.join(' '.join(words[(i + j + k) % 9] for k in range(8)) for j in range(100)))
  (corpus / 'data' / 'records.jsonl').write_text(
      ''.join(json.dumps({'text': f'record {i} ' * (2 + i)}) + '\n' for i in range(12)))
  r = _run('ropex.tokenizer', ['--input', str(corpus / 'data' / '*.txt'), '--vocab_size', '300',
                               '--output', f'gs://{BUCKET}/corpus/tok/small.model'],
           emulator, tmp_path)  # trained here, written to the bucket
  assert r.returncode == 0, r.stderr[-2000:]
  (corpus / 'tok').mkdir()
  (corpus / 'tok' / 'small.model').write_bytes(_read_bytes(emulator, 'corpus/tok/small.model'))
  for f in (corpus / 'data').iterdir():
    _upload(emulator, f'corpus/data/{f.name}', f.read_bytes())
  r = _run_code(_READ_BOTH, [str(corpus), f'gs://{BUCKET}/corpus'], emulator, tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out['local']['files'] == ['part0.txt', 'part1.txt', 'part2.txt', 'records.jsonl']
  assert len(out['local']['docs']) > 3 and len(out['local']['ids']) > 3
  assert out['gs'] == out['local']  # same files, documents, split and token ids
  assert out['recursive'] == (f"data.text_glob='gs://{BUCKET}/corpus/data/**/*.txt': ** is not "
                              'supported on gs://; allowed: * and ? within one folder level '
                              '(e.g. gs://b/corpus/*/*.txt)')


def _run_code(code, args, url, cwd):
  return subprocess.run([sys.executable, '-c', code, *args], cwd=cwd,
                        env=gcs_emulator.env(url),
                        capture_output=True, text=True, timeout=120)
