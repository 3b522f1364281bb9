/*
 * The move of a node's filter subscriptions from cnats (the main
 * connection) to the data connection (nats_writer.h), without a message
 * lost, repeated or out of its publisher's order ([MQTT-4.6.0-6]).
 *
 * Up (again), the data connection subscribes to the fence's subject and to
 * every filter, then a mark; the filters stay on cnats meanwhile
 * (READ_BOTH), which brings everything, and what the data connection
 * brings is dropped (its SUBs are not all in place). With the mark back
 * every filter is in place on both, and the node publishes the fence on
 * '<node>-share' (READ_FENCE): nats-server puts it into both connections'
 * streams, what it handled before the fence ahead of it in both, what it
 * handled after behind it. So cnats routes up to its copy of the fence and
 * the data connection from its own: the data connection drops what comes
 * before its copy and pauses at it until cnats's copy has come through
 * cnats's delivery thread and the inbox (cnats, two threads longer, is the
 * slower). cnats's subscriptions end once both copies came; what cnats
 * brings after its copy meanwhile goes through the repeat check (the data
 * connection brings it too), a NATS-native publisher's is dropped.
 *
 * nats-server hands a message to its subscribers one after the other, not
 * at one instant, so a message handed over at the fence's instant can be
 * ahead of it on one connection and behind it on the other; so can one
 * that reaches the two connections through different servers of a NATS
 * cluster (over their routes). A Wisp node's message (numbered) goes
 * through the repeat check on both sides of the fence, so it is routed
 * once, if late; a NATS-native publisher's may then be missed or come
 * twice.
 *
 * A fence published before cnats's subscription to it is in place would
 * reach the data connection only, which would wait for nothing. So until
 * cnats has heard one since that subscription was made or its connection
 * came back, the node publishes a numbered probe ("p<n>"), at most one a
 * second, and the fence waits. The fence may not come at all
 * ('<node>-share' down, a connection lost): after FENCE_WAIT_S, or at once
 * when the main connection is lost, the move goes on without it: cnats's
 * subscriptions stay SWITCH_GRACE_S more, and both bring every message
 * meanwhile, in no order between them (the repeat check routes a numbered
 * one once).
 *
 * Pure (no NATS, no loop, no clock of its own): cluster.c drives it with
 * what happened (the data connection up, its mark back, a copy heard, a
 * timer due) and does what it asks through fence_ops; the unit test plays
 * both. Memory: none beyond the struct.
 */
#ifndef WISP_CLUSTER_FENCE_H
#define WISP_CLUSTER_FENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How long the move waits for the fence to come through both connections,
 * at least one second less (a tick of the loop's wheel): a round trip
 * normally, plus what cnats had read and not handed over yet (seconds only
 * for a loop or a delivery thread far behind;
 * tests/e2e/48_cluster_data_connection.py's slowed one takes about two).
 * The data connection is paused meanwhile once its copy came. */
#define FENCE_WAIT_S 5u

/* Without the fence, how long cnats's subscriptions stay once the data
 * connection has the filters: far longer than cnats's hand-over of what it
 * read takes (a millisecond), as the inbox's drops are for a loop that far
 * behind. */
#define SWITCH_GRACE_S 10u

/* Where the filters' subscriptions are read. */
enum fence_reading {
	READ_CNATS = 0, /* on cnats only: the data connection is not up */
	READ_BOTH,      /* on both, until the data connection's mark is back; cnats routes */
	READ_FENCE,     /* on both, the fence out: each routes on its side of it */
	READ_WRITER,    /* on the data connection (cnats's for SWITCH_GRACE_S more without the fence) */
};

enum fence_timer {
	FENCE_T_WAIT,  /* FENCE_WAIT_S: due → fence_wait_over */
	FENCE_T_GRACE, /* SWITCH_GRACE_S: due → fence_grace_over */
	FENCE_T_RETRY, /* 1 s: due → fence_retry_due */
};

/* What the move asks of its driver. */
struct fence_ops {
	/* Publishes text on the fence's subject on '<node>-share': whether it
	 * was queued (false: that connection is down). */
	bool (*publish)(void *ud, const char *text);
	/* The data connection stops reading at its copy; reads on. */
	void (*pause)(void *ud);
	void (*resume)(void *ud);
	/* cnats's filter subscriptions end (what they would bring, the data
	 * connection brings). */
	void (*end_cnats)(void *ud);
	/* Starts the timer unless it is running; stops it. */
	void (*timer)(void *ud, enum fence_timer which, bool on);
	/* The move goes on without the fence, for this reason (to be logged). */
	void (*skipped)(void *ud, const char *why);
};

struct fence {
	const struct fence_ops *ops;
	void *ud;
	const char *node;    /* borrowed: for the reasons said */
	uint8_t reading;     /* enum fence_reading */
	uint64_t mark;       /* the data connection's mark that ends READ_BOTH */
	uint64_t epoch;      /* the fence's number: a late copy of an earlier one is ignored */
	bool cnats, writer;  /* which connections brought this epoch's copy */
	bool pending;        /* READ_FENCE: not published yet */
	bool ready;          /* cnats heard probe probe_n since it listens (anew) */
	uint64_t probe_n;    /* the last probe's number: an earlier one's copy proves nothing */
	uint64_t probe_ms;   /* when it went (the driver's clock); 0: a probe may go now */
	bool no_fence;       /* debug builds' WISP_DEBUG_NO_FENCE: never published (tests) */
};

void fence_init(struct fence *f, const struct fence_ops *ops, void *ud, const char *node);

/* The data connection is up (again): the driver subscribes the fence's
 * subject and the filters on it next, then fence_writer_subscribed with
 * the mark that follows them. */
void fence_writer_up(struct fence *f);
void fence_writer_subscribed(struct fence *f, uint64_t mark);
/* Its mark n came back; main_up: the main connection is connected. */
void fence_writer_marked(struct fence *f, uint64_t n, bool main_up);
/* Lost: whether the filters were (also) on it, so the driver puts them
 * back on cnats. */
bool fence_writer_down(struct fence *f);

/* cnats's subscription to the fence's subject is made anew, or gone:
 * probes must show it hears the subject again. */
void fence_listen_anew(struct fence *f);
/* The main connection is lost: a probe out proves nothing, and a fence not
 * yet heard through cnats will not be. */
void fence_main_lost(struct fence *f);
/* Publishes what is due: a probe (listening: cnats's subscription made and
 * its connection up; now_ms: the driver's clock, never 0), then the fence. */
void fence_poke(struct fence *f, bool listening, uint64_t now_ms);

/* A copy of a fence or probe message (its payload): through cnats's own
 * subscription (from_cnats) or the data connection. */
void fence_heard(struct fence *f, const void *payload, size_t len, bool from_cnats);

/* Timers due (enum fence_timer). share_up: '<node>-share' is connected. */
void fence_wait_over(struct fence *f, bool share_up);
void fence_grace_over(struct fence *f);
void fence_retry_due(struct fence *f, bool listening, uint64_t now_ms);

/* Whether a filter needs its cnats subscription: cnats routes the filters'
 * messages (READ_CNATS, READ_BOTH, READ_FENCE until cnats's copy came). */
static inline bool fence_cnats_reads(const struct fence *f)
{
	return f->reading == READ_CNATS || f->reading == READ_BOTH || (f->reading == READ_FENCE && !f->cnats);
}
/* Whether a message the data connection brings is routed: not before its
 * copy of the fence. Inline: asked for every message it brings. */
static inline bool fence_writer_routes(const struct fence *f)
{
	return !(f->reading == READ_BOTH || (f->reading == READ_FENCE && !f->writer));
}
/* Whether cnats's copy came (this move): a NATS-native message cnats
 * brings after it is the data connection's to route. */
static inline bool fence_cnats_past(const struct fence *f) { return f->cnats; }

#endif
