"""Tools around training: the benchmark, the TPU fit check (AOT compile for a topology), the
FLOPs/MFU formula, ``describe``, SentencePiece training and TPU topologies."""
