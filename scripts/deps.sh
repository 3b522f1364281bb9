#!/bin/sh
# Installs what Wisp needs from Debian 12 packages.
#   scripts/deps.sh          build dependencies (compiler, cmake, mbedTLS, Nettle, OpenSSL's libcrypto, cJSON,
#                            what cpack -G DEB uses)
#   scripts/deps.sh --test   also what the tests use (CUnit, mosquitto and its
#                            clients as reference peers, Paho for Python,
#                            clang for libFuzzer, openssl for test certificates,
#                            Node.js with MQTT.js and playwright-core from npm,
#                            chromium, prometheus, nats-server, Paho C,
#                            and for the Debian package test debootstrap,
#                            systemd-analyze, man)
# Runs apt-get through sudo unless already root.
set -eu

pkgs="build-essential cmake pkg-config libmbedtls-dev nettle-dev libssl-dev libcjson-dev libhttp-parser-dev libnats-dev"
# cpack -G DEB: dpkg-shlibdeps (dpkg-dev) and file find the library dependencies.
pkgs="$pkgs dpkg-dev file"
if [ "${1:-}" = "--test" ]; then
	# libclang-rt-14-dev holds libFuzzer; clang only recommends it, and we
	# install without recommends.
	# libwslay-dev: the WebSocket fuzz target's reference frame parser.
	pkgs="$pkgs libwslay-dev libcunit1-dev mosquitto mosquitto-clients python3 python3-paho-mqtt python3-cryptography clang libclang-rt-14-dev openssl procps"
	pkgs="$pkgs chromium prometheus nats-server libpaho-mqtt-dev valgrind"
	pkgs="$pkgs debootstrap systemd man-db"
	# A machine may carry its own Node.js with npm (NodeSource's conflicts
	# with Debian's npm): Debian's only when there is none.
	command -v npm >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"
elif [ -n "${1:-}" ]; then
	echo "usage: $0 [--test]" >&2
	exit 2
fi

if [ "$(id -u)" -eq 0 ]; then
	as_root=""
else
	as_root="sudo"
fi

npm_tests() {
	# The JavaScript peers, pinned by tests/js/package-lock.json.
	if [ "${1:-}" = "--test" ]; then
		npm ci --prefix "$(dirname "$0")/../tests/js" --no-audit --no-fund --loglevel=error
	fi
}

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	npm_tests "${1:-}"
	exit 0
fi
echo "Installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -qq
# shellcheck disable=SC2086
$as_root apt-get install -y -qq --no-install-recommends $missing
npm_tests "${1:-}"
