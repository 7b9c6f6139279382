"""Device and mixed-precision choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seq2seq import device as device_module
from seq2seq.device import cpu_has_bf16_matrix_units, resolve_amp, resolve_decode_amp, resolve_device
from seq2seq.errors import ConfigError


def _cpuinfo(tmp_path: Path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n", encoding="utf-8")
    return str(path)


def test_bf16_matrix_units_are_read_from_the_cpu_flags(tmp_path: Path) -> None:
    assert cpu_has_bf16_matrix_units(_cpuinfo(tmp_path, "fpu sse2 avx512f amx_bf16 amx_tile amx_int8"))
    assert not cpu_has_bf16_matrix_units(_cpuinfo(tmp_path, "fpu sse2 avx512f avx512_bf16"))
    assert not cpu_has_bf16_matrix_units(str(tmp_path / "missing"))


@pytest.mark.parametrize("has_amx, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_amp_on_the_cpu_is_bf16_only_with_matrix_units(monkeypatch: pytest.MonkeyPatch, has_amx: bool,
                                                            expected: torch.dtype | None) -> None:
    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: has_amx)
    amp = resolve_amp("auto", torch.device("cpu"))
    assert amp.dtype == expected and not amp.use_scaler
    assert amp.precision == ("bf16" if has_amx else "fp32")
    assert resolve_amp("off", torch.device("cpu")).dtype is None


def test_unusable_devices_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="fp16"):
        resolve_amp("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize("has_amx", [True, False])
def test_auto_decode_amp_is_bf16_for_beam_search_only_with_matrix_units(monkeypatch: pytest.MonkeyPatch,
                                                                        has_amx: bool) -> None:
    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: has_amx)
    cpu = torch.device("cpu")
    assert resolve_decode_amp("auto", cpu, beam_size=5).dtype == (torch.bfloat16 if has_amx else None)
    # Greedy batches are too small on the CPU for bf16 to pay: auto keeps them in fp32.
    assert resolve_decode_amp("auto", cpu, beam_size=1).dtype is None
    assert resolve_decode_amp("bf16", cpu, beam_size=1).dtype == torch.bfloat16
    assert resolve_decode_amp("off", cpu, beam_size=5).dtype is None


def test_decode_amp_errors_name_the_decode_key() -> None:
    with pytest.raises(ConfigError, match=r"decode\.amp=fp16 needs a CUDA GPU"):
        resolve_decode_amp("fp16", torch.device("cpu"), beam_size=5)
    with pytest.raises(ConfigError, match=r"decode\.amp must be"):
        resolve_decode_amp("fp8", torch.device("cpu"), beam_size=5)
