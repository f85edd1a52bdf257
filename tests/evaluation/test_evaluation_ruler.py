"""RULER-style suite: exact lengths, needles where the depth says, an oracle that reads the
prompt scores 1.0, a uniform guesser scores at chance, and the per-length average table."""

import itertools
import re
from collections import Counter

import numpy as np
import pytest

from ropex.data import synthetic, tokenizers
from ropex.evaluation import grid, ruler, ruler_tasks, scoring, words
from ropex.model.config import ModelConfig
from ropex.errors import ConfigError

from evaluation_testlib import micro_config

BYTES = tokenizers.ByteTokenizer()
VOCAB = 16
NEEDLE_TASKS = ('niah_single', 'niah_multikey', 'niah_multivalue', 'niah_multiquery', 'vt')
CV_WORD = re.compile(r'^(?:[bdfgklmnprstvz][aeiou]){2,3}$')   # the generated pseudo-words


def text_lex():
  return words.Lexicon('text', BYTES.encode_array, BYTES.decode)


def symbol_lex():
  sym = words.SymbolTokenizer(VOCAB)
  return words.Lexicon('symbol', sym.encode_array, sym.decode, vocab=VOCAB)


LEXICONS = {'text': (text_lex, (900, 1337)), 'symbol': (symbol_lex, (40, 77))}


# --- independent solvers: read the prompt, return the expected answers --------------------

def solve_text(task, prompt):
  question = prompt[prompt.rindex('\n'):]
  body = prompt[:prompt.rindex('\n')]
  if task in ('niah_single', 'niah_multikey', 'niah_multivalue'):
    key = re.search(r'numbers? for (\w+) mentioned', question).group(1)
    found = re.findall(rf'special magic numbers for {key} is: (\d+)\.', body)
    return found if task == 'niah_multivalue' else found[:1]
  if task == 'niah_multiquery':
    keys = re.split(r', | and ', re.search(r'numbers for (.+?) mentioned', question).group(1))
    return [re.search(rf'numbers for {k} is: (\d+)\.', body).group(1) for k in keys]
  if task == 'vt':
    value = re.search(r'assigned the value (\d+)', question).group(1)
    assign = dict((b, a) for a, b in re.findall(r'VAR (\w+) = (\w+)\.', body))
    chain, x = [], value
    while x in assign:
      x = assign[x]
      chain.append(x)
    return chain
  listed = [w for w in re.findall(r'[a-z]+', body) if CV_WORD.match(w)]
  counts = Counter(listed)
  if task == 'cwe':
    n = int(re.search(r'the (\d+) most common', question).group(1))
    top = {w for w, _ in counts.most_common(n)}
    return list(dict.fromkeys(w for w in listed if w in top))
  return [w for w, _ in counts.most_common(3)]


def solve_symbol(task, prompt_T):
  content = [int(t) for t in prompt_T if t >= synthetic.CONTENT]
  q = int(np.flatnonzero(prompt_T == synthetic.QUERY)[-1])
  body = [int(t) for t in prompt_T[:q] if t >= synthetic.CONTENT]
  pairs = list(zip(body[::2], body[1::2]))
  if task in ('niah_single', 'niah_multikey', 'niah_multivalue'):
    key = int(prompt_T[q + 1])
    found = [v for k, v in pairs if k == key]
    return found if task == 'niah_multivalue' else found[:1]
  if task == 'niah_multiquery':   # first query in the prompt; the others come with the answers
    return [v for k, v in pairs if k == int(prompt_T[q + 1])]
  if task == 'vt':
    assign = {b: a for a, b in pairs}
    chain, x = [], int(prompt_T[q + 1])
    while x in assign:
      x = assign[x]
      chain.append(x)
    return chain
  counts = Counter(content)
  if task == 'cwe':
    top = {w for w, c in counts.items() if c == max(counts.values())}
    return list(dict.fromkeys(w for w in content if w in top))
  return [w for w, _ in counts.most_common(3)]


class OracleScorer:
  """Teacher-forced "model" that solves each task from the prompt alone: answer ``r``'s tokens
  are correct iff they spell the solver's answer ``r`` (multi-query symbols: each query is
  solved from the text before it)."""

  def __init__(self, task, style):
    self.task, self.style = task, style

  def score(self, rows):
    correct_NT = np.zeros(rows['inputs'].shape, bool)
    for i in range(len(rows['inputs'])):
      ids_T = rows['answer_ids'][i]
      tokens = np.append(rows['inputs'][i, :1], rows['targets'][i])
      for r in np.unique(ids_T[ids_T >= 0]):
        first = int(np.flatnonzero(ids_T == r)[0]) + 1   # token index of answer r
        prompt = tokens[:first]
        got = tokens[1:][ids_T == r]
        if self.style == 'text':
          answers = solve_text(self.task, BYTES.decode(tokens[:int(np.flatnonzero(ids_T >= 0)[0])
                                                               + 1]))
          ok = r < len(answers) and BYTES.decode(got).strip() == answers[r]
        elif self.task == 'niah_multiquery':
          ok = solve_symbol(self.task, prompt)[0] == int(got[0])
        else:
          start = int(np.flatnonzero(ids_T >= 0)[0]) + 1
          answers = solve_symbol(self.task, tokens[:start])
          ok = r < len(answers) and list(got) == [answers[r]]
        correct_NT[i, ids_T == r] = ok
    return np.zeros(correct_NT.shape), correct_NT


@pytest.mark.parametrize('style', ['text', 'symbol'])
@pytest.mark.parametrize('task', ruler.TASKS)
def test_lengths_are_exact_and_the_oracle_scores_one(task, style):
  make, lengths = LEXICONS[style]
  depths = [0.0, 0.5, 1.0] if ruler_tasks.has_depth(task) else [None]
  out = ruler.sweep(OracleScorer(task, style), make(), [task], lengths, [0.0, 0.5, 1.0],
                    count=3, seed=4, bos_id=BYTES.bos_id)[task]
  assert out['depths'] == depths and out['lengths'] == list(lengths) and out['errors'] == {}
  assert out['recall'] == [[1.0] * len(lengths)] * len(depths)
  for L in lengths:
    rows = ruler.rows(make(), task, L, depths[-1], 3, 4, BYTES.bos_id)
    assert rows['inputs'].shape == rows['answer_ids'].shape == (3, L)
    assert (rows['inputs'][:, 0] == BYTES.bos_id).all()
    np.testing.assert_array_equal(rows['weights'] > 0, rows['answer_ids'] >= 0)
  assert [len(t) for t, _ in ruler.examples(make(), task, 50 if style == 'symbol' else 999,
                                            depths[0], 2, 0, None)] == [51 if style == 'symbol'
                                                                        else 1000] * 2


SEGMENT = re.compile(r'One of the special magic numbers for (\w+) is: (\d+)\. |VAR (\w+) = (\w+)\. ')


def _symbol_pairs(prompt_T):
  """``(start, a, b)`` of every segment: runs of content tokens in the FILLER haystack, split
  into pairs."""
  out, t = [], 0
  while t < len(prompt_T):
    if prompt_T[t] >= synthetic.CONTENT:
      out.append((t, int(prompt_T[t]), int(prompt_T[t + 1])))
      t += 2
    else:
      t += 1
  return out


def _haystack_position(task, style, tokens, ids):
  """``(position of the asked segment, haystack size)``, both counted in haystack tokens only
  (segments, intro and question left out), read off the prompt."""
  prompt = tokens[:int(np.flatnonzero(ids >= 0)[0])]
  if style == 'symbol':
    q = int(np.flatnonzero(prompt == synthetic.QUERY)[0])
    asked = int(prompt[q + 1])
    pairs = _symbol_pairs(prompt[:q])
    start = next(t for t, a, b in pairs if (b if task == 'vt' else a) == asked)
    filler = prompt == synthetic.FILLER
    return int(filler[:start].sum()), int(filler[:q].sum())
  text = BYTES.decode(prompt)
  q = text.rindex('\n')
  if task == 'vt':
    value = re.search(r'assigned the value (\d+)', text[q:]).group(1)
    start = re.search(rf'VAR \w+ = {value}\.', text).start()
  else:
    key = re.search(r'numbers? for (\w+?)(,| and| mentioned)', text[q:]).group(1)
    start = next(m.start() for m in SEGMENT.finditer(text) if m.group(1) == key)
  intro = len(ruler_tasks.VT_INTRO if task == 'vt' else ruler_tasks.NIAH_INTRO)
  seg_len = lambda upto: sum(len(m.group(0)) for m in SEGMENT.finditer(text[:upto]))
  return start - intro - seg_len(start), q - intro - seg_len(q)


@pytest.mark.parametrize('style', ['text', 'symbol'])
@pytest.mark.parametrize('task', [t for t in NEEDLE_TASKS if t != 'niah_multivalue'])
def test_the_asked_needle_sits_where_the_depth_says(task, style):
  """Symbols: every haystack position is a boundary, so the position is round(depth * H);
  text: needles go at sentence ends, at most one filler sentence (22 bytes) away."""
  make, (L, _) = LEXICONS[style]
  tolerance = 0.5 if style == 'symbol' else 22
  for depth in (0.0, 0.3, 0.7, 1.0):
    for tokens, ids in ruler.examples(make(), task, L, depth, 3, 1, None):
      position, H = _haystack_position(task, style, tokens, ids)
      assert abs(position - depth * H) <= tolerance, (depth, position, H)


def test_multivalue_has_a_needle_at_the_depth_and_answers_in_context_order():
  lex = text_lex()
  for depth in (0.0, 0.5, 1.0):
    for tokens, ids in ruler.examples(lex, 'niah_multivalue', 1200, depth, 3, 2, None):
      text = BYTES.decode(tokens)
      intro = len(ruler_tasks.NIAH_INTRO)
      starts = [m.start() for m in re.finditer('One of the special magic', text)]
      lens = [len(m) for m in re.findall(r'One of the special magic numbers for \w+ is: \d+\. ',
                                         text)]
      H = text.rindex('\n', 0, int(np.flatnonzero(ids >= 0)[0])) - intro - sum(lens)
      hay_pos = [s - intro - sum(lens[:i]) for i, s in enumerate(starts)]
      assert min(abs(p - depth * H) for p in hay_pos) <= 22
      values = re.findall(r'is: (\d+)\.', text)
      answers = [BYTES.decode(tokens[ids == r]).strip() for r in range(4)]
      assert answers == values


def test_uniform_guesser_scores_at_chance():
  """Each answer token guessed uniformly among the V content symbols: single-token answers, so
  the expected recall is exactly 1 / V; 600 examples put the mean within 4 standard errors."""
  rng = np.random.default_rng(0)

  class Guesser:
    def score(self, rows):
      guess = synthetic.CONTENT + rng.integers(0, VOCAB, size=rows['targets'].shape)
      return np.zeros(guess.shape), guess == rows['targets']

  chance, n = 1.0 / VOCAB, 600
  se = np.sqrt(chance * (1 - chance) / n)
  for task in ('niah_single', 'niah_multivalue', 'cwe'):
    cell = grid.score_cell(Guesser(), ruler.rows(symbol_lex(), task, 48, 0.5, n, 0, 1))
    assert abs(cell['recall'] - chance) < 4 * se, (task, cell['recall'])


def test_uniform_model_scores_zero_under_argmax(micro_rope):
  """A real model with constant logits (zero embeddings): every argmax is id 0 (pad), which is
  never an answer, so the teacher-forced recall is exactly 0."""
  config, params = micro_rope
  params = dict(params, embedder={'input_embedding': 0 * params['embedder']['input_embedding']})
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params)
  out = ruler.sweep(scorer, symbol_lex(), ['niah_single', 'fwe'], [40], [0.5], 2, 0, 1)
  assert out['niah_single']['recall'] == [[0.0]] and out['fwe']['recall'] == [[0.0]]


def test_recall_counts_each_answer():
  correct = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
  ids = np.array([[0, 0, 1, 2, -1, -1], [-1, -1, -1, -1, -1, -1]])
  recall_N = grid.recall(correct, ids)
  assert recall_N[0] == pytest.approx(2 / 3) and np.isnan(recall_N[1])


def test_average_table_and_markdown():
  g = lambda rec, lengths, depths: {'lengths': lengths, 'depths': depths, 'recall': rec,
                                    'primary': 'recall'}
  results = {'niah_single': g([[1.0, 0.5], [0.0, 0.5]], [64, 128], [0.0, 1.0]),
             'cwe': g([[0.25, None]], [64, 128], [None])}
  lengths, table = ruler.average_table(results)
  assert lengths == [64, 128]
  assert table['niah_single'] == [0.5, 0.5] and table['cwe'] == [0.25, None]
  assert table['average'] == [pytest.approx(0.375), None]
  text = ruler.markdown([{'ruler': results}], ['run_a'], trained=64)
  assert '| run_a | 37.5 | – |' in text and '128 *' in text


def test_bad_names_and_short_contexts():
  with pytest.raises(ConfigError, match='--ruler names'):
    ruler.rows(symbol_lex(), 'niah_double', 40, 0.5, 1, 0, 1)
  with pytest.raises(ConfigError, match='at least'):
    ruler.rows(text_lex(), 'niah_single', 100, 0.5, 1, 0, 1)
  with pytest.raises(ConfigError, match='synthetic_vocab'):
    words.Lexicon('symbol', None, None, vocab=4).keys(np.random.default_rng(0), 3)


@pytest.fixture(scope='module')
def sp_lexicon(tmp_path_factory):
  """A small SentencePiece model trained on RULER-like text (ropex.tokenizer.train)."""
  from ropex import tokenizer as tokenizer_cli  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('ruler_sp')
  rng = np.random.default_rng(0)
  lines = [words.NOISE, ruler_tasks.NIAH_INTRO, ruler_tasks.NIAH_ALL.format(key='x'),
           ruler_tasks.VT_QUESTION.format(value=5, n=3), ruler_tasks.CWE_INTRO,
           ruler_tasks.FWE_QUESTION]
  lines += [' '.join(rng.choice(words.word_list(), 12)) + f' {rng.integers(10**6, 10**7)}.'
            for _ in range(300)]
  (root / 'corpus.txt').write_text('\n'.join(lines * 3))
  path = tokenizer_cli.train(str(root / '*.txt'), 400, str(root / 'sp.model'))
  tok = tokenizers.SentencePieceTokenizer(path)
  return words.Lexicon('text', tok.encode_array, tok.decode)


@pytest.mark.parametrize('task', ruler.TASKS)
def test_sentencepiece_rows_are_exact_and_answers_come_from_the_prompt(sp_lexicon, task):
  for L in (700, 1031):
    depth = None if task in ruler_tasks.DEPTHLESS else 0.4
    rows = ruler.rows(sp_lexicon, task, L, depth, 2, 3, 2)
    assert rows['inputs'].shape == rows['answer_ids'].shape == (2, L)
    for tokens, ids in ruler.examples(sp_lexicon, task, L, depth, 2, 3, None):
      assert len(tokens) == L + 1
      prompt = sp_lexicon.decode(tokens[:int(np.flatnonzero(ids >= 0)[0])])
      answers = [sp_lexicon.decode(tokens[ids == r]).strip() for r in range(ids.max() + 1)]
      assert len(answers) == {'niah_single': 1, 'niah_multikey': 1, 'vt': 5, 'cwe': 4,
                              'fwe': 3}.get(task, 4)
      for a in answers:
        assert re.search(rf'\b{a}\b', prompt), (a, task)


def test_eval_text_haystack_comes_from_the_runs_eval_split(tmp_path):
  texts = [f'Document {i}. ' + ' '.join(f'q{i}x{j}.' for j in range(150)) for i in range(3)]
  for i, text in enumerate(texts):
    (tmp_path / f'doc{i}.txt').write_text(text)
  config = micro_config('rope', max_wavelength=10_000)
  config.data.update(source='text', text_glob=str(tmp_path / '*.txt'), eval_fraction=1.0)
  lex = words.for_run(config, 'eval')
  assert lex.style == 'text' and lex.haystack == 'eval'
  streams = [('\n'.join(p) + '\n') * 3 for p in itertools.permutations(texts)]
  for tokens, ids in ruler.examples(lex, 'niah_single', 900, 0.5, 3, 0, None):
    assert len(tokens) == 901
    text = BYTES.decode(tokens[:int(np.flatnonzero(ids >= 0)[0])])
    body = text[len(ruler_tasks.NIAH_INTRO):text.rindex('\nWhat is')]
    needle = SEGMENT.search(body)
    assert body[needle.start() - 1] in '.\n'        # inserted after a sentence end
    hay = body[:needle.start()] + body[needle.end():]
    assert any(hay in s for s in streams)           # the rest: a window of the eval text
  with pytest.raises(ConfigError, match='needs a text run'):
    words.for_run(micro_config('rope'), 'eval')
