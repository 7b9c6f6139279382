#!/usr/bin/env bash
# The quickstart: train a small attention GRU on the built-in synthetic task, translate
# a few sentences with it as an exported model folder, and print BLEU on its test set.
# Nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/quickstart

seq2seq train quickstart --run-dir "$run" --overwrite
seq2seq export-split quickstart --split test --out "$run/test"
seq2seq export "$run/best.pt" "$run/model" --overwrite

echo
echo "== five test sentences, translated (greedy) by the exported model folder =="
head -n 5 "$run/test.lex" | seq2seq translate -m "$run/model" --beam-size 1 | paste -d '\n' <(head -n 5 "$run/test.lex") - | sed 'n;s/^/  -> /'

echo
echo "== test-set scores (beam 5) =="
seq2seq evaluate -c "$run/best.pt" --src "$run/test.lex" --ref "$run/test.en" --beam-size 5
