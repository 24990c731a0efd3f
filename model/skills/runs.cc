#include "model/skills/runs.h"

#include <ATen/ATen.h>

#include "base/status_macros.h"

namespace md {
namespace {

// Bin index of the largest logit, and its value as bin / n_bins.
int ArgmaxBin(const at::Tensor& logits_X) {
  return static_cast<int>(at::argmax(logits_X).item<int64_t>());
}
float BinValue(int bin, int64_t n_bins) {
  return static_cast<float>(bin) / static_cast<float>(n_bins);
}

}  // namespace

const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kNone:
      return "none";
    case StopReason::kEos:
      return "eos";
    case StopReason::kMaxTokens:
      return "max_tokens";
    case StopReason::kMaxObjects:
      return "max_objects";
  }
  return "unknown";
}

int GreedyToken(const at::Tensor& logits_V) { return ArgmaxBin(logits_V); }

// ---- TextRun ----

TextRun::TextRun(std::vector<int> prompt_ids, int max_tokens, int eos_id,
                 TokenChooser choose, TokenSink on_token)
    : prompt_ids_(std::move(prompt_ids)),
      max_tokens_(max_tokens),
      eos_id_(eos_id),
      choose_(std::move(choose)),
      on_token_(std::move(on_token)) {}

absl::StatusOr<StepInput> TextRun::Next(const InputEmbedder& model) {
  StepInput in;
  in.heads.logits = true;
  if (!prompt_fed_) {
    prompt_fed_ = true;
    ASSIGN_OR_RETURN(in.embeds_TC, model.EmbedTokens(prompt_ids_));
  } else {
    ASSIGN_OR_RETURN(in.embeds_TC, model.EmbedTokens({tokens_.back()}));
  }
  return in;
}

void TextRun::Accept(const StepOutput& out) {
  const int token = choose_ ? choose_(out.logits_V) : GreedyToken(out.logits_V);
  if (token == eos_id_) return Finish(StopReason::kEos);
  if (static_cast<int>(tokens_.size()) >= max_tokens_) {
    return Finish(StopReason::kMaxTokens);
  }
  tokens_.push_back(token);
  if (on_token_) on_token_(token);
  if (static_cast<int>(tokens_.size()) == max_tokens_)
    Finish(StopReason::kMaxTokens);
}

// ---- RegionRun ----

RegionRun::RegionRun(Kind kind, std::vector<int> prompt_ids, int max_objects,
                     int eos_id)
    : kind_(kind),
      prompt_ids_(std::move(prompt_ids)),
      max_objects_(max_objects),
      eos_id_(eos_id) {}

RegionRun RegionRun::Gaze(at::Tensor prompt_embeds_TC, int eos_id,
                          bool force_detect) {
  RegionRun run(Kind::kPoint, {}, /*max_objects=*/1, eos_id);
  run.prompt_embeds_TC_ = std::move(prompt_embeds_TC);
  run.prompt_mask_ = AttentionMask::kFull;
  run.force_detect_ = force_detect;
  return run;
}

absl::StatusOr<StepInput> RegionRun::Next(const InputEmbedder& model) {
  StepInput in;
  switch (phase_) {
    case Phase::kPrompt: {
      if (prompt_embeds_TC_.defined()) {
        in.embeds_TC = prompt_embeds_TC_;
      } else {
        ASSIGN_OR_RETURN(in.embeds_TC, model.EmbedTokens(prompt_ids_));
      }
      in.mask = prompt_mask_;
      in.heads = {.logits = true, .coordinate = true};
      break;
    }
    case Phase::kFeedX: {
      ASSIGN_OR_RETURN(in.embeds_TC, model.EncodeCoordinates({x_}));
      in.heads = {.coordinate = true};
      break;
    }
    case Phase::kFeedY: {
      ASSIGN_OR_RETURN(in.embeds_TC, model.EncodeCoordinates({y_}));
      if (kind_ == Kind::kDetect) {
        in.heads = {.size = true};
      } else {
        in.heads = {.logits = true, .coordinate = true};
      }
      break;
    }
    case Phase::kFeedSize: {
      ASSIGN_OR_RETURN(in.embeds_TC, model.EncodeSizes({w_, h_}));
      in.heads = {.logits = true, .coordinate = true};
      break;
    }
  }
  return in;
}

void RegionRun::AcceptToken(const StepOutput& out) {
  int token = GreedyToken(out.logits_V);
  if (phase_ == Phase::kPrompt) {
    first_token_ = token;
    if (force_detect_) token = 0;  // the reference substitutes token 0
  }
  if (token == eos_id_) return Finish(StopReason::kEos);
  if (static_cast<int>(bins_.size()) >= max_objects_) {
    return Finish(StopReason::kMaxObjects);
  }
  // The x of the next object comes from the same hidden state as the token.
  const int x_bin = ArgmaxBin(out.coordinate_X);
  x_ = BinValue(x_bin, out.coordinate_X.size(-1));
  current_bins_ = {x_bin};
  phase_ = Phase::kFeedX;
}

void RegionRun::Accept(const StepOutput& out) {
  switch (phase_) {
    case Phase::kPrompt:
    case Phase::kFeedSize:
      return AcceptToken(out);
    case Phase::kFeedY:
      if (kind_ == Kind::kPoint) return AcceptToken(out);
      {
        const int w_bin = ArgmaxBin(out.size_2X[0]);
        const int h_bin = ArgmaxBin(out.size_2X[1]);
        w_ = BinValue(w_bin, out.size_2X.size(-1));
        h_ = BinValue(h_bin, out.size_2X.size(-1));
        current_bins_.push_back(w_bin);
        current_bins_.push_back(h_bin);
        // Python floats: the reference computes these in double.
        const double x = x_, y = y_, w = w_, h = h_;
        boxes_.push_back({x - w / 2, y - h / 2, x + w / 2, y + h / 2});
        bins_.push_back(current_bins_);
        if (static_cast<int>(boxes_.size()) >= max_objects_) {
          return Finish(StopReason::kMaxObjects);
        }
        phase_ = Phase::kFeedSize;
      }
      return;
    case Phase::kFeedX: {
      const int y_bin = ArgmaxBin(out.coordinate_X);
      y_ = BinValue(y_bin, out.coordinate_X.size(-1));
      current_bins_.push_back(y_bin);
      phase_ = Phase::kFeedY;
      if (kind_ == Kind::kPoint) {
        points_.push_back({x_, y_});
        bins_.push_back(current_bins_);
        if (static_cast<int>(points_.size()) >= max_objects_) {
          Finish(StopReason::kMaxObjects);
        }
      }
      return;
    }
  }
}

}  // namespace md
