"""One GPU (H100 / H200 class), about a day: the paper's NoPE / RoPE / p-RoPE comparison on a
176M-parameter Gemma-style model (Gemma tokenizer, 12 layers, d=512, 4 query heads of 128, one
KV head, GeGLU 2048) at the paper's context of 8192 tokens, bfloat16, cuDNN attention
(``attention_impl='auto'``). Expected speed: docs/performance.md (the FLOP formula at an
assumed MFU); ``scripts/gpu_check.sh`` measures it on the GPU.

Args: pe=nope|rope|prope (also prope_reversed, partial), p (p-RoPE fraction, default 0.75),
theta (default 10000), data=wiki|flan|synthetic (synthetic: offline, no tokenizer needed),
runlocal (a tiny CPU-sized run with the same encoding).

  python -m ropex.train --config configs/gpu_1x.py:pe=prope,p=0.75 --workdir runs/gpu1x_prope
  python -m ropex.describe --config configs/gpu_1x.py:pe=rope
"""
from ropex.config import defaults
from ropex.config.loading import parse_arg
from ropex.errors import ConfigError
from ropex.experiments import paper

DATA = ('wiki', 'flan', 'synthetic')


def get_config(arg=None):
  a = parse_arg(arg, pe='prope', p=0.75, theta=10_000, data='wiki', runlocal=False)
  if a.data not in DATA:
    raise ConfigError(f'config argument data={a.data!r} is not known; allowed: {", ".join(DATA)}')
  c = defaults.base_config('gemma_2b', pe=defaults.pe_from_args(a), dtype='bfloat16',
                           remat='full', num_layers=12, embed_dim=512, num_heads=4,
                           num_kv_heads=1, head_dim=128, hidden_dim=2048)
  c.model.arch = 'gpu_1x'
  c.name = f'gpu1x_{a.pe}_{a.data}'
  if a.data == 'synthetic':
    c.data.source = 'synthetic'
  else:
    c.data.update(paper.PAPER_DATA[a.data])
    c.data.tokenizer, c.data.tokenizer_path = 'sentencepiece', 'tokenizer/gemma_tokenizer.model'
  # 32 x 8192 = 262k tokens a step, two microbatches of 16 rows; 25k steps = 6.6B tokens.
  c.train.update(steps=25_000, batch_size=32, seq_len=8192, grad_accum_steps=2, loss_chunk=256,
                 learning_rate=6e-4, warmup_steps=1000, log_every_steps=50)
  c.mesh.update(data=-1, fsdp=1, tensor=1)
  c.checkpoint.update(every_steps=1000, keep=2)
  c.eval.update(every_steps=2500, steps=20)
  if a.runlocal:
    defaults.runlocal(c)
    c.name = f'gpu1x_{a.pe}_local'
  return c
