#include "base/log.h"

#include <gtest/gtest.h>

namespace md {
namespace {

TEST(LogTest, LinesAreLogfmtWithQuotedValuesWhereNeeded) {
  EXPECT_EQ(FormatLogLine(LogLevel::kInfo, "request_done",
                          {{"id", 7},
                           {"tenant", "acme"},
                           {"error", "bad \"thing\" = x\n"},
                           {"cache_hit", true},
                           {"empty", ""}}),
            "level=info event=request_done id=7 tenant=acme "
            "error=\"bad \\\"thing\\\" = x\\n\" cache_hit=true empty=\"\"");
}

TEST(LogTest, LevelsFilterAndParse) {
  const LogLevel before = GetLogLevel();
  SetLogLevel(LogLevel::kWarning);
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  EXPECT_TRUE(LogEnabled(LogLevel::kWarning));
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  SetLogLevel(before);
  EXPECT_EQ(*ParseLogLevel("DEBUG"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("error"), LogLevel::kError);
  EXPECT_FALSE(ParseLogLevel("verbose").ok());
}

}  // namespace
}  // namespace md
