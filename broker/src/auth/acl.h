/*
 * Access control lists: who may publish (write), receive (read) and
 * subscribe, by topic. Pure: no sockets, no loop; only acl_load reads a
 * file. Built on topic/ matching, so rule filters follow MQTT wildcard
 * rules exactly, including [MQTT-4.7.2-1] ('+'/'#' first never match '$').
 *
 * File format (Mosquitto's, plus "subscribe"; operator docs in
 * config/README.md), one rule per line, '#' comments:
 *
 *     topic [access] <filter>     before any "user" line: anonymous clients
 *     user <name>                 following "topic" lines belong to <name>
 *     topic [access] <filter>
 *     pattern [access] <filter>   every client; %u user name, %c client id
 *
 * access = read | write | readwrite (default) | subscribe | deny.
 * "read" grants ACL_SUBSCRIBE and ACL_READ (Mosquitto's meaning), "write"
 * ACL_WRITE, "readwrite" all three, "subscribe" only ACL_SUBSCRIBE, and
 * "deny" overrides any grant on topics its filter matches.
 *
 * Decision: with an ACL configured, deny by default. A request is allowed
 * when an applicable rule grants it and no applicable deny rule matches.
 * Applicable rules: the client's user block (the anonymous block when it has
 * no user name) plus every pattern. A pattern mentioning %u (%c) does not
 * apply when the user name (client id) is absent, empty, or contains '/',
 * '+' or '#' (a user named "#" must not read everything).
 *
 * Hot path: acl_client_new compiles, once per connection, the few rules
 * that apply to that client (its block plus substituted patterns), so a
 * per-message check scans only those. acl_client_subscribe classifies a
 * SUBSCRIBE filter once, so most subscriptions need no per-message check.
 *
 * Ownership: struct acl is immutable after parsing; struct acl_client copies
 * what it needs and stays valid after the acl is freed (SIGHUP reload).
 * Single-threaded use per object; immutable objects may be shared.
 */
#ifndef WISP_AUTH_ACL_H
#define WISP_AUTH_ACL_H

#include <stdbool.h>
#include <stddef.h>

enum acl_access {
	ACL_READ = 1,      /* receive a message published on a topic */
	ACL_WRITE = 2,     /* publish to a topic */
	ACL_SUBSCRIBE = 4, /* subscribe to a topic filter */
};

/* Outcome of a SUBSCRIBE filter for one client. */
enum acl_sub {
	ACL_SUB_DENY = 0,     /* refuse: SUBACK 0x80 [MQTT-3.9.3] */
	ACL_SUB_ALL = 1,      /* granted, and every topic it can match is readable: deliver unchecked */
	ACL_SUB_FILTERED = 2, /* granted; check ACL_READ for each delivered topic */
	ACL_SUB_NEVER = 3,    /* granted (subscribe rule), but no topic it matches is readable */
};

struct acl;
struct acl_client;

/*
 * Parses ACL text. Returns 0 and sets *out (acl_free), or WISP_EINVAL with
 * "<name>:<line>: <reason>" in err (always NUL-terminated), or WISP_ENOMEM.
 * Empty text is a valid ACL that denies everything.
 */
int acl_parse(const char *text, size_t len, const char *name, struct acl **out, char *err,
	      size_t errlen);
/* Same from a file; unreadable is WISP_EIO with "<path>: <reason>". */
int acl_load(const char *path, struct acl **out, char *err, size_t errlen);
void acl_free(struct acl *acl);

/*
 * One-off check, for tests and rare paths. `acl` NULL means no ACL is
 * configured: everything is allowed. `username`/`client_id` may be NULL.
 * For ACL_READ and ACL_WRITE, `topic` is a topic name; for ACL_SUBSCRIBE it
 * is a filter, and the result is acl_client_subscribe() != ACL_SUB_DENY.
 * Cost: a user lookup, pattern substitution and a scan of the applicable
 * rules; the broker should use acl_client_* instead.
 */
bool acl_check(const struct acl *acl, const char *username, const char *client_id,
	       const char *topic, size_t len, enum acl_access access);

/*
 * Compiles the rules that apply to one client. With `acl` NULL, sets *out
 * to NULL and returns 0: a NULL acl_client allows everything. Otherwise 0
 * with *out set (acl_client_free), or WISP_ENOMEM.
 */
int acl_client_new(const struct acl *acl, const char *username, const char *client_id,
		   struct acl_client **out);
void acl_client_free(struct acl_client *c);

/* Topic name check (ACL_READ per delivery, ACL_WRITE per PUBLISH), or
 * ACL_SUBSCRIBE with a filter. O(rules of this client x levels). */
bool acl_client_check(const struct acl_client *c, const char *topic, size_t len,
		      enum acl_access access);

/*
 * Classifies a SUBSCRIBE filter (already valid per topic_filter_valid):
 * granted when a read or subscribe rule's filter covers every topic the
 * filter can match ("a/#" covers "a/+/b", "+" does not cover "#") and no
 * deny rule covers it. ALL when moreover a read rule covers it and no deny
 * rule overlaps it.
 */
enum acl_sub acl_client_subscribe(const struct acl_client *c, const char *filter, size_t len);

/* Number of rules compiled for this client (tests, debug logs). */
size_t acl_client_rule_count(const struct acl_client *c);

#endif
