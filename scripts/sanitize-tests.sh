#!/usr/bin/env bash
# The fast tests (no PyTorch reference, no SmolLM2) and the fuzz targets'
# replays of their seeds and regressions, built with ASan + UBSan
# (-DQFT_SANITIZE=address,undefined, -fno-sanitize-recover) in build-sanitize/:
# the first finding, leaks included, fails the run. .ci/run calls it after
# make test (which installs the packages); a few minutes of building on 2 cores
# (-O1 and line tables only: the build, not the one minute of tests, is CI's cost).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-sanitize}
TESTS=(safetensors_test config_test kernels_test quant_test qft_test instruction_data_test checkpoint_test recipe_test
       disk_full_test nonfinite_test bf16_test)
TARGETS=(safetensors gguf tokenizer_json tokenizer_model instruction_data chat_template recipe checkpoint)

# The build's output goes to a log, shown only when it fails.
mkdir -p "$BUILD"
{
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1 -DNDEBUG" \
    -DQFT_SANITIZE=address,undefined -DQFT_BUILD_BENCH=OFF &&
    cmake --build "$BUILD" -j "$(nproc)" --target "${TESTS[@]}" "${TARGETS[@]/%/_replay}"
} >"$BUILD/build.log" 2>&1 || { tail -n 60 "$BUILD/build.log"; echo "sanitizers: the build failed" >&2; exit 1; }

export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
passed=0
for test in "${TESTS[@]}"; do
  echo "== $test (ASan + UBSan)"
  "$BUILD/tests/$test" --gtest_brief=1
  passed=$((passed + 1))
done
for target in "${TARGETS[@]}"; do
  inputs=("fuzz/corpus/$target")
  [ -d "fuzz/regressions/$target" ] && inputs+=("fuzz/regressions/$target")
  echo "== ${target}_replay (ASan + UBSan)"
  TMPDIR=$BUILD "$BUILD/fuzz/${target}_replay" "${inputs[@]}"
  passed=$((passed + 1))
done
echo "sanitizers: $passed passed, 0 failed"
