/*
 * Cluster-wide shared subscription groups (groups.h).
 *
 * Queue name: "wisp-share-" and the first 16 bytes of SHA-256("$share/g/f")
 * in hex. NATS groups queue subscribers by queue name across subjects, so
 * the name must tell "$share/g/a/+" from "$share/g/a/#" (two groups in
 * MQTT); the digest keeps it short and free of the characters NATS refuses
 * in a queue name, whatever the group and filter hold. A filter ending in
 * "/#" holds a second queue subscription on its parent subject, under the
 * same queue name: one message matches only one of the two subjects.
 *
 * The tag a message gets on cnats's thread is "<run secret>.<number>", so a
 * NATS publisher cannot address a group by setting the header itself. The
 * number is the loop's, given to the subscription when its SUB is queued
 * on the share sender (sender.h), which makes it on its own thread: cnats's
 * sid would be known only after that, maybe after its first message.
 *
 * With a stream (groups_set_stream), the group's JetStream consumers are
 * named after the same digest ("wisp-share-<hex>", and "-p" for the
 * parent level), so every node binds to the same ones and a message from
 * one names its group (groups_by_consumer). A new group's mark waits for
 * both its queue SUB and its consumers; marks go out in the order of the
 * groups' adds, as the SUBACK gate counts them (interest.h: a later mark
 * back opens the SUBACKs of every earlier one).
 */
#include "groups.h"
#include "link.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/sha256.h>

#include "alloc.h"
#include "err.h"
#include "hash.h"
#include "inbox.h"
#include "log.h"
#include "loop.h"
#include "nats_auth.h"
#include "sender.h"
#include "subject.h"
#include "wire.h"

#define GROUPS_BUCKETS 1024u
#define TAG_HEADER "Wisp-Share"

/* One NATS subscription of a group, found by its tag on the loop thread. */
struct tag_link {
	struct tag_link *next;
	uint64_t tag;
	struct group_sub *gs;
};

struct group_sub {
	struct group_sub *by_key_next;
	struct group_sub *by_digest_next;
	struct group_sub *mark_next;  /* cluster_groups.marks: its mark waits to go, oldest first */
	uint64_t stream_id;        /* this run's number for its stream consumers, 0: none */
	uint32_t digest_hash;
	uint8_t waits;             /* what its mark still waits for: its queue SUB, its consumers */
	bool stream_wait;          /* one of the waits is its consumers */
	char digest[33];           /* hex of the queue name's digest */
	struct tag_link links[2];  /* sub's and parent_sub's */
	struct sender_sub *sub, *parent_sub;
	struct group_sub *held_next; /* debug builds: queued behind WISP_DEBUG_DELAY_SHARE_SUB */
	uint64_t mark;             /* handed to on_subscribed once its queue SUB is sent */
	uint32_t hash;
	uint32_t count;            /* local member subscriptions */
	uint16_t len;
	char key[];
};

struct cluster_groups {
	natsOptions *opts;
	natsConnection *nc;
	struct sender *sender;     /* the share sender: the queue SUBs and UNSUBs */
	struct inbox *inbox;
	char *prefix;
	char secret[17];
	uint64_t *count;           /* NATS queue subscriptions held: the broker's cluster/subjects figure */
	struct group_sub *by_key[GROUPS_BUCKETS];
	struct tag_link *by_tag[GROUPS_BUCKETS];
	uint64_t tags;             /* the last tag given */
	char *buf;
	size_t buf_cap;
	void (*on_subscribed)(void *ctx, uint64_t mark);
	void *on_subscribed_ctx;
	struct loop *loop;
	struct loop_timer held_timer;
	struct group_sub *held;    /* debug builds: queue SUBs delayed, oldest first */
	struct group_sub *by_digest[GROUPS_BUCKETS];
	struct group_sub *marks;   /* new groups whose mark has not gone yet, in add order */
	const struct groups_stream_ops *stream_ops;
	void *stream_ctx;
	char *stream_prefix;       /* the stream's subjects' first token */
	uint64_t stream_ids;
	bool delay_subs;           /* debug builds: WISP_DEBUG_DELAY_SHARE_SUB */
	size_t ngroups;            /* entries in by_key */
	size_t max_groups;         /* cluster.max_groups */
	bool refusing;             /* a refusal was logged; the next new group ends the episode */
	/* nc up (link.h): the queue SUBs and UNSUBs are not even queued while
	 * it is not, as the filters' (cluster.c): cnats's reconnect thread
	 * holds the connection's lock through each attempt, and would hold
	 * the share sender's claims and answers behind them. */
	struct nats_link link;
	/* Queue subscriptions of groups left while nc was down, unsubscribed
	 * once it is back: at most two per group that had its SUB before the
	 * loss (a group made meanwhile has none), so cluster.max_groups bounds
	 * them. */
	struct sender_sub **leaving;
	size_t nleaving, leaving_cap;
};

static struct group_sub **find_key(struct cluster_groups *g, const char *key, size_t len, uint32_t h)
{
	struct group_sub **pp = &g->by_key[h % GROUPS_BUCKETS];
	for (; *pp; pp = &(*pp)->by_key_next)
		if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->key, key, len) == 0)
			break;
	return pp;
}

static struct tag_link **find_tag(struct cluster_groups *g, uint64_t tag)
{
	struct tag_link **pp = &g->by_tag[tag % GROUPS_BUCKETS];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->tag == tag)
			break;
	return pp;
}

/* cnats's delivery thread: tag and hand over, nothing else. It reads only
 * the secret, written before the connection exists. */
static void on_group_msg(natsMsg *msg, void *closure, uint64_t tag)
{
	struct cluster_groups *g = closure;
	char value[48];
	snprintf(value, sizeof value, "%s.%" PRIu64, g->secret, tag);
	if (natsMsgHeader_Set(msg, TAG_HEADER, value) != NATS_OK || !inbox_push_sized(g->inbox, msg, wire_msg_bytes(msg)))
		natsMsg_Destroy(msg); /* a full inbox counts it */
}

#define NAME_PREFIX "wisp-share-"

static void make_digest(const char *key, size_t len, char out[33])
{
	unsigned char digest[32];
	mbedtls_sha256_ret((const unsigned char *)key, len, digest, 0);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static void queue_name(const struct group_sub *gs, char out[64])
{
	snprintf(out, 64, NAME_PREFIX "%s", gs->digest);
}

/* Marks go in add order: the oldest goes once all it waits for is done,
 * then the next (interest.h counts the newest mark back for all before). */
static void marks_flush(struct cluster_groups *g)
{
	while (g->marks && !g->marks->waits) {
		struct group_sub *gs = g->marks;
		g->marks = gs->mark_next;
		gs->mark_next = NULL;
		if (g->on_subscribed && gs->mark)
			g->on_subscribed(g->on_subscribed_ctx, gs->mark);
		gs->mark = 0;
	}
}

static void marks_remove(struct cluster_groups *g, struct group_sub *gs)
{
	for (struct group_sub **pp = &g->marks; *pp; pp = &(*pp)->mark_next)
		if (*pp == gs) {
			*pp = gs->mark_next;
			break;
		}
	marks_flush(g);
}

static void wait_done(struct cluster_groups *g, struct group_sub *gs)
{
	if (gs->waits)
		gs->waits--;
	marks_flush(g);
}

/* The group's stream consumers' filter subjects (as its queue SUBs':
 * a filter ending in "/#" needs its parent level too), then joined. */
static void stream_join(struct cluster_groups *g, struct group_sub *gs, const char *filter, size_t flen)
{
	if (!g->stream_ops)
		return;
	bool parent_too = false;
	ssize_t n = subject_from_filter(g->stream_prefix, filter, flen, g->buf, g->buf_cap, &parent_too);
	if (n < 0)
		return;
	char *parent = NULL;
	if (parent_too) {
		parent = wisp_strndup(g->buf, (size_t)n - 2); /* without ".>" */
		if (!parent)
			return;
	}
	char name[64];
	queue_name(gs, name);
	gs->stream_id = ++g->stream_ids;
	gs->stream_wait = g->stream_ops->join(g->stream_ctx, gs->stream_id, name, g->buf, parent);
	if (gs->stream_wait)
		gs->waits++;
	wisp_free(parent);
}

/* Queues the queue SUB of gs's subscription i (0: its subject, 1: the
 * parent level) on the share sender, under a new tag. */
static void subscribe_one(struct cluster_groups *g, struct group_sub *gs, int i, const char *queue)
{
	struct tag_link *l = &gs->links[i];
	struct sender_sub **sub = i ? &gs->parent_sub : &gs->sub;
	l->tag = ++g->tags;
	*sub = sender_subscribe(g->sender, g->nc, g->buf, queue, on_group_msg, g, l->tag);
	if (!*sub) {
		log_msg(LOG_WARNING, "cluster", "out of memory: no NATS queue subscription for '%.*s': its members "
			"get only this node's messages' share", (int)gs->len, gs->key);
		return;
	}
	l->gs = gs;
	struct tag_link **pp = &g->by_tag[l->tag % GROUPS_BUCKETS];
	l->next = *pp;
	*pp = l;
	(*g->count)++;
}

/* Leaves `leaving` for groups_resubscribe: false when out of memory. */
static bool leave_later(struct cluster_groups *g, struct sender_sub **sub)
{
	if (g->nleaving == g->leaving_cap) {
		size_t cap = g->leaving_cap ? g->leaving_cap * 2 : 8;
		struct sender_sub **grown = wisp_realloc(g->leaving, cap * sizeof *grown);
		if (!grown)
			return false;
		g->leaving = grown;
		g->leaving_cap = cap;
	}
	g->leaving[g->nleaving++] = *sub;
	*sub = NULL;
	return true;
}

/* The connection is up again, or replaced (its subscriptions closed with
 * it: the UNSUB only ends them on our side). */
static void unsubscribe_leaving(struct cluster_groups *g)
{
	for (size_t i = 0; i < g->nleaving; i++)
		sender_unsubscribe(g->sender, g->leaving[i]);
	g->nleaving = 0;
}

/* The UNSUB queued on the share sender at once (sender.h: destroyed
 * NATS_RETIRE_MS later, or once every connection is closed). Not `now`
 * (the connection is down, link.h): its messages map to no group from now
 * on, and groups_resubscribe ends it. */
static void unsubscribe(struct cluster_groups *g, struct group_sub *gs, bool now)
{
	struct sender_sub **subs[2] = {&gs->sub, &gs->parent_sub};
	for (int i = 0; i < 2; i++) {
		if (!*subs[i])
			continue;
		struct tag_link **pp = find_tag(g, gs->links[i].tag);
		if (*pp)
			*pp = (*pp)->next;
		if (now || !leave_later(g, subs[i]))
			sender_unsubscribe(g->sender, *subs[i]);
		*subs[i] = NULL;
		(*g->count)--;
	}
}

static void subscribe_queue(struct cluster_groups *g, struct group_sub *gs);

/* tell: a new group's queue SUB, which its mark waits for; not one made
 * again on a connection cnats replaced (groups_reconnect). The mark goes
 * out on the same sender, after the SUB. */
static void subscribe(struct cluster_groups *g, struct group_sub *gs, bool tell)
{
	subscribe_queue(g, gs);
	if (tell)
		wait_done(g, gs);
}

static void subscribe_queue(struct cluster_groups *g, struct group_sub *gs)
{
	size_t at = 0;
	while (at < gs->len && gs->key[at] != '/')
		at++; /* "$share" */
	at++;
	while (at < gs->len && gs->key[at] != '/')
		at++; /* the group */
	at++;
	bool parent_too = false;
	ssize_t n = subject_from_filter(g->prefix, gs->key + at, gs->len - at, g->buf, g->buf_cap, &parent_too);
	if (n < 0)
		return;
	char queue[64];
	queue_name(gs, queue);
	if (!nats_link_up(&g->link))
		return; /* groups_resubscribe, once it is back */
	/* Even out of memory the caller counts it done: a SUBACK waiting for
	 * the mark must not hang. A SUB cnats refuses is counted by the
	 * sender and logged by the loop (cluster.c). */
	subscribe_one(g, gs, 0, queue);
	if (gs->sub && parent_too) {
		g->buf[n - 2] = '\0'; /* without ".>" */
		subscribe_one(g, gs, 1, queue);
	}
}

static void unhold(struct cluster_groups *g, struct group_sub *gs)
{
	for (struct group_sub **pp = &g->held; *pp; pp = &(*pp)->held_next)
		if (*pp == gs) {
			*pp = gs->held_next;
			return;
		}
}

static void on_held_due(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct cluster_groups *g = container_of(t, struct cluster_groups, held_timer);
	while (g->held) {
		struct group_sub *gs = g->held;
		g->held = gs->held_next;
		subscribe(g, gs, true);
	}
}

/* Debug builds: WISP_DEBUG_DELAY_SHARE_SUB sends a new group's queue SUB at
 * the loop's next whole second (up to a second late, under the default
 * interest_ack_timeout), in order, so that a test sees whether the SUBACK
 * waits for it to reach nats-server. */
static bool hold(struct cluster_groups *g, struct group_sub *gs)
{
	if (!g->delay_subs || !g->loop)
		return false;
	struct group_sub **pp = &g->held;
	while (*pp)
		pp = &(*pp)->held_next;
	*pp = gs;
	if (!loop_timer_armed(&g->held_timer))
		loop_timer_start(g->loop, &g->held_timer, 0, on_held_due);
	return true;
}

bool groups_ref(struct cluster_groups *g, const char *key, size_t len, uint64_t mark)
{
	uint32_t h = hash_bytes(0, key, len);
	struct group_sub **pp = find_key(g, key, len, h);
	if (*pp) {
		(*pp)->count++;
		return false;
	}
	struct group_sub *gs = wisp_calloc(1, sizeof *gs + len);
	if (!gs) {
		log_msg(LOG_WARNING, "cluster", "out of memory: shared subscription '%.*s' gets no messages from "
			"other nodes", (int)len, key);
		return false;
	}
	g->ngroups++;
	g->refusing = false;
	gs->mark = mark;
	gs->hash = h;
	gs->count = 1;
	gs->len = (uint16_t)len;
	memcpy(gs->key, key, len);
	make_digest(key, len, gs->digest);
	gs->digest_hash = hash_bytes(0, gs->digest, 32);
	*pp = gs;
	struct group_sub **dp = &g->by_digest[gs->digest_hash % GROUPS_BUCKETS];
	gs->by_digest_next = *dp;
	*dp = gs;
	gs->waits = 1; /* its queue SUB */
	if (mark) {
		struct group_sub **mp = &g->marks;
		while (*mp)
			mp = &(*mp)->mark_next;
		*mp = gs;
	}
	size_t at = 0;
	while (at < len && key[at] != '/')
		at++; /* "$share" */
	at++;
	while (at < len && key[at] != '/')
		at++; /* the group */
	at++;
	if (at < len)
		stream_join(g, gs, key + at, len - at);
	/* A failed subscribe keeps the entry, so the unrefs stay balanced. */
	if (!hold(g, gs))
		subscribe(g, gs, true);
	return true;
}

static void forget(struct cluster_groups *g, struct group_sub *gs)
{
	for (struct group_sub **dp = &g->by_digest[gs->digest_hash % GROUPS_BUCKETS]; *dp; dp = &(*dp)->by_digest_next)
		if (*dp == gs) {
			*dp = gs->by_digest_next;
			break;
		}
	marks_remove(g, gs);
	if (gs->stream_id && g->stream_ops)
		g->stream_ops->leave(g->stream_ctx, gs->stream_id);
}

void groups_unref(struct cluster_groups *g, const char *key, size_t len)
{
	struct group_sub **pp = find_key(g, key, len, hash_bytes(0, key, len));
	struct group_sub *gs = *pp;
	if (!gs || --gs->count > 0)
		return;
	unhold(g, gs);
	unsubscribe(g, gs, nats_link_up(&g->link));
	*pp = gs->by_key_next;
	forget(g, gs);
	wisp_free(gs);
	g->ngroups--;
}

/* Shown of a refused key in the log: it is the client's, up to
 * max_topic_length long. */
#define LOG_KEY_MAX 80

bool groups_admit(struct cluster_groups *g, const char *key, size_t len)
{
	if (g->ngroups < g->max_groups || *find_key(g, key, len, hash_bytes(0, key, len)))
		return true;
	if (!g->refusing)
		log_msg(LOG_WARNING, "cluster", "refusing new shared subscription groups: this node holds "
			"cluster.max_groups (%zu) already; '%.*s'%s refused (SUBACK 0x97, 3.1.1: 0x80), joining a held "
			"group still works; further refusals until a group is made again are counted in "
			"$SYS/broker/cluster/groups/refused", g->max_groups, (int)(len < LOG_KEY_MAX ? len : LOG_KEY_MAX),
			key, len > LOG_KEY_MAX ? "..." : "");
	g->refusing = true;
	return false;
}

void groups_set_stream(struct cluster_groups *g, const struct groups_stream_ops *ops, void *ctx, const char *stream)
{
	g->stream_prefix = wisp_strndup(stream, strlen(stream));
	g->stream_ops = g->stream_prefix ? ops : NULL;
	g->stream_ctx = ctx;
}

void groups_stream_ready(struct cluster_groups *g, uint64_t id)
{
	/* Few groups wait at once (new ones, for a round trip): a scan of
	 * the waiting ones only. */
	for (struct group_sub *gs = g->marks; gs; gs = gs->mark_next)
		if (gs->stream_id == id && gs->stream_wait) {
			gs->stream_wait = false;
			wait_done(g, gs);
			return;
		}
}

const char *groups_by_consumer(const struct cluster_groups *g, const char *consumer, size_t *len)
{
	size_t plen = sizeof NAME_PREFIX - 1;
	size_t clen = strlen(consumer);
	if (clen < plen + 32 || memcmp(consumer, NAME_PREFIX, plen) != 0 ||
	    (clen != plen + 32 && strcmp(consumer + plen + 32, "-p") != 0))
		return NULL;
	const char *digest = consumer + plen;
	uint32_t h = hash_bytes(0, digest, 32);
	for (const struct group_sub *gs = g->by_digest[h % GROUPS_BUCKETS]; gs; gs = gs->by_digest_next)
		if (gs->digest_hash == h && memcmp(gs->digest, digest, 32) == 0 && gs->stream_id) {
			*len = gs->len;
			return gs->key;
		}
	return NULL;
}

bool groups_message(struct cluster_groups *g, natsMsg *nm, const char **key, size_t *len)
{
	const char *tag = NULL;
	if (natsMsgHeader_Get(nm, TAG_HEADER, &tag) != NATS_OK || !tag)
		return false;
	size_t slen = strlen(g->secret);
	if (strncmp(tag, g->secret, slen) != 0 || tag[slen] != '.')
		return false; /* set by a NATS publisher, not by on_group_msg */
	struct tag_link *l = *find_tag(g, strtoull(tag + slen + 1, NULL, 10));
	*key = l ? l->gs->key : NULL;
	*len = l ? l->gs->len : 0;
	return true;
}

natsConnection *groups_connection(const struct cluster_groups *g) { return g->nc; }

void groups_on_subscribed(struct cluster_groups *g, struct loop *loop, void (*cb)(void *ctx, uint64_t mark),
			  void *ctx)
{
	g->loop = loop;
	g->on_subscribed = cb;
	g->on_subscribed_ctx = ctx;
}

bool groups_connected(const struct cluster_groups *g)
{
	return g && nats_link_up(&g->link);
}

const struct nats_link *groups_link(const struct cluster_groups *g) { return g ? &g->link : NULL; }

/* The queue SUB of every group without one; a group held back (debug
 * builds) or whose SUBACK waits for its mark keeps waiting as it did. */
static void subscribe_missing(struct cluster_groups *g)
{
	for (size_t i = 0; i < GROUPS_BUCKETS; i++)
		for (struct group_sub *gs = g->by_key[i]; gs; gs = gs->by_key_next) {
			bool held = false;
			for (struct group_sub *h = g->held; h && !held; h = h->held_next)
				held = h == gs;
			if (!gs->sub && !held)
				subscribe(g, gs, false);
		}
}

void groups_resubscribe(struct cluster_groups *g)
{
	if (!g || !nats_link_up(&g->link))
		return;
	unsubscribe_leaving(g);
	subscribe_missing(g);
}

/* A callback makes a failed first connect retry in the background:
 * without one cnats retries inside natsConnection_Connect, forever (max
 * reconnect -1), blocking the loop of a node started while NATS is down.
 * It also tells the loop of a connection made anew (groups_reconnect). */
static void on_connected(natsConnection *nc, void *closure)
{
	(void)nc;
	struct cluster_groups *g = closure;
	nats_link_set(&g->link, true);
	inbox_raise(g->inbox, GROUPS_EV_UP);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
	(void)nc;
	struct cluster_groups *g = closure;
	nats_link_set(&g->link, false);
	inbox_raise(g->inbox, GROUPS_EV_DOWN);
}

/* cnats gave the connection up (refused twice in a row): the loop makes a
 * new one (groups_reconnect). Also for one made anew and refused before
 * the loop adopted it: the link says which connection closed. */
static void on_closed(natsConnection *nc, void *closure)
{
	struct cluster_groups *g = closure;
	nats_link_closed(&g->link, nc);
	inbox_raise(g->inbox, GROUPS_EV_CLOSED);
}

/* cnats's asynchronous errors: a slow consumer (a queue subscription's
 * pending limit full, messages dropped) is told to the loop. */
static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	(void)nc;
	(void)sub;
	if (err == NATS_SLOW_CONSUMER)
		inbox_raise(((struct cluster_groups *)closure)->inbox, GROUPS_EV_SLOW);
}

uint64_t groups_pending_dropped(const struct cluster_groups *g)
{
	if (!g)
		return 0;
	uint64_t total = g->sender ? sender_dropped_gone(g->sender) : 0;
	for (size_t i = 0; i < GROUPS_BUCKETS; i++)
		for (const struct group_sub *gs = g->by_key[i]; gs; gs = gs->by_key_next)
			total += (gs->sub ? sender_sub_dropped(gs->sub) : 0) +
				 (gs->parent_sub ? sender_sub_dropped(gs->parent_sub) : 0);
	for (size_t i = 0; i < g->nleaving; i++)
		total += sender_sub_dropped(g->leaving[i]);
	return total;
}

int groups_start(struct cluster_groups **out, const struct config_cluster *cfg, const struct nats_signer *signer,
		 const char *node, const char *prefix, struct sender *sender,
		 struct inbox *inbox, uint64_t *count, char *err, size_t errlen)
{
	*out = NULL;
	struct cluster_groups *g = wisp_calloc(1, sizeof *g);
	if (!g)
		goto nomem;
	g->sender = sender;
	g->inbox = inbox;
	g->count = count;
	g->max_groups = cfg->max_groups;
	list_init(&g->held_timer.link);
#ifndef NDEBUG
	g->delay_subs = getenv("WISP_DEBUG_DELAY_SHARE_SUB") != NULL;
#endif
	g->prefix = wisp_strndup(prefix, strlen(prefix));
	/* The longest filter: max_topic_length is at most 65535. */
	g->buf_cap = SUBJECT_MAX(strlen(prefix), 65535);
	g->buf = wisp_malloc(g->buf_cap);
	if (!g->prefix || !g->buf)
		goto nomem;
	uint64_t secret = 0;
	if (getentropy(&secret, sizeof secret) != 0)
		secret = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)g;
	snprintf(g->secret, sizeof g->secret, "%016" PRIx64, secret);
	char name[300];
	snprintf(name, sizeof name, "%s-share", node);
	natsStatus st = natsOptions_Create(&g->opts);
	if (st == NATS_OK)
		st = natsOptions_SetURL(g->opts, cfg->nats);
	if (st == NATS_OK)
		st = natsOptions_SetName(g->opts, name);
	if (st == NATS_OK && nats_auth_apply(g->opts, cfg, signer, err, errlen) != 0) {
		groups_close(g);
		groups_free(g);
		return WISP_ECONFIG;
	}
	if (st == NATS_OK)
		st = natsOptions_UseGlobalMessageDelivery(g->opts, true);
	if (st == NATS_OK)
		st = natsOptions_SetMaxReconnect(g->opts, -1);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectWait(g->opts, 500);
	if (st == NATS_OK)
		st = natsOptions_SetErrorHandler(g->opts, on_async_error, g);
	if (st == NATS_OK)
		st = natsOptions_SetRetryOnFailedConnect(g->opts, true, on_connected, g);
	if (st == NATS_OK)
		st = natsOptions_SetClosedCB(g->opts, on_closed, g);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectedCB(g->opts, on_connected, g);
	if (st == NATS_OK)
		st = natsOptions_SetDisconnectedCB(g->opts, on_disconnected, g);
	if (st == NATS_OK) {
		st = natsConnection_Connect(&g->nc, g->opts);
		if (st == NATS_OK)
			nats_link_set(&g->link, true); /* at the first try: cnats calls no callback */
		else if (st == NATS_NOT_YET_CONNECTED)
			st = NATS_OK;
	}
	if (st != NATS_OK) {
		char urls[512];
		nats_urls_redacted(cfg->nats, urls, sizeof urls);
		snprintf(err, errlen, "cluster: cannot set up the shared-subscription NATS connection to %s: %s", urls,
			 natsStatus_GetText(st));
		groups_close(g);
		groups_free(g);
		return WISP_EIO;
	}
	*out = g;
	return 0;
nomem:
	snprintf(err, errlen, "cluster: out of memory");
	groups_close(g);
	groups_free(g);
	return WISP_ENOMEM;
}

natsOptions *groups_options(const struct cluster_groups *g) { return g->opts; }

void groups_reconnect(struct cluster_groups *g, natsConnection *nc, bool connected)
{
	/* cnats closed the old connection's subscriptions with it: they hand
	 * over nothing more, and only their objects are left to free. */
	for (size_t i = 0; i < GROUPS_BUCKETS; i++)
		for (struct group_sub *gs = g->by_key[i]; gs; gs = gs->by_key_next)
			unsubscribe(g, gs, true);
	unsubscribe_leaving(g);
	natsConnection *old = g->nc;
	g->nc = nc;
	nats_link_forget(&g->link, old);
	natsConnection_Destroy(old);
	/* The old one's close left the link down, and the new one's callbacks
	 * say when it is up: one may have come already (a retry that
	 * succeeded before this adoption), so the link is not overwritten
	 * here. One connected at the first try gets none. */
	if (connected)
		on_connected(nc, g);
	subscribe_missing(g); /* the same queues again */
}

bool groups_closed(const struct cluster_groups *g)
{
	return g && nats_link_is_closed(&g->link, g->nc);
}

void groups_leave(struct cluster_groups *g)
{
	if (!g)
		return;
	if (g->loop && loop_timer_armed(&g->held_timer))
		loop_timer_stop(g->loop, &g->held_timer);
	g->held = NULL;
	g->marks = NULL;
	g->stream_ops = NULL; /* the durable side unbinds its own at its stop */
	for (size_t i = 0; i < GROUPS_BUCKETS; i++)
		while (g->by_key[i]) {
			struct group_sub *gs = g->by_key[i];
			g->by_key[i] = gs->by_key_next;
			unsubscribe(g, gs, true);
			wisp_free(gs);
		}
	unsubscribe_leaving(g);
	g->ngroups = 0;
}

void groups_close(struct cluster_groups *g)
{
	if (!g)
		return;
	groups_leave(g);
	if (g->nc) {
		natsConnection_Close(g->nc);
		natsConnection_Destroy(g->nc);
		g->nc = NULL;
	}
}

void groups_free(struct cluster_groups *g)
{
	if (!g)
		return;
	natsOptions_Destroy(g->opts);
	wisp_free(g->buf);
	wisp_free(g->prefix);
	wisp_free(g->stream_prefix);
	wisp_free(g->leaving);
	wisp_free(g);
}
