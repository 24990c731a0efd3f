#include "model/skills/jobs.h"

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/skills/checks.h"
#include "model/tokenizer/detokenizer.h"

namespace md {
namespace {

// Positions one decoded object takes: x, y (and the size for detect).
constexpr int kDetectPositionsPerObject = 3;
constexpr int kPointPositionsPerObject = 2;

absl::Status CheckPromptIds(const MoondreamConfig& config,
                            absl::Span<const int> ids) {
  if (ids.empty()) return absl::InvalidArgumentError("empty prompt");
  const int vocab = config.text.vocab_size;
  for (int id : ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id,
                       " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSkill(Skill skill, std::initializer_list<Skill> allowed) {
  for (Skill s : allowed) {
    if (s == skill) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("skill '", SkillName(skill), "' does not take this job"));
}

// ---- Caption and query ----

class TextJob final : public SkillJob {
 public:
  TextJob(Skill skill, std::vector<int> prompt_ids, const TextOptions& options,
          int eos_id, const Tokenizer* tokenizer)
      : skill_(skill),
        n_prompt_(static_cast<int>(prompt_ids.size())),
        max_tokens_(options.max_tokens),
        run_(std::move(prompt_ids), options.max_tokens,
             options.ignore_eos ? -1 : eos_id,
             MakeTokenChooser(options.sampling)) {
    if (tokenizer != nullptr) {
      detokenizer_ = std::make_unique<StreamingDetokenizer>(tokenizer);
    }
  }

  Skill skill() const override { return skill_; }
  int prompt_positions() const override { return n_prompt_; }
  int max_new_positions() const override { return max_tokens_; }

  absl::StatusOr<SkillRun*> StartSequence(int, const InputEmbedder&) override {
    return &run_;
  }

  int Emit(int, OutputSink& sink) override {
    const std::vector<int>& tokens = run_.tokens();
    const size_t before = emitted_;
    for (; emitted_ < tokens.size(); ++emitted_) {
      const int token = tokens[emitted_];
      std::string text;
      if (detokenizer_) {
        absl::StatusOr<std::string> piece = detokenizer_->Push(token);
        if (piece.ok()) text = *std::move(piece);
      }
      sink.OnToken(token, text);
    }
    return static_cast<int>(emitted_ - before);
  }

  int Complete(OutputSink& sink) override {
    if (!detokenizer_) return 0;
    const std::string tail = detokenizer_->Flush();
    if (tail.empty()) return 0;
    sink.OnTextTail(tail);
    return 1;
  }

  int output_tokens() const override { return static_cast<int>(emitted_); }
  StopReason stop_reason() const override { return run_.stop_reason(); }

 private:
  const Skill skill_;
  const int n_prompt_;
  const int max_tokens_;
  TextRun run_;
  std::unique_ptr<StreamingDetokenizer> detokenizer_;
  size_t emitted_ = 0;
};

// ---- Detect and point ----

class RegionJob final : public SkillJob {
 public:
  RegionJob(Skill skill, std::vector<int> prompt_ids, int max_objects,
            int eos_id)
      : skill_(skill),
        n_prompt_(static_cast<int>(prompt_ids.size())),
        max_objects_(max_objects),
        run_(skill == Skill::kDetect ? RegionRun::Kind::kDetect
                                     : RegionRun::Kind::kPoint,
             std::move(prompt_ids), max_objects, eos_id) {}

  Skill skill() const override { return skill_; }
  int prompt_positions() const override { return n_prompt_; }
  int max_new_positions() const override {
    return max_objects_ * (skill_ == Skill::kDetect ? kDetectPositionsPerObject
                                                    : kPointPositionsPerObject);
  }

  absl::StatusOr<SkillRun*> StartSequence(int, const InputEmbedder&) override {
    return &run_;
  }

  int Emit(int, OutputSink& sink) override {
    ++decisions_;
    const size_t before = reported_;
    if (skill_ == Skill::kDetect) {
      for (; reported_ < run_.boxes().size(); ++reported_) {
        sink.OnBox(run_.boxes()[reported_]);
      }
    } else {
      for (; reported_ < run_.points().size(); ++reported_) {
        sink.OnPoint(run_.points()[reported_]);
      }
    }
    return static_cast<int>(reported_ - before);
  }

  int Complete(OutputSink&) override { return 0; }
  int output_tokens() const override { return decisions_; }
  StopReason stop_reason() const override { return run_.stop_reason(); }

 private:
  const Skill skill_;
  const int n_prompt_;
  const int max_objects_;
  RegionRun run_;
  size_t reported_ = 0;
  int decisions_ = 0;
};

// ---- Gaze: one probe, or prioritize_accuracy's 20 ----

class GazeJob final : public SkillJob {
 public:
  GazeJob(std::vector<GazeProbe> probes, bool accurate, GazePromptIds ids,
          int eos_id, bool force_detect)
      : probes_(std::move(probes)),
        accurate_(accurate),
        ids_(std::move(ids)),
        eos_id_(eos_id),
        force_detect_(force_detect),
        runs_(probes_.size()) {}

  Skill skill() const override { return Skill::kGaze; }
  int n_sequences() const override { return static_cast<int>(probes_.size()); }
  ImageSide image_of(int sequence) const override {
    return probes_[sequence].mirrored ? ImageSide::kMirror : ImageSide::kImage;
  }
  int prompt_positions() const override {
    return static_cast<int>(ids_.before.size() + ids_.after.size()) + 2;
  }
  int max_new_positions() const override { return kPointPositionsPerObject; }

  absl::StatusOr<SkillRun*> StartSequence(
      int sequence, const InputEmbedder& embedder) override {
    ASSIGN_OR_RETURN(
        at::Tensor prompt_TC,
        GazePromptEmbeddings(embedder, ids_, probes_[sequence].eye));
    runs_[sequence] = std::make_unique<RegionRun>(
        RegionRun::Gaze(std::move(prompt_TC), eos_id_, force_detect_));
    return runs_[sequence].get();
  }

  int Emit(int, OutputSink&) override {
    ++decisions_;
    return 0;
  }

  int Complete(OutputSink& sink) override {
    std::vector<std::optional<Point>> answers;
    for (const auto& run : runs_) {
      answers.push_back(run == nullptr || run->points().empty()
                            ? std::nullopt
                            : std::optional<Point>(run->points()[0]));
    }
    sink.OnGaze(accurate_ ? CombineGazeProbes(probes_, answers) : answers[0]);
    return 1;
  }

  int output_tokens() const override { return decisions_; }
  StopReason stop_reason() const override {
    return runs_[0] ? runs_[0]->stop_reason() : StopReason::kNone;
  }

 private:
  const std::vector<GazeProbe> probes_;
  const bool accurate_;
  const GazePromptIds ids_;
  const int eos_id_;
  const bool force_detect_;
  std::vector<std::unique_ptr<RegionRun>> runs_;
  int decisions_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SkillJob>> MakeTextJob(
    const MoondreamConfig& config, Skill skill, std::vector<int> prompt_ids,
    const TextOptions& options, const Tokenizer* tokenizer) {
  RETURN_IF_ERROR(CheckSkill(skill, {Skill::kCaption, Skill::kQuery}));
  RETURN_IF_ERROR(CheckPromptIds(config, prompt_ids));
  RETURN_IF_ERROR(CheckTextOptions(options, config.text.max_context));
  return std::make_unique<TextJob>(skill, std::move(prompt_ids), options,
                                   config.tokenizer.eos_id, tokenizer);
}

absl::StatusOr<std::unique_ptr<SkillJob>> MakeRegionJob(
    const MoondreamConfig& config, Skill skill, std::vector<int> prompt_ids,
    int max_objects) {
  RETURN_IF_ERROR(CheckSkill(skill, {Skill::kDetect, Skill::kPoint}));
  RETURN_IF_ERROR(CheckPromptIds(config, prompt_ids));
  RETURN_IF_ERROR(CheckMaxObjects(max_objects));
  return std::make_unique<RegionJob>(skill, std::move(prompt_ids), max_objects,
                                     config.tokenizer.eos_id);
}

absl::StatusOr<std::unique_ptr<SkillJob>> MakeGazeJob(
    const MoondreamConfig& config, const GazeOptions& options,
    GazePromptIds gaze_ids) {
  RETURN_IF_ERROR(CheckGazeOptions(options));
  std::vector<GazeProbe> probes;
  if (options.face.has_value()) {
    ASSIGN_OR_RETURN(probes, AccurateGazeProbes(*options.face, options.seed));
  } else {
    probes = {GazeProbe{options.eye, false}};
  }
  for (const std::vector<int>* ids : {&gaze_ids.before, &gaze_ids.after}) {
    for (int id : *ids) {
      if (id < 0 || id >= config.text.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "gaze prompt token id ", id, " is outside the vocabulary"));
      }
    }
  }
  return std::make_unique<GazeJob>(std::move(probes), options.face.has_value(),
                                   std::move(gaze_ids), config.tokenizer.eos_id,
                                   options.force_detect);
}

}  // namespace md
