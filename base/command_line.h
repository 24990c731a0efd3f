// Command lines of the programs: absl flags are spelled with underscores
// (--max_tokens); people type dashes (--max-tokens) too. And --help should
// list the program's flags.
#ifndef MOONDREAM_BASE_COMMAND_LINE_H_
#define MOONDREAM_BASE_COMMAND_LINE_H_

#include <string>
#include <string_view>
#include <vector>

namespace md {

// argv with every flag name's dashes turned into underscores (values are
// left alone), for absl::ParseCommandLine. Owns the strings.
class UnderscoredArgv {
 public:
  UnderscoredArgv(int argc, char** argv) : args_(argv, argv + argc) {
    for (std::string& arg : args_) {
      if (arg.rfind("--", 0) == 0) {
        for (size_t i = 2; i < arg.size() && arg[i] != '='; ++i) {
          if (arg[i] == '-') arg[i] = '_';
        }
      }
      pointers_.push_back(arg.data());
    }
  }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> pointers_;
};

// Makes --help (and --helpshort, --helppackage) list the flags defined in
// `flags_file`: pass __FILE__ from the file of the ABSL_FLAGs, before
// absl::ParseCommandLine. Abseil lists under --help only flags from a file
// named after the program (moondream-server.cc, moondream-server_main.cc);
// ours live in main.cc, so --help would say "No flags matched".
void ListFlagsInHelp(std::string_view flags_file);

}  // namespace md

#endif  // MOONDREAM_BASE_COMMAND_LINE_H_
