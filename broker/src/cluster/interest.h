/*
 * Interest-based publishing: a node sends a message to NATS only when some
 * other node wants it (cluster.interest, on by default).
 *
 * Each node announces the distinct filters its sessions hold on
 * "$WISP.<prefix>.interest" over its main NATS connection: "add" when the
 * first local subscription to a filter is made, "del" when the last one
 * goes, a full "snap" (in parts) when it joins or is asked ("hello",
 * "sync"), a "beat" with its last announcement's number every
 * cluster.interest_interval seconds, and "bye" when it stops. Every other
 * node keeps the filters of each node it heard from in one topic trie
 * (topic/trie.h) and asks it before publishing: a message that matches no
 * other node's filter stays local (QoS 0: no NATS publish; QoS 1/2: no
 * JetStream round trip, acknowledged as a single node does).
 *
 * When in doubt, a node sends: for one interval (plus a second) after it
 * (re)connects to NATS, while any node it knows has not sent a complete
 * snapshot since a gap in its numbering (a lost announcement, a restart),
 * for three intervals after hearing from more nodes than it keeps, while
 * a node's filters are past cluster.max_remote_filters or
 * max_remote_filter_bytes (announce.h), and for three intervals after an
 * announcement no Wisp node writes. QoS 1/2 also while a node that is not
 * heard has its durable consumer on the stream (a dormant node,
 * dormant.h: its persistent sessions get the stream's messages when it
 * is back), and at start until the stream's consumers are known.
 *
 * No subscriber misses a message published after its SUBACK: an "add"
 * carries a reply subject, every node answers once it applied the filter,
 * and the SUBACK of a SUBSCRIBE that made a new filter waits (the broker's
 * sub_gate) until the node's settling interval after (re)connecting is
 * over and every node known here answered, for the answers at most
 * cluster.interest_ack_timeout seconds (then it goes anyway, counted in
 * $SYS/broker/cluster/interest/ack_timeouts). The announcement travels on
 * the connection that holds the filter's NATS subscription, after it, so
 * a node that answered cannot publish before that subscription is in
 * place (NATS handles one connection's messages in order). $SYS filters
 * are not announced: their topics never cross nodes. Shared
 * subscriptions' queue subscriptions live on the other connection
 * (groups.h), which the answers cannot order: there the node publishes a
 * mark (its own answer, to its own reply subject) right after the queue
 * SUB, and the SUBACK waits for the mark to come back as well, within the
 * same timeout. Once it is back, nats-server has the queue SUB.
 *
 * Loop thread only: the messages come through the cluster's inbox.
 */
#ifndef WISP_CLUSTER_INTEREST_H
#define WISP_CLUSTER_INTEREST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "sender.h"

struct broker;
struct topic_level;
struct remote_interest;

/* Announces on nc (the node's main connection, after the filters' NATS
 * subscriptions) through sender's thread (sender.h), listens and answers
 * on snc (<node>-share, so that the main connection's figures on /connz
 * stay the MQTT data's; answers through share_sender's thread) and
 * installs b's sub_gate. 0 with *out NULL when cluster.interest is off. */
struct nats_link;
int remote_interest_start(struct remote_interest **out, struct broker *b, natsConnection *nc, struct sender *sender,
			  natsConnection *snc, struct sender *share_sender, const struct nats_link *snc_link,
			  const char *node, const char *run, const char *prefix, sender_msg_fn on_msg,
			  void *on_msg_closure);
/* Says "bye" (on nc itself: the sender is stopped by then), unsubscribes
 * (the UNSUBs queued on share_sender, before it stops), removes the gate.
 * NULL: no-op. */
void remote_interest_stop(struct remote_interest *ri);
/* Loop thread: moves to nc and snc, connections made anew after cnats
 * closed one for good (subscriptions on a replaced snc ended, queued again
 * on the new one); announces itself as after a reconnect once both are up.
 * NULL: no-op. 0 or WISP_ENOMEM. */
int remote_interest_rebind(struct remote_interest *ri, natsConnection *nc, natsConnection *snc);
/* What cnats dropped of its two subscriptions so far (sender_sub_dropped).
 * NULL: 0. */
uint64_t remote_interest_pending_dropped(const struct remote_interest *ri);
void remote_interest_free(struct remote_interest *ri);

/* A local subscription to `filter` made or gone ($share/g/f too). */
void remote_interest_local_add(struct remote_interest *ri, const char *filter, size_t len);
void remote_interest_local_remove(struct remote_interest *ri, const char *filter, size_t len);

/* A new shared filter's queue SUB will be sent (groups_ref true): the
 * SUBACKs of the adds up to `mark` also wait for remote_interest_mark(mark)
 * to come back. The mark is the filter's add: remote_interest_last_add(),
 * taken after remote_interest_local_add. 0 (or ri NULL): no wait. */
uint64_t remote_interest_last_add(const struct remote_interest *ri);
void remote_interest_await_mark(struct remote_interest *ri, uint64_t mark);
/* Publishes `mark` on snc; call right after the queue SUB. */
void remote_interest_mark(struct remote_interest *ri, uint64_t mark);
/* The same for a filter whose SUB went on the data connection (cluster.c
 * sends its PING mark there): the SUBACKs of the adds up to `add` wait
 * until remote_interest_writer_marked(add) (or a later add). */
void remote_interest_await_writer(struct remote_interest *ri, uint64_t add);
void remote_interest_writer_marked(struct remote_interest *ri, uint64_t add);

/* Whether another node may want a message on this topic. NULL: true. */
bool remote_interest_wanted(const struct remote_interest *ri, const struct topic_level *levels, size_t nlevels);

/*
 * Dormant nodes (dormant.h), when QoS 1/2 go through a JetStream stream:
 * `ask` asks for the list of the stream's consumers and returns the ask's
 * number (rising); the answer comes to remote_interest_consumers. Asked
 * now, every interval, and right away when a node is forgotten.
 */
void remote_interest_track_consumers(struct remote_interest *ri, uint64_t (*ask)(void *ctx), void *ctx);
void remote_interest_consumers(struct remote_interest *ri, const char *const *names, size_t n, uint64_t ask);
/* Whether every QoS 1/2 message must go to the stream, wanted or not: no
 * consumer list yet, or a node is dormant. NULL or not tracking: false. */
bool remote_interest_stream_doubt(const struct remote_interest *ri);

/* After a NATS connection event: both connections up again means
 * announcements may have been lost, so everything is sent for an interval
 * and every node is asked for its set (also checked each second). */
void remote_interest_check_connections(struct remote_interest *ri);

/* True when nm was an announcement or an answer (handled). */
bool remote_interest_message(struct remote_interest *ri, natsMsg *nm);

/* The other nodes' filters as one topic trie, a count per filter (a shared
 * subscription counts under its inner filter); apart for the unit tests.
 * init and count: 0 or WISP_ENOMEM (the trie unchanged). trie_destroy
 * frees it. */
struct trie;
int interest_trie_init(struct trie *t);
int interest_trie_count(struct trie *t, const char *filter, size_t len, bool add);
/* Whether any filter counted in t matches the topic. */
bool interest_trie_match(const struct trie *t, const struct topic_level *levels, size_t nlevels);

#endif
