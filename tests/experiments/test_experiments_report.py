"""`python -m ropex.report`: the Table 2 layout from run workdirs (fabricated here), with
unfinished / diverged runs marked and the paper's numbers beside ropex's."""
import csv
import json
import math
import os
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from ropex.config import loading
from ropex.evaluation import intervals
from ropex.experiments import paper as paper_lib, report, run_summary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECS = {  # paper row -> config file with args
    'NoPE': 'nope_2b.py', 'RoPE θ=10k': 'rope_2b.py', 'RoPE θ=500k': 'rope_2b.py:theta=500000',
    '0.75-RoPE reversed': 'prope_reversed_2b.py', '0.75 partial (NeoX)': 'partial_2b.py',
    '0.25-RoPE': 'prope_2b.py:p=0.25', '0.75-RoPE': 'prope_2b.py',
}
STEPS = 10


def make_run(root, name, spec, data, losses, eval_every=5):
  """A workdir like ropex.train writes: config.json + metrics.jsonl (one record per step)."""
  sep = ',' if ':' in spec else ':'
  cfg = loading.load(os.path.join(ROOT, 'configs', spec + sep + f'data={data}'))
  cfg.train.steps = STEPS
  workdir = os.path.join(root, name)
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(cfg.to_json(indent=2))
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for step, loss in enumerate(losses, start=1):
      record = {'step': step, 'train/loss': loss}
      if step % eval_every == 0:
        eval_loss = None if loss is None else loss - 0.1
        record.update({'eval/loss': eval_loss,
                       'eval/perplexity': None if loss is None else math.exp(eval_loss)})
      f.write(json.dumps(record) + '\n')
  return workdir


def curve(final, n=STEPS):
  return [final + 2.0 * (n - i) / n for i in range(1, n + 1)]  # decreasing to `final`


@pytest.fixture
def runs(tmp_path):
  dirs, finals = [], {}
  for i, (row, spec) in enumerate(SPECS.items()):
    finals[row, 'wiki'] = 1.5 + 0.01 * i
    dirs.append(make_run(tmp_path, f'{i}_wiki', spec, 'wiki', curve(finals[row, 'wiki'])))
    if row == '0.25-RoPE':  # unfinished: 7 of 10 steps
      finals[row, 'flan'] = 1.9
      dirs.append(make_run(tmp_path, f'{i}_flan', spec, 'flan', curve(1.9, 7)))
    elif row == 'NoPE':  # diverged: NaN written as null
      dirs.append(make_run(tmp_path, f'{i}_flan', spec, 'flan', curve(2.0)[:6] + [None] * 4))
    elif row == 'RoPE θ=500k':  # diverged: loss climbed 1.5 nats above its minimum
      dirs.append(make_run(tmp_path, f'{i}_flan', spec, 'flan', curve(2.0)[:5] + [5.0] * 5))
    elif row == '0.75-RoPE reversed':  # started, nothing logged yet
      dirs.append(make_run(tmp_path, f'{i}_flan', spec, 'flan', []))
    else:
      finals[row, 'flan'] = 1.8 + 0.01 * i
      dirs.append(make_run(tmp_path, f'{i}_flan', spec, 'flan', curve(finals[row, 'flan'])))
  # A duplicate of 0.75-RoPE / wiki that got less far: ignored, with a note.
  dirs.append(make_run(tmp_path, 'dup', SPECS['0.75-RoPE'], 'wiki', curve(3.0, 5)))
  return dirs, finals


def ppl(final_train_loss):
  return math.exp(final_train_loss - 0.1)


def test_statuses(runs):
  dirs, _ = runs
  by_name = {os.path.basename(d): run_summary.summarize(d) for d in dirs}
  assert by_name['0_wiki'].status == 'finished' and by_name['0_wiki'].step == STEPS
  assert (by_name['5_flan'].status, by_name['5_flan'].note) == ('unfinished', 'step 7 of 10')
  assert (by_name['0_flan'].status, by_name['0_flan'].note) == (
      'diverged', 'non-finite loss at step 7')
  assert by_name['2_flan'].status == 'diverged'
  assert by_name['2_flan'].note == f'train loss rose from {min(curve(2.0)[:5]):.3f} to 5.000'
  assert by_name['3_flan'].status == 'no metrics' and by_name['3_flan'].step == 0
  assert run_summary.summarize(dirs[4], diverge_margin=10.0).status == 'finished'


def test_table_layout_values_and_paper_columns(runs, tmp_path):
  dirs, finals = runs
  out = report.report(dirs, str(tmp_path / 'out'))
  header, body, notes = report.table(out['runs'])
  assert header == ['PE', 'Wiki (ropex)', 'FlanV2 (ropex)', 'Wiki (paper)', 'FlanV2 (paper)']
  assert [r[0] for r in body] == list(paper_lib.PAPER_TABLE2)  # the paper's row order
  rows = {r[0]: r[1:] for r in body}
  for row, paper in paper_lib.PAPER_TABLE2.items():
    assert rows[row][2:] == [f'{paper["wiki"]:.4f}', f'{paper["flan"]:.4f}']
    assert rows[row][0] == f'{ppl(finals[row, "wiki"]):.4f}'
  assert rows['0.75-RoPE'][1] == f'{ppl(finals["0.75-RoPE", "flan"]):.4f}'
  assert rows['0.25-RoPE'][1] == f'{math.exp(curve(1.9, 7)[4] - 0.1):.4f} †'  # last eval: step 5
  assert rows['NoPE'][1] == 'diverged ‡' and rows['RoPE θ=500k'][1] == 'diverged ‡'
  assert rows['0.75-RoPE reversed'][1] == '— ∅'
  assert notes == [f'0.75-RoPE / wiki: {dirs[-1]} ignored (duplicate of {dirs[6 * 2]})']
  text = out['markdown']
  assert '| ' + ' | '.join(header) + ' |' in text
  assert 'not ropex results' in text and 'Table 2 of Barbero et al.' in text
  with open(out['table_csv']) as f:
    assert list(csv.reader(f)) == [header] + body
  with open(out['runs_csv']) as f:
    long = list(csv.DictReader(f))
  assert len(long) == len(dirs)
  nope_wiki = next(r for r in long if r['workdir'] == dirs[0])
  assert (nope_wiki['pe'], nope_wiki['dataset'], nope_wiki['status']) == ('NoPE', 'wiki',
                                                                          'finished')
  assert float(nope_wiki['eval_perplexity']) == ppl(finals['NoPE', 'wiki'])
  assert float(nope_wiki['paper_perplexity']) == 4.8594
  image = plt.imread(out['png'])
  assert image.ndim == 3 and image.shape[1] > image.shape[0] > 100  # two panels side by side


def test_labels_for_other_encodings_and_data():
  assert run_summary.pe_label({'kind': 'prope', 'fraction': 0.5,
                               'max_wavelength': 1_000_000}) == '0.5-RoPE θ=1M'
  assert run_summary.pe_label({'kind': 'rope', 'max_wavelength': 12345}) == 'RoPE θ=12345'
  assert run_summary.pe_label({'kind': 'alibi', 'slope': 2}) == 'alibi(slope=2)'
  assert run_summary.dataset_label({'source': 'text', 'text_glob': 'gs://b/flan_v2/*.jsonl'}) == (
      'flan')
  assert run_summary.dataset_label({'source': 'tfds', 'tfds_name': 'c4'}) == 'tfds:c4'


def test_cli(runs, tmp_path):
  dirs, _ = runs
  out = subprocess.run([sys.executable, '-m', 'ropex.report', *dirs[:2], '--out',
                        str(tmp_path / 'cli')], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith('Final validation perplexity')
  assert sorted(os.listdir(tmp_path / 'cli')) == ['loss_curves.png', 'runs.csv', 'table.csv',
                                                  'table.md']
  bad = subprocess.run([sys.executable, '-m', 'ropex.report', str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and 'has no config.json: not a ropex run directory' in bad.stderr


def _reseed(workdir, seed):
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    cfg = json.load(f)
  cfg['train']['seed'] = cfg['data']['seed'] = seed
  cfg['name'] = f'{cfg.get("name")}_s{seed}'
  with open(path, 'w') as f:
    json.dump(cfg, f)
  return workdir


def test_seeds_are_one_cell_with_an_interval_and_noise_marks(tmp_path):
  finals = {'RoPE θ=10k': (1.50, 1.52, 1.49), '0.75-RoPE': (1.51, 1.50, 1.53),
            'NoPE': (1.90, 1.91, 1.89)}
  dirs = [_reseed(make_run(tmp_path, f'{row}_{s}', SPECS[row], 'wiki', curve(f)), s)
          for row, values in finals.items() for s, f in enumerate(values)]
  out = report.report(dirs, str(tmp_path / 'out'))
  _, body, notes = report.table(out['runs'])
  rows = {r[0]: r[1] for r in body}
  assert notes == []
  for row, values in finals.items():
    ppls = [ppl(f) for f in values]
    mean = sum(ppls) / 3
    s = math.sqrt(sum((p - mean) ** 2 for p in ppls) / 2)
    half = 4.302652729911275 * s / math.sqrt(3)           # t_{0.975, 2} from a t table
    want = f'{mean:.4f} ± {half:.4f} (n=3 of 3)'
    assert rows[row].startswith(want), (rows[row], want)
  # RoPE θ=10k has the lowest mean; 0.75-RoPE is within noise of it, NoPE is not
  assert rows['0.75-RoPE'].endswith('≈') and not rows['NoPE'].endswith('≈')
  assert not rows['RoPE θ=10k'].endswith('≈')
  assert 'Student-t' in out['markdown'] and "Welch's t-test" in out['markdown']
  assert 'Holm' in out['markdown']
  with open(out['runs_csv']) as f:
    assert sorted(r['train_seed'] for r in csv.DictReader(f)) == ['0'] * 3 + ['1'] * 3 + ['2'] * 3
  # the same seed twice is a duplicate, not another seed
  again = make_run(tmp_path, 'again', SPECS['NoPE'], 'wiki', curve(3.0, 5))
  _reseed(again, 0)
  _, body, notes = report.table(report.report(dirs + [again], str(tmp_path / 'o2'))['runs'])
  assert notes == [f'NoPE / wiki: {again} ignored (duplicate of {dirs[6]})']
  assert {r[0]: r[1] for r in body}['NoPE'] == rows['NoPE']


def test_diverged_and_unfinished_seeds_are_counted_not_dropped(tmp_path):
  # 0.75-RoPE: 2 finished seeds, 1 diverged (NaN), 1 unfinished (7 of 10 steps, lower loss
  # that must not enter the mean); the mean and interval hold the 2 finished seeds only.
  finished = [_reseed(make_run(tmp_path, f'ok{s}', SPECS['0.75-RoPE'], 'wiki', curve(f)), s)
              for s, f in enumerate((1.50, 1.52))]
  diverged = _reseed(make_run(tmp_path, 'nan', SPECS['0.75-RoPE'], 'wiki',
                              curve(2.0)[:6] + [None] * 4), 2)
  unfinished = _reseed(make_run(tmp_path, 'part', SPECS['0.75-RoPE'], 'wiki', curve(1.0, 7)), 3)
  out = report.report(finished + [diverged, unfinished], str(tmp_path / 'out'))
  _, body, _ = report.table(out['runs'])
  cell = body[0][1]
  ppls = [ppl(f) for f in (1.50, 1.52)]
  half = 12.706204736174707 * abs(ppls[0] - ppls[1]) / math.sqrt(2) / math.sqrt(2)  # t_{.975,1}
  assert cell == (f'{sum(ppls) / 2:.4f} ± {half:.4f} (n=2 of 4; 1 diverged ‡; '
                  '1 unfinished †)'), cell
  lonely = report.report([diverged], str(tmp_path / 'o2'))
  assert report.table(lonely['runs'])[1][0][1] == 'diverged ‡'


def test_the_noise_mark_is_holm_adjusted(tmp_path):
  # Against the best of three, raw Welch p-values of 0.030 and 0.044 (each below 0.05 alone)
  # become 2 x 0.030 = 0.061 and max(0.061, 0.044) after Holm: both rows within noise.
  finals = {'RoPE θ=10k': (1.50, 1.51, 1.49), '0.75-RoPE': (1.535, 1.555, 1.525),
            'NoPE': (1.53, 1.55, 1.52)}
  dirs = [_reseed(make_run(tmp_path, f'{row}_{s}', SPECS[row], 'wiki', curve(f)), s)
          for row, values in finals.items() for s, f in enumerate(values)]
  runs = report.report(dirs, str(tmp_path / 'out'))['runs']
  cells, _ = report.select(runs)
  values = {k[0]: report._values(g) for k, g in cells.items()}
  raw = [intervals.welch(values[r], values['RoPE θ=10k']).p for r in ('0.75-RoPE', 'NoPE')]
  assert all(p < 0.05 for p in raw) and all(p * 2 >= 0.05 for p in raw)
  rows = {r[0]: r[1] for r in report.table(runs)[1]}
  assert rows['0.75-RoPE'].endswith('≈') and rows['NoPE'].endswith('≈')
