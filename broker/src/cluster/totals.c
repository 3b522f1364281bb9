/*
 * $SYS cluster-wide totals (totals.h).
 *
 * A node's figures: payload "name=value name=value ...", metrics.c's
 * Prometheus names, header Wisp-Node. Names a node does not know are
 * ignored, so nodes of different versions still add up what they share.
 */
#include "totals.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "err.h"
#include "link.h"
#include "log.h"
#include "metrics.h"
#include "rules.h"
#include "sender.h"
#include "sys.h"

#define TOTALS_NODES_MAX 256u
#define NODE_NAME_MAX 64u
/* A node unheard for this many intervals is left out of the totals. */
#define STALE_INTERVALS 3u

/* The summed figures: additive across nodes (not uptime, maxima, or the
 * retained store, which every node holds whole). */
static const char *const summed[] = {
	"clients_connected", "clients_disconnected", "clients_sessions", "messages_received_total",
	"messages_sent_total", "bytes_received_total", "bytes_sent_total", "subscriptions",
	"heap_bytes", "cluster_sent_total", "cluster_received_total", "cluster_dropped_total",
};
#define NSUMMED (sizeof summed / sizeof summed[0])

struct node_figures {
	char name[NODE_NAME_MAX];
	uint64_t seen_at; /* loop second */
	uint64_t v[NSUMMED];
};

struct totals {
	struct broker *b;
	natsConnection *nc;
	const struct nats_link *link; /* nc up (link.h) */
	struct sender *sender;        /* publishes on nc off the loop thread (sender.h) */
	struct sender_sub *sub;  /* made and ended by `sender` */
	sender_msg_fn on_msg;    /* the subscription's, kept for totals_rebind */
	void *on_msg_closure;
	char *subject;
	char node[NODE_NAME_MAX];
	const struct metric *rows[NSUMMED];
	struct loop_timer timer;
	struct node_figures nodes[TOTALS_NODES_MAX];
	size_t count;
	bool full_logged;
};

static struct node_figures *node_slot(struct totals *t, const char *name)
{
	uint64_t now = loop_now_s(t->b->loop), stale = (uint64_t)t->b->cfg->sys_interval * STALE_INTERVALS;
	struct node_figures *free_slot = NULL;
	for (size_t i = 0; i < t->count; i++) {
		if (strcmp(t->nodes[i].name, name) == 0)
			return &t->nodes[i];
		if (!free_slot && t->nodes[i].seen_at + stale < now)
			free_slot = &t->nodes[i]; /* a node gone: its place is reused */
	}
	if (!free_slot && t->count < TOTALS_NODES_MAX)
		free_slot = &t->nodes[t->count++];
	if (!free_slot) {
		if (!t->full_logged)
			log_msg(LOG_WARNING, "cluster", "more than %u nodes report figures: $SYS/cluster/ counts the "
				"first %u only", TOTALS_NODES_MAX, TOTALS_NODES_MAX);
		t->full_logged = true;
		return NULL;
	}
	memset(free_slot, 0, sizeof *free_slot);
	snprintf(free_slot->name, sizeof free_slot->name, "%s", name);
	return free_slot;
}

bool totals_message(struct totals *t, natsMsg *nm)
{
	if (!t || strcmp(natsMsg_GetSubject(nm), t->subject) != 0)
		return false;
	const char *node = NULL;
	if (natsMsgHeader_Get(nm, "Wisp-Node", &node) != NATS_OK || !node || strcmp(node, t->node) == 0)
		return true; /* unnamed, or this node's own (echoed): it counts itself directly */
	struct node_figures *f = node_slot(t, node);
	if (!f)
		return true;
	f->seen_at = loop_now_s(t->b->loop);
	int len = natsMsg_GetDataLength(nm);
	figures_parse(natsMsg_GetData(nm), len > 0 ? (size_t)len : 0, summed, NSUMMED, f->v);
	return true;
}

static void tick(struct totals *t)
{
	struct broker *b = t->b;
	struct metrics_snap snap;
	metrics_snapshot(b, &snap);
	struct node_figures *self = node_slot(t, t->node);
	if (!self)
		return;
	uint64_t now = loop_now_s(b->loop);
	self->seen_at = now;
	char payload[NSUMMED * 48];
	size_t n = 0;
	for (size_t i = 0; i < NSUMMED; i++) {
		uint64_t u = 0;
		double d = 0;
		if (t->rows[i] && metrics_value(b, &snap, t->rows[i], 0, &u, &d))
			u = (uint64_t)d;
		self->v[i] = u;
		int w = snprintf(payload + n, sizeof payload - n, "%s%s=%" PRIu64, n ? " " : "", summed[i], u);
		if (w > 0 && (size_t)w < sizeof payload - n)
			n += (size_t)w;
	}
	natsMsg *nm = NULL;
	natsStatus st = natsMsg_Create(&nm, t->subject, NULL, payload, (int)n);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Node", t->node);
	/* Not while either connection is down (link.h), or while NATS is not
	 * taking what the sender queued: the figures are sent again next
	 * time. */
	if (st == NATS_OK && b->stats.cluster.connected && nats_link_up(t->link) &&
	    sender_publish_control(t->sender, t->nc, nm, n + 256, true))
		nm = NULL;
	natsMsg_Destroy(nm);

	uint64_t stale = (uint64_t)b->cfg->sys_interval * STALE_INTERVALS;
	uint64_t sum[NSUMMED] = {0}, nodes = 0;
	for (size_t k = 0; k < t->count; k++) {
		const struct node_figures *f = &t->nodes[k];
		if (!f->seen_at || f->seen_at + stale < now)
			continue;
		nodes++;
		for (size_t i = 0; i < NSUMMED; i++)
			sum[i] += f->v[i];
	}
	char topic[160], value[24];
	for (size_t i = 0; i < NSUMMED; i++) {
		if (!t->rows[i] || !t->rows[i]->sys)
			continue;
		snprintf(topic, sizeof topic, "$SYS/cluster/%s", t->rows[i]->sys);
		snprintf(value, sizeof value, "%" PRIu64, sum[i]);
		sys_publish_value(b, topic, value);
	}
	snprintf(value, sizeof value, "%" PRIu64, nodes);
	sys_publish_value(b, "$SYS/cluster/nodes", value);
}

static void on_tick(struct loop *l, struct loop_timer *timer)
{
	struct totals *t = container_of(timer, struct totals, timer);
	tick(t);
	loop_timer_start(l, timer, t->b->cfg->sys_interval, on_tick);
}

int totals_start(struct totals **out, struct broker *b, natsConnection *nc, struct sender *sender,
		 const struct nats_link *link, const char *node, const char *prefix,
		 sender_msg_fn on_msg, void *on_msg_closure)
{
	*out = NULL;
	if (b->cfg->sys_interval == 0)
		return 0;
	struct totals *t = wisp_calloc(1, sizeof *t);
	if (!t)
		return WISP_ENOMEM;
	list_init(&t->timer.link);
	t->b = b;
	t->nc = nc;
	t->sender = sender;
	t->link = link;
	snprintf(t->node, sizeof t->node, "%s", node);
	for (size_t i = 0; i < NSUMMED; i++)
		for (size_t r = 0; r < metrics_count; r++)
			if (strcmp(metrics_table[r].name, summed[i]) == 0)
				t->rows[i] = &metrics_table[r];
	size_t n = strlen("$WISP.") + strlen(prefix) + strlen(".figures") + 1;
	t->subject = wisp_malloc(n);
	if (!t->subject) {
		totals_free(t);
		return WISP_ENOMEM;
	}
	snprintf(t->subject, n, "$WISP.%s%sfigures", prefix, *prefix ? "." : "");
	t->on_msg = on_msg;
	t->on_msg_closure = on_msg_closure;
	t->sub = sender_subscribe(sender, nc, t->subject, NULL, on_msg, on_msg_closure, 0);
	if (!t->sub) {
		totals_free(t);
		return WISP_ENOMEM;
	}
	loop_timer_start(b->loop, &t->timer, b->cfg->sys_interval, on_tick);
	*out = t;
	return 0;
}

int totals_rebind(struct totals *t, natsConnection *nc)
{
	if (!t)
		return 0;
	if (t->sub)
		sender_unsubscribe(t->sender, t->sub); /* closed with its connection: only destroyed */
	t->nc = nc;
	t->sub = sender_subscribe(t->sender, nc, t->subject, NULL, t->on_msg, t->on_msg_closure, 0);
	return t->sub ? 0 : WISP_ENOMEM;
}

uint64_t totals_pending_dropped(const struct totals *t) { return t && t->sub ? sender_sub_dropped(t->sub) : 0; }

void totals_stop(struct totals *t)
{
	if (!t)
		return;
	if (loop_timer_armed(&t->timer))
		loop_timer_stop(t->b->loop, &t->timer);
	if (t->sub)
		sender_unsubscribe(t->sender, t->sub);
	t->sub = NULL;
}

void totals_free(struct totals *t)
{
	if (!t)
		return;
	totals_stop(t);
	wisp_free(t->subject);
	wisp_free(t);
}
