#!/usr/bin/env bash
# Make NVIDIA's perf_analyzer (PyPI perf-analyzer, default 2.60.0) runnable on this host.
#
# Why: the wheel's binary needs glibc >= 2.38 and GLIBCXX_3.4.32; this host is Debian 12
#   (glibc 2.36), so it cannot start there directly.
# What: debootstraps a minimal Debian 13 (trixie) root at $PA_ROOT (default
#   /opt/loadtest-trixie), unpacks the binary from the PyPI wheel into it, and writes
#   $PA_ROOT/perf_analyzer: a wrapper that runs the binary on this host, no chroot (same
#   network, cwd and files), through the root's dynamic loader and libraries.
#   Prints the wrapper's path. Idempotent: each step is skipped once done. Needs root.
# Time: first run about 45 s (about 40 MB from Debian and PyPI, 235 MB on disk); later
#   runs under 1 s.
set -euo pipefail

PA_ROOT=${PA_ROOT:-/opt/loadtest-trixie}
PA_VERSION=${PA_VERSION:-2.60.0}
# The Debian mirror this host's apt already uses (first URIs line of its deb822 sources).
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
if [[ -z $MIRROR ]]; then
  echo "perf_analyzer_root: set DEBIAN_MIRROR (no deb822 apt sources found)" >&2
  exit 1
fi
LIBDIR=$PA_ROOT/usr/lib/x86_64-linux-gnu
BIN=$PA_ROOT/opt/perf_analyzer-$PA_VERSION/perf_analyzer
WRAPPER=$PA_ROOT/perf_analyzer

log() { echo "perf_analyzer_root: $*" >&2; }

if [[ $EUID -ne 0 ]]; then
  log "must run as root (debootstrap)"
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# Build into a scratch dir and rename at the end, so an interrupted run never
# leaves a half-made root at $PA_ROOT.
if [[ ! -x $LIBDIR/ld-linux-x86-64.so.2 ]]; then
  if [[ -e $PA_ROOT ]]; then
    log "$PA_ROOT exists but has no trixie loader; remove it and rerun"
    exit 1
  fi
  log "debootstrapping trixie into $PA_ROOT"
  rm -rf "$PA_ROOT.partial"
  debootstrap --variant=minbase --include=libssl3t64,zlib1g,libstdc++6 \
    trixie "$PA_ROOT.partial" "$MIRROR" >&2
  mv "$PA_ROOT.partial" "$PA_ROOT"
fi

if [[ ! -x $BIN ]]; then
  log "fetching perf-analyzer $PA_VERSION from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_38_x86_64 -d "$tmp" "perf-analyzer==$PA_VERSION"
  python3 -m zipfile -e "$tmp"/perf_analyzer-*.whl "$tmp/whl"
  install -D -m 755 "$tmp/whl/perf_analyzer/bin/perf_analyzer" "$BIN"
fi

cat >"$WRAPPER" <<EOF
#!/bin/sh
# Runs perf_analyzer $PA_VERSION on this host with the trixie root's loader and libraries.
exec "$LIBDIR/ld-linux-x86-64.so.2" --library-path "$LIBDIR" "$BIN" "\$@"
EOF
chmod 755 "$WRAPPER"
# (perf_analyzer has no --help: bare it prints usage and exits 99.)
"$WRAPPER" --version >/dev/null 2>&1 || {
  log "wrapper check failed: $WRAPPER --version"
  exit 1
}
echo "$WRAPPER"
