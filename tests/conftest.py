"""Shared fixtures: an isolated cache, the tiny config and its prepared data, a small tokenizer, tiny random
checkpoints, Multi30k paths.

Every test session writes its tokenizer and data caches to a fresh temporary
directory ($SEQ2SEQ_CACHE), never to the user's ~/.cache, and Hugging Face
``datasets`` runs offline, so no test can download anything.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from digits import write_digit_pairs  # tests/digits.py: a helper module beside the tests

# Set before any test imports `datasets`, which reads them once at import time.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
MULTI30K = (REPO_ROOT / ".." / "shared" / "data" / "multi30k").resolve()

# Twenty short German-English pairs: enough for SentencePiece to learn a few merges.
SMALL_PAIRS = [
    ("ein Hund läuft im Park .", "a dog runs in the park ."),
    ("zwei Kinder spielen im Garten .", "two children play in the garden ."),
    ("eine Frau liest ein Buch .", "a woman reads a book ."),
    ("der Mann trinkt Kaffee .", "the man drinks coffee ."),
    ("ein Mädchen springt über den Zaun .", "a girl jumps over the fence ."),
    ("die Katze schläft auf dem Sofa .", "the cat sleeps on the sofa ."),
    ("ein Junge fährt Fahrrad .", "a boy rides a bike ."),
    ("zwei Männer reden auf der Straße .", "two men talk on the street ."),
    ("eine Gruppe von Menschen tanzt .", "a group of people dances ."),
    ("der Hund fängt einen Ball .", "the dog catches a ball ."),
    ("ein Mann spielt Gitarre .", "a man plays guitar ."),
    ("die Kinder essen Eis .", "the children eat ice cream ."),
    ("eine Frau geht mit ihrem Hund spazieren .", "a woman walks her dog ."),
    ("ein Vogel sitzt auf dem Baum .", "a bird sits on the tree ."),
    ("zwei Hunde rennen am Strand .", "two dogs run on the beach ."),
    ("ein Mann kocht in der Küche .", "a man cooks in the kitchen ."),
    ("die Frau lächelt .", "the woman smiles ."),
    ("ein Kind malt ein Bild .", "a child paints a picture ."),
    ("der Junge schwimmt im See .", "the boy swims in the lake ."),
    ("eine alte Frau sitzt auf einer Bank .", "an old woman sits on a bench ."),
]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point $SEQ2SEQ_CACHE and the datasets cache at session-wide temporary directories (shared by all tests)."""
    cache = tmp_path_factory.mktemp("seq2seq-cache")
    hf_cache = str(tmp_path_factory.mktemp("hf-datasets-cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEQ2SEQ_CACHE", str(cache))
        # `datasets` reads its cache location once, when first imported: patch both.
        patch.setenv("HF_DATASETS_CACHE", hf_cache)
        if "datasets" in sys.modules:
            patch.setattr(sys.modules["datasets"].config, "HF_DATASETS_CACHE", hf_cache)
        yield cache


@pytest.fixture
def seeded() -> None:
    """Seed Python's and torch's generators, for tests that draw random numbers."""
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_config_path() -> Path:
    return CONFIGS / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_config(tiny_config_path: Path):
    """configs/tiny.yaml: the synthetic task with a few hundred pairs and a very small model."""
    from seq2seq.config import load_config

    return load_config(tiny_config_path)


@pytest.fixture(scope="session")
def tiny_data(tiny_config, isolated_cache: Path):
    """``prepare(tiny_config)``, once per session: tokenizer, train, dev and test."""
    from seq2seq.data import prepare

    return prepare(tiny_config, verbose=False)


@pytest.fixture(scope="session")
def small_pairs() -> list[tuple[str, str]]:
    """Twenty short German-English pairs."""
    return list(SMALL_PAIRS)


@pytest.fixture(scope="session")
def small_tokenizer():
    """A joint BPE tokenizer trained on SMALL_PAIRS (vocabulary a little above the byte pieces)."""
    from seq2seq.config import TokenizerConfig
    from seq2seq.data.tokenizer_training import train_tokenizer

    src, tgt = zip(*SMALL_PAIRS)
    return train_tokenizer(list(src), list(tgt), TokenizerConfig(type="bpe", vocab_size=340, joint=True))


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """The Multi30k files (../shared/data/multi30k from the repository root); skips the test when absent."""
    if not (MULTI30K / "train.de.gz").is_file():
        pytest.skip(f"Multi30k data not found at {MULTI30K}")
    return MULTI30K


# The config of every tiny random checkpoint; a test changes sections with make_checkpoint(model={...}).
TINY_CHECKPOINT: dict[str, dict[str, Any]] = {
    "data": {"max_length": 40},
    "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 1, "decoder_hidden_size": 12,
              "attention": "bahdanau", "dropout": 0.0},
    "decode": {"beam_size": 2, "max_length_a": 0.25, "max_length_b": 4, "batch_size": 60},
}


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory, small_tokenizer) -> Callable[..., Path]:
    """A factory of random (untrained) tiny Seq2Seq checkpoints with ``small_tokenizer``, saved as real files.

    ``make_checkpoint(model={"attention": "none"}, decode={...})`` merges each given section over
    TINY_CHECKPOINT's and returns the file's path; equal settings give the same file, built once per
    session, so tests must not change it. The weights are drawn from torch seed 0.
    """
    from seq2seq.checkpoint import build_checkpoint, save_checkpoint
    from seq2seq.config import config_from_dict
    from seq2seq.model.seq2seq import Seq2Seq

    directory = tmp_path_factory.mktemp("checkpoints")
    built: dict[str, Path] = {}

    def make(**sections: dict[str, Any]) -> Path:
        unknown = set(sections) - {"data", "model", "decode"}
        assert not unknown, f"make_checkpoint takes data, model and decode sections, not {sorted(unknown)}"
        settings = {name: {**TINY_CHECKPOINT[name], **sections.get(name, {})} for name in TINY_CHECKPOINT}
        key = repr(sorted((name, sorted(values.items())) for name, values in settings.items()))
        if key not in built:
            cfg = config_from_dict(settings)
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = Seq2Seq.from_config(cfg.model, small_tokenizer.src_vocab_size, small_tokenizer.tgt_vocab_size)
            path = directory / f"tiny-{len(built)}.pt"
            save_checkpoint(build_checkpoint(cfg, model.state_dict(), small_tokenizer.to_state()), path)
            built[key] = path
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint: Callable[..., Path]) -> Path:
    """The default tiny random checkpoint: Bahdanau attention, data.max_length 40, beam 2 (see TINY_CHECKPOINT)."""
    return make_checkpoint()


# Another process holding the lock. It imports seq2seq.training.lock without the package's __init__
# (which imports torch, seconds of start-up): the lock module itself needs no torch.
HOLD = """
import sys, time, types
from pathlib import Path
import seq2seq
package = types.ModuleType("seq2seq.training")
package.__path__ = [str(Path(seq2seq.__file__).parent / "training")]
sys.modules["seq2seq.training"] = package
from seq2seq.training.lock import hold_run_dir
with hold_run_dir(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held_run_dir(tmp_path: Path) -> Any:
    """A run directory whose lock another process holds; yields (directory, that process)."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RANK", None)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        yield run_dir, holder
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; several spin and wait for each other on a busy CPU.

    Modules that train tiny models use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 German digit sequences and their English words (tests/digits.py), one TSV used as both train and dev."""
    directory = tmp_path_factory.mktemp("digits")
    write_digit_pairs(directory / "pairs.tsv", count=40, seed=0)
    return directory
