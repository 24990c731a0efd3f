// The server's own Prometheus counters and histograms, scraped before and
// after a run so the report can set the server's view beside the client's.
#ifndef MOONDREAM_TOOLS_BENCH_SERVE_SERVER_METRICS_H_
#define MOONDREAM_TOOLS_BENCH_SERVE_SERVER_METRICS_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace md::bench::serve {

// Sample name with labels (as exposed) -> value.
using Samples = std::map<std::string, double>;

// GET http://host:port/metrics (plain HTTP/1.1).
absl::StatusOr<std::string> FetchMetricsText(const std::string& host_port);

// Every `moondream_` sample of a text exposition.
Samples ParseExposition(absl::string_view text);

// after - before for every sample of `after` (counters and histogram
// series; a gauge's delta is what changed).
Samples Delta(const Samples& before, const Samples& after);

}  // namespace md::bench::serve

#endif  // MOONDREAM_TOOLS_BENCH_SERVE_SERVER_METRICS_H_
