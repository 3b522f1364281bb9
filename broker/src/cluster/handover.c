/*
 * Sessions handed between nodes (handover.h).
 *
 * Subjects, under "$WISP.<prefix>.ho." ("$WISP.ho." without a prefix),
 * each node's own as the 16 hex digits of its name's digest (any node name
 * is then a valid subject token): a node subscribes "<its>.>" and gets
 *   <its>.req     a request (reply subject: the asker's "<asker>.r<token>")
 *   <its>.done    "done" for a session it handed over (payload: the client id):
 *                 with Wisp-Cut (the asker's routed stream set) and a
 *                 reply subject, asks for the tail; with Wisp-Tail, the
 *                 tail is stored there too; with neither (no stream),
 *                 both at once
 *   <its>.r<tok>  the answer to its request <tok>: chunks or a status;
 *                 NATS's own "no responders" status (503) when the asked
 *                 node has no subscription (it is gone)
 *   <its>.dir     digests of the persistent sessions another node holds
 *                 (with Wisp-Times: each with its claim time)
 * and every node subscribes "dir", where a node that starts asks all the
 * others which sessions they hold (the directory, see on_dir_request).
 * Headers: Wisp-Kind (req, chunk, none, refused, too-big, done, dir, tail), Wisp-Node,
 * Wisp-User (req: the authenticated user; absent: anonymous), Wisp-Seq
 * (chunk, tail: 0, 1, ...) and Wisp-Last ("1" on the last chunk); on the
 * last chunk, with a stream, the holder's cut: Wisp-Cut (its routed set,
 * durable_routed_encode), Wisp-Run and Wisp-Cut-Seq (the number of its own
 * last message on NATS). A tail is MSG_PUT records only, answered on the
 * done's reply subject (the asker's fetch token).
 *
 * The records are store frames (store/record.h) with salt 0; a chunk is any
 * slice of their concatenation, reassembled in order at the asker.
 */
#include "handover.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "delivery.h"
#include "durable.h"
#include "err.h"
#include "hash.h"
#include "input.h"
#include "list.h"
#include "link.h"
#include "log.h"
#include "persist.h"
#include "record.h"
#include "sender.h"
#include "seq_window.h"
#include "session_v5.h"
#include "topic.h"
#include "tree.h"
#include "wire.h"

#define ID_SEED_LO 0x243f6a88u
#define ID_SEED_HI 0x85a308d3u
/* "$WISP." prefix "." "ho." 16 hex "." "r" 20 digits */
#define SUBJECT_MAX 256

struct dir_slot {
	uint64_t id;   /* digest of the client id; 0: empty */
	uint64_t node; /* digest of the node that claimed it last */
	uint64_t at;   /* that claim's time (presence.h); 0: not known */
};

enum fetch_state {
	FETCH_WAITING = 0,   /* the request is out; chunks may be arriving */
	FETCH_FELL_BACK = 1, /* failed: the CONNECT goes on with a fresh session */
	FETCH_REFUSED = 2,   /* the holder says it is another user's */
	FETCH_CONFIRMING = 3, /* imported: "done" waits for this node's store (and the filters' announcement) */
	FETCH_TAILING = 4,    /* "done" with the cut sent: the holder's tail awaited */
	FETCH_TAIL_CONFIRMING = 5, /* the tail delivered: the final "done" waits for this node's store */
	FETCH_CUT = 6,        /* all done: only the holder's cut still keeps stream messages off the session */
	FETCH_HOLDING = 7,    /* no fetch: a restored session's CONNECT waits for the start-up answers */
	FETCH_RELEASED = 8    /* the hold is over: the CONNECT decides again, once, without holding */
};

/* A session this node is fetching (or has fetched and not yet confirmed). */
struct fetch {
	struct list_node link;
	struct handover *h;
	struct conn *c;          /* the waiting CONNECT's; NULL once gone or resumed */
	uint64_t token;
	uint64_t node;           /* the holder */
	uint64_t started_us;     /* CLOCK_MONOTONIC: the handover's time in the log is measured, not the loop's cached clock */
	uint64_t store_seq;      /* CONFIRMING: the store holds the session from this seq */
	struct loop_timer timer; /* the handover timeout; CONFIRMING: the next look at the store */
	uint8_t state;           /* enum fetch_state */
	uint32_t next_seq;
	size_t len, cap;
	uint8_t *buf;            /* the records so far */
	char holder[64];         /* the holder's name once it answered, for logs; "" before */
	char *cut;               /* the holder's routed stream set at the export (R_A); NULL: no cut */
	char run[24];            /* the holder's run id */
	uint64_t cut_wseq;       /* the number of the holder's own last message on NATS at the export (E_A) */
	uint64_t cut_until_s;    /* loop s: the cut is kept at least until then */
	bool cut_active;         /* on handover.cuts, counted in handover.ncuts */
	struct list_node cut_link;
	struct seq_set cut_set;  /* cut, parsed once (points into it); no sequence when it did not parse */
	uint64_t cut_max;        /* the highest sequence in cut_set */
	uint64_t gate_ticket, gate_since; /* the sub_gate's, for the imported filters */
	natsMsg *request;        /* made while the connection was down: sent once it is back (handover_link_up) */
	struct fetch *by_token_next, *by_conn_next; /* chains of handover.by_token, by_conn */
	size_t id_len;
	char id[];
};

/* A holder of active cuts: its own messages numbered up to wseq in its
 * run may be in one. */
struct cut_holder {
	char node[64];
	char run[24];
	uint64_t wseq;
};

/* A message routed into a leaving session's copy after its export. */
struct tail_rec {
	struct msg *m;  /* a reference */
	uint64_t seq;   /* its stream sequence; 0: not known (yet) */
	uint64_t wseq;  /* own: its number on the stream; 0: it went to none */
	bool own;       /* published on this node */
};

enum leaving_state {
	LEAVING_SENT = 0,        /* exported: what reaches the copy is recorded */
	LEAVING_CATCHING_UP = 1, /* the asker's cut came: waiting to have routed all of it */
	LEAVING_TAIL_SENT = 2    /* the tail went: the final "done" awaited */
};

/* A session this node handed over: kept until the new node says "done". */
struct leaving {
	struct list_node link;
	struct handover *h;
	struct loop_timer timer;
	uint8_t state;           /* enum leaving_state */
	struct tail_rec *recs;
	size_t nrecs, cap, bytes;
	size_t overflow;         /* records not kept: over cluster.handover_max_bytes */
	char *asker_set;         /* CATCHING_UP: the asker's routed set (R_B) */
	/* The session's ordinary filters in handover.leaving_filters, so that
	 * what reaches its copy is found by one match per message, not by
	 * matching every leaving session's filters. */
	struct tree_sub **watch;
	size_t nwatch;
	bool watch_failed;       /* out of memory: its filters are matched one by one (copy_wants) */
	uint64_t matched_gen;    /* record_all's pass that last recorded here */
	/* The records of its own messages sent to the stream (wseq > 0), as
	 * indexes into recs in the order of wseq, which is that of their
	 * publishing: handover_own_routed finds one by binary search. */
	uint32_t *own;
	size_t nown, own_cap;
	char *reply;             /* CATCHING_UP: where the tail goes */
	char asker[64];
	uint64_t catch_since_ms;
	size_t id_len;
	char id[];
};

struct handover {
	struct broker *b;
	natsConnection *nc;
	const struct nats_link *link; /* nc up (link.h): no request, answer or tail while it is not */
	struct sender *sender;        /* subscribes and publishes on nc off the loop thread (sender.h) */
	struct sender_sub *sub;
	uint64_t self;
	char *node;
	char *base;     /* "$WISP.<prefix>.ho." */
	size_t base_len;
	struct dir_slot *dir;
	size_t dir_len;
	struct sender_sub *dir_sub; /* "<base>dir": another node (re)started and asks who holds what */
	sender_msg_fn on_msg;       /* the subscriptions', kept for handover_rebind */
	void *on_msg_closure;
	struct list_node fetches;
	/* The fetches by token and by their CONNECT's connection (while it
	 * has one): chained tables of index_cap chains, one per fetch or more
	 * (memory allowing), so that an answer, a CONNECT read again and a
	 * close find theirs at once, whatever the number of fetches
	 * (thousands in a reconnect storm). */
	struct fetch **by_token, **by_conn;
	size_t index_cap, nfetches;
	struct list_node leavings;
	struct tree *leaving_filters; /* the leaving sessions' ordinary filters; subscriber: struct leaving */
	size_t nwatch_failed;         /* leavings whose filters are not there (out of memory) */
	uint64_t match_gen;
	struct loop_timer catch_up_timer; /* catch_up_all, in the turn after stream messages were routed */
	uint64_t next_token;
	/* A restored session another node also holds (on_dir_answer). */
	void (*held_elsewhere)(void *ctx, struct session *s, const char *node, uint64_t at);
	void *held_ctx;
	struct durable *durable; /* NULL: no stream, no cut */
	const char *run;         /* this run's id (cluster.c's) */
	const uint64_t *wseq;    /* the number of this node's last message on NATS */
	/* The fetches whose cut is active, and what lets most stream messages
	 * pass handover_except without looking at each: the highest sequence
	 * in any of their cuts, and for each holder (node and run) the highest
	 * number of its own messages a cut covers. Both only grow while a cut
	 * is active, and start again when none is. */
	struct list_node cuts;
	size_t ncuts;
	struct session **except; /* handover_except's answer */
	size_t except_cap;
	uint64_t cuts_seq_max;
	struct cut_holder *cut_holders;
	size_t ncut_holders, cut_holders_cap;
	bool cut_holders_lost;   /* one could not be kept (memory): every numbered message is looked at */
	/* Start-up: until the other nodes' answers to the "dir" request are
	 * in, a CONNECT of a restored session waits (hold_connect). */
	bool starting;
	uint64_t answers_due_s;  /* loop s: the answers are in by then; 0: the claim connection is not up yet */
	bool ask_pending;        /* the start-up request is not out yet (debug builds' hold only) */
	bool dir_sub_late;       /* the requests' subscription is not made yet (debug builds' hold only) */
	uint64_t ask_again_s;    /* loop s: the start-up request goes out a second time then; 0: not due */
	struct loop_timer startup_timer; /* looks every second */
};

void handover_set_stream(struct handover *h, struct durable *d, const char *run, const uint64_t *wseq)
{
	if (!h)
		return;
	h->durable = d;
	h->run = run;
	h->wseq = wseq;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t digest(const char *s, size_t len)
{
	uint64_t d = (uint64_t)hash_bytes(ID_SEED_HI, s, len) << 32 | hash_bytes(ID_SEED_LO, s, len);
	return d ? d : 1; /* 0 marks an empty slot */
}

/* Every publish of this file, through the sender thread (sender.h), which
 * takes *nm (NULL then): none while the connection is down (link.h). A
 * request, answer or tail not sent is one not answered: the asking node
 * falls back at its timeout, as when the other node is gone. A CONNECT's
 * own request waits for the connection instead (handover_link_up). Not
 * bounded by the sender: the fetches are bounded by the connections and
 * handover_timeout, and an export by the session's own queue bounds. */
static natsStatus publish_msg(struct handover *h, natsMsg **nm)
{
	if (!nats_link_up(h->link))
		return NATS_CONNECTION_DISCONNECTED;
	if (!sender_publish_control(h->sender, h->nc, *nm, 0, false))
		return NATS_NO_MEMORY;
	*nm = NULL;
	return NATS_OK;
}

/* "<base><node hex><suffix>" into out (SUBJECT_MAX). */
static void subject_of(const struct handover *h, uint64_t node, const char *suffix, char *out)
{
	snprintf(out, SUBJECT_MAX, "%s%016" PRIx64 "%s", h->base, node, suffix);
}

/* ---- sending ---- */

static natsStatus publish(struct handover *h, const char *subject, const char *reply, const char *kind,
			  const void *data, size_t len, natsMsg **keep)
{
	natsMsg *nm = NULL;
	natsStatus st = natsMsg_Create(&nm, subject, reply, data, (int)len);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Kind", kind);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Node", h->node);
	if (st == NATS_OK && keep) {
		*keep = nm; /* the caller adds headers and publishes */
		return st;
	}
	if (st == NATS_OK)
		st = publish_msg(h, &nm);
	natsMsg_Destroy(nm);
	if (st != NATS_OK)
		h->b->stats.cluster.send_failed++;
	return st;
}

/* This node's routed stream set (durable_routed_encode), the caller's to
 * free; NULL without a stream or out of memory (then no cut). */
static char *routed_set(const struct handover *h)
{
	for (size_t cap = 256; h->durable && cap <= HANDOVER_CHUNK * 4; cap *= 4) {
		char *set = wisp_malloc(cap);
		if (!set || durable_routed_encode(h->durable, set, cap))
			return set;
		wisp_free(set);
	}
	return NULL;
}

/* ---- the directory ---- */

void handover_claimed(struct handover *h, const char *id, size_t len, const char *node, uint64_t at)
{
	if (!h)
		return;
	uint64_t d = digest(id, len);
	uint64_t nd = digest(node, strlen(node));
	h->dir[d % h->dir_len] = (struct dir_slot){d, nd, at};
	if (nd != h->self)
		log_msg(LOG_DEBUG, "cluster", "client %.*s: last claimed by node '%s'", (int)len, id, node);
}

/* One message of an answer to a node's "dir" request. */
static void dir_answer(struct handover *h, const char *reply, const uint8_t *chunk, size_t len, bool times)
{
	natsMsg *nm = NULL;
	if (publish(h, reply, NULL, "dir", chunk, len, times ? &nm : NULL) != NATS_OK || !nm)
		return;
	if (natsMsgHeader_Set(nm, "Wisp-Times", "1") != NATS_OK || publish_msg(h, &nm) != NATS_OK)
		h->b->stats.cluster.send_failed++;
	natsMsg_Destroy(nm);
}

/*
 * A node that (re)started heard none of the claims made before: it asks
 * every node ("<base>dir", at start, buffered by cnats until NATS is
 * there, and again 1 to 2 s after it is up: ask_at_start) and each
 * answers with the 64-bit digests of the persistent sessions it holds (8
 * bytes each, little-endian, HANDOVER_CHUNK bytes a message). They fill empty slots only (or, with times, older ones): a
 * claim heard since is newer. A request with Wisp-Times asks for each
 * session's claim time too (16 bytes an entry: digest, time), so that the
 * restarted node can tell whether its own copy of one is older (a
 * claim it missed while it was down); an older node's request has none
 * and gets the 8-byte form it reads.
 */
static void on_dir_request(struct handover *h, natsMsg *nm)
{
	const char *reply = natsMsg_GetReply(nm);
	const char *asker = wire_header(nm, "Wisp-Node");
	if (!reply || !asker || strcmp(asker, h->node) == 0)
		return; /* this node's own request, echoed */
	bool times = wire_header(nm, "Wisp-Times") != NULL;
	size_t entry = times ? 16 : 8;
	const struct session_table *t = &h->b->sessions;
	uint8_t *chunk = wisp_malloc(HANDOVER_CHUNK);
	if (!chunk)
		return;
	size_t len = 0, ids = 0;
	for (size_t i = 0; i < t->nbuckets; i++)
		for (const struct session *s = t->buckets[i]; s; s = s->hash_next) {
			if (s->clean)
				continue;
			uint64_t v[2] = {digest(s->client_id, s->id_len), sess_claim_ns(s)};
			for (size_t k = 0; k < entry; k++)
				chunk[len++] = (uint8_t)(v[k / 8] >> (8 * (k % 8)));
			ids++;
			if (len + entry > HANDOVER_CHUNK) {
				dir_answer(h, reply, chunk, len, times);
				len = 0;
			}
		}
	if (len)
		dir_answer(h, reply, chunk, len, times);
	wisp_free(chunk);
	log_msg(LOG_INFO, "cluster", "node '%s' started: told it of the %zu persistent sessions here", asker, ids);
}

static int by_digest(const void *a, const void *b)
{
	uint64_t x = ((const struct dir_slot *)a)->id, y = ((const struct dir_slot *)b)->id;
	return x < y ? -1 : x > y;
}

/* A restored session whose id another node holds too, and that node's
 * claim time of it. */
struct held {
	struct session *s;
	uint64_t at;
};

/*
 * The persistent sessions held here that the answering node holds too
 * (each one's claim time there): held_elsewhere (presence.c) decides
 * which copy is the stale one. The matches are collected first, as the
 * callback may end a session.
 */
static void match_held(struct handover *h, const char *node, struct dir_slot *e, size_t n)
{
	if (!h->held_elsewhere || !n)
		return;
	qsort(e, n, sizeof *e, by_digest);
	const struct session_table *t = &h->b->sessions;
	struct held *found = NULL;
	size_t nfound = 0, cap = 0;
	bool oom = false;
	for (size_t i = 0; i < t->nbuckets && !oom; i++)
		for (struct session *s = t->buckets[i]; s && !oom; s = s->hash_next) {
			if (s->clean)
				continue;
			struct dir_slot key = {.id = digest(s->client_id, s->id_len)};
			const struct dir_slot *hit = bsearch(&key, e, n, sizeof *e, by_digest);
			if (!hit)
				continue;
			if (nfound == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				struct held *bigger = wisp_realloc(found, ncap * sizeof *found);
				oom = !bigger;
				if (oom)
					break; /* the rest stay as they are (logged below) */
				found = bigger;
				cap = ncap;
			}
			found[nfound++] = (struct held){s, hit->at};
		}
	if (oom)
		log_msg(LOG_WARNING, "cluster", "node '%s': out of memory: only %zu of the sessions held here too are "
			"compared", node, nfound);
	/* The callback ends at most its own session: the others stay valid. */
	for (size_t i = 0; i < nfound; i++)
		h->held_elsewhere(h->held_ctx, found[i].s, node, found[i].at);
	wisp_free(found);
}

static void release_holds(struct handover *h, bool all);

static void on_dir_answer(struct handover *h, natsMsg *nm)
{
	const char *node = wire_header(nm, "Wisp-Node");
	int len = natsMsg_GetDataLength(nm);
	size_t entry = wire_header(nm, "Wisp-Times") ? 16 : 8;
	if (!node || len <= 0 || (size_t)len % entry)
		return;
	uint64_t nd = digest(node, strlen(node));
	const uint8_t *p = (const uint8_t *)natsMsg_GetData(nm);
	size_t n = (size_t)len / entry, learnt = 0;
	struct dir_slot *e = entry == 16 ? wisp_malloc(n * sizeof *e) : NULL;
	for (size_t i = 0; i < n; i++) {
		uint64_t v[2] = {0, 0};
		for (size_t k = 0; k < entry; k++)
			v[k / 8] |= (uint64_t)p[i * entry + k] << (8 * (k % 8));
		struct dir_slot *slot = &h->dir[v[0] % h->dir_len];
		if (v[0] && (!slot->id || (slot->id == v[0] && slot->at < v[1]))) {
			learnt += !slot->id;
			*slot = (struct dir_slot){v[0], nd, v[1]};
		}
		if (e)
			e[i] = (struct dir_slot){v[0], nd, v[1]};
	}
	log_msg(LOG_INFO, "cluster", "node '%s' holds %zu persistent sessions (%zu new to this node's directory)", node,
		n, learnt);
	if (entry == 16 && !e)
		log_msg(LOG_WARNING, "cluster", "node '%s': out of memory: the sessions held here too are not compared",
			node);
	match_held(h, node, e, e ? n : 0);
	wisp_free(e);
	release_holds(h, false); /* a copy here ended: its CONNECT fetches the later one now */
}

uint64_t handover_last_claim_ns(const struct handover *h, const char *id, size_t len)
{
	if (!h)
		return 0;
	uint64_t d = digest(id, len);
	const struct dir_slot *slot = &h->dir[d % h->dir_len];
	return slot->id == d ? slot->at : 0;
}

bool handover_claimed_here(const struct handover *h, const char *id, size_t len)
{
	if (!h)
		return false;
	uint64_t d = digest(id, len);
	const struct dir_slot *slot = &h->dir[d % h->dir_len];
	return slot->id == d && slot->node == h->self;
}

/* The node that claimed `id` last, if another than this one; 0 if none. */
static uint64_t holder_of(const struct handover *h, const char *id, size_t len)
{
	uint64_t d = digest(id, len);
	const struct dir_slot *slot = &h->dir[d % h->dir_len];
	return slot->id == d && slot->node != h->self ? slot->node : 0;
}

bool handover_claimed_elsewhere(const struct handover *h, const char *id, size_t len)
{
	return h && holder_of(h, id, len) != 0;
}

/* ---- the asking node ---- */

/* From here on, stream messages the export brought stay off the session
 * (handover_except). */
static void cut_start(struct fetch *f)
{
	struct handover *h = f->h;
	f->cut_active = true;
	list_push_back(&h->cuts, &f->cut_link);
	h->ncuts++;
	f->cut_max = seq_set_parse(f->cut, &f->cut_set) ? seq_set_max(&f->cut_set) : 0;
	if (f->cut_max > h->cuts_seq_max)
		h->cuts_seq_max = f->cut_max;
	for (size_t i = 0; i < h->ncut_holders; i++) {
		struct cut_holder *ch = &h->cut_holders[i];
		if (strcmp(ch->node, f->holder) == 0 && strcmp(ch->run, f->run) == 0) {
			if (f->cut_wseq > ch->wseq)
				ch->wseq = f->cut_wseq;
			return;
		}
	}
	if (h->ncut_holders == h->cut_holders_cap) {
		size_t cap = h->cut_holders_cap ? h->cut_holders_cap * 2 : 4;
		struct cut_holder *v = wisp_realloc(h->cut_holders, cap * sizeof *v);
		if (!v) {
			h->cut_holders_lost = true;
			return;
		}
		h->cut_holders = v;
		h->cut_holders_cap = cap;
	}
	struct cut_holder *ch = &h->cut_holders[h->ncut_holders++];
	snprintf(ch->node, sizeof ch->node, "%s", f->holder);
	snprintf(ch->run, sizeof ch->run, "%s", f->run);
	ch->wseq = f->cut_wseq;
}

static void cut_end(struct fetch *f)
{
	struct handover *h = f->h;
	list_remove(&f->cut_link);
	f->cut_active = false;
	if (--h->ncuts == 0) {
		h->cuts_seq_max = 0;
		h->ncut_holders = 0;
		h->cut_holders_lost = false;
	}
}

static size_t token_chain(const struct handover *h, uint64_t token) { return (size_t)token & (h->index_cap - 1); }

static size_t conn_chain(const struct handover *h, const struct conn *c)
{
	return (size_t)(((uint64_t)(uintptr_t)c * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & (h->index_cap - 1);
}

/* Appends f to its chain (at the end: the first fetch of a connection is
 * found first, as in the list). */
static void chain_append(struct fetch **pp, struct fetch *f, bool by_conn)
{
	while (*pp)
		pp = by_conn ? &(*pp)->by_conn_next : &(*pp)->by_token_next;
	*pp = f;
}

static void chain_remove(struct fetch **pp, struct fetch *f, bool by_conn)
{
	while (*pp && *pp != f)
		pp = by_conn ? &(*pp)->by_conn_next : &(*pp)->by_token_next;
	if (*pp)
		*pp = by_conn ? f->by_conn_next : f->by_token_next;
	if (by_conn)
		f->by_conn_next = NULL;
	else
		f->by_token_next = NULL;
}

/* Makes both tables (16 chains, at the handover's start) or doubles them,
 * moving the fetches from the old ones (not from the list: release_holds
 * keeps some on a list of its own meanwhile). Out of memory, the tables
 * stay as they are (longer chains): -1 only when there were none. */
static int index_grow(struct handover *h)
{
	size_t cap = h->index_cap ? h->index_cap * 2 : 16;
	struct fetch **bt = wisp_calloc(cap, sizeof *bt), **bc = wisp_calloc(cap, sizeof *bc);
	if (!bt || !bc) {
		wisp_free(bt);
		wisp_free(bc);
		return h->index_cap ? 0 : -1;
	}
	struct fetch **ot = h->by_token, **oc = h->by_conn;
	size_t ocap = h->index_cap;
	h->by_token = bt;
	h->by_conn = bc;
	h->index_cap = cap;
	for (size_t i = 0; i < ocap; i++) {
		for (struct fetch *f = ot[i], *next; f; f = next) {
			next = f->by_token_next;
			f->by_token_next = NULL;
			chain_append(&bt[token_chain(h, f->token)], f, false);
		}
		for (struct fetch *f = oc[i], *next; f; f = next) {
			next = f->by_conn_next;
			f->by_conn_next = NULL;
			chain_append(&bc[conn_chain(h, f->c)], f, true);
		}
	}
	wisp_free(ot);
	wisp_free(oc);
	return 0;
}

/* f joins the fetches (its list link is the caller's). */
static void index_add(struct handover *h, struct fetch *f)
{
	if (h->nfetches + 1 > h->index_cap)
		index_grow(h);
	h->nfetches++;
	if (f->token) /* a held CONNECT's has none: never answered */
		chain_append(&h->by_token[token_chain(h, f->token)], f, false);
	if (f->c)
		chain_append(&h->by_conn[conn_chain(h, f->c)], f, true);
}

static void index_del(struct handover *h, struct fetch *f)
{
	if (f->token)
		chain_remove(&h->by_token[token_chain(h, f->token)], f, false);
	if (f->c)
		chain_remove(&h->by_conn[conn_chain(h, f->c)], f, true);
	h->nfetches--;
}

static void fetch_set_conn(struct fetch *f, struct conn *c)
{
	struct handover *h = f->h;
	if (f->c)
		chain_remove(&h->by_conn[conn_chain(h, f->c)], f, true);
	f->c = c;
	if (c)
		chain_append(&h->by_conn[conn_chain(h, c)], f, true);
}

static void fetch_free(struct fetch *f)
{
	struct broker *b = f->h->b;
	loop_timer_stop(b->loop, &f->timer);
	list_remove(&f->link);
	index_del(f->h, f);
	if (f->cut_active)
		cut_end(f);
	natsMsg_Destroy(f->request);
	wisp_free(f->cut);
	wisp_free(f->buf);
	wisp_free(f);
}

/* The CONNECT goes on: with the session now here, with a fresh one, or
 * refused. Its fetch stays (but for an import) until the CONNECT has seen
 * it (handover_session_missing). */
static void fetch_resume(struct fetch *f)
{
	struct conn *c = f->c;
	wisp_free(f->buf);
	f->buf = NULL;
	f->len = f->cap = 0;
	if (f->state == FETCH_CONFIRMING) {
		fetch_set_conn(f, NULL); /* the session is here: the CONNECT will not ask again */
		if (c)
			conn_input_resume(c);
		return;
	}
	if (!c) {
		fetch_free(f); /* nobody waits for it */
		return;
	}
	conn_input_resume(c); /* may free f (handover_session_missing): not touched after */
}

static void fall_back(struct fetch *f, const char *why)
{
	struct broker *b = f->h->b;
	loop_timer_stop(b->loop, &f->timer);
	f->state = FETCH_FELL_BACK;
	b->stats.cluster.handover_failed++;
	char digest_hex[24];
	snprintf(digest_hex, sizeof digest_hex, "%016" PRIx64, f->node);
	log_limited("cluster handover failed", LOG_WARNING, "cluster",
		    "client %.*s: its session at node '%s' could not be fetched (%s): it starts a new one here "
		    "(Session Present 0)", (int)f->id_len, f->id, f->holder[0] ? f->holder : digest_hex, why);
	fetch_resume(f);
}

static void on_fetch_timer(struct loop *l, struct loop_timer *t);

/* "done" to the holder, with extra headers (name, value pairs, NULL-ended)
 * and a reply subject; false when NATS refused it. */
static bool send_done(struct fetch *f, const char *const *hdrs, const char *reply)
{
	struct handover *h = f->h;
	char subject[SUBJECT_MAX];
	subject_of(h, f->node, ".done", subject);
	natsMsg *nm = NULL;
	natsStatus st = publish(h, subject, reply, "done", f->id, f->id_len, &nm);
	for (size_t i = 0; st == NATS_OK && hdrs && hdrs[i]; i += 2)
		st = natsMsgHeader_Set(nm, hdrs[i], hdrs[i + 1]);
	if (st == NATS_OK)
		st = publish_msg(h, &nm);
	natsMsg_Destroy(nm);
	if (st != NATS_OK)
		h->b->stats.cluster.send_failed++;
	return st == NATS_OK;
}

/* Whether the filters the import announced are known to every node
 * (interest.h's gate, as a SUBACK waits): from then on the holder's own
 * clients' messages for them go to the stream, not only to its copy. */
static bool filters_known(struct fetch *f)
{
	struct broker *b = f->h->b;
	if (!f->gate_ticket || !b->sub_gate.settled)
		return true;
	return b->sub_gate.settled(b->sub_gate.ctx, f->gate_ticket, f->gate_since);
}

/* Tells the old node to let go, once this node's store holds the session
 * (written; with fsync "always", synced): a kill -9 of this node before
 * that leaves the old node's copy in place. With a cut, "done" carries
 * this node's routed set and asks for the tail first. */
static void confirm(struct fetch *f)
{
	struct handover *h = f->h;
	struct broker *b = h->b;
	if (persist_safe_seq(b) < f->store_seq || !filters_known(f)) {
		loop_timer_start(b->loop, &f->timer, 1, on_fetch_timer);
		return;
	}
	char *set = f->cut ? routed_set(h) : NULL;
	if (!set) {
		/* No cut (no stream here or there): the old node lets go at once. */
		send_done(f, NULL, NULL);
		if (f->cut_active) {
			f->state = FETCH_CUT;
			loop_timer_start(b->loop, &f->timer, 1, on_fetch_timer);
		} else {
			fetch_free(f);
		}
		return;
	}
	char reply[SUBJECT_MAX], suffix[32];
	snprintf(suffix, sizeof suffix, ".r%" PRIu64, f->token);
	subject_of(h, h->self, suffix, reply);
	const char *hdrs[] = {"Wisp-Cut", set, NULL};
	send_done(f, hdrs, reply);
	wisp_free(set);
	f->state = FETCH_TAILING;
	f->next_seq = 0;
	/* The holder waits up to cluster.handover_timeout for its consumer
	 * before it sends what it has: longer here, so that such a tail is
	 * still taken. */
	loop_timer_start(b->loop, &f->timer, (uint64_t)b->cfg->cluster.handover_timeout + 2u, on_fetch_timer);
}

/* The tail is in this node's store: the old node may end its copy. */
static void confirm_tail(struct fetch *f)
{
	struct broker *b = f->h->b;
	if (persist_safe_seq(b) < f->store_seq) {
		loop_timer_start(b->loop, &f->timer, 1, on_fetch_timer);
		return;
	}
	const char *hdrs[] = {"Wisp-Tail", "1", NULL};
	send_done(f, hdrs, NULL);
	f->state = FETCH_CUT;
	loop_timer_start(b->loop, &f->timer, 1, on_fetch_timer);
}

/* The cut ends once this node routed all that the holder had at the
 * export (nothing of it can come again) and cluster.handover_timeout
 * passed (the holder's own messages numbered up to the export that were
 * still on their way to the stream). */
static void cut_check(struct fetch *f)
{
	struct handover *h = f->h;
	struct broker *b = h->b;
	if (loop_now_s(b->loop) >= f->cut_until_s && (!h->durable || durable_routed_all(h->durable, f->cut))) {
		fetch_free(f);
		return;
	}
	loop_timer_start(b->loop, &f->timer, 1, on_fetch_timer);
}

static void on_fetch_timer(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct fetch *f = container_of(t, struct fetch, timer);
	switch (f->state) {
	case FETCH_WAITING:
		fall_back(f, "no answer within cluster.handover_timeout");
		break;
	case FETCH_CONFIRMING:
		confirm(f);
		break;
	case FETCH_TAILING:
		log_limited("cluster handover tail", LOG_WARNING, "cluster",
			    "client %.*s: node '%s' sent no tail within cluster.handover_timeout + 2 s: messages routed "
			    "there after it sent the session may be missing", (int)f->id_len, f->id, f->holder);
		f->state = FETCH_CUT;
		cut_check(f);
		break;
	case FETCH_TAIL_CONFIRMING:
		confirm_tail(f);
		break;
	case FETCH_HOLDING:
		log_limited("cluster start-up hold", LOG_WARNING, "cluster",
			    "client %.*s: the other nodes' answers at start did not come within cluster.handover_timeout: "
			    "it resumes the session restored here", (int)f->id_len, f->id);
		f->state = FETCH_RELEASED;
		fetch_resume(f);
		break;
	default:
		cut_check(f);
		break;
	}
}

struct import_ctx {
	struct broker *b;
	struct persist_import x;
	size_t msgs;
};

/* Rebuilds the session from the gathered records. 0, or why not. */
static const char *import(struct fetch *f, struct import_ctx *ic)
{
	struct broker *b = f->h->b;
	size_t off = 0;
	int rc = 0;
	while (rc == 0 && off < f->len) {
		size_t total;
		if (store_frame_check(f->buf + off, f->len - off, 0, &total) != STORE_FRAME_OK)
			return "a damaged record";
		const uint8_t *fr = f->buf + off;
		struct store_rec r;
		if (store_rec_decode(fr[4], fr[5], fr + STORE_FRAME_HDR, total - STORE_FRAME_HDR, &r) != 0)
			return "an unknown record";
		rc = persist_import_rec(b, &ic->x, &r);
		if (r.type == STORE_REC_QUEUE_ADD || r.type == STORE_REC_FLIGHT_SET)
			ic->msgs++;
		off += total;
	}
	if (rc == WISP_EEXIST)
		return "a session of this id was created here meanwhile";
	if (rc != 0)
		return rc == WISP_ENOMEM ? "out of memory" : "records out of order";
	if (!ic->x.s)
		return "no session record";
	return NULL;
}

static void fetch_complete(struct fetch *f)
{
	struct broker *b = f->h->b;
	if (!f->c) {
		/* The client hung up meanwhile: the old node keeps its copy
		 * (no "done"), as if nothing had been asked. */
		fetch_free(f);
		return;
	}
	struct import_ctx ic = {.b = b};
	const char *why = import(f, &ic);
	if (why) {
		persist_import_end(b, &ic.x, false);
		fall_back(f, why);
		return;
	}
	struct session *s = ic.x.s;
	uint32_t subs = (uint32_t)sess_sub_count(s);
	persist_import_end(b, &ic.x, true);
	/* Written now rather than at the end of the turn: the CONNACK and the
	 * claim that follows must not outrun the records. */
	persist_flush(b);
	f->store_seq = persist_seq(b);
	f->state = FETCH_CONFIRMING;
	loop_timer_stop(b->loop, &f->timer);
	if (b->sub_gate.ticket) {
		f->gate_ticket = b->sub_gate.ticket(b->sub_gate.ctx);
		f->gate_since = loop_now_ms(b->loop);
	}
	if (f->cut && f->h->durable) {
		cut_start(f);
		f->cut_until_s = loop_now_s(b->loop) + b->cfg->cluster.handover_timeout;
	}
	b->stats.cluster.sessions_in++;
	log_msg(LOG_NOTICE, "cluster",
		"client %.*s: session fetched from node '%s' in %" PRIu64 " ms (%u subscriptions, %zu "
		"messages, %zu bytes%s)", (int)f->id_len, f->id, f->holder, (now_us() - f->started_us + 500) / 1000,
		(unsigned)subs, ic.msgs, f->len, ic.x.subs_skipped ? ", some subscriptions over this node's limits skipped" : "");
	fetch_resume(f); /* the CONNECT now finds the session: Session Present 1 */
	confirm(f);
}

#ifndef NDEBUG
static void import_when_released(struct fetch *f, bool first);

static void on_import_hold(struct loop *l, struct loop_timer *t)
{
	(void)l;
	import_when_released(container_of(t, struct fetch, timer), false);
}

/* Debug builds: WISP_DEBUG_HOLD_HANDOVER_IMPORT=<path> holds a fetched
 * session's import until <path> exists (looked at every second, in place
 * of the fetch's timeout), so that a test can publish while the holder has
 * cut its copy and this node has no subscription of it yet (e2e 29). */
static void import_when_released(struct fetch *f, bool first)
{
	const char *path = getenv("WISP_DEBUG_HOLD_HANDOVER_IMPORT");
	if (f->c && path && access(path, F_OK) != 0) {
		if (first)
			log_msg(LOG_NOTICE, "cluster", "client %.*s: import held (WISP_DEBUG_HOLD_HANDOVER_IMPORT)",
				(int)f->id_len, f->id);
		loop_timer_start(f->h->b->loop, &f->timer, 1, on_import_hold);
		return;
	}
	fetch_complete(f);
}
#endif

static struct fetch *fetch_by_token(struct handover *h, uint64_t token)
{
	struct fetch *f = token ? h->by_token[token_chain(h, token)] : NULL;
	while (f && f->token != token)
		f = f->by_token_next;
	return f;
}

/* The first fetch whose CONNECT is c's, or NULL. */
static struct fetch *fetch_by_conn(struct handover *h, const struct conn *c)
{
	struct fetch *f = h->by_conn[conn_chain(h, c)];
	while (f && f->c != c)
		f = f->by_conn_next;
	return f;
}

/* Appends a chunk (or a tail's part) to f->buf: 1 when it was the last,
 * 0 when more follow, or why it cannot go on. */
static int append_chunk(struct fetch *f, natsMsg *nm, const char **why)
{
	const char *seq = wire_header(nm, "Wisp-Seq");
	const char *last = wire_header(nm, "Wisp-Last");
	int len = natsMsg_GetDataLength(nm);
	if (!seq || strtoul(seq, NULL, 10) != f->next_seq || len < 0) {
		*why = "a chunk is missing";
		return -1;
	}
	f->next_seq++;
	size_t add = (size_t)len;
	if (f->len + add > f->h->b->cfg->cluster.handover_max_bytes) {
		*why = "over cluster.handover_max_bytes";
		return -1;
	}
	if (f->len + add > f->cap) {
		size_t cap = f->cap ? f->cap : HANDOVER_CHUNK;
		while (cap < f->len + add)
			cap *= 2;
		uint8_t *nb = wisp_realloc(f->buf, cap);
		if (!nb) {
			*why = "out of memory";
			return -1;
		}
		f->buf = nb;
		f->cap = cap;
	}
	if (add)
		memcpy(f->buf + f->len, natsMsg_GetData(nm), add);
	f->len += add;
	return last && strcmp(last, "1") == 0;
}

/* The holder's tail: the messages that reached its copy after the export
 * and that this node passed before it had the session. Delivered to the
 * session as the tree would, after what this node routed to it since the
 * import (so within the window a publisher's order may not hold). */
static void apply_tail(struct fetch *f)
{
	struct broker *b = f->h->b;
	struct session *s = sess_find(&b->sessions, f->id, f->id_len);
	size_t off = 0, msgs = 0;
	while (off < f->len) {
		size_t total;
		if (store_frame_check(f->buf + off, f->len - off, 0, &total) != STORE_FRAME_OK)
			break;
		const uint8_t *fr = f->buf + off;
		struct store_rec r;
		off += total;
		if (store_rec_decode(fr[4], fr[5], fr + STORE_FRAME_HDR, total - STORE_FRAME_HDR, &r) != 0)
			continue;
		struct msg *m = persist_msg_import(b, &r);
		if (!m)
			continue;
		if (s)
			msgs += route_to_session(b, s, m);
		msg_unref(m);
	}
	wisp_free(f->buf);
	f->buf = NULL;
	f->len = f->cap = 0;
	persist_flush(b);
	f->store_seq = persist_seq(b);
	f->state = FETCH_TAIL_CONFIRMING;
	loop_timer_stop(b->loop, &f->timer);
	log_msg(msgs ? LOG_NOTICE : LOG_INFO, "cluster", "client %.*s: %zu messages of the handover window from node '%s'",
		(int)f->id_len, f->id, msgs, f->holder);
	confirm_tail(f);
}

static void on_tail(struct fetch *f, natsMsg *nm)
{
	const char *kind = wire_header(nm, "Wisp-Kind");
	const char *why = NULL;
	int rc = kind && strcmp(kind, "tail") == 0 ? append_chunk(f, nm, &why) : -1;
	if (rc == 0)
		return;
	if (rc < 0) {
		log_limited("cluster handover tail", LOG_WARNING, "cluster",
			    "client %.*s: the tail from node '%s' is unusable (%s): messages routed there after it "
			    "sent the session may be missing", (int)f->id_len, f->id, f->holder, why ? why : "no tail");
		wisp_free(f->buf);
		f->buf = NULL;
		f->len = f->cap = 0;
		f->state = FETCH_CUT;
		loop_timer_stop(f->h->b->loop, &f->timer);
		cut_check(f);
		return;
	}
	apply_tail(f);
}

static void on_answer(struct handover *h, natsMsg *nm, uint64_t token)
{
	struct fetch *f = fetch_by_token(h, token);
	if (f && f->state == FETCH_TAILING) {
		on_tail(f, nm);
		return;
	}
	if (!f || f->state != FETCH_WAITING)
		return; /* late: it fell back already */
	const char *kind = wire_header(nm, "Wisp-Kind");
	const char *holder = wire_header(nm, "Wisp-Node");
	if (holder && !f->holder[0])
		snprintf(f->holder, sizeof f->holder, "%s", holder);
	if (!kind) {
		/* NATS's no-responders status: nobody listens on the holder's subject. */
		fall_back(f, "the node is gone");
		return;
	}
	if (strcmp(kind, "none") == 0) {
		f->state = FETCH_FELL_BACK; /* nothing to move: a fresh session, as on one node */
		loop_timer_stop(h->b->loop, &f->timer);
		fetch_resume(f);
		return;
	}
	if (strcmp(kind, "refused") == 0) {
		f->state = FETCH_REFUSED;
		loop_timer_stop(h->b->loop, &f->timer);
		fetch_resume(f);
		return;
	}
	if (strcmp(kind, "chunk") != 0) {
		fall_back(f, strcmp(kind, "too-big") == 0 ? "over cluster.handover_max_bytes" : "an unknown answer");
		return;
	}
	const char *why = NULL;
	int rc = append_chunk(f, nm, &why);
	if (rc < 0) {
		fall_back(f, why);
		return;
	}
	if (rc == 0)
		return;
	const char *cut = wire_header(nm, "Wisp-Cut");
	const char *run = wire_header(nm, "Wisp-Run");
	const char *cut_seq = wire_header(nm, "Wisp-Cut-Seq");
	if (cut && run && cut_seq && !f->cut) {
		f->cut = wisp_strndup(cut, strlen(cut)); /* out of memory: no cut, as without a stream */
		snprintf(f->run, sizeof f->run, "%s", run);
		f->cut_wseq = strtoull(cut_seq, NULL, 10);
	}
#ifndef NDEBUG
	loop_timer_stop(f->h->b->loop, &f->timer);
	import_when_released(f, true);
#else
	fetch_complete(f);
#endif
}

/* ---- start-up: restored sessions wait for the other nodes' answers ---- */

/*
 * Whether a CONNECT of `id` (Clean Start 0) must wait for the start-up
 * answers: its session here was restored from the store with a claim time
 * (so an answer may show a later copy elsewhere, which on_dir_answer's
 * comparison ends here), and no connect of it here or claim of it heard
 * since. Resumed before the answers, the stale copy would claim the id
 * and so end the other node's later copy (the session the client built
 * there). A session without a time has nothing to compare: no wait.
 */
static bool must_hold(const struct handover *h, const char *id, size_t len)
{
	if (!h->starting)
		return false;
	const struct session *s = sess_find(&h->b->sessions, id, len);
	uint64_t d = digest(id, len);
	const struct dir_slot *slot = &h->dir[d % h->dir_len];
	return s && !s->clean && !s->conn && sess_claim_ns(s) && !(slot->id == d && slot->node == h->self);
}

/* The CONNECT waits (its input paused) until release_holds, or at most
 * cluster.handover_timeout (on_fetch_timer). 0: out of memory, it goes on. */
static int hold_connect(struct handover *h, struct conn *c, const char *id, size_t len)
{
	struct fetch *f = wisp_calloc(1, sizeof *f + len + 1);
	if (!f)
		return 0;
	f->h = h;
	f->c = c;
	f->state = FETCH_HOLDING;
	f->started_us = now_us();
	f->id_len = len;
	memcpy(f->id, id, len);
	list_push_back(&h->fetches, &f->link);
	index_add(h, f);
	loop_timer_start(h->b->loop, &f->timer, h->b->cfg->cluster.handover_timeout, on_fetch_timer);
	log_msg(LOG_INFO, "cluster", "client %.*s: its session restored here waits for the other nodes' answers at "
		"start", (int)len, id);
	return WISP_EAGAIN;
}

/* The held CONNECTs go on: all of them (`all`: the answers are in), or
 * those whose session here has ended (a later copy elsewhere: the CONNECT
 * now fetches it). Moved to a list of their own first: a CONNECT handled
 * again may close connections, whose holds then leave that list too. */
static void release_holds(struct handover *h, bool all)
{
	struct list_node ready, *n, *next;
	list_init(&ready);
	for (n = h->fetches.next; n != &h->fetches; n = next) {
		next = n->next;
		struct fetch *f = container_of(n, struct fetch, link);
		if (f->state != FETCH_HOLDING || (!all && sess_find(&h->b->sessions, f->id, f->id_len)))
			continue;
		list_remove(&f->link);
		list_push_back(&ready, &f->link);
	}
	while (!list_empty(&ready)) {
		struct fetch *f = container_of(ready.next, struct fetch, link);
		list_remove(&f->link);
		list_push_back(&h->fetches, &f->link);
		loop_timer_stop(h->b->loop, &f->timer);
		f->state = FETCH_RELEASED;
		log_msg(LOG_INFO, "cluster", "client %.*s: the start-up answers are in after %" PRIu64 " ms: it goes on",
			(int)f->id_len, f->id, (now_us() - f->started_us) / 1000);
		fetch_resume(f);
	}
}

/* Whether the store brought back a persistent session with the time of its
 * claim here: the start-up answers may show a later copy elsewhere. */
static bool restored_with_times(const struct broker *b)
{
	const struct session_table *t = &b->sessions;
	for (size_t i = 0; i < t->nbuckets; i++)
		for (const struct session *s = t->buckets[i]; s; s = s->hash_next)
			if (!s->clean && sess_claim_ns(s))
				return true;
	return false;
}

/* Who holds which session, from every node (on_dir_request), with their
 * claim times: at start (buffered by cnats until NATS is there), and a
 * second time 1 to 2 s after the claim connection is up (on_startup_timer).
 * Debug builds: WISP_DEBUG_HOLD_START_REQUEST=<path> sends it only once
 * <path> exists (looked at every second), so that a test's CONNECT comes
 * before the answers (e2e 40): NATS not there yet, in effect. */
static void ask_at_start(struct handover *h)
{
#ifndef NDEBUG
	const char *path = getenv("WISP_DEBUG_HOLD_START_REQUEST");
	if (path && access(path, F_OK) != 0) {
		log_msg(LOG_NOTICE, "cluster", "start-up request held (WISP_DEBUG_HOLD_START_REQUEST)");
		return;
	}
#endif
	h->ask_pending = false;
	char dir[SUBJECT_MAX], reply[SUBJECT_MAX];
	snprintf(dir, sizeof dir, "%sdir", h->base);
	subject_of(h, h->self, ".dir", reply);
	natsMsg *nm = NULL;
	if (publish(h, dir, reply, "dir", NULL, 0, &nm) == NATS_OK) {
		/* Whether the link is up or not (publish_msg would drop it): the
		 * sender's cnats call buffers it until NATS is there. Through the
		 * sender, in order after the SUB of the reply subject it made at
		 * start: published straight from here it could reach NATS before
		 * that SUB, and the answers went nowhere (e2e 29, one CI run). */
		if (natsMsgHeader_Set(nm, "Wisp-Times", "1") != NATS_OK ||
		    !sender_publish_control(h->sender, h->nc, nm, 0, false))
			h->b->stats.cluster.send_failed++;
		else
			nm = NULL;
		natsMsg_Destroy(nm);
	}
}

/* Debug builds: WISP_DEBUG_HOLD_DIR_SUB=<path> makes the subscription to
 * the other nodes' start-up requests only once <path> exists (looked at
 * every second), so that a test can have two nodes miss each other's
 * request (e2e 40), as nodes at two servers of a NATS cluster can: a
 * subscription reaches the other servers only after a while. */
static bool dir_sub_held(void)
{
#ifndef NDEBUG
	const char *path = getenv("WISP_DEBUG_HOLD_DIR_SUB");
	return path && access(path, F_OK) != 0;
#else
	return false;
#endif
}

static int subscribe_dir(struct handover *h);

static void on_startup_timer(struct loop *l, struct loop_timer *t)
{
	struct handover *h = container_of(t, struct handover, startup_timer);
	uint64_t now = loop_now_s(l);
#ifndef NDEBUG
	if (h->ask_pending)
		ask_at_start(h);
	if (h->dir_sub_late && !dir_sub_held() && subscribe_dir(h) == 0)
		log_msg(LOG_NOTICE, "cluster", "start-up requests subscribed (WISP_DEBUG_HOLD_DIR_SUB)");
#endif
	bool up = !h->ask_pending && !h->dir_sub_late && nats_link_up(h->link);
	if (!h->answers_due_s && up) {
		/* The request went out as the connection came up: every live node
		 * beats within the settling interval (interest.h), and answers
		 * the request at once; not longer than a handover may wait. Loop
		 * seconds are whole: the second request (below) goes 1 to 2 s
		 * from now, and its answers get a second more (unless
		 * cluster.handover_timeout is shorter). */
		uint32_t settle = h->b->cfg->cluster.interest_interval + 1;
		uint32_t bound = h->b->cfg->cluster.handover_timeout;
		settle = settle > 3 ? settle : 3;
		h->answers_due_s = now + (settle < bound ? settle : bound);
		h->ask_again_s = h->starting ? now + 2 : 0;
	}
	/* A node that started at the same moment may have missed the first
	 * request (its subscription not yet at our server), and this node its
	 * one: a second or two on, both subscriptions are in place. */
	if (h->ask_again_s && now >= h->ask_again_s) {
		h->ask_again_s = 0;
		log_msg(LOG_INFO, "cluster", "asking the other nodes again which sessions they hold (a node started "
			"with this one may have missed the first request)");
		ask_at_start(h);
	}
	if (h->starting && h->answers_due_s && now >= h->answers_due_s) {
		h->starting = false;
		release_holds(h, true);
	} else if (h->starting) {
		release_holds(h, false);
	}
	if (h->starting || h->ask_again_s || h->ask_pending || h->dir_sub_late)
		loop_timer_start(l, t, 1, on_startup_timer);
}

int handover_session_missing(struct handover *h, struct conn *c, const char *id, size_t len, const char *username)
{
	bool released = false;
	struct fetch *seen = fetch_by_conn(h, c);
	if (seen) {
		if (seen->state == FETCH_WAITING || seen->state == FETCH_HOLDING)
			return WISP_EAGAIN; /* read again before the answer: keep waiting */
		if (seen->state == FETCH_RELEASED) {
			fetch_free(seen); /* held at start: decided below, as any CONNECT */
			released = true;
		} else {
			bool refused = seen->state == FETCH_REFUSED;
			fetch_free(seen);
			return refused ? WISP_EEXIST : 0;
		}
	}
	if (sess_find(&h->b->sessions, id, len))
		return released || !must_hold(h, id, len) ? 0 : hold_connect(h, c, id, len);
	uint64_t node = holder_of(h, id, len);
	if (!node)
		return 0; /* no other node had it last: a fresh session at once */
	struct fetch *f = wisp_calloc(1, sizeof *f + len + 1);
	if (!f)
		return 0;
	f->h = h;
	f->c = c;
	f->token = ++h->next_token;
	f->node = node;
	f->started_us = now_us();
	f->id_len = len;
	memcpy(f->id, id, len);
	char subject[SUBJECT_MAX], reply[SUBJECT_MAX], suffix[32];
	subject_of(h, node, ".req", subject);
	snprintf(suffix, sizeof suffix, ".r%" PRIu64, f->token);
	subject_of(h, h->self, suffix, reply);
	natsMsg *nm = NULL;
	natsStatus st = publish(h, subject, reply, "req", id, len, &nm);
	if (st == NATS_OK && username)
		st = natsMsgHeader_Set(nm, "Wisp-User", username);
	bool later = st == NATS_OK && !nats_link_up(h->link);
	if (later) {
		/* Asked once the connection is back, within the same timeout: a
		 * NATS restart shorter than it still moves the session. */
		f->request = nm;
		nm = NULL;
	} else if (st == NATS_OK) {
		st = publish_msg(h, &nm);
	}
	natsMsg_Destroy(nm);
	if (st != NATS_OK) {
		h->b->stats.cluster.handover_failed++;
		log_limited("cluster handover failed", LOG_WARNING, "cluster",
			    "client %.*s: its session could not be asked for (NATS: %s): it starts a new one here",
			    (int)len, id, natsStatus_GetText(st));
		wisp_free(f);
		return 0;
	}
	list_push_back(&h->fetches, &f->link);
	index_add(h, f);
	loop_timer_start(h->b->loop, &f->timer, h->b->cfg->cluster.handover_timeout, on_fetch_timer);
	log_msg(LOG_INFO, "cluster", "client %.*s: asking node %016" PRIx64 " for its session%s", (int)len, id, node,
		later ? " once the NATS connection is back" : "");
	return WISP_EAGAIN;
}

void handover_link_up(struct handover *h)
{
	if (!h)
		return;
	struct list_node *n, *next;
	for (n = h->fetches.next; n != &h->fetches; n = next) {
		next = n->next;
		struct fetch *f = container_of(n, struct fetch, link);
		if (!f->request || !nats_link_up(h->link))
			continue;
		natsStatus st = publish_msg(h, &f->request);
		natsMsg_Destroy(f->request);
		f->request = NULL;
		if (st != NATS_OK)
			fall_back(f, natsStatus_GetText(st)); /* may free f */
	}
}

/* A stream message's origin: its node, and its Wisp-Seq's run and number. */
static bool origin_of(natsMsg *nm, const char **node, const char **run, size_t *run_len, uint64_t *n)
{
	*node = wire_header(nm, "Wisp-Node");
	const char *seq = wire_header(nm, "Wisp-Seq");
	const char *dash = seq ? strrchr(seq, '-') : NULL;
	if (!*node || !dash)
		return false;
	*run = seq;
	*run_len = (size_t)(dash - seq);
	*n = strtoull(dash + 1, NULL, 10);
	return true;
}

/* Whether a holder's cut may cover its own message numbered num in run. */
static bool holder_may_cover(const struct handover *h, const char *node, const char *run, size_t run_len,
			     uint64_t num)
{
	if (h->cut_holders_lost)
		return true;
	for (size_t i = 0; i < h->ncut_holders; i++) {
		const struct cut_holder *ch = &h->cut_holders[i];
		if (strcmp(ch->node, node) == 0 && strlen(ch->run) == run_len && memcmp(ch->run, run, run_len) == 0)
			return num <= ch->wseq;
	}
	return false;
}

size_t handover_except(struct handover *h, natsMsg *nm, uint64_t seq, struct session *const **out)
{
	if (!h || !h->ncuts)
		return 0;
	*out = h->except;
	const char *node = NULL, *run = NULL;
	size_t run_len = 0, n = 0;
	uint64_t num = 0;
	bool numbered = origin_of(nm, &node, &run, &run_len, &num);
	/* A message newer than every cut (the usual case once the cuts are
	 * made) is in none: no fetch is looked at, however many sessions
	 * arrive at once (a node being drained). */
	bool by_seq = seq && seq <= h->cuts_seq_max;
	bool by_num = numbered && holder_may_cover(h, node, run, run_len, num);
	if (!by_seq && !by_num)
		return 0;
	struct list_node *ln;
	for (ln = h->cuts.next; ln != &h->cuts; ln = ln->next) {
		struct fetch *f = container_of(ln, struct fetch, cut_link);
		/* In the export: routed there before it, or the holder's own
		 * message published before it. */
		bool exported = (by_seq && seq <= f->cut_max && seq_set_has(&f->cut_set, seq)) ||
				(by_num && strcmp(node, f->holder) == 0 && strlen(f->run) == run_len &&
				 memcmp(f->run, run, run_len) == 0 && num <= f->cut_wseq);
		struct session *s = exported ? sess_find(&h->b->sessions, f->id, f->id_len) : NULL;
		if (!s)
			continue;
		if (n == h->except_cap) {
			size_t cap = h->except_cap ? h->except_cap * 2 : 8;
			struct session **v = wisp_realloc(h->except, cap * sizeof *v);
			if (!v) {
				/* The ones left out get the message a second time. */
				log_limited("cluster handover except", LOG_WARNING, "cluster",
					    "out of memory: a message a moved session brought along may reach it twice");
				break;
			}
			h->except = v;
			h->except_cap = cap;
			*out = v;
		}
		h->except[n++] = s;
	}
	return n;
}

void handover_conn_gone(struct handover *h, struct conn *c)
{
	struct fetch *f;
	while ((f = fetch_by_conn(h, c)) != NULL) {
		fetch_set_conn(f, NULL);
		if (f->state != FETCH_WAITING)
			fetch_free(f); /* a waiting one is dropped when its answer comes, or at its timeout */
	}
}

/* ---- the holding node ---- */

static struct leaving *leaving_find(const struct handover *h, const char *id, size_t len)
{
	struct list_node *n;
	for (n = h->leavings.next; n != &h->leavings; n = n->next) {
		struct leaving *l = container_of(n, struct leaving, link);
		if (l->id_len == len && memcmp(l->id, id, len) == 0)
			return l;
	}
	return NULL;
}

bool handover_is_leaving(const struct handover *h, const char *id, size_t len)
{
	return h && leaving_find(h, id, len) != NULL;
}

static void leaving_drop_recs(struct leaving *l)
{
	for (size_t i = 0; i < l->nrecs; i++)
		msg_unref(l->recs[i].m);
	wisp_free(l->recs);
	l->recs = NULL;
	l->nrecs = l->cap = l->bytes = l->overflow = 0;
	wisp_free(l->own);
	l->own = NULL;
	l->nown = l->own_cap = 0;
}

static void leaving_unwatch(struct leaving *l)
{
	struct handover *h = l->h;
	for (size_t i = 0; i < l->nwatch; i++)
		tree_unsubscribe(h->leaving_filters, l->watch[i]);
	wisp_free(l->watch);
	l->watch = NULL;
	l->nwatch = 0;
	if (l->watch_failed)
		h->nwatch_failed--;
	l->watch_failed = false;
}

/* Puts the session's ordinary filters (a shared group picks its member
 * elsewhere) in leaving_filters, as they are at the export: its client is
 * at the other node, and while it is back here (s->conn) nothing is
 * recorded. (A filter it subscribed to while back here is not watched
 * should it leave again before this copy ends; the copy it would record
 * for has been claimed back by then.) */
static void leaving_watch(struct leaving *l)
{
	struct handover *h = l->h;
	leaving_unwatch(l);
	const struct session *s = sess_find(&h->b->sessions, l->id, l->id_len);
	if (!s)
		return;
	size_t n = 0;
	const struct list_node *ln;
	for (ln = s->subs.next; ln != &s->subs; ln = ln->next)
		n++;
	if (!h->leaving_filters)
		h->leaving_filters = tree_new();
	l->watch = n ? wisp_malloc(n * sizeof *l->watch) : NULL;
	bool failed = !h->leaving_filters || (n && !l->watch);
	for (ln = s->subs.next; !failed && ln != &s->subs; ln = ln->next) {
		const struct sess_sub *sub = container_of(ln, struct sess_sub, link);
		if (tree_sub_options(&sub->handle) & SESS_SUBOPT_SHARED)
			continue;
		struct tree_sub *ts = tree_subscribe(h->leaving_filters, sess_sub_filter(sub), sess_sub_filter_len(sub),
						     l, 0, 0);
		if (!ts)
			failed = true;
		else
			l->watch[l->nwatch++] = ts;
	}
	if (failed) {
		leaving_unwatch(l);
		l->watch_failed = true;
		h->nwatch_failed++;
	}
}

static void leaving_free(struct leaving *l)
{
	loop_timer_stop(l->h->b->loop, &l->timer);
	list_remove(&l->link);
	leaving_unwatch(l);
	leaving_drop_recs(l);
	wisp_free(l->asker_set);
	wisp_free(l->reply);
	wisp_free(l);
}

static void on_leaving_timeout(struct loop *lp, struct loop_timer *t)
{
	(void)lp;
	struct leaving *l = container_of(t, struct leaving, timer);
	log_limited("cluster handover unconfirmed", LOG_WARNING, "cluster",
		    "client %.*s: the node that fetched its session did not confirm it: the session stays here too",
		    (int)l->id_len, l->id);
	leaving_free(l);
}

/* The records, gathered whole before the first chunk leaves: a session
 * over the cap is refused before anything was sent. */
struct export_buf {
	uint8_t *p;
	size_t len, cap, max;
};

static int put_record(void *ctx, const struct store_rec *r)
{
	struct export_buf *x = ctx;
	ssize_t n = store_rec_size(r);
	if (n < 0)
		return (int)n;
	if (x->len + (size_t)n > x->max)
		return WISP_ELIMIT;
	if (x->len + (size_t)n > x->cap) {
		size_t cap = x->cap ? x->cap : HANDOVER_CHUNK;
		while (cap < x->len + (size_t)n)
			cap *= 2;
		uint8_t *nb = wisp_realloc(x->p, cap);
		if (!nb)
			return WISP_ENOMEM;
		x->p = nb;
		x->cap = cap;
	}
	n = store_rec_encode(r, 0, x->p + x->len, x->cap - x->len);
	if (n < 0)
		return (int)n;
	x->len += (size_t)n;
	return 0;
}

/* x in chunks to `reply`, of Wisp-Kind `kind`; the last one with the extra
 * headers `last_hdrs` (name, value pairs, NULL-ended; NULL: none). */
static void send_chunks(struct handover *h, const char *reply, const struct export_buf *x, const char *kind,
			const char *const *last_hdrs)
{
	uint32_t seq = 0;
	size_t off = 0;
	do {
		size_t n = x->len - off < HANDOVER_CHUNK ? x->len - off : HANDOVER_CHUNK;
		natsMsg *nm = NULL;
		char seqs[16];
		snprintf(seqs, sizeof seqs, "%" PRIu32, seq++);
		natsStatus st = publish(h, reply, NULL, kind, x->p + off, n, &nm);
		if (st == NATS_OK)
			st = natsMsgHeader_Set(nm, "Wisp-Seq", seqs);
		if (st == NATS_OK)
			st = natsMsgHeader_Set(nm, "Wisp-Last", off + n == x->len ? "1" : "0");
		for (size_t i = 0; st == NATS_OK && off + n == x->len && last_hdrs && last_hdrs[i]; i += 2)
			st = natsMsgHeader_Set(nm, last_hdrs[i], last_hdrs[i + 1]);
		if (st == NATS_OK)
			st = publish_msg(h, &nm);
		natsMsg_Destroy(nm);
		if (st != NATS_OK) {
			h->b->stats.cluster.send_failed++;
			return; /* the asker falls back at its timeout; the session stays here */
		}
		off += n;
	} while (off < x->len);
}

static void on_request(struct handover *h, natsMsg *nm)
{
	struct broker *b = h->b;
	const char *reply = natsMsg_GetReply(nm);
	const char *asker = wire_header(nm, "Wisp-Node");
	int len = natsMsg_GetDataLength(nm);
	if (!reply || !asker || len <= 0)
		return;
	const char *id = natsMsg_GetData(nm);
	const char *user = wire_header(nm, "Wisp-User");
	struct session *s = sess_find(&b->sessions, id, (size_t)len);
	if (s && s->owned && !((!user && !s->username) || (user && s->username && strcmp(user, s->username) == 0))) {
		log_limited("cluster handover refused", LOG_NOTICE, "cluster",
			    "client %s: node '%s' asked for its session for another user: refused", s->client_id, asker);
		publish(h, reply, NULL, "refused", NULL, 0, NULL);
		return;
	}
	if (s && s->conn) {
		log_limited("cluster_takeover", LOG_NOTICE, "cluster", "client %s: taken over by a connection at node '%s'",
			    s->client_id, asker);
		/* [MQTT-3.1.4-3] as on one node: 0x8E for v5, a close for 3.1.1. */
		broker_drop(b, s->conn, REASON_SESSION_TAKEN_OVER, "session taken over at another node");
		b->stats.cluster.taken_over++;
		s = sess_find(&b->sessions, id, (size_t)len); /* a clean one is gone now */
	}
	if (!s || s->clean) {
		publish(h, reply, NULL, "none", NULL, 0, NULL);
		return;
	}
	struct export_buf x = {.max = b->cfg->cluster.handover_max_bytes};
	int rc = persist_session_export(b, s, put_record, &x);
	if (rc != 0) {
		log_limited("cluster handover refused", LOG_WARNING, "cluster",
			    "client %s: its session cannot move to node '%s': %s", s->client_id, asker,
			    rc == WISP_ELIMIT ? "over cluster.handover_max_bytes" : wisp_strerror(rc));
		publish(h, reply, NULL, rc == WISP_ELIMIT ? "too-big" : "none", NULL, 0, NULL);
		wisp_free(x.p);
		return;
	}
	struct leaving *l = leaving_find(h, id, (size_t)len);
	if (!l) {
		l = wisp_calloc(1, sizeof *l + (size_t)len);
		if (l) {
			l->h = h;
			l->id_len = (size_t)len;
			memcpy(l->id, id, (size_t)len);
			list_push_back(&h->leavings, &l->link);
		}
	}
	if (l) {
		loop_timer_stop(b->loop, &l->timer);
		/* What reaches the copy from now on is recorded for the tail. */
		leaving_drop_recs(l);
		leaving_watch(l);
		l->state = LEAVING_SENT;
		/* The asker's timeout, plus its store's time to sync and its wait
		 * for the other nodes to know the session's filters (a node just
		 * back on NATS first settles for an interval). */
		const struct config_cluster *cc = &b->cfg->cluster;
		loop_timer_start(b->loop, &l->timer,
				 (uint64_t)cc->handover_timeout + cc->interest_ack_timeout + cc->interest_interval + 3u,
				 on_leaving_timeout);
	}
	/* The cut: what this node routed from the stream so far, and the
	 * number of its own last message on NATS (handover.h). Out of memory,
	 * or no stream: no cut (the asker then skips nothing). */
	char *set = l ? routed_set(h) : NULL;
	char wseq[24];
	snprintf(wseq, sizeof wseq, "%" PRIu64, h->wseq ? *h->wseq : 0);
	const char *cut[] = {"Wisp-Cut", set, "Wisp-Run", h->run ? h->run : "", "Wisp-Cut-Seq", wseq, NULL};
	send_chunks(h, reply, &x, "chunk", set ? cut : NULL);
	wisp_free(set);
	wisp_free(x.p);
}

/* Ends this node's copy of a session now at another node. */
static void end_copy(struct handover *h, const char *id, size_t len, const char *to)
{
	struct broker *b = h->b;
	struct leaving *l = leaving_find(h, id, len);
	if (l)
		leaving_free(l);
	struct session *s = sess_find(&b->sessions, id, len);
	if (!s || s->conn)
		return; /* already ended by a claim, or its client came back here meanwhile */
	/* The client reconnected (elsewhere), so a delayed will is not due
	 * [MQTT-3.1.3-9]; the session goes on at the other node. */
	if (s->v5 && s->v5->will) {
		SESS_OBSERVE(&b->observer, will_del, s);
		msg_unref(s->v5->will);
		s->v5->will = NULL;
	}
	session_v5_end(b, s);
	SESS_OBSERVE(&b->observer, session_del, s);
	/* Its messages went with it: none is handed to another member of a
	 * shared group here (the session's end would do that), which would
	 * deliver it a second time. */
	delivery_clear(s, &b->dlim);
	sess_destroy(&b->sessions, b->subs, s);
	b->stats.cluster.sessions_out++;
	log_msg(LOG_INFO, "cluster", "client %.*s: its session moved to node '%s'", (int)len, id, to);
}

/* Whether m reached the leaving session's copy: the session is here, its
 * client is not (back here, nothing is recorded), and one of its ordinary
 * subscriptions matches (a shared group picks its member elsewhere; QoS 0
 * is at most once and never recorded). Asked of the leavings the tree
 * matched (their filters at the export: one may be gone since), or of
 * each leaving whose filters are not in the tree. */
static bool copy_wants(const struct leaving *l, const struct msg *m)
{
	if (l->state == LEAVING_TAIL_SENT)
		return false;
	const struct session *s = sess_find(&l->h->b->sessions, l->id, l->id_len);
	if (!s || s->conn)
		return false;
	const struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		const struct sess_sub *sub = container_of(n, struct sess_sub, link);
		if (!(tree_sub_options(&sub->handle) & SESS_SUBOPT_SHARED) &&
		    topic_matches(sess_sub_filter(sub), sess_sub_filter_len(sub), msg_topic(m), m->topic_len))
			return true;
	}
	return false;
}

static void record(struct leaving *l, struct msg *m, uint64_t seq, uint64_t wseq, bool own)
{
	struct broker *b = l->h->b;
	size_t size = m->topic_len + m->payload_len + m->props_len + 64;
	if (l->bytes + size > b->cfg->cluster.handover_max_bytes || (l->nrecs == l->cap && l->cap >= SIZE_MAX / 2)) {
		l->overflow++;
		return;
	}
	if (l->nrecs == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct tail_rec *v = wisp_realloc(l->recs, cap * sizeof *v);
		if (!v) {
			l->overflow++;
			return;
		}
		l->recs = v;
		l->cap = cap;
	}
	if (own && wseq) {
		if (l->nrecs >= UINT32_MAX) {
			l->overflow++;
			return;
		}
		if (l->nown == l->own_cap) {
			size_t cap = l->own_cap ? l->own_cap * 2 : 16;
			uint32_t *v = wisp_realloc(l->own, cap * sizeof *v);
			if (!v) {
				l->overflow++;
				return;
			}
			l->own = v;
			l->own_cap = cap;
		}
		l->own[l->nown++] = (uint32_t)l->nrecs;
	}
	l->recs[l->nrecs++] = (struct tail_rec){msg_ref(m), seq, wseq, own};
	l->bytes += size;
}

bool handover_recording(const struct handover *h) { return h && !list_empty(&h->leavings); }

static void catch_up(struct leaving *l);

/* After the stream messages routed here in a turn: a leaving session
 * waiting for this node to have routed the asker's set may be ready.
 * Once a turn, not once a message: each look checks the whole set. */
static void catch_up_all(struct handover *h)
{
	struct list_node *n, *next;
	for (n = h->leavings.next; n != &h->leavings; n = next) {
		next = n->next;
		struct leaving *l = container_of(n, struct leaving, link);
		if (l->state == LEAVING_CATCHING_UP)
			catch_up(l);
	}
}

struct record_pass {
	struct handover *h;
	struct msg *m;
	uint64_t seq, wseq, gen;
	bool own;
};

static void record_matched(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx)
{
	(void)options;
	(void)subscription_id;
	struct leaving *l = subscriber;
	struct record_pass *p = ctx;
	if (l->matched_gen == p->gen)
		return; /* two of its filters match */
	l->matched_gen = p->gen;
	if (copy_wants(l, p->m))
		record(l, p->m, p->seq, p->wseq, p->own);
}

/* Records m for every leaving session whose copy it reached: one match in
 * the leaving sessions' filters, whatever their number (a node being
 * drained hands over thousands at once). */
static void record_all(struct handover *h, struct msg *m, uint64_t seq, uint64_t wseq, bool own)
{
	if (!m->qos)
		return;
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	int nl = h->leaving_filters ? topic_split(msg_topic(m), m->topic_len, levels, TOPIC_MAX_LEVELS_HARD) : 0;
	struct record_pass p = {h, m, seq, wseq, ++h->match_gen, own};
	if (nl > 0)
		tree_match(h->leaving_filters, levels, (size_t)nl, record_matched, &p);
	if (!h->nwatch_failed)
		return;
	struct list_node *n;
	for (n = h->leavings.next; n != &h->leavings; n = n->next) {
		struct leaving *l = container_of(n, struct leaving, link);
		if (l->watch_failed && copy_wants(l, m))
			record(l, m, seq, wseq, own);
	}
}

static void on_catch_up_due(struct loop *lp, struct loop_timer *t)
{
	(void)lp;
	catch_up_all(container_of(t, struct handover, catch_up_timer));
}

static void catch_up_soon(struct handover *h)
{
	if (!loop_timer_armed(&h->catch_up_timer))
		loop_timer_soon(h->b->loop, &h->catch_up_timer, on_catch_up_due);
}

void handover_routed(struct handover *h, struct msg *m, uint64_t seq)
{
	if (!handover_recording(h))
		return;
	record_all(h, m, seq, 0, false);
	catch_up_soon(h);
}

void handover_published(struct handover *h, struct msg *m, uint64_t wseq)
{
	if (handover_recording(h))
		record_all(h, m, 0, wseq, true);
}

/* The record of its own message numbered wseq, or NULL. */
static struct tail_rec *own_rec(struct leaving *l, uint64_t wseq)
{
	size_t lo = 0, hi = l->nown;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct tail_rec *r = &l->recs[l->own[mid]];
		if (r->wseq == wseq)
			return r;
		if (r->wseq < wseq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

void handover_own_routed(struct handover *h, natsMsg *nm, uint64_t seq)
{
	if (!handover_recording(h) || !h->run)
		return;
	const char *node = NULL, *run = NULL;
	size_t run_len = 0;
	uint64_t num = 0;
	if (origin_of(nm, &node, &run, &run_len, &num) && strlen(h->run) == run_len && memcmp(h->run, run, run_len) == 0) {
		struct list_node *n;
		for (n = h->leavings.next; n != &h->leavings; n = n->next) {
			struct tail_rec *r = own_rec(container_of(n, struct leaving, link), num);
			if (r)
				r->seq = seq;
		}
	}
	catch_up_soon(h);
}

/*
 * The tail: of what reached the copy since the export, the stream messages
 * the asker passed before it had the session (their sequence in its set),
 * and this node's own messages that went to no stream. A stream message
 * not in the asker's set is routed there itself; this node's own message
 * whose sequence it never saw come back is not in that set either (this
 * node routed all of the set first).
 */
static void send_tail(struct leaving *l, bool caught_up)
{
	struct handover *h = l->h;
	struct broker *b = h->b;
	struct export_buf x = {.max = b->cfg->cluster.handover_max_bytes};
	size_t sent = 0, lost = l->overflow;
	struct seq_set asker; /* parsed once: a malformed set holds nothing, as seq_text_has says */
	bool parsed = seq_set_parse(l->asker_set, &asker);
	for (size_t i = 0; i < l->nrecs; i++) {
		const struct tail_rec *r = &l->recs[i];
		bool wanted = r->own && !r->wseq ? true : r->seq && parsed && seq_set_has(&asker, r->seq);
		if (!wanted)
			continue;
		if (persist_msg_export(b, r->m, ++sent, put_record, &x) != 0) {
			lost++;
			sent--;
		}
	}
	if (lost || !caught_up) {
		b->stats.cluster.handover_tail_lost += lost;
		log_limited("cluster handover tail", LOG_WARNING, "cluster",
			    "client %.*s: %zu messages of the handover window not passed on to node '%s'%s (counted in "
			    "$SYS/broker/cluster/sessions/tail_lost)", (int)l->id_len, l->id, lost, l->asker,
			    caught_up ? "" : ", and this node's stream consumer did not catch up within "
			    "cluster.handover_timeout: more may be missing");
	}
	send_chunks(h, l->reply, &x, "tail", NULL);
	wisp_free(x.p);
	log_msg(LOG_INFO, "cluster", "client %.*s: %zu messages of the handover window passed on to node '%s'",
		(int)l->id_len, l->id, sent, l->asker);
	leaving_drop_recs(l);
	l->state = LEAVING_TAIL_SENT;
	loop_timer_stop(b->loop, &l->timer);
	loop_timer_start(b->loop, &l->timer, (uint64_t)b->cfg->cluster.handover_timeout + 2u, on_leaving_timeout);
}

static void on_catch_up_timer(struct loop *lp, struct loop_timer *t)
{
	(void)lp;
	catch_up(container_of(t, struct leaving, timer));
}

/* The tail goes once this node routed every stream message the asker had
 * routed at its import (looked at in the turn after each that routed stream
 * messages, and every second), or, past cluster.handover_timeout, with what
 * it has. */
static void catch_up(struct leaving *l)
{
	struct handover *h = l->h;
	struct broker *b = h->b;
	bool caught_up = !h->durable || durable_routed_all(h->durable, l->asker_set);
	bool late = loop_now_ms(b->loop) - l->catch_since_ms >= (uint64_t)b->cfg->cluster.handover_timeout * 1000;
	if (caught_up || late) {
		send_tail(l, caught_up);
		return;
	}
	if (!loop_timer_armed(&l->timer))
		loop_timer_start(b->loop, &l->timer, 1, on_catch_up_timer);
}

static void on_done(struct handover *h, natsMsg *nm)
{
	struct broker *b = h->b;
	int len = natsMsg_GetDataLength(nm);
	if (len <= 0)
		return;
	const char *id = natsMsg_GetData(nm);
	const char *asker = wire_header(nm, "Wisp-Node");
	const char *cut = wire_header(nm, "Wisp-Cut");
	const char *reply = natsMsg_GetReply(nm);
	if (!cut || !reply) {
		/* The tail is stored there (Wisp-Tail), or there is no cut. */
		end_copy(h, id, (size_t)len, asker ? asker : "?");
		return;
	}
	struct leaving *l = leaving_find(h, id, (size_t)len);
	if (!l) {
		/* Not recorded (out of memory at the export, or its timer ran
		 * out): an empty tail, so that the asker goes on. */
		log_limited("cluster handover tail", LOG_WARNING, "cluster",
			    "client %.*s: node '%s' asks for the handover window's messages, which were not recorded "
			    "(its confirmation came late): some may be missing there", len, id, asker ? asker : "?");
		l = wisp_calloc(1, sizeof *l + (size_t)len);
		if (!l)
			return; /* the asker logs a missing tail; this copy stays */
		l->h = h;
		l->id_len = (size_t)len;
		memcpy(l->id, id, (size_t)len);
		list_push_back(&h->leavings, &l->link);
		leaving_watch(l);
	}
	wisp_free(l->asker_set);
	wisp_free(l->reply);
	l->asker_set = wisp_strndup(cut, strlen(cut));
	l->reply = wisp_strndup(reply, strlen(reply));
	snprintf(l->asker, sizeof l->asker, "%s", asker ? asker : "?");
	if (!l->asker_set || !l->reply) {
		leaving_free(l);
		return;
	}
	l->state = LEAVING_CATCHING_UP;
	l->catch_since_ms = loop_now_ms(b->loop);
	loop_timer_stop(b->loop, &l->timer);
	catch_up(l);
}

bool handover_message(struct handover *h, natsMsg *nm)
{
	const char *subject = natsMsg_GetSubject(nm);
	if (!h || strncmp(subject, h->base, h->base_len) != 0)
		return false;
	const char *rest = subject + h->base_len;
	if (strcmp(rest, "dir") == 0) {
		on_dir_request(h, nm);
		return true;
	}
	char mine[20];
	snprintf(mine, sizeof mine, "%016" PRIx64 ".", h->self);
	if (strncmp(rest, mine, 17) != 0)
		return true; /* another node's */
	rest += 17;
	if (strcmp(rest, "req") == 0)
		on_request(h, nm);
	else if (strcmp(rest, "dir") == 0)
		on_dir_answer(h, nm);
	else if (strcmp(rest, "done") == 0)
		on_done(h, nm);
	else if (rest[0] == 'r')
		on_answer(h, nm, strtoull(rest + 1, NULL, 10));
	return true;
}

/* ---- life cycle ---- */

/* Its own subjects and the directory requests, on h->nc. */
static int subscribe_all(struct handover *h)
{
	char subject[SUBJECT_MAX];
	subject_of(h, h->self, ".>", subject);
	h->sub = sender_subscribe(h->sender, h->nc, subject, NULL, h->on_msg, h->on_msg_closure, 0);
	if (!h->sub)
		return WISP_ENOMEM;
	if (dir_sub_held()) {
		h->dir_sub_late = true; /* made by on_startup_timer */
		log_msg(LOG_NOTICE, "cluster", "start-up requests not subscribed yet (WISP_DEBUG_HOLD_DIR_SUB)");
		return 0;
	}
	return subscribe_dir(h);
}

/* The other nodes' start-up requests. */
static int subscribe_dir(struct handover *h)
{
	char dir[SUBJECT_MAX];
	snprintf(dir, sizeof dir, "%sdir", h->base);
	h->dir_sub_late = false;
	h->dir_sub = sender_subscribe(h->sender, h->nc, dir, NULL, h->on_msg, h->on_msg_closure, 0);
	return h->dir_sub ? 0 : WISP_ENOMEM;
}

/* The subscriptions' UNSUBs go on the sender, before it stops or (rebind)
 * on a connection cnats closed, where they only destroy. */
static void unsubscribe_all(struct handover *h)
{
	struct sender_sub **subs[2] = {&h->sub, &h->dir_sub};
	for (int i = 0; i < 2; i++) {
		if (*subs[i])
			sender_unsubscribe(h->sender, *subs[i]);
		*subs[i] = NULL;
	}
}

int handover_rebind(struct handover *h, natsConnection *nc)
{
	if (!h)
		return 0;
	unsubscribe_all(h);
	h->nc = nc;
	return subscribe_all(h);
}

uint64_t handover_pending_dropped(const struct handover *h)
{
	if (!h)
		return 0;
	return (h->sub ? sender_sub_dropped(h->sub) : 0) + (h->dir_sub ? sender_sub_dropped(h->dir_sub) : 0);
}

int handover_start(struct handover **out, struct broker *b, natsConnection *nc, struct sender *sender,
		   const struct nats_link *link, const char *node,
		   const char *prefix, sender_msg_fn on_msg, void *on_msg_closure)
{
	*out = NULL;
	struct handover *h = wisp_calloc(1, sizeof *h);
	if (!h)
		return WISP_ENOMEM;
	h->b = b;
	h->nc = nc;
	h->sender = sender;
	h->link = link;
	list_init(&h->fetches);
	list_init(&h->leavings);
	list_init(&h->cuts);
	h->self = digest(node, strlen(node));
	h->node = wisp_strndup(node, strlen(node));
	h->dir_len = b->cfg->cluster.handover_directory ? b->cfg->cluster.handover_directory : 1024;
	h->dir = wisp_calloc(h->dir_len, sizeof *h->dir);
	size_t n = strlen("$WISP.") + strlen(prefix) + strlen(".ho.") + 1;
	h->base = wisp_malloc(n);
	if (!h->node || !h->dir || !h->base || index_grow(h) != 0) {
		handover_free(h);
		return WISP_ENOMEM;
	}
	snprintf(h->base, n, "$WISP.%s%sho.", prefix, *prefix ? "." : "");
	h->base_len = strlen(h->base);
	h->on_msg = on_msg;
	h->on_msg_closure = on_msg_closure;
	if (subscribe_all(h) != 0) {
		handover_free(h);
		return WISP_ENOMEM;
	}
	/* Until the answers are in, restored sessions' CONNECTs wait
	 * (must_hold), and the request goes out a second time; a node that
	 * restored none has nothing to compare: neither. */
	h->starting = restored_with_times(b);
	h->ask_pending = true;
	ask_at_start(h);
	if (h->starting || h->ask_pending || h->dir_sub_late)
		loop_timer_start(b->loop, &h->startup_timer, 0, on_startup_timer); /* the connection may be up already */
	*out = h;
	return 0;
}

void handover_on_held_elsewhere(struct handover *h,
				void (*fn)(void *ctx, struct session *s, const char *node, uint64_t at), void *ctx)
{
	if (!h)
		return;
	h->held_elsewhere = fn;
	h->held_ctx = ctx;
}

void handover_stop(struct handover *h)
{
	if (!h)
		return;
	loop_timer_stop(h->b->loop, &h->startup_timer);
	loop_timer_stop(h->b->loop, &h->catch_up_timer);
	unsubscribe_all(h);
}

void handover_free(struct handover *h)
{
	if (!h)
		return;
	handover_stop(h);
	while (!list_empty(&h->fetches))
		fetch_free(container_of(h->fetches.next, struct fetch, link));
	while (!list_empty(&h->leavings))
		leaving_free(container_of(h->leavings.next, struct leaving, link));
	wisp_free(h->cut_holders);
	wisp_free(h->except);
	wisp_free(h->by_token);
	wisp_free(h->by_conn);
	tree_free(h->leaving_filters);
	wisp_free(h->dir);
	wisp_free(h->base);
	wisp_free(h->node);
	wisp_free(h);
}
