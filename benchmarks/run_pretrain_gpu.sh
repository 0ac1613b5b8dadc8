#!/usr/bin/env bash
# One GPU command that pretrains the shipped drug-like encoder (benchmarks/pretrain_druglike.py).
#
#   benchmarks/run_pretrain_gpu.sh OUT_DIR SECONDS [INIT_CHECKPOINT]
#
# Needs the corpus at .bench/pretrain_gpu/moses_50000.npz (benchmarks/prepare_pretrain_corpus.py, then
# hard-linked there: only that folder travels) and, where schnetpack is missing, its wheels in .whl/sp.
# MOLGNN_COMMIT names the code version recorded (the GPU machine gets a working tree without .git).
set -o pipefail
out=${1:?output folder}
seconds=${2:?training seconds}
init=${3:-}
mkdir -p "$out"
if [ -d .whl/sp ] && ! python3 -c "import schnetpack" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/sp/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 benchmarks/pretrain_druglike.py --npz .bench/pretrain_gpu/moses_50000.npz --seconds "$seconds" --out "$out" \
    ${init:+--init "$init"} 2>&1 | grep -v -E "FutureWarning|warnings.warn" | tee "$out/pretrain.log"
exit "${PIPESTATUS[0]}"
