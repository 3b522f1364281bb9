#!/bin/bash
# Full TLS handshake cost by certificate key type and ECDHE group, Wisp
# (mbed TLS) against Mosquitto (OpenSSL) with the same certificate in the
# same run: broker CPU per handshake (TLS handshake + CONNECT + DISCONNECT,
# `wisp_bench tls`), medians of alternating runs. Issue 13 chose the
# defaults of certs/make-certs.sh and of the listener from it.
#
# Usage: bench/tls_handshake.sh --wisp PATH --bench PATH [--reps N]
#          [--keys "ecdsa rsa"] [--curves "x25519:secp256r1 secp256r1"] [--resume]
# Prints one line per (key, curve, broker): median us per handshake and
# handshakes/s. Broker on CPU 0, generator on CPU 1. A curve list is what
# the client offers, in order: the first group both know is the ECDHE group
# (both brokers follow the client), and an ECDSA certificate's own curve must
# be in it (TLS 1.2 supported_groups covers both).
set -u
die() { echo "tls_handshake.sh: $*" >&2; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WISP="" BENCH="" MOSQ=/usr/sbin/mosquitto REPS=3 KEYS="ecdsa rsa" CURVES="x25519:secp256r1 secp256r1" RESUME=()
while [ $# -gt 0 ]; do
	case "$1" in
	--wisp) WISP=$2; shift ;;
	--bench) BENCH=$2; shift ;;
	--mosquitto) MOSQ=$2; shift ;;
	--reps) REPS=$2; shift ;;
	--keys) KEYS=$2; shift ;;
	--curves) CURVES=$2; shift ;;
	--resume) RESUME=(--resume) ;;
	*) die "unknown argument $1" ;;
	esac
	shift
done
[ -x "$WISP" ] && [ -x "$BENCH" ] || die "--wisp and --bench are required"

TMP=$(mktemp -d /tmp/wisp-hs.XXXXXX)
BROKER_PID=
cleanup() {
	[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
chmod 755 "$TMP"

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() { # broker certdir port
	if [ "$1" = wisp ]; then
		cat >"$TMP/wisp.json" <<-EOF
		{"listeners": [{"bind": "127.0.0.1", "port": $3, "protocol": "mqtts",
		  "tls": {"cert": "$2/server.crt", "key": "$2/server.key"}}],
		 "persistence": {"enabled": false}, "log": {"level": "warning"}}
		EOF
		taskset -c 0 "$WISP" -c "$TMP/wisp.json" >"$TMP/broker.log" 2>&1 &
	else
		printf 'listener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nallow_anonymous true\npersistence false\nlog_dest none\n' \
			"$3" "$2/ca.crt" "$2/server.crt" "$2/server.key" >"$TMP/mosquitto.conf"
		taskset -c 0 "$MOSQ" -c "$TMP/mosquitto.conf" >"$TMP/broker.log" 2>&1 &
	fi
	BROKER_PID=$!
	for _ in $(seq 100); do
		kill -0 "$BROKER_PID" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

stop() {
	kill "$BROKER_PID" 2>/dev/null
	wait "$BROKER_PID" 2>/dev/null
	BROKER_PID=
}

RUNS=$TMP/runs.txt
: >"$RUNS"
for key in $KEYS; do
	certs=$TMP/$key
	flag=()
	[ "$key" = rsa ] && flag=(--rsa)
	"$ROOT/certs/make-certs.sh" --dir "$certs" "${flag[@]}" >/dev/null 2>&1 || die "make-certs.sh failed"
	chmod 755 "$certs" && chmod a+r "$certs/server.key"
	for curve in $CURVES; do
		for rep in $(seq "$REPS"); do
			if [ $((rep % 2)) = 1 ]; then order="wisp mosquitto"; else order="mosquitto wisp"; fi
			for b in $order; do
				port=$(free_port)
				start "$b" "$certs" "$port" || { echo "$b did not start: $(head -c 200 "$TMP/broker.log")"; continue; }
				taskset -c 1 "$BENCH" tls -K 4 -d 2 -w 0.5 -p "$port" --cafile "$certs/ca.crt" \
					--tls-curves "$curve" "${RESUME[@]}" --broker-pid "$BROKER_PID" --json >"$TMP/out.json" 2>"$TMP/err.txt"
				stop
				echo "$key $curve $b $(head -n1 "$TMP/out.json") $(head -c 200 "$TMP/err.txt" | tr '\n' ' ')" >>"$RUNS"
			done
		done
	done
done

/usr/bin/python3 - "$RUNS" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    key, curve, broker, js = line.split(" ", 3)
    try:
        r = json.loads(js)
    except ValueError:
        print("no result:", key, curve, broker, js.strip()[:160])
        continue
    if "broker_cpu_us_per_handshake" not in r:
        print("no result:", key, curve, broker, js.strip()[:160])
        continue
    rows.setdefault((key, curve, broker), []).append(r)
print("%-6s %-10s %-10s %12s %12s %s" % ("key", "curve", "broker", "us/hs CPU", "hs/s", "runs"))
for (key, curve, broker), rs in sorted(rows.items()):
    cpu = statistics.median(r["broker_cpu_us_per_handshake"] for r in rs)
    rate = statistics.median(r["handshake_rate"] for r in rs)
    print("%-6s %-10s %-10s %12.0f %12.0f %d" % (key, curve, broker, cpu, rate, len(rs)))
EOF
