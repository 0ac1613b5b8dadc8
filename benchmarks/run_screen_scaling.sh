#!/usr/bin/env bash
# Worker scaling of `molgnn screen --dask` on a many-core machine (the GPU machine's 16 cores, CPU only).
#
#   benchmarks/run_screen_scaling.sh OUT_DIR [WORKERS...]      (default workers: 1 2 4 8 16)
#
# Screens the first 60,000 MOSES train molecules (`molgnn screen --dask --device cpu`, chunks of 1,000
# rows) at each worker count; the CLI reports the Dask phase (2D tier over the chunks, the part that
# grows with the library) apart from the fixed 3D re-check of 100. Writes OUT_DIR/screen_scaling.json
# (benchmarks/screen_distributed.py) and OUT_DIR/run.log. Needs .bench/scale (benchmarks/README.md,
# "Worker scaling"): moses_train_100000.csv.gz, model/ (a fine-tune run's fast_tier folder) and, where
# RDKit, Prefect or Dask is missing, site.tar.xz: the missing packages as installed files (the GPU
# machine has no network; wheels of all of them exceed the 64 MiB that travels).
set -eo pipefail
out=${1:?output folder}
shift
workers=("${@:-1 2 4 8 16}")
mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1
start=$(date +%s)
if ! python3 -c "import rdkit, prefect, prefect_dask, mlflow" 2>/dev/null; then
    mkdir -p /tmp/scale_site
    xz -dc .bench/scale/site.tar.xz | tar -xf - -C /tmp/scale_site
    export PYTHONPATH=/tmp/scale_site/site:$PYTHONPATH
fi
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 PREFECT_HOME=/tmp/scale_prefect
echo "$(nproc) cores; packages ready after $(( $(date +%s) - start )) s"
python3 -c "import torch, pandas, rdkit, prefect, dask; print('torch', torch.__version__, 'pandas', pandas.__version__, 'rdkit', rdkit.__version__, 'prefect', prefect.__version__, 'dask', dask.__version__)"
python3 benchmarks/screen_distributed.py --n "${SCALE_N:-60000}" --workers ${workers[*]} --chunk-rows 1000 --device cpu \
    --models .bench/scale/model --source .bench/scale/moses_train_100000.csv.gz --work /tmp/scale_work \
    --out "$out/screen_scaling.json" --deadline "${SCALE_DEADLINE:-520}"
echo "done after $(( $(date +%s) - start )) s"
