"""Released model families as settings of the ``model`` block (presets added below)."""

PRESETS: dict = {}


def apply(block, arch: str, keep_pe: bool = False) -> None:
  del block, keep_pe
  raise KeyError(arch)
