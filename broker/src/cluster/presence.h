/*
 * Client ids cluster-wide: a client id is connected at one node at a time.
 *
 * When a client connects here, this node publishes a claim for its id on
 * NATS, over the node's second connection (groups.h: control traffic stays
 * off the data connection's figures; its echo of the node's own claims is
 * ignored) (subject "$WISP.<subject_prefix>.claim": outside the topic subjects,
 * and a '$' topic should it ever be read as one, so no '#' subscriber sees
 * it), with the connect time and the Clean Start flag. Every other node that
 * holds a session of that id lets go of it, as the node a second CONNECT of
 * the id reaches does on its own:
 *  - its connection is closed as a takeover [MQTT-3.1.4-3]: DISCONNECT with
 *    0x8E Session taken over for v5, a close for 3.1.1 (its will goes out
 *    by the single-node rules);
 *  - a delayed will it holds goes out now if the claim says Clean Start 1
 *    (the session's end) and never if it says 0 (the client came back
 *    before the delay had passed [MQTT-3.1.3-9]), as on one node;
 *  - the session then ends there: kept, it would queue for a client that
 *    is elsewhere and deliver those messages again should the client come
 *    back, which QoS 2 forbids. A persistent session the claiming node
 *    asked for first (handover.h) is not ended by the claim but when that
 *    node confirms it stored it.
 * Every claim also feeds handover.h's directory of who holds which id.
 * Back on NATS after losing it, a node asks again for the ids it claimed
 * (a claim marked Wisp-Recheck, presence.c): a node holding one from a
 * later connect answers with its claim, which ends the stale copy here.
 * A node restarted on its store asks every node at start which sessions
 * they hold and when they were claimed (handover.h's directory request):
 * a restored copy older than another node's ends here; one that is the
 * later of the two asks that node again (a recheck), which ends its copy.
 * A CONNECT of a restored session waits for those answers (handover.h).
 * Two connects of one id at two nodes at once: each node gets the other's
 * claim; the later connect (its claim time, then the node name) wins, so
 * exactly one stays. A claim's time is the node's wall clock, but always
 * after the last claim of the id the node heard or made, so a connect made
 * after hearing the previous one is the later whatever the clocks say.
 * A node remembers the time of its last PRESENCE_RECENT connects for this,
 * and a persistent session keeps its own (session.h's claim_ns, in the
 * store too); a connection known to neither is older than any claim that
 * can still be in flight.
 *
 * Memory: PRESENCE_RECENT entries of 16 bytes. Loop thread only.
 */
#ifndef WISP_CLUSTER_PRESENCE_H
#define WISP_CLUSTER_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>

#include <nats/nats.h>

#include "sender.h"

struct broker;
struct presence;

/* Subscribes to the claims on nc (borrowed until presence_stop, with
 * `link`, whether it is up: link.h) and publishes on it, both through
 * `sender` (sender.h: its handover too; the loop never waits for nc's
 * lock), and hooks the broker's connects. 0 or WISP_ENOMEM / WISP_EIO. */
struct nats_link;
int presence_start(struct presence **out, struct broker *b, natsConnection *nc, struct sender *sender,
		   const struct nats_link *link, const char *node,
		   const char *prefix, sender_msg_fn on_msg, void *on_msg_closure);
/* Unhooks and ends the subscriptions (its handover's too): their UNSUBs
 * queued on the sender, before it stops. */
void presence_stop(struct presence *p);
/* Loop thread: moves the claims and the handover (handover_rebind) to nc,
 * the connection made anew after cnats closed the old one for good; the
 * claims held here are asked again once it is up. NULL: no-op. 0 or
 * WISP_ENOMEM. */
int presence_rebind(struct presence *p, natsConnection *nc);
/* What cnats dropped of its subscription and its handover's so far
 * (sender_sub_dropped). NULL: 0. */
uint64_t presence_pending_dropped(const struct presence *p);
/* Frees it, once cnats's threads are gone. NULL: no-op. */
void presence_free(struct presence *p);

/* Its handover (handover.h), or NULL. */
struct handover *presence_handover(const struct presence *p);

/* Whether nm is a claim (on the claim subject); if so, acts on it. */
bool presence_message(struct presence *p, natsMsg *nm);

#endif
