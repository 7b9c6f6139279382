"""Faults a hostile or unlucky user meets outside training: odd -o targets, full disks, locks, odd input files.

Device nodes and FIFOs are made in a temporary folder (never on the real /dev); a full disk
is a character device like /dev/full, or a raw writer that raises ENOSPC after some bytes.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import os
import signal
import socket
import stat
import threading
import typing
from pathlib import Path
from typing import Any

import pytest
import torch

import seq2seq.writing as writing
from seq2seq.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from seq2seq.cli import main
from seq2seq.config import Config, config_from_dict, load_config, save_config
from seq2seq.errors import CheckpointError, ConfigError, DataError, StorageError
from seq2seq.model import Seq2Seq
from seq2seq.data.cache import install_entry, scratch_directory
from seq2seq.textio import iter_lines, read_lines
from seq2seq.training.lock import LOCK_NAME, RunDirectoryInUse, hold_run_dir
from seq2seq.writing import atomic_file, atomic_output

REPO_ROOT = Path(__file__).resolve().parents[1]


def _char_device(path: Path, major: int, minor: int) -> Path:
    """A character device node like /dev/null (1, 3) or /dev/full (1, 7), made in a temporary folder."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, small_tokenizer: Any) -> Path:
    """A random tiny model saved as a real checkpoint: enough for translate and evaluate."""
    cfg = config_from_dict({"model": {"embedding_size": 8, "hidden_size": 6, "decoder_hidden_size": 10,
                                      "num_layers": 1, "dropout": 0.0},
                            "decode": {"beam_size": 1, "max_length_a": 0.5, "max_length_b": 3}})
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, small_tokenizer.src_vocab_size, small_tokenizer.tgt_vocab_size)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(build_checkpoint(cfg, model.state_dict(), small_tokenizer.to_state()), path)
    return path


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    path = tmp_path / "src.de"
    path.write_text("ein Hund .\nzwei Katzen .\n", encoding="utf-8")
    return path


# -- -o targets -------------------------------------------------------------------------------------------------


def test_translate_to_a_null_device_writes_through_and_keeps_the_node(tmp_path, checkpoint, sources) -> None:
    null = _char_device(tmp_path / "null", 1, 3)
    assert main(["-q", "translate", "-c", str(checkpoint), "-i", str(sources), "-o", str(null)]) == 0
    info = os.lstat(null)
    assert stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "src.de"]  # no temporary file beside it


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_a_full_device_is_an_error_naming_the_path_and_the_cause(tmp_path, checkpoint, sources, capsys,
                                                                  command: str) -> None:
    full = _char_device(tmp_path / "full", 1, 7)
    inputs = ["-i", str(sources)] if command == "translate" else ["--src", str(sources), "--ref", str(sources)]
    assert main(["-q", command, "-c", str(checkpoint), *inputs, "-o", str(full)]) == 2
    err = capsys.readouterr().err
    assert f"could not write {full}: No space left on device" in err
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_a_fifo_target_is_written_through_to_its_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    with atomic_output(fifo) as handle:
        handle.write("eins\nzwei\n")
    reader.join(timeout=10)
    assert received == [b"eins\nzwei\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_stream_path_under_proc_is_written_through_not_replaced() -> None:
    """/dev/stdout is a link to /proc/self/fd/1: the same kind of path, on a pipe of our own."""
    read_end, write_end = os.pipe()
    try:
        with atomic_output(f"/proc/self/fd/{write_end}") as handle:
            handle.write("through the pipe\n")
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            assert pipe.read() == b"through the pipe\n"
    finally:
        for fd in (read_end, write_end):
            try:
                os.close(fd)
            except OSError:
                pass


def test_dash_means_stdout(capsys) -> None:
    with atomic_output("-") as handle:
        handle.write("to stdout\n")
    assert capsys.readouterr().out == "to stdout\n"


def test_a_symlink_target_is_followed_and_the_link_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with atomic_output(link) as handle:
        handle.write("new\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text(encoding="utf-8") == "new\n"

    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "created.txt")
    with atomic_output(dangling) as handle:
        handle.write("made\n")
    assert dangling.is_symlink() and (tmp_path / "created.txt").read_text(encoding="utf-8") == "made\n"


def test_a_regular_target_is_still_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# -- full disk, read-only file system -----------------------------------------------------------------------------


@pytest.fixture
def disk_full_after(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``disk_full_after(n)``: each file seq2seq.writing opens fails with ENOSPC once n bytes are written to it."""

    def install(limit: int) -> None:
        class FullDisk(io.FileIO):
            written = 0

            def write(self, data: Any) -> int | None:
                self.written += len(data)
                if self.written > limit:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return super().write(data)

        # Below the package's own raw file in the method order, where the operating system would fail.
        class RecordingOnFullDisk(writing._RecordingFileIO, FullDisk):
            pass

        monkeypatch.setattr(writing, "_RecordingFileIO", RecordingOnFullDisk)

    return install


def _tiny_checkpoint(value: float) -> dict[str, Any]:
    return build_checkpoint(Config(), {"w": torch.full((4000,), value)}, {})


def test_disk_full_while_saving_a_checkpoint_names_file_cause_and_what_is_kept(tmp_path, disk_full_after) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_tiny_checkpoint(1.0), path)
    disk_full_after(2000)
    with pytest.raises(StorageError) as raised:
        save_checkpoint(_tiny_checkpoint(2.0), path)
    message = str(raised.value)
    # torch itself reports this as "RuntimeError: [enforce fail at inline_container.cc] unexpected pos"
    assert f"could not write {path}: No space left on device" in message
    assert f"the previous {path} is unchanged" in message
    assert "enforce fail" not in message
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.full((4000,), 1.0))


def test_config_yaml_on_a_full_disk_keeps_the_previous_file(tmp_path, disk_full_after) -> None:
    path = tmp_path / "config.yaml"
    save_config(Config(), path)
    before = path.read_bytes()
    disk_full_after(10)
    with pytest.raises(StorageError, match="config.yaml: No space left on device"):
        save_config(config_from_dict({"train": {"lr": 0.01}}), path)
    assert path.read_bytes() == before and len(before) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_or_forbidden_folders_name_file_and_cause(tmp_path, monkeypatch, code: int) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writing.tempfile, "mkstemp", refuse)
    with pytest.raises(StorageError, match=f"could not write .*best.pt: {os.strerror(code)}; no best.pt was written"):
        save_checkpoint(_tiny_checkpoint(1.0), tmp_path / "best.pt")


# -- file modes ---------------------------------------------------------------------------------------------------


@pytest.fixture
def umask_027() -> Any:
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_new_files_and_folders_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask_027) -> None:
    save_checkpoint(_tiny_checkpoint(1.0), tmp_path / "new.pt")
    assert stat.S_IMODE(os.stat(tmp_path / "new.pt").st_mode) == 0o640  # mkstemp alone would give 0600
    with atomic_output(tmp_path / "out.txt") as handle:
        handle.write("x\n")
    assert stat.S_IMODE(os.stat(tmp_path / "out.txt").st_mode) == 0o640
    with scratch_directory(tmp_path / "cache") as tmp:  # how the data and tokenizer caches build an entry
        (tmp / "part").write_text("y")
        install_entry(tmp, tmp_path / "cache")
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o750  # mkdtemp alone would give 0700

    os.chmod(tmp_path / "out.txt", 0o604)
    with atomic_file(tmp_path / "out.txt") as handle:
        handle.write("y\n")
    assert stat.S_IMODE(os.stat(tmp_path / "out.txt").st_mode) == 0o604


# -- reading ------------------------------------------------------------------------------------------------------


def test_a_leading_bom_is_dropped_with_one_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "ref.en"
    path.write_bytes(b"\xef\xbb\xbfa dog runs .\nthe cat .\n")
    with caplog.at_level(logging.WARNING, logger="seq2seq.textio"):
        assert read_lines(path) == ["a dog runs .", "the cat ."]
        assert read_lines(path) == ["a dog runs .", "the cat ."]
    warnings = [r.getMessage() for r in caplog.records if "byte order mark" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0]
    stream = io.BytesIO(b"\xef\xbb\xbfeins\nzwei\n")
    assert list(iter_lines(stream, "<stdin>")) == [(1, "eins"), (2, "zwei")]


def test_a_reference_with_a_bom_scores_100_against_itself(tmp_path: Path, capsys) -> None:
    text = "a dog runs in the park .\ntwo children play .\n"
    (tmp_path / "hyp.en").write_text(text, encoding="utf-8")
    (tmp_path / "ref.en").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert main(["score", "--hyp", str(tmp_path / "hyp.en"), "--ref", str(tmp_path / "ref.en"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bleu"] == pytest.approx(100.0)


def test_a_directory_where_a_file_is_expected_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path} is a directory, not a file"):
        read_lines(tmp_path)
    with pytest.raises(CheckpointError, match=f"{tmp_path} is a directory, not a file"):
        load_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path} is a directory, not a file"):
        load_config(tmp_path)


def _float_keys() -> list[str]:
    """Every float (or list of floats) setting of the config, found from the dataclasses' type hints."""
    keys = []
    for section in dataclasses.fields(Config):
        hints = typing.get_type_hints(typing.get_type_hints(Config)[section.name])
        keys += [f"{section.name}.{name}" for name, hint in hints.items() if hint in (float, list[float])]
    return keys


@pytest.mark.parametrize("key", _float_keys())
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_float_setting_refuses_non_finite_values(key: str, value: str) -> None:
    text = f"[0.9, {value}]" if key == "train.betas" else value
    with pytest.raises(ConfigError, match=f"^{key} .*(must|finite)"):
        load_config(None, [f"{key}={text}"])


def test_float_keys_cover_the_learning_rate() -> None:
    assert {"train.lr", "train.betas", "decode.max_length_a", "model.dropout"} <= set(_float_keys())


class _RunsCode:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch hacked",))


def test_a_hostile_checkpoint_is_refused_without_advice_to_load_it_unsafely(tmp_path, monkeypatch, capsys,
                                                                             sources) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "seq2seq-checkpoint", "payload": _RunsCode()}, evil)
    assert main(["-q", "translate", "-c", str(evil), "-i", str(sources)]) == 2
    err = capsys.readouterr().err
    assert f"{evil} is not a seq2seq checkpoint" in err and "system" in err
    assert "weights_only" not in err and "trusted source" not in err
    assert not (tmp_path / "hacked").exists()


# -- the run directory lock -----------------------------------------------------------------------------------------


def test_a_held_run_directory_is_refused_naming_the_holder_and_freed_when_it_dies(held_run_dir) -> None:
    run_dir, holder = held_run_dir
    with pytest.raises(RunDirectoryInUse) as raised:
        with hold_run_dir(run_dir):
            pass
    assert f"process {holder.pid} on host {socket.gethostname()} (started " in str(raised.value)
    holder.send_signal(signal.SIGKILL)  # the OS releases the lock of a killed process
    holder.wait()
    with hold_run_dir(run_dir):
        record = json.loads((run_dir / LOCK_NAME).read_text(encoding="utf-8"))
        assert record["pid"] == os.getpid()


def test_under_torchrun_only_process_0_takes_the_lock(held_run_dir, monkeypatch) -> None:
    run_dir, _ = held_run_dir
    monkeypatch.setenv("RANK", "1")
    with hold_run_dir(run_dir):  # process 1 of the run that holds it: no lock of its own
        pass
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RunDirectoryInUse):
        with hold_run_dir(run_dir):
            pass


def test_taking_the_lock_removes_unfinished_temporaries_and_nothing_else(tmp_path: Path) -> None:
    for name in (".last.pt.k2j3.tmp", ".best.pt.x.tmp", ".config.yaml.y.tmp", "notes.txt", "last.pt"):
        (tmp_path / name).write_bytes(b"partial")
    with hold_run_dir(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "last.pt", "notes.txt"]


def test_a_run_directory_that_cannot_be_made_is_an_error_naming_it(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n", encoding="utf-8")
    config = tmp_path / "tiny.yaml"
    config.write_text("data:\n  format: synthetic\n", encoding="utf-8")
    assert main(["-q", "train", str(config), "--run-dir", str(blocker / "run")]) == 2
    assert f"could not write {blocker / 'run' / LOCK_NAME}: Not a directory" in capsys.readouterr().err


def test_an_os_error_the_package_did_not_word_still_names_its_file(monkeypatch, capsys) -> None:
    import seq2seq.evaluate

    def denied(**kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/refs/test.en")

    monkeypatch.setattr(seq2seq.evaluate, "score_command", denied)
    assert main(["score", "--hyp", "h", "--ref", "r"]) == 1
    assert "seq2seq score: error: [Errno 13] Permission denied: '/srv/refs/test.en'" in capsys.readouterr().err
