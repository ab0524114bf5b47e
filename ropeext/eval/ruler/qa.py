"""Question answering sources for qa_1 (SQuAD) and qa_2 (HotpotQA), read from local JSON files.

SQuAD: the official JSON (``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``, v1.1 or
v2.0; unanswerable questions are left out). HotpotQA: the official dev JSON (a list of
``{"question", "answer", "context": [[title, [sentences]]], "supporting_facts"}``); the gold
documents are the paragraphs named in ``supporting_facts`` (all of the question's paragraphs
when that field is absent). Every paragraph of the file is a possible distractor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ropeext.errors import RopeextError


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: tuple[str, ...]
    gold: tuple[int, ...]  # indices into QASource.documents


@dataclass(frozen=True)
class QASource:
    name: str
    path: str
    documents: tuple[str, ...]
    items: tuple[QAItem, ...]


def _read(path: Path, what: str):
    if not path.is_file():
        raise RopeextError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise RopeextError(f"{what} file {path}: not valid JSON ({exc})") from None


def load_squad(path: str | Path) -> QASource:
    path = Path(path)
    raw = _read(path, "SQuAD (qa_1)")
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise RopeextError(
            f"SQuAD (qa_1) file {path}: expected the official layout "
            '{"data": [{"paragraphs": [{"context": ..., "qas": [...]}]}]}'
        )
    docs: list[str] = []
    index: dict[str, int] = {}
    items: list[QAItem] = []
    try:
        for article in raw["data"]:
            for para in article["paragraphs"]:
                ctx = para["context"].strip()
                if ctx not in index:
                    index[ctx] = len(docs)
                    docs.append(ctx)
                for qa in para.get("qas", []):
                    if qa.get("is_impossible"):
                        continue
                    answers = tuple(dict.fromkeys(a["text"] for a in qa.get("answers", []) if a.get("text")))
                    if answers:
                        items.append(QAItem(qa["question"].strip(), answers, (index[ctx],)))
    except (KeyError, TypeError, AttributeError) as exc:
        raise RopeextError(f"SQuAD (qa_1) file {path}: missing or malformed field {exc}") from None
    if not items:
        raise RopeextError(f"SQuAD (qa_1) file {path}: no answerable questions")
    return QASource("squad", str(path), tuple(docs), tuple(items))


def load_hotpotqa(path: str | Path) -> QASource:
    path = Path(path)
    raw = _read(path, "HotpotQA (qa_2)")
    if not isinstance(raw, list):
        raise RopeextError(
            f"HotpotQA (qa_2) file {path}: expected a JSON list of questions with question, answer and context fields"
        )
    docs: list[str] = []
    index: dict[str, int] = {}
    items: list[QAItem] = []
    try:
        for n, rec in enumerate(raw):
            ids_by_title: dict[str, int] = {}
            for title, sentences in rec["context"]:
                text = f"{title}\n{''.join(sentences)}".strip()
                if text not in index:
                    index[text] = len(docs)
                    docs.append(text)
                ids_by_title[title] = index[text]
            support = [t for t, _ in rec.get("supporting_facts", [])]
            gold = tuple(dict.fromkeys(ids_by_title[t] for t in support if t in ids_by_title))
            if not gold:
                gold = tuple(dict.fromkeys(ids_by_title.values()))
            answer = str(rec["answer"]).strip()
            if answer:
                items.append(QAItem(rec["question"].strip(), (answer,), gold))
    except (KeyError, TypeError, ValueError) as exc:
        raise RopeextError(f"HotpotQA (qa_2) file {path}: record {n}: missing or malformed field {exc}") from None
    if not items:
        raise RopeextError(f"HotpotQA (qa_2) file {path}: no questions with an answer")
    return QASource("hotpotqa", str(path), tuple(docs), tuple(items))


LOADERS = {"squad": load_squad, "hotpotqa": load_hotpotqa}
