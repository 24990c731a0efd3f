// Moondream configuration in the reference's JSON format:
// {"text": {...}, "vision": {...}, "region": {...}, "tokenizer": {...}}.
#ifndef MOONDREAM_MODEL_CONFIG_CONFIG_H_
#define MOONDREAM_MODEL_CONFIG_CONFIG_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace md {

struct TextConfig {
  int dim = 2048;
  int n_layers = 24;
  int vocab_size = 51200;
  int max_context = 2048;
  int n_heads = 32;
  int prefix_attn = 730;

  int head_dim() const { return dim / n_heads; }
};

struct VisionConfig {
  int enc_dim = 1152;
  int enc_patch_size = 14;
  int enc_n_layers = 27;
  int enc_ff_dim = 4304;
  int enc_n_heads = 16;
  int proj_out_dim = 2048;
  int crop_size = 378;
  int in_channels = 3;
  int max_crops = 12;
  int overlap_margin = 4;
  int proj_inner_dim = 8192;

  // Patches per crop side (27) and per crop (729).
  int grid() const { return crop_size / enc_patch_size; }
  int n_patches() const { return grid() * grid(); }
  int patch_dim() const {
    return enc_patch_size * enc_patch_size * in_channels;
  }
};

struct RegionConfig {
  int dim = 2048;
  int coord_feat_dim = 256;
  int coord_out_dim = 1024;
  int size_feat_dim = 512;
  int size_out_dim = 2048;
  int inner_dim = 8192;
};

// A prompt template; absent when the model does not support the skill.
struct PromptTemplate {
  std::vector<int> prefix;
  std::vector<int> suffix;
};

struct TokenizerConfig {
  int bos_id = 50256;
  int eos_id = 50256;
  std::optional<std::vector<int>> caption_short;
  std::optional<std::vector<int>> caption_normal;
  std::optional<PromptTemplate> query;
  std::optional<PromptTemplate> detect;
  std::optional<PromptTemplate> point;
};

struct MoondreamConfig {
  std::string name;  // preset name or the file it came from
  TextConfig text;
  VisionConfig vision;
  RegionConfig region;
  TokenizerConfig tokenizer;

  // Positions taken by BOS + the image tokens (730).
  int prefix_len() const { return 1 + vision.n_patches(); }
};

// The released moondream2 (revision 2025-01-09) and moondream 0.5B shapes.
MoondreamConfig Moondream2Config();
MoondreamConfig Moondream05BConfig();
// "moondream2" or "moondream-0.5b".
absl::StatusOr<MoondreamConfig> PresetConfig(absl::string_view name);

// Parses the reference's format over `defaults` (missing keys keep their
// default, unknown keys are an error, as in the reference's from_dict). A
// Hugging Face wrapper {"config": {...}, ...} is unwrapped.
absl::StatusOr<MoondreamConfig> ParseConfigJson(
    absl::string_view json, const MoondreamConfig& defaults);
absl::StatusOr<MoondreamConfig> LoadConfigFile(const std::string& path,
                                               const MoondreamConfig& defaults);

// `config` in the format ParseConfigJson reads (every size and template, so
// it does not depend on the defaults it is read over); not its name.
std::string ConfigToJson(const MoondreamConfig& config);

// Checks the invariants the model code relies on (positive sizes, divisible
// heads, 32 rotary dims per head, a 730-position prefix that fits).
absl::Status ValidateConfig(const MoondreamConfig& config);

}  // namespace md

#endif  // MOONDREAM_MODEL_CONFIG_CONFIG_H_
