/*
 * Private to broker/src/cluster/handover*.c: the handover's state and the
 * functions its files share. The API is handover.h; the protocol is
 * described there and in handover.c's top comment.
 *   handover.c          sending, the directory, the messages' dispatch, the
 *                       life cycle
 *   handover_fetch.c    the asking node (and the cut)
 *   handover_export.c   the holding node (and the tail)
 *   handover_restore.c  start-up: restored sessions wait for the other
 *                       nodes' answers
 */
#ifndef WISP_CLUSTER_HANDOVER_IMPL_H
#define WISP_CLUSTER_HANDOVER_IMPL_H

#include "handover.h"
#include "list.h"
#include "loop.h"
#include "seq_window.h"

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
	struct dir_answers *answers; /* to those requests (dir_answers.h) */
	struct loop_timer answer_timer; /* their next step */
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
	 * in, a CONNECT of a restored session waits (ho_hold_connect). */
	bool starting;
	uint64_t answers_due_s;  /* loop s: the answers are in by then; 0: the claim connection is not up yet */
	bool ask_pending;        /* the start-up request is not out yet (debug builds' hold only) */
	bool dir_sub_late;       /* the requests' subscription is not made yet (debug builds' hold only) */
	uint64_t ask_again_s;    /* loop s: the start-up request goes out a second time then; 0: not due */
	struct loop_timer startup_timer; /* looks every second */
	/* The digests of the persistent sessions here, sorted: made at the
	 * first start-up answer, dropped once starting ends (kept until
	 * handover_free by a node that was not starting: match_held). */
	uint64_t *local_ids;
	size_t nlocal_ids;
};

/* handover.c */
/* CLOCK_MONOTONIC, in microseconds. */
uint64_t ho_now_us(void);
/* The 64-bit digest of a client id or node name, never 0. */
uint64_t ho_digest(const char *s, size_t len);
/* Publishes *nm through the sender, taking it (NULL then); none while the
 * connection is down. */
natsStatus ho_publish_msg(struct handover *h, natsMsg **nm);
/* "<base><node hex><suffix>" into out (SUBJECT_MAX). */
void ho_subject_of(const struct handover *h, uint64_t node, const char *suffix, char *out);
/* A message of Wisp-Kind `kind` from this node, published; with `keep`,
 * only made: the caller adds headers and publishes it (ho_publish_msg). */
natsStatus ho_publish(struct handover *h, const char *subject, const char *reply, const char *kind,
		   const void *data, size_t len, natsMsg **keep);
/* This node's routed stream set, the caller's to free; NULL: no cut. */
char *ho_routed_set(const struct handover *h);
/* The node that claimed `id` last, if another than this one; 0 if none. */
uint64_t ho_holder_of(const struct handover *h, const char *id, size_t len);
/* Subscribes to the other nodes' start-up requests. */
int ho_subscribe_dir(struct handover *h);

/* handover_fetch.c */
/* Makes the fetches' tables or doubles them; -1: out of memory, none made. */
int ho_index_grow(struct handover *h);
/* f joins the fetches' tables (its list link is the caller's). */
void ho_index_add(struct handover *h, struct fetch *f);
void ho_fetch_free(struct fetch *f);
/* The waiting CONNECT goes on (its input resumed). */
void ho_fetch_resume(struct fetch *f);
/* A fetch's (or a held CONNECT's) timer: its timeout or next look. */
void ho_on_fetch_timer(struct loop *l, struct loop_timer *t);
/* "<self>.r<token>": an answer to the fetch of `token`, or its tail. */
void ho_on_answer(struct handover *h, natsMsg *nm, uint64_t token);
/* A stream message's origin: its node, and its Wisp-Seq's run and number. */
bool ho_origin_of(natsMsg *nm, const char **node, const char **run, size_t *run_len, uint64_t *n);

/* handover_restore.c */
/* Whether a CONNECT of `id` waits for the start-up answers. */
bool ho_must_hold(const struct handover *h, const char *id, size_t len);
/* The CONNECT waits for them: WISP_EAGAIN; 0: out of memory, it goes on. */
int ho_hold_connect(struct handover *h, struct conn *c, const char *id, size_t len);
/* The held CONNECTs go on: all of them, or those whose session here ended. */
void ho_release_holds(struct handover *h, bool all);
/* Whether the store brought back a persistent session with a claim time. */
bool ho_restored_with_times(const struct broker *b);
/* The "dir" request to every node: who holds which session. */
void ho_ask_at_start(struct handover *h);
/* Debug builds: whether the "dir" subscription waits
 * (WISP_DEBUG_HOLD_DIR_SUB). */
bool ho_dir_sub_held(void);
/* Drops h->local_ids (handover.c's match_held). */
void ho_local_ids_free(struct handover *h);
/* Every second while starting: the second request, the holds' end. */
void ho_on_startup_timer(struct loop *l, struct loop_timer *t);

/* handover_export.c */
void ho_leaving_free(struct leaving *l);
/* "<self>.req": a session asked for: exported, or a status. */
void ho_on_request(struct handover *h, natsMsg *nm);
/* "<self>.done": the asker holds the session: the tail, or the copy ends. */
void ho_on_done(struct handover *h, natsMsg *nm);

#endif
