"""Text data for language models (fpxint/text.py): token windows cut exactly, STS-B pairs read and spaced
evenly, bad files refused with one line. A character tokenizer makes every expected id known by hand."""
import pytest
import torch

from fpxint.text import TextError, read_sts, token_windows


def chars(text, add_special_tokens=False):
    """A tokenizer with one token per character (its code point), the interface token_windows uses."""
    assert add_special_tokens is False
    return {"input_ids": [ord(c) for c in text]}


def test_windows_are_the_first_tokens_in_order(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcdefghijklmnopqrstuvwxyz" * 50)  # longer than 8 x need: tokenized in a prefix only
    w = token_windows(chars, f, seq_len=5, count=3)
    assert torch.equal(w.ids, torch.tensor([[ord(c) for c in s] for s in ("abcde", "fghij", "klmno")]))
    assert w.n_context == 0 and w.scored_tokens == 3 * 4 and w.describe() == "3 windows x 5 tokens of t.txt (12 scored)"
    w = token_windows(chars, f, seq_len=6, count=3, stride=2)  # sliding: 4 context tokens, 2 scored per window
    assert w.ids[:, 0].tolist() == [ord("a"), ord("c"), ord("e")] and w.n_context == 4
    assert w.scored_tokens == 5 + 2 * 2  # the first window scores all its positions (nothing precedes it)


def test_short_or_bad_text_is_refused_with_one_line(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("abcdefghij")
    with pytest.raises(TextError, match=r"short.txt has 10 tokens: enough for 2 window\(s\) of 4, not 3"):
        token_windows(chars, f, seq_len=4, count=3)
    with pytest.raises(TextError, match="need seq_len >= 2"):
        token_windows(chars, f, seq_len=1)
    with pytest.raises(TextError, match="stride must be between 1 and seq_len=4"):
        token_windows(chars, f, seq_len=4, stride=5)
    with pytest.raises(TextError, match="text file not found"):
        token_windows(chars, tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"ab\xff\xfe")
    with pytest.raises(TextError, match=r"not a UTF-8 text file: .*bin.txt \(byte 2\)"):
        token_windows(chars, tmp_path / "bin.txt")


def _sts(tmp_path, rows):
    f = tmp_path / "sts.tsv"
    f.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return f


def test_sts_pairs_all_and_evenly_spaced(tmp_path):
    rows = [("g", "f", "2012", str(i), f"{i * 0.5}", f"a{i}", f"b{i}") for i in range(10)]
    rows[3] = rows[3] + ("extra", "fields")  # some STS-B lines carry more than 7 fields
    s1, s2, score = read_sts(_sts(tmp_path, rows))
    assert s1 == [f"a{i}" for i in range(10)] and s2[9] == "b9"
    assert score.dtype == torch.float64 and score.tolist() == [i * 0.5 for i in range(10)]
    s1, _, score = read_sts(_sts(tmp_path, rows), count=4)  # floor(i * 10 / 4): 0, 2, 5, 7
    assert s1 == ["a0", "a2", "a5", "a7"] and score.tolist() == [0.0, 1.0, 2.5, 3.5]
    assert read_sts(_sts(tmp_path, rows), count=50)[0] == [f"a{i}" for i in range(10)]  # more than there are: all


def test_bad_sts_files_name_the_line(tmp_path):
    with pytest.raises(TextError, match="line 2: expected 7 tab-separated fields, got 3"):
        read_sts(_sts(tmp_path, [("g", "f", "y", "0", "1.0", "a", "b"), ("g", "f", "y")]))
    with pytest.raises(TextError, match="line 1: score 'high' is not a number"):
        read_sts(_sts(tmp_path, [("g", "f", "y", "0", "high", "a", "b")]))
    with pytest.raises(TextError, match="at least 2 pairs"):
        read_sts(_sts(tmp_path, [("g", "f", "y", str(i), "1", "a", "b") for i in range(3)]), count=1)
    with pytest.raises(TextError, match="STS file not found"):
        read_sts(tmp_path / "nope.tsv")
