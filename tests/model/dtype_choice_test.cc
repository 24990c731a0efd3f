// --dtype=auto picks bf16 only where it is fast (AVX512-BF16 CPUs, CUDA) and
// says why; explicit names are honoured; unknown names are refused.
#include "model/net/dtype_choice.h"

#include <gtest/gtest.h>

#include "model/net/kernels/x86_simd.h"

namespace md {
namespace {

TEST(DTypeChoiceTest, ExplicitNamesAreHonoured) {
  const at::Device cpu(at::kCPU);
  for (const auto& [name, dtype] :
       {std::pair{"fp32", at::kFloat}, std::pair{"bf16", at::kBFloat16},
        std::pair{"FP16", at::kHalf}}) {
    absl::StatusOr<DTypeChoice> choice = ChooseDType(name, cpu);
    ASSERT_TRUE(choice.ok()) << choice.status();
    EXPECT_EQ(choice->dtype, dtype) << name;
  }
}

TEST(DTypeChoiceTest, AutoOnCpuFollowsAvx512Bf16AndSaysWhy) {
  absl::StatusOr<DTypeChoice> choice =
      ChooseDType("auto", at::Device(at::kCPU));
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->dtype, CpuHasAvx512Bf16() ? at::kBFloat16 : at::kFloat);
  EXPECT_NE(choice->reason.find("AVX512-BF16"), std::string::npos)
      << choice->reason;
  EXPECT_EQ(choice->reason.find("AMX") != std::string::npos, CpuHasAmxBf16())
      << choice->reason;
}

TEST(DTypeChoiceTest, AutoOnCudaIsBf16) {
  absl::StatusOr<DTypeChoice> choice =
      ChooseDType("AUTO", at::Device(at::kCUDA, 0));
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->dtype, at::kBFloat16);
}

TEST(DTypeChoiceTest, UnknownNameIsRefused) {
  absl::StatusOr<DTypeChoice> choice =
      ChooseDType("int8", at::Device(at::kCPU));
  EXPECT_EQ(choice.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace md
