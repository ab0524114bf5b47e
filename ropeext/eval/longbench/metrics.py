"""LongBench's per-sample metrics, reproducing the benchmark's official scorer.

Each metric maps ``(prediction, ground_truth)`` to a number in [0, 1]. ``score`` applies the
scorer's per-sample steps: the first-line cut for trec, triviaqa, samsum and lsht, then the
maximum over the reference answers (starting from 0). ``aggregate`` turns per-sample scores into
the published number (mean x 100, rounded to two decimals).

Behaviours of the official code that are kept on purpose, because they change numbers:

- qa_f1 uses SQuAD normalisation (lower case, drop ASCII punctuation, drop the articles
  a/an/the, collapse whitespace) and a bag-of-tokens F1.
- ROUGE-L is the ``rouge`` package's ``get_scores(..., avg=True)["rouge-l"]["f"]``; any exception
  there (an empty prediction, for example) scores 0.
- classification removes matched class names that are substrings of the ground truth *while
  iterating over the same list*, which skips the element after each removal; its fallback to
  difflib is unreachable in the official code (it tests ``list != 0``), so it is absent here too.
- code_sim takes the first line of the prediction (after stripping leading newlines) that contains
  none of a backtick, ``#``, ``//`` and compares it with fuzzywuzzy's ``fuzz.ratio``. That ratio differs
  with and without python-Levenshtein; this project pins python-Levenshtein (0.27.5), see
  ``code_sim_backend``.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from typing import Callable, Sequence

import numpy as np

from ropeext.errors import RopeextError

FIRST_LINE_TASKS = ("trec", "triviaqa", "samsum", "lsht")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ZH_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗"
    "〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_EN_PUNCT = frozenset(string.punctuation)
_ALL_PUNCT = frozenset(string.punctuation + _ZH_PUNCTUATION)


# ----------------------------------------------------------------------------- normalisation
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _EN_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_zh_answer(text: str) -> str:
    """Chinese normalisation: lower case, no (ASCII or CJK) punctuation, no whitespace at all."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _ALL_PUNCT)
    return "".join(text.split())


def _jieba_cut(text: str) -> list[str]:
    # optional: LongBench's Chinese metrics need jieba
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return list(jieba.cut(text, cut_all=False))


# ----------------------------------------------------------------------------- metrics
def token_f1(prediction: Sequence[str], ground_truth: Sequence[str]) -> float:
    """Bag-of-tokens F1 (multiset overlap)."""
    same = sum((Counter(prediction) & Counter(ground_truth)).values())
    if same == 0:
        return 0.0
    precision = same / len(prediction)
    recall = same / len(ground_truth)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, ground_truth: str, **_) -> float:
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh(prediction: str, ground_truth: str, **_) -> float:
    pred = [t for t in (normalize_zh_answer(w) for w in _jieba_cut(prediction)) if t]
    gold = [t for t in (normalize_zh_answer(w) for w in _jieba_cut(ground_truth)) if t]
    return token_f1(pred, gold)


def rouge_l(prediction: str, ground_truth: str, **_) -> float:
    # optional: LongBench's ROUGE metric needs rouge
    from rouge import Rouge

    try:
        result = Rouge().get_scores([prediction], [ground_truth], avg=True)
    except Exception:  # noqa: BLE001 - the official scorer gives 0 for anything rouge rejects
        return 0.0
    return float(result["rouge-l"]["f"])


def rouge_l_zh(prediction: str, ground_truth: str, **_) -> float:
    return rouge_l(" ".join(_jieba_cut(prediction)), " ".join(_jieba_cut(ground_truth)))


def classification(prediction: str, ground_truth: str, *, all_classes: Sequence[str] | None = None, **_) -> float:
    if not all_classes:
        raise RopeextError("classification metric needs all_classes (the record's all_classes field is empty)")
    matched = [name for name in all_classes if name in prediction]
    # Drop class names contained in (but different from) the ground truth, with the official
    # loop's semantics: removing while iterating moves the next element under the cursor.
    i = 0
    while i < len(matched):
        term = matched[i]
        if term in ground_truth and term != ground_truth:
            matched.remove(term)
        i += 1
    return 1.0 / len(matched) if ground_truth in matched else 0.0


def _share_of_numbers(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return sum(1 for n in numbers if n == target) / len(numbers)


def count(prediction: str, ground_truth: str, **_) -> float:
    return _share_of_numbers(prediction, str(ground_truth))


def _retrieval(prediction: str, ground_truth: str, pattern: str) -> float:
    found = re.findall(pattern, ground_truth)
    if not found:
        raise RopeextError(f"retrieval answer {ground_truth!r} does not match the pattern {pattern!r}")
    return _share_of_numbers(prediction, found[0])


def retrieval(prediction: str, ground_truth: str, **_) -> float:
    return _retrieval(prediction, ground_truth, r"Paragraph (\d+)")


def retrieval_zh(prediction: str, ground_truth: str, **_) -> float:
    return _retrieval(prediction, ground_truth, r"段落(\d+)")


def first_code_line(prediction: str) -> str:
    """The first line that is not a comment or a code fence (empty string if none)."""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def code_sim(prediction: str, ground_truth: str, **_) -> float:
    # optional: LongBench's edit-similarity metric needs fuzzywuzzy
    from fuzzywuzzy import fuzz

    return fuzz.ratio(first_code_line(prediction), ground_truth) / 100


def code_sim_backend() -> str:
    """Which sequence matcher fuzzywuzzy uses (the value of code_sim depends on it)."""
    # optional: LongBench's edit-similarity metric needs fuzzywuzzy
    from fuzzywuzzy import fuzz

    module = getattr(fuzz.SequenceMatcher, "__module__", "")
    if module.endswith("StringMatcher"):
        # optional: LongBench's edit-similarity metric needs Levenshtein
        import Levenshtein

        return f"python-Levenshtein {getattr(Levenshtein, '__version__', '?')}"
    return "difflib"


METRICS: dict[str, Callable[..., float]] = {
    "qa_f1": qa_f1,
    "qa_f1_zh": qa_f1_zh,
    "rouge": rouge_l,
    "rouge_zh": rouge_l_zh,
    "classification": classification,
    "retrieval": retrieval,
    "retrieval_zh": retrieval_zh,
    "count": count,
    "code_sim": code_sim,
}

# Task -> metric, as in the benchmark's scorer. The embedded code task scores like lcc.
TASK_METRIC: dict[str, str] = {
    "narrativeqa": "qa_f1",
    "qasper": "qa_f1",
    "multifieldqa_en": "qa_f1",
    "multifieldqa_zh": "qa_f1_zh",
    "hotpotqa": "qa_f1",
    "2wikimqa": "qa_f1",
    "musique": "qa_f1",
    "dureader": "rouge_zh",
    "gov_report": "rouge",
    "qmsum": "rouge",
    "multi_news": "rouge",
    "vcsum": "rouge_zh",
    "trec": "classification",
    "triviaqa": "qa_f1",
    "samsum": "rouge",
    "lsht": "classification",
    "passage_retrieval_en": "retrieval",
    "passage_count": "count",
    "passage_retrieval_zh": "retrieval_zh",
    "lcc": "code_sim",
    "repobench-p": "code_sim",
}
EXTRA_TASK_METRIC: dict[str, str] = {}  # filled by ropeext.eval.longbench.protocol (embedded tasks)


def base_task(dataset: str) -> str:
    """``qasper_e`` -> ``qasper`` (LongBench-E files carry the suffix)."""
    return dataset[:-2] if dataset.endswith("_e") else dataset


def metric_name(dataset: str) -> str:
    task = base_task(dataset)
    name = TASK_METRIC.get(task) or EXTRA_TASK_METRIC.get(task)
    if name is None:
        known = sorted(TASK_METRIC) + sorted(EXTRA_TASK_METRIC)
        raise RopeextError(f"unknown LongBench task {dataset!r}; known tasks: {', '.join(known)}")
    return name


def score(dataset: str, prediction: str, answers: list[str], all_classes: list[str] | None) -> float:
    """Per-sample score in [0, 1] (before the x100): first-line cut where the protocol has it,
    then the best score over the reference answers."""
    metric = METRICS[metric_name(dataset)]
    if base_task(dataset) in FIRST_LINE_TASKS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    if isinstance(answers, str):
        answers = [answers]
    best = 0.0
    for answer in answers:
        best = max(best, metric(prediction, answer, all_classes=all_classes))
    return float(best)


def aggregate(scores: Sequence[float]) -> float | None:
    """A task's published number: mean x 100, two decimals (None for no samples).

    Summed left to right as the official ``scorer`` does, so ties round the same way.
    """
    if not scores:
        return None
    total = 0.0
    for s in scores:
        total += s
    return round(100 * total / len(scores), 2)


def aggregate_bucket(scores: Sequence[float]) -> float | None:
    """A LongBench-E bucket's number: ``round(100 * np.mean(scores), 2)`` as ``scorer_e``.

    The official code yields NaN for an empty bucket; here it is None (JSON has no NaN).
    """
    if not scores:
        return None
    return round(100 * float(np.mean(np.asarray(scores, dtype=float))), 2)
