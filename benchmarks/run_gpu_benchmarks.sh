#!/usr/bin/env bash
# One GPU command of the PaiNN benchmarks (see benchmarks/README.md).
#
#   benchmarks/run_gpu_benchmarks.sh all  OUT_DIR SECONDS   # throughput (both sides), then accuracy until SECONDS
#   benchmarks/run_gpu_benchmarks.sh fresh OUT_DIR SECONDS  # a new accuracy run (torch.compile), no throughput
#   benchmarks/run_gpu_benchmarks.sh acc  OUT_DIR SECONDS   # continue the accuracy run from its state file
#                                                           # (.bench/acc/gap.pt; carry it there from an
#                                                           # earlier command's OUT/gap_state.pt if the
#                                                           # machine was given back in between)
#   benchmarks/run_gpu_benchmarks.sh tput OUT_DIR SECONDS   # throughput only (schnetpack at batch 100 and 200,
#                                                           # molgnn with CUDA graphs), no accuracy run; exits
#                                                           # non-zero if any variant failed; writes
#                                                           # painn_throughput_graphs{,_detail}.json
#
# Needs .bench/gpu/qm9.npz (benchmarks/prepare_qm9.py, hard-linked there) and, where schnetpack is not
# installed, its wheels in .whl/sp (installed into /tmp/site). MOLGNN_COMMIT names the code version
# recorded in the results; TIME_BUDGET (default 780) is the accuracy run's total training seconds;
# COMPILE (yes/no) overrides the torch.compile choice.
set -o pipefail
phase=${1:?phase: all, fresh, acc or tput}
out=${2:?output folder}
seconds=${3:-570}
start=$(date +%s)
mkdir -p "$out"
if [ -d .whl/sp ] && ! python3 -c "import schnetpack" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/sp/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
commit=${MOLGNN_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
budget=${TIME_BUDGET:-780}
npz=.bench/gpu/qm9.npz
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null
if [ "$phase" = tput ]; then
    # most important first: what misses --stop-at is skipped and reported as such
    variants=${TPUT_VARIANTS:-"b100 b100-graphs b100-compile-graphs b200-graphs b200 b100-compile"}
    python3 benchmarks/painn_throughput.py --npz $npz --out "$out" --commit "$commit" --stop-at $((start + seconds)) \
        --sp-batch-sizes 100 200 --variants $variants --name painn_throughput_graphs \
        --title "schnetpack at batch 100 and 200, molgnn with CUDA graphs" \
        --command "benchmarks/run_gpu_benchmarks.sh tput OUT $seconds (benchmarks/painn_throughput.py)" \
        2>&1 | grep -v -E "FutureWarning|warnings.warn" | tee "$out/throughput.log"
    exit "${PIPESTATUS[0]}"
fi
if [ "$phase" = all ]; then
    python3 benchmarks/painn_throughput.py --npz $npz --out "$out" --commit "$commit" --stop-at $((start + 280)) \
        --command "benchmarks/run_gpu_benchmarks.sh all OUT $seconds (benchmarks/painn_throughput.py)" \
        2>&1 | grep -v -E "FutureWarning|warnings.warn" | tee "$out/throughput.log"
    mkdir -p .bench/acc && cp "$out/painn_throughput_detail.json" .bench/acc/ 2>/dev/null
elif [ "$phase" = fresh ]; then
    rm -f .bench/acc/gap.pt .bench/acc/painn_throughput_detail.json
elif [ ! -f .bench/acc/gap.pt ]; then
    echo "no accuracy state in .bench/acc/gap.pt to continue (run phase 'all' first, or carry it here)"; exit 1
fi
# torch.compile: as the throughput run measured (phase all), else on (1.4x eager at batch 100 in results/detail/painn_throughput_detail.json)
compile=${COMPILE:-auto}
[ -f .bench/acc/painn_throughput_detail.json ] || compile=${COMPILE:-yes}
python3 benchmarks/qm9_accuracy.py --npz $npz --compile "$compile" --out "$out" --state .bench/acc/gap.pt --state-copy "$out/gap_state.pt" \
    --time-budget "$budget" --stop-at $((start + seconds)) --throughput-detail .bench/acc/painn_throughput_detail.json \
    --commit "$commit" --command "benchmarks/run_gpu_benchmarks.sh $phase OUT $seconds, TIME_BUDGET=$budget (benchmarks/qm9_accuracy.py)" \
    2>&1 | grep -v -E "FutureWarning|warnings.warn" | tee "$out/accuracy_$phase.log"
