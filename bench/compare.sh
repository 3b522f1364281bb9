#!/bin/bash
# compare.sh: every wisp_bench scenario against Wisp and against Debian's
# mosquitto, side by side, on loopback only.
#
#   bench/compare.sh [--quick] [--reps N] [--out DIR] [--payload-size B]
#                    [--only "ID|GLOB ..."] [--wisp PATH] [--bench PATH] [--mosquitto PATH]
#
# Each run gets a fresh broker pinned on CPU 0 (taskset -c 0) and the
# generator pinned on CPU 1; the two brokers alternate (A B, then B A) over
# N repetitions (default 5; --quick: 1 and short windows). Results go to
# DIR (default build/bench-results/<date>): runs.jsonl (every run),
# results.md and results.json (medians, spread, ratio wisp/mosquitto) and
# results.png (gnuplot). See bench/README.md for how to read them.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
REPS=5 QUICK=0 PAYLOAD=16 ONLY=""
OUT=""
WISP="" BENCH="" MOSQ=/usr/sbin/mosquitto
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 REPS=1 ;;
	--reps) REPS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--payload-size) PAYLOAD=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--wisp) WISP=$2; shift ;;
	--bench) BENCH=$2; shift ;;
	--mosquitto) MOSQ=$2; shift ;;
	-h|--help) sed -n '2,14p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

die() { echo "compare.sh: $*" >&2; exit 2; }

# ---- tools ----
BUILD=$ROOT/build/bench
if [ -z "$WISP" ] || [ -z "$BENCH" ]; then
	# Always (incrementally) rebuilt: a binary left from an older checkout
	# would be measured and stamped with this checkout's commit.
	echo "building wisp and wisp_bench (RelWithDebInfo) in $BUILD ..."
	cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWISP_BUILD_TESTS=OFF >/dev/null &&
		cmake --build "$BUILD" -j2 --target wisp wisp_bench >/dev/null || die "build failed"
	WISP=${WISP:-$BUILD/broker/wisp}
	BENCH=${BENCH:-$BUILD/bench/wisp_bench}
fi
[ -x "$WISP" ] || die "no wisp at $WISP"
[ -x "$BENCH" ] || die "no wisp_bench at $BENCH"
[ -x "$MOSQ" ] || die "no mosquitto at $MOSQ (apt-get install mosquitto)"
command -v taskset >/dev/null || die "taskset missing (apt-get install util-linux)"
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 missing (apt-get install python3)"
HAVE_GNUPLOT=1
command -v gnuplot >/dev/null ||
	{ HAVE_GNUPLOT=0; echo "warning: gnuplot missing (apt-get install gnuplot-nox): no chart" >&2; }
[ "$(nproc)" -ge 2 ] || echo "warning: fewer than 2 CPUs; broker and generator will share one" >&2

# Stamped now, next to the build: a checkout that moves during a long run
# must not lend its commit to binaries built before it moved.
COMMIT=$(git -C "$ROOT" describe --always --dirty --abbrev=7 2>/dev/null || echo "uncommitted")
STARTED=$(date -u +%Y-%m-%dT%H:%MZ)
OUT=${OUT:-$ROOT/build/bench-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT" || die "cannot create $OUT"
TMP=$(mktemp -d /tmp/wisp-compare.XXXXXX)
BROKER_PID=
cleanup() {
	[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# conns needs 19,000 descriptors in each process; this raises the soft limit
# to the hard one for the brokers and the generator alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# Throw-away certificates for the tls scenario. Directory and key are made
# readable because mosquitto started as root drops to its own user first.
HAVE_CERTS=0
if "$ROOT/certs/make-certs.sh" --dir "$TMP/certs" >/dev/null 2>&1; then
	chmod 755 "$TMP" "$TMP/certs" && chmod a+r "$TMP/certs/server.key" && HAVE_CERTS=1
fi

# ---- scenarios: id and wisp_bench arguments ----
if [ "$QUICK" = 1 ]; then
	WIN=(-d 1 -w 0.3) CONNS=5000 HOLD=0.5
else
	WIN=(-d 2.5 -w 0.5) CONNS=19000 HOLD=1
fi
# Idle TLS connections: held past Wisp's default hibernate_after (5 s) and
# the heap trim that follows (1 s), so the row shows what an idle TLS
# connection costs once it is idle. 16 handshakes at a time keep each one
# far inside connect_timeout on a busy machine.
TLS_CONNS=1000 TLS_HOLD=12
SCENARIOS=(
	"fanin-q0|fanin -q 0" "fanin-q1|fanin -q 1" "fanin-q2|fanin -q 2"
	"fanout-q0|fanout -q 0 -S 100" "fanout-q1|fanout -q 1 -S 100" "fanout-q2|fanout -q 2 -S 100"
	"pairs-q0|pairs -q 0" "pairs-q1|pairs -q 1" "pairs-q2|pairs -q 2"
	"latency-q0|latency -q 0 -r 10000" "latency-q1|latency -q 1 -r 10000"
	"conns|conns -C $CONNS -d $HOLD"
	# Large messages (issue 18): 1 MiB payloads, 4 pairs with 4 messages
	# each outstanding, so 16 MiB in flight. Broker CPU per delivered
	# message is CPU per MiB delivered; Wisp reads a message over 16 KiB
	# straight into the block that becomes the message.
	"pairs-q0-1M|pairs -q 0 -s 1048576 -N 4 --outstanding 4"
	"tls|tls -K 4"
	# Reconnects that resume the session of their first handshake (a ticket
	# for Wisp and Mosquitto alike): the cost of a sensor's reconnect.
	"tls-resume|tls -K 4 --resume"
	"conns-tls|conns -C $TLS_CONNS -d $TLS_HOLD --connect-concurrency 16 --setup-timeout 300"
	# Durability: QoS 1 pairs whose subscribers hold persistent sessions, so
	# every delivery is a stored message. Wisp runs in memory and with each
	# fsync policy; Mosquitto with persistence on (its autosave writes
	# periodically, so a crash loses what came since: not the same promise).
	"persist-mem|pairs -q 1 --persistent" "persist-no|pairs -q 1 --persistent"
	"persist-everysec|pairs -q 1 --persistent" "persist-always|pairs -q 1 --persistent"
)
# Throughput over TLS next to the same row in plain TCP (issue 13): fanin,
# fanout to 4 and pairs, QoS 0 and 1, 64 B and 4 KiB payloads. An id ending
# in -tls runs over an mqtts listener with the same certificate for both
# brokers; -s in the arguments overrides --payload-size.
for shape in "fanin|fanin" "fanout|fanout -S 4" "pairs|pairs"; do
	for q in 0 1; do
		for size in "64B|64" "4K|4096"; do
			id="${shape%%|*}-q$q-${size%%|*}" args="${shape#*|} -q $q -s ${size#*|}"
			SCENARIOS+=("$id|$args" "$id-tls|$args")
		done
	done
done

# MQTT over WebSocket (issue 15) next to the same rows in plain TCP: an id
# ending in -ws runs over a ws listener for Wisp and Mosquitto's own
# WebSocket listener (libwebsockets: `listener PORT` + `protocol websockets`).
for shape in "fanin|fanin" "fanout|fanout -S 100" "pairs|pairs"; do
	for q in 0 1; do
		SCENARIOS+=("${shape%%|*}-q$q-ws|${shape#*|} -q $q")
	done
done

# MQTT 5 fan-out to 100 (issue 12): every connection speaks v5; -v5props
# PUBLISHes carry content type, a user property, a message expiry interval
# and payload format 1 (subscribers check they arrive intact), -v5alias
# publishes with a topic alias after the first PUBLISH and lets the broker
# use aliases towards the subscribers. Mosquitto 2.0.11 gets the same client
# options (it accepts inbound aliases, Topic Alias Maximum 10).
SCENARIOS+=(
	"fanout-q0-v5props|fanout -q 0 -S 100 -V 5 --props"
	"fanout-q1-v5props|fanout -q 1 -S 100 -V 5 --props"
	"fanout-q0-v5alias|fanout -q 0 -S 100 -V 5 --topic-alias"
)

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Broker configurations: persistence off, no logging on the hot path, queues
# and in-flight windows large enough that neither drops in a closed loop.
# mosquitto: max_inflight_messages 0 (no limit) is its fastest setting and
# also avoids the 2.0.11 inflight-quota bug that strands queued QoS 1/2
# messages (fixed upstream in 2.0.13).
write_config() { # broker port tls id
	local b=$1 port=$2 tls=$3 id=$4 ws=0
	case "$id" in *-ws) ws=1 ;; esac
	rm -rf "$TMP/data"
	if [ "$b" = wisp ]; then
		local persist='{"enabled": false}'
		case "$id" in
		persist-no|persist-everysec|persist-always)
			persist="{\"enabled\": true, \"dir\": \"$TMP/data\", \"fsync\": \"${id#persist-}\"}" ;;
		esac
		local l="{\"bind\": \"127.0.0.1\", \"port\": $port}"
		[ "$tls" = 1 ] && l="{\"bind\": \"127.0.0.1\", \"port\": $port, \"protocol\": \"mqtts\", \"tls\": {\"cert\": \"$TMP/certs/server.crt\", \"key\": \"$TMP/certs/server.key\"}}"
		[ "$ws" = 1 ] && l="{\"bind\": \"127.0.0.1\", \"port\": $port, \"protocol\": \"ws\"}"
		cat >"$TMP/wisp.json" <<-EOF
		{"listeners": [$l],
		 "limits": {"max_inflight": 65535, "max_queued_messages": 100000, "max_output_buffer": 67108864,
		            "max_packet_size": 16777216},
		 "persistence": $persist,
		 "log": {"level": "warning"}}
		EOF
		echo "$TMP/wisp.json"
	else
		{
			# Mosquitto 2.0.11 exits with "Unable to start any listening
			# sockets" when its only listener is a websockets one: a plain
			# listener on another port keeps it up.
			[ "$ws" = 1 ] && echo "listener $(free_port) 127.0.0.1"
			echo "listener $port 127.0.0.1"
			[ "$ws" = 1 ] && echo "protocol websockets"
			if [ "$tls" = 1 ]; then
				echo "cafile $TMP/certs/ca.crt"
				echo "certfile $TMP/certs/server.crt"
				echo "keyfile $TMP/certs/server.key"
			fi
			echo "allow_anonymous true"
			case "$id" in
			persist-*)
				mkdir -p "$TMP/data" && chmod 777 "$TMP/data"
				echo "persistence true"
				echo "persistence_location $TMP/data/" ;;
			*) echo "persistence false" ;;
			esac
			echo "set_tcp_nodelay true"
			echo "max_inflight_messages 0"
			echo "max_queued_messages 100000"
			echo "max_connections -1"
			echo "log_dest none"
		} >"$TMP/mosquitto.conf"
		echo "$TMP/mosquitto.conf"
	fi
}

start_broker() { # broker config port
	if [ "$1" = wisp ]; then
		taskset -c 0 "$WISP" -c "$2" >"$TMP/broker.log" 2>&1 &
	else
		taskset -c 0 "$MOSQ" -c "$2" >"$TMP/broker.log" 2>&1 &
	fi
	BROKER_PID=$!
	for _ in $(seq 100); do
		kill -0 "$BROKER_PID" 2>/dev/null || { wait "$BROKER_PID" 2>/dev/null; BROKER_PID=; return 1; }
		(exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

stop_broker() {
	[ -n "$BROKER_PID" ] || return
	kill "$BROKER_PID" 2>/dev/null
	for _ in $(seq 40); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.05; done
	kill -9 "$BROKER_PID" 2>/dev/null
	wait "$BROKER_PID" 2>/dev/null
	BROKER_PID=
}

RUNS=$OUT/runs.jsonl
: >"$RUNS"
run_one() { # broker id args rep
	local b=$1 id=$2 args=$3 rep=$4 tls=0 port cfg rc extra=() size=(-s "$PAYLOAD")
	case "$id" in tls|tls-*|*-tls) tls=1 ;; esac
	case " $args " in *" -s "*) size=() ;; esac
	# A row's own -d (conns: the hold time) wins over the window's.
	local win=("${WIN[@]}")
	case " $args " in *" -d "*) win=("${WIN[@]:2}") ;; esac
	if [ "$tls" = 1 ] && [ "$HAVE_CERTS" = 0 ]; then
		echo "{\"broker\":\"$b\",\"id\":\"$id\",\"rep\":$rep,\"rc\":77,\"note\":\"no certificates\",\"result\":null}" >>"$RUNS"
		return
	fi
	port=$(free_port)
	cfg=$(write_config "$b" "$port" "$tls" "$id")
	if ! start_broker "$b" "$cfg" "$port"; then
		local why
		why=$(tr -d '"\\' <"$TMP/broker.log" | tr '\n' ' ' | cut -c1-200)
		printf '  %-10s %-9s rep %d: broker did not start: %s\n' "$id" "$b" "$rep" "$why"
		echo "{\"broker\":\"$b\",\"id\":\"$id\",\"rep\":$rep,\"rc\":77,\"note\":\"broker did not start: $why\",\"result\":null}" >>"$RUNS"
		return
	fi
	[ "$tls" = 1 ] && extra=(--cafile "$TMP/certs/ca.crt")
	[ "$tls" = 1 ] && [ "$id" != tls ] && extra+=(--tls)
	case "$id" in *-ws) extra+=(--ws) ;; esac
	# shellcheck disable=SC2086
	taskset -c 1 "$BENCH" $args "${win[@]}" "${size[@]}" -p "$port" --broker-pid "$BROKER_PID" \
		"${extra[@]}" --json >"$TMP/out.json" 2>"$TMP/err.txt"
	rc=$?
	stop_broker
	local res
	res=$(head -n1 "$TMP/out.json")
	[ -n "$res" ] || res=null
	printf '  %-10s %-9s rep %d: rc %d %s\n' "$id" "$b" "$rep" "$rc" "$(head -c 160 "$TMP/err.txt" | tr '\n' ' ')"
	echo "{\"broker\":\"$b\",\"id\":\"$id\",\"rep\":$rep,\"rc\":$rc,\"result\":$res}" >>"$RUNS"
}

START=$(date +%s)
echo "compare.sh: $REPS repetition(s), payload $PAYLOAD B, results in $OUT"
for s in "${SCENARIOS[@]}"; do
	id=${s%%|*} args=${s#*|}
	if [ -n "$ONLY" ]; then
		hit=0
		set -f # patterns, not file names
		for pat in $ONLY; do
			# shellcheck disable=SC2053
			[[ $id == $pat ]] && hit=1
		done
		set +f
		[ "$hit" = 1 ] || continue
	fi
	for rep in $(seq "$REPS"); do
		if [ $((rep % 2)) = 1 ]; then order="wisp mosquitto"; else order="mosquitto wisp"; fi
		for b in $order; do run_one "$b" "$id" "$args" "$rep"; done
	done
done
ELAPSED=$(($(date +%s) - START))

MACHINE="$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
/usr/bin/python3 "$HERE/summarize.py" "$RUNS" "$OUT" \
	--meta "date=$STARTED" --meta "commit=$COMMIT" --meta "machine=$MACHINE" \
	--meta "reps=$REPS" --meta "payload=$PAYLOAD" --meta "elapsed_s=$ELAPSED" \
	--meta "mosquitto=$("$MOSQ" -h 2>/dev/null | head -1 | sed 's/^mosquitto version //')" || die "summary failed"
if [ "$HAVE_GNUPLOT" = 1 ]; then gnuplot "$OUT/results.gp" || die "gnuplot failed"; fi
cat "$OUT/results.md"
echo
echo "files: $OUT/results.md $OUT/results.json $OUT/results.png $OUT/runs.jsonl (${ELAPSED}s)"
