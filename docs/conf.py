"""Sphinx configuration of the ropex documentation (``make docs``).

Pages are MyST markdown. The config reference is generated from the code at build time
(``_ext/config_reference.py``) and the API reference from the docstrings (autodoc), so neither
can drift from the code. No network: no intersphinx, no notebooks.
"""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '_ext'))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # autodoc imports ropex; never probe for a TPU

project = 'ropex'
author = 'the ropex authors'
copyright = '2025, the ropex authors'  # pylint: disable=redefined-builtin

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'config_reference',
    'api_reference',
]
source_suffix = {'.md': 'markdown'}
exclude_patterns = ['_build', 'generated/README.md']
myst_enable_extensions = ['colon_fence', 'dollarmath']
myst_heading_anchors = 3

autodoc_default_options = {'members': True, 'undoc-members': False, 'show-inheritance': False}
autodoc_typehints = 'none'
autodoc_member_order = 'bysource'
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = 'alabaster'
html_title = 'ropex'
html_static_path = []
