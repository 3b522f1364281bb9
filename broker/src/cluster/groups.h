/*
 * Shared subscription groups cluster-wide: `$share/g/f` is one group over
 * every node's members, so a message goes to one member of the group in
 * the whole cluster, once [MQTT-4.8.2-3 ... one session per group].
 *
 * Each node with members of a group holds one NATS queue subscription for
 * it (queue name: a digest of "$share/g/f", subject: f's subject); NATS
 * gives each message to one queue subscriber of the group among all the
 * nodes, and that node gives it to one of its members (proto/share.c's
 * round robin, route_share_deliver). The node that publishes skips its own
 * groups (route_ctx.shares_elsewhere), since NATS picks for them too.
 *
 * The queue subscriptions live on a second NATS connection, with echo on:
 * the main one is no-echo, and a node's own members must be candidates for
 * the messages its own clients publish. The same connection carries the
 * client-id claims (presence.h) and the $SYS figures (totals.h). The queue
 * SUBs and UNSUBs go through that connection's sender thread (sender.h),
 * so a stalled write on it never holds the loop. cnats's delivery thread
 * tags each message of a queue subscription with the number the loop gave
 * the subscription (header Wisp-Share) and hands it to the cluster's
 * inbox; the loop thread maps the number back to
 * the group (a number whose group is gone maps to nothing: the message is
 * dropped, as a local group that just lost its last member drops it).
 *
 * QoS 1/2 messages that went through the JetStream stream (durable.h)
 * reach a group through its own durable consumers on the stream instead,
 * one bound by each node with members, with a deliver group: JetStream
 * gives each message to one node, and redelivers one that node did not
 * ack (killed, frozen) to another, so a group loses nothing acknowledged
 * either (groups_set_stream; docs/cluster.md "Shared subscriptions").
 *
 * Memory: one entry per distinct shared filter this node's sessions hold,
 * at most cluster.max_groups of them (groups_admit), about 140 bytes plus
 * the key, in three fixed hash tables of GROUPS_BUCKETS (by key, by NATS
 * subscription's tag, by digest); the JetStream worker keeps the
 * consumers' names and subjects of each (jetstream.h); the sender destroys
 * a queue subscription left 5 s later (retire.h).
 * Loop thread only, except the message callback.
 */
#ifndef WISP_CLUSTER_GROUPS_H
#define WISP_CLUSTER_GROUPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

struct inbox;
struct cluster_groups;
struct sender;

/* Raised on the inbox: the connection is up (first connect, reconnect, or
 * one made anew), or cnats closed it for good (groups_closed tells whether
 * the current one is). */
#define GROUPS_EV_UP 0x8u
#define GROUPS_EV_CLOSED 0x10u
/* Raised on the inbox: cnats lost the connection and reconnects. */
#define GROUPS_EV_DOWN 0x400u
struct config_cluster;
struct nats_signer;

/* Connects the second connection (in the background, as the main one) to
 * cfg->nats (with cfg's TLS and credentials, signer's NKey) as
 * "<node>-share", handing its messages to `inbox`, and keeps *count (the
 * cluster/subjects figure) up by the queue subscriptions it holds, made
 * and ended by `sender` (the connection's own). Borrows all three until
 * groups_free. 0, or WISP_ENOMEM / WISP_EIO /
 * WISP_ECONFIG (nats_auth.h) with err set. */
int groups_start(struct cluster_groups **out, const struct config_cluster *cfg, const struct nats_signer *signer,
		 const char *node, const char *prefix, struct sender *sender,
		 struct inbox *inbox, uint64_t *count, char *err, size_t errlen);
/* Leaves every group: their UNSUBs (those of groups left earlier too) are
 * queued on the sender, which must still run. Before sender_stop. NULL:
 * no-op. */
void groups_leave(struct cluster_groups *g);
/* Leaves every group (if groups_leave did not) and closes the connection,
 * once the sender, which makes and ends its subscriptions, is stopped.
 * groups_free, once cnats's threads are gone (nats_CloseAndWait), frees
 * the rest. NULL: no-op. */
void groups_close(struct cluster_groups *g);
void groups_free(struct cluster_groups *g);

/* One more (less) local member subscription of the shared filter `key`
 * ("$share/g/f", valid): the first subscribes the queue, the last gone
 * unsubscribes it. groups_ref returns true when it is the first: then
 * on_subscribed(mark) follows right after its queue SUB is queued (a
 * mark of 0: none). */
bool groups_ref(struct cluster_groups *g, const char *key, size_t len, uint64_t mark);
void groups_unref(struct cluster_groups *g, const char *key, size_t len);

/* Whether a member subscription of `key` ("$share/g/f", valid) may be
 * added: its group is held here already, or this node holds fewer than
 * cluster.max_groups groups (each costs nats-server one or two durable
 * consumers and a queue subscription, whoever asks). false: refused, and
 * the first refusal since a new group was last made is logged. The
 * sessions the store restored before the cluster started joined their
 * groups whatever the bound (count_existing): past it, only their leaving
 * makes room. */
bool groups_admit(struct cluster_groups *g, const char *key, size_t len);

/* Whether nm came from a queue subscription (it has the tag); if so, *key
 * is its group's key ("$share/g/f", *len bytes) or NULL when the group has
 * gone since. */
bool groups_message(struct cluster_groups *g, natsMsg *nm, const char **key, size_t *len);

/* Calls cb(ctx, mark), on the loop thread, right after a new group's
 * queue SUB is queued on the second connection's sender: anything cb
 * queues on that sender reaches nats-server after the SUB. `loop` times
 * the debug builds' WISP_DEBUG_DELAY_SHARE_SUB. Borrows all until
 * groups_close. */
struct loop;
void groups_on_subscribed(struct cluster_groups *g, struct loop *loop, void (*cb)(void *ctx, uint64_t mark),
			  void *ctx);

/* The stream side of the groups (durable.h): join(ctx, id, name, subject,
 * parent) binds the group numbered id to its stream consumers (name, and
 * name-p on parent when not NULL) and returns whether groups_stream_ready
 * (id) will follow once they are bound (false: JetStream is out of reach,
 * nothing to wait for now); leave(ctx, id) unbinds it. */
struct groups_stream_ops {
	bool (*join)(void *ctx, uint64_t id, const char *name, const char *subject, const char *parent);
	void (*leave)(void *ctx, uint64_t id);
};
/* From now on each new group also joins the stream `stream` (subjects
 * "<stream>.<mapped filter>"); its mark waits for that too. Borrows ops
 * and ctx until groups_close. */
void groups_set_stream(struct cluster_groups *g, const struct groups_stream_ops *ops, void *ctx, const char *stream);
/* The group numbered id is bound to its stream consumers. */
void groups_stream_ready(struct cluster_groups *g, uint64_t id);
/* The key ("$share/g/f", *len bytes) of the group whose stream consumer is
 * named `consumer`, or NULL (not a group's, or the group left this node). */
const char *groups_by_consumer(const struct cluster_groups *g, const char *consumer, size_t *len);

/* The options the connection is made from (borrowed until groups_free):
 * a connection made anew after cnats closed the old one for good uses
 * them too (cluster.c makes it on a thread of its own). */
natsOptions *groups_options(const struct cluster_groups *g);
/* Loop thread: replaces the connection cnats closed for good with nc, made
 * from groups_options (taken; `connected`: at its first try, so cnats
 * calls no connected callback), and subscribes every queue group again.
 * The modules holding groups_connection rebind to it next (cluster.c). */
void groups_reconnect(struct cluster_groups *g, natsConnection *nc, bool connected);
/* Whether cnats closed the current connection for good. */
bool groups_closed(const struct cluster_groups *g);


/* The second connection, for the cluster's own control traffic
 * (presence.h), which must not count as data on the main one. */
natsConnection *groups_connection(const struct cluster_groups *g);


/* Whether the queue subscriptions' connection is up now (so NATS can pick
 * this node's groups), without cnats's lock (link.h). Any thread. */
bool groups_connected(const struct cluster_groups *g);
/* The same, for the others that publish on it (presence.h, totals.h,
 * interest.h, handover.h): it outlives every connection it describes. */
struct nats_link;
const struct nats_link *groups_link(const struct cluster_groups *g);
/* The connection is back (GROUPS_EV_UP): the queue SUBs of groups made
 * while it was not. Loop thread. */
void groups_resubscribe(struct cluster_groups *g);

/* Raised on the cluster's inbox when cnats dropped messages of a queue
 * subscription (its pending limit, cluster.inbound_queue, full). */
#define GROUPS_EV_SLOW 0x200u
/* What cnats dropped so far over the queue subscriptions, those gone
 * included. Loop thread. NULL: 0. */
uint64_t groups_pending_dropped(const struct cluster_groups *g);


#endif
