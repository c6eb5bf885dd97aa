#!/usr/bin/env bash
# bench/gpu/check.sh (issue 14, "The GPU check (one prepared script)"): the whole GPU check in one
# call of at most 8 minutes on the lent GPU machine (torch 2.11.0+cu130 in /opt/torch/.venv, no
# Debian packages, no network), from binaries built here by bench/gpu/prepare.sh and carried in
# bench/gpu/carry:
#   0. environment: the binary loads (`ftrun --help`), nvidia-smi, torch.cuda, glibc;
#   1. the CUDA unit tests (tests/gpu: build-cuda's gpu_test and gpu_e2e.sh), capped at 120 s;
#   2. the benchmark (bench/gpu/gpu_bench.sh), capped at 300 s.
# It exits non-zero when step 0 or step 1 failed (the benchmark's goals do not change the status).
#
# Here, first (the CPU fallback / dry run, a few minutes; must be green before a GPU minute is spent):
#   bash bench/gpu/prepare.sh && bash bench/gpu/check.sh --dry-run
# On the GPU machine (device tool: carry ["bench/gpu/carry"], timeout_s 480):
#   bash bench/gpu/check.sh
# Options: --dry-run (the CPU: FTRUN_TEST_DEVICE=cpu, `device: cpu`, tiny models, 1+2 steps; taken
#          automatically when torch sees no GPU), --gpu (refuse to fall back), --skip-tests,
#          --skip-bench, --allow-missing-tests (tests/gpu not written yet: say so, do not fail).
# Environment: CHECK_TESTS_CAP (120), CHECK_GTEST_CAP (100), CHECK_BENCH_CAP (300) seconds.
# Writes under $OUT (default /tmp/ftrun-gpu-check, or -dry): check.log (everything below), env.txt,
# tests.log, gpu_test.xml, bench.md (the table and goals), bench.json, bench-runs.log: 7 files, as
# the device tool brings back at most 8.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CARRY=$ROOT/bench/gpu/carry

MODE=auto SKIP_TESTS=0 SKIP_BENCH=0 ALLOW_MISSING=0
# Time caps (seconds), within the call's 8 minutes: step 1 in all, gpu_test alone, step 2.
TESTS_CAP=${CHECK_TESTS_CAP:-120} GTEST_CAP=${CHECK_GTEST_CAP:-100} BENCH_CAP=${CHECK_BENCH_CAP:-300}
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry ;;
    --gpu) MODE=gpu ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --allow-missing-tests) ALLOW_MISSING=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "check: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

# The python with torch 2.11: the GPU machine's venv; here build/pyref2 (torch 2.11.0+cu130,
# transformers 4.51.3, PEFT 0.14), the same wheel the CUDA flavour is built against.
PY=""
for p in /opt/torch/.venv/bin/python3 "$ROOT/build/pyref2/bin/python" python3; do
  if command -v "$p" > /dev/null 2>&1 && "$p" -c 'import torch' 2> /dev/null; then PY=$(command -v "$p"); break; fi
done
[ -n "$PY" ] || { echo "check: no python with torch found (/opt/torch/.venv, build/pyref2, python3)" >&2; exit 1; }
if [ "$MODE" = auto ]; then
  if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null; then MODE=gpu; else
    MODE=dry; echo "check: torch sees no GPU: CPU fallback (dry run)"; fi
elif [ "$MODE" = gpu ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null; then
  echo "check: FAIL: --gpu given but $PY's torch sees no GPU" >&2; exit 1
fi
OUT=${OUT:-/tmp/ftrun-gpu-check$([ "$MODE" = dry ] && echo -dry)}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
TEE_PID=$!
T0=$SECONDS
stamp() { echo; echo "=== check: $* [$((SECONDS - T0)) s]"; }
stamp "mode $MODE, python $PY, OUT $OUT, repo $ROOT"

# --- 0. environment -----------------------------------------------------------------------------
STATUS=0
BIN=$CARRY/bin
if [ ! -x "$BIN/ftrun" ]; then
  if [ "$MODE" = dry ] && [ -x "$ROOT/build-cuda/ftrun" ]; then
    echo "check: no bench/gpu/carry (run bench/gpu/prepare.sh): using build-cuda's binaries directly"
    BIN=$ROOT/build-cuda
  else
    echo "check: FAIL: no $BIN/ftrun: run bench/gpu/prepare.sh here and carry bench/gpu/carry"; exit 1
  fi
fi
GPU_TEST=$BIN/gpu_test
[ -x "$GPU_TEST" ] || GPU_TEST=$(find "$ROOT/build-cuda" -maxdepth 4 -type f -name gpu_test -perm -u+x 2> /dev/null | head -n 1)
# The tiny models (git-ignored, made at build time) for the tests and the benchmark's tokenizers.
if [ -d "$CARRY/tiny" ]; then
  for d in "$CARRY"/tiny/*; do [ -e "examples/tiny/$(basename "$d")" ] || cp -r "$d" examples/tiny/; done
fi

# Library path for the carried binaries only (python keeps its own): the carried libraries, the
# venv's torch/lib and nvidia/*/lib (libtorch_cuda's RPATH finds the latter anyway).
TORCH_LIBS=$("$PY" - << 'EOF'
import glob, os, torch
lib = os.path.join(os.path.dirname(torch.__file__), "lib")
nv = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia", "*", "lib")))
print(":".join([lib] + nv))
EOF
)
LIBPATH=$TORCH_LIBS
[ -d "$CARRY/lib" ] && LIBPATH=$CARRY/lib:$LIBPATH
WRAP=$(mktemp -d /tmp/ftrun-gpu-check-bin.XXXXXX)
make_wrapper() {  # NAME REAL LIBPATH: a script that runs REAL with LIBPATH
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' "$3" "$2" > "$WRAP/$1"
  chmod +x "$WRAP/$1"
}
chmod +x "$BIN"/* 2> /dev/null || true
make_wrapper ftrun "$BIN/ftrun" "$LIBPATH"
if ! "$WRAP/ftrun" --help > "$WRAP/load.txt" 2>&1; then
  # This machine's libstdc++ may be older than the one the binary was built with: take the carried one.
  cat "$WRAP/load.txt"
  if [ -d "$CARRY/lib-stdcxx" ]; then
    echo "check: retrying with the carried libstdc++ / libgcc_s"
    LIBPATH=$CARRY/lib-stdcxx:$LIBPATH
    make_wrapper ftrun "$BIN/ftrun" "$LIBPATH"
  fi
fi
[ -n "$GPU_TEST" ] && make_wrapper gpu_test "$GPU_TEST" "$LIBPATH"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  mode: $MODE  host: $(hostname)  cores: $(nproc)"
  [ -f "$CARRY/MANIFEST" ] && head -n 6 "$CARRY/MANIFEST"
  # The carried binaries need the glibc version MANIFEST names (Debian 12's); older fails to load.
  "$PY" - "$CARRY/MANIFEST" << 'EOF'
import os, sys
have = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
need = next((l.split()[1] for l in open(sys.argv[1]) if l.startswith("needs_glibc:")), None) if os.path.exists(sys.argv[1]) else None
ver = lambda v: tuple(int(x) for x in v.split("."))
warn = need and ver(have) < ver(need)
print(f"glibc here: {have}; the carried binaries need {need or '?'}" + (" -- TOO OLD: they will not load" if warn else ""))
EOF
  echo "LD_LIBRARY_PATH for ftrun/gpu_test: $LIBPATH"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" - << 'EOF'
import torch, platform
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"cudnn {torch.backends.cudnn.version()}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, sm_{p.major}{p.minor}")
for m in ("transformers", "peft", "safetensors"):
    try:
        print(m, __import__(m).__version__)
    except Exception as e:
        print(m, "ABSENT:", e)
EOF
} 2>&1 | tee "$OUT/env.txt"
stamp "0. the binary loads"
if "$WRAP/ftrun" --help > "$WRAP/load.txt" 2>&1; then
  echo "ftrun --help: ok ($(head -n 1 "$WRAP/load.txt"))"
else
  cat "$WRAP/load.txt"
  echo "check: FAIL: ftrun does not start here (missing library above?): nothing else can run"
  exit 1
fi

# --- 1. CUDA unit tests ------------------------------------------------------------------------
TEST_DEVICE=cuda
[ "$MODE" = dry ] && TEST_DEVICE=cpu
TESTS_OK=1
if [ "$SKIP_TESTS" = 1 ]; then
  stamp "1. CUDA unit tests: skipped (--skip-tests)"
else
  stamp "1. CUDA unit tests (FTRUN_TEST_DEVICE=$TEST_DEVICE; $TESTS_CAP s for both)"
  : > "$OUT/tests.log"
  t1=$SECONDS
  # run_test NAME PRESENT CAP MISSING_WHY CMD...: one test program under `timeout CAP`, its
  # output to tests.log and a one-line verdict; absent (PRESENT empty) fails step 1 unless
  # --allow-missing-tests.
  run_test() {
    local name=$1 present=$2 cap=$3 why=$4 t=$SECONDS rc
    shift 4
    if [ -n "$present" ]; then
      FTRUN_TEST_DEVICE=$TEST_DEVICE timeout "$cap" "$@" >> "$OUT/tests.log" 2>&1
      rc=$?
      echo "$name: rc $rc ($([ $rc = 124 ] && echo "timed out after $cap s" || echo "$((SECONDS - t)) s"))" | tee -a "$OUT/tests.log"
      [ $rc = 0 ] || TESTS_OK=0
    elif [ "$ALLOW_MISSING" = 1 ]; then
      echo "$name: MISSING ($why); allowed by --allow-missing-tests" | tee -a "$OUT/tests.log"
    else
      echo "$name: MISSING ($why)" | tee -a "$OUT/tests.log"; TESTS_OK=0
    fi
  }
  run_test gpu_test "$GPU_TEST" "$GTEST_CAP" "no gpu_test in bench/gpu/carry/bin or build-cuda" \
    "$WRAP/gpu_test" --gtest_output="xml:$OUT/gpu_test.xml"
  cap=$((TESTS_CAP - (SECONDS - t1))); [ $cap -lt 20 ] && cap=20
  run_test gpu_e2e.sh "$([ -f tests/gpu/gpu_e2e.sh ] && echo yes)" "$cap" "tests/gpu/gpu_e2e.sh not in the tree" \
    bash tests/gpu/gpu_e2e.sh "$WRAP/ftrun"
  # The gtest summary lines and any failure names, for the call's output tail.
  grep -E '^\[ *(PASSED|FAILED|SKIPPED) *\]|tests? ran|^(ok|FAIL|PASS)' "$OUT/tests.log" | tail -n 30
  [ "$TESTS_OK" = 1 ] && echo "step 1: PASS" || { echo "step 1: FAIL (tests.log)"; STATUS=1; }
fi

# --- 2. the benchmark --------------------------------------------------------------------------
if [ "$SKIP_BENCH" = 1 ]; then
  stamp "2. benchmark: skipped (--skip-bench)"
else
  stamp "2. benchmark ($BENCH_CAP s cap)"
  BENCH_ARGS=(--out "$OUT" --ftrun "$WRAP/ftrun" --python "$PY" --budget $((BENCH_CAP - 30)))
  [ "$MODE" = dry ] && BENCH_ARGS+=(--dry-run)
  timeout "$BENCH_CAP" bash bench/gpu/gpu_bench.sh "${BENCH_ARGS[@]}"
  rc=$?
  [ $rc = 0 ] || echo "step 2: the benchmark script ended with rc $rc$([ $rc = 124 ] && echo ' (timed out)') (bench-runs.log)"
fi

rm -rf "$WRAP"
stamp "done: $([ $STATUS = 0 ] && echo 'step 1 passed or skipped' || echo 'step 1 FAILED'); files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
# Let tee write the last lines of check.log before the call ends.
exec >&- 2>&-
wait "$TEE_PID" 2> /dev/null
exit $STATUS
