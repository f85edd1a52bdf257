"""The sweep behind Table 2 of the paper: seven positional encodings x {Wikipedia, FlanV2},
Gemma 2B from scratch, context 8192, batch 512, 10k steps (see ``paper.paper_config``).

Args: data=both|wiki|flan (default both), runlocal. With ``runlocal`` every run is the CPU-sized
version of the same ablation on synthetic data; since wiki and flan then train on the same
synthetic data, only one run per encoding is listed.

  python -m ropex.sweep --config configs/paper_table2.py --dry_run
  python -m ropex.sweep --config configs/paper_table2.py:runlocal --workdir_root /tmp/table2
  python -m ropex.report /tmp/table2/*

A sweep is a list of ``(run name, config file[:args] relative to this file, overrides)``;
overrides are ``--config.<key>=<value>`` flags for ``ropex.train``.
"""
from ropex.config.loading import parse_arg
from ropex.experiments import paper
from ropex.errors import ConfigError

# (name stem, config file, config args) in the paper's row order.
ROWS = (
    ('nope', 'nope_2b.py', ''),
    ('rope10k', 'rope_2b.py', 'theta=10000'),
    ('rope500k', 'rope_2b.py', 'theta=500000'),
    ('prope_reversed0.75', 'prope_reversed_2b.py', 'p=0.75'),
    ('partial0.75', 'partial_2b.py', 'p=0.75'),
    ('prope0.25', 'prope_2b.py', 'p=0.25'),
    ('prope0.75', 'prope_2b.py', 'p=0.75'),
)
_DATA = {'both': ('wiki', 'flan'), 'wiki': ('wiki',), 'flan': ('flan',)}


def get_sweep(arg=None):
  a = parse_arg(arg, data='both', runlocal=False)
  if a.data not in _DATA:
    raise ConfigError(f'config argument data={a.data!r} is not known; allowed: '
                      f'{", ".join(_DATA)}')
  datasets = ('wiki',) if a.runlocal else _DATA[a.data]
  runs = []
  for data in datasets:
    for stem, path, args in ROWS:
      config_args = ','.join(filter(None, (args, f'data={data}', 'runlocal' if a.runlocal else '')))
      name = f'{stem}_{"local" if a.runlocal else data}'
      runs.append((name, f'{path}:{config_args}', {}))
  return runs
