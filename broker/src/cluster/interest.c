/*
 * Interest-based publishing (interest.h).
 *
 * Wire: subject "$WISP.<prefix>.interest" ("$WISP.interest" without a
 * prefix), headers
 *   Wisp-Node      the announcing node
 *   Wisp-Run       its run id (a restart is a new run: its set starts over)
 *   Wisp-ISeq      its announcement number in that run (a beat: the last one)
 *   Wisp-Interest  add | del | snap | hello | sync | beat | bye
 *   Wisp-Part, Wisp-Last   snap: the part's number, "1" on the last one
 *   Wisp-To        sync: the node asked for its snapshot
 *   Wisp-Every     beat: the sender's interest_interval, so that a node is
 *                  forgotten by its own rhythm
 * payload: add/del one filter as subscribed; snap the filters, each ended
 * by a NUL (which no MQTT string holds [MQTT-1.5.4-2]). An add carries the
 * reply subject "$WISP.<prefix>.interest.ack.<run>", answered with the
 * add's Wisp-ISeq and the answering node's Wisp-Node. Announcements go out
 * on the main connection and are read (and answered) on <node>-share,
 * which echoes: a node's own come back and are ignored. A node's own
 * answer to its own add of a shared filter is its mark: published on
 * <node>-share after the group's queue SUB, it comes back once nats-server
 * has that SUB (one connection's lines are handled in order).
 *
 * Receiving: one struct peer per node heard from (PEERS_MAX), with its
 * filters in a hash set and, summed over peers, in one trie whose node
 * payload is the number of (peer, filter) pairs ending there (a shared
 * subscription counts under its inner filter). A numbering gap, a new run
 * or a beat ahead of what arrived marks the peer incomplete and asks it
 * for a snapshot ("sync"), resent every interval until one arrives.
 *
 * Cost on the publish path: one trie walk over the topic's levels, no
 * allocation. Per new local filter: one announcement out and one answer
 * from each other node.
 */
#include "interest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "err.h"
#include "hash.h"
#include "log.h"
#include "share.h"
#include "topic.h"
#include "trie.h"
#include "wire.h"

/* Nodes kept apart; past it the node sends everything (crowded_until). */
#define PEERS_MAX 64
/* Intervals a node stays known without a word (a beat each interval). */
#define STALE_INTERVALS 3
/* Bytes of filters per snapshot part (one filter more may end it). */
#define SNAP_PART_BYTES 65536

struct fentry {
	struct fentry *next;
	uint32_t hash;
	uint32_t count;
	uint16_t len;
	char f[];
};

/* A set of filters, each with a count; buckets doubled as it grows. */
struct fset {
	struct fentry **b;
	size_t nb, n;
};

struct peer {
	char *name;
	char run[24];
	uint64_t seq;      /* its last announcement applied */
	uint64_t acked;    /* our newest add it answered */
	uint64_t heard_at; /* loop s */
	uint64_t sync_at;  /* loop s of our last sync to it; 0: none pending */
	uint32_t every;    /* its interest_interval (from its beats); 0: ours */
	bool complete;     /* its whole set is here (a snapshot since the last gap) */
	bool building;     /* a snapshot's parts are arriving */
	struct fset filters;
};

struct remote_interest {
	struct broker *b;
	natsConnection *nc;     /* announcements out */
	natsConnection *snc;    /* announcements in, answers out */
	natsSubscription *sub, *ack_sub;
	char *node;
	char run[24];
	char *subject, *ack_subject;
	struct fset local;      /* this node's filters, counted per local subscription */
	uint64_t seq;           /* our last numbered announcement */
	uint64_t last_add;      /* the number of our last "add": the sub_gate's ticket */
	uint64_t mark_wanted;   /* the newest add whose queue SUB's mark is awaited */
	uint64_t marked;        /* the newest mark come back */
	struct peer *peers[PEERS_MAX];
	size_t npeers;
	size_t incomplete;      /* peers whose set is not whole: everything is sent */
	struct trie remote;     /* every peer's filters; u.count counts them */
	uint64_t settle_until;  /* loop s; UINT64_MAX while NATS is away */
	uint64_t crowded_until; /* loop s: more nodes than PEERS_MAX spoke */
	bool connected;
	bool gate_waiting;      /* a SUBACK is held: wake the loop each tick */
	bool timeout_logged;
	bool selective;         /* as last logged: skipping what no one wants */
	uint32_t ticks;
	struct loop_timer timer;
};

/* ---- filter sets ---- */

static struct fentry **fset_slot(const struct fset *s, const char *f, size_t len, uint32_t h)
{
	struct fentry **pp = &s->b[h & (s->nb - 1)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->f, f, len) == 0)
			break;
	return pp;
}

static int fset_grow(struct fset *s)
{
	size_t nb = s->nb ? s->nb * 2 : 16;
	struct fentry **b = wisp_calloc(nb, sizeof *b);
	if (!b)
		return WISP_ENOMEM;
	for (size_t i = 0; i < s->nb; i++)
		while (s->b[i]) {
			struct fentry *e = s->b[i];
			s->b[i] = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	wisp_free(s->b);
	s->b = b;
	s->nb = nb;
	return 0;
}

/* Counts f once more; *fresh when it was not there. NULL: out of memory. */
static struct fentry *fset_add(struct fset *s, const char *f, size_t len, bool *fresh)
{
	*fresh = false;
	if (len > UINT16_MAX || (s->n >= s->nb && fset_grow(s) != 0 && !s->nb))
		return NULL;
	uint32_t h = hash_bytes(0, f, len);
	struct fentry **pp = fset_slot(s, f, len, h);
	if (*pp) {
		(*pp)->count++;
		return *pp;
	}
	struct fentry *e = wisp_malloc(sizeof *e + len);
	if (!e)
		return NULL;
	*e = (struct fentry){.hash = h, .count = 1, .len = (uint16_t)len};
	memcpy(e->f, f, len);
	*pp = e;
	s->n++;
	*fresh = true;
	return e;
}

/* Counts f once less; true when that was its last count (it is gone). */
static bool fset_remove(struct fset *s, const char *f, size_t len)
{
	if (!s->nb)
		return false;
	struct fentry **pp = fset_slot(s, f, len, hash_bytes(0, f, len));
	struct fentry *e = *pp;
	if (!e || --e->count > 0)
		return false;
	*pp = e->next;
	s->n--;
	wisp_free(e);
	return true;
}

/* ---- the trie of other nodes' filters ---- */

static bool remote_in_use(const struct trie_node *n) { return n->u.count != 0; }

int interest_trie_init(struct trie *t) { return trie_init(t, remote_in_use, NULL) == 0 ? 0 : WISP_ENOMEM; }

/* The filter a message is matched with: a shared subscription's inner one. */
static bool matched_part(const char *f, size_t len, const char **inner, size_t *ilen)
{
	size_t at = 0;
	enum share_parse sp = share_parse(f, len, &at);
	if (sp == SHARE_MALFORMED)
		return false;
	*inner = f + (sp == SHARE_OK ? at : 0);
	*ilen = len - (sp == SHARE_OK ? at : 0);
	return topic_filter_valid(*inner, *ilen);
}

int interest_trie_count(struct trie *t, const char *f, size_t len, bool add)
{
	const char *inner;
	size_t ilen;
	if (!matched_part(f, len, &inner, &ilen))
		return 0; /* matches nothing */
	if (add) {
		struct trie_node *n = trie_insert(t, inner, ilen, true);
		if (!n)
			return WISP_ENOMEM;
		n->u.count++;
		return 0;
	}
	struct trie_node *n = trie_find(t, inner, ilen, true);
	if (n && n->u.count && --n->u.count == 0)
		trie_prune(t, n);
	return 0;
}

static void trie_count(struct remote_interest *ri, const char *f, size_t len, bool add)
{
	if (interest_trie_count(&ri->remote, f, len, add) != 0) /* cannot be matched: send everything a while */
		ri->crowded_until = loop_now_s(ri->b->loop) + 60;
}

static bool any_match(const struct trie *t, const struct trie_node *n, const struct topic_level *lv, size_t i,
		      size_t nl)
{
	for (;;) {
		const struct trie_wild *w = n->wild;
		if (w && w->hash) /* "#" here matches the rest, none too [MQTT-4.7.1-2] */
			return true;
		if (i == nl)
			return n->u.count != 0;
		if (w && w->plus && any_match(t, w->plus, lv, i + 1, nl))
			return true;
		n = trie_child(t, n, lv[i].ptr, lv[i].len);
		if (!n)
			return false;
		i++;
	}
}

bool interest_trie_match(const struct trie *t, const struct topic_level *levels, size_t nlevels)
{
	if (nlevels == 0)
		return false;
	/* [MQTT-4.7.2-1] the root by the topic's first byte, as tree.c */
	return any_match(t, trie_root_for(t, levels[0].ptr, levels[0].len), levels, 0, nlevels);
}

bool remote_interest_wanted(const struct remote_interest *ri, const struct topic_level *levels, size_t nlevels)
{
	if (!ri || ri->incomplete || nlevels == 0)
		return true;
	uint64_t now = loop_now_s(ri->b->loop);
	if (now < ri->settle_until || now < ri->crowded_until)
		return true;
	return interest_trie_match(&ri->remote, levels, nlevels);
}

/* ---- peers ---- */

static void peer_set_complete(struct remote_interest *ri, struct peer *p, bool complete)
{
	if (p->complete == complete)
		return;
	p->complete = complete;
	if (complete)
		ri->incomplete--;
	else
		ri->incomplete++;
}

static void peer_clear(struct remote_interest *ri, struct peer *p)
{
	for (size_t i = 0; i < p->filters.nb; i++)
		while (p->filters.b[i]) {
			struct fentry *e = p->filters.b[i];
			p->filters.b[i] = e->next;
			trie_count(ri, e->f, e->len, false);
			wisp_free(e);
		}
	p->filters.n = 0;
}

static void peer_forget(struct remote_interest *ri, size_t i)
{
	struct peer *p = ri->peers[i];
	peer_clear(ri, p);
	peer_set_complete(ri, p, true);
	ri->peers[i] = ri->peers[--ri->npeers];
	wisp_free(p->filters.b);
	wisp_free(p->name);
	wisp_free(p);
}

static struct peer *peer_find(struct remote_interest *ri, const char *name, size_t *at)
{
	for (size_t i = 0; i < ri->npeers; i++)
		if (strcmp(ri->peers[i]->name, name) == 0) {
			if (at)
				*at = i;
			return ri->peers[i];
		}
	return NULL;
}

/* The peer `name`, made (incomplete) when new; NULL when there is no room. */
static struct peer *peer_get(struct remote_interest *ri, const char *name)
{
	struct peer *p = peer_find(ri, name, NULL);
	if (p)
		return p;
	uint64_t now = loop_now_s(ri->b->loop);
	if (ri->npeers == PEERS_MAX || !(p = wisp_calloc(1, sizeof *p)) || !(p->name = wisp_strndup(name, strlen(name)))) {
		wisp_free(p);
		if (now >= ri->crowded_until)
			log_msg(LOG_WARNING, "cluster", "more than %u other nodes (or out of memory): node '%s' sends "
				"every message to NATS", PEERS_MAX, ri->node);
		ri->crowded_until = now + (uint64_t)ri->b->cfg->cluster.interest_interval * STALE_INTERVALS;
		return NULL;
	}
	/* A node heard of only now joined after our adds so far (it asks for
	 * our snapshot), or we are settling ourselves: none of them waits. */
	p->acked = ri->last_add;
	p->complete = true;
	peer_set_complete(ri, p, false);
	ri->peers[ri->npeers++] = p;
	return p;
}

/* ---- sending ---- */

/* One announcement of `kind`; numbered ones get the next Wisp-ISeq. */
static int announce(struct remote_interest *ri, const char *kind, bool numbered, const char *payload, size_t len,
		    const char *reply, const char *hkey, const char *hval, const char *hkey2, const char *hval2)
{
	char seq[24];
	snprintf(seq, sizeof seq, "%" PRIu64, numbered ? ++ri->seq : ri->seq);
	natsMsg *nm = NULL;
	natsStatus st = natsMsg_Create(&nm, ri->subject, reply, payload, (int)len);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Node", ri->node);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Run", ri->run);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-ISeq", seq);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Interest", kind);
	if (st == NATS_OK && hkey)
		st = natsMsgHeader_Set(nm, hkey, hval);
	if (st == NATS_OK && hkey2)
		st = natsMsgHeader_Set(nm, hkey2, hval2);
	/* Not while a connection is lost: cnats's reconnect attempts hold its
	 * lock (up to its 2 s connect timeout against a frozen server), and
	 * the hello and snapshot sent once it is back say it all again. */
	if (st == NATS_OK && ri->connected)
		st = natsConnection_PublishMsg(ri->nc, nm);
	natsMsg_Destroy(nm);
	return st == NATS_OK ? 0 : WISP_EIO;
}

/* Our whole set, in parts of about SNAP_PART_BYTES. */
static void send_snapshot(struct remote_interest *ri)
{
	char *buf = wisp_malloc(SNAP_PART_BYTES + UINT16_MAX + 1);
	if (!buf) {
		log_msg(LOG_WARNING, "cluster", "out of memory: no interest snapshot sent (the others send everything "
			"to this node until one goes)");
		return;
	}
	size_t used = 0, left = ri->local.n;
	unsigned part = 0;
	char num[16];
	for (size_t i = 0; i < ri->local.nb; i++)
		for (const struct fentry *e = ri->local.b[i]; e; e = e->next) {
			memcpy(buf + used, e->f, e->len);
			used += e->len;
			buf[used++] = '\0';
			if (--left > 0 && used < SNAP_PART_BYTES)
				continue;
			snprintf(num, sizeof num, "%u", part++);
			announce(ri, "snap", true, buf, used, NULL, "Wisp-Part", num, left ? NULL : "Wisp-Last", "1");
			used = 0;
		}
	if (part == 0) /* no filters: one empty, last part */
		announce(ri, "snap", true, buf, 0, NULL, "Wisp-Part", "0", "Wisp-Last", "1");
	wisp_free(buf);
}

static void ask_sync(struct remote_interest *ri, struct peer *p)
{
	p->sync_at = loop_now_s(ri->b->loop);
	if (p->sync_at == 0)
		p->sync_at = 1;
	announce(ri, "sync", false, NULL, 0, NULL, "Wisp-To", p->name, NULL, NULL);
}

/* $SYS topics never cross nodes (cluster.c): their filters are not news. */
static bool stays_local(const char *filter, size_t len)
{
	return len >= 4 && memcmp(filter, "$SYS", 4) == 0 && (len == 4 || filter[4] == '/');
}

void remote_interest_local_add(struct remote_interest *ri, const char *filter, size_t len)
{
	if (!ri || stays_local(filter, len))
		return;
	bool fresh = false;
	if (!fset_add(&ri->local, filter, len, &fresh))
		log_msg(LOG_WARNING, "cluster", "out of memory: filter '%.*s' announced, never withdrawn",
			(int)(len > 80 ? 80 : len), filter);
	else if (!fresh)
		return;
	if (announce(ri, "add", true, filter, len, ri->ack_subject, NULL, NULL, NULL, NULL) == 0)
		ri->last_add = ri->seq;
}

void remote_interest_local_remove(struct remote_interest *ri, const char *filter, size_t len)
{
	if (ri && !stays_local(filter, len) && fset_remove(&ri->local, filter, len))
		announce(ri, "del", true, filter, len, NULL, NULL, NULL, NULL, NULL);
}

/* An answer (or, to our own ack subject, a mark) on snc. */
static natsStatus send_answer(struct remote_interest *ri, const char *subject, const char *seq)
{
	natsMsg *ack = NULL;
	natsStatus st = natsMsg_Create(&ack, subject, NULL, NULL, 0);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(ack, "Wisp-Node", ri->node);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(ack, "Wisp-ISeq", seq);
	if (st == NATS_OK)
		st = natsConnection_PublishMsg(ri->snc, ack);
	natsMsg_Destroy(ack);
	return st;
}

uint64_t remote_interest_last_add(const struct remote_interest *ri) { return ri ? ri->last_add : 0; }

void remote_interest_await_mark(struct remote_interest *ri, uint64_t mark)
{
	if (ri && mark > ri->mark_wanted)
		ri->mark_wanted = mark;
}

void remote_interest_mark(struct remote_interest *ri, uint64_t mark)
{
	if (!ri || !mark)
		return;
	char seq[24];
	snprintf(seq, sizeof seq, "%" PRIu64, mark);
	/* Failed (cnats buffers while NATS is away): nothing comes back, and the
	 * SUBACK goes at the timeout, counted and logged once there. */
	send_answer(ri, ri->ack_subject, seq);
}

/* ---- receiving ---- */

static void answer(struct remote_interest *ri, natsMsg *nm, const char *seq)
{
	const char *reply = natsMsg_GetReply(nm);
	if (reply)
		send_answer(ri, reply, seq);
}

static void on_answer(struct remote_interest *ri, natsMsg *nm)
{
	const char *node = wire_header(nm, "Wisp-Node"), *seq = wire_header(nm, "Wisp-ISeq");
	if (!node || !seq)
		return;
	if (strcmp(node, ri->node) == 0) { /* a mark: the queue SUBs before it are in place */
		uint64_t n = strtoull(seq, NULL, 10);
		if (n > ri->marked && n <= ri->seq)
			ri->marked = n;
		if (ri->gate_waiting)
			loop_request_turn(ri->b->loop);
		return;
	}
	struct peer *p = peer_get(ri, node);
	if (!p)
		return;
	p->heard_at = loop_now_s(ri->b->loop);
	uint64_t n = strtoull(seq, NULL, 10);
	if (n > p->acked && n <= ri->seq)
		p->acked = n;
	if (ri->gate_waiting)
		loop_request_turn(ri->b->loop);
}

static void apply_snapshot_part(struct remote_interest *ri, struct peer *p, natsMsg *nm)
{
	const char *part = wire_header(nm, "Wisp-Part");
	if (part && strcmp(part, "0") == 0) {
		peer_clear(ri, p);
		p->building = true;
	}
	if (!p->building)
		return; /* its first part was lost: the gap asked for another */
	const char *d = natsMsg_GetData(nm);
	int dlen = natsMsg_GetDataLength(nm);
	size_t at = 0, len = dlen > 0 ? (size_t)dlen : 0;
	while (at < len) {
		const char *end = memchr(d + at, '\0', len - at);
		size_t flen = end ? (size_t)(end - (d + at)) : len - at;
		bool fresh = false;
		if (flen && fset_add(&p->filters, d + at, flen, &fresh) && fresh)
			trie_count(ri, d + at, flen, true);
		at += flen + 1;
	}
	if (wire_header(nm, "Wisp-Last")) {
		p->building = false;
		p->sync_at = 0;
		peer_set_complete(ri, p, true);
	}
}

bool remote_interest_message(struct remote_interest *ri, natsMsg *nm)
{
	if (!ri)
		return false;
	const char *subj = natsMsg_GetSubject(nm);
	if (strcmp(subj, ri->ack_subject) == 0) {
		on_answer(ri, nm);
		return true;
	}
	if (strcmp(subj, ri->subject) != 0)
		return false;
	const char *node = wire_header(nm, "Wisp-Node"), *run = wire_header(nm, "Wisp-Run");
	const char *kind = wire_header(nm, "Wisp-Interest"), *seq_s = wire_header(nm, "Wisp-ISeq");
	if (!node || !run || !kind || !seq_s || strcmp(node, ri->node) == 0)
		return true;
	uint64_t now = loop_now_s(ri->b->loop), seq = strtoull(seq_s, NULL, 10);
	size_t at = 0;
	if (strcmp(kind, "bye") == 0) {
		if (peer_find(ri, node, &at))
			peer_forget(ri, at);
		return true;
	}
	struct peer *p = peer_get(ri, node);
	if (!p) {
		if (strcmp(kind, "add") == 0)
			answer(ri, nm, seq_s); /* we send it everything meanwhile */
		return true;
	}
	p->heard_at = now;
	bool gap = false;
	if (strcmp(p->run, run) != 0) { /* new to us, or restarted: its set starts over */
		peer_clear(ri, p);
		peer_set_complete(ri, p, false);
		p->building = false;
		snprintf(p->run, sizeof p->run, "%s", run);
		p->seq = 0;
		/* Its new run settles (sends everything) and gets our snapshot: our
		 * adds its old run never answered need no answer. */
		p->acked = ri->last_add;
		gap = true;
	}
	if (strcmp(kind, "beat") == 0) {
		gap = gap || seq != p->seq;
		const char *every = wire_header(nm, "Wisp-Every");
		unsigned long e = every ? strtoul(every, NULL, 10) : 0;
		p->every = e && e <= 3600 ? (uint32_t)e : 0;
	} else if (strcmp(kind, "hello") == 0) {
		/* It (re)joined: its snapshot follows; everyone sends theirs. */
		peer_clear(ri, p);
		peer_set_complete(ri, p, false);
		p->seq = seq;
		gap = false;
		send_snapshot(ri);
	} else if (strcmp(kind, "sync") != 0) {
		if (seq != p->seq + 1)
			gap = true;
		if (seq > p->seq)
			p->seq = seq;
	}
	if (strcmp(kind, "add") == 0) {
		bool fresh = false;
		size_t len = (size_t)(natsMsg_GetDataLength(nm) > 0 ? natsMsg_GetDataLength(nm) : 0);
		if (len && fset_add(&p->filters, natsMsg_GetData(nm), len, &fresh) && fresh)
			trie_count(ri, natsMsg_GetData(nm), len, true);
		answer(ri, nm, seq_s);
	} else if (strcmp(kind, "del") == 0) {
		size_t len = (size_t)(natsMsg_GetDataLength(nm) > 0 ? natsMsg_GetDataLength(nm) : 0);
		if (len && fset_remove(&p->filters, natsMsg_GetData(nm), len))
			trie_count(ri, natsMsg_GetData(nm), len, false);
	} else if (strcmp(kind, "snap") == 0) {
		if (gap && p->building)
			p->building = false; /* a part was lost: wait for a whole one */
		const char *part = wire_header(nm, "Wisp-Part");
		if (part && strcmp(part, "0") == 0)
			gap = false; /* a fresh snapshot starts here */
		apply_snapshot_part(ri, p, nm);
	} else if (strcmp(kind, "sync") == 0) {
		const char *to = wire_header(nm, "Wisp-To");
		if (to && strcmp(to, ri->node) == 0)
			send_snapshot(ri);
	}
	if (gap) {
		peer_set_complete(ri, p, false);
		if (!p->sync_at)
			ask_sync(ri, p);
	}
	return true;
}

/* ---- connection, timer, gate ---- */

void remote_interest_check_connections(struct remote_interest *ri)
{
	if (!ri)
		return;
	bool up = ri->b->stats.cluster.connected && natsConnection_Status(ri->snc) == NATS_CONN_STATUS_CONNECTED;
	if (ri->connected == up)
		return;
	ri->connected = up;
	if (!up) {
		ri->settle_until = UINT64_MAX; /* cnats buffers what is published meanwhile */
		return;
	}
	/* Whatever the others said meanwhile may be lost: send everything until
	 * every node had time for a beat, and ask them all for their sets. */
	ri->settle_until = loop_now_s(ri->b->loop) + ri->b->cfg->cluster.interest_interval + 1;
	announce(ri, "hello", true, NULL, 0, NULL, NULL, NULL, NULL, NULL);
	send_snapshot(ri);
}

static void on_tick(struct loop *l, struct loop_timer *t)
{
	struct remote_interest *ri = container_of(t, struct remote_interest, timer);
	uint32_t interval = ri->b->cfg->cluster.interest_interval;
	uint64_t now = loop_now_s(l);
	remote_interest_check_connections(ri);
	if (ri->gate_waiting) {
		ri->gate_waiting = false; /* set again if still held */
		loop_request_turn(l);
	}
	if (++ri->ticks >= interval) {
		ri->ticks = 0;
		char ours[16];
		snprintf(ours, sizeof ours, "%u", interval);
		if (ri->connected)
			announce(ri, "beat", false, NULL, 0, NULL, "Wisp-Every", ours, NULL, NULL);
		for (size_t i = ri->npeers; i-- > 0;) {
			struct peer *p = ri->peers[i];
			/* By its own beat interval: nodes need not share theirs. */
			uint32_t every = p->every > interval ? p->every : interval;
			if (p->heard_at + (uint64_t)every * STALE_INTERVALS < now) {
				log_msg(LOG_NOTICE, "cluster", "node '%s' unheard for %u s: its interest is forgotten",
					p->name, every * STALE_INTERVALS);
				peer_forget(ri, i);
			} else if (p->sync_at && p->sync_at + interval <= now && ri->connected) {
				ask_sync(ri, p);
			}
		}
	}
	bool selective = ri->connected && !ri->incomplete && now >= ri->settle_until && now >= ri->crowded_until;
	if (selective != ri->selective)
		log_msg(LOG_NOTICE, "cluster", selective ? "interest of %zu other nodes known: sending NATS only what "
			"they want" : "interest of %zu other nodes not all known: sending NATS every message", ri->npeers);
	ri->selective = selective;
	loop_timer_start(l, t, 1, on_tick);
}

static uint64_t gate_ticket(void *ctx) { return ((struct remote_interest *)ctx)->last_add; }

static bool gate_settled(void *ctx, uint64_t ticket, uint64_t since_ms)
{
	struct remote_interest *ri = ctx;
	if (!ri->connected)
		return true; /* nothing reaches the others meanwhile; they ask again on return */
	struct broker *b = ri->b;
	if (loop_now_s(b->loop) < ri->settle_until) {
		/* Just (re)connected: a node not heard from yet may exist, whose
		 * answer we could not wait for. Every live node beats within the
		 * settling interval. */
		ri->gate_waiting = true;
		return false;
	}
	/* Marks come back in order: the newest one at or before the ticket
	 * (or a later one) covers every queue SUB the ticket's adds made. */
	bool all = ri->marked >= (ri->mark_wanted < ticket ? ri->mark_wanted : ticket);
	for (size_t i = 0; i < ri->npeers && all; i++)
		all = ri->peers[i]->acked >= ticket;
	if (all) {
		ri->timeout_logged = false;
		return true;
	}
	uint64_t from = since_ms > ri->settle_until * 1000 ? since_ms : ri->settle_until * 1000;
	if (loop_now_ms(b->loop) - from >= (uint64_t)b->cfg->cluster.interest_ack_timeout * 1000) {
		b->stats.cluster.interest_timeouts++;
		if (!ri->timeout_logged)
			log_msg(LOG_WARNING, "cluster", "a node did not answer a filter's announcement (or a "
				"shared subscription's mark did not come back) within "
				"cluster.interest_ack_timeout: SUBACK sent anyway (counted in "
				"$SYS/broker/cluster/interest/ack_timeouts)");
		ri->timeout_logged = true;
		return true;
	}
	ri->gate_waiting = true;
	return false;
}

/* ---- start and stop ---- */

int remote_interest_start(struct remote_interest **out, struct broker *b, natsConnection *nc, natsConnection *snc,
			  const char *node, const char *run, const char *prefix, natsMsgHandler on_msg,
			  void *on_msg_closure)
{
	*out = NULL;
	if (!b->cfg->cluster.interest)
		return 0;
	struct remote_interest *ri = wisp_calloc(1, sizeof *ri);
	if (!ri)
		return WISP_ENOMEM;
	list_init(&ri->timer.link);
	ri->b = b;
	ri->nc = nc;
	ri->snc = snc;
	ri->settle_until = UINT64_MAX;
	snprintf(ri->run, sizeof ri->run, "%s", run);
	size_t n = strlen("$WISP..interest.ack.") + strlen(prefix) + strlen(run) + 1;
	ri->node = wisp_strndup(node, strlen(node));
	ri->subject = wisp_malloc(n);
	ri->ack_subject = wisp_malloc(n);
	if (!ri->node || !ri->subject || !ri->ack_subject || interest_trie_init(&ri->remote) != 0) {
		remote_interest_free(ri);
		return WISP_ENOMEM;
	}
	snprintf(ri->subject, n, "$WISP.%s%sinterest", prefix, *prefix ? "." : "");
	snprintf(ri->ack_subject, n, "%s.ack.%s", ri->subject, run);
	if (natsConnection_Subscribe(&ri->sub, snc, ri->subject, on_msg, on_msg_closure) != NATS_OK ||
	    natsConnection_Subscribe(&ri->ack_sub, snc, ri->ack_subject, on_msg, on_msg_closure) != NATS_OK) {
		remote_interest_free(ri);
		return WISP_EIO;
	}
	loop_timer_start(b->loop, &ri->timer, 1, on_tick);
	b->sub_gate.ticket = gate_ticket;
	b->sub_gate.settled = gate_settled;
	b->sub_gate.ctx = ri;
	*out = ri;
	return 0;
}

void remote_interest_stop(struct remote_interest *ri)
{
	if (!ri)
		return;
	struct broker *b = ri->b;
	if (b->sub_gate.ctx == ri)
		memset(&b->sub_gate, 0, sizeof b->sub_gate);
	if (loop_timer_armed(&ri->timer))
		loop_timer_stop(b->loop, &ri->timer);
	if (ri->connected) {
		announce(ri, "bye", true, NULL, 0, NULL, NULL, NULL, NULL, NULL);
		natsConnection_FlushTimeout(ri->nc, 500);
	}
	natsSubscription *subs[2] = {ri->sub, ri->ack_sub};
	for (int i = 0; i < 2; i++)
		if (subs[i]) {
			natsSubscription_Unsubscribe(subs[i]);
			natsSubscription_Destroy(subs[i]);
		}
	ri->sub = ri->ack_sub = NULL;
}

void remote_interest_free(struct remote_interest *ri)
{
	if (!ri)
		return;
	while (ri->npeers)
		peer_forget(ri, ri->npeers - 1);
	if (ri->remote.root)
		trie_destroy(&ri->remote, NULL, NULL);
	for (size_t i = 0; i < ri->local.nb; i++)
		while (ri->local.b[i]) {
			struct fentry *e = ri->local.b[i];
			ri->local.b[i] = e->next;
			wisp_free(e);
		}
	wisp_free(ri->local.b);
	wisp_free(ri->node);
	wisp_free(ri->subject);
	wisp_free(ri->ack_subject);
	wisp_free(ri);
}
