#!/bin/bash
# cluster.sh: issue 16's cluster benchmark on loopback: one Wisp node against
# two nodes over one nats-server, and cross-node against same-node latency.
#
#   bench/cluster.sh [--reps N] [--duration S] [--pairs N] [--out DIR]
#                    [--rows REGEX] [--wisp PATH] [--bench PATH] [--nats PATH]
#                    [--cluster-keys '"key": value, ...']
#
# Rows (each repeated N times, default 3; the median is reported):
#   pairs q0/q1, "alone":  one node without a cluster section (no NATS hop)
#   pairs q0/q1, "1 node": one cluster node, no other node: with
#                          cluster.interest (the default) it sends nothing
#                          to NATS; "1node-sendall": the same with
#                          "interest": false, publishing every message to
#                          NATS (QoS 1: through JetStream), which is what the
#                          publishing node pays when another node wants it
#   pairs q0/q1, "2 nodes": half the pairs cross nodes (wisp_bench --port2);
#                          "2nodes-sendall" with "interest": false
# --rows: only the rows whose id matches REGEX (grep -E).
# --cluster-keys: more keys of every node's cluster section, for an A/B of
#   one setting in one binary (e.g. '"data_connection": false').
#   latency q0/q1 at --rate 10000 on two nodes: subscribers on the same node
#                          as the publishers, then on the other node
# QoS 1 runs use the nodes' default `durable: true` (JetStream stream).
# Broker CPU is the sum of the nodes' utime+stime from /proc over the
# measurement window (wisp_bench --broker-pid/--broker-pid2); the NATS
# server's CPU is read from /proc over the whole wisp_bench run and divided
# by every message delivered in that run. Nothing is pinned: the two cores
# are shared by the nodes, nats-server and the generator (pinning four busy
# processes on two cores would only choose who waits).
# Every process this script starts is stopped by its PID at exit; each
# wisp_bench run is bounded by `timeout`. Writes DIR/runs.jsonl and
# DIR/results.md (default build/bench-results/cluster-<date>).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
REPS=3 CLUSTER_KEYS="" DURATION=5 PAIRS=20 OUT="" ROWS="" WISP="" BENCH="" NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
while [ $# -gt 0 ]; do
	case "$1" in
	--reps) REPS=$2; shift ;;
	--duration) DURATION=$2; shift ;;
	--pairs) PAIRS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--rows) ROWS=$2; shift ;;
	--wisp) WISP=$2; shift ;;
	--bench) BENCH=$2; shift ;;
	--nats) NATS=$2; shift ;;
	--cluster-keys) CLUSTER_KEYS=", $2"; shift ;;
	-h|--help) sed -n '2,25p' "$0"; exit 0 ;;
	*) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
die() { echo "cluster.sh: $*" >&2; exit 1; }
WISP=${WISP:-$ROOT/build/release/broker/wisp}
BENCH=${BENCH:-$ROOT/build/release/bench/wisp_bench}
[ -x "$WISP" ] || die "no wisp at $WISP (cmake --preset release && cmake --build --preset release)"
[ -x "$BENCH" ] || die "no wisp_bench at $BENCH"
[ -x "$NATS" ] || die "no nats-server at $NATS"
OUT=${OUT:-$ROOT/build/bench-results/cluster-$(date -u +%Y-%m-%d-%H%M)}
mkdir -p "$OUT" || die "cannot create $OUT"
TMP=$(mktemp -d /tmp/wisp-cluster-bench.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	PIDS=()
}
trap 'cleanup; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cpu_ticks() { # utime+stime of PID
	awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0
}
wait_port() { # pid port
	for _ in $(seq 200); do
		kill -0 "$1" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
wait_log() { # file text
	for _ in $(seq 200); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

NATS_PID="" NODE_PIDS=() NODE_PORTS=()
start_nats() {
	NATS_PORT=$(free_port)
	rm -rf "$TMP/nats"
	"$NATS" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$TMP/nats" >"$TMP/nats.log" 2>&1 &
	NATS_PID=$!
	PIDS+=("$NATS_PID")
	wait_port "$NATS_PID" "$NATS_PORT" || die "nats-server did not start: $(tail -3 "$TMP/nats.log")"
}
start_node() { # name cluster(0|1) interest(true|false)
	local port cl=""
	port=$(free_port)
	rm -rf "$TMP/data-$1"
	[ "$2" = 1 ] && cl=", \"cluster\": {\"nats\": [\"nats://127.0.0.1:$NATS_PORT\"], \"node\": \"$1\", \"interest\": $3$CLUSTER_KEYS}"
	cat >"$TMP/$1.json" <<-EOF
	{"listeners": [{"bind": "127.0.0.1", "port": $port}],
	 "limits": {"max_inflight": 65535, "max_queued_messages": 100000, "max_output_buffer": 67108864},
	 "persistence": {"dir": "$TMP/data-$1"},
	 "log": {"level": "notice"}$cl}
	EOF
	"$WISP" -c "$TMP/$1.json" >"$TMP/$1.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	wait_port "$pid" "$port" || die "node $1 did not start: $(tail -3 "$TMP/$1.log")"
	if [ "$2" = 1 ]; then
		wait_log "$TMP/$1.log" "connected to NATS" || die "node $1 did not reach NATS"
		wait_log "$TMP/$1.log" "JetStream ready" || die "node $1: no JetStream: $(tail -3 "$TMP/$1.log")"
		# What crosses at most once goes on the data connection once it is up.
		case "$CLUSTER_KEYS" in *'"data_connection": false'*) ;; *)
			wait_log "$TMP/$1.log" "NATS data connection up" || die "node $1: no data connection: $(tail -3 "$TMP/$1.log")" ;;
		esac
	fi
	NODE_PIDS+=("$pid")
	NODE_PORTS+=("$port")
}
setup() { # nodes(0=alone,1,2) interest(true|false)
	cleanup
	NODE_PIDS=() NODE_PORTS=() NATS_PID=""
	if [ "$1" = 0 ]; then
		start_node a 0
		return
	fi
	start_nats
	start_node a 1 "$2"
	[ "$1" = 2 ] && start_node b 1 "$2"
	if [ "$2" = true ]; then # each node knows the others' interest (one interval after joining)
		local names=a
		[ "$1" = 2 ] && names="a b"
		for n in $names; do
			wait_log "$TMP/$n.log" "sending NATS only what" || die "node $n: interest never known"
		done
	fi
	return 0
}

RUNS=$OUT/runs.jsonl
: >"$RUNS"
# row: id nodes scenario qos cross(0|1) [interest(true|false)]
bench_row() {
	local id=$1 nodes=$2 sc=$3 qos=$4 cross=$5 interest=${6:-true}
	[ -z "$ROWS" ] || echo "$id" | grep -Eq "$ROWS" || return 0
	setup "$nodes" "$interest"
	local args=("$sc" -q "$qos" -N "$PAIRS" -d "$DURATION" -w 1 --drain 2 -p "${NODE_PORTS[0]}"
		--broker-pid "${NODE_PIDS[0]}" --json)
	[ "$sc" = latency ] && args+=(-r 10000)
	if [ "$cross" = 1 ]; then
		args+=(--port2 "${NODE_PORTS[1]}" --broker-pid2 "${NODE_PIDS[1]}")
	fi
	local n0=0 n1=0 t0 t1
	[ -n "$NATS_PID" ] && n0=$(cpu_ticks "$NATS_PID")
	t0=$(date +%s.%N)
	timeout $((DURATION + 60)) "$BENCH" "${args[@]}" >"$TMP/out.json" 2>"$TMP/err.txt"
	local rc=$?
	t1=$(date +%s.%N)
	[ -n "$NATS_PID" ] && n1=$(cpu_ticks "$NATS_PID")
	local res
	res=$(head -n1 "$TMP/out.json")
	[ -n "$res" ] || res='{"ok":false}'
	python3 - "$id" "$nodes" "$cross" "$rc" "$n0" "$n1" "$t0" "$t1" "$(getconf CLK_TCK)" "$res" \
		"$(tr '\n' ' ' <"$TMP/err.txt" | cut -c1-300)" >>"$RUNS" <<-'PY'
	import json, sys
	id_, nodes, cross, rc, n0, n1, t0, t1, hz, res, err = sys.argv[1:]
	r = json.loads(res)
	nats_s = (float(n1) - float(n0)) / float(hz)
	tot = r.get("total_delivered") or 0
	r.update(id=id_, nodes=int(nodes), cross=int(cross), rc=int(rc), nats_cpu_s=nats_s,
		 nats_cpu_us_per_msg=nats_s * 1e6 / tot if tot else 0, run_s=float(t1) - float(t0), stderr=err)
	print(json.dumps(r))
	PY
	echo "  $id: $(tail -n1 "$RUNS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("rc=%s delivered %.0f/s broker %.2f us/msg nats %.2f us/msg p50 %s p99 %s lost %s" % (r["rc"], r.get("delivered_rate",0), r.get("broker_cpu_us_per_msg",0), r["nats_cpu_us_per_msg"], r.get("latency_us",{}).get("p50"), r.get("latency_us",{}).get("p99"), r.get("lost")))')"
}

START=$(date +%s)
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
	echo "machine: $(nproc) CPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr)"
	echo "nats-server: $("$NATS" --version 2>&1)"
	[ -n "$CLUSTER_KEYS" ] && echo "cluster keys:${CLUSTER_KEYS#,}"
	echo "uptime before: $(uptime)"
} | tee "$OUT/meta.txt"
for rep in $(seq "$REPS"); do
	echo "repetition $rep/$REPS"
	for q in 0 1; do
		bench_row "pairs-q$q-alone" 0 pairs "$q" 0
		bench_row "pairs-q$q-1node" 1 pairs "$q" 0
		bench_row "pairs-q$q-1node-sendall" 1 pairs "$q" 0 false
		bench_row "pairs-q$q-2nodes" 2 pairs "$q" 1
		bench_row "pairs-q$q-2nodes-sendall" 2 pairs "$q" 1 false
		bench_row "latency-q$q-same" 2 latency "$q" 0
		bench_row "latency-q$q-cross" 2 latency "$q" 1
	done
done
cleanup
echo "uptime after: $(uptime)" | tee -a "$OUT/meta.txt"

python3 - "$RUNS" "$OUT/meta.txt" >"$OUT/results.md" <<-'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("".join("    " + l for l in open(sys.argv[2])))
def med(xs):
    return statistics.median(xs) if xs else 0
ids = []
for r in runs:
    if r["id"] not in ids:
        ids.append(r["id"])
print("| row | runs ok | delivered/s | broker CPU µs/msg (both nodes) | NATS CPU µs/msg | p50 µs | p99 µs | lost |")
print("|---|---|---|---|---|---|---|---|")
for i in ids:
    rs = [r for r in runs if r["id"] == i]
    ok = [r for r in rs if r.get("ok") and r["rc"] == 0]
    use = ok or rs
    lat = [r.get("latency_us", {}) for r in use]
    print("| %s | %d/%d | %.0f | %.2f | %.2f | %.0f | %.0f | %d |" % (
        i, len(ok), len(rs), med([r.get("delivered_rate", 0) for r in use]),
        med([r.get("broker_cpu_us_per_msg", 0) for r in use]), med([r["nats_cpu_us_per_msg"] for r in use]),
        med([l.get("p50", 0) for l in lat]), med([l.get("p99", 0) for l in lat]),
        sum(r.get("lost", 0) or 0 for r in use)))
PY
cat "$OUT/results.md"
echo "files: $OUT/results.md $OUT/runs.jsonl ($(($(date +%s) - START))s)"
