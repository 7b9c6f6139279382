"""scripts/benchmark.py --quick end to end: every figure is written to the JSON file and is a positive number.

Marked ``benchmark`` (about two minutes of CPU): run with ``pytest -m benchmark``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MULTI30K = (REPO_ROOT / ".." / "shared" / "data" / "multi30k").resolve()

RATE_KEYS = ("train_tokens_per_s", "train_tokens_per_s_bf16", "floor_tokens_per_s", "luong_tokens_per_s",
             "greedy_sents_per_s", "beam5_sents_per_s", "greedy_sents_per_s_bf16", "beam5_sents_per_s_bf16")


@pytest.mark.benchmark
@pytest.mark.skipif(not (MULTI30K / "train.de.gz").is_file(), reason=f"Multi30k not found at {MULTI30K}")
def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # The conftest's isolated $SEQ2SEQ_CACHE is inherited: the tokenizer is trained into a temporary directory.
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--quick", "--device", "cpu", "--json", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text(encoding="utf-8"))
    for key in RATE_KEYS:
        assert isinstance(figures[key], float) and figures[key] > 0, (key, figures.get(key))
    assert figures["device"] == "cpu"
    # The floor is the package's shape written out by hand: the same number of weights.
    assert figures["floor_parameters"] == figures["package_parameters"] > 0
    # The batch size was chosen for about 950 real target tokens per batch.
    assert abs(figures["mean_tgt_tokens_per_batch"] - 950) < 950 * 0.05
    assert figures["decode_sentences"] == 256
    for key in ("package_fp32", "floor_fp32", "package_luong_fp32", "package_bf16"):
        assert figures[f"{key}_peak_memory_mib"] > 0
        assert len(figures[f"{key}_windows"]) == figures["windows"] == 3
    assert figures["train_default_precision"] in ("fp32", "bf16")
    assert "package/floor" in result.stdout and "beam 5" in result.stdout
