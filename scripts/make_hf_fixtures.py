"""Tiny random Hugging Face checkpoints and their transformers logits: ropex's reference fixtures.

For each released-model family this builds a TINY RANDOM model with transformers itself (every
feature of the family switched on), saves it the way the Hub ships it (config.json, float32
safetensors, a tokenizer trained here) and records transformers' own logits on fixed inputs.
ropex's importer is tested against these files (issue #18); the official Gemma Flax layout twins
(issue #19) are written from the gemma2/gemma3 tensors by scripts/make_flax_fixtures.py.

Regenerate (needs the `hf` extra: torch, transformers>=5,<6, tokenizers, sentencepiece):

    make hf-fixtures
    # = python scripts/make_hf_fixtures.py tests/fixtures/hf
    #   python scripts/make_flax_fixtures.py tests/fixtures/hf tests/fixtures/flax
    # (tests/fixtures/hf comes out byte-identical on the same torch/transformers/tokenizers/
    # sentencepiece versions; orbax names its files afresh each time)

Compare ropex against live transformers (opt-in, marker `hf`, not part of `make test`):

    make test-hf
    # = python -m pytest -q -m hf tests/hf_live

Written per family into tests/fixtures/hf/<family>/:
  config.json, model.safetensors   model.save_pretrained(dir) in float32
  tokenizer files                  Llama/Qwen: byte-level BPE tokenizer.json + tokenizer_config.json
                                   (tokenizers library, saved by PreTrainedTokenizerFast; Llama's
                                   post-processor adds <|begin_of_text|> as the Hub's does);
                                   Gemma: a SentencePiece tokenizer.model only (BPE, byte
                                   fallback, pad 0 / eos 1 / bos 2 / unk 3, as Gemma's), which
                                   AutoTokenizer reads (it appends a <mask> token: length V + 1)
  golden.npz                       input_ids [2, T] int32 (row 0 from the tokenizer on a fixed
                                   sentence, row 1 random ids), logits [2, T, V] float32 from
                                   model(input_ids).logits (eval, eager attention), greedy [2, T]
                                   (argmax), logits_bf16 [2, T, V] (the same model in bfloat16;
                                   stored as float16, which holds every bfloat16 value of
                                   magnitude >= 6.1e-5 exactly; fixtures.json records the
                                   storage error, <= 3e-8)
and tests/fixtures/hf/qwen2_sharded/ (the qwen2 model in several safetensors shards with
model.safetensors.index.json), tests/fixtures/hf/fixtures.json (versions, seed, the sentence, per
family the features switched on, max |logits_bf16 - logits|, max |float64 logits - logits| (how
well float32 determines the logits: the live test's float32 tolerance scales with it) and
FEATURE_CHECKS: how far each
plausible misreading moves the logits).  Gemma 4's config.json carries global_head_dim and
num_global_key_value_heads as the Hub's do (hub_style_config).  The other families' releases
carry transformers 4.x configs (rope_theta + rope_scaling, no layer_types, ...): that form of the
same config is written beside it as config.hub.json (v4_config; transformers 5 reads it to the
same logits, which the generator asserts).

Weights: every parameter (and the persistent per-layer output scalar of Gemma 4) is redrawn from
torch.manual_seed(SEED + family index): matrices N(0, 1/fan_in), 1-D tensors (norm scales,
biases) init + N(0, 0.5^2), so a wrong norm offset (w vs 1+w), a missing bias or a swapped tensor
changes the logits.  `build_model(family)` is imported by tests/hf_live to rebuild the same model
in memory and check the committed goldens are transformers' own.
"""

import copy
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

SEED = 1234
SEQ_LEN = 32
VOCAB = 320
WINDOW = 8
MAX_SHARD_SIZE = "150KB"

TEXT = """\
Rotary positional encodings rotate query and key vectors by angles that grow with the position.
The model can then attend by relative distance, yet the lowest frequencies barely turn at all.
Round and round we go: what makes rotary encodings useful is still a question worth asking.
A tiny model trained on small synthetic tasks can show which frequencies carry meaning.
Gemma, Llama and Qwen all use rotary encodings, each with its own base wavelength theta.
Some layers look only at a short sliding window, others see the whole context at once.
Soft caps keep the attention logits bounded, and query key norms keep them well scaled.
Grouped query attention shares each key and value head among several query heads.
The quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly.
Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100 and 2025 appear in the text too.
Sphinx of black quartz, judge my vow; pack my box with five dozen liquor jugs!
How vexingly quick daft zebras jump; bright vixens jump, dozy fowl quack.
"""
SENTENCE = ("Rotary encodings rotate queries and keys; the lowest frequencies barely turn, "
            "so which ones carry meaning in a small model trained on synthetic tasks?")

# Per family: the transformers config class, the features switched on (for fixtures.json), and
# the config fields.  Common sizes: hidden 64, vocab 320, MLP 96 (!= hidden, so [F, D] and
# [D, F] layouts differ), GQA/MQA everywhere.
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96)
FAMILIES = {
    "llama": ("LlamaConfig", "Llama 3.x: GQA, rope_type llama3 factor 8 with "
              "original_max_position_embeddings 64 (wavelengths 6 kept, 32 smoothed, >= 160 "
              "scaled: all three bands), untied lm_head", dict(
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  rms_norm_eps=1e-5, tie_word_embeddings=False, max_position_embeddings=512,
                  rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                       low_freq_factor=1.0, high_freq_factor=4.0,
                                       original_max_position_embeddings=64),
                  bos_token_id=0, eos_token_id=1)),
    "qwen2": ("Qwen2Config", "Qwen 2.5: GQA, q/k/v biases, theta 1e6, tied embeddings", dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        bos_token_id=0, eos_token_id=0)),
    "qwen3": ("Qwen3Config", "Qwen 3: GQA, QK-norm, head_dim 32 != hidden/heads, tied", dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        bos_token_id=0, eos_token_id=0)),
    "gemma": ("GemmaConfig", "Gemma 1: MQA (1 kv head), head_dim 32, 1+w norms, "
              "sqrt(hidden) embedding scale, gelu_pytorch_tanh, tied", dict(
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                  hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                  rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
    "gemma2": ("Gemma2Config", "Gemma 2: GQA, sliding window 8 < T on alternating layers, "
               "attention and final logit soft-caps (small enough to bite), "
               "query_pre_attn_scalar 16 = hidden/heads != head_dim 32 (as Gemma 2 27B), "
               "pre/post norms",
               dict(
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                   hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                   query_pre_attn_scalar=16, sliding_window=WINDOW,
                   layer_types=["sliding_attention", "full_attention"],
                   attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                   rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
    "gemma3": ("Gemma3TextConfig", "Gemma 3 (gemma3_text): GQA, QK-norm, sliding window 8 < T "
               "(layers 0 and 2 local), local theta 10k, global theta 1M with linear x8 scaling, "
               "query_pre_attn_scalar 32 = head_dim != hidden/heads 16", dict(
                   num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                   hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                   query_pre_attn_scalar=32, sliding_window=WINDOW,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                   rope_parameters={
                       "sliding_attention": dict(rope_type="default", rope_theta=10000.0),
                       "full_attention": dict(rope_type="linear", factor=8.0,
                                              rope_theta=1000000.0)})),
    "gemma4": ("Gemma4TextConfig", "Gemma 4 (gemma4_text): sliding window 8 < T, local head_dim 16 "
               "theta 10k, global head_dim 32 with proportional RoPE (partial_rotary_factor 0.25) "
               "theta 1M, attention_k_eq_v on global layers with 1 global kv head, QK-norm, "
               "value norm, per-layer output scalar, per-layer input embeddings (8 per layer), KV "
               "sharing (last 2 of 4 layers), double-wide MLP on shared layers, final soft-cap",
               dict(
                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True,
                   hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                   sliding_window=WINDOW,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                "full_attention"],
                   final_logit_softcapping=3.0,
                   hidden_size_per_layer_input=8, vocab_size_per_layer_input=VOCAB,
                   num_kv_shared_layers=2, use_double_wide_mlp=True,
                   rope_parameters={
                       "sliding_attention": dict(rope_type="default", rope_theta=10000.0),
                       "full_attention": dict(rope_type="proportional", partial_rotary_factor=0.25,
                                              rope_theta=1000000.0)})),
}
GEMMA_FAMILIES = ("gemma", "gemma2", "gemma3", "gemma4")

# What a loader could get wrong, per family: (config overrides, tensor edit).  fixtures.json
# records how far each changes transformers' logits (max |diff|), which shows the goldens tell
# the right reading from the wrong one.
_NO_WINDOW = dict(sliding_window=SEQ_LEN * 2)
_DEFAULT_ROPE = lambda theta: dict(rope_type="default", rope_theta=theta)
_drop_one = lambda name: lambda n, t: t - 1.0 if n.endswith("norm.weight") else t
_zero_bias = lambda n, t: t * 0 if n.endswith(".bias") else t
FEATURE_CHECKS = {
    "llama": {"rope_type default instead of llama3": (
        dict(rope_parameters=_DEFAULT_ROPE(500000.0)), None)},
    "qwen2": {"q/k/v biases dropped": ({}, _zero_bias)},
    "qwen3": {"q/k norms dropped (weights 1)": (
        {}, lambda n, t: t * 0 + 1 if "_norm." in n else t)},
    "gemma": {"norm scale w instead of 1+w": ({}, _drop_one("norm"))},
    "gemma2": {"no attention soft-cap": (dict(attn_logit_softcapping=None), None),
               "no final soft-cap": (dict(final_logit_softcapping=None), None),
               "no sliding window": (_NO_WINDOW, None),
               "query scale 1/sqrt(head_dim)": (dict(query_pre_attn_scalar=32), None),
               "norm scale w instead of 1+w": ({}, _drop_one("norm"))},
    "gemma3": {"no sliding window": (_NO_WINDOW, None),
               "no linear scaling on global layers": (dict(rope_parameters={
                   "sliding_attention": _DEFAULT_ROPE(10000.0),
                   "full_attention": _DEFAULT_ROPE(1000000.0)}), None),
               "local theta = global theta": (dict(rope_parameters={
                   "sliding_attention": _DEFAULT_ROPE(1000000.0),
                   "full_attention": dict(rope_type="linear", factor=8.0,
                                          rope_theta=1000000.0)}), None),
               "query scale hidden/heads": (dict(query_pre_attn_scalar=16), None)},
    "gemma4": {"no sliding window": (_NO_WINDOW, None),
               "full RoPE on global layers": (dict(rope_parameters={
                   "sliding_attention": _DEFAULT_ROPE(10000.0),
                   "full_attention": _DEFAULT_ROPE(1000000.0)}), None),
               "no final soft-cap": (dict(final_logit_softcapping=None), None),
               "layer_scalar ignored": ({}, lambda n, t: t * 0 + 1 if n.endswith("scalar") else t),
               "per-layer inputs dropped": (
                   {}, lambda n, t: t * 0 if n.endswith("per_layer_input_gate.weight") else t)},
}


def make_config(family, **overrides):
  class_name, _, fields = FAMILIES[family]
  config = getattr(transformers, class_name)(**COMMON, **{**fields, **overrides})
  config._attn_implementation = "eager"
  return config


def perturb_(model, seed):
  """Redraws every parameter (and persistent buffer) so no tensor keeps its structured init."""
  gen = torch.Generator().manual_seed(seed)
  persistent = set(model.state_dict())
  tensors = list(model.named_parameters()) + [
      (n, b) for n, b in model.named_buffers() if n in persistent]
  with torch.no_grad():
    for _, t in sorted(tensors, key=lambda nt: nt[0]):
      noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
      if t.ndim >= 2:
        t.copy_(noise / t.shape[-1] ** 0.5)
      else:
        t.add_(0.5 * noise)


def build_model(family):
  """The family's tiny random model, float32, eval mode, eager attention (deterministic)."""
  torch.manual_seed(SEED)
  config = make_config(family)
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                                        dtype=torch.float32)
  perturb_(model, SEED + sorted(FAMILIES).index(family))
  return model.eval()


def logits_of(model, input_ids):
  """Logits as float64 numpy for a float64 model, float32 otherwise."""
  with torch.no_grad():
    logits = model(torch.as_tensor(input_ids, dtype=torch.long)).logits
  return logits.numpy() if logits.dtype == torch.float64 else logits.float().numpy()


def feature_effects(family, model, input_ids, logits):
  """Max |logits change| of each FEATURE_CHECKS misreading (same weights otherwise)."""
  effects = {}
  for name, (overrides, edit) in FEATURE_CHECKS[family].items():
    wrong = type(model)(make_config(family, **overrides)).eval()
    state = {n: edit(n, t) if edit else t for n, t in model.state_dict().items()}
    wrong.load_state_dict(state)
    effects[name] = float(np.abs(logits_of(wrong, input_ids) - logits).max())
  return effects


def train_bpe(family):
  """A byte-level BPE tokenizer (Llama 3 / Qwen style) with exactly VOCAB entries."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers
  specials = {"llama": ["<|begin_of_text|>", "<|end_of_text|>"],
              "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
              "qwen3": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}[family]
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(TEXT.splitlines() * 4, trainer=trainer)
  assert tok.get_vocab_size() == VOCAB, (family, tok.get_vocab_size())
  if family == "llama":  # Llama 3 prepends <|begin_of_text|>; Qwen adds nothing
    bos = specials[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token=specials[0],
      eos_token=specials[1] if family == "llama" else specials[0])


def train_sentencepiece(out_dir):
  """A SentencePiece BPE model with byte fallback (Gemma style): pad 0, eos 1, bos 2, unk 3."""
  import sentencepiece as spm
  model = io.BytesIO()  # no model_prefix: the file does not record where it was written
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(TEXT.splitlines()), model_writer=model, vocab_size=VOCAB,
      model_type="bpe", byte_fallback=True, character_coverage=1.0, num_threads=1,
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
      bos_piece="<bos>", unk_piece="<unk>", split_digits=True, add_dummy_prefix=False,
      remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2)
  (out_dir / "tokenizer.model").write_bytes(model.getvalue())
  sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
  assert sp.get_piece_size() == VOCAB, sp.get_piece_size()
  return sp


def tokenizer_ids(family, out_dir):
  """Trains and saves the family's tokenizer; returns the ids of SENTENCE (with BOS)."""
  if family in GEMMA_FAMILIES:
    sp = train_sentencepiece(out_dir)
    return [2] + sp.encode(SENTENCE)
  fast = train_bpe(family)
  fast.save_pretrained(out_dir)
  return fast(SENTENCE)["input_ids"]


def make_inputs(sentence_ids, seed):
  assert len(sentence_ids) >= SEQ_LEN, len(sentence_ids)
  rng = np.random.default_rng(seed)
  random_row = rng.integers(0, VOCAB, size=SEQ_LEN)
  return np.stack([np.asarray(sentence_ids[:SEQ_LEN]), random_row]).astype(np.int32)


def hub_style_config(family, out_dir):
  """Gemma 4's config.json as the Hub ships it: global_head_dim / num_global_key_value_heads.

  transformers 5.25 writes the per_layer_config it derives from those two fields instead; the
  released checkpoints carry the two fields, so they are written back (transformers derives the
  same per_layer_config from them: reload_check proves it).
  """
  if family != "gemma4":
    return
  path = out_dir / "config.json"
  config = json.loads(path.read_text())
  per_layer = config.pop("per_layer_config")
  (global_layer,) = {json.dumps(v, sort_keys=True) for v in per_layer.values()}
  global_layer = json.loads(global_layer)
  config["global_head_dim"] = global_layer["head_dim"]
  config["num_global_key_value_heads"] = global_layer["num_key_value_heads"]
  path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def layer_period(layer_types):
  """Gemma 3's sliding_window_pattern: layer i is global iff (i + 1) % period == 0."""
  for period in range(1, len(layer_types) + 1):
    if layer_types == [("full_attention" if (i + 1) % period == 0 else "sliding_attention")
                       for i in range(len(layer_types))]:
      return period
  raise ValueError(f"layer_types {layer_types} have no sliding_window_pattern")


def v4_config(family, config):
  """config.json as the Hub's releases of the family carry it (written by transformers 4.x):
  rope_theta + rope_scaling (Gemma 3: + rope_local_base_freq, sliding_window_pattern) instead of
  rope_parameters, no layer_types (derived from the index), torch_dtype (transformers_version
  still names the 5.x that wrote it).  None for Gemma 4,
  released with transformers 5 (its config.json is already the Hub's form)."""
  if family == "gemma4":
    return None
  config = {k: v for k, v in config.items() if not k.startswith("_")}  # 5.x private fields
  rope = config.pop("rope_parameters")
  layer_types = config.pop("layer_types", None)
  config["torch_dtype"] = config.pop("dtype")
  if family == "gemma3":
    config["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
    config["sliding_window_pattern"] = layer_period(layer_types)
    rope = rope["full_attention"]
  scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
  config["rope_theta"] = rope["rope_theta"]
  config["rope_scaling"] = None if scaling["rope_type"] == "default" else scaling
  return config


def reload_check(out_dir, input_ids, logits, config=None):
  """The saved directory alone reproduces the logits (config.json + safetensors are complete);
  with ``config``, that config (read from its JSON file) in place of config.json."""
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      out_dir, config=config, attn_implementation="eager", dtype=torch.float32).eval()
  np.testing.assert_array_equal(logits_of(reloaded, input_ids), logits)


def write_v4_config(family, out_dir, input_ids, logits):
  """config.hub.json (v4_config) beside config.json; transformers reads it to the same logits."""
  legacy = v4_config(family, json.loads((out_dir / "config.json").read_text()))
  if legacy is None:
    return
  path = out_dir / "config.hub.json"
  path.write_text(json.dumps(legacy, indent=2, sort_keys=True) + "\n")
  config = getattr(transformers, FAMILIES[family][0]).from_json_file(path)
  assert "layer_types" not in json.loads(path.read_text())
  reload_check(out_dir, input_ids, logits, config=config)


def make_family(family, root):
  out_dir = root / family
  out_dir.mkdir(parents=True, exist_ok=True)
  model = build_model(family)
  model.save_pretrained(out_dir)
  hub_style_config(family, out_dir)
  input_ids = make_inputs(tokenizer_ids(family, out_dir), SEED)
  logits = logits_of(model, input_ids)
  reload_check(out_dir, input_ids, logits)
  write_v4_config(family, out_dir, input_ids, logits)
  logits_bf16 = logits_of(copy.deepcopy(model).to(torch.bfloat16), input_ids)
  logits_f64 = logits_of(copy.deepcopy(model).double(), input_ids)
  bf16_stored = logits_bf16.astype(np.float16)
  np.savez_compressed(out_dir / "golden.npz", input_ids=input_ids, logits=logits,
                      greedy=logits.argmax(-1).astype(np.int32), logits_bf16=bf16_stored)
  if family == "qwen2":
    model.save_pretrained(root / "qwen2_sharded", max_shard_size=MAX_SHARD_SIZE)
    tokenizer_ids(family, root / "qwen2_sharded")
    reload_check(root / "qwen2_sharded", input_ids, logits)
  return dict(features=FAMILIES[family][1],
              feature_effects=feature_effects(family, model, input_ids, logits),
              config_class=FAMILIES[family][0],
              logits_abs_max=float(np.abs(logits).max()),
              bf16_max_abs_diff=float(np.abs(logits_bf16 - logits).max()),
              f32_vs_f64_max_abs_diff=float(np.abs(logits_f64 - logits).max()),
              bf16_storage_error=float(np.abs(bf16_stored - logits_bf16).max()),
              greedy_bf16_agreement=float((logits_bf16.argmax(-1) == logits.argmax(-1)).mean()))


def main(argv):
  root = Path(argv[1] if len(argv) > 1 else "tests/fixtures/hf")
  torch.set_num_threads(1)
  summary = dict(transformers=transformers.__version__, torch=torch.__version__,
                 seed=SEED, seq_len=SEQ_LEN, sentence=SENTENCE, vocab=VOCAB, sliding_window=WINDOW,
                 generator="scripts/make_hf_fixtures.py", families={})
  for family in sorted(FAMILIES):
    summary["families"][family] = make_family(family, root)
    print(family, json.dumps(summary["families"][family]))
  (root / "fixtures.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
  main(sys.argv)
