/*
 * The main() every CUnit test program shares: register the suite table,
 * run it verbosely, exit non-zero if any assertion, test or suite set-up
 * failed (CUnit's own exit status does not say).
 */
#ifndef WISP_TESTS_UNIT_MAIN_H
#define WISP_TESTS_UNIT_MAIN_H

#include <CUnit/CUnit.h>

int unit_run(CU_SuiteInfo *suites);

#endif
