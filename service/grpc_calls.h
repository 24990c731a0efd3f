// The gRPC API's requests (proto/moondream/v1/moondream.proto) → SkillCalls
// (calls.h): what each RPC's message means, apart from the server's
// reactors, so the conversion is fuzzed on its own
// (tests/fuzz/grpc_request_fuzz.cc). Needs only the generated message
// classes, not gRPC or the model.
#ifndef MOONDREAM_SERVICE_GRPC_CALLS_H_
#define MOONDREAM_SERVICE_GRPC_CALLS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moondream/v1/moondream.pb.h"
#include "service/calls.h"

namespace md::service {

// Each is the call of one RPC; image.tenant is left empty (the caller knows
// it). Value ranges are left to the service (CheckCall states them); only
// what the message itself cannot say is refused here.
absl::StatusOr<SkillCall> ToCall(
    const ::moondream::v1::CaptionRequest& request);
absl::StatusOr<SkillCall> ToCall(const ::moondream::v1::QueryRequest& request);
absl::StatusOr<SkillCall> ToCall(const ::moondream::v1::DetectRequest& request);
absl::StatusOr<SkillCall> ToCall(const ::moondream::v1::PointRequest& request);
// Refused without an eye, unless prioritize_accuracy (which takes the face).
absl::StatusOr<SkillCall> ToCall(
    const ::moondream::v1::DetectGazeRequest& request);

// EncodeImage's image bytes (a view into `request`); a handle is refused.
absl::StatusOr<absl::string_view> ImageBytesOf(
    const ::moondream::v1::EncodeImageRequest& request);

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_GRPC_CALLS_H_
