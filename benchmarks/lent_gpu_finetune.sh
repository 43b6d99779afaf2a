#!/bin/bash
# Fine-tune a colour model inside ONE call of a lent GPU, with a cosine that ends in time.
#
# Run on the lent machine from the repo root (its python3 has torch; this repo is put on
# PYTHONPATH), with the training images copied into a folder that .git/info/exclude ignores and
# that the call carries (here gpudata/CBSD432: CBSD432 less its 12 largest files, to fit the 64 MiB
# transfer), e.g.:
#     INIT=weights/color.pt SEED=11 RUN=runs/color8 END=525 bash benchmarks/lent_gpu_finetune.sh
# (MIX=camera:0.4 or LR=2e-4 change the recipe; the defaults are phase 8's. The grey model:
#  CHANNELS=1 MIX= DOWNSCALE= INIT=weights/grey.pt DATA=gpudata/Train400, carrying gpudata/Train400.)
# Batch 64 at lr 3e-4 cost camera-noise quality that batch 16 at 1.5e-4 kept (weights/HISTORY.md,
# phases 12-13): BATCH=16 LR=1.5e-4 for the colour model. WIDTH=24 trains the faster network,
# started from INIT's strongest channels (weights/README.md, "A narrower network"). EMA=0.999
# saves an exponential moving average of the weights instead of the last step's (off by default, so
# the phases recorded in weights/README.md rerun as they ran; on the CPU it gained every figure
# that the raw last step lost: phase 43).
# It first runs the CUDA tests and `denoise bench --device cuda` in the background (CHECKS_ON=0
# skips them), trains for CAL seconds to measure steps per second, then trains the real run with
# --steps set so that it ends about END seconds after the start, and copies the model into $OUT
# in two parts (a file coming back is limited to 16 MiB): `cat model.pt.part-* > model.pt`.
# A call brings back at most 8 files: with the checks on, this script writes exactly 8 into $OUT,
# so anything added there must replace one. Run one copy per GPU: a second copy started beside it
# (a grey run, 2026-11-26) logged nothing in its calibration and never trained (both calibrated
# into /tmp/calib, and each one's kill matched the other's); for two runs side by side use
# lent_gpu_pair.sh, which calibrates them together.
# The measured rate is pessimistic while the checks run beside it (2026-11-26, H200: 43.5 steps/s
# measured, 61 reached), so the run ends early rather than late.
set -u
source "$(dirname "$0")/lent_gpu_lib.sh"
T0=$(date +%s)
DEV=${DEV:-cuda}; CAL=${CAL:-45}; END=${END:-525}; WORKERS=${WORKERS:-12}; SIZES=${SIZES:-256,512,1024}
RUN=${RUN:-runs/color8}; BATCH=${BATCH:-64}; PATCH=${PATCH:-128}; INIT=${INIT:-weights/color.pt}; SEED=${SEED:-11}
DATA=${DATA:-gpudata/CBSD432}; MIX=${MIX-camera:0.2}; DOWNSCALE=${DOWNSCALE-0.25}; CHANNELS=${CHANNELS:-3}; LR=${LR:-3e-4}; WIDTH=${WIDTH:-32}; EMA=${EMA:-0}
OUT=${OUT:?set OUT to the folder that comes back}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
LOG=$OUT/log.txt
el() { echo $(( $(date +%s) - T0 )); }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import sys,torch,typer,PIL,numpy;print(sys.version.split()[0],torch.__version__,typer.__version__,PIL.__version__,numpy.__version__)"; } >>$LOG 2>&1
CHECKS=
if [ "${CHECKS_ON:-1}" = 1 ]; then
  ( export OMP_NUM_THREADS=2
    timeout 200 python3 -m pytest -m cuda tests -q -p no:cacheprovider; echo "pytest rc $? at $(el) s"
    timeout 150 python3 -m denoisecli bench --device $DEV --sizes $SIZES --json $OUT/bench-cuda.json; echo "bench rc $? at $(el) s"
    # a folder run: the noise estimate runs in read-ahead threads; how close does it get to --sigma?
    mkdir -p /tmp/fold-clean; ls $DATA | head -48 | while read -r f; do cp "$DATA/$f" /tmp/fold-clean/; done
    python3 -m denoisecli add-noise /tmp/fold-clean /tmp/fold --sigma 25 > /dev/null 2>&1
    for how in "" "--sigma 25"; do
      s=$(date +%s.%N); timeout 60 python3 -m denoisecli run /tmp/fold -o /tmp/fold-out --overwrite --device $DEV $how > /dev/null 2>&1
      echo "run 48 files ${how:-(estimate)}: rc $? $(python3 -c "print(round($(date +%s.%N) - $s, 2))") s"
    done
  ) > $OUT/cuda-checks.txt 2>&1 &
  CHECKS=$!
fi
TRAIN="python3 -m denoisecli train $DATA --channels $CHANNELS --init $INIT --width $WIDTH --noise-map --sigma 0-75 ${MIX:+--mix $MIX} ${DOWNSCALE:+--downscale $DOWNSCALE} --lr $LR --ema $EMA --batch $BATCH --patch $PATCH --workers $WORKERS --seed $SEED --device $DEV"
STEPS=$(calibrated_steps $END /tmp/calib.log 2>>$LOG)
echo "steps $STEPS at $(el) s" >> $LOG
if [ "$STEPS" -gt 0 ]; then
  VAL=$(( STEPS / 4 ))
  timeout -s INT $(( T0 + END + 20 - $(date +%s) )) $TRAIN --out $RUN --steps $STEPS --val-every $VAL --save-every $VAL > $OUT/train.txt 2>&1
  echo "train rc $? at $(el) s" >> $LOG
  cp $RUN/metrics.jsonl $RUN/config.json $OUT/
  split -b 9000000 $RUN/model.pt $OUT/model.pt.part-
  sha256sum $RUN/model.pt >> $LOG
fi
[ -n "$CHECKS" ] && wait $CHECKS
echo "done at $(el) s" >> $LOG
