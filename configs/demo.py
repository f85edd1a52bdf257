"""The ``make demo`` sweep (``python -m ropex.demo``): RoPE against p-RoPE (p = 0.75) at a small
θ = 10, on one content-retrieval task, over 3 seeds.

Why θ = 10: the tiny model's head dim is 32 (16 chunks); chunk k turns by ``g_k = θ^(-2k/32)``
radians per position, so RoPE's lowest frequency has a wavelength of ``2π · 10^(30/32)`` ≈ 54
positions: inside the 16-64-token training examples, and far inside the 128-256-token
evaluation contexts. RoPE then has no chunk that stays (nearly) unrotated over the distance
between a query and its key — no semantic channel in the paper's sense — while p-RoPE leaves
its lowest 4 of 16 chunks unrotated, exact semantic channels at every distance. The paper's
theory predicts that p-RoPE retrieves by content at distances (and lengths) where RoPE cannot.

Task: ``assoc_recall`` only (keys, values, then queries ``Q k`` answered by ``v``), examples of
16-64 tokens, 300 steps. Evaluation (``EVAL``): the task with its query at depths 0 / 0.5 / 1
and the ``needle`` retrieval, at 32-256 tokens (* beyond 64 = beyond training).

  python -m ropex.sweep --config configs/demo.py --dry_run       # the 6 runs
  python -m ropex.demo                                             # train, evaluate, table
"""

SEEDS = 3
THETA = 10.0
STEPS = 300
EVAL = dict(lengths=(32, 64, 128, 256), depths=(0.0, 0.5, 1.0), task_examples=32,
            suite='retrieval,tasks')


def get_sweep(arg=None):
  del arg
  overrides = {
      'data.tasks': ('assoc_recall',), 'data.synthetic_length': (16, 64),
      'train.steps': STEPS, 'train.warmup_steps': 40,
      'checkpoint.every_steps': STEPS, 'eval.every_steps': STEPS,
  }
  return [
      ('demo_rope', f'tiny.py:pe=rope,theta={THETA:g}', overrides),
      ('demo_prope0.75', f'tiny.py:pe=prope,p=0.75,theta={THETA:g}', overrides),
  ]
