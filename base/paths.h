// Paths the programs take from their command lines.
//
// A shell expands `~` only at the start of a word, so `--model=~/models/x`
// reaches the program with the `~` intact. And the default model ships inside
// the project tree (models/tiny-random), so a relative default works only when
// the program is started from the repository root; the programs look for it
// next to their own binary instead.
#ifndef MOONDREAM_BASE_PATHS_H_
#define MOONDREAM_BASE_PATHS_H_

#include <filesystem>
#include <string>
#include <string_view>

namespace md {

// `~` alone, or `~/` at the start, replaced by $HOME (by the password
// database's home when HOME is unset or empty). `~user` forms and every other
// path come back unchanged, as does `~` when no home directory is known.
std::string ExpandUser(std::string_view path);

// The directory of the running program, from /proc/self/exe; empty when it
// cannot be read.
std::filesystem::path ExecutableDir();

// Where `relative`, a path inside the project tree (e.g.
// "models/tiny-random"), is for a program in `exe_dir`: in `exe_dir` or one
// of its 3 nearest ancestors (the binaries are built at
// build/service/moondream-server, build/tools/moondream-cli,
// build/tests/<folder>/<test>), else under the install prefix,
// `exe_dir`/../share/moondream-serve/. The first that exists, as an absolute
// path; empty when none does.
std::string FindInProjectTree(std::string_view relative,
                              const std::filesystem::path& exe_dir);

// The default model directory `relative` (a path inside the project tree):
// found next to the running binary (FindInProjectTree), else `relative`
// itself, read from the working directory.
std::string ResolveDefaultModelDir(std::string_view relative);

// What a --model flag names: its default value (`default_dir`) resolved by
// ResolveDefaultModelDir, any other value with `~` expanded.
std::string ResolveModelFlag(std::string_view value,
                             std::string_view default_dir);

}  // namespace md

#endif  // MOONDREAM_BASE_PATHS_H_
