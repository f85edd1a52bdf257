"""Encodings beyond a fixed rotation of q and k: logit biases (ALiBi, FIRE), learned Fourier
rotations (FoPE) and absolute encodings of the input embedding (learned, sinusoidal).

Each is registered by name in :mod:`ropex.model.positional` and implements
:class:`ropex.model.pe_interface.Encoding`. Shapes: B batch, T query length, S key length, N query
heads, K kv heads, H head dim, C = H/2 chunks, D model dim, W hidden width.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ropex.model.pe_interface import Dims, Encoding, ParamSpec


def _constant(value: float):
  return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


def _uniform(limit: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -limit,
                                                                  limit)


def alibi_slopes(num_heads: int) -> np.ndarray:
  """ALiBi's head slopes (Press et al. 2108.12409): ``2^(-8i/n)``, i = 1..n, for n a power of
  two; otherwise those of the closest smaller power of two ``m``, then every other slope of
  ``2m`` heads, as in the paper's reference code."""
  def power_of_two(n):
    return np.power(2.0, -8.0 * np.arange(1, n + 1) / n)
  closest = 2 ** int(math.floor(math.log2(num_heads)))
  if closest == num_heads:
    return power_of_two(num_heads)
  extra = power_of_two(2 * closest)[0::2][:num_heads - closest]
  return np.concatenate([power_of_two(closest), extra])


@dataclasses.dataclass(frozen=True)
class ALiBi(Encoding):
  """Attention with Linear Biases (Press et al., ICLR 2022, 2108.12409): no rotation; head
  ``h`` adds ``-slope_h * (pos_q - pos_k)`` to its logits. Parameter-free."""
  head_dim: int
  kind: str = 'alibi'
  bias_kind = 'alibi'

  def logit_bias(self, positions_q_BT, positions_k_BS, params, num_heads):
    del params
    slopes_N = jnp.asarray(alibi_slopes(num_heads), jnp.float32)
    distance_BTS = (positions_q_BT[:, :, None] - positions_k_BS[:, None, :]).astype(jnp.float32)
    return -slopes_N[None, :, None, None] * distance_BTS[:, None]

  def label(self) -> str:
    return 'ALiBi'

  def summary(self) -> dict:
    return {'pe_kind': self.kind, 'rotated_chunks': [], 'bias': self.bias_kind}


@dataclasses.dataclass(frozen=True)
class FIRE(Encoding):
  """Functional Interpolation for Relative Positions (Li et al., ICLR 2024, 2310.04418).

  ``bias_h(i, j) = f(ψ(i - j) / ψ(max(i, L)))`` with ``ψ(x) = log(|c x| + 1)`` and ``f`` an MLP
  ``1 -> W (ReLU) -> N heads``; ``i`` is the query's position, ``c`` is learned and the threshold
  ``L = |L_multiplier · init_L|`` has a learned multiplier ("progressive interpolation": the
  distance is normalised by the query position once it exceeds L). Defaults are the paper's:
  W = 32, c initialised to 0.1, init_L = 512, eps 1e-6; the MLP is initialised like torch's
  ``nn.Linear`` (uniform ±1/sqrt(fan_in)), as in the paper's reference code."""
  head_dim: int
  mlp_width: int = 32
  init_c: float = 0.1
  init_L: float = 512.0
  eps: float = 1e-6
  kind: str = 'fire'
  bias_kind = 'fire'

  def param_specs(self, dims: Dims) -> dict[str, ParamSpec]:
    W, N = self.mlp_width, dims.num_heads
    return {
        'mlp_w1': ParamSpec((W,), (None,), _uniform(1.0)),
        'mlp_b1': ParamSpec((W,), (None,), _uniform(1.0)),
        'mlp_w2': ParamSpec((W, N), (None, 'heads'), _uniform(W ** -0.5)),
        'mlp_b2': ParamSpec((N,), ('heads',), _uniform(W ** -0.5)),
        'c': ParamSpec((), (), _constant(self.init_c)),
        'L_multiplier': ParamSpec((), (), _constant(1.0)),
    }

  def normalized_distance(self, positions_q_BT, positions_k_BS, params):
    """``ψ(i - j) / (ψ(max(i, L)) + eps)`` [B, T, S] (float32)."""
    p = {k: v.astype(jnp.float32) for k, v in params.items()}
    q_BT = positions_q_BT.astype(jnp.float32)
    distance_BTS = q_BT[:, :, None] - positions_k_BS.astype(jnp.float32)[:, None, :]
    threshold = jnp.abs(p['L_multiplier'] * self.init_L)
    normalizer_BT = jnp.log(jnp.abs(p['c'] * jnp.maximum(q_BT, threshold)) + 1.0) + self.eps
    return jnp.log(jnp.abs(p['c'] * distance_BTS) + 1.0) / normalizer_BT[:, :, None]

  def logit_bias(self, positions_q_BT, positions_k_BS, params, num_heads):
    del num_heads
    p = {k: v.astype(jnp.float32) for k, v in params.items()}
    x_BTS = self.normalized_distance(positions_q_BT, positions_k_BS, params)
    h_BTSW = jax.nn.relu(x_BTS[..., None] * p['mlp_w1'] + p['mlp_b1'])
    bias_BTSN = jnp.einsum('btsw,wn->btsn', h_BTSW, p['mlp_w2']) + p['mlp_b2']
    return jnp.moveaxis(bias_BTSN, -1, 1)

  def label(self) -> str:
    return 'FIRE'

  def summary(self) -> dict:
    return {'pe_kind': self.kind, 'rotated_chunks': [], 'bias': self.bias_kind,
            'fire_mlp_width': self.mlp_width, 'fire_init_c': self.init_c,
            'fire_init_L': self.init_L}


@dataclasses.dataclass(frozen=True)
class FoPE(Encoding):
  """Fourier Position Embedding (Hua et al., 2412.17739), with the authors' defaults.

  Defaults are those of the authors' code (``olmo/model.py`` ``FourierEmbedding`` and the
  ``fourier_*`` / ``rope_clamp_*`` fields of ``olmo/config.py``, as read in the public copy
  github.com/yiju-zhao/Fourier-Position-Embedding; their FoPE runs, e.g. ``configs/c4/
  length-512/ce-fourier/OLMo-60M-...-sep_basis_head-ignore_clamp_zero.yaml``, set
  ``rope_clamp_floor_freq``, ``rope_clamp_floor_to_zero``, ``fourier_separate_basis``,
  ``fourier_separate_head``, ``fourier_ignore_zero``, ``fourier_init: eye_xavier_norm`` and gain
  0.3 / 0.4 / 0.6 for 60M / 180M / 1.2B):

  * RoPE frequencies ``ω_j = θ^(-2j/H)``; those below the floor ``2π/train_length`` (less than
    one period in the training context) are clipped to zero and *dropped from the basis*: the
    ``D`` nonzero ones (``j < D``) are the inputs.
  * The first ``M = min(D, H/4)`` chunks mix them: ``cos_m(n) = Σ_j A_jm cos(ω_j n)``,
    ``sin_m(n) = Σ_j B_jm sin(ω_j n)`` with separate ``A`` (cos) and ``B`` (sin) ``[K, D, M]``
    per KV head (the authors': per head, in MHA models).
  * The other chunks get ``cos = sin = 1`` (the reference pads both with 1: a fixed,
    position-independent map that doubles q·k in those chunks).
  * ``A`` and ``B`` are *fixed* (``fourier_learnable=False``): drawn at init as Xavier-normal
    noise with gain ``fourier_sigma`` = 0.3 plus an identity (``D == M``) or a strided identity
    (``[j·ceil(D/M), j] = 1``), never trained (gradient stopped; no weight decay: their names
    start ``fixed_``). The Xavier std is torch's for a ``[K, D, M]`` tensor:
    ``σ·sqrt(2 / ((D + K)·M))``.
  * Rotation in the half layout: ``(x1 cos - x2 sin, x2 cos + x1 sin)``.
  """
  head_dim: int
  max_wavelength: float = 10_000.0
  train_length: int = 4096
  fourier_sigma: float = 0.3
  kind: str = 'fope'

  def inv_freq(self, seq_len: int | None = None) -> np.ndarray:
    """All ``H/2`` RoPE frequencies with those below the floor clipped to 0."""
    del seq_len
    d = self.head_dim
    inv = 1.0 / np.power(self.max_wavelength, np.arange(0, d, 2, dtype=np.float64) / d)
    return np.where(inv < 2 * math.pi / self.train_length, 0.0, inv)

  def basis(self) -> np.ndarray:
    """The ``D`` nonzero frequencies (the Fourier basis)."""
    inv = self.inv_freq()
    return inv[inv > 0]

  def mixed_chunks(self) -> int:
    """``M = min(D, H/4)``: the chunks whose rotation is a Fourier series."""
    return min(len(self.basis()), self.head_dim // 4)

  def rotated_chunks(self) -> tuple[int, ...]:
    return tuple(range(self.mixed_chunks()))

  def param_specs(self, dims: Dims) -> dict[str, ParamSpec]:
    D, M, K = len(self.basis()), self.mixed_chunks(), dims.num_kv_heads
    std = self.fourier_sigma * math.sqrt(2.0 / ((D + K) * M))
    step = math.ceil(D / M)
    eye_DM = np.zeros((D, M), np.float32)
    cols = np.arange(M)[np.arange(M) * step < D]
    eye_DM[cols * step, cols] = 1.0   # the identity when D == M

    def init(key, shape, dtype=jnp.float32):
      return (jnp.asarray(eye_DM, dtype) + std * jax.random.normal(key, shape, dtype))

    spec = ParamSpec((K, D, M), ('kv_heads', None, None), init)
    return {'fixed_cos_coef': spec, 'fixed_sin_coef': spec}

  def _apply(self, x_BTHK, positions_BT, params):
    C, M = self.head_dim // 2, self.mixed_chunks()
    angle_BTD = positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(self.basis(),
                                                                          jnp.float32)
    coef = {k: jax.lax.stop_gradient(v.astype(jnp.float32)) for k, v in params.items()}
    cos_BTKM = jnp.einsum('btd,kdm->btkm', jnp.cos(angle_BTD), coef['fixed_cos_coef'])
    sin_BTKM = jnp.einsum('btd,kdm->btkm', jnp.sin(angle_BTD), coef['fixed_sin_coef'])
    pad = [(0, 0)] * 3 + [(0, C - M)]
    cos_BTKC = jnp.pad(cos_BTKM, pad, constant_values=1.0)
    sin_BTKC = jnp.pad(sin_BTKM, pad, constant_values=1.0)
    heads, kv_heads = x_BTHK.shape[2], cos_BTKC.shape[2]
    if heads != kv_heads:  # queries: head n reads KV head n // G
      cos_BTKC = jnp.repeat(cos_BTKC, heads // kv_heads, axis=2)
      sin_BTKC = jnp.repeat(sin_BTKC, heads // kv_heads, axis=2)
    x = x_BTHK.astype(jnp.float32)
    x1, x2 = x[..., :C], x[..., C:]
    out = jnp.concatenate([x1 * cos_BTKC - x2 * sin_BTKC, x2 * cos_BTKC + x1 * sin_BTKC], -1)
    return out.astype(x_BTHK.dtype)

  def queries(self, q_BTNH, positions_BT, params):
    return self._apply(q_BTNH, positions_BT, params)

  def keys(self, k_BSKH, positions_BS, params):
    return self._apply(k_BSKH, positions_BS, params)

  def label(self) -> str:
    return f'FoPE θ={self.max_wavelength:g}'

  def summary(self) -> dict:
    return {'pe_kind': self.kind, 'max_wavelength': self.max_wavelength, 'layout': 'half',
            'rotated_chunks': list(self.rotated_chunks()), 'train_length': self.train_length,
            'fourier_sigma': self.fourier_sigma, 'fourier_basis': len(self.basis()),
            'fourier_learnable': False}


def sinusoid_table(positions_BT, embed_dim: int, max_wavelength: float):
  """Vaswani et al.'s encoding [B, T, D]: ``PE(p, 2i) = sin(p / θ^(2i/D))``, ``PE(p, 2i+1) =
  cos(p / θ^(2i/D))`` (float32)."""
  inv_I = 1.0 / np.power(max_wavelength, np.arange(0, embed_dim, 2, dtype=np.float64) / embed_dim)
  angle_BTI = positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(inv_I, jnp.float32)
  table = jnp.stack([jnp.sin(angle_BTI), jnp.cos(angle_BTI)], axis=-1)
  return table.reshape(*positions_BT.shape, -1)[..., :embed_dim]


@dataclasses.dataclass(frozen=True)
class SinusoidalAbsolute(Encoding):
  """Sinusoidal absolute positions (Vaswani et al. 2017, θ = 10 000) added to the (scaled)
  input embedding; queries and keys are not rotated. Parameter-free."""
  head_dim: int
  max_wavelength: float = 10_000.0
  kind: str = 'sinusoidal_absolute'
  acts_on_embedding = True

  def embed(self, x_BTD, positions_BT, params):
    del params
    pe_BTD = sinusoid_table(positions_BT, x_BTD.shape[-1], self.max_wavelength)
    return (x_BTD.astype(jnp.float32) + pe_BTD).astype(x_BTD.dtype)

  def label(self) -> str:
    return 'sinusoidal absolute'

  def summary(self) -> dict:
    return {'pe_kind': self.kind, 'rotated_chunks': [], 'max_wavelength': self.max_wavelength,
            'acts_on_embedding': True}


@dataclasses.dataclass(frozen=True)
class LearnedAbsolute(Encoding):
  """Learned absolute positions (GPT-2's ``wpe``; nanodo): a [max_positions, D] table added to
  the input embedding, initialised N(0, 0.02²) (GPT-2's initializer_range); GPT-2's 1024
  positions by default. Positions at or beyond ``max_positions`` read the last row."""
  head_dim: int
  max_positions: int = 1024
  kind: str = 'learned_absolute'
  acts_on_embedding = True

  def embedding_param_specs(self, dims: Dims) -> dict[str, ParamSpec]:
    init = lambda key, shape, dtype=jnp.float32: 0.02 * jax.random.normal(key, shape, dtype)
    return {'position_embedding': ParamSpec((self.max_positions, dims.embed_dim),
                                            (None, 'embed'), init)}

  def embed(self, x_BTD, positions_BT, params):
    table = params['position_embedding']
    pe_BTD = jnp.take(table, positions_BT, axis=0, mode='clip')
    return (x_BTD + pe_BTD.astype(x_BTD.dtype)).astype(x_BTD.dtype)

  def label(self) -> str:
    return f'learned absolute ({self.max_positions})'

  def summary(self) -> dict:
    return {'pe_kind': self.kind, 'rotated_chunks': [], 'max_positions': self.max_positions,
            'acts_on_embedding': True}
