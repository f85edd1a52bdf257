"""The results of one ``python -m ropex.bench`` run as the table it prints and as Markdown tables
(``--markdown FILE``: what the performance page includes as it is, so that no figure there is
typed by hand).

Input: the list of result dicts :func:`ropex.tools.bench.run` returns (kinds ``machine``,
``peak``, ``step``, ``pe_overhead``, ``pipeline``, ``scaling``).
"""

from __future__ import annotations

from ropex.tools import scaling as scaling_lib

GiB = 2 ** 30


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows])


def _pct(x: float) -> str:
  return f'{100 * x:.1f} %'


def machine(results: list[dict]) -> str:
  m = next(r for r in results if r['kind'] == 'machine')
  peaks = next(r for r in results if r['kind'] == 'peak')['peak_flops']
  last = max(r['elapsed_s'] for r in results)
  peak_text = ', '.join(f'{d} {p / 1e9:.1f} GFLOP/s' for d, p in peaks.items())
  if {'float32', 'bfloat16'} <= set(peaks):
    peak_text += f' ({peaks["bfloat16"] / peaks["float32"]:.2f}x)'
  return (f'Machine: {m["cpu"]}, {m["cores"]} cores, {(m["ram_bytes"] or 0) / GiB:.0f} GiB RAM, '
          f'jax {m["jax"]} on the {m["backend"]} backend, `XLA_FLAGS`='
          f'`{m["xla_flags"] or "(none)"}`, `GLIBC_TUNABLES`=`{m["glibc_tunables"] or "(none)"}`; '
          f'load average at the start {m["load_average"][0]:.1f}. Matmul peaks measured in the '
          f'run: {peak_text}. The run took {last / 60:.1f} min.')


def steps(results: list[dict]) -> str:
  rows = []
  for r in (r for r in results if r['kind'] == 'step'):
    ref = 'reference_tokens_per_s' in r
    rows.append([
        r['config'], r['dtype'], f'{r["batch_size"]} x {r["seq_len"]}',
        f'{r["step_s_median"]:.3f} ({r["step_s_min"]:.3f}–{r["step_s_max"]:.3f})',
        f'{r["tokens_per_s"]:.0f}', _pct(r['mfu']), f'{r["model_flops_per_step"] / 1e9:.1f}',
        f'{r.get("compiler_flops_per_step", float("nan")) / 1e9:.1f}',
        f'{r.get("xla_buffers_bytes", float("nan")) / GiB:.2f}',
        f'{r["peak_rss_bytes"] / GiB:.2f}',
        f'{r["reference_tokens_per_s"]:.0f}' if ref else '—',
        _pct(r['reference_mfu']) if ref else '—',
        f'{r["over_reference"]:.2f}x' if ref else '—'])
  first = next(r for r in results if r['kind'] == 'step')
  return (f'Median of {first["steps_timed"]} timed steps (min–max beside it), each config\'s '
          'steps alternated with its reference\'s.\n\n' + _table(
              ['config', 'dtype', 'batch x T', 'step s', 'tokens/s', 'MFU', 'model GFLOP',
               'XLA GFLOP', 'XLA buffers GiB', 'peak RSS GiB', 'reference tokens/s',
               'reference MFU', 'ropex / reference'], rows))


def profile(results: list[dict]) -> str:
  rows = [r for r in results if r['kind'] == 'step' and 'profile' in r]
  if not rows:
    return ''
  cats = list(rows[0]['profile']['share'])
  return _table(['config', 'dtype', 'wall s / step', 'thunk s / step'] + cats, [
      [r['config'], r['dtype'], f'{r["profile"]["step_wall_s"]:.2f}',
       f'{r["profile"]["thunk_s_per_step"]:.2f}'] +
      [f'{100 * r["profile"]["share"][c]:.0f} %' for c in cats] for r in rows])


def others(results: list[dict]) -> str:
  lines = []
  for r in results:
    if r['kind'] == 'pe_overhead':
      lines.append(f'Positional-encoding overhead ({r["config"]}, {r["dtype"]}, '
                   f'{r["steps_timed"]} steps per encoding timed round-robin, step time over '
                   'NoPE\'s): ' + ', '.join(f'{k} {v:.3f}x' for k, v in r['over_nope'].items()
                                             if k != 'nope') + '.')
    elif r['kind'] == 'pipeline':
      lines.append(f'Input pipeline ({r["config"]}, {r["data_source"]}): '
                   f'{r["pipeline_tokens_per_s"]:.0f} tokens/s, {r["ratio"]:.0f}x what the '
                   'train step consumes.')
  return '\n\n'.join(lines)


def scaling(results: list[dict]) -> str:
  r = next((r for r in results if r['kind'] == 'scaling'), None)
  if r is None:
    return ''
  plan = r['plan']
  point = lambda p: [f'{p["seconds_per_sequence"]:.4f}', f'{p["tokens_per_s"]:.0f}',
                     _pct(p['mfu']), f'{(p["xla_temp_bytes"] or float("nan")) / GiB:.3f}',
                     f'{p["peak_rss_bytes"] / GiB:.2f}']
  length = _table(['mode', 'attention', 'T', 'batch', 's / sequence', 'tokens/s', 'MFU',
                   'XLA temp GiB', 'peak RSS GiB'],
                  [[p['mode'], p['impl'], str(p['seq_len']), str(p['batch_size'])] + point(p)
                   for p in r['length']])
  size = _table(['preset', 'parameters', 'T', 'batch', 's / sequence', 'tokens/s', 'MFU',
                 'XLA temp GiB', 'peak RSS GiB'],
                [[p['arch'], f'{p["params"] / 1e6:.1f}M', str(p['seq_len']),
                  str(p['batch_size'])] + point(p) for p in r['size']])
  fits = [[mode, impl, f'{e["low"]:.2f}', f'{e["high"]:.2f}']
          for mode, by_impl in r['exponents'].items() for impl, e in by_impl.items()]
  e0 = next(iter(next(iter(r['exponents'].values())).values()))
  lo, hi = e0['low_range'], e0['high_range']
  exps = _table(['mode', 'attention', f'T = {lo[0]:.0f}..{lo[1]:.0f}',
                 f'T = {hi[0]:.0f}..{hi[1]:.0f}'], fits)
  skipped = '; '.join(f'`{k}` ({v})' for k, v in r['skipped_impls'].items()) or 'none'
  return (f'`{plan["length_arch"]}` preset, float32, train step at {plan["tokens_per_batch"]} '
          f'tokens a batch; evaluation (forward only) at 1x to 16x the training length '
          f'{plan["train_len"]}; median of {plan["steps"]} steps after {plan["warmup"]} '
          f'warm-up. Not measured: {skipped}.\n\n{length}\n\nModel size, train step:\n\n{size}'
          f'\n\nExponent of time per sequence in T (slope of log time against log T):\n\n{exps}')


_PROFILE = ('**Where the time goes** (`--profile`: two traced steps; share of the executed '
            'XLA:CPU thunk time, which overlaps on two cores, so thunk seconds can exceed wall '
            'seconds)')


def render(results: list[dict], command: str | None = None) -> str:
  """The Markdown of a run; ``command``: the command line that made it, named on top."""
  parts = [f'Written by `{command}`.' if command else '', machine(results), '**Train step**',
           steps(results), others(results), _PROFILE, profile(results),
           '**Cost against sequence length and model size**', scaling(results)]
  return '\n\n'.join(p for p in parts if p) + '\n'


def write_markdown(results: list[dict], path: str, command: str | None = None) -> None:
  import os  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(render(results, command))


def print_elapsed(results: list[dict]) -> None:
  """When each part finished, seconds after the run started (where the run's time went)."""
  label = lambda r: ' '.join([r['kind']] + [str(r[k]) for k in ('config', 'dtype') if k in r])
  print('finished at: ' + ', '.join(f'{label(r)} {r["elapsed_s"]:.0f}s' for r in results
                                    if r['kind'] != 'machine'))


def print_table(results: list[dict]) -> None:
  rows = [r for r in results if r['kind'] == 'step']
  print(f'{"config":8s} {"dtype":9s} {"step_s":>8s} {"tokens/s":>9s} {"model GF":>9s} '
        f'{"XLA GF":>9s} {"MFU":>6s} {"peak GF/s":>9s} {"peakRSS GB":>10s} {"ref tok/s":>9s} '
        f'{"x ref":>6s}')
  for r in rows:
    xla = r.get('compiler_flops_per_step', float('nan')) / 1e9
    print(f'{r["config"]:8s} {r["dtype"]:9s} {r["step_s_median"]:8.3f} '
          f'{r["tokens_per_s"]:9.0f} {r["model_flops_per_step"] / 1e9:9.1f} {xla:9.1f} '
          f'{r["mfu"]:6.1%} {r["peak_flops"] / 1e9:9.1f} {r["peak_rss_bytes"] / 2**30:10.2f} '
          f'{r.get("reference_tokens_per_s", float("nan")):9.0f} '
          f'{r.get("over_reference", float("nan")):6.2f}')
  for r in rows:
    if 'profile' in r:
      p = r['profile']
      print(f'profile {r["config"]} {r["dtype"]}: step {p["step_wall_s"]:.3f}s wall, thunks '
            f'{p["thunk_s_per_step"]:.3f}s: ' + ', '.join(
                f'{c} {s:.0%}' for c, s in p['share'].items()))
  for r in results:
    if r['kind'] == 'pe_overhead':
      print(f'PE overhead ({r["config"]}, float32, step time / NoPE): ' + ', '.join(
          f'{k} {v:.3f}x' for k, v in r['over_nope'].items()))
    elif r['kind'] == 'pipeline':
      print(f'input pipeline ({r["config"]}, {r["data_source"]}): '
            f'{r["pipeline_tokens_per_s"]:.0f} tokens/s = {r["ratio"]:.1f}x the trainer\'s '
            f'{r["trainer_tokens_per_s"]:.0f}')
    elif r['kind'] == 'scaling':
      scaling_lib.print_result(r)
    elif r['kind'] == 'machine':
      print(f'machine: {r["cpu"]}, {r["cores"]} cores, '
            f'{(r["ram_bytes"] or 0) / 2**30:.0f} GiB RAM, jax {r["jax"]} ({r["backend"]}), '
            f'load average {r["load_average"][0]:.1f}')
