#include "tools/bench/op_profile.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>

namespace md::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The observers are plain function pointers, so their state is per thread.
struct ThreadState {
  int depth = 0;
  std::map<std::string, OpTime> ops;
};
thread_local ThreadState t_state;

struct StartTime : at::ObserverContext {
  Clock::time_point start;
};

std::unique_ptr<at::ObserverContext> OnStart(const at::RecordFunction& fn) {
  if (t_state.depth++ != 0) return nullptr;
  auto ctx = std::make_unique<StartTime>();
  ctx->start = Clock::now();
  return ctx;
}

void OnEnd(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  --t_state.depth;
  if (ctx == nullptr) return;
  const double ms = std::chrono::duration<double, std::milli>(
                        Clock::now() - static_cast<StartTime*>(ctx)->start)
                        .count();
  OpTime& op = t_state.ops[fn.name()];
  op.name = fn.name();
  op.calls += 1;
  op.ms += ms;
}

}  // namespace

OpProfile::OpProfile() {
  t_state = ThreadState{};
  handle_ = at::addThreadLocalCallback(
      at::RecordFunctionCallback(OnStart, OnEnd)
          .scopes({at::RecordScope::FUNCTION, at::RecordScope::USER_SCOPE}));
  active_ = true;
}

OpProfile::~OpProfile() {
  if (active_) at::removeCallback(handle_);
}

std::vector<OpTime> OpProfile::Finish() {
  if (active_) at::removeCallback(handle_);
  active_ = false;
  std::vector<OpTime> ops;
  for (auto& [name, op] : t_state.ops) ops.push_back(op);
  std::sort(ops.begin(), ops.end(),
            [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
  t_state = ThreadState{};
  return ops;
}

}  // namespace md::bench
