/*
 * Connection input: read, frame, decode, and hand each whole packet up
 * through the two callbacks the layer above registers (conn_set.in):
 * on_packet for every decoded packet, on_close when input ends the
 * connection (a decoder error, a bound before CONNECT, the peer gone). This
 * layer knows framing and the read budget, not what packets mean.
 *
 * Reads go into one scratch buffer shared by all connections; only the
 * tail of a packet that has not fully arrived is copied into a
 * per-connection buffer, grown as its bytes arrive (never to the announced
 * size up front), so a bogus huge Remaining Length costs nothing until the
 * bytes are really sent, and idle connections hold no buffer at all. A
 * small carried tail continues in the scratch buffer at the next read, so a
 * packet cut by a read costs a copy, not a read of its own. A big packet
 * is read into its carried buffer, whose last growth is to the packet's
 * exact size, with room for a message header in front: a PUBLISH there
 * becomes its message where it lies (conn_input_take_block), so its bytes
 * are copied about once in all (by the doubling), not again into a message.
 *
 * Reads repeat until the transport would block or the turn's budget is
 * spent: a short read alone is not "drained" (net/transport.h).
 *
 * Before CONNECT less is accepted: a first byte that is not CONNECT closes
 * the connection at once [MQTT-3.1.0-1], a CONNECT longer than
 * max_connect_size is refused from its fixed header, and the partial
 * buffers of all unauthenticated connections together stay under
 * max_unauth_bytes (the connection that would pass it is closed).
 *
 * Input stops while the connection's output is at or over max_output
 * (after the packet that put it there), so a client that does not read its
 * answers cannot make the broker queue them without bound; the flush
 * resumes it (conn_input_output_drained). Single threaded, on the loop.
 */
#ifndef WISP_SESSION_INPUT_H
#define WISP_SESSION_INPUT_H

#include "conn.h"

/* Whether the connection's input is watched: not paused for a password
 * check nor for its output. */
static inline bool conn_input_is_reading(const struct conn *c)
{
	return !c->read_paused && c->output_state == CONN_OUT_OK;
}

/* Reads what the connection's transport has, up to the turn's budget. */
void conn_input_read(struct conn *c);
/* Resumes reading a connection paused by on_packet returning WISP_EAGAIN
 * (a CONNECT waiting for its password check), starting with the packets
 * it left unread. */
void conn_input_resume(struct conn *c);
/* Reads again from a connection whose output has drained under max_output. */
void conn_input_output_drained(struct conn *c);
/* Reads more from a connection queued on set->read_more (decrypted input
 * left inside the transport when the read budget ran out, or whole packets
 * in its carried buffer). */
void conn_input_read_more(struct conn *c);

/*
 * For the packet handler (on_packet), while it runs: when the packet is
 * big enough to have been read into the connection's carried buffer and
 * fills it alone, hands that buffer's allocation over (the packet starts
 * CONN_RBUF_HEADROOM bytes into it) so the PUBLISH it holds can become its
 * message without a copy (msg_adopt). The caller then owns the block and
 * frees it with wisp_free. NULL otherwise (a small packet, read in the
 * shared scratch buffer), and nothing changes.
 */
uint8_t *conn_input_take_block(struct conn *c);

#endif
