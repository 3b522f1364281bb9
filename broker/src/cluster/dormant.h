/*
 * Dormant nodes (interest.h): a node whose durable consumer is on the
 * JetStream stream but which this node does not hear from (it said "bye",
 * went unheard for three intervals, or was never heard in this run). Its
 * consumer keeps every stream message for its persistent sessions
 * (interest retention) until it comes back, but its filters are not known
 * here, so while any node is dormant every QoS 1/2 message goes to the
 * stream: when in doubt, send. QoS 0 stays selective (core NATS cannot
 * reach a node that is down anyway).
 *
 * The nodes kept: the node consumers of the last list JetStream gave (the
 * shared groups' "wisp-share-" consumers and this node's own left out),
 * and nodes forgotten since that list was asked for, held until a list
 * asked after their forgetting says whether their consumer is there (so a
 * node forgotten between two lists is dormant at once). Each is dormant
 * while no peer of that (consumer) name is heard. Before the first list,
 * every QoS 1/2 message is in doubt.
 *
 * Pure (no NATS, no loop): interest.c drives it, the unit test too. Memory:
 * one entry (its name) per node consumer on the stream, at most
 * DORMANT_MAX_NODES: whoever may make consumers on the stream could
 * otherwise grow it without limit. Past it the set is full: QoS 1/2
 * messages are in doubt (all go to the stream) until a list fits again.
 */
#ifndef WISP_CLUSTER_DORMANT_H
#define WISP_CLUSTER_DORMANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What names a shared group's consumers (groups.h) and the short-lived
 * holder of a node consumer being made again (jetstream.c): not a node's. */
#define DORMANT_SHARE_PREFIX "wisp-share-"
#define DORMANT_HOLD_PREFIX "wisp-hold-"
/* Node consumers kept at most: four times the nodes interest.c tells
 * apart (past those it sends everything anyway), for nodes taken out whose
 * consumers were not deleted. */
#define DORMANT_MAX_NODES 256u

struct dormant_node {
	char *name;             /* the node's consumer name */
	uint64_t held_until;    /* forgotten: kept until a list asked with this number or later; 0: none */
	bool listed;            /* in the last list */
	bool dormant;           /* as last said */
};

struct dormant {
	struct dormant_node *nodes;
	size_t n, cap;
	size_t count;           /* dormant now */
	bool known;             /* a list arrived */
	bool full;              /* the last list or forgetting did not fit: in doubt */
};

/* The consumer name a node's name maps to (durable.c names its consumer
 * so): a host name may hold what a consumer name may not. */
char dormant_consumer_char(char c);
/* Whether `consumer` is node's consumer name. */
bool dormant_is_node(const char *node, const char *consumer);

/* A list of the stream's consumers arrived, asked with number `ask`; own:
 * this node's consumer name. 0 or WISP_ENOMEM (then the set is unchanged
 * but known: the caller sends everything a while). */
int dormant_list(struct dormant *d, const char *const *names, size_t n, const char *own, uint64_t ask);
/* A node was forgotten; `ask` is the number of the list asked right
 * after. 0 or WISP_ENOMEM. */
int dormant_forgotten(struct dormant *d, const char *node, uint64_t ask);

/* Whether a peer of this consumer name is heard now. */
typedef bool (*dormant_live_fn)(void *ctx, const char *consumer);
/* A node became dormant, or stopped being (gone: its consumer left the list). */
typedef void (*dormant_said_fn)(void *ctx, const char *consumer, bool dormant, bool gone);
/* After a list, a forgetting or a peer heard anew: who is dormant now
 * (said for each change), nodes out of the list and held no more dropped.
 * Returns d->count. */
size_t dormant_update(struct dormant *d, dormant_live_fn live, dormant_said_fn said, void *ctx);

/* Whether QoS 1/2 messages are in doubt: no list yet, a node dormant, or
 * the set full. */
bool dormant_doubt(const struct dormant *d);

void dormant_free(struct dormant *d);

#endif
