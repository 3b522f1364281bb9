#!/bin/bash
# wisp_stand_in.sh: another Wisp binary in Mosquitto's place in compare.sh,
# for a before/after comparison within one run (both brokers alternate and
# are measured alike):
#
#   WISP_STAND_IN=/path/to/old/wisp bench/compare.sh --mosquitto bench/wisp_stand_in.sh ...
#
# compare.sh starts "$MOSQ -c mosquitto.conf"; this reads the listener port
# and TLS certificate and key from that file, writes the JSON configuration
# compare.sh gives Wisp (limits, no persistence, warnings only) and execs
# $WISP_STAND_IN, so the PID compare.sh measures is that broker's. Rows
# compare.sh runs with Mosquitto-specific settings (WebSocket listeners,
# persistence) are not translated: use it for plain TCP and TLS rows.
set -eu
[ "${1:-}" = -c ] && [ -n "${2:-}" ] || { echo "usage: $0 -c mosquitto.conf" >&2; exit 2; }
[ -x "${WISP_STAND_IN:-}" ] || { echo "$0: set WISP_STAND_IN to a wisp binary" >&2; exit 2; }
conf=$2
port=$(awk '$1 == "listener" { p = $2 } END { print p }' "$conf")
cert=$(awk '$1 == "certfile" { print $2 }' "$conf")
key=$(awk '$1 == "keyfile" { print $2 }' "$conf")
json=${conf%.conf}.stand-in.json
listener="{\"bind\": \"127.0.0.1\", \"port\": $port}"
[ -n "$cert" ] && listener="{\"bind\": \"127.0.0.1\", \"port\": $port, \"protocol\": \"mqtts\", \"tls\": {\"cert\": \"$cert\", \"key\": \"$key\"}}"
cat >"$json" <<EOT
{"listeners": [$listener],
 "limits": {"max_inflight": 65535, "max_queued_messages": 100000, "max_output_buffer": 67108864,
            "max_packet_size": 16777216},
 "persistence": {"enabled": false},
 "log": {"level": "warning"}}
EOT
exec "$WISP_STAND_IN" -c "$json"
