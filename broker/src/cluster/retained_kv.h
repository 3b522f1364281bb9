/*
 * Retained messages cluster-wide, through a JetStream key-value bucket
 * (`cluster.retained_bucket`, replicated `cluster.retained_replicas` times).
 *
 * Every node keeps its own retained store (topic/retained.h) and serves
 * SUBSCRIBE from it, as a single node does; the bucket keeps those stores
 * equal:
 *  - a retained PUBLISH (or will) accepted here is stored locally as
 *    always, and goes to the bucket's subject for its topic
 *    ("$KV.<bucket>.<mapped topic>", subject.h's mapping) as a JetStream
 *    publish, with the QoS, the forwarded v5 properties and the absolute
 *    expiry as headers; an empty payload publishes a KV delete marker
 *    [MQTT-3.3.1-10];
 *  - every node (this one too) follows the bucket with a JetStream ordered
 *    consumer that starts with the last record of each topic, so a node
 *    started later receives everything retained so far, and applies each
 *    record to its own store (a delete marker, an empty payload or an
 *    expired record clears the topic).
 * Records are applied in the stream's order, so all stores converge on the
 * bucket.
 *
 * At least once, in order: the topic's last write waits in an outbox
 * (oldest first, one entry per topic) until JetStream acknowledges it; a
 * thread of this module sends it, and again every 500 ms with the same
 * Nats-Msg-Id until an answer comes (NATS down, JetStream away). While a
 * topic's write is unsent, the bucket's records of that topic are not
 * applied (ours will land after them); once acknowledged at stream
 * sequence S, records up to S are skipped and a later one applies, so the
 * publishing node's store never steps back. With persistence each write
 * also leaves a RETAIN_UNSENT mark in the store (RETAIN_SENT once
 * acknowledged), and a restart sends the marked topics again, first,
 * before the bucket's older records can replace them.
 *
 * The bucket is created (or bound) and the consumer made on a thread of
 * this module, retried every second until JetStream answers, and the same
 * thread then reads the consumer (a synchronous subscription) into the
 * inbox: the loop thread never waits for NATS. Without JetStream the node
 * logs it once and retained messages stay per node (its writes wait in
 * the outbox, bounded as below).
 *
 * Memory: the pending table, one entry per topic with a write not yet
 * known to be passed in the stream, holding a reference to the stored
 * message (no copy): at most the stored retained messages plus
 * RETAINED_KV_PENDING_MAX (deletions, refused writes); past it a write is
 * published once without an answer, counted (cluster/retained/untracked).
 * At most 16 NATS copies wait for the sender thread.
 */
#ifndef WISP_CLUSTER_RETAINED_KV_H
#define WISP_CLUSTER_RETAINED_KV_H

#include <stdbool.h>
#include <stddef.h>

#include <nats/nats.h>

struct broker;
struct inbox;
struct msg;
struct nats_retire;
struct retained_kv;

/* The inbox event bit the module raises when its set-up thread has news
 * (retained_kv_event reads it). */
#define RETAINED_KV_EVENT 0x100u

/* Starts the set-up thread on the connection nc (borrowed until
 * retained_kv_stop). Writes past the outbox go at most once through
 * `untracked` (the node's sender.h). Messages go to inbox, news as
 * RETAINED_KV_EVENT.
 * `origin` marks the messages this module makes. Takes the writes the
 * store restored as unsent (persist_retain_unsent_get) into the outbox, and
 * writes the marks at compaction from then on. 0 or WISP_ENOMEM/WISP_EIO. */
struct sender;
int retained_kv_start(struct retained_kv **out, struct broker *b, natsConnection *nc, struct sender *untracked,
		      struct inbox *inbox, const char *node, const void *origin);
/* Stops both threads and the consumer; before the connection closes (a
 * write in flight stays first in the sender's queue). The
 * subscription goes to `retired` (retire.h: destroyed once no read loop
 * can still hold it; NULL: at once). */
void retained_kv_stop(struct retained_kv *r, struct nats_retire *retired);
/* Loop thread: moves to nc, the connection made anew after cnats closed
 * the old one for good: the thread ends and starts again on nc (bucket
 * set-up, then every record once more, as at start). NULL: no-op. 0, or
 * WISP_EIO (no thread: retained messages stay on this node). The old
 * subscription goes to `retired`, as at retained_kv_stop. */
int retained_kv_rebind(struct retained_kv *r, natsConnection *nc, struct nats_retire *retired);
/* Frees the rest, once cnats's threads are gone. NULL: no-op. */
void retained_kv_free(struct retained_kv *r);

/* Loop thread: m (retain set, not $SYS) was accepted on this node (its
 * RETAIN_SET or RETAIN_DEL already appended): into the outbox for the
 * bucket, marked in the store. */
void retained_kv_publish(struct retained_kv *r, const struct msg *m);
/* Loop thread: when nm came from the bucket's consumer, applies it to the
 * local store and returns true (the caller still destroys nm). */
bool retained_kv_message(struct retained_kv *r, natsMsg *nm);
/* Loop thread, on RETAINED_KV_EVENT: takes the sender's answers, logs the
 * set-up's outcome. */
void retained_kv_event(struct retained_kv *r);

#endif
