/* $SYS/broker/... statistics, published every sys_interval seconds. */
#ifndef WISP_PROTO_SYS_H
#define WISP_PROTO_SYS_H

#include "broker.h"

void sys_start(struct broker *b);
void sys_stop(struct broker *b);
/* Publishes every figure now (also called by the timer). */
void sys_publish(struct broker *b);

#endif
