#!/usr/bin/env bash
# bench/gpu/prepare.sh (issue 14, "The GPU check"): runs HERE, before a GPU call. Builds the CUDA
# flavour's binaries and gathers them, with the non-torch shared libraries they need, into one
# git-ignored folder that the device call carries (bench/gpu/carry, under 60 MiB), so that
# bench/gpu/check.sh can run them on the GPU machine, which has torch 2.11.0+cu130 in
# /opt/torch/.venv but no Debian packages and no network.
#
#   bash bench/gpu/prepare.sh            # build (incremental) + gather
#   bash bench/gpu/prepare.sh --no-build # gather what build-cuda/ already holds
#
# Writes bench/gpu/carry/:
#   bin/ftrun, bin/gpu_test     stripped copies of build-cuda's (gpu_test when the target exists)
#   lib/                        their non-glibc, non-torch, non-CUDA libraries as ldd finds them
#                               here (boost, yaml-cpp, Open MPI + hwloc/libevent, zmq + krb5,
#                               cairo + X/font libraries, pcre2, ...)
#   lib-stdcxx/                 this machine's libstdc++ and libgcc_s: check.sh puts them on the
#                               path only when the GPU machine's own libstdc++ is too old
#   tiny/                       examples/tiny/*model (git-ignored, made at build time; the tests
#                               and the benchmark's tokenizers need them there)
#   MANIFEST                    what was gathered, the newest GLIBC symbol version needed, sizes
# Not gathered: libtorch/libc10 (torch/lib of the machine's venv), CUDA/NVIDIA libraries
# (nvidia/*/lib of that venv), glibc itself (the machine's; MANIFEST says which version is needed).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=$ROOT/build-cuda
CARRY=$ROOT/bench/gpu/carry
LIMIT_MIB=60

DO_BUILD=1
case "${1:-}" in
  --no-build) DO_BUILD=0 ;;
  "") ;;
  -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
  *) echo "prepare: unknown option $1" >&2; exit 2 ;;
esac

[ -f "$BUILD/build.ninja" ] || { echo "prepare: no $BUILD/build.ninja: run 'flock /tmp/ftrun-build.lock bash .ci/build-cuda' once" >&2; exit 1; }

TARGETS=(ftrun)
# gpu_test is written by tests/gpu (another part of issue 14): taken when the build knows it.
if ninja -C "$BUILD" -t targets all 2>/dev/null | grep -q '^gpu_test:'; then TARGETS+=(gpu_test); fi
if [ "$DO_BUILD" = 1 ]; then
  echo "prepare: building ${TARGETS[*]} in build-cuda (through /tmp/ftrun-build.lock)"
  flock /tmp/ftrun-build.lock ninja -C "$BUILD" "${TARGETS[@]}"
  # The target list may only appear after ninja re-ran cmake.
  if [[ ! " ${TARGETS[*]} " =~ " gpu_test " ]] && ninja -C "$BUILD" -t targets all 2>/dev/null | grep -q '^gpu_test:'; then
    TARGETS+=(gpu_test)
    flock /tmp/ftrun-build.lock ninja -C "$BUILD" gpu_test
  fi
fi

rm -rf "$CARRY"
mkdir -p "$CARRY/bin" "$CARRY/lib" "$CARRY/lib-stdcxx" "$CARRY/tiny"
BINS=()
for t in "${TARGETS[@]}"; do
  src=$(find "$BUILD" -maxdepth 4 -type f -name "$t" -perm -u+x | head -n 1)
  if [ -z "$src" ]; then echo "prepare: $t not built (no executable named $t under build-cuda)" >&2; [ "$t" = ftrun ] && exit 1; continue; fi
  cp "$src" "$CARRY/bin/$t"
  strip --strip-unneeded "$CARRY/bin/$t"
  BINS+=("$src")
done

# Which libraries to take: everything ldd resolves except glibc's own, libtorch/libc10 and the
# wheel's neighbours (torch/lib, build-cuda/nvidia), and the CUDA toolkit's (the venv's nvidia-*
# wheels provide those there). libstdc++/libgcc_s go to lib-stdcxx (see check.sh).
skip_re='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so|libresolv\.so|libanl\.so|libnsl\.so|libmvec\.so|libtorch|libc10|libgomp|libcu|libnv|libnccl|libcudnn|libcupti|libcudart|libshm)'
declare -A seen=()
for b in "${BINS[@]}"; do
  # ldd prints "name => path (addr)"; unresolved entries say "not found" and are reported.
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    [[ "$name" =~ $skip_re ]] && continue
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    if [ "$path" = "not" ]; then echo "prepare: WARNING $name not found by ldd here" >&2; continue; fi
    case "$path" in
      "$BUILD"/*|/usr/local/cuda*|/usr/local/lib/*) continue ;;
    esac
    case "$name" in
      libstdc++.so*|libgcc_s.so*) cp -L "$path" "$CARRY/lib-stdcxx/$name" ;;
      *) cp -L "$path" "$CARRY/lib/$name" ;;
    esac
  done < <(ldd "$b")
done

for d in examples/tiny/*model; do
  [ -d "$d" ] && cp -r "$d" "$CARRY/tiny/"
done

# Self-check: with only the carried folder (and torch's own lib folder) on the path, which
# libraries would still come from this machine's system folders? Only glibc's, libstdc++/libgcc_s
# and CUDA's may (the GPU machine has those); anything else would be missing there.
torch_lib=$(ls -d "$BUILD"/torch-*/lib | head -n 1)
missing=$(for f in "$CARRY"/bin/*; do LD_LIBRARY_PATH=$CARRY/lib:$torch_lib ldd "$f"; done \
  | awk '$2 == "=>" {print $1, $3}' | grep -v " $CARRY/lib/" | grep -v " $torch_lib/" \
  | grep -Ev "$skip_re|^(libstdc\+\+|libgcc_s)" | sort -u || true)
if [ -n "$missing" ]; then
  echo "prepare: these libraries are not carried and would be missing on a bare machine:" >&2
  echo "$missing" >&2
  exit 1
fi

# The newest glibc symbol version any carried file needs: the GPU machine's glibc must be at
# least that (check.sh compares).
need_glibc=$(for f in "$CARRY"/bin/* "$CARRY"/lib/* "$CARRY"/lib-stdcxx/*; do objdump -T "$f" 2>/dev/null; done \
  | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
need_glibcxx=$(for f in "$CARRY"/bin/* "$CARRY"/lib/*; do objdump -T "$f" 2>/dev/null; done \
  | grep -o 'GLIBCXX_[0-9][0-9.]*' | sort -uV | tail -n 1)
total_kib=$(du -sk "$CARRY" | cut -f1)
{
  echo "prepared: $(date -u +%Y-%m-%dT%H:%MZ) on $(. /etc/os-release; echo "$PRETTY_NAME"), git $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "binaries: ${TARGETS[*]} (from build-cuda, stripped)"
  echo "needs_glibc: $need_glibc"
  echo "needs_glibcxx: $need_glibcxx"
  echo "torch_built_against: $(basename "$(ls -d "$BUILD"/torch-* | head -n 1)")"
  echo "total_kib: $total_kib"
  echo "files:"
  (cd "$CARRY" && find bin lib lib-stdcxx -type f -printf '  %p %k KiB\n' | sort)
} > "$CARRY/MANIFEST"
cat "$CARRY/MANIFEST"
# The call carries the working tree too (tracked + untracked-not-ignored files): 64 MiB in all.
tree_kib=$(( $( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2> /dev/null | tail -n 1 | cut -f1) / 1024 ))
echo "prepare: bench/gpu/carry is $((total_kib / 1024)) MiB ($total_kib KiB; limit $LIMIT_MIB MiB); with the working tree ($((tree_kib / 1024)) MiB) $(((total_kib + tree_kib) / 1024)) of the call's 64 MiB"
if [ "$total_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "prepare: bench/gpu/carry is over $LIMIT_MIB MiB: the device call carries at most 64 MiB with the tree" >&2
  exit 1
fi
echo "prepare: carry it with the device call: carry=[\"bench/gpu/carry\"], command 'bash bench/gpu/check.sh'"
