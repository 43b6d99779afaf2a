#!/bin/bash
# Two fine-tunes side by side inside ONE call of a lent GPU, each with a cosine that ends in time.
#
# Run on the lent machine from the repo root, carrying DATA (a folder that .git/info/exclude
# ignores), e.g. the grey phase 7 pair of weights/README.md:
#     C="--channels 1 --init weights/grey.pt --width 32 --noise-map --sigma 0-75 --lr 3e-4 --workers 7 --device cuda"
#     DATA=gpudata/grey A="$C --batch 64 --patch 128 --seed 31" B="$C --batch 32 --patch 176 --seed 32" \
#         RUN=runs/grey8 END=500 bash benchmarks/lent_gpu_pair.sh
# A and B are each run's `denoise train` options (everything but DATA, --out, --steps, --val-every
# and --save-every; --batch is required). Both calibrate together for CAL seconds, so each rate is
# measured with the other beside it, then both train with --steps set to end about END seconds
# after the start (stopped like Ctrl-C, with a checkpoint and model.pt, if still running 20 s
# later). They write RUN-a and RUN-b. Each model comes back in two parts (a file coming back is
# limited to 16 MiB; `cat a.pt.part-* > a.pt`), the logs and metrics in one tar: 5 files.
# CAL must cover the start-up as well: on the lent H200 (2026-11-27) each loop started 40 s after
# launch, so CAL=40 logged nothing and trained nothing; CAL=60 gave 18 and 19 log lines.
set -u
source "$(dirname "$0")/lent_gpu_lib.sh"
T0=$(date +%s)
CAL=${CAL:-60}; END=${END:-500}; DATA=${DATA:?}; A=${A:?}; B=${B:?}; RUN=${RUN:?}
OUT=${OUT:?set OUT to the folder that comes back}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
LOGS=/tmp/logs; mkdir -p $LOGS; LOG=$LOGS/log.txt
el() { echo $(( $(date +%s) - T0 )); }
batch_of() { sed -n 's/.*--batch \([0-9]*\).*/\1/p' <<< "$1"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import sys,torch;print(sys.version.split()[0],torch.__version__)"; } >>$LOG 2>&1
declare -A ARGS=([a]="$A" [b]="$B") PID STEPS
for r in a b; do PID[$r]=$(calibration_start "python3 -m denoisecli train $DATA ${ARGS[$r]}" /tmp/calib-$r $LOGS/calib-$r.txt); done
sleep "$CAL"
for r in a b; do STEPS[$r]=$(calibration_steps ${PID[$r]} /tmp/calib-$r $END "$(batch_of "${ARGS[$r]}")" 2>>$LOG); done
for r in a b; do
  echo "run $r: ${STEPS[$r]} steps at $(el) s: ${ARGS[$r]}" >> $LOG
  [ "${STEPS[$r]}" -gt 0 ] || continue
  V=$(( STEPS[$r] / 4 ))
  timeout -s INT $(( T0 + END + 20 - $(date +%s) )) python3 -m denoisecli train $DATA ${ARGS[$r]} --out $RUN-$r \
    --steps ${STEPS[$r]} --val-every $V --save-every $V > $LOGS/train-$r.txt 2>&1 &
  PID[$r]=$!
done
for r in a b; do
  [ "${STEPS[$r]}" -gt 0 ] || continue
  wait ${PID[$r]}; echo "run $r rc $? at $(el) s" >> $LOG
  split -b 9000000 $RUN-$r/model.pt $OUT/$r.pt.part-
  cp $RUN-$r/metrics.jsonl $LOGS/$r-metrics.jsonl; cp $RUN-$r/config.json $LOGS/$r-config.json
  sha256sum $RUN-$r/model.pt >> $LOG
done
echo "done at $(el) s" >> $LOG
tar -C /tmp -cf $OUT/logs.tar logs
