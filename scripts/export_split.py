"""Write one split of a config's corpus as two aligned text files: the same as `seq2seq export-split`.

    python3 scripts/export_split.py quickstart --split test --out runs/quickstart/test
"""

import sys

from seq2seq.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["export-split", *sys.argv[1:]]))
