# Sourced by the lent-GPU scripts: how many steps of $TRAIN end a run in time.
#
# calibrated_steps END LOGFILE: trains $TRAIN for $CAL seconds into /tmp/calib (its output to
# LOGFILE), then prints the step count (a multiple of 100) that ends a run started now about END
# seconds after $T0, at the rate the calibration logged; 0 if it logged too little. Uses $TRAIN,
# $CAL, $T0 and $BATCH; says what it measured on stderr.
calibrated_steps() {
  rm -rf /tmp/calib
  $(command -v setsid) $TRAIN --out /tmp/calib --steps 100000 --val-every 100000 --save-every 100000 > "$2" 2>&1 &
  local cp=$!
  sleep "$CAL"
  kill -9 -- -$cp 2>/dev/null; pkill -9 -f -- "--out /tmp/calib"; wait $cp 2>/dev/null
  python3 "$(dirname "${BASH_SOURCE[0]}")/calibrated_steps.py" /tmp/calib/metrics.jsonl "$T0" "$1" "$CAL" "$BATCH"
}
