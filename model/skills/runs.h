// Per-sequence skill state machines (docs/DESIGN.md §2.5).
//
// A run says what its sequence feeds next (embeddings, the mask to prefill
// them with, and which heads to evaluate on the last fed row), and then
// consumes those head outputs to decide what comes next. Whoever drives runs
// (the single-request skills, or the engine with many runs in one batch)
// does the forward pass; a run never touches the KV cache, so batching can
// never change what it decides.
#ifndef MOONDREAM_MODEL_SKILLS_RUNS_H_
#define MOONDREAM_MODEL_SKILLS_RUNS_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "model/net/feeds.h"
#include "model/net/moondream.h"
#include "model/net/text.h"
#include "model/skills/skill_types.h"

namespace md {

struct StepInput {
  at::Tensor embeds_TC;
  AttentionMask mask = AttentionMask::kCausal;
  HeadRequest heads;
};

enum class StopReason { kNone, kEos, kMaxTokens, kMaxObjects };
const char* StopReasonName(StopReason reason);

class SkillRun {
 public:
  virtual ~SkillRun() = default;
  // What to feed next; only called while !done().
  virtual absl::StatusOr<StepInput> Next(const InputEmbedder& model) = 0;
  // Consumes the head outputs of the step that fed Next()'s input.
  virtual void Accept(const StepOutput& out) = 0;

  bool done() const { return stop_ != StopReason::kNone; }
  StopReason stop_reason() const { return stop_; }

 protected:
  void Finish(StopReason reason) { stop_ = reason; }

 private:
  StopReason stop_ = StopReason::kNone;
};

// Picks the next token from logits [V]. Greedy (first maximum) when empty.
using TokenChooser = std::function<int(const at::Tensor& logits_V)>;
// Sees each emitted token as soon as it is decided (for streaming).
using TokenSink = std::function<void(int token)>;
int GreedyToken(const at::Tensor& logits_V);

// Query and caption: prefill the prompt, then emit tokens until eos or
// max_tokens. The token after the last emitted one is never fed when
// max_tokens ends the run (its output could not change the result).
class TextRun final : public SkillRun {
 public:
  TextRun(std::vector<int> prompt_ids, int max_tokens, int eos_id,
          TokenChooser choose = {}, TokenSink on_token = {});

  absl::StatusOr<StepInput> Next(const InputEmbedder& model) override;
  void Accept(const StepOutput& out) override;

  const std::vector<int>& tokens() const { return tokens_; }

 private:
  std::vector<int> prompt_ids_;
  int max_tokens_;
  int eos_id_;
  TokenChooser choose_;
  TokenSink on_token_;
  bool prompt_fed_ = false;
  std::vector<int> tokens_;
};

// Detect, point and gaze: after the prompt, while the next token is not eos,
// read x, feed it, read y, feed it, (detect: read w and h, feed them), emit.
class RegionRun final : public SkillRun {
 public:
  enum class Kind { kDetect, kPoint };

  // Detect/point after a token prompt (causal prefill).
  RegionRun(Kind kind, std::vector<int> prompt_ids, int max_objects,
            int eos_id);
  // Gaze: a prompt of embeddings prefilled with every token seeing every
  // other, one point at most; force_detect ignores an eos first token.
  static RegionRun Gaze(at::Tensor prompt_embeds_TC, int eos_id,
                        bool force_detect);

  absl::StatusOr<StepInput> Next(const InputEmbedder& model) override;
  void Accept(const StepOutput& out) override;

  const std::vector<Box>& boxes() const { return boxes_; }
  const std::vector<Point>& points() const { return points_; }
  // Argmax bins per object: x, y (and w, h for detect).
  const std::vector<std::vector<int>>& bins() const { return bins_; }
  // The greedy token after the prompt (eos means nothing found).
  std::optional<int> first_token() const { return first_token_; }

 private:
  enum class Phase { kPrompt, kFeedX, kFeedY, kFeedSize };

  void AcceptToken(const StepOutput& out);

  Kind kind_;
  std::vector<int> prompt_ids_;
  at::Tensor prompt_embeds_TC_;
  AttentionMask prompt_mask_ = AttentionMask::kCausal;
  int max_objects_;
  int eos_id_;
  bool force_detect_ = false;

  Phase phase_ = Phase::kPrompt;
  float x_ = 0, y_ = 0, w_ = 0, h_ = 0;
  std::vector<int> current_bins_;
  std::optional<int> first_token_;
  std::vector<Box> boxes_;
  std::vector<Point> points_;
  std::vector<std::vector<int>> bins_;
};

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_RUNS_H_
