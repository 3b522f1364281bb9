/*
 * The NATS publishes of the node's data messages, off the loop thread.
 *
 * cnats writes a publish to its socket under the connection's lock, in the
 * publishing thread once its 32 KiB buffer is full (or at once with
 * cluster.send_asap), and its flusher thread holds the same lock while it
 * writes. A NATS server that stops reading (frozen, or slower than the
 * node) fills the socket, and every publish then waits for it: made on the
 * loop thread, that wait stopped every client of the node, also those
 * whose messages never need NATS (tests/e2e/35_cluster_nats_stall.py).
 *
 * So the loop hands each message to a bounded ring and one thread
 * publishes them, in the order given (one connection's messages keep their
 * order, which the receivers' duplicate check relies on: cluster.c's
 * seen_before). A full ring refuses the message, never blocks and never
 * grows: the caller drops it (these are at-most-once messages) and counts
 * it. A message cnats refuses is destroyed and counted, never tried
 * again. The thread may wait in cnats as long as NATS makes it; cnats's write
 * deadline (cluster.write_deadline) and ping interval bound that, and end
 * in cnats's own "connection lost" path.
 *
 * Memory: cap entries (a connection and a message pointer each), fixed at
 * start; the messages themselves are cnats's, max_bytes of them at most.
 * Locking: one mutex, held only to move pointers in and out.
 */
#ifndef WISP_CLUSTER_SENDER_H
#define WISP_CLUSTER_SENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

struct sender;

/* Starts the thread. cap >= 1 messages, max_bytes >= 1. 0, or
 * WISP_ENOMEM / WISP_EIO (no thread). */
int sender_start(struct sender **out, size_t cap, uint64_t max_bytes);
/* Joins the thread (after the message it is publishing, if any) and
 * destroys what is still queued: at most once. Before the connections
 * close. NULL: no-op. */
void sender_stop(struct sender *s);

/* Loop thread. Queues nm (about `bytes` long) for natsConnection_PublishMsg
 * on nc: true, and the sender owns nm; false when the ring is full (cap or
 * max_bytes), and the caller still owns nm. *fill: the ring's messages
 * after the call, so the caller can tell when an overflow episode ended. */
bool sender_push(struct sender *s, natsConnection *nc, natsMsg *nm, size_t bytes, size_t *fill);
/* Loop thread, before nc is destroyed (a connection replaced): drops what
 * is queued for it (counted as failed) and waits for the batch being
 * published, if any, to end. */
void sender_forget(struct sender *s, natsConnection *nc);
/* Publishes cnats refused so far (disconnected with its reconnect buffer
 * full, a write past its deadline, ...). Any thread. */
uint64_t sender_failed(const struct sender *s);
/* Publishes cnats refused as over the NATS server's max_payload (not in
 * sender_failed): the loop checks first (cluster.c), so only a server
 * whose max_payload shrank since the check. Any thread. */
uint64_t sender_too_large(const struct sender *s);
/* The ring's capacity in messages and bytes, for logs. */
size_t sender_cap(const struct sender *s);
uint64_t sender_max_bytes(const struct sender *s);

#endif
