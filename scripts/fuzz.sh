#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser (fuzz/*_fuzz.cpp) with libFuzzer
# under ASan + UBSan: builds build-fuzz/ with clang (-DQFT_FUZZ=ON), then runs
# each target for SECONDS (default 120) or RUNS executions, whichever ends first, two at a time, from the checked-in
# seeds (fuzz/corpus/TARGET) plus what earlier runs found (build-fuzz/corpus).
# Prints executions, coverage and new inputs per target; a crash leaves its
# input in build-fuzz/artifacts/ and makes the script exit 1.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET ...]     (as root or with sudo for the packages)
#   FUZZ_MAX_LEN  largest input tried (default 65536 bytes)
#   RUNS          executions per target (default: no limit; 1000000 for the recorded campaign)
# A found input replays with: build-fuzz/fuzz/TARGET_fuzz build-fuzz/artifacts/TARGET-crash-…
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-120}
shift || true
ALL=(safetensors gguf tokenizer_json tokenizer_model instruction_data chat_template recipe checkpoint)
[ $# -gt 0 ] && TARGETS=("$@") || TARGETS=("${ALL[@]}")
BUILD=build-fuzz

bash scripts/install-deps.sh
need=()
for package in clang-14 libclang-rt-14-dev libomp-14-dev; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || need+=("$package")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQFT_FUZZ=ON \
  -DQFT_BUILD_TESTS=OFF -DQFT_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]/%/_fuzz}" 2>&1 | grep -E "error|warning: unused" || true
mkdir -p "$BUILD/artifacts" "$BUILD/logs"

export OMP_NUM_THREADS=1  # two targets run at once, one thread each
export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

run_target() {
  local target=$1 work=$BUILD/corpus/$1
  mkdir -p "$work"
  if [ "$target" = checkpoint ] && [ ! -f fuzz/corpus/checkpoint/state ]; then
    mkdir -p fuzz/corpus/checkpoint
    QFT_FUZZ_WRITE_SEEDS=fuzz/corpus/checkpoint "$BUILD/fuzz/checkpoint_fuzz" -runs=0 \
      -artifact_prefix="$BUILD/artifacts/checkpoint-" >/dev/null 2>&1
  fi
  "$BUILD/fuzz/${target}_fuzz" -max_total_time="$SECONDS_PER_TARGET" -runs="${RUNS:--1}" -max_len="${FUZZ_MAX_LEN:-65536}" \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$BUILD/artifacts/$target-" "$work" "fuzz/corpus/$target" >"$BUILD/logs/$target.log" 2>&1
}
export -f run_target
export BUILD SECONDS_PER_TARGET RUNS

status=0
printf '%s\n' "${TARGETS[@]}" | xargs -P 2 -I{} bash -c 'run_target {} || echo "{} FAILED"' | tee "$BUILD/logs/failures" || true
[ -s "$BUILD/logs/failures" ] && status=1

printf '\n%-18s %12s %8s %8s %10s  %s\n' target executions exec/s cov features result
for target in "${TARGETS[@]}"; do
  log=$BUILD/logs/$target.log
  execs=$(grep -oP 'stat::number_of_executed_units:\s+\K[0-9]+' "$log" | tail -n 1 || true)
  speed=$(grep -oP 'stat::average_exec_per_sec:\s+\K[0-9]+' "$log" | tail -n 1 || true)
  cov=$(grep -oP '#[0-9]+\s+\S+\s+cov: \K[0-9]+' "$log" | tail -n 1 || true)
  ft=$(grep -oP '#[0-9]+\s+\S+\s+cov: [0-9]+ ft: \K[0-9]+' "$log" | tail -n 1 || true)
  result=ok
  grep -qE 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:|fuzz: a parser' "$log" && result="CRASH (see $log)"
  printf '%-18s %12s %8s %8s %10s  %s\n' "$target" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
exit $status
