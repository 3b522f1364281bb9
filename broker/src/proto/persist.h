/*
 * The broker's side of durability: which state change becomes which store
 * record, rebuilding the state at start-up, holding acknowledgements until
 * their records are safe, and re-emitting the live state at compaction.
 * docs/persistence.md describes the store itself.
 *
 * What is stored: retained messages (but not the broker's own $SYS ones),
 * persistent sessions (clean session 0) with their subscriptions, queued
 * and in-flight QoS 1/2 messages and inbound QoS 2 packet ids. Clean
 * sessions and QoS 0 traffic never touch the disk.
 *
 * The promise: an acknowledgement (PUBACK, PUBREC, PUBCOMP) leaves only
 * after the records of what it acknowledges were written to the OS (every
 * mode: they survive kill -9) and, with fsync "always", fsynced (they
 * survive power loss): such acks wait, in order, for the group commit.
 *
 * With persistence disabled every function is a cheap no-op.
 */
#ifndef WISP_PROTO_PERSIST_H
#define WISP_PROTO_PERSIST_H

#include <stdbool.h>
#include <stdint.h>

#include "msg.h"

struct broker;
struct conn;
struct session;

/* Opens the data directory and replays it into the broker. 0, or an error
 * with "file, offset, reason" in err; the broker must not start then. */
int persist_open(struct broker *b, char *err, size_t errlen);
/* Flushes, syncs (per mode) and closes. */
void persist_close(struct broker *b);

/* Once per loop turn, before any output is flushed: writes the turn's
 * records. false when they could not be written: the turn's output must
 * wait (acks must not leave before their records). */
bool persist_flush(struct broker *b);

/* Queues an ack, holding it back until its records are durable when the
 * mode asks so. Same contract as conn_send_bytes. */
int persist_send_ack(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len);
/* Forgets a closing connection's held acks. */
void persist_forget_conn(struct broker *b, struct conn *c);

/* State changes. Each checks whether the session is persistent. */
void persist_session_put(struct broker *b, struct session *s);
void persist_session_del(struct broker *b, struct session *s);
void persist_sub_add(struct broker *b, struct session *s, const char *filter, size_t len, uint8_t options);
void persist_sub_del(struct broker *b, struct session *s, const char *filter, size_t len);
void persist_qos2_in(struct broker *b, struct session *s, uint16_t packet_id, bool add);
/* A retained message stored (m) or the topic cleared (m has an empty payload). */
void persist_retain(struct broker *b, struct msg *m);
/* The retained store let go of `m` (replaced or deleted). */
void persist_retain_released(struct broker *b, struct msg *m);

#endif
