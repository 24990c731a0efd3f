// The HTTP API's request bodies (http_gateway.h lists the endpoints and
// their fields): JSON in, a SkillCall (calls.h) out, with errors that name
// the field. No sockets and no model, so the parsing is unit-tested through
// the gateway and fuzzed on its own (tests/fuzz/http_request_fuzz.cc).
#ifndef MOONDREAM_SERVICE_HTTP_API_H_
#define MOONDREAM_SERVICE_HTTP_API_H_

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/skills/skill_table.h"
#include "service/calls.h"

namespace md::service {

using Json = nlohmann::json;

// A body of media type `content_type` ("" when the header is absent) →
// its JSON object. A media type other than application/json is 415 (as a
// kHttpStatusPayload); malformed JSON, invalid UTF-8 or another JSON value
// than an object is InvalidArgument.
absl::StatusOr<Json> ParseJsonBody(absl::string_view content_type,
                                   absl::string_view body);

struct HttpCall {
  SkillCall call;  // image.tenant is left empty: the caller knows it.
  // Answer as server-sent events (caption and query only).
  bool stream = false;
};

// The fields of `skill`'s endpoint in `body`; fields of other endpoints are
// ignored. Type errors name the field; value ranges are left to the service
// (CheckCall in calls.h states them).
absl::StatusOr<HttpCall> ParseHttpCall(Skill skill, const Json& body);

// data:[<type>][;base64],<data> → the decoded bytes (never empty).
absl::StatusOr<std::string> DecodeDataUrl(absl::string_view url);

// `status` marked to be answered with `http_status` (kHttpStatusPayload),
// decided where the error arises, never from its message.
absl::Status WithHttpStatus(absl::Status status, int http_status);
// The HTTP status for a service error (400, 401, 404, 413, 415, 429, 499,
// 500, 503, 504).
int HttpStatusFor(const absl::Status& status);

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_HTTP_API_H_
