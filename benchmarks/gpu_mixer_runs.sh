#!/usr/bin/env bash
# Issue 16's H100 tables in one device call: the long-context speed table alone on the GPU,
# then the quality runs (mixer quality on posts and MQAR, PEFT) sharing it.
#
# Not a test. Speed runs alone (it is a timing); quality at a fixed step budget does not
# depend on speed, so those processes share the card, each comparison inside one process.
# Every process prints its rows as they finish, so a phase cut short by its time limit
# keeps its finished rows. Logs are packed into $OUT/mixer-logs.tar.gz.
#
#   bash benchmarks/gpu_mixer_runs.sh                  # on the GPU host, $OUT set by the caller
#   SPEED_TIME=240 QUALITY_TIME=300 bash benchmarks/gpu_mixer_runs.sh
set -u
OUT=${OUT:-/tmp/sf-mixer-out}
SPEED_TIME=${SPEED_TIME:-270}      # seconds of the long-context table
QUALITY_TIME=${QUALITY_TIME:-280}  # seconds each quality process may run
POSTS_STEPS=${POSTS_STEPS:-500}
LOGS=/tmp/sf-mixer-logs
mkdir -p "$OUT" "$LOGS"
export PYTHONUNBUFFERED=1

timeout "$SPEED_TIME" python3 benchmarks/long_context.py --mixers attention,gau,mamba2,s4d \
  >"$LOGS/long-context.log" 2>&1
echo "exit $?" >>"$LOGS/long-context.log"

launch() {  # launch NAME COMMAND...: run in the background under the time limit
  local name=$1
  shift
  (timeout "$QUALITY_TIME" "$@" >"$LOGS/$name.log" 2>&1; echo "exit $?" >>"$LOGS/$name.log") &
}
Q="python3 benchmarks/mixer_quality.py --task posts --steps $POSTS_STEPS"
launch posts-a $Q --mixers attention,gau,gau_softmax,linear --out /tmp/sfm-posts-a
launch posts-b $Q --mixers attention,sliding_window,mamba2,s4d --out /tmp/sfm-posts-b
launch mqar python3 benchmarks/mixer_quality.py --task mqar --out /tmp/sfm-mqar
launch peft python3 benchmarks/peft.py --out /tmp/sfm-peft --pt-steps 400 --ft-steps 200
wait
grep -h "RESULT\|^exit\|^posts \|^mqar \|T=\|x attention" "$LOGS"/*.log >"$OUT/mixer-summary.txt" 2>/dev/null
tar -czf "$OUT/mixer-logs.tar.gz" -C "$LOGS" .
