/*
 * Broker error codes: 0 is success, failures are negative. WISP_EAGAIN is
 * flow control ("not now, try when the loop says so"), not a failure.
 */
#ifndef WISP_CORE_ERR_H
#define WISP_CORE_ERR_H

#define WISP_ERR_LIST(X)                                        \
	X(WISP_EAGAIN, -1, "operation would block")             \
	X(WISP_ENOMEM, -2, "out of memory")                     \
	X(WISP_EINVAL, -3, "invalid argument")                  \
	X(WISP_EIO, -4, "I/O error")                            \
	X(WISP_ECLOSED, -5, "connection closed by peer")        \
	X(WISP_ELIMIT, -6, "limit reached")                     \
	X(WISP_EEXIST, -7, "already exists")                    \
	X(WISP_ENOENT, -8, "not found")                         \
	X(WISP_EPROTO, -9, "protocol violation")                \
	X(WISP_ECONFIG, -10, "invalid configuration")

enum wisp_err {
#define WISP_ERR_ENUM(name, value, text) name = value,
	WISP_ERR_LIST(WISP_ERR_ENUM)
#undef WISP_ERR_ENUM
};

const char *wisp_strerror(int err);

#endif
