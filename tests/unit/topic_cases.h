/*
 * Filter/name match cases shared by test_topic, test_tree and
 * test_retained, so the reference matcher, the subscription tree and the
 * retained store are held to one table. Mostly the examples of MQTT 3.1.1
 * section 4.7, each tagged with the rule it shows.
 */
#ifndef WISP_TEST_TOPIC_CASES_H
#define WISP_TEST_TOPIC_CASES_H

#include <stdbool.h>
#include <stddef.h>

struct match_case {
	const char *filter;
	const char *name;
	bool match;
	const char *why;
};

static const struct match_case MATCH_CASES[] = {
	/* 4.7.1.2 multi-level wildcard */
	{"sport/tennis/player1/#", "sport/tennis/player1", true, "[MQTT-4.7.1-2] # matches the parent level"},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true, "4.7.1.2 example"},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true, "4.7.1.2 example"},
	{"sport/tennis/player1/#", "sport/tennis/player2", false, "literal level differs"},
	{"sport/tennis/player1/#", "sport/tennis", false, "# needs the levels before it"},
	{"sport/#", "sport", true, "[MQTT-4.7.1-2] sport/# matches sport"},
	{"#", "sport/tennis", true, "# matches everything"},
	{"#", "/", true, "# matches empty levels"},
	{"#", "a", true, "# at root matches one level"},
	{"a/#", "a/", true, "# matches an empty level"},
	{"a/#", "ab", false, "# is a whole level"},
	/* 4.7.1.3 single-level wildcard */
	{"sport/tennis/+", "sport/tennis/player1", true, "4.7.1.3 example"},
	{"sport/tennis/+", "sport/tennis/player2", true, "4.7.1.3 example"},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false, "[MQTT-4.7.1-3] + is one level"},
	{"sport/+", "sport", false, "4.7.1.3 sport/+ does not match sport"},
	{"sport/+", "sport/", true, "4.7.1.3 sport/+ matches sport/"},
	{"+/+", "/finance", true, "4.7.1.3 example"},
	{"/+", "/finance", true, "4.7.1.3 example"},
	{"+", "/finance", false, "4.7.1.3 + is one level"},
	{"+/+", "/", true, "+ matches empty levels"},
	{"+", "a", true, "+ at root"},
	{"+/tennis/#", "sport/tennis", true, "+ then # parent level"},
	{"+/tennis/#", "sport/tennis/x/y", true, "+ then #"},
	{"+/#", "a", true, "+ then # matches one level"},
	{"a/+/#", "a", false, "+ needs a level"},
	{"a/+/b", "a//b", true, "+ matches the empty middle level"},
	{"sport/+/player1", "sport/tennis/player1", true, "4.7.1.3 example"},
	/* 4.7.2 topics beginning with $ */
	{"#", "$SYS/monitor/Clients", false, "[MQTT-4.7.2-1] # does not match $ names"},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false, "[MQTT-4.7.2-1] + does not match $ names"},
	{"+", "$SYS", false, "[MQTT-4.7.2-1] + does not match $SYS"},
	{"+/#", "$SYS/x", false, "[MQTT-4.7.2-1] +/# does not match $ names"},
	{"$SYS/#", "$SYS/monitor/Clients", true, "4.7.2 $SYS/# matches"},
	{"$SYS/#", "$SYS", true, "$SYS/# matches its parent level"},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true, "4.7.2 $SYS/monitor/+ matches"},
	{"$SYS/x", "$SYS/x", true, "$ literal"},
	{"$SYS/x", "$SYS/y", false, "$ literal differs"},
	{"a/$b", "a/$b", true, "$ only matters in the first level"},
	{"a/+", "a/$b", true, "+ matches $ below the first level"},
	{"#", "a/$b", true, "# matches $ below the first level"},
	{"$", "$", true, "a lone $ is a literal"},
	{"#", "x$", true, "$ not first is ordinary"},
	/* literals */
	{"a/b", "a/b", true, "equal"},
	{"a/b", "a/b/", false, "trailing empty level"},
	{"a/b/", "a/b/", true, "trailing empty level equal"},
	{"a/b", "A/b", false, "[MQTT-4.7.3-4] no normalisation: case sensitive"},
	{"/", "/", true, "two empty levels"},
	{"/", "//", false, "level count differs"},
	{"a", "a/b", false, "prefix is not a match"},
	{"a/b", "a", false, "longer filter"},
	{"sport tennis", "sport tennis", true, "4.7.3 spaces are allowed"},
};

#define MATCH_CASES_N (sizeof MATCH_CASES / sizeof MATCH_CASES[0])

#endif
