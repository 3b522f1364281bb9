/*
 * MQTT 5 session state (session_v5.h). Expiry and will delay are loop
 * timers (second granularity, O(1) to arm and stop) inside the session's
 * struct sess_v5; the store learns of an expired session through
 * the observer's session_del like any other session end.
 */
#include "session_v5.h"

#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

static struct broker *broker_of(const struct sess_v5 *v) { return v->ctx; }

struct sess_v5 *session_v5_get(struct broker *b, struct session *s)
{
	if (s->v5)
		return s->v5;
	struct sess_v5 *v = wisp_calloc(1, sizeof *v);
	if (!v)
		return NULL;
	v->s = s;
	v->ctx = b;
	list_init(&v->expiry_timer.link);
	list_init(&v->will_timer.link);
	s->v5 = v;
	return v;
}

static void free_table(struct sess_alias *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++)
		wisp_free(t[i].topic);
	wisp_free(t);
}

/* Both directions' aliases belong to one connection [MQTT-3.3.2-10]. */
static void free_aliases(struct sess_v5 *v)
{
	free_table(v->aliases, v->alias_max);
	v->aliases = NULL;
	free_table(v->out_aliases, v->out_alias_max);
	v->out_aliases = NULL;
	v->out_alias_max = 0;
	v->out_alias_next = 0;
}

void session_v5_free(struct session *s)
{
	struct sess_v5 *v = s->v5;
	if (!v)
		return;
	struct broker *b = broker_of(v);
	loop_timer_stop(b->loop, &v->expiry_timer);
	loop_timer_stop(b->loop, &v->will_timer);
	msg_unref(v->will);
	free_aliases(v);
	wisp_free(v);
	s->v5 = NULL;
}

void session_v5_online(struct broker *b, struct session *s)
{
	struct sess_v5 *v = s->v5;
	if (!v)
		return;
	loop_timer_stop(b->loop, &v->expiry_timer);
	loop_timer_stop(b->loop, &v->will_timer);
	if (v->will) {
		/* [MQTT-3.1.3-9] reconnected within the delay: never published. */
		msg_unref(v->will);
		v->will = NULL;
	}
	SESS_OBSERVE(&b->observer, will_del, s); /* the new CONNECT's will replaces it */
	free_aliases(v);
	v->alias_max = b->cfg->limits.max_topic_alias;
}

static void publish_will(struct broker *b, struct sess_v5 *v)
{
	struct msg *will = v->will;
	v->will = NULL;
	loop_timer_stop(b->loop, &v->will_timer);
	if (!will)
		return;
	SESS_OBSERVE(&b->observer, will_del, v->s);
	broker_publish_will(b, will);
	msg_unref(will);
}

static void on_will_delay(struct loop *l, struct loop_timer *t)
{
	struct sess_v5 *v = container_of(t, struct sess_v5, will_timer);
	(void)l;
	publish_will(broker_of(v), v);
}

void session_v5_end(struct broker *b, struct session *s)
{
	if (s->v5)
		publish_will(b, s->v5);
}

static void on_expiry(struct loop *l, struct loop_timer *t)
{
	struct sess_v5 *v = container_of(t, struct sess_v5, expiry_timer);
	struct broker *b = broker_of(v);
	struct session *s = v->s;
	(void)l;
	log_msg(LOG_INFO, "conn", "session %s expired after %u s offline", s->client_id, (unsigned)v->expiry);
	publish_will(b, v); /* the will's delay ends with the session */
	SESS_OBSERVE(&b->observer, session_del, s);
	sess_destroy(&b->sessions, b->subs, s); /* frees v */
}

void session_v5_offline(struct broker *b, struct session *s, struct msg *will)
{
	struct sess_v5 *v = s->v5;
	if (!v) {
		if (will) {
			broker_publish_will(b, will);
			msg_unref(will);
		}
		return;
	}
	free_aliases(v);
	if (will && v->will_delay == 0) {
		SESS_OBSERVE(&b->observer, will_del, s);
		broker_publish_will(b, will);
		msg_unref(will);
		will = NULL;
	}
	if (will) {
		v->will = will;
		if (v->will_delay < v->expiry)
			loop_timer_start(b->loop, &v->will_timer, v->will_delay, on_will_delay);
		/* else the session's end publishes it */
	}
	if (v->expiry != SESS_EXPIRY_NEVER)
		loop_timer_start(b->loop, &v->expiry_timer, v->expiry, on_expiry);
	else if (will && !loop_timer_armed(&v->will_timer))
		loop_timer_start(b->loop, &v->will_timer, v->will_delay, on_will_delay);
}

int session_v5_alias(struct broker *b, struct session *s, uint16_t alias, const char **topic, size_t *len,
		     enum reason *why)
{
	struct sess_v5 *v = s->v5;
	if (!v || alias == 0 || alias > v->alias_max) {
		*why = REASON_TOPIC_ALIAS_INVALID; /* [MQTT-3.3.2-8][MQTT-3.3.2-9] */
		return WISP_EPROTO;
	}
	if (!v->aliases) {
		v->aliases = wisp_calloc(v->alias_max, sizeof *v->aliases);
		if (!v->aliases) {
			*why = REASON_NO_MEMORY;
			return WISP_ENOMEM;
		}
	}
	struct sess_alias *a = &v->aliases[alias - 1];
	if (*len == 0) {
		if (!a->topic) {
			*why = REASON_TOPIC_ALIAS_UNKNOWN; /* no mapping on this connection */
			return WISP_EPROTO;
		}
		*topic = a->topic;
		*len = a->len;
		return 0;
	}
	if (a->len != *len || memcmp(a->topic, *topic, *len) != 0) {
		char *copy = wisp_strndup(*topic, *len);
		if (!copy) {
			*why = REASON_NO_MEMORY;
			return WISP_ENOMEM;
		}
		wisp_free(a->topic);
		a->topic = copy;
		a->len = (uint16_t)*len;
	}
	(void)b;
	return 0;
}

void session_v5_restored(struct broker *b)
{
	uint32_t bound = b->cfg->limits.max_session_expiry;
	for (size_t i = 0; i < b->sessions.nbuckets; i++) {
		struct session *s = b->sessions.buckets[i];
		while (s) {
			struct session *next = s->hash_next; /* never freed here: timers fire later */
			struct sess_v5 *v = s->v5;
			if (!v && bound && (v = session_v5_get(b, s)) != NULL)
				v->expiry = SESS_EXPIRY_NEVER;
			if (v && bound && v->expiry > bound)
				v->expiry = bound;
			if (v && !s->conn && v->expiry != SESS_EXPIRY_NEVER)
				loop_timer_start(b->loop, &v->expiry_timer, v->expiry, on_expiry);
			/* A stored will: its connection ended with the broker. It goes
			 * out after its delay, from now, or with the session (a timer
			 * even for no delay: routing waits for the loop). */
			if (v && v->will && (v->will_delay < v->expiry || v->expiry == SESS_EXPIRY_NEVER))
				loop_timer_start(b->loop, &v->will_timer, v->will_delay, on_will_delay);
			s = next;
		}
	}
}
