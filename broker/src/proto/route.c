/*
 * The local router (router.h): one walk of the subscription tree, one
 * delivery per matching session. A session with several matching filters
 * gets the message once, at the highest QoS its matching subscriptions
 * granted (the choice MQTT-3.3.5 allows; Mosquitto sends one copy per
 * filter), with the Subscription Identifiers of all of them [MQTT-3.3.4-3]
 * and RETAIN kept if any of them asked for Retain As Published. A
 * subscription with No Local does not match its own session's messages
 * [MQTT-3.8.3-3]; another subscription of that session still may.
 *
 * A shared subscription group (share.h) is one more match of the walk,
 * kept on a list through the group itself; after the ordinary deliveries
 * each matched group delivers to one member (deliver_shared), unless a
 * cluster router serves the groups cluster-wide for this message
 * (route_ctx.shares_elsewhere): it then picks the node, and
 * route_share_deliver the member there.
 *
 * A generation counter marks sessions already seen during this publish, so
 * deduplication costs O(1) per match and no per-publish allocation once the
 * entry and identifier arrays have grown to the largest fan-out seen.
 *
 * Routing is not re-entered. While the delivery loop runs (`busy`), a drop
 * of a connection (which may destroy a session still in entries[], and
 * publishes a will) and any publish are queued in `later` and done, in
 * order, once the loop is over.
 *
 * A delivery dropped by a bound is counted per reason (drop.h) and logged
 * once per episode per client: the first drop logs, the episode ends when
 * the bound is at most half used again. The check costs one test of a
 * byte of the session on the delivery path while no episode is open.
 */
#include "broker.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

static struct broker *broker_of(struct route_ctx *rc) { return container_of(rc, struct broker, route); }

/* Appends a subscription identifier to entry e's chain. */
static void add_sub_id(struct route_ctx *rc, struct route_entry *e, uint32_t id)
{
	if (rc->sub_ids_count == rc->sub_ids_cap) {
		size_t cap = rc->sub_ids_cap ? rc->sub_ids_cap * 2 : 16;
		struct route_sub_id *v = wisp_realloc(rc->sub_ids, cap * sizeof *v);
		if (!v)
			return; /* the delivery goes out without this identifier */
		rc->sub_ids = v;
		rc->sub_ids_cap = cap;
	}
	uint32_t at = (uint32_t)rc->sub_ids_count++;
	rc->sub_ids[at] = (struct route_sub_id){id, e->sub_id_first};
	e->sub_id_first = at; /* newest first; deliver() puts them back in order */
	e->sub_id_count++;
}

static int grow_entries(struct route_ctx *rc)
{
	size_t cap = rc->cap ? rc->cap * 2 : 64;
	struct route_entry *v = wisp_realloc(rc->entries, cap * sizeof *v);
	if (!v) {
		broker_count_drop(broker_of(rc), DROP_NO_MEMORY);
		return WISP_ENOMEM;
	}
	rc->entries = v;
	rc->cap = cap;
	return 0;
}

/* The entry of s for this publish: the one an earlier match of s made, or
 * a new one; NULL when out of memory. */
static inline struct route_entry *entry_of(struct route_ctx *rc, struct session *s, uint8_t qos)
{
	if (s->match_slot < rc->count && rc->entries[s->match_slot].s == s) {
		struct route_entry *e = &rc->entries[s->match_slot];
		if (qos > e->qos)
			e->qos = qos;
		return e;
	}
	size_t n = rc->count;
	if (n == rc->cap && grow_entries(rc) != 0)
		return NULL;
	s->match_slot = (uint32_t)n;
	rc->count = n + 1;
	struct route_entry *e = &rc->entries[n];
	*e = (struct route_entry){.s = s, .sub_id_first = ROUTE_NO_ID, .qos = qos};
	return e;
}

/* A subscription with v5 options, an identifier or an ACL to ask. Kept
 * out of collect() so that the plain match (every v3.1.1 subscription
 * without an ACL) stays a QoS merge. */
__attribute__((noinline)) static void collect_options(struct route_ctx *rc, void *subscriber, uint8_t options,
						      uint32_t subscription_id)
{
	const struct msg *m = rc->msg;
	if (options & SESS_SUBOPT_SHARED) {
		/* A group meets a publish once (one handle, one filter); its
		 * members' own handles, under "$share/...", take nothing. */
		if (subscription_id == SHARE_GROUP_MARK) {
			struct share_group *g = subscriber;
			g->match_next = rc->shared_matched;
			rc->shared_matched = g;
		}
		return;
	}
	struct session *s = subscriber;
	if ((options & MQTT_SUBOPT_NO_LOCAL) && m->origin == s)
		return; /* [MQTT-3.8.3-3] */
	if ((options & SESS_SUBOPT_ACL_CHECK) && !acl_client_check(s->acl, msg_topic(m), m->topic_len, ACL_READ))
		return;
	struct route_entry *e = entry_of(rc, s, options & MQTT_SUBOPT_QOS_MASK);
	if (!e)
		return;
	if (options & MQTT_SUBOPT_RETAIN_AS_PUBLISHED)
		e->retain_as_published = true;
	if (subscription_id)
		add_sub_id(rc, e, subscription_id);
}

#define OPTIONS_BEYOND_QOS \
	(MQTT_SUBOPT_NO_LOCAL | MQTT_SUBOPT_RETAIN_AS_PUBLISHED | SESS_SUBOPT_ACL_CHECK | SESS_SUBOPT_SHARED)

static void collect(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx)
{
	struct route_ctx *rc = ctx;
	if ((options & OPTIONS_BEYOND_QOS) || subscription_id) {
		collect_options(rc, subscriber, options, subscription_id);
		return;
	}
	entry_of(rc, subscriber, options & MQTT_SUBOPT_QOS_MASK);
}

/* Entry e's identifiers in the order their subscriptions matched. */
static const uint32_t *entry_sub_ids(struct route_ctx *rc, const struct route_entry *e)
{
	if (e->sub_id_count > rc->sub_id_scratch_cap) {
		uint32_t *v = wisp_realloc(rc->sub_id_scratch, e->sub_id_count * sizeof *v);
		if (!v)
			return NULL;
		rc->sub_id_scratch = v;
		rc->sub_id_scratch_cap = e->sub_id_count;
	}
	size_t i = e->sub_id_count;
	for (uint32_t at = e->sub_id_first; at != ROUTE_NO_ID && i > 0; at = rc->sub_ids[at].next)
		rc->sub_id_scratch[--i] = rc->sub_ids[at].id;
	return rc->sub_id_scratch;
}

static int defer(struct route_ctx *rc, const struct route_later *w)
{
	if (rc->later_len == rc->later_cap) {
		size_t cap = rc->later_cap ? rc->later_cap * 2 : 8;
		struct route_later *v = wisp_realloc(rc->later, cap * sizeof *v);
		if (!v)
			return WISP_ENOMEM;
		rc->later = v;
		rc->later_cap = cap;
	}
	rc->later[rc->later_len++] = *w;
	return 0;
}

static size_t local_publish(struct router *r, struct msg *m, const struct topic_level *levels, size_t nlevels);

/* The work deliveries queued, oldest first; what it queues in turn is done
 * in the same pass. */
static void run_later(struct route_ctx *rc)
{
	struct broker *b = broker_of(rc);
	rc->draining = true;
	for (size_t i = 0; i < rc->later_len; i++) {
		struct route_later w = rc->later[i];
		if (w.m) {
			struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
			int n = topic_split(msg_topic(w.m), w.m->topic_len, levels, TOPIC_MAX_LEVELS_HARD);
			rc->shares_elsewhere = w.shares_elsewhere;
			if (n > 0)
				local_publish(&rc->router, w.m, levels, (size_t)n);
			rc->shares_elsewhere = false;
			msg_unref(w.m);
		} else {
			broker_drop(b, w.c, w.reason, w.detail);
		}
	}
	rc->later_len = 0;
	rc->draining = false;
}

bool route_defer_drop(struct broker *b, struct conn *c, enum reason r, const char *detail)
{
	struct route_ctx *rc = &b->route;
	if (!rc->busy)
		return false;
	if (defer(rc, &(struct route_later){.c = c, .reason = r, .detail = detail}) != 0)
		log_msg(LOG_WARNING, "route", "client %s: out of memory while delivering: not dropped (%s)",
			broker_conn_name(c), detail ? detail : reason_info(r)->text);
	return true;
}

static bool is_shared(const struct sess_sub *sub) { return tree_sub_options(&sub->handle) & SESS_SUBOPT_SHARED; }

/* One copy to one member of a shared subscription, as an ordinary
 * subscription of that member would have it: at min(message QoS, granted
 * QoS), RETAIN per Retain As Published, with its Subscription Identifier. */
static void deliver_to_member(struct broker *b, struct sess_sub *sub, struct msg *m)
{
	uint8_t opts = tree_sub_options(&sub->handle);
	uint8_t granted = opts & MQTT_SUBOPT_QOS_MASK;
	uint32_t id = tree_sub_id(&sub->handle);
	const struct delivery_sub_ids ids = {&id, 1};
	/* [MQTT-3.3.1-12] */
	bool retain = m->retain && (opts & MQTT_SUBOPT_RETAIN_AS_PUBLISHED);
	broker_deliver(b, tree_sub_subscriber(&sub->handle), m, granted < m->qos ? granted : m->qos, retain,
		       id ? &ids : NULL);
}

/* One delivery per matched group (section 4.8.2), after the ordinary ones:
 * a session with an ordinary and a shared subscription matching may get
 * two copies, as 4.8.2 allows. Returns the groups delivered to. Not
 * inlined, so that the ordinary delivery loop keeps its code. */
__attribute__((noinline)) static size_t deliver_shared(struct route_ctx *rc, struct msg *m)
{
	struct broker *b = broker_of(rc);
	size_t n = 0;
	for (struct share_group *g = rc->shared_matched; g; g = g->match_next) {
		struct sess_sub *sub = share_pick(g, msg_topic(m), m->topic_len, NULL, false);
		if (!sub)
			continue;
		deliver_to_member(b, sub, m);
		n++;
	}
	rc->shared_matched = NULL;
	return n;
}

/* Takes the excepted sessions out of this publish's matches (the last
 * entry moves into the hole: the order of deliveries carries no meaning). */
__attribute__((noinline)) static void drop_excepted(struct route_ctx *rc)
{
	for (size_t k = 0; k < rc->nexcept; k++) {
		struct session *s = rc->except[k];
		if (s->match_slot >= rc->count || rc->entries[s->match_slot].s != s)
			continue;
		struct route_entry *last = &rc->entries[--rc->count];
		if (last != &rc->entries[s->match_slot]) {
			rc->entries[s->match_slot] = *last;
			last->s->match_slot = s->match_slot;
		}
		/* s's slot now holds another session's entry or lies past the
		 * count: entry_of no longer finds s there. */
	}
	rc->except = NULL;
	rc->nexcept = 0;
}

/* Before a publish's matches are collected into the entries. */
static inline void begin_matches(struct route_ctx *rc, struct msg *m)
{
	rc->count = 0;
	rc->sub_ids_count = 0;
	rc->msg = m;
	rc->shared_matched = NULL;
}

/* The deliveries of what begin_matches and a walk collected. Inlined in
 * both callers: local_publish is every message's path. */
static inline __attribute__((always_inline)) size_t deliver_matches(struct route_ctx *rc, struct msg *m,
								      bool shares_elsewhere)
{
	struct broker *b = broker_of(rc);
	if (rc->except)
		drop_excepted(rc);
	rc->busy = true;
	uint8_t msg_qos = m->qos;
	bool msg_retain = m->retain;
	for (size_t i = 0; i < rc->count; i++) {
		const struct route_entry *e = &rc->entries[i];
		uint8_t qos = e->qos < msg_qos ? e->qos : msg_qos;
		/* [MQTT-3.3.1-12] RETAIN is cleared unless Retain As Published */
		bool retain = msg_retain && e->retain_as_published;
		if (e->sub_id_count == 0) {
			broker_deliver(b, e->s, m, qos, retain, NULL);
			continue;
		}
		struct delivery_sub_ids ids = {entry_sub_ids(rc, e), e->sub_id_count};
		broker_deliver(b, e->s, m, qos, retain, ids.ids ? &ids : NULL);
	}
	size_t matched = rc->count;
	if (shares_elsewhere)
		rc->shared_matched = NULL;
	else if (rc->shared_matched)
		matched += deliver_shared(rc, m);
	rc->busy = false;
	rc->msg = NULL;
	if (rc->later_len && !rc->draining)
		run_later(rc);
	return matched;
}

static size_t local_publish(struct router *r, struct msg *m, const struct topic_level *levels, size_t nlevels)
{
	struct route_ctx *rc = container_of(r, struct route_ctx, router);
	struct broker *b = broker_of(rc);
	bool shares_elsewhere = rc->shares_elsewhere;
	rc->shares_elsewhere = false;
	if (rc->busy) {
		if (defer(rc, &(struct route_later){.m = msg_ref(m), .shares_elsewhere = shares_elsewhere}) != 0) {
			msg_unref(m);
			broker_count_drop(b, DROP_NO_MEMORY);
			return 0;
		}
		return 1;
	}
	begin_matches(rc, m);
	tree_match(rc->subs, levels, nlevels, collect, rc);
	return deliver_matches(rc, m, shares_elsewhere);
}

size_t route_publish_filter(struct broker *b, const char *filter, size_t len, struct msg *m)
{
	struct route_ctx *rc = &b->route;
	assert(!rc->busy); /* called from the cluster's inbox, never inside a delivery */
	begin_matches(rc, m);
	tree_match_filter(rc->subs, filter, len, collect, rc);
	return deliver_matches(rc, m, true);
}

size_t route_share_deliver(struct broker *b, const char *key, size_t len, struct msg *m)
{
	struct route_ctx *rc = &b->route;
	struct share_group *g = share_find(&rc->shares, key, len);
	if (!g)
		return 0;
	assert(!rc->busy); /* called from the cluster's inbox, never inside a delivery */
	rc->busy = true;
	rc->msg = m;
	struct sess_sub *sub = share_pick(g, msg_topic(m), m->topic_len, NULL, false);
	if (sub)
		deliver_to_member(b, sub, m);
	rc->busy = false;
	rc->msg = NULL;
	if (rc->later_len && !rc->draining)
		run_later(rc);
	return sub ? 1 : 0;
}

size_t route_to_session(struct broker *b, struct session *s, struct msg *m)
{
	struct route_ctx *rc = &b->route;
	assert(!rc->busy); /* called from the cluster's inbox, never inside a delivery */
	rc->count = 0;
	rc->sub_ids_count = 0;
	rc->msg = m;
	rc->shared_matched = NULL;
	const struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		if (topic_matches(sess_sub_filter(sub), sess_sub_filter_len(sub), msg_topic(m), m->topic_len))
			collect(s, tree_sub_options(&sub->handle), tree_sub_id(&sub->handle), rc);
	}
	rc->shared_matched = NULL;
	if (!rc->count) {
		rc->msg = NULL;
		return 0;
	}
	rc->busy = true;
	const struct route_entry *e = &rc->entries[0];
	uint8_t qos = e->qos < m->qos ? e->qos : m->qos;
	bool retain = m->retain && e->retain_as_published; /* [MQTT-3.3.1-12] */
	struct delivery_sub_ids ids = {e->sub_id_count ? entry_sub_ids(rc, e) : NULL, e->sub_id_count};
	broker_deliver(b, s, m, qos, retain, ids.ids ? &ids : NULL);
	rc->busy = false;
	rc->msg = NULL;
	if (rc->later_len && !rc->draining)
		run_later(rc);
	return 1;
}

static int local_interest_add(struct router *r, struct session *s, const char *filter, size_t len,
			      uint8_t options, uint32_t subscription_id, size_t max_subs)
{
	struct route_ctx *rc = container_of(r, struct route_ctx, router);
	size_t inner_at;
	bool shared = share_parse(filter, len, &inner_at) == SHARE_OK;
	if (shared)
		options |= SESS_SUBOPT_SHARED;
	int ret = sess_subscribe(s, rc->subs, filter, len, options, subscription_id, max_subs);
	if (ret < 0)
		return ret;
	struct sess_sub *sub = sess_find_sub(s, filter, len);
	if (shared && share_join(&rc->shares, rc->subs, sub) != 0) {
		if (ret == 1)
			sess_unsubscribe(s, rc->subs, filter, len);
		return WISP_ENOMEM;
	}
	SESS_OBSERVE(&broker_of(rc)->observer, sub_add, s, sub);
	if (shared && s->conn)
		route_share_member_online(broker_of(rc), s, sub); /* its new group only: O(1) per filter */
	return ret;
}

static int local_interest_remove(struct router *r, struct session *s, const char *filter, size_t len)
{
	struct route_ctx *rc = container_of(r, struct route_ctx, router);
	struct sess_sub *sub = share_is_shared(filter, len) ? sess_find_sub(s, filter, len) : NULL;
	if (sub && is_shared(sub)) {
		/* Out of the group first, so it is no candidate for its own messages. */
		share_leave(&rc->shares, rc->subs, sub);
		route_share_hand_over(broker_of(rc), s, sub);
	}
	int ret = sess_unsubscribe(s, rc->subs, filter, len);
	if (ret == 0)
		SESS_OBSERVE(&broker_of(rc)->observer, sub_del, s, filter, len);
	return ret;
}

static const struct router_ops local_ops = {
	.publish = local_publish,
	.interest_add = local_interest_add,
	.interest_remove = local_interest_remove,
};

void route_init(struct route_ctx *rc, struct tree *subs)
{
	memset(rc, 0, sizeof *rc);
	rc->router.ops = &local_ops;
	rc->subs = subs;
}

void route_free(struct route_ctx *rc)
{
	share_table_free(&rc->shares, rc->subs);
	for (size_t i = 0; i < rc->later_len; i++)
		msg_unref(rc->later[i].m);
	wisp_free(rc->later);
	wisp_free(rc->entries);
	wisp_free(rc->sub_ids);
	wisp_free(rc->sub_id_scratch);
	memset(rc, 0, sizeof *rc);
}

struct hand_over {
	struct broker *b;
	const struct sess_sub *only;
	size_t moved;
};

/* delivery_keep_fn: keeps what s is owed anyway, moves the rest if it can. */
static bool keep_or_move(void *ctx, const struct session *s, const struct msg *m)
{
	struct hand_over *h = ctx;
	struct route_ctx *rc = &h->b->route;
	const char *topic = msg_topic(m);
	const struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		const struct sess_sub *sub = container_of(n, struct sess_sub, link);
		if (!is_shared(sub) && topic_matches(sess_sub_filter(sub), sess_sub_filter_len(sub), topic, m->topic_len))
			return true;
	}
	const struct sess_sub *only = h->only;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		const struct sess_sub *sub = only ? only : container_of(n, struct sess_sub, link);
		struct share_group *g = is_shared(sub) ? share_find(&rc->shares, sess_sub_filter(sub), sess_sub_filter_len(sub)) : NULL;
		if (g && topic_matches(g->key + g->filter_at, (size_t)(g->key_len - g->filter_at), topic, m->topic_len)) {
			struct sess_sub *to = share_pick(g, topic, m->topic_len, s, true);
			if (to) {
				deliver_to_member(h->b, to, (struct msg *)m);
				h->moved++;
				return false;
			}
		}
		if (only)
			break;
	}
	return true;
}

/* Whatever stays with s (nothing connected could take it) marks its
 * groups for the next member that comes online. */
static void mark_stranded(struct route_ctx *rc, const struct session *s)
{
	if (!sess_queued_count(s) && !sess_inflight_count(s))
		return;
	const struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		const struct sess_sub *sub = container_of(n, struct sess_sub, link);
		struct share_group *g =
			is_shared(sub) ? share_find(&rc->shares, sess_sub_filter(sub), sess_sub_filter_len(sub)) : NULL;
		if (g)
			g->stranded = true;
	}
}

size_t route_share_hand_over(struct broker *b, struct session *s, const struct sess_sub *only)
{
	struct route_ctx *rc = &b->route;
	if (!rc->shares.count || (!sess_queued_count(s) && !sess_inflight_count(s)))
		return 0;
	struct hand_over h = {.b = b, .only = only};
	/* Deliveries to the others may drop one of them: after, as in routing. */
	bool was_busy = rc->busy;
	rc->busy = true;
	delivery_filter(s, &b->dlim, keep_or_move, &h);
	if (!only && !s->conn)
		mark_stranded(rc, s); /* left (or ended) with no member to take them */
	rc->busy = was_busy;
	if (h.moved)
		log_msg(LOG_INFO, "share", "client %s: %zu unacknowledged shared-subscription message(s) handed to other members",
			s->client_id, h.moved);
	if (!was_busy && rc->later_len && !rc->draining)
		run_later(rc);
	return h.moved;
}

/* Hands what g's offline members hold to its connected ones, once per
 * stranded mark. The caller holds routing's busy flag. */
static void pull_stranded(struct broker *b, struct share_group *g, const struct session *s)
{
	if (!g || !g->stranded)
		return;
	g->stranded = false;
	for (uint32_t i = 0; i < g->count; i++) {
		struct session *m = tree_sub_subscriber(&g->members[i]->handle);
		if (m != s && !m->conn && (sess_queued_count(m) || sess_inflight_count(m)))
			route_share_hand_over(b, m, g->members[i]);
	}
}

void route_share_member_online(struct broker *b, struct session *s, const struct sess_sub *only)
{
	struct route_ctx *rc = &b->route;
	if (!rc->shares.count || !s->conn)
		return;
	/* Deliveries may drop a connection, which may end a clean session
	 * and change a group's members: after the scan, as in routing. */
	bool was_busy = rc->busy;
	rc->busy = true;
	const struct list_node *n;
	for (n = only ? &only->link : s->subs.next; n != &s->subs; n = n->next) {
		const struct sess_sub *sub = container_of(n, struct sess_sub, link);
		if (is_shared(sub))
			pull_stranded(b, share_find(&rc->shares, sess_sub_filter(sub), sess_sub_filter_len(sub)), s);
		if (only)
			break;
	}
	rc->busy = was_busy;
	if (!was_busy && rc->later_len && !rc->draining)
		run_later(rc);
}

void route_share_session_end(struct session_table *tab, struct session *s)
{
	struct broker *b = container_of(tab, struct broker, sessions);
	struct route_ctx *rc = &b->route;
	if (!rc->shares.count)
		return;
	struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		const struct sess_sub *sub = container_of(n, struct sess_sub, link);
		if (is_shared(sub))
			share_leave(&rc->shares, rc->subs, sub);
	}
	route_share_hand_over(b, s, NULL);
}

size_t broker_route(struct broker *b, struct msg *m, const struct topic_level *levels, size_t nlevels)
{
	if (b->activity) /* a dashboard is served: one branch otherwise */
		activity_note(b->activity, msg_topic(m), m->topic_len, msg_payload(m), m->payload_len,
			      loop_now_ms(b->loop));
	return router_publish(b->router, m, levels, nlevels);
}

#define SYS_BROKER_PREFIX "$SYS/broker/"
#define SYS_BROKER_PREFIX_LEN (sizeof SYS_BROKER_PREFIX - 1)

/* A retained message over a bound is still delivered (the caller routes
 * it) but not stored, and the topic keeps its previous value. Counted
 * always; logged once per episode, which ends when a retained message is
 * stored again, so a client that keeps publishing into a full store cannot
 * flood the log. */
static void retained_refused(struct broker *b, const struct msg *m, int rc)
{
	b->stats.retained_refused++;
	if (b->retained_full)
		return;
	b->retained_full = true;
	const struct config_limits *lim = &b->cfg->limits;
	if (rc == RETAINED_OVER_COUNT)
		log_msg(LOG_WARNING, "retain", "retained message on '%.*s' not stored: limits.max_retained reached (%u); "
			"further ones are counted in $SYS/broker/retained messages/refused",
			(int)m->topic_len, msg_topic(m), lim->max_retained);
	else if (rc == RETAINED_OVER_BYTES)
		log_msg(LOG_WARNING, "retain", "retained message on '%.*s' not stored: limits.max_retained_bytes "
			"reached (%llu); further ones are counted in $SYS/broker/retained messages/refused",
			(int)m->topic_len, msg_topic(m), (unsigned long long)lim->max_retained_bytes);
	else
		log_msg(LOG_WARNING, "retain", "retained message on '%.*s' not stored: out of memory (limits.memory_limit)",
			(int)m->topic_len, msg_topic(m));
}

void broker_retain(struct broker *b, struct msg *m)
{
	/* Kept alive across the set, so the store can let go of it after. */
	struct msg *old = retained_get(b->retained, msg_topic(m), m->topic_len);
	if (old)
		msg_ref(old);
	/* The broker's own figures (no client may write under $SYS/broker/)
	 * are charged 0, so they use neither retained bound: a small
	 * max_retained must not refuse $SYS, nor $SYS fill it. */
	bool own = m->topic_len >= SYS_BROKER_PREFIX_LEN &&
		   memcmp(msg_topic(m), SYS_BROKER_PREFIX, SYS_BROKER_PREFIX_LEN) == 0;
	int rc;
	if (m->payload_len == 0) {
		rc = retained_set(b->retained, msg_topic(m), m->topic_len, NULL, 0);
	} else {
		rc = retained_set(b->retained, msg_topic(m), m->topic_len, msg_ref(m), own ? 0 : msg_size(m));
		if (rc != 0) {
			msg_unref(m);
			retained_refused(b, m, rc);
		}
	}
	if (rc == 0 && m->payload_len && !own && b->retained_full) {
		b->retained_full = false;
		log_msg(LOG_NOTICE, "retain", "retained messages are stored again");
	}
	if (rc == 0) {
		SESS_OBSERVE(&b->observer, retain_set, m);
		if (old)
			SESS_OBSERVE(&b->observer, retain_released, old);
	}
	msg_unref(old);
}

void broker_retain_expired(struct broker *b, struct msg *m)
{
	if (retained_get(b->retained, msg_topic(m), m->topic_len) != m)
		return; /* replaced meanwhile */
	struct msg *empty = msg_new(msg_topic(m), m->topic_len, NULL, 0, 0, true);
	if (!empty)
		return; /* tried again at the next SUBSCRIBE that finds it */
	broker_retain(b, empty); /* deletes it, in the store too */
	msg_unref(empty);
	broker_count_drop(b, DROP_EXPIRED);
}

_Static_assert(DROP_REASON_COUNT <= 16, "sess_rare.drop_episodes has a bit per drop reason");

#define EPISODE(why) ((uint16_t)(1u << (why)))

static uint64_t bound_value(const struct broker *b, const struct delivery_limits *lim, enum drop_reason why)
{
	switch (why) {
	case DROP_QUEUE_FULL:
		return lim->max_queued;
	case DROP_QUEUE_BYTES:
		return lim->max_queued_bytes;
	case DROP_OUTPUT_FULL:
		return lim->max_output;
	case DROP_NO_MEMORY:
		return b->cfg->limits.memory_limit;
	default:
		return 0;
	}
}

/* Counts the drop, and logs it when it starts an episode for this client:
 * a subscriber stuck at its bound loses every further message, and one line
 * per message would flood the log (mosquitto's is_dropping). `lim`: the
 * session's bounds (a bridge's are its own). */
static void note_drop(struct broker *b, const struct delivery_limits *lim, struct session *s, enum drop_reason why)
{
	broker_count_drop(b, why);
	const char *key = drop_reason_key(why);
	if (!key || (sess_drop_episodes(s) & EPISODE(why)))
		return;
	/* Out of memory to note it, the next drop logs again (rate-limited). */
	(void)sess_set_drop_episodes(s, sess_drop_episodes(s) | EPISODE(why));
	uint64_t bound = bound_value(b, lim, why);
	char hit[96];
	if (why == DROP_NO_MEMORY && !bound)
		snprintf(hit, sizeof hit, "out of memory");
	else
		snprintf(hit, sizeof hit, "%s reached (%llu)", key, (unsigned long long)bound);
	log_msg(LOG_WARNING, "queue", "client %s: dropping messages for it: %s; counted in $SYS/broker/messages/dropped/%s",
		s->client_id, hit, drop_reason_name(why));
}

/* Whether the bound behind an episode has room again. Half the bound, not
 * one free slot: a subscriber reading at the rate messages arrive frees one
 * slot per ack, and ending the episode then would log at that rate. */
static bool has_room_again(const struct delivery_limits *lim, const struct session *s, enum drop_reason why)
{
	switch (why) {
	case DROP_QUEUE_FULL:
		return sess_queued_count(s) <= lim->max_queued / 2;
	case DROP_QUEUE_BYTES:
		return sess_queued_bytes(s) <= lim->max_queued_bytes / 2;
	case DROP_OUTPUT_FULL:
		return !s->conn || s->conn->out.bytes <= lim->max_output / 2;
	default:
		return false; /* no_memory: ends when a delivery succeeds */
	}
}

void broker_delivery_dropped(void *ctx, struct session *s, enum drop_reason why)
{
	struct broker *b = ctx;
	note_drop(b, &b->dlim, s, why);
}

static void end_episode(struct session *s, enum drop_reason why)
{
	(void)sess_set_drop_episodes(s, sess_drop_episodes(s) & (uint16_t)~EPISODE(why)); /* clearing never allocates */
	log_msg(LOG_NOTICE, "queue", "client %s: room again under %s (%llu messages dropped for it so far)",
		s->client_id, drop_reason_key(why), (unsigned long long)sess_dropped(s));
}

void broker_deliver(struct broker *b, struct session *s, struct msg *m, uint8_t qos, bool retain,
		    const struct delivery_sub_ids *ids)
{
	const struct delivery_limits *lim = &b->dlim;
	struct delivery_limits own;
	struct msg *mapped = NULL;
	if (__builtin_expect(s->sess_flags & SESS_FLAG_BRIDGE, 0)) {
		/* A bridge's session: its own queue bounds, its topic mapping. */
		own = b->dlim;
		struct outbound_verdict v = {0};
		mapped = b->outbound->offer(b->outbound_ctx, s, m, &qos, &own, &v);
		lim = &own;
		if (v.taken)
			return;
		if (v.dropped) {
			msg_unref(mapped);
			sess_count_dropped(s, 1);
			note_drop(b, lim, s, v.why);
			return;
		}
	}
	if (sess_drop_episodes(s))
		for (int r = 0; r < DROP_REASON_COUNT; r++)
			if ((sess_drop_episodes(s) & EPISODE(r)) && has_room_again(lim, s, (enum drop_reason)r))
				end_episode(s, (enum drop_reason)r);
	enum drop_reason why = DROP_NO_MEMORY;
	enum delivery_result res = delivery_offer(s, lim, mapped ? mapped : m, qos, retain, ids, &why);
	msg_unref(mapped);
	switch (res) {
	case DELIVERY_SENT:
		b->stats.msgs_sent++;
		break;
	case DELIVERY_QUEUED:
		break;
	case DELIVERY_DROPPED:
		note_drop(b, lim, s, why);
		return;
	}
	if (sess_drop_episodes(s) & EPISODE(DROP_NO_MEMORY))
		end_episode(s, DROP_NO_MEMORY);
}
