#!/usr/bin/env bash
# scripts/deps.sh [build|test|run|bench]: install the Debian 12 packages Outpost needs that are
# missing, and nothing else.
#
#   build  compiler and the libraries outpostd links against
#   test   build + everything `make test` (and `make fuzz`, the bench smoke test) runs
#   run    build + what `make run` (scripts/run-local.sh) runs
#   bench  test + the other caches the benchmarks compare against
#
# Idempotent: when every package is present it prints "deps: all present" and exits 0 without
# touching apt. Otherwise it runs `apt-get update` once and installs only the missing packages,
# as root or through sudo. DEPS_DRY_RUN=1 prints what it would install and exits 0;
# `deps.sh --list SET` prints the package list of SET, one a line.
#
# Rule (shared/STACK.md): nothing linked into outpostd may load OpenSSL 3. libevent-dev depends
# on libevent-openssl as a separate package; that is fine, we only ever link libevent_core and
# libevent_pthreads. Never add a package here whose purpose is to be linked and that pulls
# libssl3/libcrypto3 into our link (libcurl, libevent_openssl, ...).
set -euo pipefail

BUILD_PKGS=(
    build-essential pkg-config
    libevent-dev liblmdb-dev
    libnghttp2-dev libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev
    android-libboringssl-dev libgnutls28-dev
    libmaxminddb-dev zlib1g-dev libbrotli-dev
)
# git: scripts/lint.sh lists the tracked files. clang + libclang-rt-14-dev: `make fuzz`
# (libFuzzer). nginx-light + wrk: the bench smoke test. No valgrind: CI stays lean.
# HTTP/3 clients (Debian's curl has none): golang-go + golang-github-lucas-clemente-quic-go-dev
# build tests/tools/h3curl; ngtcp2-client (gtlsclient) and ngtcp2-server (gtlsserver, the
# tools' own tests); chromium, the browser check.
TEST_PKGS=(
    curl python3 python3-pytest git
    lmdb-utils nghttp2-client ngtcp2-client ngtcp2-server
    golang-go golang-github-lucas-clemente-quic-go-dev chromium
    procps iproute2 openssl python3-h2
    clang libclang-rt-14-dev
    nginx-light wrk
)
RUN_PKGS=(python3 curl openssl)
BENCH_PKGS=(varnish trafficserver)

usage() {
    echo "usage: $0 [build|test|run|bench]   (or: $0 --list SET)" >&2
    exit 2
}

list=0
if [ "${1:-}" = "--list" ]; then
    list=1
    shift
fi
set_name=${1:-build}
case "$set_name" in
build) pkgs=("${BUILD_PKGS[@]}") ;;
test) pkgs=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}") ;;
run) pkgs=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}") ;;
bench) pkgs=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}" "${BENCH_PKGS[@]}") ;;
*) usage ;;
esac
[ $# -le 1 ] || usage

if [ $list = 1 ]; then
    printf '%s\n' "${pkgs[@]}" | awk '!seen[$0]++'
    exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: dpkg-query not found: scripts/deps.sh supports Debian 12 only" >&2
    exit 1
fi

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
declare -A seen=()
for p in "${pkgs[@]}"; do
    [ -z "${seen[$p]:-}" ] || continue
    seen[$p]=1
    if [ "$p" = build-essential ] && ! is_installed build-essential &&
        is_installed gcc && is_installed make && is_installed libc6-dev; then
        continue # a compiler, make and libc headers are what we need of build-essential
    fi
    is_installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all present"
    exit 0
fi

echo "deps: missing: ${missing[*]}"
if [ "${DEPS_DRY_RUN:-0}" = 1 ]; then
    exit 0
fi

if [ "$(id -u)" = 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "deps: not root and sudo is not installed: install these as root, then rerun:" >&2
    echo "    apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

# Packages that ship a daemon (nginx-light, varnish, trafficserver) must not start it on this
# machine: the tests and benchmarks start their own on loopback ports. policy-rc.d is the
# Debian way to say so; only add one for the install if the machine has none.
policy=/usr/sbin/policy-rc.d
made_policy=0
cleanup() {
    if [ $made_policy = 1 ]; then
        "${as_root[@]}" rm -f "$policy" || true
    fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# added by outpost scripts/deps.sh for the length of an install\nexit 101\n' |
        "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy"
    made_policy=1
fi

apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
echo "deps: apt-get update"
"${as_root[@]}" "${apt[@]}" update -q
echo "deps: apt-get install ${missing[*]}"
"${as_root[@]}" "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}"

still=()
for p in "${missing[@]}"; do
    is_installed "$p" || still+=("$p")
done
if [ ${#still[@]} -ne 0 ]; then
    echo "deps: still missing after apt-get install: ${still[*]}" >&2
    exit 1
fi
echo "deps: installed ${#missing[@]} package(s)"
