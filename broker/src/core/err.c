#include "err.h"

const char *wisp_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define WISP_ERR_CASE(name, value, text) case name: return text;
	WISP_ERR_LIST(WISP_ERR_CASE)
#undef WISP_ERR_CASE
	}
	return "unknown error";
}
