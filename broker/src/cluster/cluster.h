/*
 * Scale-out over NATS: a router (proto/router.h) on top of the broker's
 * local one, so several Wisp nodes sharing a NATS server act as one broker
 * for publish/subscribe.
 *
 *  - publish: a client's message goes to the local subscribers (the local
 *    router) and once to NATS, on the subject of its topic (subject.h),
 *    with its QoS, RETAIN, remaining Message Expiry Interval, forwarded v5
 *    properties and this node's name as NATS headers; the payload is the
 *    raw MQTT payload, so NATS-native consumers read it as is (QoS 1/2:
 *    on the stream's subject, durable.h). $SYS topics stay on their node.
 *  - publish only what is wanted: a message no other node's filter
 *    matches is not sent to NATS at all (interest.h).
 *  - interest: the node subscribes on NATS to the subject of each filter
 *    its local sessions hold, counted per filter: the first local
 *    subscription to a filter subscribes, the last one gone (UNSUBSCRIBE,
 *    or its session ending) unsubscribes. A message published elsewhere
 *    therefore reaches this node only when something here wants it.
 *  - a message from NATS is routed to the local subscribers only (never
 *    back to NATS). The connection is no-echo, so NATS never returns a
 *    node's own messages; one carrying this node's name anyway is dropped
 *    and counted.
 *
 * cnats runs its own threads (connection, reconnect, message delivery);
 * they only hand messages and connection events to the loop thread through
 * inbox.h. The messages another node wants are published by a thread of
 * their own (sender.h), so a NATS server that stops reading never holds
 * the loop; while the main connection is lost the loop also defers its
 * SUBs and UNSUBs. Everything else runs on the loop thread.
 *
 *  - shared subscription groups are NATS queue groups (groups.h);
 *    retained messages go through a JetStream KV bucket (retained_kv.h);
 *    a client id connected here is taken over elsewhere (presence.h), and a
 *    persistent session follows its client there (handover.h);
 *    $SYS/cluster/ sums every node's figures (totals.h).
 *
 *  - QoS 1/2 (cluster.durable, the default) go through a JetStream stream
 *    as well, their publishers' acks held until it stored them (durable.h).
 */
#ifndef WISP_CLUSTER_CLUSTER_H
#define WISP_CLUSTER_CLUSTER_H

#include <stddef.h>

struct broker;
struct cluster;
struct config;

/*
 * Puts a cluster router in front of b's router when b's configuration has
 * a `cluster` section (else does nothing and sets *out NULL). Connects to
 * NATS in the background: the broker serves local clients while NATS is
 * unreachable. A NATS server that refuses the node (TLS, credentials:
 * cnats would not retry) leaves it alone, logged, with *out NULL. 0, or a
 * negative WISP_E* with the reason in err.
 */
int cluster_start(struct broker *b, struct cluster **out, char *err, size_t errlen);
/* What cluster_start would refuse in cfg's NATS TLS and credentials (a PEM
 * file cnats cannot load, a seed that is not the nkey's), without
 * connecting: for --check-config. 0, or a WISP_E* with
 * "<file>: cluster.<key>: <reason>" in err. */
int cluster_check_config(const struct config *cfg, char *err, size_t errlen);
/* Closes the NATS connection and gives b its local router back. NULL: no-op. */
void cluster_stop(struct cluster *c);

#endif
