/*
 * The cluster router of cluster.h.
 *
 * Interest: a small chained hash table, filter -> (count of local
 * subscriptions, the one or two NATS subscriptions for it). "a/#" also
 * matches "a" [MQTT-4.7.1-2], which NATS's "a.>" does not, so such a
 * filter holds a second subscription to "a". A shared subscription
 * ($share/group/filter) is a NATS queue subscription instead (groups.h).
 *
 * A message out: one HPUB on the data connection (nats_writer.h), or one
 * natsMsg (subject, headers, payload copied by cnats) while it is down,
 * per client PUBLISH, nothing per subscriber. In: read where it lies in
 * the data connection's input (the filters' subscriptions are there while
 * it is up: fence.h), or a natsMsg of cnats's; either is seen
 * through a struct remote_msg, copied once into a struct msg, the same
 * single allocation a local PUBLISH makes, then routed like one; its
 * origin is this struct, which no session is, so No Local never applies
 * to a remote publisher's message.
 *
 * Headers (the names NATS-native tools see):
 *   Wisp-Node    publishing node's name
 *   Wisp-Seq     <run id>-<number>: drops the extra copies overlapping
 *                filters bring (seen_before)
 *   Wisp-QoS     0, 1 or 2 as published (absent: 0)
 *   Wisp-Retain  "1" when RETAIN was set (for Retain As Published)
 *   Wisp-Expiry  seconds of Message Expiry Interval left
 *   Wisp-Props   forwarded v5 properties, base64 of the MQTT encoding
 *   Wisp-Groups-Served  "1" on a core copy whose node served the shared
 *                groups itself, NATS being away: no group gets it again
 * A message without them (a NATS-native publisher) is delivered at QoS 0,
 * each copy to the subscribers of the filter it came through:
 *   Wisp-Via     set by this node on such a copy (on_filter_msg)
 * A message whose NATS form is over nats-server's max_payload is not
 * sent at all (is_too_large: counted, logged, delivered here only).
 *
 * Loop thread only, except the cnats callbacks at the end of this file,
 * which touch nothing but the inbox (and on_connected the max_payload
 * atomic), and a rejoin's connector thread
 * (struct connector), which only makes a connection and raises an event.
 */
#include "cluster.h"

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "alloc.h"
#include "broker.h"
#include "durable.h"
#include "err.h"
#include "fence.h"
#include "groups.h"
#include "handover.h"
#include "hash.h"
#include "inbox.h"
#include "interest.h"
#include "link.h"
#include "log.h"
#include "nats_auth.h"
#include "nats_proto.h"
#include "nats_writer.h"
#include "presence.h"
#include "retained_kv.h"
#include "retire.h"
#include "sbuf.h"
#include "sender.h"
#include "subject.h"
#include "totals.h"
#include "wire.h"

#define EV_CONNECTED 0x1u
#define EV_DISCONNECTED 0x2u
#define EV_CLOSED 0x4u
#define EV_SLOW 0x80u /* cnats dropped messages: a subscription's pending limit was full */
/* A rejoin's connector thread is done (struct connector). */
#define EV_MAIN_MADE 0x20u
#define EV_SHARE_MADE 0x40u
/* The groups' connection and the retained bucket raise theirs on the same
 * inbox: one bit each. (EV_SLOW was GROUPS_EV_UP's bit: every reconnect
 * of <node>-share logged that cnats was dropping messages.) */
#define EV_OWN (EV_CONNECTED | EV_DISCONNECTED | EV_CLOSED | EV_SLOW | EV_MAIN_MADE | EV_SHARE_MADE)
#define GROUPS_EVS (GROUPS_EV_UP | GROUPS_EV_DOWN | GROUPS_EV_CLOSED | GROUPS_EV_SLOW)
_Static_assert((EV_OWN & (GROUPS_EVS | RETAINED_KV_EVENT)) == 0 && (GROUPS_EVS & RETAINED_KV_EVENT) == 0 &&
		       __builtin_popcount(GROUPS_EVS) == 4,
	       "the cluster inbox's events need a bit each");

/* Messages taken from the inbox per loop wake-up, so NATS traffic cannot
 * starve the node's own clients. */
#define TAKE_BATCH 256

/* The bytes a message's NATS form carries besides its payload and the
 * base64 of its v5 properties, at most, the node's name aside (it comes
 * twice: Wisp-Node, Nats-Msg-Id): cnats writes "NATS/1.0\r\n", then
 * "Key: value\r\n" per header and "\r\n", and nats-server's max_payload
 * counts them with the payload. Every number at its longest; Wisp-Retain
 * and the retained record's Wisp-Expires (longer than Wisp-Expiry) both
 * counted, so it bounds cluster.c's, durable.c's and retained_kv.c's. */
#define NATS_HEADERS_MAX                                                                                     \
	(12       /* "NATS/1.0\r\n", and the "\r\n" that ends the headers */                                \
	 + 13     /* "Wisp-Node: " <node> "\r\n" */                                                         \
	 + 50     /* "Wisp-Seq: " <run, 16> ["d"] "-" <20 digits> "\r\n" */                                 \
	 + 13 + 16 /* "Wisp-QoS: 1\r\n", "Wisp-Retain: 1\r\n" */                                          \
	 + 36     /* "Wisp-Expires: " <20 digits> "\r\n" */                                                 \
	 + 54     /* "Nats-Msg-Id: " <node> "-" <run, 16> "-f" <20 digits> "\r\n" (a core copy: none, */    \
	           /* and at most "Wisp-Groups-Served: 1\r\n" instead) */                                   \
	 + 14)    /* "Wisp-Props: " <base64> "\r\n" */

struct interest {
	struct interest *next;
	struct interest *tag_next; /* in struct cluster's by_tag */
	uint64_t tag;              /* its subscriptions' (sender.h): a copy through them names it */
	uint32_t hash;
	uint32_t count;
	struct sender_sub *sub, *parent_sub; /* made and ended by the sender thread */
	uint8_t wsubs;             /* its SUBs on the data connection (sids tag << 1, | 1 the parent's) */
	uint16_t len;
	char filter[];
};

/* The filters' tables start at this many buckets and double when the
 * filters outnumber them: a node whose devices each subscribe to their
 * own topic holds one filter per device. */
#define INTEREST_BUCKETS_MIN 256u

/* The connections a message from NATS comes by: cnats's subscriptions,
 * or the data connection's own (nats_writer.h). */
enum path { PATH_CNATS = 0, PATH_WRITER = 1 };

/* What one publishing node's run was seen to send, per path: the newest
 * number, and the first one since the path's subscriptions were made
 * (0: none yet). Each path brings every message matching the node's
 * filters in its publisher's order while its subscriptions stand. */
struct origin_seen {
	char key[96];     /* Wisp-Node "/" Wisp-Seq's run id */
	uint64_t newest[2], first[2];
	uint64_t used;    /* seen_before's clock, for replacing the oldest */
};

#define ORIGINS_MAX 64

/* The data connection's subscription to the fence (on_writer_up): below
 * the filters' sids, which are tag << 1 with tags from 1. */
#define FENCE_SID 0u

/*
 * A connection made anew on its own thread: natsConnection_Connect's first
 * try blocks (up to libnats's connect timeout per URL, against a server
 * that does not answer), which the loop must not. The thread only
 * connects and raises `event`; the loop joins it, then adopts nc.
 */
struct connector {
	pthread_t thread;
	bool running;         /* loop thread's: started, not joined yet */
	natsOptions *opts;    /* borrowed */
	struct inbox *inbox;
	unsigned event;
	natsConnection *nc;   /* the thread's, read after the join */
	natsStatus st;
	int64_t max_payload;  /* nc's, when it connected at the first try */
};

struct cluster {
	struct router router;
	struct router *local;
	struct broker *b;
	natsOptions *opts;
	natsConnection *nc;
	/* Subscriptions unsubscribed, destroyed a few seconds later or at
	 * stop once every connection is closed (retire.h): the filters', and
	 * at stop the other modules' on the loop thread. */
	struct nats_retire_loop retired;
	struct inbox inbox;
	struct cluster_groups *groups; /* shared subscriptions (groups.h) */
	struct retained_kv *retained;  /* retained messages (retained_kv.h) */
	struct presence *presence;     /* client ids cluster-wide (presence.h) */
	struct totals *totals;         /* $SYS/cluster/ (totals.h) */
	struct remote_interest *wanted; /* what the other nodes want (interest.h); NULL: send everything */
	struct loop_io io;
	struct interest **buckets; /* by filter */
	struct interest **by_tag;  /* by tag, the same size */
	size_t nbuckets, count;
	uint64_t tags;             /* the last tag given to a filter */
	uint64_t dropped_seen;
	bool drop_logged;
	char *node;
	char *prefix;
	char run[17];     /* this run's id (hex), so a restarted node's numbering is new */
	uint64_t seq;     /* of the last message sent */
	uint64_t stream_seq; /* the number the last message sent to the stream carried; 0: it went to none */
	struct origin_seen origins[ORIGINS_MAX];
	size_t norigins;
	uint64_t origins_clock;
	char *buf;        /* subject or topic scratch, SUBJECT_MAX of the longest topic */
	size_t buf_cap;
	struct durable *durable; /* QoS 1/2 through JetStream (durable.h); NULL: cluster.durable off */
	struct nats_signer *signer; /* NKey of every connection (nats_auth.h); NULL: none */
	struct sender *sender;   /* publishes the data messages off the loop thread (sender.h) */
	struct sender *share_sender; /* the same for '<node>-share': claims, handovers, answers, figures */
	/* The at-most-once messages' own connection (nats_writer.h; NULL:
	 * cluster.data_connection off), numbered apart: "<run>d-<n>", so
	 * its copies and cnats's never look like each other's repeats. */
	struct nats_writer *writer;
	bool via_writer;          /* the messages go through it now (writer_takes) */
	/* Where the filters' subscriptions are read, and their move to the
	 * data connection behind the fence (fence.h), published on
	 * '<node>-share' to fence_subject. */
	struct fence fence;
	char *fence_subject;
	struct sender_sub *fence_sub;  /* cnats's, on the main connection */
	struct loop_timer fence_retry; /* the next probe, while cnats has not heard one */
	/* Set by on_fence_msg on the copies fence_sub brings, never on the
	 * wire: the same subject through another subscription (a shared
	 * group's '>' on '<node>-share', not in the main connection's order)
	 * is no fence. */
	char fence_secret[17];
	struct loop_timer fence_wait;  /* FENCE_T_WAIT */
	struct loop_timer fence_grace; /* FENCE_T_GRACE: cnats's subscriptions end when it fires */
	/* The SUBACK's wait for filters subscribed on the data connection: the
	 * mark out (wm_ping, answering the adds up to wm_add) and the adds
	 * that wait for the next one (up to wm_next_add; 0: none). */
	uint64_t wm_ping, wm_add, wm_next_add;
	uint64_t direct_seq;      /* of the last one it took */
	struct sbuf hdr;          /* its header block scratch */
	uint64_t send_failed_seen; /* sender_failed() already counted */
	uint64_t sender_too_large_seen; /* sender_too_large() already counted */
	uint64_t sub_failed_seen; /* sender_sub_failed() already logged */
	uint64_t share_sub_failed_seen; /* the same, of the share sender: the groups' queue SUBs */
	uint64_t early_seen;      /* sender_retired_early() at the last look */
	uint64_t early_at;        /* loop ms it last grew; the episode ends NATS_RETIRE_MS after */
	bool early_logged;        /* this episode of its full retire list is logged */
	/* The main connection's max_payload at its last connect (on_connected,
	 * any thread; 0: never connected), and what a message's NATS form
	 * adds to its payload at most (NATS_HEADERS_MAX and the node's name). */
	_Atomic int64_t max_payload;
	struct nats_link main_link; /* which connection cnats closed for good (link.h) */
	uint64_t nats_headers_max;
	int64_t too_large_said;   /* the max_payload the last too-large line named: once per value */
	int64_t max_payload_said; /* the max_payload the connect NOTICE looked at */
	/* The loop ms of the last QoS 0 message dropped for a full send
	 * queue (0: none yet): an episode is drops less than
	 * SEND_DROP_EPISODE_MS apart, logged once. */
	uint64_t send_drop_at;
	bool pending_drops;      /* cnats dropped messages lately: counted again each second */
	struct loop_timer drops_timer;
	bool subs_deferred;      /* a SUB waits for the main connection (nats_subscribe) */
	bool share_lost;         /* '<node>-share' lost, logged (GROUPS_EV_DOWN) */
	struct sender_sub **gone; /* UNSUBs waiting for it */
	size_t ngone, gone_cap;
	bool slow_delivery;      /* debug builds: WISP_DEBUG_SLOW_NATS_DELIVERY (tests) */
	/* A connection cnats closed for good (main or '<node>-share') is made
	 * anew after rejoin_wait_ms, on a connector thread (rejoin_main,
	 * rejoin_share). */
	struct loop_timer rejoin_timer;
	struct connector main_k, share_k;
	uint32_t rejoin_wait_ms;
	uint32_t rejoin_tries;
	bool alone;       /* an episode is on (said once): "rejoined" closes it */
};

static struct cluster *of(struct router *r) { return container_of(r, struct cluster, router); }

/* ---- interest ---- */

static struct interest **find(struct cluster *c, const char *filter, size_t len, uint32_t h)
{
	struct interest **pp = &c->buckets[h & (c->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->filter, filter, len) == 0)
			break;
	return pp;
}

static void on_nats_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure);

/*
 * cnats's delivery thread. NATS sends a node one copy of a message per
 * subscription of its that matches, and the node holds one per filter
 * (two for "f/#", which never both match one subject): a Wisp node's
 * copies are told apart by their numbering (seen_before), a NATS-native
 * publisher's cannot be. So such a copy is marked with the
 * filter that it came through (header Wisp-Via, set here whatever the
 * publisher wrote there) and goes to that filter's subscribers only
 * (route_publish_filter): each subscriber of the node gets it once per
 * filter of its own that matches, as on a single node that sends a copy
 * per subscription (MQTT 3.1.1 3.3.5 allows both).
 */
static void on_filter_msg(natsMsg *msg, void *closure, uint64_t tag)
{
	if (!wire_header(msg, "Wisp-Node")) {
		char via[24];
		snprintf(via, sizeof via, "%" PRIu64, tag);
		if (natsMsgHeader_Set(msg, "Wisp-Via", via) != NATS_OK) {
			natsMsg_Destroy(msg); /* out of memory: as a drop of cnats's */
			return;
		}
	}
	on_nats_msg(NULL, NULL, msg, closure);
}

/* cnats's delivery thread: the claims, handovers, interest and $SYS
 * figures on '<node>-share' (subscriptions the share sender makes). */
static void on_share_msg(natsMsg *msg, void *closure, uint64_t tag)
{
	(void)tag;
	on_nats_msg(NULL, NULL, msg, closure);
}

/* cnats's delivery thread: the fence on the main connection (fence_listen),
 * marked as this subscription's (is_fence). */
static void on_fence_msg(natsMsg *msg, void *closure, uint64_t tag)
{
	(void)tag;
	const struct cluster *c = closure;
	if (natsMsgHeader_Set(msg, "Wisp-Fence", c->fence_secret) != NATS_OK) {
		natsMsg_Destroy(msg); /* out of memory: as a drop of cnats's */
		return;
	}
	on_nats_msg(NULL, NULL, msg, closure);
}

static struct interest *find_tag(struct cluster *c, uint64_t tag)
{
	struct interest *in = c->by_tag[tag & (c->nbuckets - 1)];
	while (in && in->tag != tag)
		in = in->tag_next;
	return in;
}

static void unlink_tag(struct cluster *c, struct interest *in)
{
	struct interest **pp = &c->by_tag[in->tag & (c->nbuckets - 1)];
	while (*pp && *pp != in)
		pp = &(*pp)->tag_next;
	assert(*pp == in); /* else find_tag would meet it once freed */
	if (*pp)
		*pp = in->tag_next;
}

/*
 * The SUBs and UNSUBs go through the sender thread (sender.h): made here,
 * each would wait for the main connection's lock behind a QoS 0 write
 * stalled by a server that stopped reading. While the connection is lost
 * they are not even queued: cnats's reconnect thread holds that lock
 * through each attempt (cluster.connect_timeout), which would hold the
 * sender's data too, and nothing arrives meanwhile anyway. They are made
 * once it is back (subscribe_deferred), before the interest machinery's
 * hello and snapshot, which go through the same queue after them.
 */
static int cnats_subscribe(struct cluster *c, struct interest *in)
{
	if (!c->b->stats.cluster.connected) {
		c->subs_deferred = true;
		return 0;
	}
	bool parent_too = false;
	ssize_t n = subject_from_filter(c->prefix, in->filter, in->len, c->buf, c->buf_cap, &parent_too);
	if (n < 0)
		return (int)n;
	in->sub = sender_subscribe(c->sender, c->nc, c->buf, NULL, on_filter_msg, c, in->tag);
	if (in->sub && parent_too) {
		c->buf[n - 2] = '\0'; /* without ".>" */
		in->parent_sub = sender_subscribe(c->sender, c->nc, c->buf, NULL, on_filter_msg, c, in->tag);
	}
	c->b->stats.cluster.subjects += (uint64_t)(in->sub != NULL) + (uint64_t)(in->parent_sub != NULL);
	if (!in->sub || (parent_too && !in->parent_sub)) {
		log_msg(LOG_WARNING, "cluster", "out of memory: no NATS subscription for '%.*s'", (int)in->len,
			in->filter);
		return WISP_ENOMEM;
	}
	return 0;
}

static void release_sub(struct cluster *c, struct sender_sub *sub)
{
	sender_unsubscribe(c->sender, sub);
	c->b->stats.cluster.subjects--;
}

/* now: at once whatever the connection's state (stopping). */
static void cnats_unsubscribe(struct cluster *c, struct interest *in, bool now)
{
	struct sender_sub **subs[2] = {&in->sub, &in->parent_sub};
	for (int i = 0; i < 2; i++) {
		if (!*subs[i])
			continue;
		if (!now && !c->b->stats.cluster.connected) {
			if (c->ngone == c->gone_cap) {
				size_t cap = c->gone_cap ? 2 * c->gone_cap : 16;
				struct sender_sub **grown = wisp_realloc(c->gone, cap * sizeof *grown);
				if (!grown) {
					release_sub(c, *subs[i]); /* out of memory: at once */
					*subs[i] = NULL;
					continue;
				}
				c->gone = grown;
				c->gone_cap = cap;
			}
			c->gone[c->ngone++] = *subs[i];
		} else {
			release_sub(c, *subs[i]);
		}
		*subs[i] = NULL;
	}
}

/* The filter's SUBs on the data connection; false when they could not
 * be queued (not up, or lost meanwhile: then on_writer_down ran). */
static bool writer_subscribe(struct cluster *c, struct interest *in)
{
	bool parent_too = false;
	ssize_t n = subject_from_filter(c->prefix, in->filter, in->len, c->buf, c->buf_cap, &parent_too);
	if (n < 0 || nats_writer_subscribe(c->writer, in->tag << 1, c->buf, (size_t)n) != 0)
		return false;
	in->wsubs = 1;
	c->b->stats.cluster.subjects++;
	if (parent_too && nats_writer_subscribe(c->writer, in->tag << 1 | 1, c->buf, (size_t)n - 2) != 0)
		return false;
	in->wsubs = (uint8_t)(1 + parent_too);
	c->b->stats.cluster.subjects += parent_too;
	return true;
}

static void writer_unsubscribe(struct cluster *c, struct interest *in)
{
	if (!in->wsubs)
		return;
	c->b->stats.cluster.subjects -= in->wsubs;
	uint8_t n = in->wsubs;
	in->wsubs = 0;
	/* Not up: its subscriptions ended with the connection. */
	if (nats_writer_unsubscribe(c->writer, in->tag << 1) == 0 && n == 2)
		nats_writer_unsubscribe(c->writer, in->tag << 1 | 1);
}

/* Where the filters are read (fence.h): new ones go there too. */
static int nats_subscribe(struct cluster *c, struct interest *in)
{
	if (c->fence.reading != READ_CNATS && writer_subscribe(c, in) && !fence_cnats_reads(&c->fence))
		return 0;
	if (in->sub)
		return 0; /* the data connection was lost meanwhile: on_writer_down subscribed it */
	return cnats_subscribe(c, in);
}

static void nats_unsubscribe(struct cluster *c, struct interest *in, bool now)
{
	writer_unsubscribe(c, in);
	cnats_unsubscribe(c, in, now);
}

/* The main connection is back: the UNSUBs and SUBs deferred while it was
 * lost. */
static void subscribe_deferred(struct cluster *c)
{
	for (size_t i = 0; i < c->ngone; i++)
		release_sub(c, c->gone[i]);
	c->ngone = 0;
	if (!c->subs_deferred)
		return;
	c->subs_deferred = false;
	if (!fence_cnats_reads(&c->fence))
		return;
	for (size_t i = 0; i < c->nbuckets; i++)
		for (struct interest *in = c->buckets[i]; in; in = in->next)
			if (!in->sub)
				cnats_subscribe(c, in);
}

/* cnats's subscription to the fence, on the main connection once connected
 * (and on a connection made anew: rejoin_main). */
static void fence_listen(struct cluster *c)
{
	if (!c->writer || c->fence_sub || !c->b->stats.cluster.connected)
		return;
	c->fence_sub = sender_subscribe(c->sender, c->nc, c->fence_subject, NULL, on_fence_msg, c, 0);
	fence_listen_anew(&c->fence);
	if (!c->fence_sub)
		log_msg(LOG_WARNING, "cluster", "out of memory: no NATS subscription to the fence; the filters move "
			"to the data connection without it");
}

static void fence_unlisten(struct cluster *c)
{
	if (c->fence_sub)
		sender_unsubscribe(c->sender, c->fence_sub);
	c->fence_sub = NULL;
	fence_listen_anew(&c->fence);
}

static bool is_fence(const struct cluster *c, natsMsg *nm)
{
	const char *subject = natsMsg_GetSubject(nm);
	if (!c->fence_subject || subject[0] != '$' || strcmp(subject, c->fence_subject) != 0)
		return false;
	const char *mark = wire_header(nm, "Wisp-Fence");
	return mark && strcmp(mark, c->fence_secret) == 0;
}

/* A new group's queue SUB was just queued: its mark follows it. */
static void on_group_subscribed(void *ctx, uint64_t mark)
{
	struct cluster *c = ctx;
	remote_interest_mark(c->wanted, mark);
}

/* Both tables twice as large, once the filters outnumber the buckets:
 * chains stay about one long. Out of memory: they stay as they are,
 * chains only longer. */
static void grow_buckets(struct cluster *c)
{
	size_t n = c->nbuckets * 2;
	struct interest **buckets = wisp_calloc(n, sizeof *buckets);
	struct interest **by_tag = wisp_calloc(n, sizeof *by_tag);
	if (!buckets || !by_tag) {
		wisp_free(buckets);
		wisp_free(by_tag);
		return;
	}
	for (size_t i = 0; i < c->nbuckets; i++)
		while (c->buckets[i]) {
			struct interest *in = c->buckets[i];
			c->buckets[i] = in->next;
			in->next = buckets[in->hash & (n - 1)];
			buckets[in->hash & (n - 1)] = in;
			in->tag_next = by_tag[in->tag & (n - 1)];
			by_tag[in->tag & (n - 1)] = in;
		}
	wisp_free(c->buckets);
	wisp_free(c->by_tag);
	c->buckets = buckets;
	c->by_tag = by_tag;
	c->nbuckets = n;
}

/* A mark on the data connection for the adds up to wm_next_add: at most
 * one out at a time, the adds meanwhile wait for the next. Not up: the
 * SUBACKs go without it (the SUBs went with the connection; cnats has
 * them again). */
static void send_writer_mark(struct cluster *c)
{
	uint64_t ping = nats_writer_mark(c->writer);
	if (ping) {
		c->wm_ping = ping;
		c->wm_add = c->wm_next_add;
	} else {
		remote_interest_writer_marked(c->wanted, c->wm_next_add);
	}
	c->wm_next_add = 0;
}

static void writer_mark_after(struct cluster *c, uint64_t add)
{
	if (!add)
		return;
	c->wm_next_add = add;
	remote_interest_await_writer(c->wanted, add);
	if (!c->wm_ping)
		send_writer_mark(c);
}

static void interest_ref(struct cluster *c, const char *filter, size_t len)
{
	if (share_is_shared(filter, len)) {
		remote_interest_local_add(c->wanted, filter, len);
		uint64_t mark = remote_interest_last_add(c->wanted);
		if (groups_ref(c->groups, filter, len, mark))
			remote_interest_await_mark(c->wanted, mark);
		return;
	}
	uint32_t h = hash_bytes(0, filter, len);
	struct interest **pp = find(c, filter, len, h);
	struct interest *in = NULL;
	if (*pp) {
		(*pp)->count++;
	} else if (!(in = wisp_calloc(1, sizeof *in + len))) {
		log_msg(LOG_WARNING, "cluster", "out of memory: '%.*s' gets no messages from other nodes",
			(int)len, filter);
	} else {
		in->hash = h;
		in->count = 1;
		in->len = (uint16_t)len;
		memcpy(in->filter, filter, len);
		*pp = in;
		in->tag = ++c->tags;
		in->tag_next = c->by_tag[in->tag & (c->nbuckets - 1)];
		c->by_tag[in->tag & (c->nbuckets - 1)] = in;
		if (++c->count > c->nbuckets)
			grow_buckets(c);
		/* A failed subscribe keeps the entry (and its count), so the
		 * unsubscribes stay balanced; the filter just gets nothing
		 * remote. */
		nats_subscribe(c, in);
	}
	/* The announcement after the SUB, in the sender's queue behind it:
	 * NATS has the SUB before any other node hears of the filter. */
	remote_interest_local_add(c->wanted, filter, len);
	/* A SUB on the data connection is not ordered with it: the SUBACK
	 * also waits for a mark after it (writer_mark_after). */
	if (in && in->wsubs)
		writer_mark_after(c, remote_interest_last_add(c->wanted));
}

static void interest_unref(struct cluster *c, const char *filter, size_t len)
{
	remote_interest_local_remove(c->wanted, filter, len);
	if (share_is_shared(filter, len)) {
		groups_unref(c->groups, filter, len);
		return;
	}
	struct interest **pp = find(c, filter, len, hash_bytes(0, filter, len));
	struct interest *in = *pp;
	if (!in || --in->count > 0)
		return;
	nats_unsubscribe(c, in, false);
	*pp = in->next;
	unlink_tag(c, in);
	c->count--;
	wisp_free(in);
}

static void on_sub_gone(void *ctx, const char *filter, size_t len) { interest_unref(ctx, filter, len); }

static int cluster_interest_add(struct router *r, struct session *s, const char *filter, size_t len,
				uint8_t options, uint32_t subscription_id, size_t max_subs)
{
	struct cluster *c = of(r);
	/* A group new to the node costs nats-server consumers whoever asks:
	 * past cluster.max_groups it is refused as max_subs refuses a filter
	 * (SUBACK 0x97 Quota exceeded, 3.1.1: 0x80 [MQTT-3.9.3]). */
	if (share_is_shared(filter, len) && !groups_admit(c->groups, filter, len)) {
		c->b->stats.cluster.groups_refused++;
		return WISP_ELIMIT;
	}
	int rc = router_interest_add(c->local, s, filter, len, options, subscription_id, max_subs);
	if (rc == 1)
		interest_ref(c, filter, len);
	return rc;
}

static int cluster_interest_remove(struct router *r, struct session *s, const char *filter, size_t len)
{
	struct cluster *c = of(r);
	int rc = router_interest_remove(c->local, s, filter, len);
	if (rc == 0)
		interest_unref(c, filter, len);
	return rc;
}

/* ---- publish: out to NATS ---- */

static bool is_sys(const struct msg *m)
{
	return m->topic_len >= 5 && memcmp(msg_topic(m), "$SYS/", 5) == 0;
}

/* The NATS message for m, on `prefix`'s subject of its topic, with a reply
 * subject or NULL. */
static int make_nats_msg(struct cluster *c, const struct msg *m, const char *prefix, const char *reply,
			 natsMsg **out)
{
	*out = NULL;
	ssize_t n = subject_from_topic(prefix, msg_topic(m), m->topic_len, c->buf, c->buf_cap);
	if (n < 0)
		return (int)n;
	if (m->payload_len > INT_MAX)
		return WISP_ELIMIT;
	natsMsg *nm = NULL;
	natsStatus st = natsMsg_Create(&nm, c->buf, reply, (const char *)msg_payload(m), (int)m->payload_len);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Node", c->node);
	if (st == NATS_OK) {
		char seq[48];
		snprintf(seq, sizeof seq, "%s-%llu", c->run, (unsigned long long)++c->seq);
		st = natsMsgHeader_Set(nm, "Wisp-Seq", seq);
	}
	if (st == NATS_OK && m->qos) {
		char q[2] = {(char)('0' + m->qos), '\0'};
		st = natsMsgHeader_Set(nm, "Wisp-QoS", q);
	}
	if (st == NATS_OK && m->retain)
		st = natsMsgHeader_Set(nm, "Wisp-Retain", "1");
	if (st == NATS_OK && m->expires_at) {
		char left[16];
		snprintf(left, sizeof left, "%u", msg_expiry_left(m, loop_now_s(c->b->loop)));
		st = natsMsgHeader_Set(nm, "Wisp-Expiry", left);
	}
	if (st == NATS_OK && m->props_len) {
		st = wire_set_props(nm, msg_props(m), m->props_len);
	}
	if (st != NATS_OK) {
		natsMsg_Destroy(nm);
		return WISP_ENOMEM;
	}
	*out = nm;
	return 0;
}

/* A publisher faster than NATS takes its messages fills the queue again
 * as soon as it has room, many times a second: one line per episode, an
 * episode ending after this long without a drop. */
#define SEND_DROP_EPISODE_MS 10000u

/* A QoS 0 message dropped for a full send queue: the caller counts it. */
static void send_dropped(struct cluster *c, const char *where)
{
	uint64_t now = loop_now_ms(c->b->loop);
	if (!c->send_drop_at || now - c->send_drop_at >= SEND_DROP_EPISODE_MS)
		log_msg(LOG_WARNING, "cluster", "dropping QoS 0 messages for NATS: %s (cluster.send_queue %u messages, "
			"send_queue_bytes %llu), NATS is not taking them as fast; counted in "
			"$SYS/broker/cluster/messages/send_dropped (said once per episode: until %u s without one)",
			where, c->b->cfg->cluster.send_queue, (unsigned long long)c->b->cfg->cluster.send_queue_bytes,
			SEND_DROP_EPISODE_MS / 1000);
	c->send_drop_at = now ? now : 1;
}

/* Hands nm (m's core NATS message) to the sender thread, which owns it
 * from then on. WISP_EAGAIN: its ring is full (NATS is not taking what it
 * is given), nm destroyed: the message is dropped, at most once. */
static int publish_core(struct cluster *c, const struct msg *m, natsMsg *nm)
{
	/* What the message costs in cnats: the payload, the topic twice
	 * (subject and Wisp headers around it), the properties. */
	size_t bytes = m->payload_len + 2u * m->topic_len + m->props_len + 128;
	size_t fill = 0;
	if (sender_push(c->sender, c->nc, nm, bytes, &fill))
		return 0;
	natsMsg_Destroy(nm);
	send_dropped(c, "cluster.send_queue full");
	return WISP_EAGAIN;
}

/*
 * Whether the data connection takes the core messages now. While it is
 * down they go through cnats (the sender's ring, cnats's own buffer while
 * it reconnects); once it is up they switch to it only when cnats is
 * connected and the ring is empty, so one publisher's messages do not
 * overtake their elder ones still on their way through cnats (but for
 * those in cnats's write buffer at that instant, written within its
 * flusher's millisecond). Back to cnats at once when it is lost.
 */
static bool writer_takes(struct cluster *c)
{
	if (!nats_writer_up(c->writer))
		return c->via_writer = false;
	if (!c->via_writer && c->b->stats.cluster.connected && sender_queued(c->sender) == 0)
		c->via_writer = true;
	return c->via_writer;
}

static void too_large(struct cluster *c, uint64_t n, uint64_t bytes, int64_t limit);

/* m as an HPUB on the data connection: the headers make_nats_msg sets,
 * formatted here. 0, WISP_EAGAIN (its buffer is full: dropped, logged
 * once per episode), WISP_ELIMIT (over its server's max_payload: counted
 * as too large), WISP_ENOMEM. */
static int publish_direct(struct cluster *c, const struct msg *m, bool groups_here)
{
	ssize_t n = subject_from_topic(c->prefix, msg_topic(m), m->topic_len, c->buf, c->buf_cap);
	if (n < 0)
		return (int)n;
	struct sbuf *h = &c->hdr;
	sbuf_clear(h);
	sbuf_addf(h, "NATS/1.0\r\nWisp-Node: %s\r\nWisp-Seq: %sd-%llu\r\n", c->node, c->run,
		  (unsigned long long)++c->direct_seq);
	if (m->qos)
		sbuf_addf(h, "Wisp-QoS: %u\r\n", (unsigned)m->qos);
	if (m->retain)
		sbuf_adds(h, "Wisp-Retain: 1\r\n");
	if (m->expires_at)
		sbuf_addf(h, "Wisp-Expiry: %u\r\n", msg_expiry_left(m, loop_now_s(c->b->loop)));
	if (m->props_len) {
		sbuf_adds(h, "Wisp-Props: ");
		wire_add_props(h, msg_props(m), m->props_len);
		sbuf_adds(h, "\r\n");
	}
	if (groups_here)
		sbuf_adds(h, "Wisp-Groups-Served: 1\r\n");
	sbuf_adds(h, "\r\n");
	if (h->failed)
		return WISP_ENOMEM;
	size_t len = h->len;
	int rc = nats_writer_publish(c->writer, c->buf, (size_t)n, h->data, len, msg_payload(m), m->payload_len);
	if (rc == WISP_EAGAIN)
		send_dropped(c, "the data connection's buffer is full");
	else if (rc == WISP_ELIMIT)
		too_large(c, 1, len + m->payload_len, nats_writer_max_payload(c->writer));
	return rc;
}

/* *to_stream: m went to the stream (now or, kept in the forwarding queue,
 * later), whose groups' consumers serve the shared groups. groups_here:
 * a core copy's shared groups are served on this node (NATS is away):
 * the copy says so (Wisp-Groups-Served), and no node gives it to a group
 * again when cnats sends it later (route_remote). */
static int send_to_nats(struct cluster *c, const struct msg *m, bool *to_stream, bool groups_here)
{
	natsMsg *nm = NULL;
	/* QoS 1/2: through the stream, its publisher's ack waiting for it
	 * (durable.h); at most once (core NATS) when too many wait already. */
	char reply[128];
	uint64_t ticket = m->qos && c->durable ? durable_reserve(c->durable, reply, sizeof reply) : 0;
	if (ticket) {
		if (make_nats_msg(c, m, durable_stream(c->durable), reply, &nm) != 0) {
			durable_cancel(c->durable, ticket, m); /* its ack fails: not sent, not kept */
			return WISP_ENOMEM;
		}
		uint64_t number = c->seq;
		if (durable_publish(c->durable, nm, m, ticket) == 0) {
			/* The shared groups read it from the stream too, through
			 * their own consumers (groups.h): no core copy. */
			c->stream_seq = number;
			*to_stream = true;
			return 0;
		}
		natsMsg_Destroy(nm);
	}
	if (writer_takes(c))
		return publish_direct(c, m, groups_here);
	int rc = make_nats_msg(c, m, c->prefix, NULL, &nm);
	if (rc == 0 && groups_here && natsMsgHeader_Set(nm, "Wisp-Groups-Served", "1") != NATS_OK) {
		natsMsg_Destroy(nm);
		rc = WISP_ENOMEM;
	}
	return rc != 0 ? rc : publish_core(c, m, nm);
}

/* Whether a message of this node's (not $SYS) goes to NATS: another node
 * wants it, or, QoS 1/2, a node that is down keeps a consumer on the
 * stream for its persistent sessions (dormant.h). cluster_publish's test,
 * and the publish gate's. */
static bool goes_to_nats(const struct cluster *c, uint8_t qos, const struct topic_level *levels, size_t nlevels)
{
	return (qos && remote_interest_stream_doubt(c->wanted)) || remote_interest_wanted(c->wanted, levels, nlevels);
}

/* broker.h's publish_gate: a QoS 1/2 PUBLISH that will need a ticket
 * (goes_to_nats) waits while none is free, so its ack never goes for a
 * message that crossed at most once. Only the first test runs while
 * tickets are free. */
static int publish_gate(void *ctx, struct conn *conn, const struct topic_level *levels, size_t nlevels)
{
	struct cluster *c = ctx;
	if (!durable_must_wait(c->durable, conn))
		return 0;
	bool sys = nlevels > 1 && levels[0].len == 4 && memcmp(levels[0].ptr, "$SYS", 4) == 0;
	if (sys || !goes_to_nats(c, 1, levels, nlevels))
		return 0;
	return durable_wait(c->durable, conn);
}

/* Messages that cannot cross because their NATS form is over `limit`
 * (NATS's max_payload): counted, and said once per limit, with what to
 * change. bytes: the last one's NATS form, at most (0: not known). */
static void too_large(struct cluster *c, uint64_t n, uint64_t bytes, int64_t limit)
{
	c->b->stats.cluster.too_large += n;
	if (c->too_large_said == limit)
		return;
	c->too_large_said = limit;
	char size[128] = "";
	if (bytes)
		snprintf(size, sizeof size, " (%llu bytes at most: its payload, the base64 of its v5 properties and "
			 "%llu bytes of headers)", (unsigned long long)bytes, (unsigned long long)c->nats_headers_max);
	log_msg(LOG_WARNING, "cluster", "a message's NATS form%s is over NATS's max_payload (%lld bytes): it reaches "
		"this node's subscribers only, and a QoS 1/2 one is acknowledged as on a single node; counted in "
		"$SYS/broker/cluster/messages/too_large (said once per max_payload). Raise nats-server's "
		"max_payload, or lower limits.max_packet_size", size, (long long)limit);
}

/*
 * Whether m's NATS form is over the max_payload of the connection it would
 * go on (*limit): cnats refuses such a message whole, at every try, so it
 * is not handed over at all. From integers only (a bound: each header at
 * its longest, *bytes); 0 max_payload (never connected) checks nothing,
 * and the sender thread and the JetStream worker then give up on such a
 * message themselves.
 */
static bool is_too_large(struct cluster *c, const struct msg *m, uint64_t *bytes, int64_t *limit)
{
	int64_t max = atomic_load_explicit(&c->max_payload, memory_order_relaxed);
	if (m->qos && c->durable) {
		int64_t js = durable_max_payload(c->durable);
		if (js > 0 && (max <= 0 || js < max))
			max = js;
	}
	*limit = max;
	*bytes = (uint64_t)m->payload_len + 4u * (((uint64_t)m->props_len + 2u) / 3u) + c->nats_headers_max;
	return max > 0 && *bytes > (uint64_t)max;
}

/* What the sender thread could not publish, into the loop's counters. */
static void count_send_failures(struct cluster *c)
{
	uint64_t failed = sender_failed(c->sender);
	if (failed != c->send_failed_seen) {
		c->b->stats.cluster.send_failed += failed - c->send_failed_seen;
		c->send_failed_seen = failed;
	}
	uint64_t big = sender_too_large(c->sender);
	if (big != c->sender_too_large_seen) {
		too_large(c, big - c->sender_too_large_seen, 0, atomic_load_explicit(&c->max_payload, memory_order_relaxed));
		c->sender_too_large_seen = big;
	}
	uint64_t refused = sender_sub_failed(c->sender);
	if (refused != c->sub_failed_seen) {
		log_msg(LOG_WARNING, "cluster", "NATS refused %llu SUB%s of this node's filters (%llu so far): those "
			"filters get nothing from the other nodes", (unsigned long long)(refused - c->sub_failed_seen),
			refused - c->sub_failed_seen == 1 ? "" : "s", (unsigned long long)refused);
		c->sub_failed_seen = refused;
	}
	refused = sender_sub_failed(c->share_sender);
	if (refused != c->share_sub_failed_seen) {
		uint64_t n = refused - c->share_sub_failed_seen;
		log_msg(LOG_WARNING, "cluster", "NATS refused %llu queue SUB%s of shared groups (%llu so far): their "
			"members get only this node's messages' share", (unsigned long long)n, n == 1 ? "" : "s",
			(unsigned long long)refused);
		c->share_sub_failed_seen = refused;
	}
	/* The filters' subscriptions end on the sender thread, whose retire
	 * list only counts what it destroys early: said here, as the loop's
	 * own list says it (retire.c), once per episode: it ends when none
	 * went early for NATS_RETIRE_MS. */
	uint64_t early = sender_retired_early(c->sender), now = loop_now_ms(c->b->loop);
	if (early != c->early_seen) {
		if (!c->early_logged)
			log_msg(LOG_WARNING, "cluster", "more than %u NATS subscriptions of filters ended within %u s: "
				"the oldest are destroyed before their %u s delay", NATS_RETIRE_MAX,
				NATS_RETIRE_MS / 1000, NATS_RETIRE_MS / 1000);
		c->early_logged = true;
		c->early_seen = early;
		c->early_at = now;
	} else if (c->early_logged && now - c->early_at > NATS_RETIRE_MS) {
		c->early_logged = false;
	}
}

/* At each connect: a max_payload below what limits.max_packet_size lets
 * in means some messages will not cross; said once per value, before the
 * first such message, with what to change. */
static void check_max_payload(struct cluster *c)
{
	int64_t max = atomic_load_explicit(&c->max_payload, memory_order_relaxed);
	uint64_t packet = c->b->cfg->limits.max_packet_size;
	if (max <= 0 || max == c->max_payload_said)
		return;
	c->max_payload_said = max;
	/* A packet's payload and properties together are under its size;
	 * base64 makes the properties 4/3 as long. */
	uint64_t worst = packet / 3u * 4u + 4u + c->nats_headers_max;
	if (worst <= (uint64_t)max)
		return;
	uint64_t fits = (uint64_t)max > c->nats_headers_max + 4u ? ((uint64_t)max - c->nats_headers_max - 4u) / 4u * 3u : 0;
	log_msg(LOG_NOTICE, "cluster", "NATS's max_payload (%lld bytes) is below what limits.max_packet_size (%llu) "
		"lets in: a message whose payload plus base64 of its v5 properties is over %llu bytes is delivered "
		"on this node only, not to the other nodes (counted in $SYS/broker/cluster/messages/too_large). For "
		"every message to cross, set nats-server's max_payload to %llu or more, or limits.max_packet_size "
		"to %llu or less", (long long)max, (unsigned long long)packet,
		(unsigned long long)((uint64_t)max > c->nats_headers_max ? (uint64_t)max - c->nats_headers_max : 0),
		(unsigned long long)worst, (unsigned long long)fits);
}

static size_t cluster_publish(struct router *r, struct msg *m, const struct topic_level *levels, size_t nlevels)
{
	struct cluster *c = of(r);
	bool sent = false, to_stream = false;
	/* Read once: the '<node>-share' flag is cnats's callbacks' to move. */
	bool groups_here = !(c->b->stats.cluster.connected && groups_connected(c->groups));
	c->stream_seq = 0;
	if (m->origin != c && !is_sys(m)) {
		/* No other node wants it: no NATS publish (QoS 0) and no JetStream
		 * round trip (QoS 1/2: acked as on one node); NATS is not asked to
		 * pick a shared group's member either (interest.h). QoS 1/2 go to
		 * the stream anyway while a node that is down keeps a consumer
		 * there, for its persistent sessions (dormant.h). */
		int rc = 0;
		bool wanted = goes_to_nats(c, m->qos, levels, nlevels);
		uint64_t bytes = 0;
		int64_t limit = 0;
		/* Over NATS's max_payload it cannot cross: delivered here as on
		 * a single node (QoS 1/2 acked so), not held or retried. */
		bool big = (wanted || m->retain) && is_too_large(c, m, &bytes, &limit);
		if (big) {
			too_large(c, 1, bytes, limit);
		} else if (!wanted) {
			c->b->stats.cluster.unwanted++;
		} else if ((rc = send_to_nats(c, m, &to_stream, groups_here)) == 0) {
			c->b->stats.cluster.sent++;
			sent = true;
			count_send_failures(c);
		} else if (rc == WISP_EAGAIN) {
			c->b->stats.cluster.send_dropped++;
		} else if (rc != WISP_ELIMIT) { /* too large: counted as such */
			c->b->stats.cluster.send_failed++;
		}
		if (m->retain && !big)
			retained_kv_publish(c->retained, m);
	}
	/* NATS picks the node for the shared groups of what it took; while
	 * it is away (either connection), the local groups are served here
	 * (groups.h). What went to the stream (or waits to) reaches the groups
	 * through their stream consumers, here too, whenever it gets there. */
	c->b->route.shares_elsewhere = to_stream || (sent && !groups_here);
	size_t matched = router_publish(c->local, m, levels, nlevels);
	/* A session being handed over records what reaches its copy here. */
	struct handover *h = presence_handover(c->presence);
	if (m->qos && m->origin != c && handover_recording(h))
		handover_published(h, m, c->stream_seq);
	/* Subscribers elsewhere are unknown here: a message NATS took counts
	 * as matched (no v5 0x10 No matching subscribers). */
	return matched == 0 && sent ? 1 : matched;
}

static const struct router_ops cluster_ops = {
	.publish = cluster_publish,
	.interest_add = cluster_interest_add,
	.interest_remove = cluster_interest_remove,
};

/* ---- from NATS, on the loop thread ---- */



/*
 * Whether this message was already routed here. A node holding two
 * overlapping filters ("a/+" and "a/#") has two NATS subscriptions, and
 * NATS sends one copy per subscription; the local tree matches every
 * filter from one copy, so the others must go. nats-server sends all the
 * copies of one publish before the next publish of the same connection,
 * and each path keeps that order (cnats's one delivery thread, the data
 * connection's one reader), so per publishing run and path a copy is one
 * whose number is not above the newest seen on that path.
 *
 * While the filters move from one path to the other, both bring every
 * message for a moment, in no order between them. Each path brings every
 * matching message from its first one on (the data connection's count
 * from the mark after all its SUBs: on_writer_msg), so a copy is also a
 * repeat when the other path brought that number already: at or below
 * its newest and at or above its first.
 */
static bool seen_before(struct cluster *c, const char *node, const char *seq_hdr, enum path path)
{
	const char *dash = seq_hdr ? strrchr(seq_hdr, '-') : NULL;
	if (!node || !dash)
		return false; /* a NATS-native publisher: no numbering */
	uint64_t seq = strtoull(dash + 1, NULL, 10);
	char key[sizeof c->origins[0].key];
	snprintf(key, sizeof key, "%s/%.*s", node, (int)(dash - seq_hdr), seq_hdr);
	struct origin_seen *o = NULL, *oldest = &c->origins[0];
	for (size_t i = 0; i < c->norigins; i++) {
		if (strcmp(c->origins[i].key, key) == 0) {
			o = &c->origins[i];
			break;
		}
		if (c->origins[i].used < oldest->used)
			oldest = &c->origins[i];
	}
	if (!o) {
		o = c->norigins < ORIGINS_MAX ? &c->origins[c->norigins++] : oldest;
		snprintf(o->key, sizeof o->key, "%s", key);
		memset(o->newest, 0, sizeof o->newest);
		memset(o->first, 0, sizeof o->first);
	}
	o->used = ++c->origins_clock;
	enum path other = path == PATH_CNATS ? PATH_WRITER : PATH_CNATS;
	if (seq <= o->newest[path])
		return true;
	o->newest[path] = seq;
	if (!o->first[path])
		o->first[path] = seq;
	return o->first[other] && seq >= o->first[other] && seq <= o->newest[other];
}

/* A path's subscriptions are made anew: what it brought before says
 * nothing of what it brings now. */
static void path_restart(struct cluster *c, enum path path)
{
	for (size_t i = 0; i < c->norigins; i++)
		c->origins[i].newest[path] = c->origins[i].first[path] = 0;
}

/*
 * A message from NATS as routing reads it, whichever path brought it:
 * a natsMsg of cnats's (nm: a stream message's metadata is read there) or
 * the data connection's own read. Header values are NUL-ended, NULL when
 * absent; props is the base64 of Wisp-Props.
 */
struct remote_msg {
	natsMsg *nm;
	const char *subject;
	size_t subject_len;
	const void *payload;
	size_t payload_len;
	const char *node, *seq, *qos, *expiry, *via;
	const char *props;
	size_t props_len;
	bool retain, stream, groups_served;
};

static void view_of_nats(natsMsg *nm, struct remote_msg *rm)
{
	int dlen = natsMsg_GetDataLength(nm);
	const char *props = wire_header(nm, "Wisp-Props");
	*rm = (struct remote_msg){
		.nm = nm,
		.subject = natsMsg_GetSubject(nm),
		.payload = natsMsg_GetData(nm),
		.payload_len = dlen > 0 ? (size_t)dlen : 0,
		.node = wire_header(nm, "Wisp-Node"),
		.seq = wire_header(nm, "Wisp-Seq"),
		.qos = wire_header(nm, "Wisp-QoS"),
		.expiry = wire_header(nm, "Wisp-Expiry"),
		.via = wire_header(nm, "Wisp-Via"),
		.props = props,
		.props_len = props ? strlen(props) : 0,
		.retain = wire_header(nm, "Wisp-Retain") != NULL,
		.stream = wire_header(nm, "Wisp-Stream") != NULL,
		.groups_served = wire_header(nm, "Wisp-Groups-Served") != NULL,
	};
	rm->subject_len = strlen(rm->subject);
}

/* The data connection's header values, NUL-ended. */
struct writer_hdrs {
	char node[256], seq[64], qos[4], expiry[24];
};

/* One header of the block into buf (cap bytes with its NUL): its value,
 * NULL when absent; false when it does not fit (no Wisp node writes one
 * that long). */
static bool copy_header(const struct nats_writer_msg *wm, const char *key, char *buf, size_t cap, const char **out)
{
	const char *v;
	size_t n;
	*out = NULL;
	if (!wm->hdr_len || !nats_proto_header(wm->hdr, wm->hdr_len, key, strlen(key), &v, &n))
		return true;
	if (n >= cap)
		return false;
	memcpy(buf, v, n);
	buf[n] = '\0';
	*out = buf;
	return true;
}

static bool view_of_writer(const struct nats_writer_msg *wm, struct writer_hdrs *h, struct remote_msg *rm)
{
	*rm = (struct remote_msg){
		.subject = wm->subject,
		.subject_len = wm->subject_len,
		.payload = wm->payload,
		.payload_len = wm->payload_len,
	};
	const char *v;
	size_t n;
	if (wm->hdr_len && nats_proto_header(wm->hdr, wm->hdr_len, "Wisp-Props", 10, &v, &n)) {
		rm->props = v;
		rm->props_len = n;
	}
	rm->retain = wm->hdr_len && nats_proto_header(wm->hdr, wm->hdr_len, "Wisp-Retain", 11, &v, &n);
	rm->stream = wm->hdr_len && nats_proto_header(wm->hdr, wm->hdr_len, "Wisp-Stream", 11, &v, &n);
	rm->groups_served = wm->hdr_len && nats_proto_header(wm->hdr, wm->hdr_len, "Wisp-Groups-Served", 18, &v, &n);
	return copy_header(wm, "Wisp-Node", h->node, sizeof h->node, &rm->node) &&
	       copy_header(wm, "Wisp-Seq", h->seq, sizeof h->seq, &rm->seq) &&
	       copy_header(wm, "Wisp-QoS", h->qos, sizeof h->qos, &rm->qos) &&
	       copy_header(wm, "Wisp-Expiry", h->expiry, sizeof h->expiry, &rm->expiry);
}

static const char *route_msg(struct cluster *c, const struct remote_msg *rm, const char *prefix, bool from_stream,
			     uint64_t seq, const char *share_key, size_t share_len, const struct interest *via);
static const char *route_view(struct cluster *c, const struct remote_msg *rm, const char *prefix, bool from_stream,
			      uint64_t seq, bool for_group, const char *share_key, size_t share_len,
			      const struct interest *via, enum path path);

/* Why a message from cnats is not routed; NULL: it was. `prefix`: of its
 * subject; a stream message (from_stream, sequence seq) is deduplicated by
 * durable.c. */
static const char *route_remote(struct cluster *c, natsMsg *nm, const char *prefix, bool from_stream, uint64_t seq)
{
	if (retained_kv_message(c->retained, nm) || presence_message(c->presence, nm) || totals_message(c->totals, nm) ||
	    remote_interest_message(c->wanted, nm))
		return NULL;
	const char *share_key = NULL;
	size_t share_len = 0;
	bool for_group = groups_message(c->groups, nm, &share_key, &share_len);
	struct remote_msg rm;
	view_of_nats(nm, &rm);
	/* A NATS-native publisher's copy: through the filter it came by
	 * (on_filter_msg), or none when that filter has gone since. */
	const struct interest *via = NULL;
	if (!rm.node && !for_group && !from_stream && rm.via && !(via = find_tag(c, strtoull(rm.via, NULL, 10))))
		return "";
	return route_view(c, &rm, prefix, from_stream, seq, for_group, share_key, share_len, via, PATH_CNATS);
}

/* route_remote's rules that do not depend on the path: `via`, a NATS-native
 * publisher's copy's filter (NULL: none, or not such a copy). */
static const char *route_view(struct cluster *c, const struct remote_msg *rm, const char *prefix, bool from_stream,
			      uint64_t seq, bool for_group, const char *share_key, size_t share_len,
			      const struct interest *via, enum path path)
{
	const char *node = rm->node;
	if (for_group && !share_key)
		return ""; /* its group left this node meanwhile, as a local group's last member may */
	/* Its publishing node served its own members of every group while
	 * NATS was away, and cnats sent it on later: a group gets a QoS 0
	 * message at most once, so a group with no member there misses it. */
	if (for_group && rm->groups_served)
		return "";
	/* A stream message's core copy (an older node sends one): the stream
	 * brings it, to the ordinary subscriptions and to the groups. */
	if (!from_stream && rm->stream)
		return "";
	if (!for_group && node && strcmp(node, c->node) == 0)
		return "this node's own message";
	/* cnats's copy of a NATS-native publisher's message behind the fence:
	 * the data connection brings it (the move: fence.h). */
	if (!node && path == PATH_CNATS && fence_cnats_past(&c->fence) && !for_group && !from_stream)
		return "";
	/* Each group's copy is its own: never one of overlapping filters; a
	 * stream message is deduplicated by durable.c. */
	if (!for_group && !from_stream && seen_before(c, node, rm->seq, path))
		return ""; /* another subscription's copy: not a drop */
	return route_msg(c, rm, prefix, from_stream, seq, for_group ? share_key : NULL, share_len, node ? NULL : via);
}

/* Whole seconds since nats-server stored the stream message nm, by this
 * node's wall clock against the server's (so across machines it is as
 * good as their clocks agree); 0 when unknown or the clocks disagree the
 * other way. Read only for messages that expire: the metadata is parsed
 * from the reply subject (an allocation). */
static uint64_t stream_waited_s(natsMsg *nm)
{
	jsMsgMetaData *meta = NULL;
	if (natsMsg_GetMetaData(&meta, nm) != NATS_OK)
		return 0;
	int64_t stored_ns = meta->Timestamp;
	jsMsgMetaData_Destroy(meta);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
	return now_ns > stored_ns ? (uint64_t)(now_ns - stored_ns) / 1000000000u : 0;
}

/* nm (on `prefix`'s subject) as a message of this node: to the local
 * subscribers (those of the filter `via` only, when not NULL), or to one
 * member of the local group share_key when not NULL. Why it was not;
 * NULL: it was. */
static const char *route_msg(struct cluster *c, const struct remote_msg *rm, const char *prefix, bool from_stream,
			     uint64_t seq, const char *share_key, size_t share_len, const struct interest *via)
{
	struct broker *b = c->b;
	bool for_group = share_key != NULL;
	ssize_t tlen = subject_to_topic(prefix, rm->subject, rm->subject_len, c->buf, c->buf_cap);
	if (tlen <= 0 || tlen > UINT16_MAX || mqtt_utf8_scan((const uint8_t *)c->buf, (size_t)tlen) != 0)
		return "a subject that maps to no valid topic"; /* nor one with control characters: as from a client */
	if (broker_topic_bound(b, c->buf, (size_t)tlen) != TOPIC_WITHIN_LIMITS)
		return "a topic over limits.max_topic_length or max_topic_levels";
	size_t inner = 0;
	/* A group's consumer (stream) and its queue subscription (core)
	 * filter on subjects, where a leading wildcard also takes "$" topics,
	 * which MQTT's does not [MQTT-4.7.2-1]. On core the subject matched,
	 * so that rule is all that is left: a byte of the topic, and of the
	 * filter only for a "$" topic. */
	if (for_group && (from_stream || c->buf[0] == '$') &&
	    share_parse(share_key, share_len, &inner) == SHARE_OK &&
	    (from_stream ? !topic_matches(share_key + inner, share_len - inner, c->buf, (size_t)tlen)
			 : (share_key[inner] == '+' || share_key[inner] == '#')))
		return "";
	const char *q = rm->qos;
	uint8_t qos = q && q[0] >= '0' && q[0] <= '2' && !q[1] ? (uint8_t)(q[0] - '0') : 0;
	const char *exp = rm->expiry;
	uint64_t expires_at = 0;
	if (exp) {
		uint64_t left = strtoull(exp, NULL, 10);
		/* Its time in the stream counts: a node down for a while must not
		 * deliver what expired meanwhile [MQTT-3.3.2-5], nor give what is
		 * left a fresh interval [MQTT-3.3.2-6]. */
		uint64_t waited = from_stream && rm->nm ? stream_waited_s(rm->nm) : 0;
		if (from_stream && waited >= left) {
			broker_count_drop(b, DROP_EXPIRED);
			return "";
		}
		left -= waited;
		expires_at = loop_now_s(b->loop) + (left ? left : 1);
	}
	uint8_t *props = NULL;
	size_t props_len = 0;
	const char *bad = wire_decode_props(rm->props, rm->props_len, &props, &props_len);
	if (bad)
		return bad;
	struct msg_spec spec = {
		.topic = c->buf,
		.topic_len = (size_t)tlen,
		.props = props,
		.props_len = props_len,
		.payload = rm->payload,
		.payload_len = rm->payload_len,
		.qos = qos,
		.retain = rm->retain,
		.expires_at = expires_at,
		.origin = c,
	};
	struct msg *m = msg_create(&spec);
	wisp_free(props);
	if (!m)
		return "out of memory";
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	int nl = topic_split(msg_topic(m), m->topic_len, levels, TOPIC_MAX_LEVELS_HARD);
	if (nl > 0 && for_group) {
		b->stats.cluster.received++;
		route_share_deliver(b, share_key, share_len, m);
	} else if (nl > 0 && via) {
		b->stats.cluster.received++;
		/* A subject's wildcards also take "$" levels, MQTT's do not at
		 * the start [MQTT-4.7.2-1]. */
		if (topic_matches(via->filter, via->len, msg_topic(m), m->topic_len))
			route_publish_filter(b, via->filter, via->len, m);
	} else if (nl > 0) {
		b->stats.cluster.received++;
		b->route.shares_elsewhere = true; /* NATS sent the groups' copies apart */
		router_publish(c->local, m, levels, (size_t)nl);
		if (from_stream)
			handover_routed(presence_handover(c->presence), m, seq);
	}
	msg_unref(m);
	return nl > 0 ? NULL : "too many topic levels";
}

/* cnats's own drops (a subscription's pending limit full before its
 * delivery thread handed the messages to the inbox), summed over the
 * node's subscriptions: its filters', its groups', and the cluster's own
 * on '<node>-share' (claims, handovers, figures, announcements; those of
 * one replaced at a rejoin are not carried over, and the sum is never
 * taken back): counted from the first drop of an episode until a look
 * finds no new one. A look asks every subscription, each under its lock
 * (100,000 filters: milliseconds), and an episode is when the loop is
 * behind already: so at most one a second, on a timer, not one per
 * wake-up of the inbox. */
static uint64_t pending_drops_now(struct cluster *c)
{
	uint64_t total = sender_dropped_gone(c->sender) + groups_pending_dropped(c->groups) +
			 presence_pending_dropped(c->presence) + totals_pending_dropped(c->totals) +
			 remote_interest_pending_dropped(c->wanted);
	for (size_t i = 0; i < c->nbuckets; i++)
		for (struct interest *in = c->buckets[i]; in; in = in->next)
			total += (in->sub ? sender_sub_dropped(in->sub) : 0) +
				 (in->parent_sub ? sender_sub_dropped(in->parent_sub) : 0);
	return total;
}

static void on_drops_due(struct loop *l, struct loop_timer *t)
{
	struct cluster *c = container_of(t, struct cluster, drops_timer);
	uint64_t total = pending_drops_now(c);
	uint64_t *counted = &c->b->stats.cluster.pending_dropped;
	c->pending_drops = total > *counted;
	if (c->pending_drops) {
		*counted = total;
		loop_timer_start(l, t, 1, on_drops_due);
	}
}

/* A slow consumer event from cnats: an episode starts, or goes on. */
static void count_pending_drops(struct cluster *c)
{
	if (!c->pending_drops)
		log_msg(LOG_WARNING, "cluster", "NATS's client is dropping messages from NATS: a subscription's pending "
			"limit (cluster.inbound_queue, %zu) is full; counted in "
			"$SYS/broker/cluster/messages/pending_dropped", c->inbox.cap);
	c->pending_drops = true;
	if (!loop_timer_armed(&c->drops_timer))
		loop_timer_soon(c->b->loop, &c->drops_timer, on_drops_due);
}

/* ---- rejoin: a connection cnats closed for good, made anew ---- */

static void on_connected(natsConnection *nc, void *closure);
static void main_up(struct cluster *c, int64_t max_payload);

static void *connector_main(void *arg)
{
	struct connector *k = arg;
	k->st = natsConnection_Connect(&k->nc, k->opts);
	if (k->st == NATS_OK)
		k->max_payload = natsConnection_GetMaxPayload(k->nc); /* here: the loop takes no connection's lock */
	inbox_raise(k->inbox, k->event); /* orders the writes above before the loop's take */
	return NULL;
}

static bool connector_start(struct connector *k, natsOptions *opts, struct inbox *inbox, unsigned event)
{
	k->opts = opts;
	k->inbox = inbox;
	k->event = event;
	k->nc = NULL;
	k->st = NATS_ERR;
	k->running = pthread_create(&k->thread, NULL, connector_main, k) == 0;
	return k->running;
}

/* Joins the thread: the connection it made (NULL: none), with *connected
 * set when it connected at its first try (cnats then calls no callback). */
static natsConnection *connector_join(struct connector *k, bool *connected)
{
	pthread_join(k->thread, NULL);
	k->running = false;
	*connected = k->st == NATS_OK;
	if (k->st != NATS_OK && k->st != NATS_NOT_YET_CONNECTED) {
		log_msg(LOG_WARNING, "cluster", "cannot make a new NATS connection: %s; trying again later",
			natsStatus_GetText(k->st));
		return NULL;
	}
	return k->nc;
}

static void on_rejoin_due(struct loop *l, struct loop_timer *t);

/* A try that made nothing (out of memory): the closed one is still there. */
static void rejoin_later(struct cluster *c)
{
	if (!loop_timer_armed(&c->rejoin_timer))
		loop_timer_start(c->b->loop, &c->rejoin_timer, (c->rejoin_wait_ms + 999) / 1000, on_rejoin_due);
}

/* The main connection anew (made from the same options, which now retry a
 * failed first connect in the background), and everything on it moved
 * over: the filters' subscriptions, the retained bucket's follower and
 * the interest announcements. */
static void rejoin_main(struct cluster *c)
{
	bool connected = false;
	natsConnection *nc = connector_join(&c->main_k, &connected);
	if (!nc) {
		rejoin_later(c);
		return;
	}
	for (size_t i = 0; i < c->nbuckets; i++)
		for (struct interest *in = c->buckets[i]; in; in = in->next)
			nats_unsubscribe(c, in, true); /* closed with the old connection: only retired */
	fence_unlisten(c);
	natsConnection *old = c->nc;
	c->nc = nc;
	nats_link_forget(&c->main_link, old);
	for (size_t i = 0; i < c->nbuckets; i++)
		for (struct interest *in = c->buckets[i]; in; in = in->next)
			nats_subscribe(c, in);
	if (retained_kv_rebind(c->retained, nc, &c->retired.list) != 0)
		log_msg(LOG_WARNING, "cluster", "cannot start the retained messages' thread again: they stay on "
			"this node");
	remote_interest_rebind(c->wanted, nc, groups_connection(c->groups));
	sender_forget(c->sender, old); /* its ring may still name old */
	natsConnection_Destroy(old);
	if (connected)
		main_up(c, c->main_k.max_payload); /* at the first try: cnats calls no callback */
	/* Refused again before it was adopted: its EV_CLOSED may have come
	 * (and gone, the old one still in place) already. */
	if (nats_link_is_closed(&c->main_link, nc))
		rejoin_later(c);
}

/* '<node>-share' anew (groups_reconnect), and the claims, handovers,
 * $SYS figures and interest announcements it carries moved over. */
static void rejoin_share(struct cluster *c)
{
	bool connected = false;
	natsConnection *snc = connector_join(&c->share_k, &connected);
	if (!snc) {
		rejoin_later(c);
		return;
	}
	sender_forget(c->share_sender, groups_connection(c->groups)); /* destroyed next: its queue may name it */
	groups_reconnect(c->groups, snc, connected);
	if (presence_rebind(c->presence, snc) != 0 || totals_rebind(c->totals, snc) != 0 ||
	    remote_interest_rebind(c->wanted, c->nc, snc) != 0)
		log_msg(LOG_WARNING, "cluster", "out of memory: some subscriptions on the new NATS connection "
			"'%s-share' are missing: client ids, handovers or $SYS totals may not cross nodes", c->node);
	if (groups_closed(c->groups))
		rejoin_later(c); /* refused again before it was adopted, as in rejoin_main */
}

static void on_rejoin_due(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct cluster *c = container_of(t, struct cluster, rejoin_timer);
	c->rejoin_tries++;
	bool started = false;
	if (!c->main_k.running && nats_link_is_closed(&c->main_link, c->nc)) {
		started |= natsOptions_SetRetryOnFailedConnect(c->opts, true, on_connected, c) == NATS_OK &&
			   connector_start(&c->main_k, c->opts, &c->inbox, EV_MAIN_MADE);
	}
	if (!c->share_k.running && groups_closed(c->groups))
		started |= connector_start(&c->share_k, groups_options(c->groups), &c->inbox, EV_SHARE_MADE);
	/* Refused again: cnats closes the new one too (EV_CLOSED), later. */
	c->rejoin_wait_ms = c->rejoin_wait_ms * 2 < NATS_REJOIN_MAX_MS ? c->rejoin_wait_ms * 2 : NATS_REJOIN_MAX_MS;
	if (!started && !c->main_k.running && !c->share_k.running)
		rejoin_later(c); /* no thread (out of resources): later */
}

/* An EV_CLOSED or GROUPS_EV_CLOSED: also of a new connection refused
 * before it was adopted, so the links say whether a current one closed.
 * Only a connection cnats gave up is asked for its last error: its lock
 * is free (no reconnect thread holds it through an attempt). */
static void check_closed(struct cluster *c)
{
	struct broker *b = c->b;
	bool main_closed = nats_link_is_closed(&c->main_link, c->nc);
	bool share_closed = groups_closed(c->groups);
	if (!main_closed && !share_closed)
		return;
	if (main_closed)
		b->stats.cluster.connected = 0;
	if (!c->alone) {
		const char *why = NULL;
		natsStatus st = natsConnection_GetLastError(main_closed ? c->nc : groups_connection(c->groups), &why);
		log_msg(LOG_ERROR, "cluster", "NATS closed the connection '%s%s' for good (%s): serving local clients "
			"only; connecting again on its own in %u s (then doubling, up to every %d s)", c->node,
			main_closed ? "" : "-share", why && *why ? why : natsStatus_GetText(st),
			c->rejoin_wait_ms / 1000, NATS_REJOIN_MAX_MS / 1000);
		c->alone = true;
	}
	if (!loop_timer_armed(&c->rejoin_timer))
		loop_timer_start(b->loop, &c->rejoin_timer, (c->rejoin_wait_ms + 999) / 1000, on_rejoin_due);
}

static void on_inbox(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)events;
	struct cluster *c = container_of(io, struct cluster, io);
	void *batch[TAKE_BATCH];
	unsigned ev = 0;
	uint64_t dropped = 0;
	size_t n = inbox_take(&c->inbox, batch, TAKE_BATCH, &ev, &dropped);
	struct broker *b = c->b;
	if (ev & EV_DISCONNECTED && b->stats.cluster.connected) {
		b->stats.cluster.connected = 0;
		log_msg(LOG_WARNING, "cluster", "lost the NATS connection: serving local clients only, reconnecting");
	}
	if (ev & EV_DISCONNECTED)
		fence_main_lost(&c->fence);
	if (ev & EV_CONNECTED && !b->stats.cluster.connected) {
		b->stats.cluster.connected = 1;
		log_msg(LOG_NOTICE, "cluster", "connected to NATS as node '%s'", c->node);
	}
	if (ev & EV_CONNECTED)
		check_max_payload(c);
	if (ev & GROUPS_EV_DOWN && !c->share_lost && !groups_connected(c->groups)) {
		c->share_lost = true;
		log_msg(LOG_WARNING, "cluster", "lost the NATS connection '%s-share': no claims, handovers or shared "
			"groups' queue SUBs until it is back", c->node);
	}
	if (ev & GROUPS_EV_UP && groups_connected(c->groups)) {
		if (c->share_lost)
			log_msg(LOG_NOTICE, "cluster", "the NATS connection '%s-share' is back", c->node);
		c->share_lost = false;
		groups_resubscribe(c->groups);
		handover_link_up(presence_handover(c->presence));
	}
	if (ev & RETAINED_KV_EVENT)
		retained_kv_event(c->retained);
	if (ev & EV_MAIN_MADE && c->main_k.running)
		rejoin_main(c);
	if (ev & EV_SHARE_MADE && c->share_k.running)
		rejoin_share(c);
	if (ev & (EV_CLOSED | GROUPS_EV_CLOSED))
		check_closed(c);
	if (c->alone && ev & (EV_CONNECTED | GROUPS_EV_UP) && b->stats.cluster.connected && groups_connected(c->groups)) {
		log_msg(LOG_NOTICE, "cluster", "node '%s' rejoined the cluster over NATS (after %u tr%s)", c->node,
			c->rejoin_tries, c->rejoin_tries == 1 ? "y" : "ies");
		b->stats.cluster.rejoins++;
		c->alone = false;
		c->rejoin_tries = 0;
		c->rejoin_wait_ms = NATS_REJOIN_FIRST_MS;
	}
	if (ev & (EV_CONNECTED | EV_DISCONNECTED | EV_CLOSED))
		durable_core_connected(c->durable, b->stats.cluster.connected);
	if (b->stats.cluster.connected && (c->subs_deferred || c->ngone))
		subscribe_deferred(c); /* before check_connections' hello and snapshot */
	fence_listen(c);
	fence_poke(&c->fence, c->fence_sub && b->stats.cluster.connected, loop_now_ms(b->loop));
	remote_interest_check_connections(c->wanted);
	count_send_failures(c);
	if (ev & (EV_SLOW | GROUPS_EV_SLOW))
		count_pending_drops(c);
	if (dropped != c->dropped_seen) {
		b->stats.cluster.dropped += dropped - c->dropped_seen;
		if (!c->drop_logged)
			log_msg(LOG_WARNING, "cluster", "dropping messages from NATS: cluster.inbound_queue full (%zu "
				"messages or %llu bytes); counted in $SYS/broker/cluster/messages/dropped", c->inbox.cap,
				(unsigned long long)c->inbox.max_bytes);
		c->drop_logged = true;
		c->dropped_seen = dropped;
	} else if (n < TAKE_BATCH) {
		c->drop_logged = false; /* the episode ends once the loop keeps up */
	}
	for (size_t i = 0; i < n; i++) {
		if (is_fence(c, batch[i])) {
			int len = natsMsg_GetDataLength(batch[i]);
			fence_heard(&c->fence, natsMsg_GetData(batch[i]), len > 0 ? (size_t)len : 0, true);
			natsMsg_Destroy(batch[i]);
			continue;
		}
		const char *why = route_remote(c, batch[i], c->prefix, false, 0);
		if (why && *why) {
			b->stats.cluster.dropped++;
			/* Anyone who can publish on NATS can cause this line. */
			log_limited("cluster_dropped", LOG_INFO, "cluster", "message from NATS on '%s' dropped: %s",
				    natsMsg_GetSubject(batch[i]), why);
		}
		natsMsg_Destroy(batch[i]);
	}
}

/* ---- the data connection's reading (loop thread) ---- */

#define FOR_EACH_INTEREST(c, in)                       \
	for (size_t i_ = 0; i_ < (c)->nbuckets; i_++) \
		for (struct interest *in = (c)->buckets[i_]; in; in = in->next)

/* The filters' move from cnats to the data connection behind the fence:
 * fence.h says how; here is what it asks for. */

static bool fence_publish(void *ud, const char *text)
{
	struct cluster *c = ud;
	natsConnection *snc = groups_connected(c->groups) ? groups_connection(c->groups) : NULL;
	if (!snc)
		return false;
	int len = (int)strlen(text);
	natsMsg *nm = NULL;
	if (natsMsg_Create(&nm, c->fence_subject, NULL, text, len) != NATS_OK)
		return false;
	if (!sender_publish_control(c->share_sender, snc, nm, strlen(c->fence_subject) + (size_t)len, true)) {
		natsMsg_Destroy(nm);
		return false;
	}
	return true;
}

static void fence_pause(void *ud) { nats_writer_pause(((struct cluster *)ud)->writer); }

static void fence_resume(void *ud) { nats_writer_resume(((struct cluster *)ud)->writer); }

static void fence_end_cnats(void *ud)
{
	struct cluster *c = ud;
	FOR_EACH_INTEREST(c, in)
	{
		cnats_unsubscribe(c, in, false);
	}
}

static void on_fence_late(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct cluster *c = container_of(t, struct cluster, fence_wait);
	fence_wait_over(&c->fence, groups_connected(c->groups));
}

static void on_switch_grace_over(struct loop *l, struct loop_timer *t)
{
	(void)l;
	fence_grace_over(&container_of(t, struct cluster, fence_grace)->fence);
}

static void on_fence_retry(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct cluster *c = container_of(t, struct cluster, fence_retry);
	fence_retry_due(&c->fence, c->fence_sub && c->b->stats.cluster.connected, loop_now_ms(c->b->loop));
}

static void fence_timer(void *ud, enum fence_timer which, bool on)
{
	struct cluster *c = ud;
	struct loop_timer *t;
	loop_timer_fn due;
	uint32_t seconds;
	switch (which) {
	case FENCE_T_WAIT:
		t = &c->fence_wait, due = on_fence_late, seconds = FENCE_WAIT_S;
		break;
	case FENCE_T_GRACE:
		t = &c->fence_grace, due = on_switch_grace_over, seconds = SWITCH_GRACE_S;
		break;
	default:
		t = &c->fence_retry, due = on_fence_retry, seconds = 1;
		break;
	}
	if (!on && loop_timer_armed(t))
		loop_timer_stop(c->b->loop, t);
	else if (on && !loop_timer_armed(t))
		loop_timer_start(c->b->loop, t, seconds, due);
}

static void fence_skipped(void *ud, const char *why)
{
	(void)ud;
	log_msg(LOG_NOTICE, "cluster", "the filters move to the data connection without the fence (%s): for a "
		"moment a message may be routed out of its publisher's order", why);
}

static const struct fence_ops fence_ops = {
	.publish = fence_publish,
	.pause = fence_pause,
	.resume = fence_resume,
	.end_cnats = fence_end_cnats,
	.timer = fence_timer,
	.skipped = fence_skipped,
};

/* Up (again): the fence's subscription and the filters' on it too, then a
 * mark (on_writer_mark). */
static void on_writer_up(void *ud)
{
	struct cluster *c = ud;
	fence_writer_up(&c->fence);
	c->wm_ping = c->wm_add = 0;
	path_restart(c, PATH_WRITER);
	if (nats_writer_subscribe(c->writer, FENCE_SID, c->fence_subject, strlen(c->fence_subject)) != 0)
		return; /* lost meanwhile: on_writer_down ran */
	FOR_EACH_INTEREST(c, in)
	{
		if (!writer_subscribe(c, in) && c->fence.reading != READ_BOTH)
			return; /* lost meanwhile: on_writer_down put them back */
	}
	fence_writer_subscribed(&c->fence, nats_writer_mark(c->writer));
}

static void on_writer_mark(void *ud, uint64_t n)
{
	struct cluster *c = ud;
	fence_writer_marked(&c->fence, n, c->b->stats.cluster.connected);
	if (c->wm_ping && n >= c->wm_ping) {
		remote_interest_writer_marked(c->wanted, c->wm_add);
		c->wm_ping = 0;
	}
	if (!c->wm_ping && c->wm_next_add)
		send_writer_mark(c);
}

/* Lost: the filters go back to cnats (what NATS sends before their SUBs
 * are in place is missed: at most once, as across any lost connection),
 * and no SUBACK waits for a mark that will not come. */
static void on_writer_down(void *ud)
{
	struct cluster *c = ud;
	uint64_t add = c->wm_add > c->wm_next_add ? c->wm_add : c->wm_next_add;
	remote_interest_writer_marked(c->wanted, add);
	c->wm_ping = c->wm_add = c->wm_next_add = 0;
	if (!fence_writer_down(&c->fence))
		return;
	bool fresh = false;
	FOR_EACH_INTEREST(c, in)
	{
		c->b->stats.cluster.subjects -= in->wsubs;
		in->wsubs = 0;
		if (!in->sub) {
			fresh = true;
			cnats_subscribe(c, in);
		}
	}
	/* From the data connection alone: cnats's subscriptions are new. */
	if (fresh)
		path_restart(c, PATH_CNATS);
}

static void on_writer_msg(void *ud, const struct nats_writer_msg *wm)
{
	struct cluster *c = ud;
	if (wm->sid == FENCE_SID) {
		fence_heard(&c->fence, wm->payload, wm->payload_len, false);
		return;
	}
	if (!fence_writer_routes(&c->fence))
		return; /* ahead of the fence cnats brings it */
	struct interest *in = find_tag(c, wm->sid >> 1);
	if (!in || !in->wsubs)
		return; /* its filter is gone, its UNSUB on the way */
	struct writer_hdrs h;
	struct remote_msg rm;
	const char *why = !view_of_writer(wm, &h, &rm) ? "a Wisp header too long"
		: route_view(c, &rm, c->prefix, false, 0, false, NULL, 0, in, PATH_WRITER);
	if (why && *why) {
		c->b->stats.cluster.dropped++;
		log_limited("cluster_dropped", LOG_INFO, "cluster", "message from NATS on '%.*s' dropped: %s",
			    (int)(wm->subject_len > 200 ? 200 : wm->subject_len), wm->subject, why);
	}
}

/* ---- cnats threads: hand over, nothing else ---- */

static void on_nats_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	(void)nc;
	(void)sub;
	struct cluster *c = closure;
#ifndef NDEBUG
	/* A starved delivery thread, so that cnats's pending limit fills and
	 * it drops (tests/e2e/35_cluster_nats_stall.py). */
	if (c->slow_delivery)
		nanosleep(&(struct timespec){.tv_nsec = 2000000}, NULL);
#endif
	if (!inbox_push_sized(&c->inbox, msg, wire_msg_bytes(msg)))
		natsMsg_Destroy(msg); /* counted by the inbox, unless it is closing */
}

/* The main connection is up, with the server's max_payload. Any thread. */
static void main_up(struct cluster *c, int64_t max_payload)
{
	atomic_store_explicit(&c->max_payload, max_payload, memory_order_relaxed);
	nats_link_set(&c->main_link, true);
	inbox_raise(&c->inbox, EV_CONNECTED);
}

static void on_connected(natsConnection *nc, void *closure)
{
	/* Here, not on the loop: the loop never takes a connection's lock,
	 * which a stalled write holds (sender.h). */
	main_up(closure, natsConnection_GetMaxPayload(nc));
}

static void on_disconnected(natsConnection *nc, void *closure)
{
	(void)nc;
	struct cluster *c = closure;
	nats_link_set(&c->main_link, false);
	inbox_raise(&c->inbox, EV_DISCONNECTED);
}

/* cnats's asynchronous errors; only a slow consumer (its pending limit
 * full: messages dropped) concerns the loop, which counts the drops. */
static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	(void)nc;
	(void)sub;
	if (err == NATS_SLOW_CONSUMER)
		inbox_raise(&((struct cluster *)closure)->inbox, EV_SLOW);
}

static void on_closed(natsConnection *nc, void *closure)
{
	struct cluster *c = closure;
	nats_link_closed(&c->main_link, nc);
	inbox_raise(&c->inbox, EV_CLOSED);
}

/* ---- start and stop ---- */

/* Interest of the sessions the store restored before the cluster started. */
static void count_existing(struct cluster *c)
{
	const struct session_table *tab = &c->b->sessions;
	for (size_t i = 0; i < tab->nbuckets; i++)
		for (struct session *s = tab->buckets[i]; s; s = s->hash_next) {
			struct list_node *n, *tmp;
			list_for_each_safe(n, tmp, &s->subs) {
				const struct sess_sub *sub = container_of(n, struct sess_sub, link);
				interest_ref(c, sess_sub_filter(sub), sess_sub_filter_len(sub));
			}
		}
}

static void free_msg(void *m) { natsMsg_Destroy(m); }

static const char *route_stream_msg(void *ctx, natsMsg *nm, uint64_t seq, bool own)
{
	struct cluster *c = ctx;
	struct handover *h = presence_handover(c->presence);
	if (own) {
		handover_own_routed(h, nm, seq);
		return NULL;
	}
	/* A session handed over from another node brought this message along
	 * (handover.h's cut): not routed to it again. */
	struct session *const *except = NULL;
	size_t n = handover_except(h, nm, seq, &except);
	if (n) {
		c->b->route.except = except;
		c->b->route.nexcept = n;
	}
	const char *why = route_remote(c, nm, durable_stream(c->durable), true, seq);
	c->b->route.except = NULL;
	c->b->route.nexcept = 0;
	return why;
}

/* A message of a shared group's stream consumer (durable.h). */
static const char *route_stream_group(void *ctx, natsMsg *nm, const char *consumer, bool *gone)
{
	struct cluster *c = ctx;
	size_t len = 0;
	const char *key = groups_by_consumer(c->groups, consumer, &len);
	if (!key) {
		*gone = true;
		return NULL;
	}
	struct remote_msg rm;
	view_of_nats(nm, &rm);
	return route_msg(c, &rm, durable_stream(c->durable), true, 0, key, len, NULL);
}

static void on_group_bound(void *ctx, uint64_t id) { groups_stream_ready(((struct cluster *)ctx)->groups, id); }

static bool group_join(void *ctx, uint64_t id, const char *name, const char *subject, const char *parent)
{
	return durable_group_join(((struct cluster *)ctx)->durable, id, name, subject, parent);
}

static void group_leave(void *ctx, uint64_t id) { durable_group_leave(((struct cluster *)ctx)->durable, id); }

static const struct groups_stream_ops group_stream_ops = {.join = group_join, .leave = group_leave};

static void on_consumers(void *ctx, const char *const *names, size_t n, uint64_t ask)
{
	remote_interest_consumers(((struct cluster *)ctx)->wanted, names, n, ask);
}

/* A message the durable side kept while JetStream was away, as
 * send_to_nats would have made it for the stream. */
static int make_stream_msg(void *ctx, const struct msg *m, const char *reply, natsMsg **out)
{
	struct cluster *c = ctx;
	return make_nats_msg(c, m, durable_stream(c->durable), reply, out);
}

/* Whether a failed connect means no server answered (retried in the
 * background) rather than one that refused us (TLS, credentials). */
static bool nats_down(natsStatus st)
{
	return st == NATS_NO_SERVER || st == NATS_TIMEOUT || st == NATS_IO_ERROR || st == NATS_CONNECTION_DISCONNECTED ||
	       st == NATS_STALE_CONNECTION;
}

int cluster_check_config(const struct config *cfg, char *err, size_t errlen)
{
	const struct config_cluster *cc = &cfg->cluster;
	if (!cc->nats)
		return 0;
	char why[400];
	struct nats_signer *signer = NULL;
	natsOptions *o = NULL;
	int rc = nats_signer_load(cc, &signer, why, sizeof why);
	if (rc == 0 && natsOptions_Create(&o) != NATS_OK) {
		snprintf(why, sizeof why, "cluster: %s", nats_last_error());
		rc = WISP_ENOMEM;
	}
	if (rc == 0)
		rc = nats_auth_apply(o, cc, signer, why, sizeof why); /* cnats reads the PEM files */
	natsOptions_Destroy(o);
	nats_signer_free(signer);
	/* No nats_Close: the process exits next, and nats_Close there leaves
	 * libcrypto's exit-time cleanup a freed stack (an ASan SEGV). */
	if (rc != 0)
		snprintf(err, errlen, "%s: %s", cfg->path, why);
	return rc;
}

int cluster_start(struct broker *b, struct cluster **out, char *err, size_t errlen)
{
	const struct config_cluster *cfg = &b->cfg->cluster;
	*out = NULL;
	if (!cfg->nats)
		return 0;
	struct cluster *c = wisp_calloc(1, sizeof *c);
	if (!c)
		goto nomem;
	c->b = b;
	c->local = b->router;
	c->router.ops = &cluster_ops;
	c->inbox.efd = -1;
	c->io.fd = -1; /* not watched until loop_io_start */
#ifndef NDEBUG
	c->slow_delivery = getenv("WISP_DEBUG_SLOW_NATS_DELIVERY") != NULL;
#endif
	list_init(&c->rejoin_timer.link);
	list_init(&c->fence_grace.link);
	list_init(&c->fence_wait.link);
	list_init(&c->fence_retry.link);
	nats_retire_loop_init(&c->retired, b->loop);
	c->rejoin_wait_ms = NATS_REJOIN_FIRST_MS;
	char host[256];
	if (cfg->node) {
		c->node = wisp_strndup(cfg->node, strlen(cfg->node));
	} else {
		if (gethostname(host, sizeof host) != 0)
			snprintf(host, sizeof host, "wisp");
		host[sizeof host - 1] = '\0';
		c->node = wisp_strndup(host, strlen(host));
	}
	c->prefix = wisp_strndup(cfg->subject_prefix, strlen(cfg->subject_prefix));
	uint64_t run = 0;
	if (getentropy(&run, sizeof run) != 0)
		run = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
	snprintf(c->run, sizeof c->run, "%016llx", (unsigned long long)run);
	uint64_t secret = 0;
	if (getentropy(&secret, sizeof secret) != 0)
		secret = run * 0x9e3779b97f4a7c15ull ^ (uint64_t)clock();
	snprintf(c->fence_secret, sizeof c->fence_secret, "%016llx", (unsigned long long)secret);
	c->nbuckets = INTEREST_BUCKETS_MIN;
	c->buckets = wisp_calloc(c->nbuckets, sizeof *c->buckets);
	c->by_tag = wisp_calloc(c->nbuckets, sizeof *c->by_tag);
	size_t longest = b->cfg->limits.max_topic_length;
	c->buf_cap = SUBJECT_MAX(strlen(c->prefix), longest > 65535 ? 65535 : longest) + 8;
	if (c->buf_cap < 65536 + 1)
		c->buf_cap = 65536 + 1; /* a topic back from NATS before its bound is checked */
	c->buf = wisp_malloc(c->buf_cap);
	if (!c->node || !c->prefix || !c->buckets || !c->by_tag || !c->buf)
		goto nomem;
	fence_init(&c->fence, &fence_ops, c, c->node);
#ifndef NDEBUG
	c->fence.no_fence = getenv("WISP_DEBUG_NO_FENCE") != NULL; /* the move's fence never published (tests) */
#endif
	if (cfg->data_connection) {
		size_t n = strlen("$WISP..fence.") + strlen(c->prefix) + sizeof c->run;
		if (!(c->fence_subject = wisp_malloc(n)))
			goto nomem;
		snprintf(c->fence_subject, n, "$WISP.%s%sfence.%s", c->prefix, *c->prefix ? "." : "", c->run);
	}
	c->nats_headers_max = NATS_HEADERS_MAX + 2u * strlen(c->node);
	atomic_init(&c->max_payload, 0);
	if (inbox_init_bytes(&c->inbox, cfg->inbound_queue, cfg->inbound_queue_bytes) != 0)
		goto nomem;
	int src = sender_start(&c->sender, cfg->send_queue, cfg->send_queue_bytes);
	/* '<node>-share' has its own (a stalled write on one connection holds
	 * only that one's lock): control operations only, no data ring. */
	if (src == 0)
		src = sender_start(&c->share_sender, 1, 1);
	if (src == WISP_ENOMEM)
		goto nomem;
	if (src != 0) {
		snprintf(err, errlen, "cluster: cannot start the NATS sender thread");
		goto fail;
	}
	if (loop_io_start(b->loop, &c->io, c->inbox.efd, LOOP_READ, on_inbox) != 0) {
		snprintf(err, errlen, "cluster: cannot watch the NATS inbox");
		goto fail;
	}
	natsStatus st = natsOptions_Create(&c->opts);
	if (st == NATS_OK)
		st = natsOptions_SetURL(c->opts, cfg->nats);
	if (st == NATS_OK)
		st = natsOptions_SetName(c->opts, c->node);
	if (st == NATS_OK)
		st = natsOptions_SetNoEcho(c->opts, true);
	/* One delivery thread for every subscription, not one per filter. */
	if (st == NATS_OK)
		st = natsOptions_UseGlobalMessageDelivery(c->opts, true);
	/* Buffered, cnats's flusher thread waits 1 ms for more before it
	 * writes: most of the ~0.8 ms a cross-node hop added at p50
	 * (docs/cluster.md). At once costs one write() per message another
	 * node wants; nothing on the single-node path. */
	if (st == NATS_OK)
		st = natsOptions_SetSendAsap(c->opts, cfg->send_asap);
	if (st == NATS_OK)
		st = natsOptions_SetMaxReconnect(c->opts, -1);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectWait(c->opts, 500);
	if (st == NATS_OK)
		st = natsOptions_SetDisconnectedCB(c->opts, on_disconnected, c);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectedCB(c->opts, on_connected, c);
	if (st == NATS_OK)
		st = natsOptions_SetClosedCB(c->opts, on_closed, c);
	if (st == NATS_OK)
		st = natsOptions_SetErrorHandler(c->opts, on_async_error, c);
	if (nats_signer_load(cfg, &c->signer, err, errlen) != 0 ||
	    (st == NATS_OK && nats_auth_apply(c->opts, cfg, c->signer, err, errlen) != 0))
		goto fail;
	char urls[512];
	nats_urls_redacted(cfg->nats, urls, sizeof urls);
	if (cfg->data_connection) {
		char name[300];
		snprintf(name, sizeof name, "%s-pub", c->node);
		int wrc = nats_writer_start(&c->writer, b->loop, cfg, c->signer, name, err, errlen);
		if (wrc == WISP_ENOMEM)
			goto nomem;
		if (wrc != 0)
			goto fail;
		nats_writer_count_lost_in(c->writer, &b->stats.cluster.send_failed);
		nats_writer_set_hooks(c->writer, &(struct nats_writer_hooks){
			.on_msg = on_writer_msg,
			.on_up = on_writer_up,
			.on_down = on_writer_down,
			.on_mark = on_writer_mark,
			.ud = c,
		});
	}
	/* A first try that gives up, only to log why NATS refused (TLS,
	 * credentials): a connect that retries in the background keeps the
	 * reason to itself. A failed try calls none of the callbacks. */
	if (st == NATS_OK) {
		st = natsConnection_Connect(&c->nc, c->opts);
		if (st == NATS_OK) {
			on_connected(c->nc, c);
		} else {
			/* Refused (TLS, credentials): cnats closes for good a
			 * connection whose first connect a server refused, so the
			 * node runs alone and makes it anew on its own (check_closed),
			 * as when NATS closes it later. Unreachable: cnats retries by
			 * itself. */
			const char *why = nats_last_error();
			if (!nats_down(st)) {
				log_msg(LOG_ERROR, "cluster", "NATS %s refused node '%s': %s; serving local clients only, "
					"connecting again on its own (every %d s doubling to %d s)", urls, c->node,
					*why ? why : natsStatus_GetText(st), NATS_REJOIN_FIRST_MS / 1000,
					NATS_REJOIN_MAX_MS / 1000);
				c->alone = true;
			} else {
				log_msg(LOG_WARNING, "cluster", "cannot connect to NATS %s: %s; retrying in the background",
					urls, *why ? why : natsStatus_GetText(st));
			}
			st = natsOptions_SetRetryOnFailedConnect(c->opts, true, on_connected, c);
			if (st == NATS_OK)
				st = natsConnection_Connect(&c->nc, c->opts);
			if (st == NATS_OK)
				on_connected(c->nc, c);
			else if (st == NATS_NOT_YET_CONNECTED)
				st = NATS_OK; /* retried in the background; on_connected says when */
		}
	}
	if (st != NATS_OK) {
		snprintf(err, errlen, "cluster: cannot set up the NATS connection to %s: %s", urls,
			 natsStatus_GetText(st));
		goto fail;
	}
	if (groups_start(&c->groups, cfg, c->signer, c->node, c->prefix, c->share_sender, &c->inbox,
			 &b->stats.cluster.subjects, err, errlen) != 0)
		goto fail;
	int rc = retained_kv_start(&c->retained, b, c->nc, c->sender, &c->inbox, c->node, c);
	if (rc == 0)
		rc = presence_start(&c->presence, b, groups_connection(c->groups), c->share_sender, groups_link(c->groups),
				    c->node, c->prefix, on_share_msg, c);
	if (rc == 0)
		rc = totals_start(&c->totals, b, groups_connection(c->groups), c->share_sender, groups_link(c->groups),
				  c->node, c->prefix, on_share_msg, c);
	if (rc == WISP_ENOMEM)
		goto nomem;
	if (rc != 0) {
		snprintf(err, errlen, "cluster: cannot start the retained messages' threads");
		goto fail;
	}
	if (remote_interest_start(&c->wanted, b, c->nc, c->sender, groups_connection(c->groups), c->share_sender,
				  groups_link(c->groups), c->node, c->run, c->prefix, on_share_msg, c) != 0)
		goto nomem;
	groups_on_subscribed(c->groups, b->loop, on_group_subscribed, c);
	if (cfg->durable && durable_start(b, c->node, c->run, c->signer, route_stream_msg, make_stream_msg, c, &c->durable) != 0) {
		snprintf(err, errlen, "cluster: cannot start the JetStream worker");
		goto fail;
	}
	durable_core_connected(c->durable, b->stats.cluster.connected);
	if (c->durable) {
		b->publish_gate.wait = publish_gate;
		b->publish_gate.ctx = c;
		durable_set_groups(c->durable, route_stream_group, on_group_bound, c);
		groups_set_stream(c->groups, &group_stream_ops, c, durable_stream(c->durable));
		/* QoS 1/2 for a node that is down but whose consumer keeps them (dormant.h). */
		durable_set_consumers(c->durable, on_consumers, c);
		remote_interest_track_consumers(c->wanted, durable_list_consumers, c->durable);
	}
	handover_set_stream(presence_handover(c->presence), c->durable, c->run, &c->seq);
	count_existing(c);
	b->sessions.on_sub_gone = on_sub_gone;
	b->sessions.sub_gone_ctx = c;
	b->router = &c->router;
	log_msg(LOG_NOTICE, "cluster", "node '%s' joining the cluster over NATS %s (subjects %s%s)", c->node,
		urls, *c->prefix ? c->prefix : "", *c->prefix ? ".>" : ">");
	*out = c;
	return 0;
nomem:
	snprintf(err, errlen, "cluster: out of memory");
fail:
	cluster_stop(c);
	return WISP_EIO;
}

void cluster_stop(struct cluster *c)
{
	if (!c)
		return;
	struct broker *b = c->b;
	if (b->router == &c->router)
		b->router = c->local;
	if (b->publish_gate.ctx == c)
		memset(&b->publish_gate, 0, sizeof b->publish_gate);
	if (b->sessions.sub_gone_ctx == c) {
		b->sessions.on_sub_gone = NULL;
		b->sessions.sub_gone_ctx = NULL;
	}
	c->retired.list.stopping = true; /* every subscription comes to it now */
	for (size_t i = 0; c->buckets && i < c->nbuckets; i++)
		while (c->buckets[i]) {
			struct interest *in = c->buckets[i];
			c->buckets[i] = in->next;
			nats_unsubscribe(c, in, true);
			wisp_free(in);
		}
	for (size_t i = 0; c->by_tag && i < c->nbuckets; i++)
		c->by_tag[i] = NULL;
	for (size_t i = 0; i < c->ngone; i++)
		release_sub(c, c->gone[i]);
	wisp_free(c->gone);
	c->gone = NULL;
	c->ngone = c->gone_cap = 0;
	fence_unlisten(c);
	/* Its thread publishes on c->nc: joined before any connection closes.
	 * The filters' subscriptions it made come to the retired list. */
	sender_stop(c->sender, &c->retired.list);
	c->sender = NULL;
	if (c->writer)
		nats_writer_set_hooks(c->writer, &(struct nats_writer_hooks){0});
	nats_writer_stop(c->writer);
	c->writer = NULL;
	if (loop_timer_armed(&c->rejoin_timer))
		loop_timer_stop(b->loop, &c->rejoin_timer);
	if (loop_timer_armed(&c->drops_timer))
		loop_timer_stop(b->loop, &c->drops_timer);
	if (loop_timer_armed(&c->fence_grace))
		loop_timer_stop(b->loop, &c->fence_grace);
	if (loop_timer_armed(&c->fence_wait))
		loop_timer_stop(b->loop, &c->fence_wait);
	if (loop_timer_armed(&c->fence_retry))
		loop_timer_stop(b->loop, &c->fence_retry);
	/* A rejoin's connect still going: waited for (its first try is
	 * bounded by libnats's connect timeout), its connection closed. */
	struct connector *ks[2] = {&c->main_k, &c->share_k};
	for (int i = 0; i < 2; i++)
		if (ks[i]->running) {
			pthread_join(ks[i]->thread, NULL);
			ks[i]->running = false;
			if (ks[i]->nc) {
				natsConnection_Close(ks[i]->nc);
				natsConnection_Destroy(ks[i]->nc);
			}
		}
	remote_interest_stop(c->wanted); /* before the connection closes: says "bye" */
	durable_stop(c->durable, &c->retired.list); /* closes its own connection first */
	presence_stop(c->presence); /* on the groups' connection */
	totals_stop(c->totals);
	/* Nothing publishes on '<node>-share' any more, and every UNSUB of its
	 * subscriptions is queued: joined before it closes. */
	groups_leave(c->groups);
	sender_stop(c->share_sender, &c->retired.list);
	c->share_sender = NULL;
	groups_close(c->groups);
	retained_kv_stop(c->retained, &c->retired.list);
	/* Every other connection is closed, the filters' subscriptions ended:
	 * cnats's delivery worker frees what their ends queued before
	 * nats_CloseAndWait stops it (retire.h). */
	nats_delivery_drain(c->nc, 1000, &c->retired.list);
	/* Close joins cnats's threads: no callback runs after it. */
	if (c->nc) {
		natsConnection_Close(c->nc);
		natsConnection_Destroy(c->nc);
	}
	/* Every connection is closed, its read loop joined: the subscriptions
	 * retired, due or not, can go (retire.h). */
	nats_retire_loop_stop(&c->retired);
	natsOptions_Destroy(c->opts);
	/* Freed while cnats can still free them; a late callback's message is
	 * refused and freed by the callback itself. */
	inbox_close(&c->inbox, free_msg);
	/* cnats may still run a callback on its threads after Destroy: wait
	 * for them before the inbox goes. */
	nats_CloseAndWait(5000);
	durable_free(c->durable);
	loop_io_stop(b->loop, &c->io);
	/* Nothing to destroy: inbox_close emptied it and refuses since, and a
	 * natsMsg destroyed after nats_CloseAndWait touches freed state. */
	inbox_free(&c->inbox, NULL);
	groups_free(c->groups);
	retained_kv_free(c->retained);
	presence_free(c->presence);
	totals_free(c->totals);
	remote_interest_free(c->wanted);
	nats_signer_free(c->signer); /* no connection signs any more */
	wisp_free(c->buckets);
	wisp_free(c->by_tag);
	wisp_free(c->buf);
	sbuf_free(&c->hdr);
	wisp_free(c->node);
	wisp_free(c->prefix);
	wisp_free(c->fence_subject);
	wisp_free(c);
}
