/*
 * Intrusive circular doubly linked list (the libuv queue / linux list
 * shape): nodes live inside their owners, so linking never allocates and
 * unlinking is O(1).
 */
#ifndef WISP_CORE_LIST_H
#define WISP_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct list_node {
	struct list_node *prev, *next;
};

static inline void list_init(struct list_node *head) { head->prev = head->next = head; }
static inline bool list_empty(const struct list_node *head) { return head->next == head; }
/* A node that was list_init()ed or removed with list_remove() is unlinked. */
static inline bool list_linked(const struct list_node *n) { return n->next != n && n->next != NULL; }

static inline void list_insert_before(struct list_node *pos, struct list_node *n)
{
	n->prev = pos->prev;
	n->next = pos;
	pos->prev->next = n;
	pos->prev = n;
}
static inline void list_push_back(struct list_node *head, struct list_node *n) { list_insert_before(head, n); }
static inline void list_push_front(struct list_node *head, struct list_node *n) { list_insert_before(head->next, n); }
static inline void list_remove(struct list_node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}
static inline struct list_node *list_first(const struct list_node *head)
{
	return list_empty(head) ? NULL : head->next;
}

/* Moves every node of `from` to `to` (whatever it held is forgotten),
 * leaving `from` empty, in O(1). */
static inline void list_take_all(struct list_node *from, struct list_node *to)
{
	list_init(to);
	if (list_empty(from))
		return;
	to->next = from->next;
	to->prev = from->prev;
	to->next->prev = to;
	to->prev->next = to;
	list_init(from);
}

#define list_for_each_safe(pos, tmp, head) \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
