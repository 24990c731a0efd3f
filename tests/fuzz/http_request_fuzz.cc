// Fuzzes the HTTP gateway's request handling short of the model: raw
// HTTP/1.1 bytes through the incremental parser (service/http/
// request_parser.h), then each complete request's body through the API's
// JSON parsing (service/http_api.h) and the skill checks (CheckCall).
//
// Input: five bytes that say how the request bytes are cut, then the bytes.
// Byte 0 picks one, two or three chunks; bytes 1-2 and 3-4 (little-endian)
// place the first cut and the second (after the first), modulo what is
// left, so the fuzzer can cut at any byte.
//
// What holds by design:
// - Chunking never changes the outcome: the chunks fed one after another
//   give the same state, request (or error) and bytes used as all of them in
//   one Feed.
// - A complete request has a body of exactly Content-Length bytes, within
//   the limit; its path is its target up to '?'; header names are lower
//   case. Errors are the statuses the parser documents.
// - Pipelined requests after a complete one parse the same way after Reset.
// - Body and field errors are InvalidArgument, answered 400 (415 for a
//   media type that is not JSON); an accepted call has at most one image
//   source and skill fields that pass CheckCall only within the limits
//   (call_invariants.h).
// - A data URL of any bytes decodes back to them.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "model/skills/skill_table.h"
#include "service/calls.h"
#include "service/http/request_parser.h"
#include "service/http_api.h"
#include "tests/fuzz/call_invariants.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using md::Skill;
using md::service::http::HttpRequest;
using md::service::http::ParserLimits;
using md::service::http::RequestParser;
using State = RequestParser::State;

// Small limits, so that inputs of a few KB reach both refusals.
constexpr ParserLimits kLimits{.max_header_bytes = 512, .max_body_bytes = 4096};
// Requests parsed from one input at most (the rest is pipelined bytes).
constexpr int kMaxPipelined = 4;

// Bytes 1-2 or 3-4 of the input.
size_t Cut(const uint8_t* cut) { return cut[0] | (size_t{cut[1]} << 8); }

// The request bytes cut as the input's first five bytes say.
std::vector<absl::string_view> Chunks(const uint8_t* prefix,
                                      absl::string_view bytes) {
  const size_t n = bytes.size();
  const size_t a = Cut(prefix + 1) % (n + 1);
  const size_t b = a + Cut(prefix + 3) % (n - a + 1);
  switch (prefix[0] % 3) {
    case 0:
      return {bytes};
    case 1:
      return {bytes.substr(0, a), bytes.substr(a)};
    default:
      return {bytes.substr(0, a), bytes.substr(a, b - a), bytes.substr(b)};
  }
}

void ExpectSameRequest(const HttpRequest& a, const HttpRequest& b) {
  FUZZ_CHECK(a.method == b.method);
  FUZZ_CHECK(a.target == b.target);
  FUZZ_CHECK(a.path == b.path);
  FUZZ_CHECK(a.version_minor == b.version_minor);
  FUZZ_CHECK(a.headers == b.headers);
  FUZZ_CHECK(a.body == b.body);
}

// Fed in one piece and in chunks, the parsers agree.
void ExpectSameOutcome(const RequestParser& whole, size_t whole_used,
                       const RequestParser& chunked, size_t chunked_used) {
  FUZZ_CHECK_MSG(whole.state() == chunked.state(),
                 absl::StrCat("whole ", static_cast<int>(whole.state()), " (",
                              whole.error_message(), "), chunked ",
                              static_cast<int>(chunked.state()), " (",
                              chunked.error_message(), ")"));
  if (whole.state() == State::kError) {
    FUZZ_CHECK(whole.error_status() == chunked.error_status());
    FUZZ_CHECK(whole.error_message() == chunked.error_message());
    return;
  }
  FUZZ_CHECK(whole_used == chunked_used);
  if (whole.headers_done()) {
    FUZZ_CHECK(whole.content_length() == chunked.content_length());
    ExpectSameRequest(whole.request(), chunked.request());
  }
}

void CheckParserState(const RequestParser& parser, size_t used, size_t fed) {
  FUZZ_CHECK(used <= fed);
  switch (parser.state()) {
    case State::kError: {
      const int status = parser.error_status();
      FUZZ_CHECK_MSG(status == 400 || status == 411 || status == 413 ||
                         status == 414 || status == 431 || status == 501 ||
                         status == 505,
                     absl::StrCat(status));
      FUZZ_CHECK(!parser.error_message().empty());
      return;
    }
    case State::kHeaders:
      // Still waiting for the blank line: everything was taken.
      FUZZ_CHECK(used == fed);
      return;
    case State::kBody:
      FUZZ_CHECK(used == fed);
      FUZZ_CHECK(static_cast<int64_t>(parser.request().body.size()) <
                 parser.content_length());
      break;
    case State::kComplete:
      FUZZ_CHECK(static_cast<int64_t>(parser.request().body.size()) ==
                 parser.content_length());
      break;
  }
  const HttpRequest& r = parser.request();
  FUZZ_CHECK(parser.content_length() >= 0 &&
             parser.content_length() <= kLimits.max_body_bytes);
  FUZZ_CHECK(!r.method.empty() && !r.target.empty());
  FUZZ_CHECK(r.path == r.target.substr(0, r.target.find('?')));
  FUZZ_CHECK(r.version_minor == 0 || r.version_minor == 1);
  for (const auto& [name, value] : r.headers) {
    FUZZ_CHECK(!name.empty() && name == absl::AsciiStrToLower(name));
  }
  // Only Content-Length frames a body.
  FUZZ_CHECK(!r.HasHeader("transfer-encoding"));
  (void)r.KeepAlive();
  (void)r.ExpectsContinue();
}

// The skill a path names (/v1/<name>), if any.
std::vector<Skill> SkillsFor(absl::string_view path) {
  if (absl::ConsumePrefix(&path, "/v1/")) {
    if (std::optional<Skill> skill = md::SkillFromName(path)) return {*skill};
  }
  std::vector<Skill> all;
  for (const md::SkillSpec& spec : md::SkillTable()) all.push_back(spec.skill);
  return all;
}

void CheckBody(const HttpRequest& request) {
  const absl::StatusOr<md::service::Json> body =
      md::service::ParseJsonBody(request.Header("content-type"), request.body);
  if (!body.ok()) {
    md::fuzz::CheckRefusal(body.status());
    const int http = md::service::HttpStatusFor(body.status());
    FUZZ_CHECK(http == 400 || http == 415);
    return;
  }
  FUZZ_CHECK(body->is_object());
  for (Skill skill : SkillsFor(request.path)) {
    const absl::StatusOr<md::service::HttpCall> call =
        md::service::ParseHttpCall(skill, *body);
    if (!call.ok()) {
      md::fuzz::CheckRefusal(call.status());
      FUZZ_CHECK(md::service::HttpStatusFor(call.status()) == 400);
      continue;
    }
    FUZZ_CHECK(call->call.skill == skill);
    FUZZ_CHECK(!call->stream || md::SpecOf(skill).streams_text);
    md::fuzz::CheckParsedCall(call->call);
  }
}

// Every byte string survives a data URL.
void CheckDataUrlRoundTrip(absl::string_view bytes) {
  if (bytes.empty()) return;
  const absl::StatusOr<std::string> decoded = md::service::DecodeDataUrl(
      absl::StrCat("data:image/png;base64,", absl::Base64Escape(bytes)));
  FUZZ_CHECK_MSG(decoded.ok(), decoded.status().ToString());
  FUZZ_CHECK(*decoded == bytes);
}

// The input itself as an image_url: what decodes is a data URL, never empty.
void CheckDataUrl(absl::string_view url) {
  const absl::StatusOr<std::string> decoded = md::service::DecodeDataUrl(url);
  if (!decoded.ok()) {
    md::fuzz::CheckRefusal(decoded.status());
    return;
  }
  FUZZ_CHECK(absl::StartsWith(url, "data:"));
  FUZZ_CHECK(!decoded->empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kPrefix = 5;
  if (size < kPrefix) return 0;
  const absl::string_view bytes(reinterpret_cast<const char*>(data) + kPrefix,
                                size - kPrefix);

  RequestParser whole(kLimits);
  size_t whole_used = whole.Feed(bytes);
  RequestParser chunked(kLimits);
  size_t chunked_used = 0;
  for (absl::string_view chunk : Chunks(data, bytes)) {
    chunked_used += chunked.Feed(chunk);
  }
  ExpectSameOutcome(whole, whole_used, chunked, chunked_used);

  // The first request, then any pipelined after it.
  size_t offset = 0;
  for (int i = 0; i < kMaxPipelined; ++i) {
    CheckParserState(whole, whole_used, bytes.size() - offset);
    if (whole.state() != State::kComplete) break;
    FUZZ_CHECK(whole_used > 0);
    CheckBody(whole.request());
    offset += whole_used;
    if (offset == bytes.size()) break;
    whole.Reset();
    whole_used = whole.Feed(bytes.substr(offset));
  }

  CheckDataUrlRoundTrip(bytes);
  CheckDataUrl(bytes);
  return 0;
}
