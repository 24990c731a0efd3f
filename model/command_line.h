// Command lines of the programs: absl flags are spelled with underscores
// (--max_tokens); people type dashes (--max-tokens) too.
#ifndef MOONDREAM_MODEL_COMMAND_LINE_H_
#define MOONDREAM_MODEL_COMMAND_LINE_H_

#include <string>
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

}  // namespace md

#endif  // MOONDREAM_MODEL_COMMAND_LINE_H_
