"""The whole analysis of one model on a set of prompts, and its report.

    from ropex.analysis import pipeline, prompts
    result = pipeline.analyze(cfg, params, prompts.tokenize(texts, tok, 256), out_dir='out')

writes ``out/report.md`` (+ ``report.html``), ``out/figures/*.png``, ``out/arrays.npz`` and
``out/summary.json``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

import jax
import numpy as np

from ropex import paths
from ropex.model import pe_interface
from ropex.analysis import ablation, capture, frequency, heads
from ropex.analysis.prompts import Prompts
from ropex.analysis.document import Doc, fmt, rel
from ropex.model.config import ModelConfig


@dataclasses.dataclass
class Analysis:
  usage: frequency.FrequencyUsage
  head_scores: heads.HeadScores
  loss: float
  ablations: list[dict]
  maps_LNTS: np.ndarray          # attention of every head on the first prompt's first tokens
  files: dict[str, str] = dataclasses.field(default_factory=dict)


class _FirstPromptMaps:
  """Keeps the attention maps of the first prompt (first ``n`` tokens) of the first batch."""

  def __init__(self, n: int):
    self.n, self.maps = n, None

  def add(self, captured: capture.Captured) -> None:
    if self.maps is None:
      n = min(self.n, int(captured.valid_BT[0].sum()))
      self.maps = np.stack([p[0, :, :n, :n] for p in captured.probs])


def analyze(cfg: ModelConfig, params: dict, prompts: Prompts, out_dir: str | None = None, *,
            title: str = 'ropex analysis', meta: dict | None = None, top_heads: int = 4,
            ablate_fraction: float = 0.25, batch_size: int = 8, map_tokens: int = 32,
            token_labels: list[str] | None = None, html: bool = True,
            placement=None, write: bool = True) -> Analysis:
  """Frequency usage, positional heads and frequency ablation of ``(cfg, params)`` (either
  layer layout) on ``prompts``; with ``out_dir``, writes the report, figures and arrays.

  With a ``placement`` (:class:`~ropex.training.placement.Placement`) the parameters are placed
  on its mesh once and every forward pass (the capture and each ablation) runs there, batches
  split over the batch axes; without, on the default device (host arrays, e.g. imported Gemma
  weights, are still put on it once)."""
  flat_cfg, flat_params = capture.for_analysis(cfg, params)
  flat_params = (placement.place(flat_params, flat_cfg) if placement is not None
                 else jax.device_put(flat_params))
  usage = frequency.FrequencyAccumulator(flat_cfg)
  scores = heads.HeadScoreAccumulator(flat_cfg)
  loss = capture.LossAccumulator()
  maps = _FirstPromptMaps(map_tokens)
  capture.run(flat_cfg, flat_params, prompts, batch_size, [usage, scores, loss, maps],
              placement)
  result = Analysis(usage.result(), scores.result(), loss.result(), [], maps.maps)
  if top_heads > 0:
    result.ablations = ablation.run_ablations(
        flat_cfg, flat_params, prompts, result.head_scores.top(top_heads), ablate_fraction,
        batch_size, baseline=(result.head_scores, result.loss), placement=placement)
  if out_dir and write:   # ``write=False``: the other processes of a multi-process analysis
    _write(result, flat_cfg, prompts, out_dir, title, dict(meta or {}), top_heads,
           ablate_fraction, token_labels, html)
  return result


def _pe_text(spec, head_dim: int) -> str:
  """One layer spec in words, from what its encoding declares (any kind)."""
  enc = pe_interface.as_encoding(spec.pe)
  s = enc.summary()
  text = f"{s['pe_kind']}"
  if 'max_wavelength' in s:
    text += f", theta={s['max_wavelength']:g}, layout={s.get('layout')}"
  scaling = s.get('scaling') or {}
  if scaling.get('type', 'none') != 'none':
    text += f", scaling {scaling['type']}" + (f" x{scaling['factor']:g}"
                                              if scaling.get('factor') else '')
  chunks = s.get('rotated_chunks', [])
  if enc.inv_freq() is None:
    text += (', frequency analysis not applicable (the encoding declares no rotation '
             'frequencies; chunks use the half pairing)')
  else:
    text += (f', rotated chunks {chunks[0]}..{chunks[-1]} of {head_dim // 2}' if chunks
             else f', no rotated chunks of {head_dim // 2}')
  if enc.bias_kind:
    text += f', logit bias {enc.bias_kind}'
  if s.get('attn_temperature_tuning'):
    text += ', query temperature'
  if spec.window:
    text += f', window {spec.window}'
  if spec.chunk_attention:
    text += f', chunked attention {spec.chunk_attention}'
  return text


def pe_summary(cfg: ModelConfig) -> list[str]:
  """One line per run of consecutive layers with the same encoding and window."""
  lines, start = [], 0
  specs = cfg.layers
  key = lambda sp: (sp.pe, sp.window, sp.chunk_attention, cfg.attention_shape(sp))
  for i in range(1, len(specs) + 1):
    if i == len(specs) or key(specs[i]) != key(specs[start]):
      span = f'layer {start}' if i - 1 == start else f'layers {start}-{i - 1}'
      lines.append(f'{span}: {_pe_text(specs[start], cfg.attention_shape(specs[start])[1])}')
      start = i
  if cfg.input_pe is not None:
    lines.append(f'input embedding: {pe_interface.as_encoding(cfg.input_pe).summary()["pe_kind"]}')
  return lines


@dataclasses.dataclass
class _Report:
  """What the written report is made from."""
  result: Analysis
  cfg: ModelConfig
  prompts: Any
  out_dir: str
  meta: dict
  top_heads: int
  fraction: float

  @property
  def n_band(self) -> int:
    return max(1, int(round(self.fraction * (self.cfg.head_dim // 2))))


def _write(result: Analysis, cfg, prompts, out_dir, title, meta, top_heads, fraction,
           token_labels, html):
  r = _Report(result, cfg, prompts, out_dir, meta, top_heads, fraction)
  files = _write_arrays(r)
  files.update(_write_figures(r, token_labels))
  files['summary'] = _write_summary(r)
  doc = Doc(title)
  _doc_model(doc, r)
  _doc_frequency(doc, r, files)
  _doc_heads(doc, r, files)
  _doc_ablation(doc, r)
  _doc_files(doc)
  for i, path in enumerate(doc.write(out_dir, html_too=html)):
    files['report' if i == 0 else 'html'] = path
  del files['layers']  # per-layer figures are linked from the report, not listed
  result.files = files


def _write_arrays(r: _Report) -> dict:
  usage, scores, prompts = r.result.usage, r.result.head_scores, r.prompts
  path = os.path.join(r.out_dir, 'arrays.npz')
  paths.path(r.out_dir, '--out').mkdir(parents=True, exist_ok=True)
  data = io.BytesIO()
  np.savez_compressed(data, q_chunk_norm_LNC=usage.q_LNC, k_chunk_norm_LKC=usage.k_LKC,
                      chunk_freqs_LC=usage.freqs_LC, head_scores_LNS=scores.scores_LNS,
                      head_offsets_LNO=scores.offsets_LNO, attention_maps_LNTS=r.result.maps_LNTS,
                      tokens_PT=prompts.tokens_PT, lengths_P=prompts.lengths_P)
  paths.path(path).write_bytes(data.getvalue())
  return {'arrays': path}


def _write_figures(r: _Report, token_labels) -> dict:
  fig_dir = os.path.join(r.out_dir, 'figures')
  paths.path(fig_dir).mkdir(parents=True, exist_ok=True)
  usage, maps = r.result.usage, r.result.maps_LNTS
  labels = token_labels[:maps.shape[-1]] if token_labels else None
  return {
      'overview': frequency.plot_overview(usage, os.path.join(fig_dir, 'frequency_overview.png')),
      'layers': frequency.plot_layers(usage, fig_dir),
      'maps': heads.plot_attention_maps(maps, r.result.head_scores.top(max(r.top_heads, 4)),
                                        os.path.join(fig_dir, 'attention_top_heads.png'), labels),
  }


def _write_summary(r: _Report) -> str:
  result, prompts = r.result, r.prompts
  shares = result.usage.band_shares(r.fraction)
  summary = dict(r.meta, loss=result.loss, perplexity=float(np.exp(result.loss)),
                 prompts=len(prompts.texts), prompt_source=prompts.description,
                 tokens=prompts.num_tokens, pe=pe_summary(r.cfg),
                 top_heads=result.head_scores.top(10), ablations=result.ablations,
                 band_shares={k: [None if np.isnan(x) else float(x) for x in v]
                              for k, v in shares.items()})
  path = os.path.join(r.out_dir, 'summary.json')
  paths.path(path).write_text(json.dumps(summary, indent=1))
  return path


def _doc_model(doc: Doc, r: _Report) -> None:
  prompts, loss = r.prompts, r.result.loss
  doc.h2('Model and prompts')
  doc.bullets([f'{k}: {v}' for k, v in r.meta.items()] + pe_summary(r.cfg) + [
      f'prompts: {prompts.description}; {len(prompts.texts)} prompts, {prompts.num_tokens} '
      f'tokens (BOS included)',
      f'next-token loss {loss:.4f} (perplexity {np.exp(loss):.2f})'])


def _doc_frequency(doc: Doc, r: _Report, files: dict) -> None:
  shares = r.result.usage.band_shares(r.fraction)
  doc.h2('Frequency usage')
  doc.p('Mean 2-norm of every frequency chunk of the queries and keys after the positional '
        'encoding, over all prompt tokens (chunk 0 = highest frequency; a dashed line marks '
        'where unrotated chunks begin). By Cauchy-Schwarz a chunk\'s norms bound its '
        'contribution to the attention logits.')
  doc.image(rel(files['overview'], r.out_dir), 'frequency usage overview')
  doc.p(f'Share of the total chunk norm in the {r.n_band} highest- and the {r.n_band} '
        'lowest-frequency chunks, per layer:')
  doc.table(['layer', 'q high', 'q low', 'k high', 'k low'],
            [[i] + [fmt(float(shares[k][i])) if r.result.usage.declared(i) else 'n/a'
                    for k in ('q_high', 'q_low', 'k_high', 'k_low')]
             for i in range(r.cfg.num_layers)])
  undeclared = [i for i in range(r.cfg.num_layers) if not r.result.usage.declared(i)]
  if undeclared:
    doc.p(f'Layers {", ".join(map(str, undeclared))}: frequency analysis is not applicable '
          '(their encoding declares no rotation frequencies); their chunk norms use Gemma\'s '
          'half pairing and the high / low bands are marked n/a.')
  doc.h3('Per layer: heads x frequencies')
  for path in files['layers']:
    doc.image(rel(path, r.out_dir), os.path.basename(path))


def _doc_heads(doc: Doc, r: _Report, files: dict) -> None:
  scores = r.result.head_scores
  doc.h2('Positional heads')
  doc.p('Attention on the token itself (diagonal), on the previous token and on the first '
        f'token (BOS), averaged over {scores.queries} query positions t >= 2. Heads are ranked '
        'by the peak of their offset profile (mean attention on the key k tokens back, '
        f'k < {scores.offsets_LNO.shape[-1]}; k = 0 is the diagonal, k = 1 the previous token).')
  doc.table(['rank', 'layer', 'head', 'kind', 'peak', 'diagonal', 'previous', 'first (BOS)'],
            [[i + 1, h['layer'], h['head'], h['kind'], fmt(h['positional']),
              fmt(h['diagonal']), fmt(h['previous']), fmt(h['first'])]
             for i, h in enumerate(scores.top(10))])
  doc.image(rel(files['maps'], r.out_dir), 'attention maps of the top heads')


def _doc_ablation(doc: Doc, r: _Report) -> None:
  if not r.result.ablations:
    return
  doc.h2('Frequency ablation')
  doc.p(f'For the top {r.top_heads} positional heads, one at a time and all together, the '
        f'{r.n_band} highest-frequency (high) or lowest-frequency (low) chunks are zeroed in '
        'their queries and keys (for a layer without rotation, the first / last chunks). '
        '"pattern" is each ablated head\'s own kind (mean if several); the loss is the '
        'model\'s mean next-token loss on the prompts.')
  arrow = lambda a, key, f='.3f': f"{a[key + '_before']:{f}} -> {a[key + '_after']:{f}}"
  doc.table(['heads', 'band', 'pattern', 'diagonal', 'previous', 'first (BOS)', 'loss'],
            [[a['heads'], a['band'], arrow(a, 'pattern'), arrow(a, 'diagonal'),
              arrow(a, 'previous'), arrow(a, 'first'), arrow(a, 'loss', '.4f')]
             for a in r.result.ablations])


def _doc_files(doc: Doc) -> None:
  doc.h2('Files')
  doc.bullets(['arrays.npz: q_chunk_norm_LNC, k_chunk_norm_LKC, chunk_freqs_LC (rad/token), '
               'head_scores_LNS (diagonal, previous, first), head_offsets_LNO, '
               'attention_maps_LNTS (first prompt), tokens_PT, lengths_P',
               'summary.json: every number of this report'])
