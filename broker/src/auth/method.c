#include "method.h"

#include <string.h>

#include "alloc.h"
#include "err.h"
#include "scram.h"

/* Every method Wisp offers. A new one is a line here and its own file. */
static const struct auth_method *const methods[] = {
	&scram_sha256_method,
};

const struct auth_method *auth_method_find(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
		if (strlen(methods[i]->name) == len && memcmp(methods[i]->name, name, len) == 0)
			return methods[i];
	return NULL;
}

int auth_exchange_start(const struct auth_method *m, const struct auth_method_env *env, const struct auth_in *in,
			struct auth_out *out, struct auth_exchange **out_x, enum auth_step *result)
{
	*out_x = NULL;
	memset(out, 0, sizeof *out);
	struct auth_exchange *x = wisp_malloc(sizeof *x + m->state_size);
	if (!x)
		return WISP_ENOMEM;
	x->method = m;
	x->steps = 0;
	x->done = false;
	*result = m->start(x->state, env, in, out);
	if (*result == AUTH_STEP_FAILURE) {
		auth_exchange_free(x);
		return 0;
	}
	x->done = *result == AUTH_STEP_SUCCESS;
	*out_x = x;
	return 0;
}

enum auth_step auth_exchange_step(struct auth_exchange *x, const struct auth_method_env *env, const uint8_t *data,
				  size_t len, struct auth_out *out)
{
	memset(out, 0, sizeof *out);
	if (x->done || ++x->steps > AUTH_EXCHANGE_MAX_STEPS) {
		x->done = true;
		out->reason = AUTH_FAIL_NOT_AUTHORIZED;
		return AUTH_STEP_FAILURE;
	}
	enum auth_step r = x->method->step(x->state, env, data, len, out);
	x->done = r != AUTH_STEP_CONTINUE;
	return r;
}

void auth_exchange_free(struct auth_exchange *x)
{
	if (!x)
		return;
	x->method->end(x->state);
	wisp_free(x);
}
