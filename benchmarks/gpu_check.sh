#!/bin/bash
# The GPU check, in one short call on a GPU machine: the training job (torchrun, its Trainer, its
# input pipeline, its frozen eval set) at two sizes on the demo's pairs, the project's image-embedding
# path, and a bare training loop of the same model beside each job, then a ratio table against the
# targets of the GPU-training issue (README "Training on a GPU").
#
#   benchmarks/gpu_check.sh pack [PACK]    here, after `make demo`: the data to carry (< 64 MiB) into
#                                          PACK (default .gpu_check, git-ignored): the pairs, the eval
#                                          set, the renders re-saved optimized + xz, MiniLM in fp16
#   benchmarks/gpu_check.sh run [PACK]     on the GPU machine, from the repository root (carry PACK);
#                                          results and logs under $OUT (default /tmp/gpu_check_out)
#   SMOKE=1 PY=.venv/bin/python benchmarks/gpu_check.sh run    a CPU rehearsal: tiny sizes, same steps
#
# Knobs: RUNS="lit_small own_base raw embed", L_STEPS / A_STEPS (steps of the small / base job),
# T (seconds each job may take), PY (python, default python3). The run needs only torch,
# transformers, pillow, pyarrow, safetensors and tokenizers: importing dagster or cairosvg fails it.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-python3}
STEP=${1:-}
PACK=$(realpath -m "${2:-$ROOT/.gpu_check}")

if [ "$STEP" = pack ]; then
  exec "$PY" "$ROOT/benchmarks/gpu_check.py" pack "${ICON_PIPELINE_DATA:-$ROOT/data}" "$PACK"
fi
if [ "$STEP" != run ]; then
  sed -n '2,18p' "$0"; exit 2
fi
[ -f "$PACK/rendered.tar.xz" ] || { echo "no pack at $PACK: run 'benchmarks/gpu_check.sh pack' first"; exit 2; }

OUT=${OUT:-/tmp/gpu_check_out}; mkdir -p "$OUT"
W=${WORK:-/tmp/gpu_check_work}; rm -rf "$W"; mkdir -p "$W/blocked/dagster" "$W/site" "$W/pack/data"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The GPU image has neither: prove that nothing here needs them.
echo 'raise ImportError("the GPU check must not import dagster")' > "$W/blocked/dagster/__init__.py"
echo 'raise ImportError("the GPU check must not import cairosvg")' > "$W/blocked/cairosvg.py"
# A copy of the source whose MiniLM weights check accepts the fp32 weights restored from fp16.
cp -r "$ROOT/icon_pipeline" "$W/src_icon_pipeline" && mkdir -p "$W/src" && mv "$W/src_icon_pipeline" "$W/src/icon_pipeline"
cp -r "$PACK"/minilm/* "$W/site/"
export PYTHONPATH="$W/blocked:$W/src:$W/site${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}"
ln -s "$PACK/pairs" "$W/pack/pairs"; ln -s "$PACK/eval_t2i_i2t.v1.jsonl" "$W/pack/"
G="$PY $ROOT/benchmarks/gpu_check.py"

date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
$PY -c "import torch, transformers, sys; import icon_pipeline; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), 'source', icon_pipeline.__path__[0])"
$G restore "$W/site/$(ls "$PACK/minilm")" "$W/src" || exit 1
tar xJf "$PACK/rendered.tar.xz" -C "$W/pack/data" || exit 1

if [ "${SMOKE:-0}" = 1 ]; then
  # Tiny models on 48 groups and their eval rows: every step of the real run, in a few minutes.
  SMALL="tiny minilm 3 8 5e-4 48"; BASE="tiny own 3 8 5e-4 48"; RAW_STEPS=3; EMBED_LIMIT=64; T=${T:-300}
else
  SMALL="small minilm ${L_STEPS:-300} 512 5e-4"; BASE="base own ${A_STEPS:-200} 256 3e-4"; RAW_STEPS=12
  EMBED_LIMIT=0; T=${T:-170}
fi
RUNS=" ${RUNS:-lit_small own_base raw embed} "

job() {  # name size tower steps batch lr
  local name=$1; shift
  echo "=== $name: $* $(date -u +%T)"
  $G prep "$W/pack" "$W" "$name" "$@" || return
  cp "$W/$name/train_config.json" "$OUT/${name}_config.json"
  date +%s.%N > "$OUT/${name}_started"
  timeout "$T" $PY -m torch.distributed.run --nproc_per_node 1 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:0 \
    -m icon_pipeline.model.training --config "$W/$name/train_config.json" > "$OUT/${name}_job.log" 2>&1
  echo "exit $? after $(awk "BEGIN {print $(date +%s.%N) - $(cat "$OUT/${name}_started")}") s"
  grep -E "INFO|Error" "$OUT/${name}_job.log" | grep -v -E "step [0-9]+/" | tail -n 12
  grep -E "step [0-9]+/" "$OUT/${name}_job.log" | tail -n 2
  cp "$W/$name/out/training_report.json" "$OUT/${name}_report.json" 2>/dev/null
}
case $RUNS in *" lit_small "*) job lit_small $SMALL;; esac
case $RUNS in *" own_base "*) job own_base $BASE;; esac
case $RUNS in *" raw "*)
  for name in lit_small own_base; do
    [ -d "$W/$name/base" ] || $G prep "$W/pack" "$W" "$name" $( [ $name = lit_small ] && echo "$SMALL" || echo "$BASE" )
    batch=$($PY -c "import json; print(json.load(open('$W/$name/train_config.json'))['per_device_batch_size'])")
    echo "=== raw loop beside $name $(date -u +%T)"
    timeout 120 $G raw "$OUT/raw_${name#*_}.json" "$W/$name/base" "$batch" "$RAW_STEPS"
  done;;
esac
case $RUNS in *" embed "*)
  [ -d "$W/own_base/base" ] || $G prep "$W/pack" "$W" own_base $BASE
  echo "=== embedding path $(date -u +%T)"
  timeout 90 $G embed "$W/own_base/base" "$W/pack" "$OUT/own_base_embed.json" "$EMBED_LIMIT";;
esac
$G table "$OUT"
date -u
