/*
 * MQTT 5 session state (session/session.h, struct sess_v5): Session Expiry
 * Interval [MQTT-3.1.2-11]..[MQTT-3.1.2-23] with a timer per offline
 * session (no scan), Will Delay Interval [MQTT-3.1.3-9], and the current
 * connection's inbound topic aliases [MQTT-3.3.2-12]. The state exists only
 * for sessions that need it, so 3.1.1 clients pay nothing.
 *
 * Single threaded, on the loop.
 */
#ifndef WISP_PROTO_SESSION_V5_H
#define WISP_PROTO_SESSION_V5_H

#include "broker.h"

/* The session's v5 state, allocated on first use; NULL when out of memory. */
struct sess_v5 *session_v5_get(struct broker *b, struct session *s);
/* Frees it (session end or broker shutdown): the timers stop and a delayed
 * will is dropped unpublished. */
void session_v5_free(struct session *s);

/* The session is connected again: its expiry stops and a delayed will is
 * discarded, never published [MQTT-3.1.3-9]; the new connection starts
 * with no topic aliases [MQTT-3.3.2-7]. */
void session_v5_online(struct broker *b, struct session *s);
/* The session (not clean) went offline: its expiry timer starts, unless it
 * never expires. Takes `will` (a reference, or NULL), to publish after the
 * will delay or at the session's end, whichever is first. */
void session_v5_offline(struct broker *b, struct session *s, struct msg *will);
/* The session ends now (Clean Start, or expiry): a delayed will is
 * published first [MQTT-3.1.3-9]. */
void session_v5_end(struct broker *b, struct session *s);

/* After the store's replay: every restored session starts its expiry (a
 * 3.1.1 one too when limits.max_session_expiry bounds it). */
void session_v5_restored(struct broker *b);

/* The topic a PUBLISH with a Topic Alias stands for: sets the alias when
 * the PUBLISH has a topic, else looks it up. 0 with topic and len set, or
 * WISP_EPROTO with `why` (alias 0 or over the maximum: 0x94
 * [MQTT-3.3.2-9]; an alias this connection never set: protocol error), or
 * WISP_ENOMEM. */
int session_v5_alias(struct broker *b, struct session *s, uint16_t alias, const char **topic, size_t *len,
		     enum reason *why);

#endif
