/* $SYS/broker/... statistics, published every sys_interval seconds. */
#ifndef WISP_PROTO_SYS_H
#define WISP_PROTO_SYS_H

#include "broker.h"

void sys_start(struct broker *b);
void sys_stop(struct broker *b);
/* Publishes every figure now (also called by the timer). */
void sys_publish(struct broker *b);
/* Publishes one $SYS figure, retained, as the timer does (the cluster's
 * $SYS/cluster/... totals use it). */
void sys_publish_value(struct broker *b, const char *topic, const char *value);

#endif
