#!/bin/bash
# CTest bench_smoke: every wisp_bench scenario for about a second against a
# freshly started wisp on a free loopback port. Checks that each run exits 0
# and reports zero loss and zero duplicates at QoS 1 and 2. It asserts
# nothing about speed: the benchmark is a program, not a test. Every broker
# it starts must exit 0 on SIGTERM with no sanitizer report in its log.
#   usage: smoke.sh WISP WISP_BENCH MAKE_CERTS [tls|no-tls]
# With "tls" (the TLS build, the default) the tls scenario must run: no
# certificates (openssl missing) or a broker that does not start on its
# mqtts listener is a failure. With "no-tls" the broker must refuse the
# listener and the tool must say "not yet" with status 77.
set -u
WISP=$1 BENCH=$2 MAKE_CERTS=${3:-} TLS_MODE=${4:-tls}
case $WISP in /*) ;; *) WISP=$PWD/$WISP ;; esac # the broker runs in $TMP
TMP=$(mktemp -d /tmp/wisp-bench-smoke.XXXXXX)
BROKER_PID=
cleanup() {
	[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts wisp with config $1 and waits for port $2; returns 1 if it exits.
start_wisp() {
	# In $TMP, so its store (./wisp-data) starts empty and goes with $TMP.
	(cd "$TMP" && exec "$WISP" -c "$1") >"$TMP/wisp.log" 2>&1 &
	BROKER_PID=$!
	for _ in $(seq 100); do
		if ! kill -0 "$BROKER_PID" 2>/dev/null; then
			wait "$BROKER_PID" 2>/dev/null
			BROKER_PID=
			return 1
		fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	return 1
}

failures=0

# SIGTERM; the broker must exit 0 with a clean log (a crash, a leak found at
# exit or a sanitizer report is a failure, as in the e2e harness).
stop_wisp() { # name
	local status
	kill "$BROKER_PID" 2>/dev/null
	wait "$BROKER_PID" 2>/dev/null
	status=$?
	BROKER_PID=
	if [ "$status" -ne 0 ] || grep -Eq 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|SUMMARY: (Address|Undefined|Leak)' "$TMP/wisp.log"; then
		echo "FAIL: $1: the broker exited with status $status or reported a sanitizer error:"
		cat "$TMP/wisp.log"
		failures=$((failures + 1))
	fi
}

PORT=$(free_port)
cat >"$TMP/wisp.json" <<EOF
{"listeners": [{"bind": "127.0.0.1", "port": $PORT}],
 "limits": {"max_inflight": 1000, "max_queued_messages": 10000},
 "log": {"level": "warning"}}
EOF
if ! start_wisp "$TMP/wisp.json" "$PORT"; then
	echo "FAIL: wisp did not start:"
	cat "$TMP/wisp.log"
	exit 1
fi

COMMON=(-p "$PORT" -d 1 -w 0.2 --drain 3 --setup-timeout 10 --json --broker-pid "$BROKER_PID")
check() { # name qos json rc
	local name=$1 qos=$2 out=$3 rc=$4
	if [ "$rc" -ne 0 ]; then
		echo "FAIL: $name: exit status $rc: $out"
		failures=$((failures + 1))
	elif [ "$qos" -gt 0 ] && ! { [[ $out == *'"lost":0,'* ]] && [[ $out == *'"dups":0,'* ]]; }; then
		echo "FAIL: $name: loss or duplicates at QoS $qos: $out"
		failures=$((failures + 1))
	else
		echo "ok:   $name: $out" | cut -c1-200
	fi
}

for scen in fanin fanout pairs; do
	for qos in 0 1 2; do
		out=$("$BENCH" "$scen" -q "$qos" -S 20 "${COMMON[@]}" 2>&1)
		check "$scen qos $qos" "$qos" "$out" $?
	done
done
for qos in 0 1 2; do
	out=$("$BENCH" latency -q "$qos" -r 2000 "${COMMON[@]}" 2>&1)
	check "latency qos $qos" "$qos" "$out" $?
done
out=$("$BENCH" conns -C 500 "${COMMON[@]}" 2>&1)
check "conns" 0 "$out" $?
stop_wisp "plain broker"

# Over WebSocket (compare.sh's -ws rows): frames of many packets, packets
# of many frames, without loss.
WPORT=$(free_port)
cat >"$TMP/ws.json" <<EOF
{"listeners": [{"bind": "127.0.0.1", "port": $WPORT, "protocol": "ws"}], "log": {"level": "warning"}}
EOF
if start_wisp "$TMP/ws.json" "$WPORT"; then
	for args in "fanout -q 1 -S 4 -s 64" "pairs -q 1 -s 4096" "fanin -q 0"; do
		# shellcheck disable=SC2086
		out=$("$BENCH" $args --ws -p "$WPORT" -d 1 -w 0.2 --drain 3 --setup-timeout 10 --json \
			--broker-pid "$BROKER_PID" 2>&1)
		q=${args#* -q }
		check "$args over WebSocket" "${q%% *}" "$out" $?
	done
	stop_wisp "WebSocket broker"
else
	echo "FAIL: ws: the broker did not start on a ws listener:"
	cat "$TMP/wisp.log"
	failures=$((failures + 1))
fi

TPORT=$(free_port)
if ! [ -x "$MAKE_CERTS" ] || ! "$MAKE_CERTS" --dir "$TMP/certs" >"$TMP/certs.log" 2>&1; then
	echo "FAIL: tls: cannot make test certificates (needs openssl: scripts/deps.sh --test):"
	cat "$TMP/certs.log" 2>/dev/null
	failures=$((failures + 1))
else
	cat >"$TMP/tls.json" <<EOF
{"listeners": [{"bind": "127.0.0.1", "port": $TPORT, "protocol": "mqtts",
  "tls": {"cert": "$TMP/certs/server.crt", "key": "$TMP/certs/server.key"}}],
 "log": {"level": "warning"}}
EOF
	if [ "$TLS_MODE" = tls ]; then
		if start_wisp "$TMP/tls.json" "$TPORT"; then
			out=$("$BENCH" tls -p "$TPORT" -d 1 -w 0.2 --cafile "$TMP/certs/ca.crt" --json --broker-pid "$BROKER_PID" 2>&1)
			check "tls" 0 "$out" $?
			# Throughput over TLS (compare.sh's -tls rows): records of many
			# packets, and packets of many records, without loss.
			for args in "fanout -q 1 -S 4 -s 64" "pairs -q 1 -s 4096"; do
				# shellcheck disable=SC2086
				out=$("$BENCH" $args --tls --cafile "$TMP/certs/ca.crt" -p "$TPORT" -d 1 -w 0.2 --drain 3 \
					--setup-timeout 10 --json --broker-pid "$BROKER_PID" 2>&1)
				check "$args over TLS" 1 "$out" $?
			done
			stop_wisp "TLS broker"
		else
			echo "FAIL: tls: the TLS build's broker did not start on an mqtts listener:"
			cat "$TMP/wisp.log"
			failures=$((failures + 1))
		fi
	elif start_wisp "$TMP/tls.json" "$TPORT"; then
		echo "FAIL: tls: a build without TLS accepted an mqtts listener"
		stop_wisp "TLS broker"
		failures=$((failures + 1))
	else
		out=$("$BENCH" tls -p "$TPORT" -d 1 -w 0.2 2>&1)
		rc=$?
		if [ "$rc" -eq 77 ] && [[ $out == *"not yet"* ]]; then
			echo "ok:   tls: this build has no TLS; the tool says: $out"
		else
			echo "FAIL: tls: expected the not-yet status 77, got $rc: $out"
			failures=$((failures + 1))
		fi
	fi
fi

if [ "$failures" -ne 0 ]; then
	echo "$failures scenario(s) failed"
	exit 1
fi
echo "all scenarios ok"
