/*
 * Shared subscriptions, `$share/{ShareName}/{filter}` (MQTT 5 section
 * 4.8.2; offered to 3.1.1 clients too, as Mosquitto and EMQX do).
 *
 * A group is one (ShareName, filter) pair. It holds one handle in the
 * subscription tree under the inner filter, whose subscriber is the group
 * itself, so a publish meets each matching group once, whatever its size.
 * Its members are the sessions' own subscriptions (struct sess_sub, filter
 * "$share/g/f" as the client sent it: found, replaced, removed and
 * persisted like any other). A member's handle sits in the tree under that
 * literal filter with SESS_SUBOPT_SHARED set, where routing ignores it
 * (a topic "$share/g/f" published literally reaches no member).
 *
 * Delivery: one message per group, to the next connected member in
 * round-robin order (share_pick). When no member is connected the message
 * is queued for the next member in that order (persistent sessions only
 * stay members while offline), as Mosquitto 2.0 does. A member leaving
 * (unsubscribe, disconnect, session end) hands its unacknowledged QoS 1/2
 * messages the group could take to another connected member (share_hand_over).
 * What stays with an offline member (none was connected: queued while the
 * whole group was away, a member that left alone, or a restart, which
 * restores every member offline) goes to the first member that comes
 * online (route_share_member_online); `stranded` marks the groups worth
 * that look, so a connect scans a group's members only after such a case.
 *
 * Cost: nothing on a publish that matches no group (routing tests one
 * options bit it already loads). Per matched group, the pick scans the
 * members from the cursor until a connected one: O(1) while most are
 * connected. Memory: a group is about 90 bytes plus its key and a pointer per
 * member; groups live in a hash table that doubles. Single threaded: loop
 * thread only.
 */
#ifndef WISP_PROTO_SHARE_H
#define WISP_PROTO_SHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "session.h"
#include "tree.h"

#define SHARE_PREFIX "$share/"
#define SHARE_PREFIX_LEN (sizeof SHARE_PREFIX - 1)

/* The group handle's subscription_id: no member's can be (v5 identifiers
 * stop at 268,435,455), so routing tells a group from a member with it. */
#define SHARE_GROUP_MARK UINT32_MAX

struct share_group {
	struct tree_sub handle;      /* under the inner filter; subscriber: this group */
	struct share_group *hash_next;
	struct share_group *match_next; /* routing's list of groups matched by one publish */
	struct sess_sub **members;
	uint32_t count, cap;
	uint32_t cursor;             /* the member round-robin tries first */
	bool stranded;               /* an offline member may hold messages a connected one could take */
	uint32_t hash;
	uint16_t key_len;            /* "$share/g/f" */
	uint16_t filter_at;          /* where f starts in key */
	char key[];
};

struct share_table {
	struct share_group **buckets;
	size_t nbuckets; /* power of two, or 0 before the first group */
	size_t count;
};

enum share_parse {
	SHARE_NOT_SHARED = 0, /* an ordinary filter */
	SHARE_OK = 1,
	SHARE_MALFORMED = -1, /* starts with $share/ but breaks [MQTT-4.8.2-1] or [MQTT-4.8.2-2] */
};

/* Whether `f` is a shared subscription; for SHARE_OK, *filter_at is where
 * its inner filter starts. The inner filter must still pass
 * topic_filter_valid (the caller checks the whole string, which implies it). */
enum share_parse share_parse(const char *f, size_t len, size_t *filter_at);

static inline bool share_is_shared(const char *f, size_t len)
{
	return len > SHARE_PREFIX_LEN && f[0] == '$' && memcmp(f, SHARE_PREFIX, SHARE_PREFIX_LEN) == 0;
}

void share_table_free(struct share_table *t, struct tree *tree);

/* Adds `sub` (a session's subscription to a valid shared filter, already
 * in the tree as a member) to its group, creating the group (and its tree
 * handle) if needed. 0, or WISP_ENOMEM with nothing changed. Idempotent. */
int share_join(struct share_table *t, struct tree *tree, struct sess_sub *sub);
/* Removes `sub` from its group, and frees the group when it was the last.
 * No-op when `sub` is no member. */
void share_leave(struct share_table *t, struct tree *tree, const struct sess_sub *sub);
/* The group of the shared filter `key`, or NULL. */
struct share_group *share_find(const struct share_table *t, const char *key, size_t len);

/* The member a message on `topic` goes to: the next connected member (that
 * the ACL lets read the topic, when its subscription asks) after the
 * cursor, else the next member at all (offline: it queues); `except` is
 * never picked. NULL when no member qualifies. Advances the cursor. */
struct sess_sub *share_pick(struct share_group *g, const char *topic, size_t topic_len,
			    const struct session *except, bool connected_only);

#endif
