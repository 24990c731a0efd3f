#include "tools/train/skill_eval.h"

#include <string>
#include <vector>

#include "base/status_macros.h"
#include "model/skills/skills.h"
#include "model/tokenizer/detokenizer.h"
#include "tools/scenes/questions.h"
#include "tools/scenes/random.h"
#include "tools/train/examples.h"

namespace md::train {
namespace {

using scenes::Scene;
using scenes::SceneTask;
using scenes::TaskKind;

absl::StatusOr<std::string> Detokenized(const Tokenizer& tokenizer,
                                        const std::vector<int>& tokens) {
  StreamingDetokenizer detok(&tokenizer);
  std::string text;
  for (int token : tokens) {
    ASSIGN_OR_RETURN(std::string piece, detok.Push(token));
    text += piece;
  }
  return text + detok.Flush();
}

// Asks one task and adds its score; true when entirely right.
absl::StatusOr<bool> AskAndScore(const ModelBundle& bundle,
                                 const EncodedImage& image, const Scene& scene,
                                 const SceneTask& task, int max_tokens,
                                 scenes::EvalTally& tally) {
  const Model& model = *bundle.model;
  const MoondreamConfig& config = model.config();
  if (scenes::TextTally* text = tally.TextFor(task.kind)) {
    std::vector<int> prompt;
    if (task.kind == TaskKind::kCaptionShort ||
        task.kind == TaskKind::kCaptionNormal) {
      ASSIGN_OR_RETURN(
          prompt, CaptionPrompt(config, task.kind == TaskKind::kCaptionShort
                                            ? CaptionLength::kShort
                                            : CaptionLength::kNormal));
    } else {
      ASSIGN_OR_RETURN(std::vector<int> question,
                       bundle.tokenizer->Encode(task.input));
      ASSIGN_OR_RETURN(prompt, QueryPrompt(config, question));
    }
    ASSIGN_OR_RETURN(TextResult result,
                     GenerateText(model, image, std::move(prompt), max_tokens));
    ASSIGN_OR_RETURN(std::string answer,
                     Detokenized(*bundle.tokenizer, result.tokens));
    const bool right = scenes::AnswerMatches(answer, task.answer);
    ++text->asked;
    text->correct += right;
    return right;
  }
  ASSIGN_OR_RETURN(std::vector<int> object,
                   bundle.tokenizer->Encode(task.input));
  if (task.kind == TaskKind::kDetect) {
    ASSIGN_OR_RETURN(std::vector<int> prompt, DetectPrompt(config, object));
    ASSIGN_OR_RETURN(DetectResult result,
                     Detect(model, image, std::move(prompt)));
    const scenes::DetectTally d =
        scenes::ScoreDetections(scene, task.targets, result.objects);
    tally.detect += d;
    return d.false_positives == 0 && d.false_negatives == 0;
  }
  ASSIGN_OR_RETURN(std::vector<int> prompt, PointPrompt(config, object));
  ASSIGN_OR_RETURN(PointResult result,
                   PointAt(model, image, std::move(prompt)));
  const scenes::PointTally p =
      scenes::ScorePoints(scene, task.targets, result.points);
  tally.point += p;
  return p.inside == p.points && p.reached == p.targets;
}

}  // namespace

absl::StatusOr<SkillEval> EvaluateSkills(const ModelBundle& bundle,
                                         uint64_t base_seed, int count,
                                         int max_tokens) {
  SkillEval eval;
  for (int i = 0; i < count; ++i) {
    const Scene scene = scenes::GenerateScene(
        scenes::SceneSeed(base_seed, static_cast<uint64_t>(i)));
    ASSIGN_OR_RETURN(ImageCrops crops,
                     SceneCrops(scene, bundle.model->config().vision));
    ASSIGN_OR_RETURN(EncodedImage image, EncodeImage(*bundle.model, crops));
    for (const SceneTask& task : scenes::SceneTasks(scene)) {
      ASSIGN_OR_RETURN(bool right, AskAndScore(bundle, image, scene, task,
                                               max_tokens, eval.tally));
      ++eval.questions;
      eval.all_right += right;
    }
  }
  return eval;
}

}  // namespace md::train
