#!/usr/bin/env bash
# One call on a GPU machine that has Python, PyTorch, torchvision and CUDA but no network: install the
# wheelhouse built by `make wheelhouse` against the machine's own torch, smoke-train the phantom detection
# configs for 20 iterations, then benchmark baseline Faster R-CNN R50-FPN against CXR-CoDet R50-FPN at
# 1024 px, 2 images per GPU, in fp32 and with AMP (tools/benchmark.py). Figures go to $OUT (else
# output/gpu_benchmark): benchmark_fp32.json, benchmark_amp.json, summary.txt, log.txt; docs/benchmarks.md has the targets.
#
#   bash scripts/gpu_benchmark.sh [--cpu] [--wheelhouse DIR] [--python PYTHON]
#
# --cpu runs the same steps on CPU at tiny sizes (128 px, 1 timed iteration, bfloat16 autocast), which
# shows on a machine without a GPU that the wheelhouse and every step work end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
WHEELHOUSE=.whl
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) MODE=cpu ;;
        --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a folder}; shift ;;
        --python) PY=${2:?--python needs an interpreter}; shift ;;
        *) echo "gpu_benchmark.sh: unknown argument $1 (expected --cpu, --wheelhouse DIR, --python PYTHON)" >&2; exit 2 ;;
    esac
    shift
done
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # used from other folders
ls "$WHEELHOUSE"/*.whl >/dev/null 2>&1 || { echo "gpu_benchmark.sh: no wheels in $WHEELHOUSE: run 'make wheelhouse' first" >&2; exit 1; }
OUT=${OUT:-output/gpu_benchmark}
mkdir -p "$OUT"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/cxr_codet_gpu_benchmark.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
exec > >(tee "$OUT/log.txt") 2>&1
start=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - start )) s] $*"; }

step "install $WHEELHOUSE into $SCRATCH/site against this machine's torch"
"$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SCRATCH/site" "$WHEELHOUSE"/*.whl
# cxr_codet reads datasets/metadata/*.json beside its package folder (data/descriptions.py, class_mapping.py),
# which a wheel does not carry: link the checkout's.
mkdir -p "$SCRATCH/site/datasets"
ln -s "$PWD/datasets/metadata" "$SCRATCH/site/datasets/metadata"
export PYTHONPATH="$SCRATCH/site" DETECTRON2_DATASETS="$SCRATCH/datasets" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# from $SCRATCH, so that the checkout's own cxr_codet/ (the current folder) cannot shadow the wheel
(cd "$SCRATCH" && "$PY" - "$SCRATCH/site") <<'PYEOF'
import sys, torch, torchvision, detectron2, cxr_codet
assert cxr_codet.__file__.startswith(sys.argv[1]), f"cxr_codet imported from {cxr_codet.__file__}, not the wheelhouse"
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"CUDA {torch.version.cuda}, GPU {gpu}; detectron2 and cxr_codet from the wheelhouse")
PYEOF

EMBEDDINGS="$WHEELHOUSE/embeddings"
DATA=(DATASETS.TRAIN "('cxr_phantom_tiny_train',)" DATASETS.TEST "('cxr_phantom_tiny_val',)")
if [ "$MODE" = gpu ]; then
    python_has_cuda=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
    [ "$python_has_cuda" = 1 ] || { echo "gpu_benchmark.sh: torch sees no GPU; use --cpu" >&2; exit 1; }
    SMOKE=(SOLVER.MAX_ITER 20)
    SIZE=1024 ROUNDS=3 ITERATIONS=20 WARMUP=5 CACHED=4 AMP_DTYPE=${AMP_DTYPE:-float16} CPU_FLAG=()
else
    SMOKE=(SOLVER.MAX_ITER 20 SOLVER.IMS_PER_BATCH 2 DATALOADER.NUM_WORKERS 0 INPUT.MIN_SIZE_TRAIN "(128,)"
           INPUT.MAX_SIZE_TRAIN 128 INPUT.MIN_SIZE_TEST 128 INPUT.MAX_SIZE_TEST 128)
    SIZE=128 ROUNDS=1 ITERATIONS=1 WARMUP=1 CACHED=1 AMP_DTYPE=${AMP_DTYPE:-bfloat16} CPU_FLAG=(--cpu)
fi

for config in faster_rcnn_R18_FPN_phantom cxr_codet_R18_FPN_phantom; do
    step "smoke test: 20 iterations of configs/phantom/$config.yaml"
    "$PY" tools/train_net.py --config-file "configs/phantom/$config.yaml" "${DATA[@]}" "${SMOKE[@]}" \
        SOLVER.WARMUP_ITERS 5 SOLVER.LOG_PERIOD 5 SOLVER.CHECKPOINT_PERIOD 1000 \
        MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH "$EMBEDDINGS/phantom_unelaborate.npy" \
        OUTPUT_DIR "$SCRATCH/smoke/$config"
done

BENCH=(tools/benchmark.py --config-file configs/vindr/faster_rcnn_R50_FPN_1x.yaml
       --compare-config configs/Base-CXR-CoDet-FPN.yaml --task train eval "${CPU_FLAG[@]}"
       --rounds "$ROUNDS" --iterations "$ITERATIONS" --warmup "$WARMUP" --cached-batches "$CACHED")
OPTS=(MODEL.WEIGHTS "" "${DATA[@]}" SOLVER.IMS_PER_BATCH 2 DATALOADER.NUM_WORKERS 2
      INPUT.MIN_SIZE_TRAIN "($SIZE,)" INPUT.MAX_SIZE_TRAIN "$SIZE" INPUT.MIN_SIZE_TEST "$SIZE" INPUT.MAX_SIZE_TEST "$SIZE"
      MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH "$EMBEDDINGS/phantom_elaborate.npy")
step "benchmark fp32: baseline R50-FPN (A) vs CXR-CoDet R50-FPN (B), $SIZE px, 2 images per iteration"
"$PY" "${BENCH[@]}" --output "$OUT/benchmark_fp32.json" "${OPTS[@]}"
step "benchmark AMP ($AMP_DTYPE): the same"
"$PY" "${BENCH[@]}" --output "$OUT/benchmark_amp.json" "${OPTS[@]}" SOLVER.AMP.ENABLED True SOLVER.AMP.DTYPE "$AMP_DTYPE"
step "fp32 and AMP figures side by side (read them against docs/benchmarks.md's targets)"
"$PY" tools/benchmark.py --summarize "$OUT/benchmark_fp32.json" "$OUT/benchmark_amp.json" | tee "$OUT/summary.txt"
step "done in $(( $(date +%s) - start )) s; results in $OUT"
