#!/usr/bin/env bash
# Spawn-mode launcher benchmark (`ftrun --nproc-per-node`, `--nnodes`) on the tiny LoRA config
# (configs/tiny/lora.yaml, gloo on loopback), printing markdown tables:
#  (a) wall time of the same job (global batch 8, STEPS steps) as 1 process without an agent,
#      1 agent x 1 rank, 1 agent x 2 ranks, and 2 agents x 2 ranks (`--nnodes 2` on 127.0.0.1):
#      the difference is spawn + rendezvous + process-group setup; "to step 1" is the time
#      until the first logged step appears in metrics.jsonl (polled every 20 ms);
#  (b) failure detection: 2 agents x 2 ranks, SIGKILL rank 3 (node 1) after step 3; seconds
#      from the kill until both agents have exited (median, min, max over REPEAT runs);
#  (c) restart: 2 agents x 2 ranks with --max-restarts 1, rank 3 SIGKILLed after step
#      KILL_STEP (checkpoints every SAVE steps), against the same command uninterrupted; the
#      extra seconds are the difference of the medians; the final losses must match.
# The agents run with their default --heartbeat-timeout (30 s) and --grace-period (5 s).
# Usage: bench/launcher_bench.sh [FTRUN (default build/ftrun)]   (from anywhere)
# Environment: REPEAT (default 3), STEPS (24), SAVE (4), KILL_STEP (10).
# Not part of ctest. Every process started here has its temp dir on the command line; the
# EXIT trap kills whatever is left of them.
set -euo pipefail
cd "$(dirname "$0")/.."
FTRUN=$(realpath "${1:-build/ftrun}")
[ -x "$FTRUN" ] || { echo "no ftrun binary at $FTRUN (build it: ninja -C build ftrun)" >&2; exit 2; }
REPEAT=${REPEAT:-3}
STEPS=${STEPS:-24}
SAVE=${SAVE:-4}
KILL_STEP=${KILL_STEP:-10}
T=$(mktemp -d /tmp/ftrun_bench_launch.XXXXXX)
cleanup() {
  pkill -9 -f "$T" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "FAIL: $*" >&2; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])'; }
cfg=configs/tiny/lora.yaml
common=(--set training_args.logging_steps=1 --set training_args.save_steps=$SAVE
        --set comm_backend=gloo --set data_config.num_proc=1)
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a - b}'; }
losses() { local n; n=$(grep -c '"loss"' "$1" 2>/dev/null) || true; echo "${n:-0}"; }
# same_final A B: the last logged step is the same and its loss equal to 1e-5 relative.
same_final() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(f) if '"loss"' in l][-1] for f in sys.argv[1:3])
sys.exit(0 if a["step"] == b["step"] and abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]) else 1)
PY
}

# Starts one setup in the background with PIDS set to its agent (or plain process) pids and
# OUTDIR to its output dir; the logs are $T/NAME-N.log.
start_setup() {  # start_setup SETUP NAME STEPS [extra args]
  local setup=$1 name=$2 steps=$3
  shift 3
  local args=("${common[@]}" --set training_args.max_steps="$steps" --set training_args.output_dir="$T/$name" "$@")
  OUTDIR=$T/$name
  PIDS=()
  case $setup in
    plain)
      "$FTRUN" $cfg "${args[@]}" --set training_args.per_device_train_batch_size=8 > "$T/$name-0.log" 2>&1 &
      PIDS=($!) ;;
    1x1 | 1x2)
      local n=${setup#1x}
      "$FTRUN" --nproc-per-node "$n" --master-port "$(port)" $cfg "${args[@]}" \
        --set training_args.per_device_train_batch_size=$((8 / n)) > "$T/$name-0.log" 2>&1 &
      PIDS=($!) ;;
    2x2)
      local p
      p=$(port)
      for node in 0 1; do
        "$FTRUN" --nnodes 2 --node-rank $node --master-addr 127.0.0.1 --master-port "$p" --nproc-per-node 2 \
          $cfg "${args[@]}" --set training_args.per_device_train_batch_size=2 > "$T/$name-$node.log" 2>&1 &
        PIDS+=($!)
      done ;;
  esac
}
# Waits until every pid of PIDS has exited (polled every 20 ms, limit 300 s): END is the time
# the last one was seen gone, FIRST the seconds from T0 to the first logged step (or nan),
# RCS their exit codes.
wait_all() {
  local pid i alive
  FIRST=nan
  for ((i = 0; i < 15000; i++)); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$FIRST" = nan ] && [ -s "$OUTDIR/metrics.jsonl" ] && FIRST=$(sub "$EPOCHREALTIME" "$T0")
    [ $alive = 0 ] && break
    sleep 0.02
  done
  END=$EPOCHREALTIME
  [ $alive = 0 ] || { pkill -9 -f "$T" || true; fail "${PIDS[*]} ran longer than 300 s"; }
  RCS=()
  for pid in "${PIDS[@]}"; do set +e; wait "$pid"; RCS+=($?); set -e; done
}
# Rank 3's pid in attempt 0, once the run has logged at least STEP steps.
victim_after() {  # victim_after NAME STEP
  local name=$1 step=$2 i v=""
  for ((i = 0; i < 6000; i++)); do
    v=$(sed -n 's/.*started rank 2 (pid [0-9]*), rank 3 (pid \([0-9]*\)), attempt 0.*/\1/p' "$T/$name-1.log")
    [ -n "$v" ] && [ "$(losses "$T/$name/metrics.jsonl")" -ge "$step" ] && { echo "$v"; return; }
    sleep 0.02
  done
  cat "$T/$name-0.log" "$T/$name-1.log" >&2
  fail "$name: rank 3 never reached step $step"
}

echo "ftrun: $FTRUN; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M UTC')"
echo "REPEAT=$REPEAT STEPS=$STEPS SAVE=$SAVE KILL_STEP=$KILL_STEP"
echo

# --- (a) spawn + rendezvous overhead ---
echo "| setup | processes | batch per rank | steps | wall s (median of $REPEAT) | range | to step 1 s | wall - 1 process s |"
echo "|---|---|---:|---:|---:|---|---:|---:|"
declare -A WALL
for setup in plain 1x1 1x2 2x2; do
  walls=() firsts=()
  for ((r = 0; r < REPEAT; r++)); do
    name=a-$setup-$r
    T0=$EPOCHREALTIME
    start_setup $setup $name "$STEPS"
    wait_all
    walls+=("$(sub "$END" "$T0")")
    firsts+=("$FIRST")
    for rc in "${RCS[@]}"; do [ "$rc" = 0 ] || { cat "$T/$name"-*.log; fail "$setup: exit $rc"; }; done
    [ "$(losses "$OUTDIR/metrics.jsonl")" = "$STEPS" ] || fail "$setup: not $STEPS logged steps"
  done
  WALL[$setup]=$(median "${walls[@]}")
  case $setup in
    plain) desc="ftrun CONFIG (no agent)"; procs=1; b=8 ;;
    1x1) desc="--nproc-per-node 1"; procs="1 agent + 1"; b=8 ;;
    1x2) desc="--nproc-per-node 2"; procs="1 agent + 2"; b=4 ;;
    2x2) desc="--nnodes 2 x --nproc-per-node 2"; procs="2 agents + 4"; b=2 ;;
  esac
  echo "| $desc | $procs | $b | $STEPS | ${WALL[$setup]} | $(minmax "${walls[@]}") | $(median "${firsts[@]}") | $(sub "${WALL[$setup]}" "${WALL[plain]}") |"
done
echo

# --- (b) failure detection ---
detect=() rcs_seen=()
for ((r = 0; r < REPEAT; r++)); do
  name=b-$r
  start_setup 2x2 $name 100000
  v=$(victim_after $name 3)
  kill -9 "$v"
  tk=$EPOCHREALTIME
  wait_all
  detect+=("$(sub "$END" "$tk")")
  rcs_seen+=("${RCS[*]}")
  for n in 0 1; do
    tail -n 1 "$T/$name-$n.log" | grep -q "job failed: rank 3 (node 1, pid $v) killed by signal 9" \
      || { tail -n 5 "$T/$name-$n.log"; fail "(b) node $n's last line does not name rank 3"; }
  done
  sleep 0.5
  ! pgrep -f "$T/$name" > /dev/null || fail "(b) processes left after the kill"
done
echo "| failure | runs | kill -> both agents exited, s (median) | range | agents' exit codes |"
echo "|---|---:|---:|---|---|"
echo "| SIGKILL rank 3 of 2 agents x 2 ranks after step 3 | $REPEAT | $(median "${detect[@]}") | $(minmax "${detect[@]}") | $(printf '%s\n' "${rcs_seen[@]}" | sort -u | paste -sd ';') |"
echo

# --- (c) restart cost ---
plain_walls=() restart_walls=() same=yes
for ((r = 0; r < REPEAT; r++)); do
  name=c-plain-$r
  T0=$EPOCHREALTIME
  start_setup 2x2 $name "$STEPS" --max-restarts 1
  wait_all
  plain_walls+=("$(sub "$END" "$T0")")
  [ "${RCS[*]}" = "0 0" ] || fail "(c) uninterrupted: exit ${RCS[*]}"
  ref=$T/$name/metrics.jsonl

  name=c-kill-$r
  T0=$EPOCHREALTIME
  start_setup 2x2 $name "$STEPS" --max-restarts 1
  v=$(victim_after $name "$KILL_STEP")
  kill -9 "$v"
  wait_all
  restart_walls+=("$(sub "$END" "$T0")")
  [ "${RCS[*]}" = "0 0" ] || { cat "$T/$name"-*.log; fail "(c) restarted: exit ${RCS[*]}"; }
  grep -q "restarting every worker (restart 1 of 1) after: rank 3" "$T/$name-0.log" || fail "(c) no restart reported"
  same_final "$ref" "$T/$name/metrics.jsonl" || { same=no; echo "(c) run $r: final losses differ" >&2; }
done
mp=$(median "${plain_walls[@]}")
mr=$(median "${restart_walls[@]}")
echo "| 2 agents x 2 ranks, $STEPS steps, --max-restarts 1 | runs | wall s (median) | range | extra s | final loss equal |"
echo "|---|---:|---:|---|---:|---|"
echo "| uninterrupted | $REPEAT | $mp | $(minmax "${plain_walls[@]}") | | |"
echo "| rank 3 SIGKILLed after step $KILL_STEP (checkpoints every $SAVE) | $REPEAT | $mr | $(minmax "${restart_walls[@]}") | $(sub "$mr" "$mp") | $same |"
