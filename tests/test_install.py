"""The package as users install it: a wheel built from a copy of the sources, used from an empty folder.

The quick test installs the wheel's files with ``pip --target`` and runs the commands
that need no torch; the slow one installs the wheel into a fresh virtual environment
that sees the already installed torch (``--system-site-packages``) and trains the
shipped quickstart config for five steps. Nothing is downloaded (``--no-index``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".venv",
                                 ".pytest_cache", ".seq2seq_cache")


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH into the clone, a private cache."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(SEQ2SEQ_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    return env


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel of a copy of the sources (pip builds in the source folder; the clone stays untouched)."""
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=IGNORED)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(tmp_path / "wheels"), str(source)], check=True, timeout=300)
    (wheel,) = (tmp_path / "wheels").glob("seq2seq-*.whl")
    return wheel


def test_the_wheel_ships_the_configs_and_the_command_works_from_any_folder(tmp_path: Path):
    wheel = _build_wheel(tmp_path)
    target, empty = tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    assert (target / "seq2seq" / "configs" / "quickstart.yaml").is_file()
    env = {**_clean_env(tmp_path), "PYTHONPATH": str(target)}

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "seq2seq", *args], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run([sys.executable, "-c", "import seq2seq; print(seq2seq.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(target)  # the installed copy, not the clone
    assert run("--version").strip() == f"seq2seq {_version()}"
    assert "quickstart" in run("config", "list")
    assert "  vocab_size: 600  # " in run("config", "show", "quickstart")
    assert list(empty.iterdir()) == []  # reading a shipped config writes nothing where it runs


@pytest.mark.slow
def test_quickstart_trains_from_an_empty_folder_in_a_fresh_venv(tmp_path: Path):
    wheel = _build_wheel(tmp_path)
    venv, empty = tmp_path / "venv", tmp_path / "empty"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    # --no-deps: the dependencies come from the system site-packages, as torch does; resolving them again
    # would ask an index for the build requirements of the installed torch.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--force-reinstall", str(wheel)], check=True, timeout=300)
    empty.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import seq2seq; print(seq2seq.__file__)"],
                           cwd=empty, env=_clean_env(tmp_path), capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv)
    done = subprocess.run([str(venv / "bin" / "seq2seq"), "train", "quickstart", "--set", "train.max_steps=5"],
                          cwd=empty, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "stopped (max_steps) after 5 steps" in done.stderr
    assert (empty / "runs" / "quickstart" / "best.pt").is_file()


def _version() -> str:
    import seq2seq

    return seq2seq.__version__
