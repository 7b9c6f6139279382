#!/usr/bin/env bash
# The CUDA path in one command (under 5 minutes on one H100/H200), run from anywhere:
#
#   scripts/check_cuda.sh                 # on a GPU machine
#   scripts/check_cuda.sh --cpu-dry-run   # every step on the CPU, shortened: checks the script itself
#
# 1. the CUDA tests (tests/test_cuda.py; they skip without a GPU) and the fused encoder and decoder tests;
# 2. the GRU dtype under bf16 autocast, host syncs and kernel launches per training step and per decoder step;
# 3. two epochs of Multi30k (the GPU config, multi30k_de_en_gpu.yaml, in bf16; the dry run: fp32 on CPUs
#    without bf16 units) at its batch size and twice it: epoch time, tokens/s, GPU utilisation, peak GPU
#    memory, dev BLEU;
# 4. greedy and beam-5 decoding time of test_2016_flickr with the model trained in 3;
# 5. exact resume under train.deterministic: 4 steps in one run == 2 steps, then 2 more after --resume.
# Without a GPU it falls back to the dry run. Output directory: $CHECK_CUDA_OUT (default: a new temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
CONFIG=configs/multi30k_de_en.yaml
GPU_CONFIG=configs/multi30k_de_en_gpu.yaml  # the reference model in 8,192-token batches
OUT=${CHECK_CUDA_OUT:-$(mktemp -d -t check_cuda.XXXXXX)}
mkdir -p "$OUT"

DRY=0
[[ "${1:-}" == "--cpu-dry-run" ]] && DRY=1
if [[ $DRY == 0 ]] && ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA GPU visible: running the CPU dry run instead"
    DRY=1
fi
if [[ $DRY == 1 ]]; then
    DEVICE=cpu; BATCH_SIZES="2048"; LENGTH=(--set train.max_steps=2 --set train.validate_every=2)
    DECODE_LIMIT=(--limit 64)
    # bf16 where the CPU has bf16 matrix units; elsewhere it is emulated and about 15x slower than fp32 (the dry run
    # took 14 minutes on an AVX2-only host), so the dry run trains in fp32 there: it checks the script, not bf16.
    AMP=$($PY -c 'from seq2seq.device import cpu_has_bf16_matrix_units as has; print("bf16" if has() else "off")')
else
    AMP=bf16; DEVICE=cuda; BATCH_SIZES="8192 16384"; LENGTH=(--set train.max_epochs=2); DECODE_LIMIT=()
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
echo "device $DEVICE, train.amp=$AMP; output in $OUT"

echo "== 1. tests"
$PY -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_fused_decoder.py tests/test_fused_feeding.py \
    tests/test_fused_encoder.py tests/test_gru_paths.py

echo "== 2. dtype, host syncs, kernel launches"
$PY scripts/cuda_probe.py --config "$CONFIG" --device "$DEVICE"

echo "== 3. Multi30k training ($GPU_CONFIG), train.amp=$AMP"
for BS in $BATCH_SIZES; do
    RUN="$OUT/train_$BS"
    SAMPLER=""
    if [[ $DEVICE == cuda ]]; then
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$RUN.smi" &
        SAMPLER=$!
    fi
    START=$(date +%s.%N)
    $PY -m seq2seq -q train "$GPU_CONFIG" --run-dir "$RUN" --overwrite --set train.device=$DEVICE \
        --set train.amp=$AMP --set train.batch_size=$BS --set train.patience=0 "${LENGTH[@]}"
    END=$(date +%s.%N)
    [[ -n $SAMPLER ]] && kill "$SAMPLER"
    echo "batch_size=$BS: $(echo "$END - $START" | bc) s in all (tokenizer, data and validation included)"
    grep -E "tgt tok/s|BLEU" "$RUN/train.log" | tail -n 4
    if [[ -n $SAMPLER ]]; then
        awk -F', ' '{u+=$1; n++; if ($2>m) m=$2} END {printf "GPU utilisation %.0f%% (mean of %d samples), peak memory used %d MiB\n", u/n, n, m}' "$RUN.smi"
    fi
done

echo "== 4. decoding test_2016_flickr"
LAST_BS=${BATCH_SIZES##* }
$PY scripts/cuda_probe.py --config "$GPU_CONFIG" --device "$DEVICE" --time-decoding "$OUT/train_$LAST_BS/last.pt" "${DECODE_LIMIT[@]}"

echo "== 5. exact resume under train.deterministic"
COMMON=(--set train.device=$DEVICE --set train.amp=$AMP --set train.deterministic=true --set train.patience=0
        --set train.validate_every=1000)
$PY -m seq2seq -q train "$CONFIG" --run-dir "$OUT/full" --overwrite "${COMMON[@]}" --set train.max_steps=4
$PY -m seq2seq -q train "$CONFIG" --run-dir "$OUT/split" --overwrite "${COMMON[@]}" --set train.max_steps=2
$PY -m seq2seq -q train "$CONFIG" --run-dir "$OUT/split" --resume "${COMMON[@]}" --set train.max_steps=4
$PY - "$OUT/full/last.pt" "$OUT/split/last.pt" <<'PYEOF'
import sys
from seq2seq.checkpoint import load_checkpoint
full, split = (load_checkpoint(path)["model"] for path in sys.argv[1:3])
different = [name for name, value in full.items() if not value.equal(split[name])]
print("exact resume: " + ("every weight equal bit for bit" if not different else f"DIFFERENT: {different}"))
sys.exit(1 if different else 0)
PYEOF
echo "check_cuda: done"
