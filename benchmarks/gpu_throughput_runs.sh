#!/usr/bin/env bash
# The throughput tables of issues 17 and 18, one process at a time on one GPU.
#
# Not a test. Every precision runs eagerly (--no-compile): the tables compare FP32, FP16 with
# its GradScaler and BF16 on the same code path, and leave out compile time, which would not
# fit one device call for 14 kinds x 2 precisions (the compiled paths are checked by
# `pytest -m cuda`). Each step prints its RESULT line; logs go to $OUT/throughput-logs.tar.gz.
#
#   bash benchmarks/gpu_throughput_runs.sh                 # on the GPU host
#   PARTS="zoo-peers gen" bash benchmarks/gpu_throughput_runs.sh
#   PARTS="gen:150 det:110 input" bash benchmarks/gpu_throughput_runs.sh   # PART:seconds
#   GEN_KINDS=vae-gumbel,flow-nice,flow-glow,rectified_flow PARTS="gen:300" bash ...  # some rows
set -u
OUT=${OUT:-/tmp/sf-throughput-out}
PARTS=${PARTS:-"gen zoo-peers det zoo-trainer"}
PART_TIME=${PART_TIME:-600}  # seconds each part may run; a part cut short keeps its printed rows
LOGS=/tmp/sf-throughput-logs
mkdir -p "$OUT" "$LOGS"
export PYTHONUNBUFFERED=1

for entry in $PARTS; do
  part=${entry%%:*}
  limit=$PART_TIME
  [[ $entry == *:* ]] && limit=${entry#*:}
  case $part in
    zoo-peers) cmd=(python3 benchmarks/vision_zoo.py --parts peers --warmup 5 --steps 20
                    --repeats 3 --out /tmp/sft-zoo) ;;
    gen) cmd=(python3 benchmarks/generative.py --no-compile --images 16384 --warmup 5
              --steps 30 --repeats 3 --out /tmp/sft-gen ${GEN_KINDS:+--kinds "$GEN_KINDS"}) ;;
    det) cmd=(python3 benchmarks/detection.py --no-compile --images 8192 --warmup 10 --steps 40
              --out /tmp/sft-det) ;;
    zoo-trainer) cmd=(python3 benchmarks/vision_zoo.py --parts trainer --no-compile
                      --kinds mobilenet_v2,segmenter --warmup 10 --steps 30 --out /tmp/sft-zoo) ;;
    input) cmd=(python3 benchmarks/train_vision.py --configs fp32,bf16 --vq-steps 400 --steps 60
                --out /tmp/sft-vision) ;;  # VQ-VAE and EfficientNet input wait (issue 19)
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
  echo "== $part: ${cmd[*]}" | tee -a "$OUT/throughput-summary.txt"
  start=$(date +%s)
  timeout "$limit" "${cmd[@]}" >"$LOGS/$part.log" 2>&1
  echo "exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/throughput-summary.txt"
  grep -h "RESULT\|images/s\|[0-9]x\|input wait" "$LOGS/$part.log" >>"$OUT/throughput-summary.txt"
done
tar -czf "$OUT/throughput-logs.tar.gz" -C "$LOGS" .
