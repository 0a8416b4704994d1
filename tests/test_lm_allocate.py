"""Per-layer term allocation on a language model: a tiny local GPT-2 (2 blocks, hf:<path>) on one window
of WikiText-2 per side, so the whole allocation (sensitivity, knapsack, the measured check) runs in seconds.
The SmolLM2 allocation itself is a committed run (docs/results/lm_smollm2_alloc_*)."""
import json

import pytest
import torch

from fpxint.allocation.sensitivity import rel_noise, to_db
from fpxint.config import ExpansionConfig
from fpxint.lm import LMData, allocate_lm
from fpxint.model import expand
from fpxint.text import WIKITEXT, token_windows

BASE = ExpansionConfig(w_bits=4, a_bits=4, w_terms=2, a_terms=2, a_granularity="per_token", fold_bn=False)


def test_windows_from_end_continue_the_token_stream(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(" ".join(str(i) for i in range(100)))

    def tok(t, add_special_tokens=False):  # one token per word, its id the number
        return {"input_ids": [int(w) for w in t.split()]}

    ev = token_windows(tok, text, seq_len=10, count=3, stride=4)
    assert ev.end == 4 * 2 + 10
    cal = token_windows(tok, text, seq_len=5, count=2, start=ev.end)
    assert cal.ids.tolist() == [list(range(18, 23)), list(range(23, 28))] and "from token 18" in cal.source
    assert not set(cal.ids.flatten().tolist()) & set(ev.ids.flatten().tolist())


def test_allocate_lm_meets_the_budget_and_measures_on_logits(gpt2_dir, shared_dir):
    from fpxint.zoo.hf import load_lm

    lm = load_lm(f"hf:{gpt2_dir}")
    cal = LMData(windows=token_windows(lm.tokenizer, shared_dir / WIKITEXT, 32, 1, start=64))
    a = allocate_lm(lm.model, BASE, "gemms=0.75x", cal, max_terms=2)
    assert a.uniform_cost["int_gemms"] == 9 * 4  # 2 blocks x 4 Linear + the head, 2 x 2 terms each
    assert a.cost["int_gemms"] <= 0.75 * 36 and len(a.layers) == 9
    assert a.cost["macs"] == a.uniform_cost["macs"] == sum(m.weight.numel() for m in lm.model.modules()
                                                          if isinstance(m, torch.nn.Linear))  # per token
    with torch.no_grad():  # the measured SQNR is that of the allocated model's logits on the calibration window
        ref = lm.model(cal.windows.ids)
        y = expand(lm.model, a.config)(cal.windows.ids)
    assert a.measured_sqnr_db == pytest.approx(to_db(rel_noise(ref, y)), abs=1e-6)
    assert ExpansionConfig.from_json(a.config.to_json()) == a.config


def test_cli_allocate_language_model_calibrates_after_the_evaluation_windows(gpt2_dir, capsys):
    from fpxint.cli import main

    argv = ["allocate", f"hf:{gpt2_dir}", "--bits", "4", "--terms", "2", "--budget-gemms", "0.75x", "--windows", "1",
            "--seq-len", "32", "--calib", "1", "--calib-seq-len", "24", "--max-terms", "2", "--eval", "all",
            "--uniform-terms", "2", "--json", "-q"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert "from token 32" in r["calibration"] and r["evaluation"].startswith("1 window x 32 tokens")
    assert r["int_gemms"] <= 0.75 * r["uniform_int_gemms"]
    allocated, uniform = r["curve"]
    assert allocated["label"] == "allocated" and uniform["label"] == "uniform 2 terms"
    assert allocated["fp_ppl"] == uniform["fp_ppl"] and allocated["int_gemms"] == r["int_gemms"]
    assert r["config"]["a_granularity"] == "per_token" and len(r["config"]["overrides"]) == 9


def test_cli_allocate_language_model_bad_options_are_one_line(gpt2_dir, capsys):
    from fpxint.cli import main

    base = ["allocate", f"hf:{gpt2_dir}", "--budget-gemms", "0.75x", "--windows", "1", "--seq-len", "16"]
    assert main(base + ["--calibration", "synthetic"]) == 2
    assert "calibrate on text windows" in capsys.readouterr().err
    assert main(base + ["--calib", "100000"]) == 2
    err = capsys.readouterr().err
    assert "calibration windows after the evaluation windows" in err and err.count("\n") == 1
