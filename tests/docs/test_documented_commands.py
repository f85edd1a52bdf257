"""Every ``python -m ropex.<verb>`` command and ``make`` target in README.md and docs/ works
against the real entry points (see tests/docs/commands.py for what is checked), the checker
itself catches each kind of mistake, and the README's quick start runs end to end."""

import os
import re
import shlex
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import commands  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = commands.ROOT


def test_every_documented_command_matches_the_entry_points():
  found, problems = commands.check_documents(commands.documents())
  verbs = {c.verb for c in found}
  assert {'train', 'evaluate', 'analyze', 'report', 'describe', 'make'} <= verbs
  assert len(found) > 50
  assert not problems, '\n'.join(['documented commands that do not work:'] + problems)


BAD_PAGE = '''# A page with mistakes

```bash
python -m ropex.trian --config configs/tiny.py --workdir /tmp/a
python -m ropex.train --config configs/tiny.py --workdri /tmp/a
python -m ropex.train --config configs/nothere.py --workdir /tmp/b
python -m ropex.train --config configs/tiny.py --workdir /tmp/c \\
    --config.train.stepz=4
python -m ropex.evaluate --workdir /tmp/never_trained
python -m ropex.evaluate --workdir /tmp/c --override model.pe.nosuch=1
python -m ropex.evaluate --workdir /tmp/c --text_mode chapters
python -m ropex.evaluate comapre /tmp/c --out /tmp/d
python -m ropex.sweep --config configs/demo.py --only demo_rope_s9
make trainn
```

Inline: `python -m ropex.describe --config configs/tiny.py:pe=wobble`, and a good one that
reads what an earlier line wrote: `python -m ropex.analyze --workdir /tmp/c/ --out DIR`.
'''


def test_the_checker_reports_each_kind_of_mistake(tmp_path, monkeypatch):
  page = tmp_path / 'docs' / 'bad.md'
  page.parent.mkdir()
  page.write_text(BAD_PAGE)
  monkeypatch.setattr(commands, 'ROOT', str(tmp_path))
  for name in ('ropex', 'configs', 'Makefile'):
    os.symlink(os.path.join(ROOT, name), tmp_path / name)
  found, problems = commands.check_documents(['docs/bad.md'])
  assert len(found) == 12
  text = '\n'.join(problems)
  expected = [
      r'ropex\.trian: no such entry point; the verbs are .*train',
      r'has no flag --workdri \(did you mean --workdir\?\)',
      r"configs/nothere\.py' is not a file",
      r'train\.stepz',
      r'/tmp/never_trained does not exist and no command before this one writes it',
      r'override model\.pe\.nosuch=.* names no config field',
      r"--text_mode='chapters'.*documents\|stream",
      r"has no subcommand 'comapre'",
      r'--only names unknown run\(s\) demo_rope_s9',
      r"the Makefile has no target 'trainn'",
      r'wobble',
  ]
  for pattern in expected:
    assert re.search(pattern, text), f'{pattern!r} not reported in:\n{text}'
  assert len(problems) == len(expected), text   # the analyze line is fine: /tmp/c was trained


def _tour() -> list[list[str]]:
  """The README's tour: the commands of the fenced block under '## A tour'."""
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  block = re.search(r'## A tour\n.*?```bash\n(.*?)```', text, re.S).group(1)
  return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


# Tiny settings appended to each verb of the tour (the documented command stays as written).
_TINY = {
    'train': ['--config.train.steps=4', '--config.train.batch_size=8',
              '--config.train.seq_len=64', '--config.train.warmup_steps=1',
              '--config.eval.steps=1', '--config.checkpoint.every_steps=4'],
    'evaluate': ['--lengths=16,32', '--depths=0,1', '--examples=2', '--task_examples=2'],
    'analyze': ['--max_len=32', '--top_heads=1', '--batch_size=2', '--nohtml'],
    'report': [],
}


def test_readme_tour_runs_end_to_end(tmp_path):
  """Each tour command, with its /tmp paths moved into tmp_path and tiny settings, exits 0 and
  writes what the README says it writes."""
  sys.path.insert(0, os.path.join(ROOT, 'tests'))
  import cli_runs  # pylint: disable=g-import-not-at-top
  tour = _tour()
  assert [argv[2] for argv in tour] == ['ropex.train', 'ropex.evaluate', 'ropex.analyze',
                                        'ropex.report']
  for argv in tour:
    verb = argv[2].split('.')[1]
    args = [a.replace('/tmp/', f'{tmp_path}/') for a in argv[3:]] + _TINY[verb]
    proc = cli_runs.run_module(argv[2], *args, timeout=600)
    assert proc.returncode == 0, f'{" ".join(argv)}\n{proc.stderr[-3000:]}'
  run = tmp_path / 'ropex-tiny'
  for written in ('config.json', 'metrics.jsonl', 'checkpoints', 'eval/results.json',
                  'analysis/report.md', 'analysis/summary.json', 'report/table.md',
                  'report/loss_curves.png'):
    assert (run / written).exists(), written


def test_readme_lists_every_registered_encoding_once():
  from ropex.model import positional  # pylint: disable=g-import-not-at-top
  with open(os.path.join(ROOT, 'README.md')) as f:
    listed = re.findall(r'^- `(\w+)` — ', f.read(), re.M)
  assert sorted(listed) == sorted(positional.registered_kinds())


def test_shown_outputs_are_what_the_commands_print(tmp_path):
  """A ``$ command`` block followed by output: the command, run here, prints those lines (a
  line shown cut with ``...`` must match up to there)."""
  sys.path.insert(0, os.path.join(ROOT, 'tests'))
  import cli_runs  # pylint: disable=g-import-not-at-top
  examples = [(doc, *ex) for doc in commands.documents() for ex in commands.shown_outputs(doc)]
  assert len(examples) >= 3
  for doc, line, text, shown in examples:
    argv = shlex.split(text.replace('/tmp/', f'{tmp_path}/'))
    argv = argv[argv.index('-m') + 1:]
    proc = cli_runs.run_module(*argv, timeout=300)
    printed = [l.rstrip() for l in (proc.stdout + proc.stderr).splitlines()]
    for want in shown:
      want = want.rstrip()
      head = want.split('...')[0].rstrip() if want.endswith('...') else want
      assert any(p == want or (head != want and p.startswith(head)) for p in printed), (
          f'{doc}:{line}: {text}\nshows {want!r}, but the command printed:\n' + '\n'.join(printed))
