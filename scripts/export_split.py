"""Write one split of a config's corpus as two aligned text files, PREFIX.SRC_LANG and PREFIX.TGT_LANG.

Useful for the built-in synthetic task, which has no files of its own:
    python3 scripts/export_split.py configs/quickstart.yaml --split test --out runs/quickstart/test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seq2seq.textio import atomic_file
from seq2seq.config import load_config
from seq2seq.data.corpora import read_split
from seq2seq.errors import Seq2SeqError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--split", choices=["train", "dev", "test"], default="test")
    parser.add_argument("--out", required=True, help="path prefix of the two files")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    try:
        cfg = load_config(args.config, args.overrides)
        pairs = read_split(cfg.data, args.split)
    except Seq2SeqError as exc:
        print(f"export_split: error: {exc}", file=sys.stderr)
        return 2
    if pairs is None:
        print(f"export_split: error: {args.config} has no {args.split} split", file=sys.stderr)
        return 2
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for lang, lines in ((cfg.data.src_lang, pairs.src), (cfg.data.tgt_lang, pairs.tgt)):
        with atomic_file(f"{prefix}.{lang}") as handle:
            handle.writelines(line + "\n" for line in lines)
    print(f"wrote {len(pairs)} pairs to {prefix}.{cfg.data.src_lang} and {prefix}.{cfg.data.tgt_lang}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
