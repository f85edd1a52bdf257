"""Official Gemma Flax layout twins of the tiny Gemma 2 / Gemma 3 reference checkpoints (#19).

The official Kaggle Flax checkpoints of Gemma 2 and 3 are orbax PyTrees in the google-deepmind
`gemma` library's FLAT layout (gemma/gm/ckpts/_checkpoint.py: "how the official Gemma checkpoints
were released"): one entry per module path, its parameters one level below,

    'transformer/embedder'                      {'input_embedding': [V, D]}
    'transformer/final_norm'                    {'scale': [D]}
    'transformer/layer_i/pre_attention_norm'    {'scale': [D]}   (also post_attention_norm,
                                                                   pre_ffw_norm, post_ffw_norm)
    'transformer/layer_i/attn/q_einsum'         {'w': [N, D, H]}
    'transformer/layer_i/attn/kv_einsum'        {'w': [2, K, D, H]}  (k, v; qkv_einsum [3,N,D,H]
                                                                      when K == N)
    'transformer/layer_i/attn/attn_vec_einsum'  {'w': [N, H, D]}
    'transformer/layer_i/attn/_query_norm'      {'scale': [H]}   (Gemma 3: QK-norm; _key_norm)
    'transformer/layer_i/mlp/gating_einsum'     {'w': [2, F, D]} (gate, up) with
                                                 transpose_gating_einsum=True (Gemma 2 9B/27B,
                                                 Gemma 3), [2, D, F] without (Gemma 2 2B)
    'transformer/layer_i/mlp/linear'            {'w': [F, D]}

(the library's nested tree flattened by gemma/gm/ckpts/_compat.py flatten_and_remap_params).
Norm scales are stored as w where the model multiplies by 1 + w (gemma/gm/nn/_layers.py RMSNorm),
the same numbers Hugging Face stores for Gemma, so they are copied as they are.

The twins hold the SAME float32 numbers as tests/fixtures/hf/gemma2 and gemma3 (the official
checkpoints are bfloat16; float32 keeps the float32 goldens exact), so their golden logits are the
HF twins' goldens. gemma2 uses the [2, D, F] gating layout (as Gemma 2 2B), gemma3 the [2, F, D]
one (as every Gemma 3); F = 96 != D = 64, so the two are told apart by shape. Each twin folder is
laid out like a Kaggle archive: the orbax checkpoint in `tiny/`, `tokenizer.model` beside it, and
`twin.json`: the gemma library TransformerConfig field values that describe the model (official
checkpoints carry no config; the library knows them from its model class) and the HF source.

Before saving, the twin is run through a numpy forward pass written from the gemma library's
modules (gemma/gm/nn/_modules.py, _layers.py, gemma/gm/math/_positional_embeddings.py) and must
reproduce the HF golden logits: the layout conversion is checked against the library's semantics,
not against ropex.

Run (no torch needed; the main venv): python scripts/make_flax_fixtures.py tests/fixtures/hf
tests/fixtures/flax    (part of `make hf-fixtures`).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import safetensors.numpy

TWINS = {"gemma2": False, "gemma3": True}  # family -> transpose_gating_einsum
GOLDEN_ATOL = 1e-4


def heads_first(w_ND, n):
  """HF [n*H, D] projection -> the library's [n, D, H]."""
  d = w_ND.shape[1]
  return w_ND.reshape(n, -1, d).transpose(0, 2, 1)


def attention_tree(t, p, config, i):
  n = config["num_attention_heads"]
  k = config["num_key_value_heads"]
  q = heads_first(t[p + "self_attn.q_proj.weight"], n)
  keys = heads_first(t[p + "self_attn.k_proj.weight"], k)
  values = heads_first(t[p + "self_attn.v_proj.weight"], k)
  o_DX = t[p + "self_attn.o_proj.weight"]
  attn = {"attn_vec_einsum": {"w": o_DX.T.reshape(n, -1, o_DX.shape[0])}}
  if k == n:
    attn["qkv_einsum"] = {"w": np.stack([q, keys, values])}
  else:
    attn["q_einsum"] = {"w": q}
    attn["kv_einsum"] = {"w": np.stack([keys, values])}
  if p + "self_attn.q_norm.weight" in t:
    attn["_query_norm"] = {"scale": t[p + "self_attn.q_norm.weight"]}
    attn["_key_norm"] = {"scale": t[p + "self_attn.k_norm.weight"]}
  return attn


def nested_tree(t, config, transpose_gating):
  """The library's nested params (model.init()['params'] structure) from HF tensors."""
  tree = {"embedder": {"input_embedding": t["model.embed_tokens.weight"]},
          "final_norm": {"scale": t["model.norm.weight"]}}
  for i in range(config["num_hidden_layers"]):
    p = f"model.layers.{i}."
    gate_FD, up_FD = t[p + "mlp.gate_proj.weight"], t[p + "mlp.up_proj.weight"]
    gating = (np.stack([gate_FD, up_FD]) if transpose_gating
              else np.stack([gate_FD.T, up_FD.T]))
    tree[f"layer_{i}"] = {
        "attn": attention_tree(t, p, config, i),
        "mlp": {"gating_einsum": gating, "linear": t[p + "mlp.down_proj.weight"].T},
        "pre_attention_norm": {"scale": t[p + "input_layernorm.weight"]},
        "post_attention_norm": {"scale": t[p + "post_attention_layernorm.weight"]},
        "pre_ffw_norm": {"scale": t[p + "pre_feedforward_layernorm.weight"]},
        "post_ffw_norm": {"scale": t[p + "post_feedforward_layernorm.weight"]}}
  return tree


def flat_tree(tree, prefix="transformer"):
  """NESTED -> FLAT as the library's flatten_and_remap_params: module path -> {param: array};
  the mlp's bare arrays become {'w': array}."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}"
    if not isinstance(value, dict):
      flat[path] = {"w": value}
    elif all(not isinstance(v, dict) for v in value.values()) and not path.endswith("/mlp"):
      flat[path] = dict(value)
    else:
      flat.update(flat_tree(value, path))
  return flat


def library_config(config, transpose_gating):
  """The gemma library TransformerConfig field values of the HF config (enums by name)."""
  d, n, h = config["hidden_size"], config["num_attention_heads"], config["head_dim"]
  scalar = config["query_pre_attn_scalar"]
  norms = {h: "BY_ONE_OVER_SQRT_HEAD_DIM", d // n: "BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS"}
  if scalar not in norms:
    raise ValueError(f"query_pre_attn_scalar={scalar} has no gemma library equivalent")
  rope = config["rope_parameters"]
  local = rope.get("sliding_attention", rope)
  glob = rope.get("full_attention", rope)
  return dict(
      num_embed=config["vocab_size"], embed_dim=d, hidden_dim=config["intermediate_size"],
      num_heads=n, head_dim=h, num_kv_heads=config["num_key_value_heads"],
      final_logit_softcap=config.get("final_logit_softcapping"),
      use_post_attn_norm=True, use_post_ffw_norm=True,
      attention_types=["LOCAL_SLIDING" if t == "sliding_attention" else "GLOBAL"
                       for t in config["layer_types"]],
      query_pre_attn_norm=norms[scalar],
      attn_logits_soft_cap=config.get("attn_logit_softcapping"),
      sliding_window_size=config["sliding_window"],
      transpose_gating_einsum=transpose_gating,
      use_qk_norm=config["model_type"] == "gemma3_text",
      local_base_frequency=local["rope_theta"], global_base_frequency=glob["rope_theta"],
      local_scale_factor=local.get("factor", 1.0), global_scale_factor=glob.get("factor", 1.0))


# --- a numpy forward pass with the gemma library's semantics (self-check only) ---------------

def rms_norm(x, scale):
  """_layers.RMSNorm: eps 1e-6 inside rsqrt, times (1 + scale)."""
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * (1 + scale)


def apply_rope(x_BTNH, positions_BT, base, scale_factor):
  """_positional_embeddings.apply_rope: first half / second half pairs, positions / factor."""
  half = x_BTNH.shape[-1] // 2
  timescale = base ** (2.0 * np.arange(half) / x_BTNH.shape[-1])
  angle = (positions_BT[..., None] / timescale)[..., None, :] / scale_factor
  first, second = x_BTNH[..., :half], x_BTNH[..., half:]
  sin, cos = np.sin(angle), np.cos(angle)
  return np.concatenate([first * cos - second * sin, second * cos + first * sin], -1)


def attention(x, a, lc, i):
  local = lc["attention_types"][i] == "LOCAL_SLIDING"
  base = lc["local_base_frequency"] if local else lc["global_base_frequency"]
  factor = lc["local_scale_factor"] if local else lc["global_scale_factor"]
  q = np.einsum("BTD,NDH->BTNH", x, a["q_einsum"]["w"])
  k, v = np.einsum("BSD,CKDH->CBSKH", x, a["kv_einsum"]["w"])
  if lc["use_qk_norm"]:
    q, k = rms_norm(q, a["_query_norm"]["scale"]), rms_norm(k, a["_key_norm"]["scale"])
  pos = np.broadcast_to(np.arange(x.shape[1]), x.shape[:2]).astype(np.float64)
  q, k = apply_rope(q, pos, base, factor), apply_rope(k, pos, base, factor)
  scalar = (lc["head_dim"] if lc["query_pre_attn_norm"] == "BY_ONE_OVER_SQRT_HEAD_DIM"
            else lc["embed_dim"] // lc["num_heads"]) ** -0.5
  groups = lc["num_heads"] // lc["num_kv_heads"]
  logits = np.einsum("BTNH,BSNH->BTNS", q * scalar, np.repeat(k, groups, axis=2))
  if lc["attn_logits_soft_cap"]:
    logits = np.tanh(logits / lc["attn_logits_soft_cap"]) * lc["attn_logits_soft_cap"]
  t, s = np.arange(x.shape[1])[:, None], np.arange(x.shape[1])[None, :]
  mask = s <= t
  if local:  # create_sliding_mask: |t - s| < window
    mask &= (s > t - lc["sliding_window_size"]) & (s < t + lc["sliding_window_size"])
  logits = np.where(mask[None, :, None, :], logits, -2.3819763e38)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  encoded = np.einsum("BTNS,BSNH->BTNH", probs, np.repeat(v, groups, axis=2))
  return np.einsum("BTNH,NHD->BTD", encoded, a["attn_vec_einsum"]["w"])


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def as_float64(tree):
  if isinstance(tree, dict):
    return {k: as_float64(v) for k, v in tree.items()}
  return np.asarray(tree, np.float64)


def library_forward(tree, lc, tokens_BT):
  """Logits of the nested tree as gemma/gm/nn computes them (float64 numpy)."""
  tree = as_float64(tree)
  table = tree["embedder"]["input_embedding"]
  x = table[tokens_BT] * np.sqrt(lc["embed_dim"])
  for i in range(len(lc["attention_types"])):
    layer = tree[f"layer_{i}"]
    h = attention(rms_norm(x, layer["pre_attention_norm"]["scale"]), layer["attn"], lc, i)
    x = x + rms_norm(h, layer["post_attention_norm"]["scale"])
    h = rms_norm(x, layer["pre_ffw_norm"]["scale"])
    eq = "...F,NHF->...NH" if lc["transpose_gating_einsum"] else "...F,NFH->...NH"
    gate = np.einsum(eq, h, layer["mlp"]["gating_einsum"])
    h = np.einsum("...H,HF->...F", gelu_tanh(gate[..., 0, :]) * gate[..., 1, :],
                  layer["mlp"]["linear"])
    x = x + rms_norm(h, layer["post_ffw_norm"]["scale"])
  logits = rms_norm(x, tree["final_norm"]["scale"]) @ table.T
  if lc["final_logit_softcap"]:
    logits = np.tanh(logits / lc["final_logit_softcap"]) * lc["final_logit_softcap"]
  return logits


# ---------------------------------------------------------------------------------------------

def save_orbax(path, tree):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if path.exists():
    shutil.rmtree(path)
  checkpointer = ocp.StandardCheckpointer()  # as gemma/gm/ckpts save_params
  checkpointer.save(path.resolve(), tree)
  checkpointer.wait_until_finished()


def make_twin(family, hf_root, out_root):
  source = hf_root / family
  config = json.loads((source / "config.json").read_text())
  tensors = safetensors.numpy.load_file(source / "model.safetensors")
  transpose = TWINS[family]
  tree = nested_tree(tensors, config, transpose)
  lc = library_config(config, transpose)
  golden = np.load(source / "golden.npz")
  error = float(np.abs(library_forward(tree, lc, golden["input_ids"]) - golden["logits"]).max())
  assert error < GOLDEN_ATOL, (family, error)
  out = out_root / family
  out.mkdir(parents=True, exist_ok=True)
  save_orbax(out / "tiny", flat_tree(tree))
  shutil.copyfile(source / "tokenizer.model", out / "tokenizer.model")
  (out / "twin.json").write_text(json.dumps(dict(
      source=f"tests/fixtures/hf/{family} (same float32 numbers; goldens: its golden.npz)",
      checkpoint="tiny/ (orbax, gemma library FLAT layout)", tokenizer="tokenizer.model",
      gemma_library_config=lc, library_forward_max_abs_error=error), indent=1) + "\n")
  return error


def main(argv):
  hf_root = Path(argv[1] if len(argv) > 1 else "tests/fixtures/hf")
  out_root = Path(argv[2] if len(argv) > 2 else "tests/fixtures/flax")
  for family in TWINS:
    print(family, "library forward vs HF golden, max |diff|:",
          make_twin(family, hf_root, out_root))


if __name__ == "__main__":
  main(sys.argv)
