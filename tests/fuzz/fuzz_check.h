// Invariant checks for the fuzzers. A broken invariant prints what broke and
// aborts, which libFuzzer reports as a crash and saves the input of.
#ifndef MOONDREAM_TESTS_FUZZ_FUZZ_CHECK_H_
#define MOONDREAM_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#define FUZZ_CHECK(condition)                                          \
  do {                                                                 \
    if (!(condition)) {                                                \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #condition);                              \
      std::abort();                                                    \
    }                                                                  \
  } while (false)

// As FUZZ_CHECK, with `detail` (anything std::string(detail) takes: a
// status's ToString(), a message) printed too.
#define FUZZ_CHECK_MSG(condition, detail)                                  \
  do {                                                                     \
    if (!(condition)) {                                                    \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s: %s\n", __FILE__, \
                   __LINE__, #condition, std::string(detail).c_str());     \
      std::abort();                                                        \
    }                                                                      \
  } while (false)

#endif  // MOONDREAM_TESTS_FUZZ_FUZZ_CHECK_H_
