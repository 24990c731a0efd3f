// Every skill the server offers, one row each: its names on the wire and the
// limits its requests are checked against. Behaviour lives in the skill's
// job class (jobs.h); the engine never names a skill, and transports,
// metrics and logs take names from this table.
//
// Adding a skill: a SkillJob subclass (jobs.h/.cc) and a row here; then the
// transports expose it (proto, HTTP route).
#ifndef MOONDREAM_MODEL_SKILLS_SKILL_TABLE_H_
#define MOONDREAM_MODEL_SKILLS_SKILL_TABLE_H_

#include <cstdint>
#include <optional>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace md {

enum class Skill { kCaption, kQuery, kDetect, kPoint, kGaze };

struct SkillSpec {
  Skill skill;
  // Metrics label, log field, HTTP route (/v1/<name>) and CLI subcommand.
  absl::string_view name;
  // The moondream.v1.Moondream method.
  absl::string_view rpc;
  // Streams text (time to first token and inter-token latency apply).
  bool streams_text;
};

// The table, in enum order.
absl::Span<const SkillSpec> SkillTable();
const SkillSpec& SpecOf(Skill skill);
absl::string_view SkillName(Skill skill);
std::optional<Skill> SkillFromName(absl::string_view name);

// The one table of request limits; every boundary checks against these.
namespace limits {
// Tokens a caption or query generates unless it asks otherwise (the
// reference's default).
inline constexpr int kDefaultMaxTokens = 512;
// Objects detect and point report at most (the reference's cap), and the
// most a request may ask for.
inline constexpr int kDefaultMaxObjects = 50;
inline constexpr int kMaxObjects = 50;
// Sampling temperature range.
inline constexpr float kMaxTemperature = 2.0f;
}  // namespace limits

// Kept for callers of the single-request skills (skills.h).
inline constexpr int kDefaultMaxTokens = limits::kDefaultMaxTokens;
inline constexpr int kMaxObjects = limits::kDefaultMaxObjects;

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_SKILL_TABLE_H_
