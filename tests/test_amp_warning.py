"""train.amp=bf16 on a CPU without bf16 matrix units runs, with a warning that it is emulated and slow."""

from __future__ import annotations

import logging

import pytest
import torch

import seq2seq.device as device_module
from seq2seq.device import resolve_amp


@pytest.mark.parametrize("has_amx", [False, True])
def test_explicit_bf16_on_a_cpu_without_matrix_units_warns(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture, has_amx: bool) -> None:
    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: has_amx)
    with caplog.at_level(logging.WARNING, logger="seq2seq.device"):
        amp = resolve_amp("bf16", torch.device("cpu"))
        resolve_amp("auto", torch.device("cpu"))  # auto picks fp32 there: nothing to warn about
    assert amp.dtype == torch.bfloat16
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if has_amx:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "train.amp=bf16" in warnings[0] and "without bf16 matrix units" in warnings[0]
