/*
 * Cluster-wide client ids (presence.h).
 *
 * A claim: subject "$WISP.<prefix>.claim" ("$WISP.claim" without a
 * prefix), payload the client id as sent (any UTF-8: not a header value),
 * headers Wisp-Node (the claiming node), Wisp-At (the connect's wall-clock
 * time in ns) and Wisp-Clean ("1" for Clean Start).
 *
 * The recent-connect ring holds a 64-bit digest of each id (two 32-bit
 * hashes) and its connect time; a lookup scans it (PRESENCE_RECENT
 * entries), only when a claim finds a connected session of its id here.
 *
 * A claim another node made while this node had lost NATS is not heard
 * again. So when this node's claim connection comes back (looked at every
 * second), it asks again for every session it holds whose id it claimed
 * last (handover.h's directory): a claim with Wisp-Recheck "1" and the
 * time of its own connect of the id (0: not known). A node holding the id
 * from a later connect answers with its own claim, which ends the stale
 * copy here as any claim does (a connected client gets DISCONNECT 0x8E);
 * a node holding it from an earlier connect takes the recheck for a claim;
 * a node that knows no connect time of its copy leaves it. Cost: one
 * small message per such session at each reconnect, asked for
 * RECHECK_STEP sessions a loop turn through the sender's bounded control
 * queue (waiting a second whenever it is full), so neither a turn nor the
 * queue grows with the sessions held. The sessions asked for include
 * those restored from the store with a claim time and no claim heard
 * since.
 *
 * A node restarted on its store missed every claim made while it was down:
 * on_held_elsewhere compares each restored session another node holds too
 * (that node's answer to the start-up directory request, handover.c).
 */
#include "presence.h"

#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "broker.h"
#include "err.h"
#include "handover.h"
#include "hash.h"
#include "link.h"
#include "log.h"
#include "rules.h"
#include "sender.h"
#include "session_v5.h"
#include "wire.h"

#define PRESENCE_RECENT 1024u
/* Sessions looked at in one step of the recheck walk (a loop turn). */
#define RECHECK_STEP 512u
#define ID_SEED_LO 0x243f6a88u
#define ID_SEED_HI 0x85a308d3u

struct recent {
	uint64_t digest;
	uint64_t at_ns;
};

struct presence {
	struct broker *b;
	natsConnection *nc;
	const struct nats_link *link; /* nc up (link.h) */
	struct sender_sub *sub;    /* made and ended by `sender` */
	sender_msg_fn on_msg;      /* the subscription's, kept for presence_rebind */
	void *on_msg_closure;
	char *node;
	char *subject;
	struct recent ring[PRESENCE_RECENT];
	size_t next;
	struct handover *handover; /* sessions following their client (handover.h) */
	struct sender *sender;     /* publishes on nc off the loop thread (sender.h) */
	struct loop_timer timer;   /* looks at the claim connection every second */
	uint64_t ups;              /* nats_link_ups at the last look that found it up (1 before any) */
	bool was_up;               /* the claim connection, at the last look */
	bool refused;              /* a claim found the sender's queue full: all asked again once it is not */
	/* The recheck walk over the sessions held (recheck_all). */
	struct loop_timer walk_timer; /* its next step */
	size_t walk_cursor;           /* sess_table_scan's */
	size_t walk_asked;            /* ids asked for in this walk */
	bool walking;
	bool walk_again;              /* asked for during a walk: once more after it */
};

static uint64_t id_digest(const char *id, size_t len)
{
	return (uint64_t)hash_bytes(ID_SEED_HI, id, len) << 32 | hash_bytes(ID_SEED_LO, id, len);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The claim time of this node's last connect of `id`: among the recent
 * connects, or else the one its persistent session here keeps (also one
 * restored from the store); 0 if neither knows. */
static uint64_t connected_at(const struct presence *p, const char *id, size_t len)
{
	uint64_t d = id_digest(id, len), at = 0;
	for (size_t i = 0; i < PRESENCE_RECENT; i++)
		if (p->ring[i].digest == d && p->ring[i].at_ns > at)
			at = p->ring[i].at_ns;
	const struct session *s = at ? NULL : sess_find(&p->b->sessions, id, len);
	return s ? sess_claim_ns(s) : at;
}

/* Publishes a claim of `id` connected at `at` (a recheck: asks again),
 * through the sender thread (sender.h). Not while the connection is down
 * (link.h) or NATS is not taking the claims: recheck_all asks again for it
 * once the connection is back, or the claims drained, as for every claim
 * nobody heard. False: the sender's control queue is full (a recheck waits
 * for room, the walk's pace). */
static bool claim(struct presence *p, const char *id, size_t id_len, uint64_t at, bool clean_start, bool recheck)
{
	if (!nats_link_up(p->link) || (p->refused && !recheck))
		return true;
	natsMsg *nm = NULL;
	natsStatus st = natsMsg_Create(&nm, p->subject, NULL, id, (int)id_len);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Node", p->node);
	if (st == NATS_OK) {
		char t[24];
		snprintf(t, sizeof t, "%" PRIu64, at);
		st = natsMsgHeader_Set(nm, "Wisp-At", t);
	}
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Clean", clean_start ? "1" : "0");
	if (st == NATS_OK && recheck)
		st = natsMsgHeader_Set(nm, "Wisp-Recheck", "1");
	if (st == NATS_OK && sender_publish_control(p->sender, p->nc, nm, id_len + 256, true))
		return true;
	natsMsg_Destroy(nm);
	if (st != NATS_OK) {
		p->b->stats.cluster.send_failed++;
		return true;
	}
	if (!recheck)
		p->refused = true;
	return false;
}

/* The recent connects' newest time per digest, as connected_at reads the
 * ring, in an open-addressed table at most half full: made once for a walk
 * over every session, where a scan of the ring per session cost 1,024
 * comparisons each (a second of the loop at a million sessions). */
struct recent_index {
	struct recent slot[2 * PRESENCE_RECENT]; /* digest 0: empty */
};

static void recent_index_make(const struct presence *p, struct recent_index *x)
{
	memset(x, 0, sizeof *x);
	for (size_t i = 0; i < PRESENCE_RECENT; i++) {
		const struct recent *r = &p->ring[i];
		if (!r->digest)
			continue;
		size_t k = (size_t)r->digest & (2 * PRESENCE_RECENT - 1);
		while (x->slot[k].digest && x->slot[k].digest != r->digest)
			k = (k + 1) & (2 * PRESENCE_RECENT - 1);
		x->slot[k].digest = r->digest;
		if (r->at_ns > x->slot[k].at_ns)
			x->slot[k].at_ns = r->at_ns;
	}
}

/* connected_at, with the ring read through its index. */
static uint64_t connected_at_indexed(const struct recent_index *x, const struct session *s, size_t len)
{
	uint64_t d = id_digest(s->client_id, len);
	size_t k = (size_t)d & (2 * PRESENCE_RECENT - 1);
	while (x->slot[k].digest && x->slot[k].digest != d)
		k = (k + 1) & (2 * PRESENCE_RECENT - 1);
	uint64_t at = x->slot[k].digest ? x->slot[k].at_ns : 0;
	return at ? at : sess_claim_ns(s);
}

struct walk_step {
	struct presence *p;
	const struct recent_index *x; /* NULL (out of memory): the ring is scanned */
	size_t looked;
	size_t asked; /* in the bucket being visited: counted once it is done */
};

static bool ask_again(void *ctx, const struct session *s)
{
	struct walk_step *w = ctx;
	struct presence *p = w->p;
	size_t len = s->id_len;
	if (!nats_link_up(p->link))
		return false; /* lost meanwhile: nothing would be sent (on_walk_step ends the walk) */
	w->looked++;
	/* Claimed here last, or restored from the store with the time of its
	 * claim here and no claim heard since. */
	bool mine = handover_claimed_here(p->handover, s->client_id, len) ||
		    (sess_claim_ns(s) && !handover_claimed_elsewhere(p->handover, s->client_id, len));
	if (!mine)
		return true;
	uint64_t at = w->x ? connected_at_indexed(w->x, s, len) : connected_at(p, s->client_id, len);
	if (!claim(p, s->client_id, len, at, false, true))
		return false;
	w->asked++;
	return true;
}

static void walk_start(struct presence *p);

/* A step of the walk: RECHECK_STEP sessions, then the next turn; stopped
 * (the sender's queue full, or the link lost): again in a second, from the
 * bucket it stopped in. */
static void on_walk_step(struct loop *l, struct loop_timer *t)
{
	struct presence *p = container_of(t, struct presence, walk_timer);
	if (!nats_link_up(p->link)) {
		p->walking = p->walk_again = false; /* the reconnect walks anew */
		return;
	}
	if (!sender_control_room(p->sender)) {
		loop_timer_start(l, &p->walk_timer, 1, on_walk_step);
		return;
	}
	struct walk_step w = {.p = p, .x = NULL, .looked = 0, .asked = 0};
	struct recent_index *x = wisp_malloc(sizeof *x);
	if (x)
		recent_index_make(p, x);
	w.x = x;
	bool full = false;
	while (w.looked < RECHECK_STEP) {
		if (!sess_table_scan(&p->b->sessions, &p->walk_cursor, ask_again, &w)) {
			full = true;
			break;
		}
		p->walk_asked += w.asked;
		w.asked = 0;
		if (p->walk_cursor == 0)
			break;
	}
	wisp_free(x);
	if (full) {
		loop_timer_start(l, &p->walk_timer, 1, on_walk_step);
		return;
	}
	if (p->walk_cursor != 0) {
		loop_timer_soon(l, &p->walk_timer, on_walk_step);
		return;
	}
	if (p->walk_asked)
		log_msg(LOG_INFO, "cluster", "back on NATS: asked again for the %zu client ids held here", p->walk_asked);
	p->walking = false;
	if (p->walk_again)
		walk_start(p);
}

static void walk_start(struct presence *p)
{
	p->walking = true;
	p->walk_again = false;
	p->walk_cursor = 0;
	p->walk_asked = 0;
	loop_timer_soon(p->b->loop, &p->walk_timer, on_walk_step);
}

/* The claim connection came back: claims made meanwhile were not heard.
 * Asks again for every session held here whose id this node claimed last,
 * over as many turns as that takes (on_walk_step). */
static void recheck_all(struct presence *p)
{
	if (p->walking)
		p->walk_again = true;
	else
		walk_start(p);
}

static void on_presence_timer(struct loop *l, struct loop_timer *t)
{
	struct presence *p = container_of(t, struct presence, timer);
	/* With the main connection down this one is most likely reconnecting
	 * too: the first look once the main connection is back rechecks. */
	if (!p->b->stats.cluster.connected) {
		p->was_up = false;
		loop_timer_start(l, &p->timer, 1, on_presence_timer);
		return;
	}
	bool up = nats_link_up(p->link);
	/* A reconnect can come and go between two looks, the first one
	 * included: the link's count of ups tells (the connect at start, its
	 * first, is no reconnect). */
	bool missed = false;
	if (up) {
		uint64_t ups = nats_link_ups(p->link);
		missed = ups != p->ups;
		p->ups = ups;
	}
	if (up && p->refused && sender_control_room(p->sender)) {
		p->refused = false;
		missed = true;
	}
	if (up && (!p->was_up || missed))
		recheck_all(p);
	p->was_up = up;
	loop_timer_start(l, &p->timer, 1, on_presence_timer);
}

static void on_connected(void *ctx, struct session *s, bool clean_start, bool assigned)
{
	struct presence *p = ctx;
	if (assigned)
		return; /* the broker's own choice, unique on this node only: nobody else holds it */
	size_t id_len = strlen(s->client_id); /* no U+0000 in an MQTT string [MQTT-1.5.4-2] */
	if (id_len > INT_MAX)
		return;
	/* Later than every claim of the id this node knows of, whatever the
	 * clocks say: the directory's last (this node's own too), or the
	 * session's own should the directory have lost the id. O(1): the
	 * ring is not scanned per connect. */
	uint64_t known = handover_last_claim_ns(p->handover, s->client_id, id_len);
	uint64_t own = sess_claim_ns(s);
	uint64_t at = claim_time(now_ns(), own > known ? own : known);
	handover_claimed(p->handover, s->client_id, id_len, p->node, at);
	p->ring[p->next] = (struct recent){id_digest(s->client_id, id_len), at};
	p->next = (p->next + 1) % PRESENCE_RECENT;
	/* A persistent session keeps the time, in the store too, for the
	 * comparisons after a restart (presence.h). Out of memory for its
	 * block the time is not known there: such a copy is then left alone,
	 * as one written by an older Wisp. */
	if (!s->clean && sess_set_claim_ns(s, at))
		SESS_OBSERVE(&p->b->observer, session_put, s);
	claim(p, s->client_id, id_len, at, clean_start, false);
}

/* A copy here is older than another node's: a claim this node missed. */
static void log_stale(const struct session *s, const char *node)
{
	log_limited("cluster_stale_copy", LOG_NOTICE, "cluster",
		    "client %s: node '%s' holds its session from a later connect, a claim this node missed (it was "
		    "down or cut off from NATS): the copy here ends", s->client_id, node);
}

/* Ends this node's copy of `id`'s session: another node holds the id from
 * a later connect. A connected client is taken over [MQTT-3.1.4-3]: 0x8E
 * for v5, a close for 3.1.1. `id` outlives a clean session's end (the
 * caller's). A delayed will the copy holds (its client left without
 * DISCONNECT, or was just taken over) goes as on one node
 * (proto/handle_connect.c): with `clean_start` (the client began a new
 * session there) the old session ends now, and its will goes out with it
 * [MQTT-3.1.2-4] [MQTT-3.1.2-8]; otherwise its client came back to it
 * before the delay had passed (Clean Start 0 where the session could not
 * move, or a claim this node missed: a recheck, the comparison after a
 * restart), so the will is not due [MQTT-3.1.3-9]. */
static void end_copy(struct presence *p, struct session *s, const char *id, size_t len, const char *node,
		     bool clean_start)
{
	struct broker *b = p->b;
	if (s->conn) {
		log_limited("cluster_takeover", LOG_NOTICE, "cluster", "client %s: taken over by a connection at node '%s'",
			    s->client_id, node);
		broker_drop(b, s->conn, REASON_SESSION_TAKEN_OVER, "session taken over at another node");
		s = sess_find(&b->sessions, id, len); /* a clean one is gone now */
	}
	if (s && !clean_start && s->v5 && s->v5->will) {
		SESS_OBSERVE(&b->observer, will_del, s);
		msg_unref(s->v5->will);
		s->v5->will = NULL;
	}
	if (s) {
		/* Its client is at the other node now: ending it here keeps its
		 * messages from being queued (and delivered again) here. */
		session_v5_end(b, s);
		SESS_OBSERVE(&b->observer, session_del, s);
		sess_destroy(&b->sessions, b->subs, s);
	}
	b->stats.cluster.taken_over++;
}

/*
 * This node (re)started with a persistent session restored from its store
 * that node `node` holds too (its answer to the start-up "dir" request,
 * handover.c), claimed there at `at`: a claim this node missed while it
 * was down. The later claim's copy stays (claim_loses_to_local, as for two
 * claims): this node's own ends, or, if it is the later one, it asks the
 * other node again (a recheck claim), which ends that node's copy there.
 * Without a time on either side nothing can be compared: both are left
 * as they are, as before the times were recorded.
 */
static void on_held_elsewhere(void *ctx, struct session *s, const char *node, uint64_t at)
{
	struct presence *p = ctx;
	uint64_t mine = connected_at(p, s->client_id, s->id_len);
	if (!mine || !at || handover_is_leaving(p->handover, s->client_id, s->id_len)) {
		log_msg(LOG_DEBUG, "cluster", "client %s: node '%s' holds its session too (no time to compare: both left)",
			s->client_id, node);
		return;
	}
	if (claim_loses_to_local(mine, p->node, at, node)) {
		claim(p, s->client_id, s->id_len, mine, false, true); /* ours is later: it ends theirs */
		return;
	}
	handover_claimed(p->handover, s->client_id, s->id_len, node, at);
	log_stale(s, node);
	end_copy(p, s, s->client_id, s->id_len, node, false); /* persistent: kept by the drop, so its id too */
}


static int on_resume_session(void *ctx, struct conn *c, const char *id, size_t len, const char *username)
{
	struct presence *p = ctx;
	return handover_session_missing(p->handover, c, id, len, username);
}

static void on_conn_gone(void *ctx, struct conn *c)
{
	struct presence *p = ctx;
	handover_conn_gone(p->handover, c);
}

bool presence_message(struct presence *p, natsMsg *nm)
{
	if (p && handover_message(p->handover, nm))
		return true;
	if (!p || strcmp(natsMsg_GetSubject(nm), p->subject) != 0)
		return false;
	struct broker *b = p->b;
	const char *node = wire_header(nm, "Wisp-Node");
	const char *at_hdr = wire_header(nm, "Wisp-At");
	int len = natsMsg_GetDataLength(nm);
	if (!node || !at_hdr || len <= 0 || strcmp(node, p->node) == 0)
		return true; /* malformed, or this node's own (no-echo should spare it) */
	const char *id = natsMsg_GetData(nm);
	struct session *s = sess_find(&b->sessions, id, (size_t)len);
	if (wire_header(nm, "Wisp-Recheck")) {
		/* Another node back on NATS asks whether its copy is stale. */
		uint64_t at = strtoull(at_hdr, NULL, 10);
		uint64_t mine = s ? connected_at(p, id, (size_t)len) : 0;
		if (!mine)
			return true; /* nothing known to compare: left as it is */
		if (claim_loses_to_local(mine, p->node, at, node)) {
			claim(p, id, (size_t)len, mine, false, false); /* ours is later: it ends theirs */
			return true;
		}
		/* Theirs is later: a claim, below. */
	}
	uint64_t at = strtoull(at_hdr, NULL, 10);
	handover_claimed(p->handover, id, (size_t)len, node, at);
	if (!s)
		return true;
	if (!s->conn && handover_is_leaving(p->handover, id, (size_t)len))
		return true; /* handed to the claiming node: ended when it confirms it (handover.h) */
	/* Both nodes see both claims: the later connect stays. */
	if (s->conn && claim_loses_to_local(connected_at(p, id, (size_t)len), p->node, at, node))
		return true;
	bool missed = !s->conn && wire_header(nm, "Wisp-Recheck");
	if (missed)
		log_stale(s, node);
	/* A recheck, or the answer to one, says Clean Start 0 whatever the
	 * missed connect said: the will of an absence that ended is not sent late. */
	const char *clean = wire_header(nm, "Wisp-Clean");
	end_copy(p, s, id, (size_t)len, node, !missed && clean && strcmp(clean, "1") == 0);
	return true;
}

int presence_start(struct presence **out, struct broker *b, natsConnection *nc, struct sender *sender,
		   const struct nats_link *link, const char *node,
		   const char *prefix, sender_msg_fn on_msg, void *on_msg_closure)
{
	*out = NULL;
	struct presence *p = wisp_calloc(1, sizeof *p);
	if (!p)
		return WISP_ENOMEM;
	p->b = b;
	p->nc = nc;
	p->sender = sender;
	p->link = link;
	p->node = wisp_strndup(node, strlen(node));
	size_t n = strlen("$WISP.") + strlen(prefix) + strlen(".claim") + 1;
	p->subject = wisp_malloc(n);
	if (!p->node || !p->subject) {
		presence_free(p);
		return WISP_ENOMEM;
	}
	snprintf(p->subject, n, "$WISP.%s%sclaim", prefix, *prefix ? "." : "");
	p->on_msg = on_msg;
	p->on_msg_closure = on_msg_closure;
	p->sub = sender_subscribe(sender, nc, p->subject, NULL, on_msg, on_msg_closure, 0);
	if (!p->sub) {
		presence_free(p);
		return WISP_ENOMEM;
	}
	int rc = handover_start(&p->handover, b, nc, sender, link, node, prefix, on_msg, on_msg_closure);
	if (rc != 0) {
		presence_free(p);
		return rc;
	}
	/* At start it is down or just up: nothing was missed yet. A drop
	 * and a reconnect before the first look (a second at most) make the
	 * link's count 2 or more there. */
	p->was_up = true;
	p->ups = 1;
	loop_timer_start(b->loop, &p->timer, 1, on_presence_timer);
	handover_on_held_elsewhere(p->handover, on_held_elsewhere, p);
	b->on_client_connected = on_connected;
	b->on_resume_session = on_resume_session;
	b->on_conn_gone = on_conn_gone;
	b->client_connected_ctx = p;
	*out = p;
	return 0;
}

int presence_rebind(struct presence *p, natsConnection *nc)
{
	if (!p)
		return 0;
	if (p->sub)
		sender_unsubscribe(p->sender, p->sub); /* closed with its connection: only destroyed */
	p->nc = nc;
	/* Down since the old one closed: once the new one is up, every claim
	 * held here is asked again, as after a reconnect. */
	p->was_up = false;
	p->sub = sender_subscribe(p->sender, nc, p->subject, NULL, p->on_msg, p->on_msg_closure, 0);
	int rc = p->sub ? 0 : WISP_ENOMEM;
	int hrc = handover_rebind(p->handover, nc);
	return rc ? rc : hrc;
}

uint64_t presence_pending_dropped(const struct presence *p)
{
	return p ? (p->sub ? sender_sub_dropped(p->sub) : 0) + handover_pending_dropped(p->handover) : 0;
}

void presence_stop(struct presence *p)
{
	if (!p)
		return;
	if (p->b->client_connected_ctx == p) {
		p->b->on_client_connected = NULL;
		p->b->on_resume_session = NULL;
		p->b->on_conn_gone = NULL;
		p->b->client_connected_ctx = NULL;
	}
	if (loop_timer_armed(&p->timer))
		loop_timer_stop(p->b->loop, &p->timer);
	if (loop_timer_armed(&p->walk_timer))
		loop_timer_stop(p->b->loop, &p->walk_timer);
	p->walking = false;
	handover_stop(p->handover);
	if (p->sub)
		sender_unsubscribe(p->sender, p->sub);
	p->sub = NULL;
}

void presence_free(struct presence *p)
{
	if (!p)
		return;
	presence_stop(p);
	handover_free(p->handover);
	wisp_free(p->subject);
	wisp_free(p->node);
	wisp_free(p);
}

struct handover *presence_handover(const struct presence *p) { return p ? p->handover : NULL; }
