/*
 * Start-up (handover.h; the subjects and headers: handover.c's top
 * comment): until the other nodes' answers to this node's "dir" request are
 * in, a Clean Start 0 CONNECT of a session restored from the store waits,
 * and the request goes out a second time.
 */
#include "handover_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "err.h"
#include "link.h"
#include "log.h"

/*
 * Whether a CONNECT of `id` (Clean Start 0) must wait for the start-up
 * answers: its session here was restored from the store with a claim time
 * (so an answer may show a later copy elsewhere, which on_dir_answer's
 * comparison ends here), and no connect of it here or claim of it heard
 * since. Resumed before the answers, the stale copy would claim the id
 * and so end the other node's later copy (the session the client built
 * there). A session without a time has nothing to compare: no wait.
 */
bool ho_must_hold(const struct handover *h, const char *id, size_t len)
{
	if (!h->starting)
		return false;
	const struct session *s = sess_find(&h->b->sessions, id, len);
	return s && !s->clean && !s->conn && sess_claim_ns(s) && !handover_claimed_here(h, id, len);
}

/* The CONNECT waits (its input paused) until ho_release_holds, or at most
 * cluster.handover_timeout (ho_on_fetch_timer). 0: out of memory, it goes on. */
int ho_hold_connect(struct handover *h, struct conn *c, const char *id, size_t len)
{
	struct fetch *f = wisp_calloc(1, sizeof *f + len + 1);
	if (!f)
		return 0;
	f->h = h;
	f->c = c;
	f->state = FETCH_HOLDING;
	f->started_us = ho_now_us();
	f->id_len = len;
	memcpy(f->id, id, len);
	list_push_back(&h->fetches, &f->link);
	ho_index_add(h, f);
	loop_timer_start(h->b->loop, &f->timer, h->b->cfg->cluster.handover_timeout, ho_on_fetch_timer);
	log_msg(LOG_INFO, "cluster", "client %.*s: its session restored here waits for the other nodes' answers at "
		"start", (int)len, id);
	return WISP_EAGAIN;
}

/* The held CONNECTs go on: all of them (`all`: the answers are in), or
 * those whose session here has ended (a later copy elsewhere: the CONNECT
 * now fetches it). Moved to a list of their own first: a CONNECT handled
 * again may close connections, whose holds then leave that list too. */
void ho_release_holds(struct handover *h, bool all)
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
			(int)f->id_len, f->id, (ho_now_us() - f->started_us) / 1000);
		ho_fetch_resume(f);
	}
}

/* Whether the store brought back a persistent session with the time of its
 * claim here: the start-up answers may show a later copy elsewhere. */
bool ho_restored_with_times(const struct broker *b)
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
 * second time 1 to 2 s after the claim connection is up (ho_on_startup_timer).
 * Debug builds: WISP_DEBUG_HOLD_START_REQUEST=<path> sends it only once
 * <path> exists (looked at every second), so that a test's CONNECT comes
 * before the answers (e2e 40): NATS not there yet, in effect. */
void ho_ask_at_start(struct handover *h)
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
	ho_subject_of(h, h->self, ".dir", reply);
	natsMsg *nm = NULL;
	if (ho_publish(h, dir, reply, "dir", NULL, 0, &nm) == NATS_OK) {
		/* Whether the link is up or not (ho_publish_msg would drop it): the
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
bool ho_dir_sub_held(void)
{
#ifndef NDEBUG
	const char *path = getenv("WISP_DEBUG_HOLD_DIR_SUB");
	return path && access(path, F_OK) != 0;
#else
	return false;
#endif
}

void ho_on_startup_timer(struct loop *l, struct loop_timer *t)
{
	struct handover *h = container_of(t, struct handover, startup_timer);
	uint64_t now = loop_now_s(l);
#ifndef NDEBUG
	if (h->ask_pending)
		ho_ask_at_start(h);
	if (h->dir_sub_late && !ho_dir_sub_held() && ho_subscribe_dir(h) == 0)
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
		ho_ask_at_start(h);
	}
	if (h->starting && h->answers_due_s && now >= h->answers_due_s) {
		h->starting = false;
		ho_local_ids_free(h);
		ho_release_holds(h, true);
	} else if (h->starting) {
		ho_release_holds(h, false);
	}
	if (h->starting || h->ask_again_s || h->ask_pending || h->dir_sub_late)
		loop_timer_start(l, t, 1, ho_on_startup_timer);
}
