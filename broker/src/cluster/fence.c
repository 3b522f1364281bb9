/* The filters' move between connections and its fence: fence.h. */
#include "fence.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fence_init(struct fence *f, const struct fence_ops *ops, void *ud, const char *node)
{
	*f = (struct fence){.ops = ops, .ud = ud, .node = node, .reading = READ_CNATS};
}

static void end_wait(struct fence *f)
{
	f->ops->timer(f->ud, FENCE_T_WAIT, false);
	f->reading = READ_WRITER;
	f->pending = false;
	f->ops->resume(f->ud);
}

/* Both copies came: what cnats read after its copy, the data connection
 * brings. */
static void done(struct fence *f)
{
	f->ops->end_cnats(f->ud);
	end_wait(f);
}

/* As before the fence existed: cnats's subscriptions stay SWITCH_GRACE_S,
 * and both connections bring every message meanwhile. */
static void skip(struct fence *f, const char *why)
{
	f->ops->skipped(f->ud, why);
	f->ops->timer(f->ud, FENCE_T_GRACE, false); /* the whole SWITCH_GRACE_S from now */
	f->ops->timer(f->ud, FENCE_T_GRACE, true);
	f->writer = true;
	end_wait(f);
}

static void send_fence(struct fence *f)
{
	if (f->no_fence) {
		f->pending = false; /* as if published and lost */
		return;
	}
	if (f->reading != READ_FENCE || !f->pending || !f->ready)
		return;
	char text[24];
	snprintf(text, sizeof text, "%" PRIu64, f->epoch);
	if (f->ops->publish(f->ud, text))
		f->pending = false;
}

static void probe(struct fence *f, bool listening, uint64_t now_ms)
{
	if (!listening || f->ready)
		return;
	if (f->probe_ms && now_ms - f->probe_ms < 1000)
		return;
	char text[24];
	snprintf(text, sizeof text, "p%" PRIu64, f->probe_n + 1);
	if (!f->ops->publish(f->ud, text))
		return; /* '<node>-share' down: its coming back pokes again */
	f->probe_n++;
	f->probe_ms = now_ms;
	f->ops->timer(f->ud, FENCE_T_RETRY, true);
}

/* Every filter is in place on the data connection: the fence, unless the
 * main connection is lost (nothing comes through cnats then). */
static void start(struct fence *f, bool main_up)
{
	f->cnats = f->writer = false;
	f->epoch++;
	if (!main_up) {
		skip(f, "the main connection is lost");
		return;
	}
	f->reading = READ_FENCE;
	f->pending = true;
	send_fence(f);
	f->ops->timer(f->ud, FENCE_T_WAIT, true);
}

void fence_writer_up(struct fence *f)
{
	f->reading = READ_BOTH;
	f->cnats = f->writer = false;
}

void fence_writer_subscribed(struct fence *f, uint64_t mark) { f->mark = mark; }

void fence_writer_marked(struct fence *f, uint64_t n, bool main_up)
{
	if (f->reading == READ_BOTH && n >= f->mark)
		start(f, main_up);
}

bool fence_writer_down(struct fence *f)
{
	f->ops->timer(f->ud, FENCE_T_WAIT, false);
	f->cnats = f->writer = false;
	f->pending = false;
	if (f->reading == READ_CNATS)
		return false;
	f->ops->timer(f->ud, FENCE_T_GRACE, false);
	f->reading = READ_CNATS;
	return true;
}

void fence_listen_anew(struct fence *f)
{
	f->ready = false;
	f->probe_ms = 0;
}

void fence_main_lost(struct fence *f)
{
	f->ready = false;
	f->probe_n++;
	if (f->reading == READ_FENCE && !f->cnats)
		skip(f, "the main connection is lost");
}

void fence_poke(struct fence *f, bool listening, uint64_t now_ms)
{
	probe(f, listening, now_ms);
	send_fence(f);
}

void fence_heard(struct fence *f, const void *payload, size_t len, bool from_cnats)
{
	char text[24];
	if (len == 0 || len >= sizeof text)
		return;
	memcpy(text, payload, len);
	text[len] = '\0';
	if (text[0] == 'p') {
		if (from_cnats && strtoull(text + 1, NULL, 10) == f->probe_n && !f->ready) {
			f->ready = true;
			f->ops->timer(f->ud, FENCE_T_RETRY, false);
			send_fence(f);
		}
		return;
	}
	if (f->reading != READ_FENCE || strtoull(text, NULL, 10) != f->epoch)
		return; /* an earlier move's, late */
	if (from_cnats)
		f->cnats = true;
	else
		f->writer = true;
	if (f->cnats && f->writer)
		done(f);
	else if (f->writer)
		f->ops->pause(f->ud); /* until cnats's copy */
}

void fence_wait_over(struct fence *f, bool share_up)
{
	if (f->reading != READ_FENCE)
		return;
	char why[400];
	if (f->pending && !share_up)
		snprintf(why, sizeof why, "not published within %u s: '%s-share' is down", FENCE_WAIT_S, f->node);
	else if (f->pending)
		snprintf(why, sizeof why, "not published within %u s: cnats has not heard a probe of it yet",
			 FENCE_WAIT_S);
	else
		snprintf(why, sizeof why, "it did not come through %s within %u s",
			 f->cnats ? "the data connection" : f->writer ? "the main connection" : "either connection",
			 FENCE_WAIT_S);
	skip(f, why);
}

/* The data connection has had the filters for SWITCH_GRACE_S without the
 * fence: what cnats read before the mark has long been routed, and the
 * rest the data connection brought too. */
void fence_grace_over(struct fence *f)
{
	if (f->reading == READ_WRITER)
		f->ops->end_cnats(f->ud);
}

void fence_retry_due(struct fence *f, bool listening, uint64_t now_ms)
{
	f->probe_ms = 0;
	probe(f, listening, now_ms);
}
