"""Every entry point fails on bad input in one line: a non-zero exit status (2 for bad input
and usage errors), no traceback, a last stderr line ``ropex.<entry>: ...`` naming the input,
and nothing created or changed (a snapshot of the watched paths and of the shared fixture
runs — every file's path, mtime and size, every folder's path — is the same before and after).

The cases run as ``python -m ropex.<entry>`` through ``tests/entry_server.py`` (the heavy
imports once, one forked child per case, four at a time), so the table of ~70 cases costs
about as much as a handful of subprocesses. Classes covered: flags and usage, config and study
files and fields, output paths (a file, a path under a file, an unwritable folder: /proc),
URLs without a reachable backend (a closed loopback port as the GCS endpoint), file formats
(non-UTF-8 metrics, a binary corpus, random bytes named .safetensors), backends (cuDNN on a
CPU host), damaged checkpoints without checksums (train and evaluate alike), and the one rule
both use to choose a checkpoint (verified steps first).
"""

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

import cli_runs
from ropex.config import defaults as config_base
from ropex.training import loop

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'entry_server.py')
T = '--config=configs/tiny.py'
TEXT = ('--config.data.source=text',)
EVAL_FAST = ('--lengths=16', '--suite=perplexity', '--examples=1')
# gs:// through gcsfs against a loopback endpoint, never the network: {gcs} is a local server
# that answers every request 401 (no credentials); port 9 (closed) stands for no network.
# Google's metadata server is pointed at the closed port too.
NO_GCS = {'EPATH_USE_TF': 'false', 'STORAGE_EMULATOR_HOST': '{gcs}', 'NO_GCE_CHECK': 'True',
          'GCE_METADATA_HOST': '127.0.0.1:9', 'GCE_METADATA_IP': '127.0.0.1:9'}
CLOSED_PORT = 'http://127.0.0.1:9'


class _Unauthorized(http.server.BaseHTTPRequestHandler):
  """A GCS JSON API that refuses every request as GCS does without credentials."""

  def _deny(self):
    body = json.dumps({'error': {'code': 401, 'message': 'Anonymous caller does not have '
                                 'storage.objects.list access to the bucket.'}}).encode()
    self.send_response(401)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _deny

  def log_message(self, *args):
    del args


@pytest.fixture(scope='module')
def gcs_without_credentials():
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Unauthorized)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()


def snapshot(root) -> dict | None:
  """``{relative path: (mtime_ns, size)}`` of every file and ``{path/: None}`` of every folder
  under ``root`` (``root`` itself if a file); None if it does not exist."""
  root = str(root)
  if not os.path.lexists(root):
    return None
  if not os.path.isdir(root):
    st = os.stat(root)
    return {'': (st.st_mtime_ns, st.st_size)}
  out = {}
  for d, dirs, files in os.walk(root):
    for name in dirs:
      out[os.path.relpath(os.path.join(d, name), root) + '/'] = None
    for name in files:
      st = os.stat(os.path.join(d, name))
      out[os.path.relpath(os.path.join(d, name), root)] = (st.st_mtime_ns, st.st_size)
  return out


def _damage(src, dst, keep_steps, unverified_step, how):
  """A copy of the run ``src`` keeping ``keep_steps``, whose ``unverified_step`` has lost its
  checksum file and has ``how`` damage: 'metadata' (truncated) or 'arrays' (overwritten)."""
  shutil.copytree(src, dst)
  for step in os.listdir(dst / 'checkpoints'):
    if int(step) not in keep_steps:
      shutil.rmtree(dst / 'checkpoints' / step)
  step_dir = dst / 'checkpoints' / str(unverified_step)
  os.remove(step_dir / 'ropex_checksums.json')
  if how == 'metadata':
    data = (step_dir / 'state' / '_METADATA').read_bytes()
    (step_dir / 'state' / '_METADATA').write_bytes(data[:len(data) // 2])
  else:
    arrays = step_dir / 'state' / 'ocdbt.process_0' / 'd'
    for f in os.listdir(arrays):
      size = os.path.getsize(arrays / f)
      (arrays / f).write_bytes(bytes((i * 7 + 3) % 256 for i in range(size)))


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
  """Bad input files, and a finished 4-step run (checkpoints at 2 and 4, both verified) with
  damaged copies."""
  root = tmp_path_factory.mktemp('bad')
  (root / 'syntax.py').write_text('def get_config(:\n')
  (root / 'noget.py').write_text('X = 1\n')
  (root / 'notdict.py').write_text('def get_config(arg=None):\n  return {"a": 1}\n')
  (root / 'broken.jsonl').write_text('{"text": "ok"}\n{"text": broken\n')
  (root / 'nofield.jsonl').write_text('{"body": "some text"}\n')
  (root / 'empty.txt').write_text('')
  (root / 'garbage.model').write_bytes(bytes(range(256)) * 2)
  (root / 'binary.txt').write_bytes(bytes(range(256)) * 64)
  (root / 'small.txt').write_text('\n'.join(f'the rotary head {i % 7} turns' for i in range(200)))
  (root / 'afile').write_text('hi\n')
  (root / 'results.json').write_text('{garbage')
  (root / 'rand.safetensors').write_bytes(bytes((i * 31 + 7) % 256 for i in range(4096)))
  (root / 'st').mkdir()
  (root / 'st' / 'model.safetensors').write_bytes((root / 'rand.safetensors').read_bytes())
  shutil.copytree(os.path.join(cli_runs.ROOT, 'tests', 'fixtures', 'hf', 'llama'),
                  root / 'notok', ignore=shutil.ignore_patterns('tokenizer*'))
  study = ('import ml_collections\n\ndef get_config(arg=None):\n  c = ml_collections.ConfigDict()'
           '\n{fields}  return c\n')
  good = dict(runs=repr(str(root / 'run')), variants="'base=|pi4=model.pe.position_scale=4'",
              lengths="'16'", depths="'0'", suite="'perplexity'", examples='1',
              task_examples='1', out=repr(str(root / 'study_out')))
  body = lambda d: ''.join(f'  c.{k} = {v}\n' for k, v in d.items())
  (root / 'study_empty.py').write_text(study.format(fields=''))
  (root / 'study_typo.py').write_text(study.format(fields=body(
      {('lenghts' if k == 'lengths' else k): v for k, v in good.items()})))
  (root / 'study_badvariant.py').write_text(study.format(fields=body(dict(
      good, variants="'base=|pi4=model.pe.position_scale=4|typo=model.pe.postion_scale=4'"))))
  c = config_base.base_config('tiny')
  c.train.update(steps=4, batch_size=8, seq_len=64, warmup_steps=1, log_every_steps=1)
  c.checkpoint.every_steps, c.eval.steps = 2, 0
  loop.train(c, str(root / 'run'))
  _damage(root / 'run', root / 'meta_only', {4}, 4, 'metadata')
  _damage(root / 'run', root / 'arrays_only', {4}, 4, 'arrays')
  _damage(root / 'run', root / 'fallback_eval', {2, 4}, 4, 'metadata')
  _damage(root / 'run', root / 'fallback_train', {2, 4}, 4, 'arrays')
  (root / 'badmetrics').mkdir()
  shutil.copy(root / 'run' / 'config.json', root / 'badmetrics' / 'config.json')
  (root / 'badmetrics' / 'metrics.jsonl').write_bytes(b'{"step": 1, "train/loss": 2.0}\n\xff\xfe\n')
  return root


# (entry, arguments, watched path, text the last line must contain, exit status[, env])
CASES = [
    # config files and fields
    ('train', ['--config={b}/syntax.py', '--workdir={new}'], '{new}', 'syntax error at line 1', 2),
    ('train', ['--config={b}/noget.py', '--workdir={new}'], '{new}', 'has no get_config', 2),
    ('train', ['--config={b}/notdict.py', '--workdir={new}'], '{new}', 'returned a dict', 2),
    ('train', ['--config=configs/missing.py', '--workdir={new}', '--config.train.steps=3'],
     '{new}', "--config='configs/missing.py' is not a file", 2),
    ('train', ['--config=configs/tiny.py:p=abc', '--workdir={new}'], '{new}', "p='abc'", 2),
    ('train', [T, '--workdir={new}', '--config.train.warmup_steps=' + '1' * 31], '{new}',
     'train.warmup_steps=', 2),
    ('train', [T, '--workdir={new}', '--config.train.seq_len=100000000000'], '{new}',
     'train.seq_len=', 2),
    ('train', [T, '--workdir={b}/run', '--config.train.batch_size=16'], '{b}/run',
     'train.batch_size=8 but this command has train.batch_size=16', 2),
    ('train', [T, '--workdir={new}', 'extra'], '{new}', 'unexpected arguments', 2),
    # data files
    ('train', [T, '--workdir={new}', *TEXT, '--config.data.text_glob={b}/broken.jsonl'],
     '{new}', 'broken.jsonl line 2 is not a JSON object', 2),
    ('train', [T, '--workdir={new}', *TEXT, '--config.data.text_glob={b}/nofield.jsonl'],
     '{new}', "nofield.jsonl line 1 has no field 'text'", 2),
    ('train', [T, '--workdir={new}', *TEXT, '--config.data.text_glob={b}/empty.txt'], '{new}',
     'data.text_glob matches only empty files', 2),
    ('train', [T, '--workdir={new}', '--config.data.tokenizer=sentencepiece',
               '--config.data.tokenizer_path={b}/garbage.model'], '{new}',
     'data.tokenizer_path=', 2),
    # output paths: a file, under a file, unwritable (/proc refuses even root), unreachable URL
    ('train', [T, '--workdir={b}/afile'], '{b}/afile', 'is a file, not a directory', 2),
    ('train', [T, '--workdir={b}/afile/run'], '{b}/afile', "which is a file", 2),
    ('train', [T, '--workdir=/proc/ropex-test-run'], '{new}',
     "--workdir='/proc/ropex-test-run' cannot be written", 2),
    ('evaluate', ['--workdir={b}/run', '--out=/proc/ropex-test-eval', *EVAL_FAST], '{b}/run',
     "--out='/proc/ropex-test-eval' cannot be written", 2),
    ('evaluate', ['--workdir={b}/run', '--out={b}/afile', *EVAL_FAST], '{b}/afile',
     "--out='", 2),
    ('evaluate', ['compare', '{b}/run', '{b}/run', '--out={b}/afile'], '{b}/afile',
     'is a file', 2),
    ('report', ['{b}/run', '--out={b}/afile'], '{b}/afile', "--out='", 2),
    ('tokenizer', ['--input={b}/broken.jsonl', '--output={b}/afile/t.model'], '{b}/afile',
     'which is a file', 2),
    ('train', [T, '--workdir=gs://ropex-no-bucket/run'], '{new}',
     "--workdir='gs://ropex-no-bucket/run' cannot be reached", 2, NO_GCS),
    # backends
    ('train', [T, '--workdir={new}', '--config.model.attention_impl=cudnn'], '{new}',
     "model.attention_impl='cudnn' needs a GPU", 2),
    ('evaluate', ['--workdir={b}/run', '--override=model.attention_impl=cudnn', '--out={new}',
                  *EVAL_FAST], '{new}', "model.attention_impl='cudnn' needs a GPU", 2),
    # damaged checkpoints without checksums, no verified step left: train and evaluate alike
    ('train', [T, '--workdir={b}/meta_only', '--config.train.batch_size=8',
               '--config.train.seq_len=64', '--config.train.steps=4'], '{b}/meta_only',
     'checkpoints/4 cannot be read (it is not valid JSON', 2),
    ('evaluate', ['--workdir={b}/meta_only', '--out={new}', *EVAL_FAST], '{b}/meta_only',
     'checkpoints/4 cannot be read (it is not valid JSON', 2),
    ('train', [T, '--workdir={b}/arrays_only', '--config.train.batch_size=8',
               '--config.train.seq_len=64', '--config.train.steps=4'], '{b}/arrays_only',
     'checkpoints/4 cannot be read', 2),
    ('evaluate', ['--workdir={b}/arrays_only', '--out={new}', *EVAL_FAST], '{b}/arrays_only',
     'checkpoints/4 cannot be read', 2),
    # evaluate
    ('evaluate', ['--workdir={new}'], '{new}', 'holds no config.json', 2),
    ('evaluate', ['--workdir={b}/run', '--step=999'], '{b}/run', '--step 999 has no checkpoint', 2),
    ('evaluate', ['--workdir={b}/run', '--step=-1'], '{b}/run', '--step -1 has no checkpoint', 2),
    ('evaluate', ['--workdir={b}/run', '--lengths=100000000000'], '{b}/run', '--lengths has', 2),
    ('evaluate', ['--workdir={b}/run', '--examples=many'], '{b}/run',
     "--examples='many'; allowed: a positive integer or auto", 2),
    ('evaluate', ['--workdir={b}/run', '--target_se=0'], '{b}/run',
     '--target_se=0.0 must be a positive number', 2),
    ('evaluate', ['compare', '{b}/results.json', '--out={new}'], '{new}',
     'results.json', 2),
    ('evaluate', ['--workdir={b}/run', '--suite=ruler', '--ruler=none'], '{b}/run',
     'leaves nothing to evaluate', 2),
    ('evaluate', ['--workdir={b}/run', '--data=text:{b}/nothing*.txt'], '{b}/run',
     "--data='text:", 2),
    ('evaluate', ['--workdir={b}/run', '--data=tfds:ropex_no_such_set:train'], '{b}/run',
     "--data='tfds:ropex_no_such_set:train' cannot be read", 2),
    ('evaluate', [], '{new}', 'give one of --workdir or --model', 2),
    ('evaluate', ['--model={b}/notok', '--out={new}', '--lengths=16'], '{new}',
     'notok has no tokenizer', 2),
    ('evaluate', ['compare', '{b}/run'], '{new}', 'usage: python -m ropex.evaluate compare', 2),
    ('evaluate', ['--workdir={b}/run', 'extra'], '{b}/run', 'unexpected arguments', 2),
    # analyze, and weights that are not what their name says
    ('analyze', ['--workdir={b}/run', '--ablate_fraction=2'], '{b}/run', '--ablate_fraction', 2),
    ('analyze', ['--workdir={b}/run', '--top_heads=-3'], '{b}/run', '--top_heads', 2),
    ('analyze', ['--workdir={b}/run', '--batch_size=0'], '{b}/run', '--batch_size', 2),
    ('analyze', ['--workdir={b}/run', 'bogus'], '{b}/run', "unknown command 'bogus'", 2),
    ('analyze', ['--gemma={b}/rand.safetensors', '--out={new}'], '{new}',
     'is neither a Hugging Face checkpoint folder', 2),
    ('analyze', ['--gemma={b}/st', '--out={new}'], '{new}',
     'is neither a Hugging Face checkpoint folder', 2),
    ('train', [T, '--workdir={new}', '--config.train.init_from={b}/st'], '{new}',
     "train.init_from='", 2),
    ('train', [T, '--workdir={new}', '--config.train.init_from={b}/run:999'], '{new}',
     'train.init_from (its :step) 999 has no checkpoint', 2),
    # describe
    ('describe', ['--config=configs/missing.py'], '{new}', 'is not a file', 2),
    ('describe', [T, '--config.train.stepz=3'], '{new}', "did you mean 'steps'", 2),
    ('describe', ['--config={b}/syntax.py'], '{new}', 'syntax error', 2),
    ('describe', ['--config=configs/tiny.py:p=abc'], '{new}', "p='abc' must be a float", 2),
    ('describe', [T, '--seq_len=0'], '{new}', '--seq_len', 2),
    ('describe', [T, '--seq_len=-5'], '{new}', '--seq_len', 2),
    ('describe', [], '{new}', 'give one of --config', 2),
    # study
    ('study', ['--config=configs/missing_study.py'], '{new}', 'is not a file', 2),
    ('study', ['--config={b}/syntax.py'], '{new}', 'syntax error at line 1', 2),
    ('study', ['--config={b}/study_empty.py'], '{b}/study_out',
     'is not a study config: it has no runs', 2),
    ('study', ['--config={b}/study_typo.py'], '{b}/study_out',
     "study field 'lenghts' is not known; did you mean 'lengths'?", 2),
    ('study', ['--config={b}/study_badvariant.py'], '{b}/study_out',
     "study variant 'typo'", 2),
    ('study', ['--config=configs/study_tiny.py', '--config.lenghts=16'], '{new}',
     "did you mean 'lengths'", 2),
    ('study', ['--config=configs/study_tiny.py', 'extra'], '{new}', 'unexpected arguments', 2),
    ('study', [], '{new}', '--config is required', 2),
    # report
    ('report', ['{new}'], '{new}', 'has no config.json', 2),
    ('report', ['{b}/badmetrics', '--out={new}'], '{new}',
     "metrics file='", 2),
    ('report', [], '{new}', 'give one or more run workdirs', 2),
    # tokenizer
    ('tokenizer', ['--input={b}/nothing*.txt', '--output={new}/t.model'], '{new}', '--input=', 2),
    ('tokenizer', ['--input={b}/broken.jsonl', '--output={new}/t.model', '--vocab_size=0'],
     '{new}', '--vocab_size', 2),
    ('tokenizer', ['--input={b}/broken.jsonl', '--output={new}/t.model', '--vocab_size=5'],
     '{new}', '--vocab_size', 2),
    ('tokenizer', ['--input={b}/empty.txt', '--output={new}/t.model'], '{new}', 'empty files', 2),
    ('tokenizer', ['--input={b}/garbage.model', '--output={new}/t.model'], '{new}',
     'allowed extensions', 2),
    ('tokenizer', ['--input={b}/broken.jsonl', '--output={new}/t.model'], '{new}', 'line 2', 2),
    ('tokenizer', ['--input={b}/nofield.jsonl', '--output={new}/t.model'], '{new}',
     '--text_field', 2),
    ('tokenizer', ['--input={b}/binary.txt', '--output={new}/tok/t.model'], '{new}',
     "--input file='", 2),
    ('tokenizer', ['--input={b}/small.txt', '--output={new}/t.model', 'extra'], '{new}',
     'unexpected arguments', 2),
    # the other entry points
    ('compile', ['--config=configs/missing.py'], '{new}', 'is not a file', 2),
    ('demo', ['--config=configs/missing.py'], '{new}', "flag 'config'", 2),
    ('sweep', [], '{new}', '--config is required', 2),
]

# Cases that succeed, run in the same batch: (id, entry, arguments, env)
GOOD = {
    # evaluate and train choose the same checkpoint: the verified step 2, not the newer step 4
    # that has no checksums (damaged metadata / arrays)
    'eval_fallback': ('evaluate', ['--workdir={b}/fallback_eval', '--out={b}/fallback_out',
                                   *EVAL_FAST]),
    'train_fallback': ('train', [T, '--workdir={b}/fallback_train', '--config.train.steps=2',
                                 '--config.train.batch_size=8', '--config.train.seq_len=64',
                                 '--config.checkpoint.every_steps=2', '--config.eval.steps=0']),
    'vocab': ('tokenizer', ['--input={b}/small.txt', '--output={b}/vocab/t.model',
                            '--vocab_size=8000']),
}


def _start_read_only(bad, root) -> dict:
  """train and evaluate on a copy of the run mounted read-only (``unshare -rm``: a private
  user and mount namespace), started now, collected by :func:`_finish_read_only`."""
  ro = root / 'ro_run'
  shutil.copytree(bad / 'run', ro)
  mount = 'mount --bind -o ro "$0" "$0" && exec "$@"'
  commands = {
      'train': ['-m', 'ropex.train', T, f'--workdir={ro}', '--config.train.steps=4',
                '--config.train.batch_size=8', '--config.train.seq_len=64'],
      'evaluate': ['-m', 'ropex.evaluate', f'--workdir={ro}', *EVAL_FAST]}
  return {'path': ro, 'before': snapshot(ro),
          'procs': {name: subprocess.Popen(
              ['unshare', '-rm', 'sh', '-c', mount, str(ro), sys.executable, *cmd],
              cwd=cli_runs.ROOT, env=cli_runs.env(), stdout=subprocess.PIPE,
              stderr=subprocess.PIPE, text=True) for name, cmd in commands.items()},
          'expected': {
              'train': f"ropex.train: --workdir='{ro}' cannot be written (read-only file system",
              'evaluate': f"ropex.evaluate: --out='{ro}/eval' cannot be written (read-only "
                          'file system'}}


def _finish_read_only(started: dict | None) -> dict | None:
  if started is None:
    return None
  procs = started.pop('procs')
  started['results'] = {}
  for name, proc in procs.items():
    _, err = proc.communicate(timeout=600)
    started['results'][name] = (proc.returncode, err)
  return started


def _fill(text, bad, new, gcs=''):
  return text.format(b=bad, new=new, gcs=gcs)


def _case(entry, args, bad, new, env=None, gcs=''):
  return {'module': f'ropex.{entry}', 'args': [_fill(a, bad, new) for a in args],
          'env': {k: _fill(v, bad, new, gcs) for k, v in (env or {}).items()},
          'cwd': cli_runs.ROOT}


@pytest.fixture(scope='module')
def batch(bad, tmp_path_factory, gcs_without_credentials):
  """Runs every case (bad and good) through the fork server; snapshots around the batch."""
  news = [tmp_path_factory.mktemp(f'case{i}') / 'new' for i in range(len(CASES))]
  watched = [_fill(c[2], bad, new) for c, new in zip(CASES, news)]
  shared = [bad / d for d in ('run', 'meta_only', 'arrays_only', 'badmetrics', 'st')] + [
      bad / f for f in ('afile', 'rand.safetensors', 'results.json', 'small.txt')]
  before = [snapshot(w) for w in watched]
  shared_before = {str(p): snapshot(p) for p in shared}
  cases = [_case(c[0], c[1], bad, new, c[5] if len(c) > 5 else None, gcs_without_credentials)
           for c, new in zip(CASES, news)]
  cases += [_case(e, a, bad, bad / 'unused') for e, a in GOOD.values()]
  read_only = _start_read_only(bad, tmp_path_factory.mktemp('ro')) if _unshare_works() else None
  proc = subprocess.run([sys.executable, SERVER], input=json.dumps(cases), cwd=cli_runs.ROOT,
                        env=cli_runs.env(), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout)
  return {'bad': results[:len(CASES)], 'good': dict(zip(GOOD, results[len(CASES):])),
          'before': before, 'after': [snapshot(w) for w in watched],
          'shared_before': shared_before,
          'shared_after': {str(p): snapshot(p) for p in shared},
          'read_only': _finish_read_only(read_only)}


@pytest.mark.parametrize('index', range(len(CASES)),
                         ids=[f'{c[0]}-{i}' for i, c in enumerate(CASES)])
def test_bad_input_fails_in_one_line(batch, index):
  entry, _, _, expected, status = CASES[index][:5]
  r = batch['bad'][index]
  lines = r['stderr'].strip().splitlines()
  assert r['rc'] == status, r['stderr'][-2000:]
  assert 'Traceback' not in r['stderr'], r['stderr'][-3000:]
  assert lines and lines[-1].startswith(f'ropex.{entry}: '), r['stderr'][-2000:]
  assert expected in lines[-1], lines[-1]
  assert sum(line.startswith(f'ropex.{entry}: ') for line in lines) == 1, r['stderr'][-2000:]
  assert batch['after'][index] == batch['before'][index], 'the watched path changed'


def test_a_damaged_step_is_reported_once_by_a_real_interpreter(bad, tmp_path):
  """The fork server exits children with ``os._exit``; a real ``python -m`` also runs garbage
  collection and tensorstore's late callbacks at exit, where orbax's other (orphaned) reads of
  the damaged step used to report it again after the one-line error (un-retrieved futures,
  'Event loop is closed'): stderr must be the unverified warning and the error, nothing else."""
  r = cli_runs.run_module('ropex.evaluate', f'--workdir={bad}/arrays_only', f'--out={tmp_path}/o',
                          '--lengths=16', '--suite=perplexity', '--examples=1')
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2, r.stderr[-3000:]
  assert len(lines) == 2, r.stderr[-3000:]
  assert 'IS UNVERIFIED' in lines[0]
  assert lines[1].startswith('ropex.evaluate: checkpoint ') and 'cannot be read' in lines[1]


def test_no_case_changed_the_shared_inputs(batch):
  assert batch['shared_after'] == batch['shared_before']


def test_evaluate_and_train_choose_the_verified_step(batch, bad):
  """Step 4 lost its checksums and is damaged, step 2 is verified: both entry points load
  step 2 (one rule, integrity.choose) and say what they passed over."""
  ev, tr = batch['good']['eval_fallback'], batch['good']['train_fallback']
  assert ev['rc'] == 0, ev['stderr'][-2000:]
  results = json.loads((bad / 'fallback_out' / 'results.json').read_text())
  assert results['run']['step'] == 2
  assert 'passed over: step 4: no checksums' in ev['stderr']
  assert tr['rc'] == 0, tr['stderr'][-2000:]
  assert 'resumed from the checkpoint at step 2' in tr['stdout'] + tr['stderr']
  assert 'passed over: step 4: no checksums' in tr['stderr']
  # training sets the newer unreadable step aside (moved, never deleted)
  assert os.path.isdir(bad / 'fallback_train' / 'checkpoints_corrupt' / '4')


def test_tokenizer_says_when_the_corpus_yields_fewer_pieces(batch, bad):
  r = batch['good']['vocab']
  assert r['rc'] == 0, r['stderr'][-2000:]
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  size = spm.SentencePieceProcessor(model_file=str(bad / 'vocab' / 't.model')).GetPieceSize()
  assert size < 8000
  warning = [line for line in r['stderr'].splitlines() if line.startswith('ropex.tokenizer: ')]
  assert len(warning) == 1 and f'the model has {size} pieces' in warning[0], r['stderr']
  assert f'({size} pieces)' in r['stdout']


@pytest.mark.slow
def test_gs_workdir_without_network_fails_in_one_line(tmp_path):
  """A closed loopback port as the GCS endpoint: the connection is refused (gcsfs retries it
  six times with backoff, ~35 s, before the error reaches ropex). The fast table covers the
  same mapping with an endpoint that answers 401."""
  env = cli_runs.env()
  env.update({k: v.format(gcs=CLOSED_PORT) for k, v in NO_GCS.items()})
  r = subprocess.run([sys.executable, '-m', 'ropex.train', T, '--workdir=gs://ropex-no-bucket/run'],
                     cwd=cli_runs.ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1].startswith(
      "ropex.train: --workdir='gs://ropex-no-bucket/run' cannot be reached: connection refused")


def _unshare_works() -> bool:
  try:
    probe = subprocess.run(['unshare', '-rm', 'true'], capture_output=True, timeout=30)
    return probe.returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


@pytest.mark.skipif(not _unshare_works(), reason='no user namespaces here (unshare -rm): the '
                    'write probe is covered by the /proc cases of the table')
def test_read_only_workdir_fails_before_anything_is_read(batch):
  """The run's workdir on a read-only mount (a bind mount in a private mount namespace: chmod
  does not stop root, a read-only mount does). train refuses before restoring the checkpoint,
  evaluate before loading it (its default --out lies in the workdir); nothing changes."""
  ro = batch['read_only']
  for name, (rc, err) in ro['results'].items():
    assert rc == 2, err[-2000:]
    assert 'Traceback' not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(ro['expected'][name]), err[-2000:]
    assert 'UNVERIFIED' not in err and 'resumed' not in err
  assert snapshot(ro['path']) == ro['before']


def test_a_signal_outside_the_training_loop_is_one_line(tmp_path):
  """SIGTERM while an entry point works (here: right away) ends it with one line naming the
  signal and exit status 128 + 15, through the shared runner."""
  code = ('import os, signal\nfrom ropex.config import loading\n'
          'def main(argv):\n  os.kill(os.getpid(), signal.SIGTERM)\n'
          '  raise AssertionError("not reached")\n'
          'loading.run(main, "ropex.probe", config_flag=None)\n')
  r = subprocess.run([sys.executable, '-c', code], cwd=cli_runs.ROOT, env=cli_runs.env(),
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 128 + signal.SIGTERM, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith('ropex.probe: stopped by SIGTERM')


def test_sigterm_during_training_set_up_leaves_no_workdir(tmp_path, monkeypatch):
  """A SIGTERM after the checkpoint folder was created but before the first step: the
  Interrupted error reaches the runner and the workdir this run created is gone again."""
  from ropex.config import loading  # pylint: disable=g-import-not-at-top
  from ropex.errors import Interrupted  # pylint: disable=g-import-not-at-top
  from ropex.training import init_from  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  seen = {}

  def signalled(*args, **kwargs):
    del args, kwargs
    seen['checkpoints'] = (workdir / 'checkpoints').is_dir()   # set-up had written there
    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError('the signal did not interrupt')

  monkeypatch.setattr(init_from, 'initial_state', signalled)
  previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  loading._install_signal_handlers()  # pylint: disable=protected-access
  try:
    c = config_base.base_config('tiny')
    c.train.update(steps=2, batch_size=8, seq_len=64, warmup_steps=1)
    c.eval.steps = 0
    with pytest.raises(Interrupted) as e:
      loop.train(c, str(workdir))
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  assert e.value.signum == signal.SIGTERM
  assert seen['checkpoints']
  assert not workdir.exists()
