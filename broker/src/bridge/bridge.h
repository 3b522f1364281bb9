/*
 * Bridges: Wisp as a client of other brokers (the `bridges` section), so a
 * gateway forwards its local traffic to a central broker and takes some
 * of the central broker's traffic back.
 *
 * A bridge is a local persistent session, "$bridge/<name>", whose sink is
 * an outbound connection instead of an accepted one. Its out rules are the
 * session's subscriptions (with No Local, so what came in over the bridge
 * never goes back, and Retain As Published); while the remote is
 * unreachable the session is offline and QoS 1/2 messages wait in its
 * queue, in the store like any persistent session's, bounded by the
 * bridge's max_queued_messages and max_queued_bytes (with queue_qos0,
 * QoS 0 messages wait too, in the bridge's own list in memory, under the
 * same bounds, and follow the QoS 1/2 window out). When the remote
 * answers CONNACK the session is resumed: the unacknowledged window goes
 * again (DUP), then the queue, in order. A message leaves the queue only
 * when the remote acknowledged it (PUBACK, PUBCOMP), so an uplink outage,
 * a remote restart or kill -9 of Wisp loses nothing that was
 * acknowledged to its local publisher.
 *
 * Inbound, the remote's PUBLISHes go through the broker's own PUBLISH
 * handler as if the session had sent them: routed, written to the store,
 * and acknowledged to the remote only after that (with fsync "always",
 * after the fsync). Their origin is the bridge's session, so No Local keeps
 * them from going out again over this bridge.
 *
 * The connection itself is an ordinary struct conn in the server's set
 * (flushing, keepalive, output bounds), flagged `outbound`; proto/ hands
 * its packets and its end to this module (broker_outbound_ops). Reaching
 * the remote is the client engine's connector (client/connector.h), the
 * one the client tools use: the addresses in turn (failover), each name
 * resolved on the bridges' own helper threads (a name server that does not
 * answer stalls nothing; connect_timeout bounds the lookup, the dial and
 * the TLS handshake together), reconnects backing off exponentially from
 * reconnect_min to reconnect_max seconds with jitter (each wait drawn
 * between half and all of it). Its CONNECT encoder and its reading of an
 * MQTT 5 CONNACK's limits are the tools' too.
 *
 * Loops with the remote: MQTT 5 subscriptions carry No Local and Retain As
 * Published; a 3.1.1 CONNECT carries Mosquitto's bridge flag (protocol
 * level | 0x80, try_private), with which Mosquitto does not send a bridge
 * its own messages back.
 *
 * A new out rule sends what is retained under it once, as a new
 * subscription does; a stored bridge session whose bridge left the
 * configuration ends at start.
 *
 * Topic mapping: a rule's local topic is local_prefix + pattern match,
 * the remote one remote_prefix + the same. Out, a message whose prefixes
 * differ is copied once under its remote topic (without prefixes the
 * shared message goes as it is); in, the topic is rewritten before the
 * handler copies the message anyway.
 *
 * With local_username the session is that user's: the ACL applies to
 * what crosses (write inbound, read outbound); without, it does not.
 *
 * Single threaded, on the loop thread (but for the name lookups, whose
 * helper threads the exit leaves behind rather than waits for).
 */
#ifndef WISP_BRIDGE_BRIDGE_H
#define WISP_BRIDGE_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct broker;
struct bridges;
struct config;

/* Starts every configured bridge (none: *out NULL, nothing done). After
 * broker_init, so sessions restored from the store are found. 0, or a
 * negative WISP_E* with the reason in err. */
int bridges_start(struct broker *b, struct bridges **out, char *err, size_t errlen);
/* For --check-config: builds and frees each bridge's TLS client context as
 * start-up would, so the check refuses what start-up refuses, in the same
 * words. 0, or a negative WISP_E* with the reason in err. */
int bridges_check_tls(const struct config *cfg, char *err, size_t errlen);

/* Closes the connections and stops the timers (before broker_free, which
 * frees the closed connections: they still name the bridges' stand-in
 * listeners, and their end still reaches this module). */
void bridges_stop(struct bridges *bs);
/* Frees (after broker_free). NULL is a no-op for both. */
void bridges_free(struct bridges *bs);

#endif
