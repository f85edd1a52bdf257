"""``python -m ropex.generate`` end to end: a trained workdir and a released (Hugging Face
fixture) model talk, their tokens are the full forward's greedy argmax; bad inputs are one line,
exit 2."""

import json
import os
import shutil

import numpy as np
import pytest

import cli_runs

HF = os.path.join(cli_runs.ROOT, 'tests', 'fixtures', 'hf')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp('gen') / 'run'
  r = cli_runs.run(path, *cli_runs.SMALL, '--config.train.steps=4')
  assert r.returncode == 0, r.stderr[-2000:]
  return path


def _check_greedy(cfg, params, lines):
  from ropex import model as model_lib  # pylint: disable=g-import-not-at-top
  for line in lines:
    out = json.loads(line)
    seq = np.asarray([out['prompt_ids'] + out['ids']], np.int32)
    logits = np.asarray(model_lib.Transformer(cfg).apply({'params': params}, seq))
    n = len(out['prompt_ids'])
    assert np.argmax(logits[0], -1)[n - 1:-1].tolist()[:len(out['ids'])] == out['ids']


def test_workdir_batch_json_is_greedy(workdir, tmp_path):
  from ropex.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from ropex.training import inference  # pylint: disable=g-import-not-at-top
  prompts = tmp_path / 'prompts.txt'
  prompts.write_text('The cat\nA much longer second prompt\n')
  r = cli_runs.run_module('ropex.generate', f'--model={workdir}', f'--prompts_file={prompts}',
                          '--max_new_tokens=6', '--json', devices=2)
  assert r.returncode == 0, r.stderr[-2000:]
  lines = r.stdout.strip().splitlines()
  assert [json.loads(x)['prompt'] for x in lines] == ['The cat', 'A much longer second prompt']
  assert json.loads(lines[0])['prompt_ids'][0] == 1   # the byte tokenizer's bos (data.add_bos)
  config, params, _ = inference.load_for_inference(str(workdir))
  _check_greedy(ModelConfig.from_config(config.model), params, lines)


@pytest.mark.parametrize('model', ['hf/gemma3', 'gguf/gemma2.gguf'])
def test_released_model_is_greedy(model):
  """A Hugging Face folder and a GGUF file (its tokenizer rebuilt from the file's vocabulary)."""
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  path = os.path.join(HF, '..', model)
  r = cli_runs.run_module('ropex.generate', f'--model={path}', '--prompt=hello world',
                          '--max_new_tokens=5', '--json')
  assert r.returncode == 0, r.stderr[-2000:]
  imported = io.load_model(path)
  out = json.loads(r.stdout)
  assert out['prompt_ids'][0] == imported.tokenizer.bos_id
  _check_greedy(imported.cfg, imported.params, r.stdout.strip().splitlines())


@pytest.fixture(scope='module')
def no_tokenizer(tmp_path_factory):
  path = tmp_path_factory.mktemp('notok') / 'llama'
  shutil.copytree(os.path.join(HF, 'llama'), path)
  os.remove(path / 'tokenizer.json')
  return path


@pytest.mark.parametrize('args, expected', [
    (['--model={tmp}/notes.txt', '--prompt=hi'], 'neither a Hugging Face checkpoint folder'),
    (['--model={notok}', '--prompt=hi'], 'has no tokenizer'),
    (['--model={run}', '--prompt=' + 'x' * 40, '--max_length=32'], 'the limit 32'),
    (['--model={run}', '--prompt=  '], '--prompt is empty'),
    (['--model={run}', '--prompts_file={tmp}/blank.txt'], 'line 2 is an empty prompt'),
    (['--model={tmp}/absent', '--prompt=hi'], 'does not exist'),
    (['--model={run}', '--prompt=hi', '--top_p=0'], '--top_p'),
])
def test_bad_input_is_one_line(workdir, no_tokenizer, tmp_path, args, expected):
  (tmp_path / 'notes.txt').write_text('not a model')
  (tmp_path / 'blank.txt').write_text('first\n\nthird\n')
  fill = lambda s: s.format(tmp=tmp_path, notok=no_tokenizer, run=workdir)
  r = cli_runs.run_module('ropex.generate', *map(fill, args))
  lines = [x for x in r.stderr.splitlines() if x.startswith('ropex.generate: ')]
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr and len(lines) == 1 and expected in lines[0], r.stderr
