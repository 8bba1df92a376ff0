#!/usr/bin/env bash
# Proves the README on a truly fresh Debian 12: builds a minimal root with
# debootstrap (--variant=minbase bookworm; cached under build/), copies a clean
# `git clone` of the current commit into it and runs, inside a chroot as root,
# exactly what the README tells a new user to run:
#   1. the README's one apt-get line (what a user installs first),
#   2. make test,
#   3. make demo (STEPS short),
#   4. make install, then `qft --version` from the PATH.
# Prints the time of each phase; exits non-zero on the first failure. The
# network inside is the host's, which reaches only the package archives.
# For developers (run it whenever dependencies or the README change); not part
# of make test.
#
# Usage: scripts/check-fresh-machine.sh        (as root)
#   STEPS=N           demo steps (default 4)
#   FRESH_DIR=DIR     where the cached base and the root live (default build/fresh-machine)
#   KEEP_ROOT=1       leave the root in place afterwards, for a look inside
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
FRESH_DIR=${FRESH_DIR:-$REPO/build/fresh-machine}
BASE_TAR=$FRESH_DIR/bookworm-minbase.tar
ROOT=$FRESH_DIR/root
STEPS=${STEPS:-4}
MIRROR=http://deb.debian.org/debian

die() { echo "check-fresh-machine: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount, chroot)"
git rev-parse --verify HEAD >/dev/null || die "not a git checkout"
[ -z "$(git status --porcelain)" ] || echo "check-fresh-machine: note: uncommitted changes are not checked; the commit $(git rev-parse --short HEAD) is" >&2

# The README's line a user runs before anything else.
FIRST_INSTALL=$(grep -m1 -E '^apt-get update && apt-get install ' README.md) \
  || die "README.md has no line starting 'apt-get update && apt-get install ' (what a new user installs first)"

declare -a PHASES=()
phase() {  # phase NAME COMMAND...: runs it, records its time
  local name=$1 start=$SECONDS status=0
  shift
  echo "== $name" >&2
  "$@" || status=$?
  PHASES+=("$(printf '%-28s %5d s  %s' "$name" $((SECONDS - start)) "$([ $status -eq 0 ] && echo ok || echo "FAILED ($status)")")")
  if [ $status -ne 0 ]; then report; exit $status; fi
}
report() {
  echo
  echo "check-fresh-machine: $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
  printf '  %s\n' "${PHASES[@]}"
}

unmount_all() {
  # Everything mounted below the root, deepest first (ours, and /run/netns,
  # which the two-namespace test's `ip netns add` mounts there).
  awk -v root="$ROOT/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mount; do
    umount -l "$mount"
  done
  return 0
}
cleanup() {
  unmount_all
  [ "${KEEP_ROOT:-0}" = 1 ] || rm -rf "$ROOT"
}
trap cleanup EXIT

make_base() {
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  [ -f "$BASE_TAR" ] && return 0
  local base=$FRESH_DIR/base
  rm -rf "$base" && mkdir -p "$base"
  debootstrap --variant=minbase bookworm "$base" "$MIRROR" >"$FRESH_DIR/debootstrap.log" 2>&1 \
    || { tail -n 20 "$FRESH_DIR/debootstrap.log" >&2; return 1; }
  tar -C "$base" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$base"
}

make_root() {
  unmount_all
  rm -rf "$ROOT" && mkdir -p "$ROOT"
  tar -C "$ROOT" -xf "$BASE_TAR"
  # A fresh Debian 12's archives: main, updates and security.
  rm -f "$ROOT/etc/apt/sources.list"
  cat >"$ROOT/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # The host's own network set-up, which a user's machine would have from its
  # administrator, not from this project: extra CA certificates (a TLS-inspecting
  # proxy's; the README's ca-certificates install adds them to the system bundle)
  # and pip's configuration (which bundle to trust).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  fi
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
  git clone --quiet --no-hardlinks "$REPO" "$ROOT/root/qft"
  git -C "$ROOT/root/qft" checkout --quiet "$(git rev-parse HEAD)"
  mount -t proc proc "$ROOT/proc"
  mount -t sysfs sys "$ROOT/sys"
  mount --bind /dev "$ROOT/dev"
  mount -t devpts devpts "$ROOT/dev/pts" -o newinstance,ptmxmode=0666 2>/dev/null || true
  mount -t tmpfs shm "$ROOT/dev/shm"
}

inside() {  # inside COMMAND: a login-like root shell in the clone, a clean environment
  chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin STEPS="$STEPS" \
    /bin/bash -c "cd /root/qft && $1"
}

mkdir -p "$FRESH_DIR"
phase "debootstrap (cached)" make_base
phase "fresh root + clone" make_root
phase "README's first install" inside "export DEBIAN_FRONTEND=noninteractive; $FIRST_INSTALL"
phase "make test" inside "make test"
phase "make demo (STEPS=$STEPS)" inside "make demo"
phase "make install; qft --version" inside "make install && cd / && command -v qft && qft --version"
report
