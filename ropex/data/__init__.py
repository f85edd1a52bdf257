"""Data for ropex: sources (synthetic tasks, TFDS, text files) -> tokenizer -> packed rows.

  from ropex import data
  data.validate(config)
  tok = data.make_tokenizer(config.data)
  it = data.make_iterator(config, split='train', process_index=p, process_count=P)
  batch = next(it)            # dict of numpy [global_batch // P, seq_len]
  state = it.get_state()      # JSON-serialisable; it.set_state(state) resumes exactly
  data.task_names(config)     # names of the ids in batch['task_ids']

Modules: :mod:`~ropex.data.sources` (documents), :mod:`~ropex.data.text_files`,
:mod:`~ropex.data.synthetic` (the diagnostic tasks), :mod:`~ropex.data.tokenizers`,
:mod:`~ropex.data.packing` (row streams, state), :mod:`~ropex.data.prefetch`,
:mod:`~ropex.data.validation`, :mod:`~ropex.data.pipeline`.

grain or hand-rolled? grain (``MapDataset``: random access, per-epoch shuffle, repeat, tokenizing
map) provides the documents; packing them into rows is a small hand-rolled deterministic
iterator (state: two integers per row) because grain's packers consume one sequential stream,
and sharding that stream by process would make the global batch depend on the process count.
Batch row ``r`` is its own stream of documents ``r, r + B, r + 2B, ...``, so the global batch
is the same for 1, 2, 4, ... processes and each process reads only its rows' documents.
"""

from ropex.data.pipeline import batch_size, make_iterator, measure_throughput, task_names
from ropex.data.tokenizers import make_tokenizer
from ropex.data.validation import validate

__all__ = ['batch_size', 'make_iterator', 'make_tokenizer', 'measure_throughput', 'task_names',
           'validate']
