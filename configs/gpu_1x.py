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
from ropex.experiments import paper

DATA = dict(paper.PAPER_DATA, synthetic=dict(source='synthetic'))
# 32 x 8192 = 262k tokens a step, two microbatches of 16 rows; 25k steps = 6.6B tokens.
SCHEDULE = dict(
    train=dict(steps=25_000, batch_size=32, seq_len=8192, grad_accum_steps=2, loss_chunk=256,
               learning_rate=6e-4, warmup_steps=1000, log_every_steps=50),
    mesh=dict(data=-1, fsdp=1, tensor=1),
    checkpoint=dict(every_steps=1000, keep=2),
    eval=dict(every_steps=2500, steps=20))


def get_config(arg=None):
  a = parse_arg(arg, pe='prope', p=0.75, theta=10_000, data='wiki', runlocal=False)
  return paper.gemma_run(defaults.pe_from_args(a), a, f'gpu1x_{a.pe}', SCHEDULE, DATA,
                         arch='gpu_1x', num_layers=12, embed_dim=512, num_heads=4,
                         num_kv_heads=1, head_dim=128, hidden_dim=2048)
