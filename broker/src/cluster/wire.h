/*
 * What a Wisp node writes on NATS besides the payload: the headers every
 * message of the cluster carries (cluster.c's data, retained_kv.c's bucket
 * records, presence.c's claims), read and written in one place.
 */
#ifndef WISP_CLUSTER_WIRE_H
#define WISP_CLUSTER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

/* The value of header `key`, or NULL (absent, or no headers). Owned by nm. */
const char *wire_header(natsMsg *nm, const char *key);
/* What a received message holds, as the inbox's byte bound counts it: its
 * payload and subject, and WIRE_HEADERS_COUNTED for its header block,
 * which cnats does not tell (a message whose headers are most of it
 * counts less than it holds; it is at most NATS's max_payload). */
#define WIRE_HEADERS_COUNTED 256u
size_t wire_msg_bytes(natsMsg *nm);

struct sbuf;

/* Sets Wisp-Props to the base64 of the forwarded v5 property block. */
natsStatus wire_set_props(natsMsg *nm, const uint8_t *props, size_t len);
/* Appends that base64 to b (the data connection formats its headers
 * itself, nats_writer.h). */
void wire_add_props(struct sbuf *b, const uint8_t *props, size_t len);

/* The property block of nm's Wisp-Props, decoded into *props (caller
 * wisp_frees; NULL with *len 0 when absent). NULL, or why it is refused:
 * out of memory, or not base64 of a well-formed block that holds only
 * what a broker forwards (it goes to subscribers as is). */
const char *wire_get_props(natsMsg *nm, uint8_t **props, size_t *len);
/* The same from the header's value itself (b64, n bytes; n 0: none). */
const char *wire_decode_props(const char *b64, size_t n, uint8_t **props, size_t *len);

#endif
