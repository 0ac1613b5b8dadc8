#!/usr/bin/env bash
# DDP through the entry point on 2 GPUs and on 1, same settings, one command (issue 3, item 2):
#   benchmarks/run_ddp_scaling.sh OUT_DIR          # carry .whl/sp and .bench/gpu (qm9.npz)
# then, here: .venv/bin/python benchmarks/ddp_scaling.py OUT_DIR/ddp1 OUT_DIR/ddp2
set -o pipefail
out=${1:?output folder}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/sp/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 NCCL_NVLS_ENABLE=0
nvidia-smi -L
for n in 2 1; do
    mkdir -p "$out/ddp$n"
    timeout 100 torchrun --standalone --nproc_per_node "$n" -m molgnn.train.ddp_finetune --npz .bench/gpu/qm9.npz \
        --targets gap --out "$out/ddp$n" --epochs 4 --batch-size 100 --device-batches --eval-every 4 || exit 1
done
