#!/usr/bin/env bash
# The quickstart: train a small attention GRU on the built-in synthetic task, translate
# a few sentences, and print BLEU on its test set. Nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/quickstart

seq2seq train configs/quickstart.yaml --run-dir "$run" --overwrite
python3 scripts/export_split.py configs/quickstart.yaml --split test --out "$run/test"

echo
echo "== five test sentences, translated (greedy) =="
head -n 5 "$run/test.lex" | seq2seq translate -c "$run/best.pt" --beam-size 1 | paste -d '\n' <(head -n 5 "$run/test.lex") - | sed 'n;s/^/  -> /'

echo
echo "== test-set scores (beam 5) =="
seq2seq evaluate -c "$run/best.pt" --src "$run/test.lex" --ref "$run/test.en" --beam-size 5
