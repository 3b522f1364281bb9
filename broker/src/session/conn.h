/*
 * One network connection: its transport, input buffer, output queue,
 * keepalive timer and protocol state. Kept apart from struct session so a
 * persistent session outlives its socket.
 *
 * States: CONN_AWAIT_CONNECT (the first packet must be CONNECT, within the
 * connect timeout) -> CONN_ACTIVE -> CONN_CLOSING. A closing connection is
 * only marked and queued; it is freed after the loop turn, so no epoll event
 * or callback chain ever holds a pointer to freed memory.
 *
 * Memory: an idle connection holds no input buffer (reads go through a
 * shared scratch buffer and only a partial packet is kept per connection)
 * and an empty output queue. Single threaded.
 *
 * Output is bounded by limits.max_output_buffer, counting every queued byte
 * (deliveries, acks, PINGRESPs): while a connection's unsent output is at or
 * over it the broker stops reading from it (CONN_OUT_PAUSED), so a client
 * that sends requests and never reads the answers holds at most the bound
 * plus one packet's answers; one that stays over it for
 * limits.output_buffer_timeout seconds is disconnected (CONN_OUT_STALLED
 * while that timer runs). Before CONNECT, the partial input buffers of all
 * connections together are bounded by limits.max_unauthenticated_bytes,
 * tracked in conn_set.unauth_bytes.
 */
#ifndef WISP_SESSION_CONN_H
#define WISP_SESSION_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "list.h"
#include "loop.h"
#include "msg.h"
#include "outq.h"
#include "reason.h"
#include "transport.h"

enum conn_state {
	CONN_HANDSHAKE = 0,      /* transport handshake (TLS) in progress */
	CONN_AWAIT_CONNECT = 1,
	CONN_ACTIVE = 2,
	CONN_CLOSING = 3,
};

struct session;
struct auth_job;
struct enhanced_auth;
struct sockaddr;

/* A peer address in 20 bytes instead of a 56-byte string per connection. */
struct conn_addr {
	uint16_t family; /* AF_INET or AF_INET6; 0 unknown */
	uint16_t port;   /* host order */
	uint8_t addr[16];
};

/* Where a connection's password verification stands (see proto/auth.h). */
enum conn_auth {
	CONN_AUTH_NONE = 0,
	CONN_AUTH_PENDING = 1,
	CONN_AUTH_OK = 2,
	CONN_AUTH_BAD = 3,
};

struct conn;

/* Called for each decoded packet (session/input.c). 0 to go on; WISP_EAGAIN
 * to stop reading the connection, leaving this packet and what follows
 * unread until conn_input_resume(); another negative WISP_E* ends the
 * connection for `*why` (on_close is then called). */
typedef int conn_packet_fn(void *ctx, struct conn *c, const struct mqtt_pkt *p, enum reason *why);
/* Ends a connection for `r`; `detail` (or NULL) is a more precise log text.
 * Must leave the connection CONN_CLOSING. */
typedef void conn_close_fn(void *ctx, struct conn *c, enum reason r, const char *detail);

/* What the input layer (session/input.c) needs: the callbacks up, the
 * shared read buffer, and the bounds on input. Set by the layer above. */
struct conn_input {
	conn_packet_fn *on_packet;
	conn_close_fn *on_close;
	void *ctx;
	struct loop *loop;
	uint8_t *scratch;            /* shared read buffer: idle connections hold none */
	size_t scratch_cap;
	uint32_t max_packet_size;    /* 0: the protocol's maximum */
	uint32_t max_connect_size;
	uint64_t max_unauth_bytes;   /* 0: no bound */
	uint64_t max_input_bytes;    /* carried input of all connections together; 0: no bound */
	bool input_over;             /* max_input_bytes episode, logged once */
	size_t max_output;           /* input pauses while output is at or over this */
	uint64_t bytes_received;
	/* Copies the packets of the connection being read routed so far in
	 * this read (the protocol layer adds its fan-out; input.c bounds it). */
	uint64_t fanout;
	bool fanout_over;            /* this read stopped at the bound: the rest waits for the next turn */
	uint64_t fanout_waits;       /* reads so stopped, for $SYS and /metrics */
	bool unauth_over;            /* max_unauth_bytes episode, logged once */
	/* While on_packet runs: the carried buffer the packet alone fills,
	 * which the handler may take (conn_input_take_block), or NULL. */
	const uint8_t *offered;
};

/* The carried input buffer (conn.rbuf) starts this far into its
 * allocation, so a large PUBLISH read into it can become its message
 * without a copy (msg_adopt; session/input.h: conn_input_take_block). */
#define CONN_RBUF_HEADROOM (sizeof(struct msg))

/* The connections a broker owns, and the per-turn work lists. */
struct conn_set {
	struct conn_input in;
	struct list_node all;
	struct list_node dirty;   /* output queued this turn, to flush before sleeping */
	struct list_node closing; /* to free after this turn */
	struct list_node read_more; /* decrypted input left when the read budget ran out */
	struct list_node read_later; /* input left when the fan-out budget ran out: read after every connection's I/O */
	struct list_node handshake_wait; /* TLS handshake steps over the turn's budget (via read_link) */
	size_t count;
	size_t unauth_bytes;      /* input buffers of connections before CONN_ACTIVE */
	size_t input_bytes;       /* input buffers of all connections (conn_account_rbuf) */
};

/* What a connection came in on, as this layer sees it: its listener
 * (proto's server_listener embeds one; a bridge's stand-in listener too),
 * which leads to the connection set. One pointer in every connection for
 * both (issue 18). */
struct conn_origin {
	struct conn_set *set;
};

/* Where a connection's output stands against max_output_buffer. */
enum conn_out_state {
	CONN_OUT_OK = 0,
	CONN_OUT_PAUSED = 1,  /* over the bound: input not read until it drains */
	CONN_OUT_STALLED = 2, /* still over it after a flush: the disconnect timer runs */
};

struct conn {
	struct loop_io io;
	/* The transport (conn_t): plain TCP lives inside the connection, one
	 * allocated apart (TLS, WebSocket) is pointed to (ext_transport). */
	union {
		struct transport tcp;
		struct transport *ext;
	} tr;
	struct conn_origin *origin; /* its listener, and through it its set (conn_set_of) */
	struct session *sess;     /* set once CONNECT is accepted */
	struct conn_rare *rare;   /* the will and the auth exchange; NULL without either */
	struct loop_timer timer;  /* connect timeout, then keepalive */
	struct list_node all_link;
	struct list_node work_link; /* on set->dirty, or on set->closing */
	struct list_node read_link; /* on set->read_more, or set->handshake_wait */
	struct outq out;
	uint8_t *rbuf;            /* partial packet carried between reads, or NULL; CONN_RBUF_HEADROOM into its block */
	/* The keepalive (seconds; 0 = none) is in timer.owner_u16:
	 * conn_keepalive. The state and version, read for every delivery,
	 * are whole bytes; the rest are bit-fields (issue 18). */
	uint8_t version;          /* protocol level from CONNECT; 0 before */
	uint8_t state;            /* enum conn_state */
	uint8_t auth_result : 2;  /* enum conn_auth */
	uint8_t output_state : 2; /* enum conn_out_state */
	bool read_paused : 1;     /* not reading: waiting for a password verification */
	bool input_counted : 1;   /* rcap is counted in set->unauth_bytes */
	bool auth_method : 1;     /* authenticates with a v5 Authentication Method: rare's union holds enhanced_auth */
	bool outbound : 1;        /* the broker dialled it (a bridge): its packets go to proto's outbound owner */
	bool ext_transport : 1;   /* tr.ext, not tr.tcp */
	struct conn_addr peer;    /* the peer's address: per-address bounds, and logs */
};
/* 176 bytes, as many in its small-object class (core/alloc.h,
 * docs/cost-connection.md): every 8 bytes more cost every connection 8. */
_Static_assert(sizeof(struct conn) <= 176, "struct conn stays at 176 bytes");

/*
 * What a held ack names instead of its connection, in proto/persist.c's
 * queue and the cluster's ack gate (cluster/durable.c), and what the
 * gate's queue of publishers waiting for a ticket holds: the connection
 * closing clears `c` here, once, rather than each queue searching all its
 * entries for the connection's (per close, a walk of a queue that a disk
 * or JetStream stall can grow to millions, thousands of times over in a
 * reconnect storm). The last entry naming a closed connection's owner
 * frees it.
 */
struct ack_owner {
	struct conn *c; /* NULL once the connection closed: its entries are dropped */
	uint32_t refs;  /* entries naming it: held acks in either queue, a place among the waiting */
};

/* What only some connections hold, and only for a while: a will, a password
 * check or an AUTH exchange in flight, acks held by a cluster's ack gate. Allocated on first use, freed once
 * empty, so an idle connection without a will pays its pointer alone. */
struct conn_rare {
	struct msg *will; /* published on abnormal close */
	union {
		struct auth_job *auth_job; /* password verification in flight, or NULL */
		struct enhanced_auth *enhanced_auth; /* with auth_method: its exchange (proto/enhanced_auth.c) */
	};
	uint32_t gate_held_acks; /* acks waiting for the broker's ack_gate (cluster/durable.c) */
	/* Acks waiting for an fsync (proto/persist.c). The block is kept when
	 * they reach 0 (conn_rare_trim is not called for them), so a durable
	 * publisher does not allocate it per fsync. */
	uint32_t held_acks;
	struct ack_owner *ack_owner; /* while it has held acks (kept at 0 as the block is) */
};

/* The connection's transport. Not const: a const connection's transport
 * is still read and written through (the embedded one is part of the
 * connection only to save an allocation). */
static inline struct transport *conn_t(const struct conn *c)
{
	return c->ext_transport ? c->tr.ext : (struct transport *)&c->tr.tcp;
}

static inline struct conn_set *conn_set_of(const struct conn *c) { return c->origin->set; }
/* Seconds; 0 = none. */
static inline uint16_t conn_keepalive(const struct conn *c) { return c->timer.owner_u16; }
static inline void conn_set_keepalive(struct conn *c, uint16_t seconds) { c->timer.owner_u16 = seconds; }

/* The head of the carried input's block (conn.rbuf is CONN_RBUF_HEADROOM
 * into it): the lengths live there rather than in every connection
 * (issue 18). A block taken as a message (conn_input_take_block) gets the
 * message's header there once the connection has let go of it. */
struct conn_rbuf_head {
	uint32_t len; /* bytes carried */
	uint32_t cap; /* bytes the buffer holds; in set->unauth_bytes while counted */
};
_Static_assert(CONN_RBUF_HEADROOM >= sizeof(struct conn_rbuf_head), "the lengths fit the headroom");

static inline struct conn_rbuf_head *conn_rbuf_head(const struct conn *c)
{
	return (struct conn_rbuf_head *)(void *)(c->rbuf - CONN_RBUF_HEADROOM);
}
static inline uint32_t conn_rlen(const struct conn *c) { return c->rbuf ? conn_rbuf_head(c)->len : 0; }
static inline uint32_t conn_rcap(const struct conn *c) { return c->rbuf ? conn_rbuf_head(c)->cap : 0; }

static inline struct msg *conn_will(const struct conn *c) { return c->rare ? c->rare->will : NULL; }
static inline struct auth_job *conn_auth_job(const struct conn *c) { return c->rare ? c->rare->auth_job : NULL; }
static inline struct enhanced_auth *conn_enhanced_auth(const struct conn *c)
{
	return c->auth_method && c->rare ? c->rare->enhanced_auth : NULL;
}
static inline uint32_t conn_gate_held_acks(const struct conn *c) { return c->rare ? c->rare->gate_held_acks : 0; }
static inline uint32_t conn_held_acks(const struct conn *c) { return c->rare ? c->rare->held_acks : 0; }
/* The connection's block for setting one of them, allocated if need be;
 * NULL when out of memory. */
struct conn_rare *conn_rare(struct conn *c);
/* Frees the block once it holds nothing (an ack owner no entry names
 * counts as nothing). */
void conn_rare_trim(struct conn *c);
/* c's name in a queue (a held ack, a place among the waiting): its
 * owner, made on first use; one reference taken. NULL when out of memory. */
struct ack_owner *conn_ack_owner_ref(struct conn *c);
/* An entry naming o is done with (sent, dropped, handed back). */
void ack_owner_unref(struct ack_owner *o);
/* c closes: the entries naming it are dropped when their turn comes.
 * O(1). Again at conn_free, for a connection closed without it. */
void conn_ack_owner_detach(struct conn *c);

/* Allocates a connection around `t` (taking it). NULL when out of memory
 * (t is closed then). With t NULL the connection uses its embedded TCP
 * transport over `fd`, which it owns from then on (closed on failure too).
 * The caller registers it with the loop. */
struct conn *conn_new(struct conn_origin *origin, struct transport *t, int fd, const struct sockaddr *peer);

/* "addr:port" or "[addr]:port" of the connection's peer, for logs. The text
 * lives in one of a few rotating static buffers: valid until a few more
 * calls, enough for the arguments of one log line. */
const char *conn_peer(const struct conn *c);
/* The same formatting for an address not yet in a connection. */
const char *conn_format_addr(const struct conn_addr *a);
void conn_addr_set(struct conn_addr *a, const struct sockaddr *sa);

/* Output bytes held for the connection, counted against max_output_buffer:
 * its queue, plus acks held back at their 3.1.1 size, waiting for an fsync
 * (proto/persist.c) or for JetStream (cluster/durable.c's gate), so that a
 * stalled disk or JetStream cannot let them grow without bound either. */
static inline size_t conn_output_bytes(const struct conn *c)
{
	return c->out.bytes + ((size_t)conn_held_acks(c) + conn_gate_held_acks(c)) * 4u;
}

/* Queues an encoded control packet; marks the connection for flushing. */
int conn_send_bytes(struct conn *c, const uint8_t *bytes, size_t len);
/* Queues a delivery of `m` (see outq_push_publish). */
int conn_send_publish(struct conn *c, struct msg *m, const struct outq_delivery *d);
/* Marks the connection dirty so the loop flushes it before sleeping. */
void conn_mark_dirty(struct conn *c);

/* Input bytes held by a connection before it is CONN_ACTIVE count towards
 * set->unauth_bytes; call with the buffer's new capacity before rcap takes
 * it (only counted while the connection is unauthenticated). */
void conn_account_rbuf(struct conn *c, size_t new_cap);
/* Stops counting the connection's buffer (it left the unauthenticated
 * states: CONNECT accepted, or closing). Idempotent. */
void conn_unauth_release(struct conn *c);

/*
 * Starts closing: stops reading, keeps already-queued output for one last
 * best-effort flush, and queues the connection for freeing after this turn.
 * Idempotent. The caller has already dealt with the will and the session.
 */
void conn_close(struct loop *l, struct conn *c);

/* Frees a closed connection (after the turn): transport, buffers, queue. */
void conn_free(struct conn *c);

#endif
