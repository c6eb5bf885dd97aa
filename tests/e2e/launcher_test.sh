#!/usr/bin/env bash
# Spawn mode (`ftrun --nproc-per-node`, `--nnodes`): two "nodes" as two agents on loopback,
# 2 ranks each, on the tiny LoRA config; per-device batch 2 x 4 ranks = the 1-rank batch of 8.
#  1. one agent, 2 ranks; then 2 agents x 2 ranks: the losses equal the 1-process run's;
#     worker output carries rank prefixes.
#  2. SIGKILL one worker of node 1 at a random step: every process of both nodes is gone
#     within 30 s, both agents exit non-zero, and their last line names the dead rank.
#  3. the same kill with --max-restarts 1: the job completes with the uninterrupted final loss.
#  4. bad input: node rank out of range, --nnodes / config mismatch across nodes, nobody at
#     the master address, master port in use: a clear error on every node, within the timeout.
# Usage: launcher_test.sh FTRUN [NODE1_PREFIX...] — with a prefix (e.g. `ip netns exec ns`)
# node 1 runs inside it and MASTER names node 0's address there (netns_test.sh does this).
set -euo pipefail
FTRUN=$(realpath "$1")
shift
NODE1=("$@")
MASTER=${MASTER:-127.0.0.1}
T=$(mktemp -d /tmp/ftrun_e2e_launch.XXXXXX)
cleanup() {
  pkill -9 -f "$T" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# A port nobody uses: the agents' rendezvous port for one test run.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])'; }
cfg=configs/tiny/lora.yaml
common=(--set training_args.max_steps=12 --set training_args.logging_steps=1 --set training_args.save_steps=3
        --set comm_backend=gloo --set data_config.num_proc=1)
# Every process of this test has $T on its command line: how cleanup and the checks find them.
marker=(--set training_args.output_dir="$T/rdzv")
fast=(--heartbeat-timeout 10 --grace-period 2 --rdzv-timeout 60)

compare() {  # compare A B STEPS: logged losses equal to 1e-5 relative (all steps, or only the last)
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r}
b = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[2])) if "loss" in r}
steps = sorted(a) if sys.argv[3] == "all" else [max(a)]
assert max(b) == max(a), ("last step", max(a), max(b))
for s in steps:
    assert abs(a[s] - b[s]) <= 1e-5 * abs(a[s]), (s, a[s], b[s])
print("losses match at", len(steps), "step(s)")
PY
}

"$FTRUN" $cfg "${common[@]}" --set training_args.output_dir="$T/one" > "$T/one.log" 2>&1 \
  || { cat "$T/one.log"; fail "1-process run"; }

# --- 1a. one node, two ranks ---
timeout 120 "$FTRUN" --nproc-per-node 2 "${fast[@]}" $cfg "${common[@]}" \
  --set training_args.per_device_train_batch_size=4 --set training_args.output_dir="$T/local" > "$T/local.log" 2>&1 \
  || { cat "$T/local.log"; fail "one agent, 2 ranks"; }
grep -q "^\[rank 0\] .*2 rank(s)" "$T/local.log" || { cat "$T/local.log"; fail "no rank-prefixed output"; }
compare "$T/one/metrics.jsonl" "$T/local/metrics.jsonl" all || fail "2 local ranks: losses differ"

# On a terminal (script(1) gives one) only the agent draws a progress bar, from rank 0's
# progress messages: the workers' output is not a TTY, so no rank draws its own.
if command -v script > /dev/null; then
  script -qfec "timeout 120 $FTRUN --nproc-per-node 2 $cfg ${common[*]} --set training_args.logging_steps=100 \
    --set training_args.per_device_train_batch_size=4 --set training_args.output_dir=$T/tty" "$T/tty.out" > /dev/null 2>&1 \
    || { cat "$T/tty.out"; fail "run on a terminal"; }
  grep -q "\[##############################\] 12/12" "$T/tty.out" || { cat -v "$T/tty.out"; fail "no progress bar on the terminal"; }
  ! grep -q "\[rank [0-9]\] .*\[#" "$T/tty.out" || { cat -v "$T/tty.out"; fail "a worker drew its own progress bar"; }
fi

# Starts node 0 and node 1 in the background; extra args go to both.
start_nodes() {  # start_nodes NAME PORT ARGS...
  local name=$1 p=$2
  shift 2
  "$FTRUN" --nnodes 2 --node-rank 0 --master-addr "$MASTER" --master-port "$p" --nproc-per-node 2 "${fast[@]}" \
    $cfg "${common[@]}" --set training_args.per_device_train_batch_size=2 \
    --set training_args.output_dir="$T/$name" "$@" > "$T/$name-0.log" 2>&1 &
  PID0=$!
  "${NODE1[@]}" "$FTRUN" --nnodes 2 --node-rank 1 --master-addr "$MASTER" --master-port "$p" --nproc-per-node 2 \
    "${fast[@]}" $cfg "${common[@]}" --set training_args.per_device_train_batch_size=2 \
    --set training_args.output_dir="$T/$name" "$@" > "$T/$name-1.log" 2>&1 &
  PID1=$!
}
wait_rc() {  # wait_rc PID SECONDS: sets RC to the exit code, or to "timeout" if it runs longer
  local pid=$1 limit=$2 i
  RC=timeout
  for ((i = 0; i < limit * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      set +e; wait "$pid"; RC=$?; set -e
      return
    fi
    sleep 0.1
  done
}

# --- 1b. two nodes x two ranks ---
start_nodes multi "$(port)"
wait_rc $PID0 180; rc0=$RC; wait_rc $PID1 30; rc1=$RC
[ "$rc0" = 0 ] && [ "$rc1" = 0 ] || { cat "$T/multi-0.log" "$T/multi-1.log"; fail "2 nodes x 2 ranks: exit $rc0/$rc1"; }
grep -q "4 rank(s)" "$T/multi-0.log" || { cat "$T/multi-0.log"; fail "not 4 ranks"; }
grep -q "^\[rank 3\]" "$T/multi-1.log" || grep -q "^\[rank 2\]" "$T/multi-1.log" || true
compare "$T/one/metrics.jsonl" "$T/multi/metrics.jsonl" all || fail "2 nodes x 2 ranks: losses differ from 1 rank"

# --- 2 and 3. SIGKILL a worker of node 1 at a random step ---
kill_run() {  # kill_run NAME [extra args]: starts both nodes, SIGKILLs rank 3 at a random step
  local name=$1
  shift
  local step=$((RANDOM % 6 + 2))
  start_nodes "$name" "$(port)" "$@"
  local i victim=""
  for ((i = 0; i < 1200; i++)); do
    # The background job may not have opened its log yet (seen under load): under set -e a
    # failing sed in this assignment would end the whole test.
    victim=$(sed -n 's/.*started rank 2 (pid [0-9]*), rank 3 (pid \([0-9]*\)), attempt 0.*/\1/p' "$T/$name-1.log" 2>/dev/null || true)
    done_steps=$( (grep -c '"loss"' "$T/$name/metrics.jsonl" 2>/dev/null) || true)
    [ -n "$victim" ] && [ "${done_steps:-0}" -ge "$step" ] && break
    sleep 0.1
  done
  [ -n "$victim" ] || { cat "$T/$name-0.log" "$T/$name-1.log"; fail "$name: never saw rank 3 start"; }
  kill -9 "$victim"
  KILLED_AT=$(date +%s)
  echo "killed rank 3 (pid $victim) after step ${done_steps:-0}"
}

kill_run killed
wait_rc $PID0 30; rc0=$RC; wait_rc $PID1 30; rc1=$RC
[ "$rc0" != timeout ] && [ "$rc1" != timeout ] || { cat "$T/killed-0.log" "$T/killed-1.log"; fail "an agent outlived the kill by 30 s"; }
[ "$rc0" != 0 ] && [ "$rc1" != 0 ] || fail "after a SIGKILLed rank the agents exited $rc0/$rc1 (expected non-zero)"
sleep 1
! pgrep -f "$T/killed" > /dev/null || { pgrep -af "$T/killed"; fail "processes left after the kill"; }
[ $(( $(date +%s) - KILLED_AT )) -le 30 ] || fail "took longer than 30 s to stop"
for n in 0 1; do
  tail -n 1 "$T/killed-$n.log" | grep -q "job failed: rank 3 (node 1, pid [0-9]*) killed by signal 9" \
    || { tail -n 5 "$T/killed-$n.log"; fail "node $n's last line does not name the dead rank 3"; }
done

# A whole node lost: SIGKILL node 1's agent (its workers die with it, PR_SET_PDEATHSIG). Node 0
# notices the silence within --heartbeat-timeout (10 s), stops its ranks and names node 1.
start_nodes lost "$(port)"
for ((i = 0; i < 1200; i++)); do
  grep -q "started rank 2" "$T/lost-1.log" 2>/dev/null && [ "$(cat "$T/lost/metrics.jsonl" 2>/dev/null | grep -c '"loss"')" -ge 2 ] && break
  sleep 0.1
done
kill -9 $PID1
wait_rc $PID0 40
[ "$RC" = 1 ] || { cat "$T/lost-0.log"; fail "lost node: node 0 exited $RC"; }
tail -n 1 "$T/lost-0.log" | grep -q "job failed: lost contact with the agent of node 1 (.*) for 10 s" \
  || { tail -n 5 "$T/lost-0.log"; fail "lost node 1 not named"; }
sleep 1
! pgrep -f "$T/lost" > /dev/null || { pgrep -af "$T/lost"; fail "processes left after losing node 1"; }

# Stuck ranks on both nodes (--progress-timeout; test hook: rank 3 sleeps after step 2, the
# others wait for it): both nodes stop, and the last line names all four ranks, whichever
# node's agent noticed first.
export FTRUN_TEST_STALL_AFTER_STEP=2
start_nodes stall "$(port)" --progress-timeout 3
unset FTRUN_TEST_STALL_AFTER_STEP
wait_rc $PID0 60; rc0=$RC; wait_rc $PID1 30; rc1=$RC
[ "$rc0" = 1 ] && [ "$rc1" = 1 ] || { cat "$T/stall-0.log" "$T/stall-1.log"; fail "stuck ranks on 2 nodes: exit $rc0/$rc1"; }
for n in 0 1; do
  last=$(tail -n 1 "$T/stall-$n.log")
  for r in 0 1 2 3; do
    echo "$last" | grep -q "job failed: no training step finished for 3 s on node .*rank $r (pid [0-9]*, after step 2)" \
      || { echo "$last"; fail "node $n's last line does not name stuck rank $r"; }
  done
done
! pgrep -f "$T/stall" > /dev/null || { pgrep -af "$T/stall"; fail "processes left after the stuck ranks"; }

kill_run restarted --max-restarts 1
wait_rc $PID0 240; rc0=$RC; wait_rc $PID1 30; rc1=$RC
[ "$rc0" = 0 ] && [ "$rc1" = 0 ] || { cat "$T/restarted-0.log" "$T/restarted-1.log"; fail "--max-restarts 1: exit $rc0/$rc1"; }
grep -q "restarting every worker (restart 1 of 1) after: rank 3" "$T/restarted-0.log" \
  || { cat "$T/restarted-0.log"; fail "no restart reported"; }
compare "$T/one/metrics.jsonl" "$T/restarted/metrics.jsonl" last || fail "restarted run's final loss differs"

# --- hang and signals (one node; skipped in the netns run, where they would add nothing) ---
if [ ${#NODE1[@]} -eq 0 ]; then
  # A stopped rank stops heartbeating: the agent kills it and ends the job, naming it.
  "$FTRUN" --nproc-per-node 2 --heartbeat-timeout 3 --grace-period 1 $cfg "${common[@]}" \
    --set training_args.max_steps=100000 --set training_args.output_dir="$T/hang" > "$T/hang.log" 2>&1 &
  PID0=$!
  for ((i = 0; i < 300; i++)); do
    victim=$(sed -n 's/.*started rank 0 (pid [0-9]*), rank 1 (pid \([0-9]*\)).*/\1/p' "$T/hang.log" 2>/dev/null || true)
    [ -n "$victim" ] && grep -q '"loss"' "$T/hang/metrics.jsonl" 2>/dev/null && break
    sleep 0.1
  done
  kill -STOP "$victim"
  wait_rc $PID0 30
  [ "$RC" = 1 ] || { cat "$T/hang.log"; fail "hung rank: exit $RC"; }
  tail -n 1 "$T/hang.log" | grep -q "rank 1 (node 0, pid $victim) sent no heartbeat for 3 s" \
    || { tail -n 5 "$T/hang.log"; fail "hung rank not named"; }
  ! pgrep -f "$T/hang" > /dev/null || fail "processes left after the hang"

  # A rank that is alive (heartbeats go on) but stuck: with --progress-timeout the agent stops
  # the job once no step has finished for that long (test hook: the last rank sleeps after
  # step 2 and rank 0 waits for it in a collective). Without the flag the job would wait for
  # the collective timeout (600 s).
  start=$(date +%s)
  set +e
  FTRUN_TEST_STALL_AFTER_STEP=2 timeout 60 "$FTRUN" --nproc-per-node 2 --heartbeat-timeout 10 --grace-period 1 \
    --progress-timeout 3 $cfg "${common[@]}" --set training_args.output_dir="$T/stall" > "$T/stall.log" 2>&1
  RC=$?
  set -e
  [ "$RC" = 1 ] || { cat "$T/stall.log"; fail "stuck ranks: exit $RC"; }
  [ $(( $(date +%s) - start )) -le 30 ] || fail "stuck ranks: took longer than 30 s"
  tail -n 1 "$T/stall.log" | grep -q "job failed: no training step finished for 3 s on node 0: rank 0 (pid [0-9]*, after step 2), rank 1 (pid [0-9]*, after step 2)" \
    || { tail -n 5 "$T/stall.log"; fail "stuck ranks not named"; }
  ! pgrep -f "$T/stall" > /dev/null || fail "processes left after the stuck ranks"

  # A rank's own error (here: a missing data file) is the job's last line, naming the rank.
  set +e
  timeout 60 "$FTRUN" --nproc-per-node 2 $cfg "${common[@]}" --set data_config.train_file=missing.jsonl \
    --set training_args.output_dir="$T/err" > "$T/err.log" 2>&1
  RC=$?
  set -e
  [ "$RC" = 1 ] || { cat "$T/err.log"; fail "failing ranks: exit $RC"; }
  tail -n 1 "$T/err.log" | grep -q "job failed: rank [01] (node 0, pid [0-9]*) failed: .*missing.jsonl" \
    || { tail -n 5 "$T/err.log"; fail "the rank's error is not the last line"; }

  # SIGTERM to the agent reaches the workers; the job ends with 128 + 15.
  "$FTRUN" --nproc-per-node 2 $cfg "${common[@]}" --set training_args.max_steps=100000 \
    --set training_args.output_dir="$T/term" > "$T/term.log" 2>&1 &
  PID0=$!
  for ((i = 0; i < 300; i++)); do grep -q '"loss"' "$T/term/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
  kill -TERM $PID0
  wait_rc $PID0 30
  [ "$RC" = 143 ] || { cat "$T/term.log"; fail "SIGTERM: exit $RC"; }
  tail -n 1 "$T/term.log" | grep -q "received SIGTERM and forwarded it to its workers" || { tail -n 3 "$T/term.log"; fail "SIGTERM not reported"; }
  ! pgrep -f "$T/term" > /dev/null || fail "workers left after SIGTERM"
fi

# --- 4. bad input ---
expect_err() {  # expect_err LOG PATTERN
  grep -q "$2" "$1" || { cat "$1"; fail "expected '$2' in $1"; }
}
set +e
"$FTRUN" --nnodes 2 --node-rank 2 --master-addr "$MASTER" --nproc-per-node 2 $cfg > "$T/bad.log" 2>&1
rc=$?
set -e
[ $rc = 2 ] || fail "--node-rank 2 with --nnodes 2 gave exit $rc"
expect_err "$T/bad.log" "node-rank 2 is out of range for --nnodes 2"

# rejected NAME PATTERN NODE1-NNODES [NODE 1'S EXTRA ARGS...]: two agents (1 rank each,
# rendezvous timeout 20 s) that the coordinator must turn away; both exit 1 within 40 s and
# print PATTERN. With HOLD=MS node 0's agent holds its own hello back that long (test hook), so
# node 1's hello is the first the coordinator sees; node 0 must still hear the verdict at once.
rejected() {
  local name=$1 pattern=$2 nn1=$3 start n
  shift 3
  local common_args=(--master-addr "$MASTER" --master-port "$(port)" --nproc-per-node 1 --rdzv-timeout 20 $cfg "${marker[@]}")
  start=$(date +%s)
  "${NODE1[@]}" "$FTRUN" --nnodes "$nn1" --node-rank 1 "${common_args[@]}" "$@" > "$T/$name-1.log" 2>&1 &
  PID1=$!
  env ${HOLD:+FTRUN_TEST_HOLD_HELLO_MS=$HOLD} "$FTRUN" --nnodes 2 --node-rank 0 "${common_args[@]}" > "$T/$name-0.log" 2>&1 &
  PID0=$!
  wait_rc $PID0 40; rc0=$RC; wait_rc $PID1 40; rc1=$RC
  [ "$rc0" = 1 ] && [ "$rc1" = 1 ] || fail "$name: exit $rc0/$rc1"
  if [ -n "${HOLD:-}" ] && [ $(( $(date +%s) - start )) -gt 12 ]; then
    cat "$T/$name-0.log"; fail "$name: node 0 waited for the rendezvous timeout"
  fi
  for n in 0 1; do expect_err "$T/$name-$n.log" "$pattern"; done
}
# Node counts differ: node 1 says 3; also with node 1's hello first.
rejected nn "node 1 (.*) was started with --nnodes 3 but node 0 with --nnodes 2" 3
HOLD=1500 rejected nl "node 1 (.*) was started with --nnodes 3 but node 0 with --nnodes 2" 3
# Configs differ: a different --set on node 1.
rejected cf "the config differs between node 0 (configs/tiny/lora.yaml, fingerprint [0-9a-f]*) and node 1" 2 \
  --set training_args.learning_rate=1e-4

# Nobody at the master address: node 1 alone gives up after its rendezvous timeout.
p=$(port)
start=$(date +%s)
set +e
"${NODE1[@]}" "$FTRUN" --nnodes 2 --node-rank 1 --master-addr "$MASTER" --master-port $p --nproc-per-node 1 --rdzv-timeout 3 $cfg > "$T/nm.log" 2>&1
rc=$?
set -e
[ $rc = 1 ] || fail "unreachable master: exit $rc"
[ $(( $(date +%s) - start )) -le 20 ] || fail "unreachable master: took too long"
expect_err "$T/nm.log" "no answer from the agent of node 0 at .*:$p within 3 s"
# ... and node 0 alone reports who is missing.
set +e
"$FTRUN" --nnodes 2 --node-rank 0 --master-addr "$MASTER" --master-port $p --nproc-per-node 1 --rdzv-timeout 3 $cfg > "$T/nm0.log" 2>&1
rc=$?
set -e
[ $rc = 1 ] || fail "missing node 1: exit $rc"
expect_err "$T/nm0.log" "rendezvous timed out after 3 s: node(s) 0 of 2 joined, missing node(s) 1"

# The master port is taken by another program.
p=$(port)
python3 -c "import socket,time,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', $p)); s.listen(); time.sleep(30)" &
HOLDER=$!
sleep 0.5
set +e
"$FTRUN" --nnodes 2 --node-rank 0 --master-addr "$MASTER" --master-port $p --nproc-per-node 1 --rdzv-timeout 3 $cfg > "$T/pu.log" 2>&1
rc=$?
"${NODE1[@]}" "$FTRUN" --nnodes 2 --node-rank 1 --master-addr "$MASTER" --master-port $p --nproc-per-node 1 --rdzv-timeout 3 $cfg > "$T/pu1.log" 2>&1
rc1=$?
set -e
kill $HOLDER 2>/dev/null || true
[ $rc = 1 ] || { cat "$T/pu.log"; fail "port in use: exit $rc"; }
expect_err "$T/pu.log" "cannot listen on port $p (--master-port).*Address already in use"
[ $rc1 = 1 ] || { cat "$T/pu1.log"; fail "port in use, node 1: exit $rc1"; }
expect_err "$T/pu1.log" "no answer from the agent of node 0"
echo "e2e launcher: passed"
