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
 *   Wisp-Bridges   beat: the sender's bridges' names, each between two '/'
 *                  (which no name holds), "/up/down/"; absent: none
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
 * Receiving: every announcement is parsed strictly (announce.h; refused:
 * counted, everything sent for three intervals). One struct peer per node
 * heard from (PEERS_MAX), with its filters in a set bounded by
 * cluster.max_remote_filters(_bytes) (announce.h: past them the peer is
 * "over" and everything is sent until a snapshot of it fits) and, summed
 * over peers, in one trie whose node payload is the number of (peer,
 * filter) pairs ending there (a shared subscription counts under its
 * inner filter). A numbering gap, a new run or a beat ahead of what
 * arrived marks the peer incomplete and asks it for a snapshot ("sync"),
 * resent every interval until one arrives; a snapshot in parts marks it
 * incomplete until its last. Snapshots asked of us go at most once a
 * second.
 *
 * Dormant nodes (dormant.h): the stream's consumer names come from
 * JetStream (cluster.c asks durable.c's worker) every interval and right
 * after a node is forgotten; a forgotten node is held dormant until a list
 * asked after that says its consumer is gone.
 *
 * Bridges (docs/cluster.md "Bridges"): the same bridge on two nodes
 * carries every message twice, so each beat lists the node's bridges and
 * a node warns once per (bridge, other node) episode while another lists
 * one of its own. Of the others' names it keeps only one bit per own
 * bridge (the first BRIDGES_MAX in configuration order).
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
#include "announce.h"
#include "broker.h"
#include "dormant.h"
#include "err.h"
#include "sender.h"
#include "link.h"
#include "log.h"
#include "share.h"
#include "topic.h"
#include "trie.h"
#include "wire.h"

/* Nodes kept apart; past it the node sends everything (crowded_until). */
#define PEERS_MAX 64
/* Intervals a node stays known without a word (a beat each interval). */
#define STALE_INTERVALS 3
/* Own bridges compared with the others' and listed in a beat (a bit each
 * in struct peer's bridges); past it a bridge is not checked. */
#define BRIDGES_MAX 64

struct peer {
	char *name;
	char run[ANN_RUN_MAX + 1];
	uint64_t seq;      /* its last announcement applied */
	uint64_t acked;    /* our newest add it answered */
	uint64_t heard_at; /* loop s */
	uint64_t sync_at;  /* loop s of our last sync to it; 0: none pending */
	uint32_t every;    /* its interest_interval (from its beats); 0: ours */
	uint64_t bridges;  /* bit i: our bridges[i] runs there too (its last beat's Wisp-Bridges) */
	bool complete;     /* its whole set is here (a snapshot since the last gap) */
	bool building;     /* a snapshot's parts are arriving */
	struct ann_filters filters; /* bounded by cluster.max_remote_filters(_bytes) */
	struct remote_interest *ri; /* for filters.changed */
};

struct remote_interest {
	struct broker *b;
	natsConnection *nc;     /* announcements out, through the sender thread */
	struct sender *sender;  /* sender.h; NULL once stopping: "bye" goes straight */
	natsConnection *snc;    /* announcements in, answers out (through share_sender) */
	struct sender *share_sender; /* sender.h, publishing on snc */
	const struct nats_link *snc_link; /* snc up (link.h) */
	struct sender_sub *sub, *ack_sub; /* made and ended by share_sender */
	sender_msg_fn on_msg;   /* the subscriptions', kept for remote_interest_rebind */
	void *on_msg_closure;
	char *node;
	char run[24];
	char *subject, *ack_subject;
	struct ann_filters local; /* this node's filters, counted per local subscription (unbounded here) */
	uint64_t seq;           /* our last numbered announcement */
	uint64_t last_add;      /* the number of our last "add": the sub_gate's ticket */
	uint64_t mark_wanted;   /* the newest add whose queue SUB's mark is awaited */
	uint64_t marked;        /* the newest mark come back */
	uint64_t wmark_wanted, wmarked; /* the same for the data connection's SUBs */
	struct peer *peers[PEERS_MAX];
	size_t npeers;
	size_t incomplete;      /* peers whose set is not whole: everything is sent */
	size_t over;            /* peers past the limits (filters.over): everything is sent */
	size_t episodes;        /* peers over since their last snapshot that fitted (logged 0 -> 1 -> 0) */
	struct trie remote;     /* every peer's filters; u.count counts them */
	uint64_t settle_until;  /* loop s; UINT64_MAX while NATS is away */
	uint64_t crowded_until; /* loop s: more nodes than PEERS_MAX spoke, or out of memory */
	uint64_t doubt_until;   /* loop s: a malformed announcement came (its sender unknown) */
	uint64_t snapshot_at;   /* loop s + 1 of our last snapshot; 0: none yet */
	bool snapshot_due;      /* one more was asked for that second: sent at the next tick */
	bool connected;
	bool gate_waiting;      /* a SUBACK is held: wake the loop each tick */
	bool timeout_logged;
	bool selective;         /* as last logged: skipping what no one wants */
	struct dormant dormant; /* nodes down whose stream consumer remains (dormant.h) */
	uint64_t (*ask_consumers)(void *ctx); /* NULL: QoS 1/2 do not go through a stream */
	void *ask_ctx;
	char own_consumer[ANN_NODE_MAX + 1];
	bool dormant_stale;     /* a change not applied yet (settling): QoS 1/2 in doubt */
	uint32_t ticks;
	struct loop_timer timer;
};

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

bool remote_interest_stream_doubt(const struct remote_interest *ri)
{
	return ri && ri->ask_consumers && (ri->dormant_stale || dormant_doubt(&ri->dormant));
}

bool remote_interest_wanted(const struct remote_interest *ri, const struct topic_level *levels, size_t nlevels)
{
	if (!ri || ri->incomplete || ri->over || nlevels == 0)
		return true;
	uint64_t now = loop_now_s(ri->b->loop);
	if (now < ri->settle_until || now < ri->crowded_until || now < ri->doubt_until)
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

static void ask_sync(struct remote_interest *ri, struct peer *p);

static void filter_changed(void *ctx, const char *f, size_t len, bool add)
{
	struct peer *p = ctx;
	trie_count(p->ri, f, len, add);
}

static struct ann_limits limits(const struct remote_interest *ri)
{
	return (struct ann_limits){ri->b->cfg->cluster.max_remote_filters, ri->b->cfg->cluster.max_remote_filter_bytes};
}

/* After p's filters changed (was_over: before): ri->over, the episode's
 * counter and log lines (once while any node is over), and the snapshot
 * asked for when its set may fit again. */
static void peer_effect(struct remote_interest *ri, struct peer *p, bool was_over, enum ann_effect effect)
{
	if (p->filters.over && !was_over)
		ri->over++;
	else if (!p->filters.over && was_over)
		ri->over--;
	struct ann_limits lim = limits(ri);
	switch (effect) {
	case ANN_OVER_BEGIN:
		ri->b->stats.cluster.interest_overflows++;
		if (ri->episodes++ == 0)
			log_msg(LOG_WARNING, "cluster", "node '%s' announced more than cluster.max_remote_filters (%" PRIu64
				") filters or max_remote_filter_bytes (%" PRIu64 ") bytes, or memory ran out: every message "
				"goes to NATS until its set is smaller (counted in $SYS/broker/cluster/interest/overflows)",
				p->name, lim.max_filters, lim.max_bytes);
		break;
	case ANN_OVER_END:
		if (--ri->episodes == 0)
			log_msg(LOG_NOTICE, "cluster", "node '%s': its filters fit cluster.max_remote_filters and "
				"max_remote_filter_bytes again", p->name);
		break;
	case ANN_MAY_FIT:
		if (!p->sync_at)
			ask_sync(ri, p);
		break;
	case ANN_NONE:
		break;
	}
}

/* Its set starts over (a new run, a hello, a snapshot's first part). */
static void peer_restart(struct remote_interest *ri, struct peer *p)
{
	bool was_over = p->filters.over;
	ann_filters_snap_begin(&p->filters);
	peer_effect(ri, p, was_over, ANN_NONE);
}

static void peer_forget(struct remote_interest *ri, size_t i)
{
	struct peer *p = ri->peers[i];
	bool was_over = p->filters.over;
	ann_filters_free(&p->filters);
	p->filters.over = false;
	peer_effect(ri, p, was_over, ANN_NONE);
	if (p->filters.episode && --ri->episodes == 0)
		log_msg(LOG_NOTICE, "cluster", "node '%s' forgotten: no node is past cluster.max_remote_filters now",
			p->name);
	peer_set_complete(ri, p, true);
	ri->peers[i] = ri->peers[--ri->npeers];
	wisp_free(p->name);
	wisp_free(p);
}

static void dormant_refresh(struct remote_interest *ri);

/* ---- bridges that run on more than one node ---- */

/* The beat's Wisp-Bridges value for our configuration: names the header
 * cannot carry (a control character) are left out. */
static void bridges_header(const struct remote_interest *ri, char *out, size_t size)
{
	const struct config *cfg = ri->b->cfg;
	size_t at = 0;
	out[0] = '\0';
	for (size_t i = 0; i < cfg->bridge_count && i < BRIDGES_MAX; i++) {
		const char *name = cfg->bridges[i].name;
		size_t n = strlen(name);
		bool plain = true;
		for (size_t k = 0; k < n; k++)
			plain = plain && (unsigned char)name[k] >= 0x20 && name[k] != 0x7f;
		if (!plain || at + n + 3 > size)
			continue;
		snprintf(out + at, size - at, "%s%s/", at ? "" : "/", name);
		at += n + (at ? 1 : 2);
	}
}

/* $SYS/broker/cluster/bridges/duplicated: our bridges some other node
 * runs as well. */
static void bridges_recount(struct remote_interest *ri)
{
	uint64_t any = 0;
	for (size_t i = 0; i < ri->npeers; i++)
		any |= ri->peers[i]->bridges;
	ri->b->stats.cluster.bridges_duplicated = (uint64_t)__builtin_popcountll(any);
}

/* p's beat listed `names` (NULL: it is gone): warns once when one of our
 * bridges starts running there too, says when it stops. */
static void peer_bridges(struct remote_interest *ri, struct peer *p, const char *names)
{
	const struct config *cfg = ri->b->cfg;
	uint64_t now = 0;
	for (size_t i = 0; names && i < cfg->bridge_count && i < BRIDGES_MAX; i++) {
		char needle[64 + 3]; /* "/<name>/": names are 1 to 64 characters (config.c) */
		snprintf(needle, sizeof needle, "/%s/", cfg->bridges[i].name);
		if (strstr(names, needle))
			now |= UINT64_C(1) << i;
	}
	uint64_t changed = now ^ p->bridges;
	for (size_t i = 0; changed && i < cfg->bridge_count && i < BRIDGES_MAX; i++) {
		if (!(changed & (UINT64_C(1) << i)))
			continue;
		if (now & (UINT64_C(1) << i))
			log_msg(LOG_WARNING, "cluster", "bridge '%s' also runs on node '%s': each message crosses it "
				"once per node; run a bridge on one node of a cluster (counted in "
				"$SYS/broker/cluster/bridges/duplicated)", cfg->bridges[i].name, p->name);
		else
			log_msg(LOG_NOTICE, "cluster", "bridge '%s' no longer runs on node '%s'", cfg->bridges[i].name,
				p->name);
	}
	p->bridges = now;
	bridges_recount(ri);
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
	p->ri = ri;
	p->filters.changed = filter_changed;
	p->filters.ctx = p;
	p->complete = true;
	peer_set_complete(ri, p, false);
	ri->peers[ri->npeers++] = p;
	dormant_refresh(ri); /* it may be a dormant node come back */
	return p;
}

/* ---- dormant nodes ---- */

static bool consumer_heard(void *ctx, const char *consumer)
{
	struct remote_interest *ri = ctx;
	for (size_t i = 0; i < ri->npeers; i++)
		if (dormant_is_node(ri->peers[i]->name, consumer))
			return true;
	return false;
}

static void dormant_said(void *ctx, const char *consumer, bool dormant, bool gone)
{
	(void)ctx;
	if (dormant)
		log_msg(LOG_WARNING, "cluster", "node '%s' is down but its stream consumer remains: QoS 1/2 messages go "
			"to the stream for its sessions (counted in $SYS/broker/cluster/interest/dormant)", consumer);
	else if (gone)
		log_msg(LOG_NOTICE, "cluster", "node '%s' is no longer dormant: its stream consumer is gone", consumer);
	else
		log_msg(LOG_NOTICE, "cluster", "node '%s' is no longer dormant: it is heard again", consumer);
}

/* Not while settling: every message is sent then anyway, and the live
 * nodes are not all heard yet (each beats within the settling interval),
 * so a node would be said down that is not. on_tick catches up. */
static void dormant_refresh(struct remote_interest *ri)
{
	if (!ri->ask_consumers)
		return;
	ri->dormant_stale = loop_now_s(ri->b->loop) < ri->settle_until; /* in doubt until it runs */
	if (!ri->dormant_stale)
		ri->b->stats.cluster.interest_dormant = dormant_update(&ri->dormant, consumer_heard, dormant_said, ri);
}

/* Out of memory for the dormant set: when in doubt, send (a while). */
static void dormant_oom(struct remote_interest *ri)
{
	uint64_t now = loop_now_s(ri->b->loop);
	if (now >= ri->crowded_until) /* once per episode */
		log_msg(LOG_WARNING, "cluster", "out of memory for the dormant nodes' set: every message goes to NATS "
			"for 60 s");
	ri->crowded_until = now + 60;
}

/* A node said bye or went unheard: while a list asked after this one
 * does not say its consumer is gone, it is dormant. */
static void peer_gone(struct remote_interest *ri, size_t i)
{
	peer_bridges(ri, ri->peers[i], NULL);
	if (ri->ask_consumers && dormant_forgotten(&ri->dormant, ri->peers[i]->name, ri->ask_consumers(ri->ask_ctx)) != 0)
		dormant_oom(ri);
	peer_forget(ri, i);
	dormant_refresh(ri);
}

void remote_interest_track_consumers(struct remote_interest *ri, uint64_t (*ask)(void *ctx), void *ctx)
{
	if (!ri)
		return;
	ri->ask_consumers = ask;
	ri->ask_ctx = ctx;
	size_t len = 0;
	for (; ri->node[len] && len < sizeof ri->own_consumer - 1; len++)
		ri->own_consumer[len] = dormant_consumer_char(ri->node[len]);
	ri->own_consumer[len] = '\0';
	if (ask)
		ask(ctx);
}

void remote_interest_consumers(struct remote_interest *ri, const char *const *names, size_t n, uint64_t ask)
{
	if (!ri || !ri->ask_consumers)
		return;
	bool was_full = ri->dormant.full;
	if (dormant_list(&ri->dormant, names, n, ri->own_consumer, ask) != 0)
		dormant_oom(ri);
	if (ri->dormant.full && !was_full)
		log_msg(LOG_WARNING, "cluster", "stream consumers name more than %u nodes: the dormant nodes' set is "
			"full, and every QoS 1/2 message goes to the stream until they are fewer (delete the consumers "
			"of nodes taken out for good: docs/cluster.md)", DORMANT_MAX_NODES);
	dormant_refresh(ri);
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
	 * lock (link.h), and the hello and snapshot sent once it is back say
	 * it all again. */
	if (st != NATS_OK || !ri->connected) {
		natsMsg_Destroy(nm);
		return st == NATS_OK ? 0 : WISP_EIO;
	}
	if (!ri->sender) {
		st = natsConnection_PublishMsg(ri->nc, nm);
		natsMsg_Destroy(nm);
		return st == NATS_OK ? 0 : WISP_EIO;
	}
	/* The hello and snapshot, which say everything again, are not
	 * bounded: a snapshot is the node's whole set, larger than the bound
	 * may be. One is queued at a (re)connect, or after a refusal once the
	 * bounded ones drained below half, so after the snapshot before it
	 * went. */
	bool resync = strcmp(kind, "hello") == 0 || strcmp(kind, "snap") == 0;
	if (sender_publish_control(ri->sender, ri->nc, nm, len + 512, !resync))
		return 0;
	/* NATS has not taken SENDER_CONTROL_BYTES of announcements (or out of
	 * memory): as while it is lost, until there is room
	 * (remote_interest_check_connections then says everything again). */
	natsMsg_Destroy(nm);
	ri->connected = false;
	ri->settle_until = UINT64_MAX;
	log_msg(LOG_WARNING, "cluster", "NATS is not taking this node's interest announcements (%u KiB queued): "
		"sending NATS every message until it does", SENDER_CONTROL_BYTES >> 10);
	return WISP_EAGAIN;
}

struct snap_writer {
	struct remote_interest *ri;
	char *buf;
	size_t used;
	uint64_t left;
	unsigned part;
};

static bool snap_one(void *ctx, const char *f, size_t len)
{
	struct snap_writer *w = ctx;
	memcpy(w->buf + w->used, f, len);
	w->used += len;
	w->buf[w->used++] = '\0';
	if (--w->left > 0 && w->used < ANN_SNAP_PART_BYTES)
		return true;
	char num[16];
	snprintf(num, sizeof num, "%u", w->part++);
	announce(w->ri, "snap", true, w->buf, w->used, NULL, "Wisp-Part", num, w->left ? NULL : "Wisp-Last", "1");
	w->used = 0;
	return true;
}

/* Our whole set, in parts of about ANN_SNAP_PART_BYTES (announce.h: what
 * the others accept). */
static void send_snapshot(struct remote_interest *ri)
{
	struct snap_writer w = {.ri = ri, .buf = wisp_malloc(ANN_SNAP_PART_MAX), .left = ri->local.kept};
	if (!w.buf) {
		log_msg(LOG_WARNING, "cluster", "out of memory: no interest snapshot sent (the others send everything "
			"to this node until one goes)");
		return;
	}
	ann_set_each(&ri->local, snap_one, &w);
	if (w.part == 0) /* no filters: one empty, last part */
		announce(ri, "snap", true, w.buf, 0, NULL, "Wisp-Part", "0", "Wisp-Last", "1");
	wisp_free(w.buf);
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
	if (ann_set_add(&ri->local, filter, len, &fresh) != 0)
		log_msg(LOG_WARNING, "cluster", "out of memory: filter '%.*s' announced, never withdrawn",
			(int)(len > 80 ? 80 : len), filter);
	else if (!fresh)
		return;
	if (announce(ri, "add", true, filter, len, ri->ack_subject, NULL, NULL, NULL, NULL) == 0)
		ri->last_add = ri->seq;
}

void remote_interest_local_remove(struct remote_interest *ri, const char *filter, size_t len)
{
	if (ri && !stays_local(filter, len) && ann_set_remove(&ri->local, filter, len))
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
	/* Not while snc is down (link.h), or while NATS is not taking what
	 * the sender queued: the asker times out. */
	if (st == NATS_OK && !nats_link_up(ri->snc_link))
		st = NATS_CONNECTION_DISCONNECTED;
	else if (st == NATS_OK && sender_publish_control(ri->share_sender, ri->snc, ack, 256, true))
		ack = NULL;
	else if (st == NATS_OK)
		st = NATS_INSUFFICIENT_BUFFER;
	natsMsg_Destroy(ack);
	return st;
}

uint64_t remote_interest_last_add(const struct remote_interest *ri) { return ri ? ri->last_add : 0; }

void remote_interest_await_mark(struct remote_interest *ri, uint64_t mark)
{
	if (ri && mark > ri->mark_wanted)
		ri->mark_wanted = mark;
}

void remote_interest_await_writer(struct remote_interest *ri, uint64_t add)
{
	if (ri && add > ri->wmark_wanted)
		ri->wmark_wanted = add;
}

void remote_interest_writer_marked(struct remote_interest *ri, uint64_t add)
{
	if (!ri || add <= ri->wmarked)
		return;
	ri->wmarked = add;
	if (ri->gate_waiting)
		loop_request_turn(ri->b->loop);
}

void remote_interest_mark(struct remote_interest *ri, uint64_t mark)
{
	if (!ri || !mark)
		return;
	char seq[24];
	snprintf(seq, sizeof seq, "%" PRIu64, mark);
	/* Failed (snc down, or cnats buffering while NATS is away): nothing
	 * comes back, and the SUBACK goes at the timeout, counted and logged
	 * once there. */
	send_answer(ri, ri->ack_subject, seq);
}

/* ---- receiving ---- */

static void answer(struct remote_interest *ri, natsMsg *nm, const char *seq)
{
	const char *reply = natsMsg_GetReply(nm);
	if (reply)
		send_answer(ri, reply, seq);
}

/* Something on the interest subject no Wisp node sends: its sender is not
 * known, so every message goes to NATS for a while (when in doubt, send). */
static void refuse(struct remote_interest *ri, const char *why)
{
	uint64_t now = loop_now_s(ri->b->loop);
	uint32_t doubt = ri->b->cfg->cluster.interest_interval * STALE_INTERVALS;
	ri->b->stats.cluster.interest_malformed++;
	if (now >= ri->doubt_until)
		log_msg(LOG_WARNING, "cluster", "malformed interest announcement on %s (%s): every message goes to "
			"NATS for %u s (counted in $SYS/broker/cluster/interest/malformed)", ri->subject, why, doubt);
	ri->doubt_until = now + doubt;
}

static void on_answer(struct remote_interest *ri, natsMsg *nm)
{
	const char *node = wire_header(nm, "Wisp-Node");
	uint64_t n;
	if (!ann_node_valid(node) || !ann_number(wire_header(nm, "Wisp-ISeq"), UINT64_MAX, &n)) {
		refuse(ri, "answer without a valid Wisp-Node and Wisp-ISeq");
		return;
	}
	if (strcmp(node, ri->node) == 0) { /* a mark: the queue SUBs before it are in place */
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
	if (n > p->acked && n <= ri->seq)
		p->acked = n;
	if (ri->gate_waiting)
		loop_request_turn(ri->b->loop);
}

/* A snapshot asked for (hello, sync): sent now, or at the next tick when
 * one went this second (it reaches every node: one serves all askers). */
static void snapshot_asked(struct remote_interest *ri)
{
	uint64_t now = loop_now_s(ri->b->loop);
	if (ri->snapshot_at == now + 1) {
		ri->snapshot_due = true;
		return;
	}
	ri->snapshot_at = now + 1;
	send_snapshot(ri);
}

static void apply_snapshot_part(struct remote_interest *ri, struct peer *p, const struct ann *a)
{
	if (a->part == 0) {
		peer_restart(ri, p);
		p->building = true;
		/* Until its last part, its set here is partial. */
		peer_set_complete(ri, p, false);
	}
	if (!p->building)
		return; /* its first part was lost: the gap asked for another */
	struct ann_limits lim = limits(ri);
	const char *f;
	size_t at = 0, flen;
	while (ann_snap_next(a, &at, &f, &flen)) {
		bool was_over = p->filters.over;
		peer_effect(ri, p, was_over, ann_filters_add(&p->filters, &lim, f, flen));
	}
	if (a->last) {
		p->building = false;
		p->sync_at = 0;
		peer_set_complete(ri, p, true);
		peer_effect(ri, p, p->filters.over, ann_filters_snap_end(&p->filters));
	}
}

static void apply(struct remote_interest *ri, struct peer *p, const struct ann *a, natsMsg *nm)
{
	struct ann_limits lim = limits(ri);
	bool was_over = p->filters.over;
	bool gap = false;
	if (strcmp(p->run, a->run) != 0) { /* new to us, or restarted: its set starts over */
		peer_restart(ri, p);
		peer_set_complete(ri, p, false);
		p->building = false;
		snprintf(p->run, sizeof p->run, "%s", a->run);
		p->seq = 0;
		/* Its new run settles (sends everything) and gets our snapshot: our
		 * adds its old run never answered need no answer. */
		p->acked = ri->last_add;
		gap = true;
		was_over = p->filters.over;
	}
	switch (a->kind) {
	case ANN_BEAT:
		gap = gap || a->seq != p->seq;
		p->every = a->every;
		peer_bridges(ri, p, wire_header(nm, "Wisp-Bridges"));
		break;
	case ANN_HELLO:
		/* It (re)joined: its snapshot follows; everyone sends theirs. */
		peer_restart(ri, p);
		peer_set_complete(ri, p, false);
		p->seq = a->seq;
		gap = false;
		snapshot_asked(ri);
		break;
	case ANN_SYNC:
		if (strcmp(a->to, ri->node) == 0)
			snapshot_asked(ri);
		break;
	case ANN_ADD:
	case ANN_DEL:
	case ANN_SNAP:
		if (a->seq != p->seq + 1)
			gap = true;
		if (a->seq > p->seq)
			p->seq = a->seq;
		break;
	case ANN_BYE:
		break;
	}
	if (a->kind == ANN_ADD) {
		peer_effect(ri, p, was_over, ann_filters_add(&p->filters, &lim, a->data, a->len));
		answer(ri, nm, wire_header(nm, "Wisp-ISeq"));
	} else if (a->kind == ANN_DEL) {
		peer_effect(ri, p, was_over, ann_filters_del(&p->filters, &lim, a->data, a->len));
	} else if (a->kind == ANN_SNAP) {
		if (gap && p->building)
			p->building = false; /* a part was lost: wait for a whole one */
		if (a->part == 0)
			gap = false; /* a fresh snapshot starts here */
		apply_snapshot_part(ri, p, a);
	}
	if (gap) {
		peer_set_complete(ri, p, false);
		if (!p->sync_at)
			ask_sync(ri, p);
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
	struct ann_headers h = {
		.node = wire_header(nm, "Wisp-Node"), .run = wire_header(nm, "Wisp-Run"),
		.seq = wire_header(nm, "Wisp-ISeq"), .kind = wire_header(nm, "Wisp-Interest"),
		.part = wire_header(nm, "Wisp-Part"), .last = wire_header(nm, "Wisp-Last"),
		.to = wire_header(nm, "Wisp-To"), .every = wire_header(nm, "Wisp-Every"),
	};
	int dlen = natsMsg_GetDataLength(nm);
	struct ann a;
	const char *why = ann_parse(&h, natsMsg_GetData(nm), dlen > 0 ? (size_t)dlen : 0, &a);
	if (why) {
		refuse(ri, why);
		return true;
	}
	if (strcmp(a.node, ri->node) == 0)
		return true; /* our own, echoed */
	size_t at = 0;
	if (a.kind == ANN_BYE) {
		if (peer_find(ri, a.node, &at))
			peer_gone(ri, at);
		return true;
	}
	struct peer *p = peer_get(ri, a.node);
	if (!p) {
		if (a.kind == ANN_ADD)
			answer(ri, nm, h.seq); /* we send it everything meanwhile */
		return true;
	}
	p->heard_at = loop_now_s(ri->b->loop);
	apply(ri, p, &a, nm);
	return true;
}

/* ---- connection, timer, gate ---- */

void remote_interest_check_connections(struct remote_interest *ri)
{
	if (!ri)
		return;
	bool up = ri->b->stats.cluster.connected && nats_link_up(ri->snc_link) &&
		  (!ri->sender || sender_control_room(ri->sender));
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
	if (ri->snapshot_due) {
		ri->snapshot_due = false;
		ri->snapshot_at = now + 1;
		send_snapshot(ri);
	}
	if (++ri->ticks >= interval) {
		ri->ticks = 0;
		char ours[16];
		snprintf(ours, sizeof ours, "%u", interval);
		char bridges[BRIDGES_MAX * 65 + 2]; /* names are 1 to 64 characters (config.c) */
		bridges_header(ri, bridges, sizeof bridges);
		if (ri->connected)
			announce(ri, "beat", false, NULL, 0, NULL, "Wisp-Every", ours, *bridges ? "Wisp-Bridges" : NULL,
				 bridges);
		if (ri->ask_consumers)
			ri->ask_consumers(ri->ask_ctx); /* a node may have made or lost its consumer */
		for (size_t i = ri->npeers; i-- > 0;) {
			struct peer *p = ri->peers[i];
			/* By its own beat interval: nodes need not share theirs. */
			uint32_t every = p->every > interval ? p->every : interval;
			if (p->heard_at + (uint64_t)every * STALE_INTERVALS < now) {
				log_msg(LOG_NOTICE, "cluster", "node '%s' unheard for %u s: its interest is forgotten",
					p->name, every * STALE_INTERVALS);
				peer_gone(ri, i);
			} else if (p->sync_at && p->sync_at + interval <= now && ri->connected) {
				ask_sync(ri, p);
			}
		}
	}
	dormant_refresh(ri);
	bool selective = ri->connected && !ri->incomplete && !ri->over && now >= ri->settle_until &&
			 now >= ri->crowded_until && now >= ri->doubt_until;
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
	bool all = ri->marked >= (ri->mark_wanted < ticket ? ri->mark_wanted : ticket) &&
		   ri->wmarked >= (ri->wmark_wanted < ticket ? ri->wmark_wanted : ticket);
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

/* The announcements' and acknowledgements' subscriptions on snc, made and
 * ended by share_sender's thread: the loop never waits for snc's lock (a
 * connection just made may be in a connect attempt). */
static void unsubscribe(struct remote_interest *ri)
{
	struct sender_sub **subs[2] = {&ri->sub, &ri->ack_sub};
	for (int i = 0; i < 2; i++) {
		if (*subs[i])
			sender_unsubscribe(ri->share_sender, *subs[i]);
		*subs[i] = NULL;
	}
}

static int subscribe(struct remote_interest *ri)
{
	ri->sub = sender_subscribe(ri->share_sender, ri->snc, ri->subject, NULL, ri->on_msg, ri->on_msg_closure, 0);
	ri->ack_sub = sender_subscribe(ri->share_sender, ri->snc, ri->ack_subject, NULL, ri->on_msg,
				       ri->on_msg_closure, 0);
	if (ri->sub && ri->ack_sub)
		return 0;
	unsubscribe(ri); /* neither, so that the free leaves no subscription to the sender */
	return WISP_ENOMEM;
}

int remote_interest_start(struct remote_interest **out, struct broker *b, natsConnection *nc, struct sender *sender,
			  natsConnection *snc, struct sender *share_sender, const struct nats_link *snc_link,
			  const char *node, const char *run, const char *prefix, sender_msg_fn on_msg,
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
	ri->sender = sender;
	ri->snc = snc;
	ri->share_sender = share_sender;
	ri->snc_link = snc_link;
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
	ri->on_msg = on_msg;
	ri->on_msg_closure = on_msg_closure;
	if (subscribe(ri) != 0) {
		remote_interest_free(ri);
		return WISP_ENOMEM;
	}
	loop_timer_start(b->loop, &ri->timer, 1, on_tick);
	b->sub_gate.ticket = gate_ticket;
	b->sub_gate.settled = gate_settled;
	b->sub_gate.ctx = ri;
	*out = ri;
	return 0;
}

int remote_interest_rebind(struct remote_interest *ri, natsConnection *nc, natsConnection *snc)
{
	if (!ri)
		return 0;
	ri->nc = nc;
	/* Down until both are up: then "hello" and the snapshot go out, as
	 * after a reconnect (remote_interest_check_connections). */
	ri->connected = false;
	ri->settle_until = UINT64_MAX;
	if (snc == ri->snc)
		return 0;
	ri->snc = snc;
	unsubscribe(ri); /* closed with its connection: only destroyed */
	return subscribe(ri);
}

uint64_t remote_interest_pending_dropped(const struct remote_interest *ri)
{
	if (!ri)
		return 0;
	return (ri->sub ? sender_sub_dropped(ri->sub) : 0) + (ri->ack_sub ? sender_sub_dropped(ri->ack_sub) : 0);
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
	ri->sender = NULL; /* stopped before this */
	if (ri->connected) {
		announce(ri, "bye", true, NULL, 0, NULL, NULL, NULL, NULL, NULL);
		natsConnection_FlushTimeout(ri->nc, 500);
	}
	unsubscribe(ri);
}

void remote_interest_free(struct remote_interest *ri)
{
	if (!ri)
		return;
	while (ri->npeers)
		peer_forget(ri, ri->npeers - 1);
	if (ri->remote.root)
		trie_destroy(&ri->remote, NULL, NULL);
	dormant_free(&ri->dormant);
	ann_filters_free(&ri->local);
	wisp_free(ri->node);
	wisp_free(ri->subject);
	wisp_free(ri->ack_subject);
	wisp_free(ri);
}
