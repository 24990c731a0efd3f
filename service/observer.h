// What the transports tell the metrics about each request (an interface, so
// the service core and the transports do not depend on prometheus-cpp).
#ifndef MOONDREAM_SERVICE_OBSERVER_H_
#define MOONDREAM_SERVICE_OBSERVER_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "scheduler/request.h"

namespace md::service {

class RequestObserver {
 public:
  virtual ~RequestObserver() = default;
  // A request ended, at the engine or before it (then `summary` is empty
  // and `reached_engine` false). `skill` is the RPC's skill name.
  virtual void OnRequestDone(absl::string_view skill, absl::string_view tenant,
                             const absl::Status& status,
                             const scheduler::RequestSummary& summary,
                             bool reached_engine) = 0;
  // Time between two streamed outputs of one request.
  virtual void OnInterTokenGap(absl::Duration gap) = 0;
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_OBSERVER_H_
