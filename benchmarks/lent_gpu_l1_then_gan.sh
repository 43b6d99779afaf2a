#!/bin/bash
# A long L1 run, then an adversarial fine-tune of its result, inside ONE call of a lent GPU.
#
# The recipe weights/HISTORY.md (phase 20) points to: longer L1 runs gain Gaussian PSNR and lose
# camera detail, and an adversarial fine-tune brings most of that detail back. Run on the lent
# machine from the repo root, carrying gpudata/CBSD432 (see lent_gpu_finetune.sh), e.g.:
#     INIT=weights/color.pt RUN=runs/color21 END1=420 END2=545 bash benchmarks/lent_gpu_l1_then_gan.sh
# The shipped phase 28's adversarial stage (camera patches only): add GAN_WEIGHT=2e-3 GAN_OPTS=--gan-skip-white.
# MIX is pasted after --mix, so other data options ride in it too, e.g.
#     MIX="camera:0.3 --mix gaussian:0.1 --mix gaussian-shared:0.1 --overset 0.25 --independent-channels 0.1"
# Stage 1 trains L1 at BATCH/LR for CAL seconds to measure its rate, then for as many steps as end
# it about END1 seconds after the start (a full cosine). Stage 2 (`--gan`, phase 20's recipe:
# batch 16, lr 5e-5, weight 1e-3 from step 0) starts from stage 1's model.pt with GAN_STEPS steps,
# stopped like Ctrl-C (checkpoint, model.pt) if it is still running END2 seconds after the start.
# EMA=0.999 makes both stages save an exponential moving average of their weights (off by default,
# so the phases recorded in weights/README.md rerun as they ran; on the CPU it gained every figure
# that the raw last step lost: phase 43). WIDTH=24 trains the faster network (39.4 k MACs/px against
# 69.4 k), stage 1 starting from INIT's strongest channels (weights/README.md, "A narrower network").
# Each stage's model comes back as soon as it ends, in two parts (a file coming back is limited
# to 16 MiB; `cat X.pt.part-* > X.pt`); logs, metrics and the CUDA tests' output come back in
# one tar, so a call brings back 5 files.
set -u
source "$(dirname "$0")/lent_gpu_lib.sh"
T0=$(date +%s)
DEV=${DEV:-cuda}; CAL=${CAL:-35}; END1=${END1:-420}; END2=${END2:-545}; WORKERS=${WORKERS:-14}
RUN=${RUN:-runs/color21}; BATCH=${BATCH:-64}; LR=${LR:-3e-4}; INIT=${INIT:-weights/color.pt}; SEED=${SEED:-22}
MIX=${MIX:-camera:0.3}; DATA=${DATA:-gpudata/CBSD432}; GAN_STEPS=${GAN_STEPS:-2000}; GAN_WEIGHT=${GAN_WEIGHT:-1e-3}; GAN_OPTS=${GAN_OPTS:-}; EMA=${EMA:-0}; WIDTH=${WIDTH:-32}
OUT=${OUT:?set OUT to the folder that comes back}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
LOGS=/tmp/logs; mkdir -p $LOGS; LOG=$LOGS/log.txt
el() { echo $(( $(date +%s) - T0 )); }
until_() { local s=$(( T0 + $1 - $(date +%s) )); echo $(( s > 5 ? s : 5 )); }  # seconds left until $1 after the start (timeout 0 would mean none)
pack() { tar -C /tmp -cf $OUT/logs.tar logs; }
bring() {  # bring RUN_DIR NAME: the model in two parts, its metrics and config into the logs
  split -b 9000000 $1/model.pt $OUT/$2.pt.part-
  cp $1/metrics.jsonl $LOGS/$2-metrics.jsonl; cp $1/config.json $LOGS/$2-config.json
  sha256sum $1/model.pt >> $LOG; pack
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import sys,torch,typer,PIL,numpy;print(sys.version.split()[0],torch.__version__,typer.__version__,PIL.__version__,numpy.__version__)"; } >>$LOG 2>&1
( OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -m cuda tests -q -p no:cacheprovider; echo "pytest rc $? at $(el) s" ) > $LOGS/cuda-tests.txt 2>&1 &
CHECKS=$!
COMMON="--ema $EMA --width $WIDTH --noise-map --sigma 0-75 --mix $MIX --downscale 0.25 --patch 128 --workers $WORKERS --device $DEV"
TRAIN="python3 -m denoisecli train $DATA --init $INIT $COMMON --lr $LR --batch $BATCH --seed $SEED"
STEPS=$(calibrated_steps $END1 $LOGS/calib.txt 2>>$LOG)
echo "stage 1: $STEPS steps at $(el) s" >> $LOG
[ "$STEPS" -gt 0 ] || { wait $CHECKS; pack; exit 1; }
VAL=$(( STEPS / 4 ))
timeout -s INT $(until_ $(( END1 + 20 ))) $TRAIN --out $RUN --steps $STEPS --val-every $VAL --save-every $VAL > $LOGS/train-l1.txt 2>&1
echo "stage 1 rc $? at $(el) s" >> $LOG
bring $RUN l1
timeout -s INT $(until_ $END2) python3 -m denoisecli train $DATA --init $RUN/model.pt $COMMON --lr 5e-5 --batch 16 \
  --seed $(( SEED + 1 )) --steps $GAN_STEPS --val-every $(( GAN_STEPS / 2 )) --save-every 500 --gan --gan-weight $GAN_WEIGHT --gan-warmup 0 $GAN_OPTS \
  --out $RUN-gan > $LOGS/train-gan.txt 2>&1
echo "stage 2 rc $? at $(el) s" >> $LOG
bring $RUN-gan gan
wait $CHECKS
echo "done at $(el) s" >> $LOG
pack
