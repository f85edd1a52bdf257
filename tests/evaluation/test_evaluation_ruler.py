"""RULER-style suite: exact lengths, needles where the depth says, an oracle that reads the
prompt scores 1.0 by generation (answers written in a shuffled order) and under teacher
forcing, distractors of the answer's form, and the per-length average table. (Cheap heuristics:
test_evaluation_heuristics.py.)"""

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


LEXICONS = {'text': (text_lex, (2100, 2337)), 'symbol': (symbol_lex, (400, 431))}


def rows_of(lex, task, L, depth, count, seed, bos):
  return grid.rows(ruler.task(lex, task), L, depth, count, seed, bos)


def examples_of(lex, task, L, depth, count, seed, bos):
  return grid.examples(ruler.task(lex, task), L, depth, count, seed, bos)


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
  q = int(np.flatnonzero(prompt_T == synthetic.QUERY)[-1])
  asked = [int(t) for t in prompt_T[q + 1:]]
  body = [int(t) for t in prompt_T[:q] if t >= synthetic.CONTENT]
  pairs = list(zip(body[::2], body[1::2]))
  if task in ('niah_single', 'niah_multikey', 'niah_multivalue'):
    found = [v for k, v in pairs if k == asked[0]]
    return found if task == 'niah_multivalue' else found[:1]
  if task == 'niah_multiquery':
    return [v for key in asked for k, v in pairs if k == key]
  if task == 'vt':
    assign = {b: a for a, b in pairs}
    chain, x = [], asked[0]
    while x in assign:
      x = assign[x]
      chain.append(x)
    return chain
  listed = [tuple(body[i:i + 3]) for i in range(0, len(body), 3)]    # three-symbol words
  counts = Counter(listed)
  if task == 'cwe':
    top = {w for w, _ in counts.most_common(10)}
    return list(dict.fromkeys(w for w in listed if w in top))
  return [w for w, _ in counts.most_common(3)]


def answer_region(ids_T):
  """Index (in the whole token sequence, bos first) where the answers start."""
  return int(np.flatnonzero(ids_T != -1)[0]) + 1


class OracleScorer:
  """A "model" that solves each task from the prompt alone. Teacher forced: answer ``r``'s
  tokens are correct iff they spell the solver's answer ``r``. Generation: the solver's answers
  in a shuffled order, written as RULER lists them."""

  def __init__(self, task, style):
    self.task, self.style = task, style
    self.rng = np.random.default_rng(0)

  def solve(self, prompt):
    if self.style == 'text':
      return solve_text(self.task, BYTES.decode(prompt))
    return solve_symbol(self.task, prompt)

  def score(self, rows):
    correct_NT = np.zeros(rows['inputs'].shape, bool)
    for i in range(len(rows['inputs'])):
      ids_T = rows['answer_ids'][i]
      tokens = np.append(rows['inputs'][i, :1], rows['targets'][i])
      answers = self.solve(tokens[:answer_region(ids_T)])
      for r in np.unique(ids_T[ids_T >= 0]):
        got = tokens[1:][ids_T == r]
        want = (BYTES.decode(got).strip() if self.style == 'text'
                else tuple(int(t) for t in got) if self.task in ('cwe', 'fwe') else int(got[0]))
        correct_NT[i, ids_T == r] = r < len(answers) and want == answers[r]
    return np.zeros(correct_NT.shape), correct_NT

  def generate(self, prompts, lengths, max_new):
    out = np.zeros((len(prompts), max_new), np.int32)
    for i, n in enumerate(lengths):
      answers = self.solve(prompts[i, :n])
      answers = [answers[j] for j in self.rng.permutation(len(answers))]
      if self.style == 'text':
        sep = ',' if self.task.startswith('niah') or self.task == 'cwe' else ''
        made = BYTES.encode_array(sep.join(' ' + a for a in answers))
      else:
        made = [t for a in answers for t in (a if isinstance(a, tuple) else (a,))]
      assert len(made) <= max_new, (self.task, len(made), max_new)
      out[i, :len(made)] = made
    return out


@pytest.mark.parametrize('style', ['text', 'symbol'])
@pytest.mark.parametrize('task', ruler.TASKS)
def test_lengths_are_exact_and_the_oracle_scores_one(task, style):
  make, lengths = LEXICONS[style]
  depths = [0.0, 0.5, 1.0] if ruler_tasks.has_depth(task) else [None]
  out = grid.sweep(OracleScorer(task, style), ruler.tasks(make(), [task]), lengths,
                   [0.0, 0.5, 1.0], count=3, seed=4, bos_id=BYTES.bos_id)[task]
  assert out['depths'] == depths and out['lengths'] == list(lengths) and out['errors'] == {}
  assert out['primary'] == 'string_match_all'
  assert out['string_match_all'] == [[1.0] * len(lengths)] * len(depths)
  assert out['teacher_forced_recall'] == [[1.0] * len(lengths)] * len(depths)
  assert out['teacher_forced_accuracy'] == [[1.0] * len(lengths)] * len(depths)
  for L in lengths:
    rows = rows_of(make(), task, L, depths[-1], 3, 4, BYTES.bos_id)
    assert rows['inputs'].shape == rows['answer_ids'].shape == (3, L)
    assert (rows['inputs'][:, 0] == BYTES.bos_id).all()
    np.testing.assert_array_equal(rows['weights'] > 0, rows['answer_ids'] >= 0)
  n = lengths[0]
  assert [len(t) for t, _ in examples_of(make(), task, n, depths[0], 2, 0, None)] == [n + 1] * 2


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
    for tokens, ids in examples_of(make(), task, L, depth, 3, 1, None):
      position, H = _haystack_position(task, style, tokens, ids)
      assert abs(position - depth * H) <= tolerance, (depth, position, H)


def test_multivalue_has_a_needle_at_the_depth_and_answers_in_context_order():
  lex = text_lex()
  for depth in (0.0, 0.5, 1.0):
    for tokens, ids in examples_of(lex, 'niah_multivalue', 1200, depth, 3, 2, None):
      text = BYTES.decode(tokens)
      key = re.search(r'numbers for (\w+) mentioned', text[text.rindex('\n'):]).group(1)
      intro = len(ruler_tasks.NIAH_INTRO)
      needles = list(SEGMENT.finditer(text))
      asked = [i for i, m in enumerate(needles) if m.group(1) == key]
      assert len(asked) == 4 and 0 not in asked and len(needles) - 1 not in asked   # guards
      lens = [len(m.group(0)) for m in needles]
      H = text.rindex('\n', 0, int(np.flatnonzero(ids >= 0)[0])) - intro - sum(lens)
      hay_pos = [needles[i].start() - intro - sum(lens[:i]) for i in asked]
      assert min(abs(p - depth * H) for p in hay_pos) <= 22
      answers = [BYTES.decode(tokens[ids == r]).strip() for r in range(4)]
      assert answers == [needles[i].group(2) for i in asked]


@pytest.mark.parametrize('style', ['text', 'symbol'])
def test_needles_are_distinct_and_of_one_form(style):
  """Every niah prompt holds K needles (8 symbols at vocab 16; max(8, n // 256) in text), keys
  distinct, values distinct; the multikey text haystack is needles only."""
  make, (L, _) = LEXICONS[style]
  for task in ('niah_single', 'niah_multikey', 'niah_multiquery'):
    for tokens, ids in examples_of(make(), task, L, 0.5, 3, 5, None):
      prompt = tokens[:int(np.flatnonzero(ids != -1)[0])]
      if style == 'symbol':
        q = int(np.flatnonzero(prompt == synthetic.QUERY)[0])
        pairs = [(a, b) for _, a, b in _symbol_pairs(prompt[:q])]
        assert len(pairs) == VOCAB // 2
      else:
        pairs = [m.groups()[:2] for m in SEGMENT.finditer(BYTES.decode(prompt))]
        assert len(pairs) >= (8 if task != 'niah_multikey' else 12)   # ~57 bytes each
      keys, values = zip(*pairs)
      assert len(set(keys)) == len(keys) and len(set(values)) == len(values)


def test_uniform_model_scores_zero(micro_rope):
  """A real model with constant logits (zero embeddings): every argmax is id 0 (pad), which is
  never an answer: teacher-forced recall and string_match_all of the generation are exactly 0."""
  config, params = micro_rope
  params = dict(params, embedder={'input_embedding': 0 * params['embedder']['input_embedding']})
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params)
  out = grid.sweep(scorer, ruler.tasks(symbol_lex(), ['niah_single', 'fwe']), [260], [0.5], 2,
                   0, 1)
  for name in ('niah_single', 'fwe'):
    assert out[name]['teacher_forced_recall'] == [[0.0]]
    assert out[name]['string_match_all'] == [[0.0]]


def test_teacher_forced_recall_counts_each_answer():
  correct = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
  ids = np.array([[0, 0, 1, 2, -2, -1], [-1, -1, -1, -1, 0, -1]])
  cell = grid.teacher_forced(correct, ids)
  assert cell['teacher_forced_recall'] == pytest.approx((2 / 3 + 0) / 2)
  assert cell['teacher_forced_token_accuracy'] == pytest.approx(3 / 5)
  assert cell['teacher_forced_accuracy'] == 0.0 and cell['examples'] == 2


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
    ruler.task(symbol_lex(), 'niah_double')
  with pytest.raises(ConfigError, match='at least'):
    rows_of(text_lex(), 'niah_single', 100, 0.5, 1, 0, 1)
  with pytest.raises(ConfigError, match='at least'):
    rows_of(symbol_lex(), 'cwe', 100, None, 1, 0, 1)       # 10 words x 6 x 3 symbols
  with pytest.raises(ConfigError, match='synthetic_vocab'):
    words.Lexicon('symbol', None, None, vocab=4).keys(np.random.default_rng(0), 3)
  tiny = words.SymbolTokenizer(4)
  with pytest.raises(ConfigError, match='two distractor needles'):
    rows_of(words.Lexicon('symbol', tiny.encode_array, tiny.decode, vocab=4), 'niah_single',
            40, 0.5, 1, 0, 1)


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
  for L in (1500, 1731):    # cwe: RULER's 10 words x 6 and 40 others need ~1400 tokens
    depth = None if task in ruler_tasks.DEPTHLESS else 0.4
    rows = rows_of(sp_lexicon, task, L, depth, 2, 3, 2)
    assert rows['inputs'].shape == rows['answer_ids'].shape == (2, L)
    for tokens, ids in examples_of(sp_lexicon, task, L, depth, 2, 3, None):
      assert len(tokens) == L + 1
      prompt = sp_lexicon.decode(tokens[:int(np.flatnonzero(ids >= 0)[0])])
      answers = [sp_lexicon.decode(tokens[ids == r]).strip() for r in range(ids.max() + 1)]
      assert len(answers) == {'niah_single': 1, 'niah_multikey': 1, 'vt': 5, 'cwe': 10,
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
  for tokens, ids in examples_of(lex, 'niah_single', 1100, 0.5, 3, 0, None):
    assert len(tokens) == 1101
    text = BYTES.decode(tokens[:int(np.flatnonzero(ids >= 0)[0])])
    body = text[len(ruler_tasks.NIAH_INTRO):text.rindex('\nWhat is')]
    needles = list(SEGMENT.finditer(body))
    assert len(needles) == 8
    hay, cut = '', 0
    for m in needles:
      # after a sentence end (or a needle), or at the ends of the haystack window
      assert m.start() == 0 or body[m.start() - 1] in '.\n ' or m.end() == len(body)
      hay, cut = hay + body[cut:m.start()], m.end()
    hay += body[cut:]
    assert any(hay in s for s in streams)           # the rest: a window of the eval text
  with pytest.raises(ConfigError, match='needs a text run'):
    words.for_run(micro_config('rope'), 'eval')
