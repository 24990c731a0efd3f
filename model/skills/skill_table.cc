#include "model/skills/skill_table.h"

#include <array>

namespace md {
namespace {

constexpr std::array<SkillSpec, 5> kSkills = {{
    {Skill::kCaption, "caption", "Caption", /*streams_text=*/true},
    {Skill::kQuery, "query", "Query", /*streams_text=*/true},
    {Skill::kDetect, "detect", "Detect", /*streams_text=*/false},
    {Skill::kPoint, "point", "Point", /*streams_text=*/false},
    {Skill::kGaze, "gaze", "DetectGaze", /*streams_text=*/false},
}};

}  // namespace

absl::Span<const SkillSpec> SkillTable() { return kSkills; }

const SkillSpec& SpecOf(Skill skill) {
  return kSkills[static_cast<size_t>(skill)];
}

absl::string_view SkillName(Skill skill) { return SpecOf(skill).name; }

std::optional<Skill> SkillFromName(absl::string_view name) {
  for (const SkillSpec& spec : kSkills) {
    if (spec.name == name) return spec.skill;
  }
  return std::nullopt;
}

}  // namespace md
