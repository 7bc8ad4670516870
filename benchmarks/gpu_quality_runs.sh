#!/usr/bin/env bash
# The fixed-budget quality runs of issues 17 and 18, as concurrent processes on one GPU.
#
# Not a test. Quality at a fixed step budget does not depend on speed, and each of these
# models uses a small part of an H100, so they share the card: every comparison stays inside
# one process (same data, same feature network), and each process's lines are printed as its
# rows finish, so a run cut short by TIME still leaves its finished rows. The logs are packed
# into $OUT/quality-logs.tar.gz (the device tool brings back at most 8 files).
#
#   bash benchmarks/gpu_quality_runs.sh            # on the GPU host, $OUT set by the caller
#   TIME=300 BUDGET=1000 bash benchmarks/gpu_quality_runs.sh
#   RUNS="det" bash benchmarks/gpu_quality_runs.sh   # groups: gen, zoo, det, sam, cuda, unet-ps
#
# On 2026-12-07 all eleven processes in one 535 s call finished the segmenter and SAM rows
# only: ThunderNet (320 px) with its peer and ablations, and the generative parts, need a
# call of their own (RUNS="det", RUNS="gen").
#
# Throughput is measured apart, one process at a time (BENCHMARKS.md gives the commands).
set -u
OUT=${OUT:-/tmp/sf-quality-out}
TIME=${TIME:-540}          # seconds each process may run
BUDGET=${BUDGET:-2000}     # generative models' steps
WORKERS=${WORKERS:-1}      # reader workers per process (16 cores for 11 processes)
ZSTEPS=${ZSTEPS:-1500}     # segmenter steps
RUNS=${RUNS:-"gen zoo det sam cuda"}
GEN_PARTS=${GEN_PARTS:-"vq flow rf rf-uniform"}  # the gen group's processes
LOGS=/tmp/sf-quality-logs
mkdir -p "$OUT" "$LOGS"
export PYTHONUNBUFFERED=1

launch() {  # launch NAME COMMAND...: run in the background under the time limit; a rerun on
            # the same host appends to the log, so a cut run's lines stay
  local name=$1
  shift
  (timeout "$TIME" "$@" >>"$LOGS/$name.log" 2>&1; echo "exit $?" >>"$LOGS/$name.log") &
}

wanted() { [[ " $RUNS " == *" $1 "* ]]; }

if wanted gen; then
# --resume: each run checkpoints every 250 steps and continues from there, so the same command
# again on a still-warm GPU host (its /tmp kept) picks up where a time limit cut it.
G="python3 benchmarks/generative.py --quality --resume --budget $BUDGET --num-workers $WORKERS"
[[ " $GEN_PARTS " == *" vq "* ]] &&
  launch gen-vq $G --parts vq --classifier-steps 1000 --out /tmp/sfq-gen-vq
[[ " $GEN_PARTS " == *" flow "* ]] && launch gen-flow $G --parts flow --out /tmp/sfq-gen-flow
# The rectified flow as two processes: logit-normal 1-RF then its 2-RFs (REFLOW: the students'
# timestep samplings), and uniform 1-RF (one process ran 1,500-step 1-RFs at 151 s each plus
# their FDs: it did not fit 420 s).
[[ " $GEN_PARTS " == *" rf "* ]] &&
  launch gen-rf $G --parts rf --rf-timesteps logit_normal --classifier-steps 1000 \
    --reflow-budget 300 --reflow-timesteps "${REFLOW:-logit_normal,uniform}" --out /tmp/sfq-gen-rf
[[ " $GEN_PARTS " == *" rf-uniform "* ]] &&
  launch gen-rf-uniform $G --parts rf --rf-timesteps uniform --classifier-steps 1000 \
    --reflow-budget 0 --out /tmp/sfq-gen-rf-uniform
fi

if wanted zoo; then
Z="python3 benchmarks/vision_zoo.py --quality --quality-steps $ZSTEPS --num-workers $WORKERS"
for head in fcn unet deeplab; do
  launch "zoo-$head" $Z --heads "$head" --out "/tmp/sfq-zoo-$head"
done
fi

D="python3 benchmarks/detection.py --quality --num-workers $WORKERS ${DET_ARGS:-}"  # e.g. --tn-steps 800
if wanted det; then  # ThunderNet, its peer and each ablation: four processes
launch det-tn $D --models thundernet --ablations "" --no-peer --out /tmp/sfq-det-tn
launch det-peer $D --models thundernet --peer-only --out /tmp/sfq-det-peer
launch det-tn-cem $D --models thundernet --ablations cem --no-full --no-peer \
  --out /tmp/sfq-det-cem
launch det-tn-sam $D --models thundernet --ablations spatial_attention --no-full --no-peer \
  --out /tmp/sfq-det-sa
fi

wanted cuda && launch pytest-cuda python3 -m pytest -q -m cuda -p no:cacheprovider \
  tests/models/test_generative_cuda.py tests/models/test_ps_roi_align.py \
  tests/models/test_peft.py tests/models/test_train_vision.py

wanted sam && launch det-sam $D --models sam --out /tmp/sfq-det-sam

if wanted unet-ps; then  # the one segmenter row the shared call of 2026-12-07 did not reach
  launch zoo-unet-ps python3 benchmarks/vision_zoo.py --quality --quality-steps "$ZSTEPS" \
    --num-workers "$WORKERS" --heads unet --upsamples pixel_shuffle --out /tmp/sfq-zoo-unet-ps
fi

wait
# Every trainer run's metrics.jsonl: the progress of a run that TIME cut short.
for f in /tmp/sfq-*/runs/*/metrics.jsonl; do
  [[ -f $f ]] && cp "$f" "$LOGS/$(echo "${f#/tmp/}" | tr / _)"
done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >"$LOGS/gpu.txt" 2>&1
grep -h "RESULT\|^exit\|passed\|failed\|^rf_\|^vq\|^nice\|^realnvp" "$LOGS"/*.log >"$OUT/quality-summary.txt" 2>/dev/null
tar -czf "$OUT/quality-logs.tar.gz" -C "$LOGS" .
