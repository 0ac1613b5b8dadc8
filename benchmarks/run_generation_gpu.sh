#!/usr/bin/env bash
# One GPU command of the generation benchmark (benchmarks/README.md): train and sample generators.
#
#   benchmarks/run_generation_gpu.sh OUT_DIR TOTAL_SECONDS JOB [JOB...]
#   JOB = dataset:kind:train_seconds:n_samples, e.g. qm9:vae:60:10000 moses:diffusion:300:25000
#
# Jobs run one after another; each resumes from .bench/gen/state/<dataset>_<kind>.pt when that
# exists (same machine, still warm; .bench/gen_gpu is not carried, so it survives), and its training budget counts all commands together. Every
# job gets a wall deadline that leaves the later jobs their share, so the command ends within
# TOTAL_SECONDS. Each job's files come back as OUT_DIR/<dataset>_<kind>.tar.gz, its generator (half-precision
# shards) as OUT_DIR/<dataset>_<kind>_generator/ and, with --export-state, its training state as ..._state/; the log as run.log.
# GEN_EXTRA_ARGS go to every generation_train.py call. Needs .bench/gen (benchmarks/prepare_generation.py) and, where RDKit is
# missing, wheels in .whl/gen: RDKit and what molgnn.config imports (pydantic, pydantic_core, annotated_types,
# typing_inspection, typing_extensions, pyyaml; `pip download --no-deps --only-binary=:all: -d .whl/gen ...`).
set -o pipefail
out=${1:?output folder}
total=${2:?total seconds}
shift 2
start=$(date +%s)
mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1
if ! python3 -c "import rdkit" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/gen/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
commit=${MOLGNN_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
echo "install done after $(( $(date +%s) - start )) s"
# Wall seconds a job needs beyond its training budget (start, cached encoding, precision check,
# learning-curve samples, final sampling and decoding): the deadlines of earlier jobs keep this free.
overhead() { if [ "$1" = diffusion ]; then echo 150; else echo 60; fi; }
jobs=("$@")
for i in "${!jobs[@]}"; do
    IFS=: read -r dataset kind budget nsamples <<< "${jobs[$i]}"
    later=0
    for j in "${jobs[@]:$((i + 1))}"; do
        later=$(( later + $(cut -d: -f3 <<< "$j") + $(overhead "$(cut -d: -f2 <<< "$j")") ))
    done
    stop_at=$(( start + total - later ))
    if (( stop_at - $(date +%s) < 90 )); then echo "skip ${jobs[$i]}: no time left"; continue; fi
    name=${dataset}_${kind}
    python3 benchmarks/generation_train.py --dataset "$dataset" --kind "$kind" --time-budget "$budget" \
        --n-samples "$nsamples" --state ".bench/gen_gpu/state/$name.pt" --cache-dir .bench/gen_gpu/cache --out "/tmp/gen_out/$name" \
        --stop-at "$stop_at" --commit "$commit" $GEN_EXTRA_ARGS \
        --command "benchmarks/run_generation_gpu.sh OUT $total ${jobs[*]} (job ${jobs[$i]})" \
        2>&1 | grep -v -E "FutureWarning|warnings.warn"
    if [ "${PIPESTATUS[0]}" != 0 ]; then echo "job ${jobs[$i]} failed"; exit 1; fi
    # the generator and training-state shard folders come back as they are (each file < 16 MB)
    for part in generator state; do
        if [ -d "/tmp/gen_out/$name/$part" ]; then rm -rf "$out/${name}_$part"; mv "/tmp/gen_out/$name/$part" "$out/${name}_$part"; fi
    done
    tar -czf "$out/$name.tar.gz" -C /tmp/gen_out "$name" && ls -la "$out/$name.tar.gz"
    echo "after $name: $(( $(date +%s) - start )) s of $total"
done
