"""Model folders for sharing: ``seq2seq export CKPT DIR``, ``Translator.from_pretrained(DIR or hub id)``.

A model folder holds nothing that is unpickled when it is loaded:

- ``model.safetensors``  the weights (tied or shared matrices stored once)
- ``config.yaml``        the resolved config the model was trained with (``seq2seq config show`` format)
- ``src.model`` (and ``tgt.model`` when the vocabularies are separate), ``tokenizer.json``: SentencePiece
- ``README.md``          a model card: architecture, training data, scores, the command that trained it

The folder is what is uploaded to (and downloaded from) the Hugging Face Hub.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from .checkpoint import LoadedModel, load_model
from .config import Config, config_from_dict, save_config
from .data.tokenizer import META_FILE, Tokenizer
from .errors import CheckpointError, ConfigError, DataError, Seq2SeqError
from .model.seq2seq import Seq2Seq

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
CARD_FILE = "README.md"
MODEL_FILES = [WEIGHTS_FILE, CONFIG_FILE, META_FILE, "src.model", "tgt.model", CARD_FILE]



def export_model(checkpoint: str | Path, directory: str | Path, *, scores: list[dict[str, Any]] | None = None,
                 overwrite: bool = False) -> Path:
    """Write the model folder of a checkpoint; returns its path. Nothing is left half-written.

    ``scores`` are ``seq2seq evaluate --json`` results to list in the model card.

    >>> export_model("runs/quickstart/best.pt", "exported/quickstart")  # doctest: +SKIP
    PosixPath('exported/quickstart')
    """
    checkpoint, directory = Path(checkpoint), Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise Seq2SeqError(f"{directory} exists and is not empty; choose another folder or pass --overwrite")
    loaded = load_model(checkpoint)
    model, cfg, tokenizer = loaded.model, loaded.config, loaded.tokenizer
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        from safetensors.torch import save_model

        save_model(model, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "library": "seq2seq"})
        save_config(cfg, staging / CONFIG_FILE)
        tokenizer.save(staging)
        card = model_card(cfg, model.num_parameters(), tokenizer.tgt_vocab_size,
                          training_log(checkpoint.parent / "train.log"), scores or [])
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        _default_permissions(staging)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _default_permissions(directory: Path) -> None:
    """mkdtemp makes a private folder: give it, and its files, the modes a plain mkdir and open would."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def load_pretrained(name_or_path: str | Path, device: torch.device, revision: str | None = None,
                    cache_dir: str | Path | None = None) -> LoadedModel:
    """The model of a model folder, or of a hub id fetched into the hub cache, in eval mode on ``device``."""
    folder = _local_folder(name_or_path, revision, cache_dir)
    for name in (WEIGHTS_FILE, CONFIG_FILE, META_FILE, "src.model"):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is not a seq2seq model folder: {name} is missing "
                                  f"(write one with `seq2seq export CKPT DIR`)")
    try:
        cfg = config_from_dict(yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8")) or {})
        tokenizer = Tokenizer.load(folder)
    except (ConfigError, DataError, yaml.YAMLError, KeyError, ValueError, OSError) as exc:
        raise CheckpointError(f"{folder}: cannot read the model folder: {exc}") from exc
    model = Seq2Seq.from_config(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    from safetensors.torch import load_model as load_weights

    try:
        load_weights(model, str(folder / WEIGHTS_FILE), strict=True)
    except Exception as exc:  # safetensors raises RuntimeError/SafetensorError for wrong shapes and bad files
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: the weights do not fit the model {CONFIG_FILE} "
                              f"describes, or the file is damaged: {exc}") from exc
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, config=cfg)


def _local_folder(name_or_path: str | Path, revision: str | None, cache_dir: str | Path | None) -> Path:
    """A local folder as given, else the hub repository ``user/name`` downloaded (or found) in the hub cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(name_or_path)):
        raise CheckpointError(f"{name_or_path} is neither a model folder nor a hub id like user/model")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(name_or_path), revision=revision, cache_dir=cache_dir,
                                      allow_patterns=MODEL_FILES))
    except Exception as exc:  # huggingface_hub: offline, unknown repo, network errors, ...
        raise CheckpointError(f"{name_or_path} is not a local folder and could not be fetched from the "
                              f"Hugging Face Hub: {type(exc).__name__}: {exc}") from exc


def push_to_hub(directory: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload a model folder to the hub repository ``repo_id`` (created if needed); returns the commit URL.

    The token comes from ``huggingface-cli login`` or $HF_TOKEN.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model",
                               commit_message=f"Upload {Path(directory).name} with seq2seq export")
    return str(getattr(commit, "commit_url", commit))


def training_log(path: Path) -> dict[str, Any]:
    """What a run's train.log says about how the model was made: the command and the best validation."""
    found: dict[str, Any] = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if " command: " in f" {line}":
            found["command"] = line.split("command: ", 1)[1]
        bleu = re.search(r"validation at step (\d+)\b.*\bBLEU ([\d.]+)", line)
        if bleu and float(bleu.group(2)) >= found.get("best_bleu", -1.0):
            found.update(best_bleu=float(bleu.group(2)), best_step=int(bleu.group(1)), best_line=line)
    return found


def model_card(cfg: Config, num_parameters: int, vocab_size: int, log: dict[str, Any],
               scores: list[dict[str, Any]]) -> str:
    """The README.md of a model folder: hub metadata, then what the model is and how it was made."""
    meta = {"library_name": "seq2seq", "pipeline_tag": "translation", "tags": ["translation", "gru", "seq2seq"]}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# GRU translation model, {cfg.data.src_lang} → {cfg.data.tgt_lang}", "",
             _description(cfg, num_parameters, vocab_size), "",
             "## Training data", "", *_data_lines(cfg), "",
             "## Scores", "", *_score_lines(log, scores), "",
             "## How it was made", "", "```bash", log.get("command", f"seq2seq train {CONFIG_FILE}"), "```", "",
             f"`{CONFIG_FILE}` in this folder is the resolved config of that run: `seq2seq train {CONFIG_FILE}` "
             f"trains the same model again (same data, same seed).", "",
             "## Use", "", "```python", "from seq2seq import Translator", "",
             'translator = Translator.from_pretrained("THIS_FOLDER_OR_HUB_ID")', 'print(translator.translate(["..."]))',
             "```", "", "```bash", "seq2seq translate -m THIS_FOLDER_OR_HUB_ID < input.txt > output.txt", "```", ""]
    return "\n".join(lines)


def _description(cfg: Config, num_parameters: int, vocab_size: int) -> str:
    m = cfg.model
    vocabulary = "joint" if cfg.tokenizer.joint else "one per language"
    return (f"A recurrent encoder-decoder trained with the `seq2seq` package: "
            f"{'bidirectional ' if m.bidirectional else ''}{m.num_layers}-layer GRU encoder (hidden {m.hidden_size}), "
            f"{m.num_layers}-layer GRU decoder (hidden {m.decoder_hidden_size}) started from the encoder's h_n, "
            f"attention `{m.attention}`; {num_parameters:,} parameters; SentencePiece {cfg.tokenizer.type}, "
            f"{vocab_size} target pieces ({vocabulary}).")


def _data_lines(cfg: Config) -> list[str]:
    d = cfg.data
    if d.format == "synthetic":
        return [f"The package's built-in synthetic task (seed {d.synthetic_seed}, {d.synthetic_train_size:,} "
                f"training pairs), max length {d.max_length} pieces."]
    source = f"Hugging Face dataset `{d.hf_name}`" + (f" ({d.hf_config})" if d.hf_config else "") \
        if d.format == "hf" else f"{d.format} files"
    splits = ", ".join(f"{name} `{value}`" for name, value in (("train", d.train), ("dev", d.dev),
                                                               ("test", d.test)) if value)
    return [f"{source}: {splits}; pairs over {d.max_length} pieces per side were dropped from training."]


def _score_lines(log: dict[str, Any], scores: list[dict[str, Any]]) -> list[str]:
    lines = []
    if "best_bleu" in log:
        lines.append(f"Best dev BLEU during training (greedy): {log['best_bleu']:.2f}, at step {log['best_step']}.")
    if scores:
        lines += ["", "| test set | beam | BLEU | chrF | TER |", "| --- | --- | --- | --- | --- |"]
        for item in scores:
            beam = item.get("decode", {}).get("beam_size", "?")
            lines.append(f"| {item.get('src', '?')} | {beam} | {item['bleu']:.2f} | {item['chrf']:.2f} | "
                         f"{item['ter']:.2f} |")
        lines += ["", *sorted({f"`{item['bleu_signature']}`" for item in scores if "bleu_signature" in item})]
    return lines or ["No scores recorded (export with `--scores` the output of `seq2seq evaluate --json`)."]


def read_scores(paths: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of ``seq2seq evaluate --json`` output files, one or more per file."""
    scores = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"scores file not found: {path}")
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not JSON from `seq2seq evaluate --json`: {exc}") from exc
            if not isinstance(item, dict) or not {"bleu", "chrf", "ter"} <= set(item):
                raise DataError(f"{path}, line {number}: expected the bleu, chrf and ter of `seq2seq evaluate --json`")
            scores.append(item)
    return scores
