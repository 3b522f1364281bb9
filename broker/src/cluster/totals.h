/*
 * $SYS cluster-wide totals: every sys_interval each node sends its own
 * figures (a fixed set of metrics.c's rows, by name) on NATS subject
 * "$WISP.<subject_prefix>.figures", over its second connection (groups.h),
 * and publishes, retained, under $SYS/cluster/ the sum of the latest
 * figures of every node heard from within three intervals (itself
 * included), with $SYS/cluster/nodes the number of such nodes. The
 * per-node $SYS/broker/ figures are unchanged. Retained messages are not
 * summed: every node holds the same ones.
 *
 * Memory: TOTALS_NODES_MAX nodes' figures (about 200 bytes each); a node
 * past that is not counted (logged once). Loop thread only.
 */
#ifndef WISP_CLUSTER_TOTALS_H
#define WISP_CLUSTER_TOTALS_H

#include <stdbool.h>

#include <nats/nats.h>

#include "sender.h"

struct broker;
struct totals;

/* Does nothing (and sets *out NULL) when sys_interval is 0. Borrows nc
 * until totals_stop, subscribes and publishes on it through `sender`
 * (sender.h). 0 or WISP_ENOMEM. */
struct nats_link;
int totals_start(struct totals **out, struct broker *b, natsConnection *nc, struct sender *sender,
		 const struct nats_link *link, const char *node, const char *prefix,
		 sender_msg_fn on_msg, void *on_msg_closure);
/* Stops the timer, ends the subscription (its UNSUB queued on the
 * sender, before it stops). */
void totals_stop(struct totals *t);
/* Loop thread: moves to nc, the connection made anew after cnats closed
 * the old one for good (its subscription ended, queued again on nc).
 * NULL: no-op. 0 or WISP_ENOMEM. */
int totals_rebind(struct totals *t, natsConnection *nc);
/* What cnats dropped of its subscription so far (sender_sub_dropped).
 * NULL: 0. */
uint64_t totals_pending_dropped(const struct totals *t);
void totals_free(struct totals *t);

/* Whether nm is another node's figures; if so, records them. */
bool totals_message(struct totals *t, natsMsg *nm);

#endif
