/*
 * ACL rules: parsed once into an anonymous block, a hash table of user
 * blocks and a pattern list; compiled per client into one flat allocation
 * holding only that client's rules (patterns already substituted).
 *
 * Matching uses topic_matches from topic/ for names. Filter-versus-filter
 * questions, which SUBSCRIBE needs, are answered here: covers(R, F) (every
 * name F matches, R matches) and overlaps(R, F) (some name matches both),
 * both respecting [MQTT-4.7.2-1]. They are exact for valid filters, so a
 * subscription is never granted more than its rules say.
 *
 * Cost: acl_client_new is O(rules of the user + patterns); a check is
 * O(compiled rules x levels). No allocation after acl_client_new.
 * Single-threaded per object; a parsed struct acl is never modified.
 */
#include "acl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "file.h"
#include "err.h"
#include "topic.h"

#define ACL_FILE_MAX (16u * 1024u * 1024u)
#define ACL_LINE_MAX 65536u
#define ACL_FILTER_MAX 65535u

#define USES_U 1u
#define USES_C 2u

struct rule {
	char *filter; /* NUL-terminated, valid topic filter */
	size_t len;
	unsigned grants; /* enum acl_access bits; 0 for deny */
	bool deny;
	unsigned uses; /* USES_U | USES_C, patterns only */
};

struct rule_list {
	struct rule *v;
	size_t n, cap;
};

struct user_block {
	struct user_block *next;
	struct rule_list rules;
	size_t nlen;
	char name[];
};

struct acl {
	struct rule_list anon;
	struct rule_list patterns;
	struct user_block **buckets;
	size_t nbuckets; /* power of two */
	size_t nusers;
};

struct acl_client {
	size_t n;
	struct rule rules[]; /* filters stored after the array, same block */
};

/* ---- filter algebra ---- */

struct lv {
	const char *p;
	size_t len;
	bool has;
};

struct lv_iter {
	const char *s, *end;
	bool done;
};

static void lv_init(struct lv_iter *it, const char *s, size_t len)
{
	it->s = s;
	it->end = s + len;
	it->done = false;
}

static struct lv lv_next(struct lv_iter *it)
{
	struct lv l = {NULL, 0, false};
	if (it->done)
		return l;
	const char *slash = memchr(it->s, '/', (size_t)(it->end - it->s));
	l.p = it->s;
	l.has = true;
	if (slash) {
		l.len = (size_t)(slash - it->s);
		it->s = slash + 1;
	} else {
		l.len = (size_t)(it->end - it->s);
		it->done = true;
	}
	return l;
}

static bool lv_is(struct lv l, char c) { return l.has && l.len == 1 && l.p[0] == c; }
static bool lv_wild(struct lv l) { return lv_is(l, '+') || lv_is(l, '#'); }
static bool lv_dollar(struct lv l) { return l.has && l.len > 0 && l.p[0] == '$'; }
static bool lv_eq(struct lv a, struct lv b) { return a.len == b.len && memcmp(a.p, b.p, a.len) == 0; }

/* True when every topic name matched by filter f is matched by rule r. */
static bool covers(const char *r, size_t rl, const char *f, size_t fl)
{
	struct lv_iter ri, fi;
	lv_init(&ri, r, rl);
	lv_init(&fi, f, fl);
	for (bool first = true;; first = false) {
		struct lv a = lv_next(&ri), b = lv_next(&fi);
		if (!a.has)
			return !b.has;
		/* [MQTT-4.7.2-1] a leading wildcard does not match '$' names */
		if (first && lv_wild(a) && lv_dollar(b))
			return false;
		if (lv_is(a, '#'))
			return true; /* also "a/#" covers "a": the parent level */
		if (lv_is(b, '#')) {
			/* b also matches the parent level, except at the top
			 * where a name has at least one level: there "+/#"
			 * matches exactly what "#" does. */
			if (!first || !lv_is(a, '+'))
				return false;
			struct lv a2 = lv_next(&ri);
			return lv_is(a2, '#');
		}
		if (!b.has)
			return false;
		if (lv_is(a, '+'))
			continue;
		if (lv_is(b, '+') || !lv_eq(a, b))
			return false;
	}
}

/* True when some topic name is matched by both filters. */
static bool overlaps(const char *r, size_t rl, const char *f, size_t fl)
{
	struct lv_iter ri, fi;
	lv_init(&ri, r, rl);
	lv_init(&fi, f, fl);
	for (bool first = true;; first = false) {
		struct lv a = lv_next(&ri), b = lv_next(&fi);
		if (first && ((lv_wild(a) && lv_dollar(b)) || (lv_wild(b) && lv_dollar(a))))
			return false;
		if (lv_is(a, '#') || lv_is(b, '#'))
			return true;
		if (!a.has || !b.has)
			return !a.has && !b.has;
		if (lv_is(a, '+') || lv_is(b, '+'))
			continue;
		if (!lv_eq(a, b))
			return false;
	}
}

/* ---- parsing ---- */

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
							   ...)
{
	if (!errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static struct user_block *user_find(const struct acl *acl, const char *name, size_t nlen)
{
	if (!acl->nbuckets)
		return NULL;
	struct user_block *u = acl->buckets[fnv1a(name, nlen) & (acl->nbuckets - 1)];
	for (; u; u = u->next)
		if (u->nlen == nlen && memcmp(u->name, name, nlen) == 0)
			return u;
	return NULL;
}

static int user_get(struct acl *acl, const char *name, size_t nlen, struct user_block **out)
{
	if ((*out = user_find(acl, name, nlen)))
		return 0;
	if (acl->nusers + 1 > acl->nbuckets / 4 * 3) {
		size_t n = acl->nbuckets ? acl->nbuckets * 2 : 16;
		struct user_block **b = wisp_calloc(n, sizeof *b);
		if (!b)
			return WISP_ENOMEM;
		for (size_t i = 0; i < acl->nbuckets; i++) {
			struct user_block *u = acl->buckets[i];
			while (u) {
				struct user_block *next = u->next;
				size_t h = fnv1a(u->name, u->nlen) & (n - 1);
				u->next = b[h];
				b[h] = u;
				u = next;
			}
		}
		wisp_free(acl->buckets);
		acl->buckets = b;
		acl->nbuckets = n;
	}
	struct user_block *u = wisp_malloc(sizeof *u + nlen + 1);
	if (!u)
		return WISP_ENOMEM;
	memset(u, 0, sizeof *u);
	u->nlen = nlen;
	memcpy(u->name, name, nlen);
	u->name[nlen] = '\0';
	size_t h = fnv1a(name, nlen) & (acl->nbuckets - 1);
	u->next = acl->buckets[h];
	acl->buckets[h] = u;
	acl->nusers++;
	*out = u;
	return 0;
}

static int rules_add(struct rule_list *l, const char *filter, size_t len, unsigned grants,
		     bool deny, unsigned uses)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 4;
		struct rule *v = wisp_realloc(l->v, cap * sizeof *v);
		if (!v)
			return WISP_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	char *f = wisp_strndup(filter, len);
	if (!f)
		return WISP_ENOMEM;
	l->v[l->n++] = (struct rule){.filter = f, .len = len, .grants = grants, .deny = deny, .uses = uses};
	return 0;
}

static void rules_free(struct rule_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		wisp_free(l->v[i].filter);
	wisp_free(l->v);
}

static const struct {
	const char *word;
	unsigned grants;
	bool deny;
} access_words[] = {
	{"read", ACL_READ | ACL_SUBSCRIBE, false},
	{"write", ACL_WRITE, false},
	{"readwrite", ACL_READ | ACL_WRITE | ACL_SUBSCRIBE, false},
	{"subscribe", ACL_SUBSCRIBE, false},
	{"deny", 0, true},
};

static bool is_space(char c) { return c == ' ' || c == '\t'; }

static bool contains(const char *s, size_t n, const char *needle)
{
	size_t k = strlen(needle);
	for (size_t i = 0; i + k <= n; i++)
		if (memcmp(s + i, needle, k) == 0)
			return true;
	return false;
}

/* One non-comment line, already trimmed; `cur` is the current user block
 * (NULL = anonymous). */
static int parse_rule(struct acl *acl, const char *s, size_t n, struct user_block **cur,
		      char *why, size_t whylen)
{
	size_t kw = 0;
	while (kw < n && !is_space(s[kw]))
		kw++;
	size_t r = kw;
	while (r < n && is_space(s[r]))
		r++;
	const char *rest = s + r;
	size_t rlen = n - r;

	if (kw == 4 && memcmp(s, "user", 4) == 0) {
		if (!rlen) {
			set_err(why, whylen, "missing user name after 'user'");
			return WISP_EINVAL;
		}
		int rc = user_get(acl, rest, rlen, cur);
		if (rc)
			set_err(why, whylen, "out of memory");
		return rc;
	}
	bool is_pattern = kw == 7 && memcmp(s, "pattern", 7) == 0;
	if (!is_pattern && !(kw == 5 && memcmp(s, "topic", 5) == 0)) {
		set_err(why, whylen, "unknown rule '%.*s' (expected user, topic or pattern)",
			(int)(kw > 40 ? 40 : kw), s);
		return WISP_EINVAL;
	}
	if (!rlen) {
		set_err(why, whylen, "missing topic filter after '%.*s'", (int)kw, s);
		return WISP_EINVAL;
	}
	/* "topic read" alone names the topic "read": the access word counts
	 * only when a filter follows it (Mosquitto reads it the same way). */
	unsigned grants = ACL_READ | ACL_WRITE | ACL_SUBSCRIBE;
	bool deny = false;
	size_t w = 0;
	while (w < rlen && !is_space(rest[w]))
		w++;
	if (w < rlen) {
		size_t f = w;
		while (f < rlen && is_space(rest[f]))
			f++;
		size_t i;
		for (i = 0; i < sizeof access_words / sizeof access_words[0]; i++) {
			if (strlen(access_words[i].word) == w && memcmp(rest, access_words[i].word, w) == 0)
				break;
		}
		if (i == sizeof access_words / sizeof access_words[0]) {
			set_err(why, whylen,
				"unknown access '%.*s' (expected read, write, readwrite, subscribe or "
				"deny)",
				(int)(w > 40 ? 40 : w), rest);
			return WISP_EINVAL;
		}
		grants = access_words[i].grants;
		deny = access_words[i].deny;
		rest += f;
		rlen -= f;
	}
	if (rlen > ACL_FILTER_MAX || !topic_filter_valid(rest, rlen)) {
		set_err(why, whylen, "invalid topic filter '%.*s'", (int)(rlen > 200 ? 200 : rlen), rest);
		return WISP_EINVAL;
	}
	int rc;
	if (is_pattern) {
		unsigned uses = (contains(rest, rlen, "%u") ? USES_U : 0) |
				(contains(rest, rlen, "%c") ? USES_C : 0);
		rc = rules_add(&acl->patterns, rest, rlen, grants, deny, uses);
	} else {
		rc = rules_add(*cur ? &(*cur)->rules : &acl->anon, rest, rlen, grants, deny, 0);
	}
	if (rc)
		set_err(why, whylen, "out of memory");
	return rc;
}

int acl_parse(const char *text, size_t len, const char *name, struct acl **out, char *err,
	      size_t errlen)
{
	*out = NULL;
	if (errlen)
		err[0] = '\0';
	struct acl *acl = wisp_calloc(1, sizeof *acl);
	if (!acl) {
		set_err(err, errlen, "%s: out of memory", name);
		return WISP_ENOMEM;
	}
	struct user_block *cur = NULL;
	size_t lineno = 0;
	for (size_t pos = 0; pos < len;) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos;
		pos += n + (nl ? 1 : 0);
		lineno++;
		while (n && (line[n - 1] == '\r' || is_space(line[n - 1])))
			n--;
		while (n && is_space(*line)) {
			line++;
			n--;
		}
		if (n == 0 || line[0] == '#')
			continue;
		char why[512];
		int rc;
		if (n > ACL_LINE_MAX) {
			set_err(why, sizeof why, "line longer than %u bytes", ACL_LINE_MAX);
			rc = WISP_EINVAL;
		} else if (memchr(line, '\0', n)) {
			set_err(why, sizeof why, "NUL byte in line");
			rc = WISP_EINVAL;
		} else {
			rc = parse_rule(acl, line, n, &cur, why, sizeof why);
		}
		if (rc) {
			set_err(err, errlen, "%s:%zu: %s", name, lineno, why);
			acl_free(acl);
			return rc;
		}
	}
	*out = acl;
	return 0;
}

int acl_load(const char *path, struct acl **out, char *err, size_t errlen)
{
	*out = NULL;
	char *buf;
	size_t len;
	int rc = wisp_read_file(path, ACL_FILE_MAX, &buf, &len);
	if (rc == WISP_ELIMIT)
		set_err(err, errlen, "%s: larger than %u bytes", path, ACL_FILE_MAX);
	else if (rc == WISP_ENOMEM)
		set_err(err, errlen, "%s: out of memory", path);
	else if (rc != 0)
		set_err(err, errlen, "%s: %s", path, strerror(errno));
	if (rc != 0)
		return rc == WISP_ENOENT ? WISP_EIO : rc;
	rc = acl_parse(buf ? buf : "", len, path, out, err, errlen);
	wisp_free(buf);
	return rc;
}

void acl_free(struct acl *acl)
{
	if (!acl)
		return;
	rules_free(&acl->anon);
	rules_free(&acl->patterns);
	for (size_t i = 0; i < acl->nbuckets; i++) {
		struct user_block *u = acl->buckets[i];
		while (u) {
			struct user_block *next = u->next;
			rules_free(&u->rules);
			wisp_free(u);
			u = next;
		}
	}
	wisp_free(acl->buckets);
	wisp_free(acl);
}

/* ---- per-client compilation ---- */

/* A value usable in a pattern: present, non-empty, and unable to change
 * the shape of the filter. */
static bool subst_ok(const char *v)
{
	return v && v[0] && !strpbrk(v, "/+#");
}

/* Length of pattern r after substitution, or SIZE_MAX when r does not
 * apply to this client. */
static size_t subst_len(const struct rule *r, const char *user, const char *cid)
{
	if (((r->uses & USES_U) && !subst_ok(user)) || ((r->uses & USES_C) && !subst_ok(cid)))
		return SIZE_MAX;
	size_t n = 0;
	for (size_t i = 0; i < r->len; i++) {
		if (r->filter[i] == '%' && i + 1 < r->len && (r->filter[i + 1] == 'u' || r->filter[i + 1] == 'c')) {
			const char *v = r->filter[i + 1] == 'u' ? user : cid;
			/* A name starting with '$' at the front of a pattern
			 * would reach into $SYS-like trees. */
			if (n == 0 && v[0] == '$')
				return SIZE_MAX;
			n += strlen(v);
			i++;
		} else {
			n++;
		}
	}
	return n;
}

static void subst_write(const struct rule *r, const char *user, const char *cid, char *out)
{
	size_t n = 0;
	for (size_t i = 0; i < r->len; i++) {
		if (r->filter[i] == '%' && i + 1 < r->len && (r->filter[i + 1] == 'u' || r->filter[i + 1] == 'c')) {
			const char *v = r->filter[i + 1] == 'u' ? user : cid;
			size_t k = strlen(v);
			memcpy(out + n, v, k);
			n += k;
			i++;
		} else {
			out[n++] = r->filter[i];
		}
	}
	out[n] = '\0';
}

int acl_client_new(const struct acl *acl, const char *username, const char *client_id,
		   struct acl_client **out)
{
	*out = NULL;
	if (!acl)
		return 0;
	const struct rule_list *own = &acl->anon;
	if (username) {
		const struct user_block *u = user_find(acl, username, strlen(username));
		own = u ? &u->rules : NULL;
	}
	size_t nown = own ? own->n : 0;
	size_t count = nown, bytes = 0;
	for (size_t i = 0; i < nown; i++)
		bytes += own->v[i].len + 1;
	for (size_t i = 0; i < acl->patterns.n; i++) {
		size_t n = subst_len(&acl->patterns.v[i], username, client_id);
		if (n != SIZE_MAX) {
			count++;
			bytes += n + 1;
		}
	}
	struct acl_client *c = wisp_malloc(sizeof *c + count * sizeof c->rules[0] + bytes);
	if (!c)
		return WISP_ENOMEM;
	char *store = (char *)&c->rules[count];
	size_t k = 0;
	for (size_t i = 0; i < nown; i++) {
		const struct rule *r = &own->v[i];
		memcpy(store, r->filter, r->len + 1);
		c->rules[k++] = (struct rule){.filter = store, .len = r->len, .grants = r->grants, .deny = r->deny};
		store += r->len + 1;
	}
	for (size_t i = 0; i < acl->patterns.n; i++) {
		const struct rule *r = &acl->patterns.v[i];
		size_t n = subst_len(r, username, client_id);
		if (n == SIZE_MAX)
			continue;
		subst_write(r, username, client_id, store);
		c->rules[k++] = (struct rule){.filter = store, .len = n, .grants = r->grants, .deny = r->deny};
		store += n + 1;
	}
	c->n = k;
	*out = c;
	return 0;
}

void acl_client_free(struct acl_client *c) { wisp_free(c); }

size_t acl_client_rule_count(const struct acl_client *c) { return c ? c->n : 0; }

enum acl_sub acl_client_subscribe(const struct acl_client *c, const char *filter, size_t len)
{
	if (!c)
		return ACL_SUB_ALL;
	bool sub = false, read_cover = false, read_overlap = false, deny_overlap = false;
	for (size_t i = 0; i < c->n; i++) {
		const struct rule *r = &c->rules[i];
		if (r->deny) {
			if (covers(r->filter, r->len, filter, len))
				return ACL_SUB_DENY;
			if (!deny_overlap && overlaps(r->filter, r->len, filter, len))
				deny_overlap = true;
			continue;
		}
		bool cov = (r->grants & (ACL_SUBSCRIBE | ACL_READ)) && covers(r->filter, r->len, filter, len);
		if ((r->grants & ACL_SUBSCRIBE) && cov)
			sub = true;
		if (r->grants & ACL_READ) {
			if (cov)
				read_cover = read_overlap = true;
			else if (!read_overlap && overlaps(r->filter, r->len, filter, len))
				read_overlap = true;
		}
	}
	if (!sub)
		return ACL_SUB_DENY;
	if (read_cover && !deny_overlap)
		return ACL_SUB_ALL;
	return read_overlap ? ACL_SUB_FILTERED : ACL_SUB_NEVER;
}

bool acl_client_check(const struct acl_client *c, const char *topic, size_t len,
		      enum acl_access access)
{
	if (!c)
		return true;
	if (access == ACL_SUBSCRIBE)
		return acl_client_subscribe(c, topic, len) != ACL_SUB_DENY;
	bool granted = false;
	for (size_t i = 0; i < c->n; i++) {
		const struct rule *r = &c->rules[i];
		if (!r->deny && (granted || !(r->grants & (unsigned)access)))
			continue;
		if (topic_matches(r->filter, r->len, topic, len)) {
			if (r->deny)
				return false;
			granted = true;
		}
	}
	return granted;
}

bool acl_check(const struct acl *acl, const char *username, const char *client_id,
	       const char *topic, size_t len, enum acl_access access)
{
	if (!acl)
		return true;
	struct acl_client *c;
	/* Out of memory fails closed. */
	if (acl_client_new(acl, username, client_id, &c))
		return false;
	bool ok = acl_client_check(c, topic, len, access);
	acl_client_free(c);
	return ok;
}
