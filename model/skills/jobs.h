// A request's work at the token level, behind one interface the engine
// drives without knowing the skill: a job has one or more sequences (each a
// skill run in a KV slot of its own, on the request's image or its mirror
// image), emits what its runs decide to the request's sink as they decide it,
// and completes once every sequence is done.
//
// The factories are the one place where a request's skill fields are
// checked (checks.h's rules, against skill_table.h's limits); a job that
// exists is valid. TextOptions and GazeOptions are in skill_types.h.
#ifndef MOONDREAM_MODEL_SKILLS_JOBS_H_
#define MOONDREAM_MODEL_SKILLS_JOBS_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/config/config.h"
#include "model/net/moondream.h"
#include "model/skills/runs.h"
#include "model/skills/sampling.h"
#include "model/skills/skill_table.h"
#include "model/skills/skill_types.h"
#include "model/skills/skills.h"
#include "model/tokenizer/tokenizer.h"

namespace md {

// Where a job's outputs go, as they are decided.
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  // `text` is what `token` completes (empty while a character is partial).
  virtual void OnToken(int token, absl::string_view text) {}
  // Text still held back at the end (a partial character, as U+FFFD).
  virtual void OnTextTail(absl::string_view text) {}
  virtual void OnBox(const Box& box) {}
  virtual void OnPoint(const Point& point) {}
  virtual void OnGaze(const std::optional<Point>& gaze) {}
};

// Which of the request's images a sequence runs on.
enum class ImageSide { kImage, kMirror };

class SkillJob {
 public:
  virtual ~SkillJob() = default;

  virtual Skill skill() const = 0;
  // Sequences, in order; each runs in a slot. A job given fewer slots than
  // sequences runs them in waves, with the same answer.
  virtual int n_sequences() const { return 1; }
  virtual ImageSide image_of(int sequence) const { return ImageSide::kImage; }
  // Positions one sequence needs after the image prefix: its prompt, and
  // the most it may generate.
  virtual int prompt_positions() const = 0;
  virtual int max_new_positions() const = 0;

  // Builds sequence `sequence`'s run (owned by the job) when it gets a slot.
  virtual absl::StatusOr<SkillRun*> StartSequence(
      int sequence, const InputEmbedder& embedder) = 0;
  // After sequence `sequence`'s run accepted a step's outputs: sends what it
  // decided to `sink`. Returns how many outputs it sent.
  virtual int Emit(int sequence, OutputSink& sink) = 0;
  // Once every sequence is done: the last outputs (how many it sent).
  virtual int Complete(OutputSink& sink) = 0;

  // Tokens for text; every coordinate and size decision for regions.
  virtual int output_tokens() const = 0;
  virtual StopReason stop_reason() const = 0;
};

// Caption or query on a whole prompt (template applied). `tokenizer` turns
// tokens into streamed text; without one, OnToken gets empty text.
absl::StatusOr<std::unique_ptr<SkillJob>> MakeTextJob(
    const MoondreamConfig& config, Skill skill, std::vector<int> prompt_ids,
    const TextOptions& options, const Tokenizer* tokenizer);

// Detect or point on a whole prompt (template applied).
absl::StatusOr<std::unique_ptr<SkillJob>> MakeRegionJob(
    const MoondreamConfig& config, Skill skill, std::vector<int> prompt_ids,
    int max_objects = limits::kDefaultMaxObjects);

absl::StatusOr<std::unique_ptr<SkillJob>> MakeGazeJob(
    const MoondreamConfig& config, const GazeOptions& options,
    GazePromptIds gaze_ids);

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_JOBS_H_
