"""The errors ropex raises for bad input.

Every one carries one sentence that names the field, flag or file and what is allowed; entry
points print it on one line and exit with status 2, without a traceback.
"""


class ConfigError(ValueError):
  """A config value (or a flag, or an input file) is invalid. The message names the field and
  what is allowed."""
