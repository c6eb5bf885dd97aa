#!/usr/bin/env bash
# ftrun under a real Slurm: starts munged, slurmctld and two slurmd (Debian's slurm-wlm + munge;
# nodes node01 and node02, both on this machine at 127.0.0.1) in a temporary directory, then
# submits the example scripts with sbatch --wait for tiny-model runs:
#  - examples/slurm/srun_per_gpu.sbatch, 1 node x 2 tasks and 2 nodes x 2 tasks (each task one
#    rank, ranks read from SLURM_*);
#  - examples/slurm/agent_per_node.sbatch, 1 node and 2 nodes, each node one agent running
#    `ftrun --nproc-per-node 2`.
# The logged losses must equal a 1-process run on the same global batch (8) to 1e-5 relative,
# and the 2-node jobs must have run on both nodes. A rank that fails must fail the job quickly
# (srun --kill-on-bad-exit) with an error naming it.
# The node names do not resolve: both scripts must take the head node's NodeAddr from Slurm.
# Needs root (the daemons run as root). Exits 77 (skipped, with the reason and the daemons' logs)
# when Slurm cannot be brought up here; never passes without having run the jobs.
set -euo pipefail
FTRUN=$(realpath "$1")
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "the Slurm test starts slurmctld/slurmd/munged and needs root"
for b in munged slurmctld slurmd sbatch srun sinfo squeue scontrol scancel; do
  command -v "$b" > /dev/null || [ -x "/usr/sbin/$b" ] || skip "$b not installed (Debian: slurm-wlm, munge)"
done
sbin() { command -v "$1" 2> /dev/null || echo "/usr/sbin/$1"; }

# This test's Slurm only: nothing from an outer allocation or a site's sbatch defaults.
for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SRUN|SALLOC)_' || true); do unset "$v"; done
our_conf=

T=$(mktemp -d /tmp/ftrun_e2e_slurm.XXXXXX)
chmod 711 "$T"  # munged wants its socket's directories searchable by all
pids=()
cleanup() {
  set +e
  # Every job on this private cluster is this test's: cancel what still runs (after a timeout).
  if [ -n "$our_conf" ] && [ -n "$(SLURM_CONF=$our_conf squeue -h -o %i 2> /dev/null)" ]; then
    SLURM_CONF=$our_conf scancel --user=root; sleep 1
  fi
  # slurmd before slurmctld before munged; each was started here and is killed by its id.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2> /dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$p" 2> /dev/null
    wait "$p" 2> /dev/null
  done
  rm -rf "$T"
}
trap cleanup EXIT
trap "exit 143" TERM INT
show_logs() {
  # With -D the daemons log to stderr too (and there also what precedes opening the log file).
  for f in "$T"/munged.log "$T"/slurmctld.out "$T"/slurmd-node01.out "$T"/slurmd-node02.out; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }
  done
  return 0
}

# Free TCP ports for slurmctld, slurmd and the agents' rendezvous (the kernel's choice, so
# parallel runs differ).
read -r ctld_port slurmd_port slurmd_port2 agent_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
# Job ids start at a random number: ranks derive their rendezvous port from the job id
# (15000 + id % 10000), so concurrent runs of this test do not meet on one port.
first_job_id=$((1000 + RANDOM % 8000))
cpus=$(nproc); [ "$cpus" -ge 2 ] || cpus=2

# munge: a fresh key and a private daemon on a socket in $T (the system's munged is not used).
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge.key"
"$(sbin munged)" -F -f --key-file="$T/munge.key" --socket="$T/munge.sock" --pid-file="$T/munged.pid" \
  --log-file="$T/munged.log" --seed-file="$T/munged.seed" > "$T/munged.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$T/munge.sock" ] && break; sleep 0.1; done
[ -S "$T/munge.sock" ] || { show_logs; skip "munged did not start"; }

mkdir -p "$T/state" "$T/spool/node01" "$T/spool/node02"
: > "$T/plugstack.conf"  # no SPANK plugins from /etc/slurm
cat > "$T/slurm.conf" << EOF
ClusterName=ftrune2e
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge.sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool/%n
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd-%n.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd-%n.log
PlugStackConfig=$T/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
FirstJobId=$first_job_id
MailProg=/bin/true
NodeName=node01 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$slurmd_port CPUs=$cpus RealMemory=1000 State=UNKNOWN
NodeName=node02 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$slurmd_port2 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=node[01-02] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF="$T/slurm.conf"
our_conf=$SLURM_CONF
# -D: stay in the foreground (so the trap can kill them by id); logs go to the files above.
"$(sbin slurmctld)" -D -f "$SLURM_CONF" > "$T/slurmctld.out" 2>&1 &
pids+=($!)
# Two slurmd on one machine, each its own node (-N).
for n in node01 node02; do
  "$(sbin slurmd)" -D -N $n -f "$SLURM_CONF" > "$T/slurmd-$n.out" 2>&1 &
  pids+=($!)
done
idle=
for _ in $(seq 60); do
  for p in "${pids[@]}"; do kill -0 "$p" 2> /dev/null || { show_logs; skip "a Slurm daemon exited at start"; }; done
  state=$(sinfo -h -N -o %t 2> /dev/null | sort -u | paste -sd, || true)
  [ "$state" = idle ] && [ "$(sinfo -h -N -t idle -o %N 2> /dev/null | sort -u | paste -sd,)" = node01,node02 ] \
    && { idle=1; break; }
  sleep 0.5
done
[ -n "$idle" ] || { show_logs; skip "the Slurm nodes did not become idle within 30 s (states: '${state:-none}')"; }
echo "slurm up: ctld port $ctld_port, slurmd ports $slurmd_port and $slurmd_port2, $cpus cpus per node, first job id $first_job_id"

# sbatch --wait on an example script with ${NODES:-1} node(s) and no GPUs; returns the job's exit
# status.
submit() {  # NAME [SBATCH OPTIONS...] SCRIPT [SCRIPT ARGS...]
  local name=$1 rc=0
  shift
  timeout 200 sbatch --wait --nodes="${NODES:-1}" --gpus-per-node=0 --time=5 --output="$T/$name.out" "$@" \
    > "$T/$name.sbatch.log" 2>&1 || rc=$?
  [ "$rc" = 124 ] && { cat "$T/$name.sbatch.log" "$T/$name.out"; fail "$name: the job did not end within 200 s"; }
  echo "$name: $(cat "$T/$name.sbatch.log"), exit status $rc"
  return "$rc"
}
compare_losses() {  # METRICS_A METRICS_B WHAT
  python3 - "$1" "$2" << 'PY' || fail "$3: losses differ from the 1-process run"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
b = [json.loads(l)["loss"] for l in open(sys.argv[2]) if '"loss"' in l]
assert len(a) == len(b) == 4, (a, b)
for x, y in zip(a, b):
    assert abs(x - y) <= 1e-5 * abs(x), (a, b)
PY
}

common="--set training_args.max_steps=20 --set training_args.logging_steps=5 --set training_args.save_steps=20"
common+=" --set comm_backend=gloo --set collective_timeout=60"
# shellcheck disable=SC2086
"$FTRUN" configs/tiny/lora.yaml $common --set training_args.output_dir="$T/one" > "$T/one.log" 2>&1 \
  || { cat "$T/one.log"; fail "single-process run"; }
passed=0

# 1. srun_per_gpu.sbatch: 2 tasks on the node, each a rank (the config and output_dir given after
# the script, the other arguments in FTRUN_ARGS).
start=$SECONDS
FTRUN="$FTRUN" FTRUN_ARGS="$common --set training_args.per_device_train_batch_size=4" \
  submit srun --ntasks-per-node=2 --cpus-per-task=1 examples/slurm/srun_per_gpu.sbatch \
    configs/tiny/lora.yaml --set training_args.output_dir="$T/srun" \
  || { cat "$T/srun.out"; fail "srun_per_gpu.sbatch job failed"; }
grep -q "2 rank(s)" "$T/srun.out" || { cat "$T/srun.out"; fail "srun job: not 2 ranks"; }
compare_losses "$T/one/metrics.jsonl" "$T/srun/metrics.jsonl" "srun_per_gpu.sbatch"
[ -f "$T/srun/checkpoint-20/optimizer/rank-1.safetensors" ] || fail "srun job: rank 1 wrote no optimizer shard"
echo "srun_per_gpu.sbatch: 2 ranks, losses match ($((SECONDS - start)) s)"
passed=$((passed + 1))

# 2. A rank that fails. srun --kill-on-bad-exit (in the script) must end the job at once, not
# after collective_timeout (60 s), and the output must say which rank failed.
# a) rank 1's train file does not exist: it fails after the rendezvous and its error names it.
# b) rank 1's config is bad: it exits before the rendezvous, where rank 0 would wait for it
#    until the timeout if Slurm did not stop it; srun names the task.
bad_rank() {  # NAME RANK EXTRA-ARGS-OF-THAT-RANK (on ${NODES:-1} node(s) x 2 tasks)
  cat > "$T/$1.sh" << EOF
#!/bin/bash
if [ "\$SLURM_PROCID" = $2 ]; then exec "$FTRUN" "\$@" $3; fi
exec "$FTRUN" "\$@"
EOF
  chmod +x "$T/$1.sh"
  local start=$SECONDS
  if FTRUN="$T/$1.sh" FTRUN_CONFIG=configs/tiny/lora.yaml \
     FTRUN_ARGS="$common --set training_args.per_device_train_batch_size=4 --set training_args.output_dir=$T/$1" \
     submit "$1" --ntasks-per-node=2 --cpus-per-task=1 examples/slurm/srun_per_gpu.sbatch; then
    cat "$T/$1.out"; fail "$1: a job with a failing rank exited 0"
  fi
  took=$((SECONDS - start))
  [ "$took" -lt 45 ] || { cat "$T/$1.out"; fail "$1: the failing job took $took s (ranks left waiting?)"; }
}
bad_rank bad_data 1 "--set data_config.train_file=missing.jsonl"
grep -q "ftrun: rank 1: error: .*missing.jsonl" "$T/bad_data.out" || { cat "$T/bad_data.out"; fail "the error does not name rank 1"; }
echo "rank 1 fails after the rendezvous: job failed in $took s, error names rank 1"
passed=$((passed + 1))
bad_rank bad_config 1 "--set training_args.max_steps=oops"
grep -q "ftrun: .*error: .*max_steps" "$T/bad_config.out" || { cat "$T/bad_config.out"; fail "no config error"; }
grep -q "srun: error: .*task 1: Exited with exit code" "$T/bad_config.out" || { cat "$T/bad_config.out"; fail "srun does not name task 1"; }
echo "rank 1 fails before the rendezvous: job failed in $took s, srun names task 1"
passed=$((passed + 1))

# 3. agent_per_node.sbatch: one task on the node, running `ftrun --nproc-per-node 2`.
start=$SECONDS
FTRUN="$FTRUN" FTRUN_CONFIG=configs/tiny/lora.yaml FTRUN_NPROC_PER_NODE=2 \
FTRUN_MASTER_PORT=$agent_port \
FTRUN_ARGS="$common --set training_args.per_device_train_batch_size=4 --set training_args.output_dir=$T/agent" \
  submit agent --ntasks-per-node=1 --cpus-per-task="$cpus" examples/slurm/agent_per_node.sbatch \
  || { cat "$T/agent.out"; fail "agent_per_node.sbatch job failed"; }
grep -q "ftrun agent: node 0: started rank 0 .*rank 1" "$T/agent.out" || { cat "$T/agent.out"; fail "agent job: no agent"; }
grep -q "2 rank(s)" "$T/agent.out" || { cat "$T/agent.out"; fail "agent job: not 2 ranks"; }
compare_losses "$T/one/metrics.jsonl" "$T/agent/metrics.jsonl" "agent_per_node.sbatch"
echo "agent_per_node.sbatch: 1 agent x 2 ranks, losses match ($((SECONDS - start)) s)"
passed=$((passed + 1))

# 4 and 5. Both scripts on 2 nodes x 2 ranks (global batch 4 x 2 = 8). A wrapper records which
# Slurm node each task ran on.
cat > "$T/where.sh" << EOF
#!/bin/bash
echo "task \$SLURM_PROCID on \$SLURMD_NODENAME (node id \$SLURM_NODEID)" >&2
exec "$FTRUN" "\$@"
EOF
chmod +x "$T/where.sh"
on_both_nodes() {  # NAME
  grep -q "on node01 (node id 0)" "$T/$1.out" && grep -q "on node02 (node id 1)" "$T/$1.out" \
    || { cat "$T/$1.out"; fail "$1: the job did not run on both nodes"; }
}
start=$SECONDS
FTRUN="$T/where.sh" FTRUN_ARGS="$common --set training_args.per_device_train_batch_size=2" NODES=2 \
  submit srun2 --ntasks-per-node=2 --cpus-per-task=1 examples/slurm/srun_per_gpu.sbatch \
    configs/tiny/lora.yaml --set training_args.output_dir="$T/srun2" \
  || { cat "$T/srun2.out"; fail "srun_per_gpu.sbatch on 2 nodes failed"; }
grep -q "4 rank(s)" "$T/srun2.out" || { cat "$T/srun2.out"; fail "srun job on 2 nodes: not 4 ranks"; }
on_both_nodes srun2
compare_losses "$T/one/metrics.jsonl" "$T/srun2/metrics.jsonl" "srun_per_gpu.sbatch on 2 nodes"
echo "srun_per_gpu.sbatch: 2 nodes x 2 ranks, losses match ($((SECONDS - start)) s)"
passed=$((passed + 1))
# A rank on the second node fails: the job ends quickly on both nodes, the error names it.
NODES=2 bad_rank bad_node2 3 "--set data_config.train_file=missing.jsonl"
grep -q "ftrun: rank 3: error: .*missing.jsonl" "$T/bad_node2.out" || { cat "$T/bad_node2.out"; fail "the error does not name rank 3"; }
echo "rank 3 (node02) fails: the 2-node job failed in $took s, error names rank 3"
passed=$((passed + 1))

start=$SECONDS
FTRUN="$T/where.sh" FTRUN_CONFIG=configs/tiny/lora.yaml FTRUN_NPROC_PER_NODE=2 FTRUN_MASTER_PORT=$agent_port \
FTRUN_ARGS="$common --set training_args.per_device_train_batch_size=2 --set training_args.output_dir=$T/agent2" \
NODES=2 submit agent2 --ntasks-per-node=1 --cpus-per-task="$cpus" examples/slurm/agent_per_node.sbatch \
  || { cat "$T/agent2.out"; fail "agent_per_node.sbatch on 2 nodes failed"; }
on_both_nodes agent2
grep -q "ftrun agent: node 1: started rank 2 .*rank 3" "$T/agent2.out" || { cat "$T/agent2.out"; fail "agent job on 2 nodes: node 1 started no ranks"; }
grep -q "4 rank(s)" "$T/agent2.out" || { cat "$T/agent2.out"; fail "agent job on 2 nodes: not 4 ranks"; }
compare_losses "$T/one/metrics.jsonl" "$T/agent2/metrics.jsonl" "agent_per_node.sbatch on 2 nodes"
echo "agent_per_node.sbatch: 2 nodes x 1 agent x 2 ranks, losses match ($((SECONDS - start)) s)"
passed=$((passed + 1))
echo "e2e slurm: $passed passed"
