/*
 * A whole broker driven turn by turn over the fake transport, for scripted
 * packet exchanges (tests/unit/test_broker_script.c) and the broker fuzzer
 * (tests/fuzz/fuzz_broker.c). No sockets carry MQTT: each client is a
 * fake_transport whose input the script appends to and whose output the
 * script takes, byte-exact.
 *
 * The entry points that know how the broker accepts and reads connections
 * are few and all here (harness_new, harness_connect, harness_run); a
 * redesign of proto/ adapts this file, not the scripts.
 *
 * Turns are real loop turns (loop_run): a "kick" socket the harness keeps
 * readable stops the loop after one turn, and each client's socketpair is
 * kept readable so every turn reads what its script added. Timers only
 * fire when their second comes, so scripts never wait for them; helper
 * threads (the store's group commit, password checks) are waited for,
 * bounded, by harness_run.
 */
#ifndef WISP_TESTS_BROKER_HARNESS_H
#define WISP_TESTS_BROKER_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct broker;
struct harness;
struct hclient;

/* Called with every byte the broker writes to a client, as it writes it. */
typedef void (*harness_write_fn)(void *ctx, struct hclient *c, const uint8_t *bytes, size_t len);
/* Called at every read of a client's bytes, before the broker handles
 * them: `len` bytes, or 0 when it found none. */
typedef void (*harness_read_fn)(void *ctx, struct hclient *c, size_t len);

/* A broker built from `config_json` (its listeners bind 127.0.0.1:0). NULL
 * with the reason on stderr. */
struct harness *harness_new(const char *config_json);
/* Frees the broker (closing every client, wills unsent) and the clients. */
void harness_free(struct harness *h);
struct broker *harness_broker(struct harness *h);
void harness_on_write(struct harness *h, harness_write_fn fn, void *ctx);
void harness_on_read(struct harness *h, harness_read_fn fn, void *ctx);
/* From now on each read hands out at most one packet (or the rest of one),
 * as a TLS transport hands out records: the broker reads again at once,
 * so the read hook runs between any two packets it handles. Off: reads
 * take all there is, as TCP. */
void harness_packet_reads(struct harness *h, bool on);

/* A new connection on the first listener, as accepted from the network.
 * The harness owns it; it stays valid (closed) after the broker drops it. */
struct hclient *harness_connect(struct harness *h);
/* Runs loop turns until one reads and writes nothing and no ack waits for
 * an fsync nor a CONNECT for its password check (all bounded). */
void harness_run(struct harness *h);

/* Runs `turns` loop turns and returns, whatever waits (a held ack, a
 * password check): for a script that wants the broker in such a state. */
void harness_turns(struct harness *h, int turns);
/* Appends a script's bytes (as client_send_hex's) to what the client sent,
 * without running the broker. */
void client_feed_hex(struct hclient *c, const char *hex);
/* The peer closes its end, without running the broker. */
void client_feed_close(struct hclient *c);

/* Appends bytes to what the client "sent" and runs the broker. */
void client_send(struct hclient *c, const uint8_t *bytes, size_t len);
/* The same from a script: hex digits, spaces ignored, and 'text' for its
 * bytes as they are ("10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'pub'"). */
void client_send_hex(struct hclient *c, const char *hex);
/* The peer closes its end without DISCONNECT; the broker runs. */
void client_close(struct hclient *c);
/* True once the broker closed the connection. */
bool client_closed(const struct hclient *c);

/* What the broker wrote to the client since the last take or expect. */
const uint8_t *client_output(const struct hclient *c, size_t *len);
/* Forgets the output so far. */
void client_take(struct hclient *c);
/* True when the output since the last take is exactly `hex`; consumes it
 * either way, printing both to stderr when they differ. */
bool client_expect_hex(struct hclient *c, const char *hex, const char *where);

/* A packet's total length from its fixed header at p[0..n): 0 while the
 * header is incomplete, SIZE_MAX when it holds no valid length. */
size_t harness_frame_len(const uint8_t *p, size_t n);

/* A fresh directory under /tmp (mkdtemp) named `prefix`-XXXXXX into buf;
 * 0 or -1. harness_remove_dir empties (files only) and removes one. */
int harness_temp_dir(char *buf, size_t len, const char *prefix);
void harness_remove_dir(const char *dir);

/* Whether the store directory dir holds a snapshot (a snap.* file): the
 * log was compacted. */
bool harness_has_snapshot(const char *dir);

/* The number of bytes a script (as client_send_hex's) decodes to (at most cap written to out), or
 * SIZE_MAX when it is not hex. */
size_t harness_unhex(const char *hex, uint8_t *out, size_t cap);

#endif
