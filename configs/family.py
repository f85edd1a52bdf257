"""A released model family's architecture (ropex.model.families: the published shapes, block
fields and positional schedule of e.g. qwen3_0_6b, llama3_1_8b, gemma3_1b, gemma4_e2b), to
train from scratch or to describe. Args: arch, tiny (a CPU-sized version with the same block
fields and schedule), runlocal.

  python -m ropex.describe --config configs/family.py:arch=qwen3_0_6b
  python -m ropex.train --config configs/family.py:arch=gemma3_1b,tiny,runlocal --workdir /tmp/g3
"""
from ropex.config.loading import parse_arg
from ropex.config import defaults
from ropex.errors import ConfigError
from ropex.model import families


def get_config(arg=None):
  a = parse_arg(arg, arch='qwen3_0_6b', tiny=False, runlocal=False)
  if a.arch not in families.PRESETS:
    raise ConfigError(f'config argument arch={a.arch!r} is not a family preset; allowed: '
                      f'{", ".join(families.PRESETS)}')
  c = defaults.base_config(a.arch)
  if a.runlocal:
    defaults.runlocal(c)
    c.model.update(defaults.base_config(a.arch).model.to_dict())
    c.model.update(remat='none', dtype='float32')
  if a.tiny or a.runlocal:
    families.shrink(c.model)
  c.name = f'{a.arch}' + ('_tiny' if a.tiny or a.runlocal else '')
  return c
