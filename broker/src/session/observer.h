/*
 * The session observer: every change of durable session state is one
 * event of this interface, and the durable store (proto/persist.c) is its
 * implementation. Whoever changes the state emits the event right after
 * the change, while the objects it names are valid:
 *
 *  - sessions (proto/handle_connect.c): put (created, resumed, owner
 *    bound) and del (ended);
 *  - subscriptions (the router's interest_add and interest_remove): the
 *    subscription as stored, so every option (QoS, No Local, Retain As
 *    Published, Retain Handling, Subscription Identifier) reaches the store
 *    from one place;
 *  - inbound QoS 2 packet ids (proto/handle_publish.c, handle_ack.c);
 *  - outbound messages (session/delivery.c): queued, entered the window or
 *    changed state, acknowledged, cleared with their session, dropped from
 *    the queue unsent;
 *  - retained messages (proto/route.c): set or cleared, and released by
 *    the retained store;
 *  - the will of a v5 persistent session (proto/handle_connect.c,
 *    session_v5.c): set, and gone (published or discarded).
 *
 * A NULL observer, or a NULL member, is skipped: without persistence no
 * event costs more than a test. The observer decides what it records
 * (the store: persistent sessions only, never $SYS). Single threaded.
 */
#ifndef WISP_SESSION_OBSERVER_H
#define WISP_SESSION_OBSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "session.h"

struct sess_observer_ops {
	void (*session_put)(void *ctx, struct session *s);
	void (*session_del)(void *ctx, struct session *s);
	void (*sub_add)(void *ctx, struct session *s, const struct sess_sub *sub); /* new or replaced */
	void (*sub_del)(void *ctx, struct session *s, const char *filter, size_t len);
	void (*qos2_in)(void *ctx, struct session *s, uint16_t packet_id, bool add);
	void (*queued)(void *ctx, struct session *s, struct sess_msg *e);   /* entered the queue */
	void (*flight)(void *ctx, struct session *s, struct sess_msg *e);   /* entered the window or changed state */
	void (*done)(void *ctx, struct session *s, struct sess_msg *e);     /* acknowledged, about to be freed */
	void (*cleared)(void *ctx, struct session *s, struct sess_msg *e);  /* freed with its session */
	void (*unqueued)(void *ctx, struct session *s, struct sess_msg *e); /* left the queue unsent, about to be freed */
	void (*retain_set)(void *ctx, struct msg *m);      /* stored; an empty payload: its topic cleared */
	void (*retain_released)(void *ctx, struct msg *m); /* the retained store let go of m */
	/* A v5 persistent session's will (proto/handle_connect.c, session_v5.c):
	 * set by a CONNECT (its delay in s->v5), gone when published or
	 * discarded. */
	void (*will_set)(void *ctx, struct session *s, struct msg *will);
	void (*will_del)(void *ctx, struct session *s);
};

struct sess_observer {
	const struct sess_observer_ops *ops; /* NULL: nobody observes */
	void *ctx;
};

/* Emits `event` with the arguments after the context. */
#define SESS_OBSERVE(obs, event, ...)                                            \
	do {                                                                     \
		const struct sess_observer *obs_ = (obs);                        \
		if (obs_ && obs_->ops && obs_->ops->event)                       \
			obs_->ops->event(obs_->ctx, __VA_ARGS__);                \
	} while (0)

#endif
