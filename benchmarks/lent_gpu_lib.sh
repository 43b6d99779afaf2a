# Sourced by the lent-GPU scripts: how many steps of a training command end a run in time.
#
# calibrated_steps END LOGFILE: trains $TRAIN for $CAL seconds into /tmp/calib (its output to
# LOGFILE), then prints the step count (a multiple of 100) that ends a run started now about END
# seconds after $T0, at the rate the calibration logged; 0 if it logged too little. Uses $TRAIN,
# $CAL, $T0 and $BATCH; says what it measured on stderr.
#
# For runs side by side, calibrate them side by side (each rate is then the shared machine's):
# calibration_start "CMD" DIR LOGFILE starts CMD's calibration into DIR and prints its pid;
# calibration_steps PID DIR END BATCH stops it and prints its step count as above.
calibration_start() {
  rm -rf "$2"
  $(command -v setsid) $1 --out "$2" --steps 100000 --val-every 100000 --save-every 100000 > "$3" 2>&1 &
  echo $!
}
calibration_steps() {
  kill -9 -- -"$1" 2>/dev/null; pkill -9 -f -- "--out $2 " ; wait "$1" 2>/dev/null
  python3 "$(dirname "${BASH_SOURCE[0]}")/calibrated_steps.py" "$2/metrics.jsonl" "$T0" "$3" "$CAL" "$4"
}
calibrated_steps() {
  local cp
  cp=$(calibration_start "$TRAIN" /tmp/calib "$2")
  sleep "$CAL"
  calibration_steps "$cp" /tmp/calib "$1" "$BATCH"
}
