"""Text data for language models: token windows from a plain-text file (WikiText-2 by default) and
STS-B sentence pairs.

Windows: the text is tokenized once without special tokens, then cut into `count` windows of
`seq_len` tokens starting every `stride` tokens. With stride < seq_len a window overlaps the previous
one and only its last `stride` positions are scored (the usual sliding-window perplexity), so every
scored token is predicted once, with at least seq_len - stride tokens of context after the first window.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["TextWindows", "TextError", "token_windows", "read_sts", "WIKITEXT", "STS_TEST"]

WIKITEXT = Path("data/wikitext-2-raw/wiki.test.raw")  # relative to the shared folder
STS_TEST = Path("data/sts-b/sts-test.tsv")


class TextError(ValueError):
    """Text data could not be read or is too short; the message is one line."""


@dataclass
class TextWindows:
    """ids [count, seq_len]; positions [:, :n_context] are context only (not scored)."""

    ids: torch.Tensor
    n_context: int
    first_scored_all: bool  # the first window scores every position (nothing precedes it)
    source: str
    start: int = 0  # token offset of the first window in the tokenized text

    @property
    def end(self) -> int:
        """The token offset just past the last window: `token_windows(..., start=end)` is disjoint from these."""
        n, t = self.ids.shape
        stride = t - self.n_context
        return self.start + (n - 1) * stride + t

    @property
    def scored_tokens(self) -> int:
        n, t = self.ids.shape
        per = t - 1 - max(self.n_context - 1, 0)
        first = t - 1 if self.first_scored_all else per
        return first + (n - 1) * per

    def describe(self) -> str:
        n, t = self.ids.shape
        return f"{n} window{'s' if n != 1 else ''} x {t} tokens of {self.source} ({self.scored_tokens} scored)"


def _read(path: str | os.PathLike) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise TextError(f"text file not found: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TextError(f"not a UTF-8 text file: {p} (byte {e.start})") from None


def token_windows(tokenizer, path: str | os.PathLike, seq_len: int = 256, count: int = 2,
                  stride: int | None = None, start: int = 0) -> TextWindows:
    """Cuts `count` windows of `seq_len` tokens (every `stride` tokens) out of a text file, the first
    at token `start` (0: the beginning; another `TextWindows.end`: disjoint from those windows).

    Only as much text as the windows need is tokenized (in growing prefixes), so a short run on a large
    file stays short.
    """
    if seq_len < 2 or count < 1:
        raise TextError(f"need seq_len >= 2 and count >= 1, got seq_len={seq_len}, count={count}")
    stride = stride or seq_len
    if not 1 <= stride <= seq_len:
        raise TextError(f"stride must be between 1 and seq_len={seq_len}, got {stride}")
    if start < 0:
        raise TextError(f"start must be >= 0, got {start}")
    text = _read(path)
    need = start + (count - 1) * stride + seq_len
    chars = need * 8  # English BPE averages ~4 characters per token; grow when short
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) > need or chars >= len(text):
            break
        chars *= 2
    if len(ids) < need:
        have = max(0, (len(ids) - start - seq_len) // stride + 1)
        raise TextError(f"{Path(path).name} has {len(ids)} tokens: enough for {have} window(s) of {seq_len}"
                        + (f" after token {start}" if start else "") + f", not {count}")
    t = torch.tensor(ids[:need], dtype=torch.long)
    windows = torch.stack([t[start + i * stride: start + i * stride + seq_len] for i in range(count)])
    where = Path(path).name + (f" from token {start}" if start else "")
    return TextWindows(windows, seq_len - stride, True, where, start)


def read_sts(path: str | os.PathLike, count: int | None = None) -> tuple[list[str], list[str], torch.Tensor]:
    """STS-B pairs (sentence 1, sentence 2, score 0-5) from a tab-separated file.

    Args:
        count: None for all pairs; else `count` pairs evenly spaced through the file (the file is not
            sorted by score, and even spacing keeps every genre and year represented).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise TextError(f"STS file not found: {p}")
    s1, s2, score = [], [], []
    with open(p, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) < 7:  # genre, file, year, id, score, s1, s2 [, extra fields]
                raise TextError(f"{p.name} line {lineno}: expected 7 tab-separated fields, got {len(row)}")
            try:
                score.append(float(row[4]))
            except ValueError:
                raise TextError(f"{p.name} line {lineno}: score {row[4]!r} is not a number") from None
            s1.append(row[5])
            s2.append(row[6])
    if count is not None and count < len(s1):
        if count < 2:
            raise TextError("a rank correlation needs at least 2 pairs")
        idx = [math.floor(i * len(s1) / count) for i in range(count)]
        s1, s2, score = [s1[i] for i in idx], [s2[i] for i in idx], [score[i] for i in idx]
    return s1, s2, torch.tensor(score, dtype=torch.float64)
