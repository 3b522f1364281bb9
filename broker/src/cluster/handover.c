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
#include "handover_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "broker.h"
#include "dir_answers.h"
#include "durable.h"
#include "err.h"
#include "hash.h"
#include "link.h"
#include "log.h"
#include "tree.h"
#include "wire.h"

#define ID_SEED_LO 0x243f6a88u
#define ID_SEED_HI 0x85a308d3u

void handover_set_stream(struct handover *h, struct durable *d, const char *run, const uint64_t *wseq)
{
	if (!h)
		return;
	h->durable = d;
	h->run = run;
	h->wseq = wseq;
}

uint64_t ho_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t ho_digest(const char *s, size_t len)
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
natsStatus ho_publish_msg(struct handover *h, natsMsg **nm)
{
	if (!nats_link_up(h->link))
		return NATS_CONNECTION_DISCONNECTED;
	if (!sender_publish_control(h->sender, h->nc, *nm, 0, false))
		return NATS_NO_MEMORY;
	*nm = NULL;
	return NATS_OK;
}

/* "<base><node hex><suffix>" into out (SUBJECT_MAX). */
void ho_subject_of(const struct handover *h, uint64_t node, const char *suffix, char *out)
{
	snprintf(out, SUBJECT_MAX, "%s%016" PRIx64 "%s", h->base, node, suffix);
}

/* ---- sending ---- */

natsStatus ho_publish(struct handover *h, const char *subject, const char *reply, const char *kind,
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
		st = ho_publish_msg(h, &nm);
	natsMsg_Destroy(nm);
	if (st != NATS_OK)
		h->b->stats.cluster.send_failed++;
	return st;
}

/* This node's routed stream set (durable_routed_encode), the caller's to
 * free; NULL without a stream or out of memory (then no cut). */
char *ho_routed_set(const struct handover *h)
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
	uint64_t d = ho_digest(id, len);
	uint64_t nd = ho_digest(node, strlen(node));
	h->dir[d % h->dir_len] = (struct dir_slot){d, nd, at};
	if (nd != h->self)
		log_msg(LOG_DEBUG, "cluster", "client %.*s: last claimed by node '%s'", (int)len, id, node);
}

/* dir_answers' emitter: one message of an answer, through the sender's
 * bounded control queue (false: full, offered again later). */
static bool dir_emit(void *ctx, const char *reply, const uint8_t *chunk, size_t len, bool times)
{
	struct handover *h = ctx;
	if (!nats_link_up(h->link))
		return true; /* lost with the connection, as the asker's reply subject is */
	if (!sender_control_room(h->sender))
		return false;
	natsMsg *nm = NULL;
	if (ho_publish(h, reply, NULL, "dir", chunk, len, &nm) != NATS_OK)
		return true; /* counted */
	if (times && natsMsgHeader_Set(nm, "Wisp-Times", "1") != NATS_OK) {
		natsMsg_Destroy(nm);
		h->b->stats.cluster.send_failed++;
		return true;
	}
	if (!sender_publish_control(h->sender, h->nc, nm, len, true)) {
		natsMsg_Destroy(nm);
		return false;
	}
	return true;
}

static void on_answer_step(struct loop *l, struct loop_timer *t)
{
	struct handover *h = container_of(t, struct handover, answer_timer);
	if (!nats_link_up(h->link)) {
		dir_answers_drop(h->answers);
		return;
	}
	switch (dir_answers_step(h->answers)) {
	case DIR_MORE:
		loop_timer_soon(l, t, on_answer_step);
		break;
	case DIR_WAIT:
		loop_timer_start(l, t, 1, on_answer_step);
		break;
	case DIR_IDLE:
		break;
	}
}

/*
 * A node that (re)started heard none of the claims made before: it asks
 * every node ("<base>dir", at start, buffered by cnats until NATS is
 * there, and again 1 to 2 s after it is up: ho_ask_at_start) and each
 * answers with the 64-bit digests of the persistent sessions it holds
 * (dir_answers.h: in steps, a bounded number of askers at once). They fill
 * empty slots only (or, with times, older ones): a claim heard since is
 * newer. A request with Wisp-Times asks for each session's claim time too
 * (16 bytes an entry: digest, time), so that the restarted node can tell
 * whether its own copy of one is older (a claim it missed while it was
 * down); an older node's request has none and gets the 8-byte form it
 * reads.
 */
static void on_dir_request(struct handover *h, natsMsg *nm)
{
	const char *reply = natsMsg_GetReply(nm);
	const char *asker = wire_header(nm, "Wisp-Node");
	if (!reply || !asker || strcmp(asker, h->node) == 0)
		return; /* this node's own request, echoed */
	switch (dir_answers_request(h->answers, asker, reply, wire_header(nm, "Wisp-Times") != NULL)) {
	case DIR_REFUSED:
		h->b->stats.cluster.directory_refused++;
		return;
	case DIR_NO_MEMORY:
		h->b->stats.cluster.send_failed++; /* not answered: the asker goes on at its timeout */
		return;
	case DIR_TAKEN:
	case DIR_RESTARTED:
		if (!loop_timer_armed(&h->answer_timer))
			loop_timer_soon(h->b->loop, &h->answer_timer, on_answer_step);
		return;
	}
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

static int by_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* h->local_ids, once: false when out of memory. */
static bool local_ids_made(struct handover *h)
{
	if (h->local_ids)
		return true;
	const struct session_table *t = &h->b->sessions;
	uint64_t *ids = wisp_malloc((t->count ? t->count : 1) * sizeof *ids); /* the clean ones too: a bound */
	if (!ids)
		return false;
	size_t n = 0;
	for (size_t i = 0; i < t->nbuckets; i++)
		for (const struct session *s = t->buckets[i]; s; s = s->hash_next)
			if (!s->clean)
				ids[n++] = ho_digest(s->client_id, s->id_len);
	qsort(ids, n, sizeof *ids, by_u64);
	h->local_ids = ids;
	h->nlocal_ids = n;
	return true;
}

void ho_local_ids_free(struct handover *h)
{
	wisp_free(h->local_ids);
	h->local_ids = NULL;
	h->nlocal_ids = 0;
}

/*
 * The persistent sessions held here that the answering node holds too
 * (each one's claim time there): held_elsewhere (presence.c) decides
 * which copy is the stale one. An answer comes in chunks of 4,096
 * sessions, twice per node at start: each chunk's digests are looked up
 * in the sorted digests of the sessions here (made once), and only a
 * chunk with a match walks the sessions, to find them. Walking them for
 * every chunk cost the node's sessions times the chunks, all on the loop
 * (a million here and a million at another node: 490 walks of a million).
 * A session made here after the digests were taken is not compared: a
 * new one claimed its id when it connected. The digests stay until the
 * start-up answers are in (a node that restored no session with a claim
 * time is not starting: it keeps those of the few sessions made before
 * its answers came). The matches are collected first, as the callback
 * may end a session.
 */
static void match_held(struct handover *h, const char *node, struct dir_slot *e, size_t n)
{
	if (!h->held_elsewhere || !n)
		return;
	if (local_ids_made(h)) {
		size_t kept = 0;
		for (size_t i = 0; i < n; i++)
			if (bsearch(&e[i].id, h->local_ids, h->nlocal_ids, sizeof *h->local_ids, by_u64))
				e[kept++] = e[i];
		n = kept;
		if (!n)
			return;
	}
	qsort(e, n, sizeof *e, by_digest);
	const struct session_table *t = &h->b->sessions;
	struct held *found = NULL;
	size_t nfound = 0, cap = 0;
	bool oom = false;
	for (size_t i = 0; i < t->nbuckets && !oom; i++)
		for (struct session *s = t->buckets[i]; s && !oom; s = s->hash_next) {
			if (s->clean)
				continue;
			struct dir_slot key = {.id = ho_digest(s->client_id, s->id_len)};
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

static void on_dir_answer(struct handover *h, natsMsg *nm)
{
	const char *node = wire_header(nm, "Wisp-Node");
	int len = natsMsg_GetDataLength(nm);
	size_t entry = wire_header(nm, "Wisp-Times") ? 16 : 8;
	if (!node || len <= 0 || (size_t)len % entry)
		return;
	uint64_t nd = ho_digest(node, strlen(node));
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
	ho_release_holds(h, false); /* a copy here ended: its CONNECT fetches the later one now */
}

uint64_t handover_last_claim_ns(const struct handover *h, const char *id, size_t len)
{
	if (!h)
		return 0;
	uint64_t d = ho_digest(id, len);
	const struct dir_slot *slot = &h->dir[d % h->dir_len];
	return slot->id == d ? slot->at : 0;
}

bool handover_claimed_here(const struct handover *h, const char *id, size_t len)
{
	if (!h)
		return false;
	uint64_t d = ho_digest(id, len);
	const struct dir_slot *slot = &h->dir[d % h->dir_len];
	return slot->id == d && slot->node == h->self;
}

/* The node that claimed `id` last, if another than this one; 0 if none. */
uint64_t ho_holder_of(const struct handover *h, const char *id, size_t len)
{
	uint64_t d = ho_digest(id, len);
	const struct dir_slot *slot = &h->dir[d % h->dir_len];
	return slot->id == d && slot->node != h->self ? slot->node : 0;
}

bool handover_claimed_elsewhere(const struct handover *h, const char *id, size_t len)
{
	return h && ho_holder_of(h, id, len) != 0;
}

/* ---- dispatch ---- */

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
		ho_on_request(h, nm);
	else if (strcmp(rest, "dir") == 0)
		on_dir_answer(h, nm);
	else if (strcmp(rest, "done") == 0)
		ho_on_done(h, nm);
	else if (rest[0] == 'r')
		ho_on_answer(h, nm, strtoull(rest + 1, NULL, 10));
	return true;
}

/* ---- life cycle ---- */

/* Its own subjects and the directory requests, on h->nc. */
static int subscribe_all(struct handover *h)
{
	char subject[SUBJECT_MAX];
	ho_subject_of(h, h->self, ".>", subject);
	h->sub = sender_subscribe(h->sender, h->nc, subject, NULL, h->on_msg, h->on_msg_closure, 0);
	if (!h->sub)
		return WISP_ENOMEM;
	if (ho_dir_sub_held()) {
		h->dir_sub_late = true; /* made by ho_on_startup_timer */
		log_msg(LOG_NOTICE, "cluster", "start-up requests not subscribed yet (WISP_DEBUG_HOLD_DIR_SUB)");
		return 0;
	}
	return ho_subscribe_dir(h);
}

/* The other nodes' start-up requests. */
int ho_subscribe_dir(struct handover *h)
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
	h->self = ho_digest(node, strlen(node));
	h->node = wisp_strndup(node, strlen(node));
	h->dir_len = b->cfg->cluster.handover_directory ? b->cfg->cluster.handover_directory : 1024;
	h->dir = wisp_calloc(h->dir_len, sizeof *h->dir);
	h->answers = dir_answers_new(&b->sessions, dir_emit, h);
	size_t n = strlen("$WISP.") + strlen(prefix) + strlen(".ho.") + 1;
	h->base = wisp_malloc(n);
	if (!h->node || !h->dir || !h->answers || !h->base || ho_index_grow(h) != 0) {
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
	 * (ho_must_hold), and the request goes out a second time; a node that
	 * restored none has nothing to compare: neither. */
	h->starting = ho_restored_with_times(b);
	h->ask_pending = true;
	ho_ask_at_start(h);
	if (h->starting || h->ask_pending || h->dir_sub_late)
		loop_timer_start(b->loop, &h->startup_timer, 0, ho_on_startup_timer); /* the connection may be up already */
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
	loop_timer_stop(h->b->loop, &h->answer_timer);
	unsubscribe_all(h);
}

void handover_free(struct handover *h)
{
	if (!h)
		return;
	handover_stop(h);
	while (!list_empty(&h->fetches))
		ho_fetch_free(container_of(h->fetches.next, struct fetch, link));
	while (!list_empty(&h->leavings))
		ho_leaving_free(container_of(h->leavings.next, struct leaving, link));
	wisp_free(h->cut_holders);
	wisp_free(h->except);
	wisp_free(h->by_token);
	wisp_free(h->by_conn);
	tree_free(h->leaving_filters);
	ho_local_ids_free(h);
	dir_answers_free(h->answers);
	wisp_free(h->dir);
	wisp_free(h->base);
	wisp_free(h->node);
	wisp_free(h);
}
