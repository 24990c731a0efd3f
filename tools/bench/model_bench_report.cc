#include "tools/bench/model_bench_report.h"

#include <ATen/Parallel.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/net/kernels/bf16_gemm.h"
#include "tools/bench/environment.h"

namespace md::bench {

// ---- Output ----

void PrintRow(const std::string& what, double ms, const std::string& extra) {
  std::printf("  %-46s %10.1f ms   %s\n", what.c_str(), ms, extra.c_str());
  std::fflush(stdout);
}

// The ops that took most of `b`'s time, and what ran outside ATen ops.
void PrintProfile(const std::string& what, const OpBreakdown& b) {
  constexpr size_t kTopOps = 16;
  std::printf(
      "    profile of one %s: %.1f ms, top-level ATen ops and md:: parts:\n",
      what.c_str(), b.wall_ms);
  double in_ops_ms = 0;
  for (const OpTime& op : b.ops) in_ops_ms += op.ms;
  for (size_t i = 0; i < b.ops.size() && i < kTopOps; ++i) {
    const OpTime& op = b.ops[i];
    std::printf("      %-36s %7lld calls %9.2f ms %5.1f%%\n", op.name.c_str(),
                static_cast<long long>(op.calls), op.ms,
                100 * op.ms / b.wall_ms);
  }
  if (b.ops.size() > kTopOps) {
    std::printf("      (%zu more op kinds)\n", b.ops.size() - kTopOps);
  }
  std::printf("      %-36s %7s       %9.2f ms %5.1f%%\n", "outside ATen ops",
              "", b.wall_ms - in_ops_ms,
              100 * (b.wall_ms - in_ops_ms) / b.wall_ms);
  std::fflush(stdout);
}

void PrintVision(const VisionResult& v) {
  const double ms = v.time.median_ms();
  PrintRow(absl::StrFormat("vision EmbedImages %dx%d tiling (%d crops)",
                           v.tiling.rows, v.tiling.cols, v.n_crops),
           ms, absl::StrFormat("%.1f ms/crop", ms / v.n_crops));
  if (v.profile.has_value()) {
    PrintProfile(absl::StrCat("vision encode (", v.n_crops, " crops)"),
                 *v.profile);
  }
}

void PrintPrefill(const PrefillResult& p) {
  PrintRow(
      absl::StrFormat("prefill image prefix %d tok (pos 0)", p.n_image_tokens),
      p.image.median_ms(),
      absl::StrFormat("%.0f tok/s",
                      p.n_image_tokens * 1000.0 / p.image.median_ms()));
  PrintRow(absl::StrFormat("prefill prompt %d tok (pos %d)", p.n_prompt_tokens,
                           p.n_image_tokens),
           p.prompt.median_ms(),
           absl::StrFormat("%.0f tok/s",
                           p.n_prompt_tokens * 1000.0 / p.prompt.median_ms()));
  PrintRow("prefill LM head (last row) + argmax", p.lm_head.median_ms(), "");
  PrintRow("prefill total", p.total.median_ms(), "");
  if (p.profile.has_value()) PrintProfile("prefill", *p.profile);
}

void PrintDecode(const DecodeResult& d) {
  PrintRow(
      absl::StrFormat("decode batch %d, ctx %d (per step)", d.batch, d.context),
      d.step.median_ms(),
      absl::StrFormat("%.1f tok/s (KV %.0f MiB)", d.tokens_per_s(),
                      Mb(d.kv_bytes)));
  if (d.profile.has_value()) {
    PrintProfile(absl::StrCat("decode step (batch ", d.batch, ")"), *d.profile);
  }
}

double CaseResult::B1FloorMs() const {
  if (!bandwidth.has_value() || bandwidth->gb_per_s() <= 0) return 0;
  return decode_weight_bytes / (bandwidth->gb_per_s() * 1e6);
}

double CaseResult::B1FractionOfFloor() const {
  for (const DecodeResult& d : decode) {
    if (d.batch == 1 && d.step.median_ms() > 0) {
      return B1FloorMs() / d.step.median_ms();
    }
  }
  return 0;
}

void PrintDecodeFloor(const CaseResult& c) {
  if (!c.bandwidth.has_value()) return;
  std::printf(
      "  read bandwidth %.1f GB/s (median pass over %.0f MiB); a decode step "
      "streams %.0f MiB of weights: floor %.2f ms",
      c.bandwidth->gb_per_s(), Mb(c.bandwidth->bytes),
      Mb(c.decode_weight_bytes), c.B1FloorMs());
  if (const double f = c.B1FractionOfFloor(); f > 0) {
    std::printf(", batch 1 runs at %.2f of it (b1_fraction_of_floor)", f);
  }
  std::printf("\n");
  std::fflush(stdout);
}

namespace {

nlohmann::json TimingJson(const Timing& t) {
  return {{"median_ms", t.median_ms()}, {"samples_ms", t.samples_ms}};
}

nlohmann::json ProfileJson(const std::optional<OpBreakdown>& b) {
  if (!b.has_value()) return nullptr;
  nlohmann::json ops = nlohmann::json::array();
  for (const OpTime& op : b->ops) {
    ops.push_back({{"op", op.name}, {"calls", op.calls}, {"ms", op.ms}});
  }
  return {{"wall_ms", b->wall_ms}, {"top_level_ops", ops}};
}

nlohmann::json PrefillJson(const PrefillResult& p) {
  nlohmann::json image = TimingJson(p.image);
  image["tokens"] = p.n_image_tokens;
  image["start_pos"] = 0;
  image["tokens_per_s"] = p.n_image_tokens * 1000.0 / p.image.median_ms();
  nlohmann::json prompt = TimingJson(p.prompt);
  prompt["tokens"] = p.n_prompt_tokens;
  prompt["start_pos"] = p.n_image_tokens;
  prompt["tokens_per_s"] = p.n_prompt_tokens * 1000.0 / p.prompt.median_ms();
  return {{"image_prefix", image},
          {"prompt", prompt},
          {"lm_head_last_row", TimingJson(p.lm_head)},
          {"total", TimingJson(p.total)},
          {"profile", ProfileJson(p.profile)}};
}

nlohmann::json CaseJson(const CaseResult& c) {
  nlohmann::json vision = nlohmann::json::array();
  for (const VisionResult& v : c.vision) {
    nlohmann::json j = TimingJson(v.time);
    j["tiling"] = absl::StrCat(v.tiling.rows, "x", v.tiling.cols);
    j["crops"] = v.n_crops;
    j["ms_per_crop"] = v.time.median_ms() / v.n_crops;
    j["profile"] = ProfileJson(v.profile);
    vision.push_back(std::move(j));
  }
  nlohmann::json decode = nlohmann::json::array();
  for (const DecodeResult& d : c.decode) {
    decode.push_back({{"batch", d.batch},
                      {"context", d.context},
                      {"steps_per_rep", d.n_steps},
                      {"kv_cache_bytes", d.kv_bytes},
                      {"ms_per_step", d.step.median_ms()},
                      {"tokens_per_s", d.tokens_per_s()},
                      {"samples_ms_per_step", d.step.samples_ms},
                      {"profile", ProfileJson(d.profile)}});
  }
  return {{"config", c.config},
          {"dtype", c.dtype},
          {"weight_bytes", c.weight_bytes},
          {"weight_build_s", c.build_s},
          {"load_average_start", c.load_start},
          {"load_average_end", c.load_end},
          {"vision_embed_images", vision},
          {"prefill", c.prefill.has_value() ? PrefillJson(*c.prefill)
                                            : nlohmann::json(nullptr)},
          {"decode", decode},
          {"decode_weight_bytes", c.decode_weight_bytes},
          {"read_bandwidth",
           c.bandwidth.has_value()
               ? nlohmann::json{{"bytes", c.bandwidth->bytes},
                                {"gb_per_s", c.bandwidth->gb_per_s()},
                                {"samples_ms", c.bandwidth->pass.samples_ms}}
               : nlohmann::json(nullptr)},
          {"b1_floor_ms", c.B1FloorMs()},
          {"b1_fraction_of_floor", c.B1FractionOfFloor() > 0
                                       ? nlohmann::json(c.B1FractionOfFloor())
                                       : nlohmann::json(nullptr)},
          {"linear_bf16", LinearsJson(c.linears)},
          {"linear_bf16_isa", PackedLinearIsaName(PackedLinearBf16Isa())},
          {"kv_slots",
           c.kv.has_value() ? KvSlotsJson(*c.kv) : nlohmann::json(nullptr)}};
}

}  // namespace

absl::Status WriteJson(const std::string& path, const ModelBenchOptions& opts,
                       const std::vector<CaseResult>& cases) {
  nlohmann::json doc = {
      {"benchmark", "model"},
      {"weights", "random (speed only; outputs are meaningless)"},
      {"threads", at::get_num_threads()},
      {"hardware_concurrency", std::thread::hardware_concurrency()},
      {"threading_env", ThreadingEnvJson()},
      {"reps", opts.n_reps},
      {"warmup_reps", 1},
      {"statistic", "median over reps"},
      {"decode_steps_per_rep", opts.n_decode_steps},
      {"cases", nlohmann::json::array()}};
  for (const CaseResult& c : cases) doc["cases"].push_back(CaseJson(c));
  std::ofstream out(path);
  out << doc.dump(2) << "\n";
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

void PrintSummary(const ModelBenchOptions& opts,
                  const std::vector<CaseResult>& cases) {
  std::printf("\nsummary (median ms; decode: ms/step and tokens/s)\n");
  std::printf("  %-16s %-6s", "config", "dtype");
  if (opts.parts.vision) std::printf(" %12s", "vision 13cr");
  if (opts.parts.prefill) std::printf(" %12s", "prefill 750");
  if (opts.parts.decode) {
    for (int batch : opts.batch_sizes) {
      std::printf("   %18s", absl::StrCat("decode B=", batch).c_str());
    }
  }
  std::printf("\n");
  for (const CaseResult& c : cases) {
    std::printf("  %-16s %-6s", c.config.c_str(), c.dtype.c_str());
    if (!c.vision.empty()) {
      std::printf(" %12.1f", c.vision.back().time.median_ms());
    }
    if (opts.parts.prefill && c.prefill.has_value()) {
      std::printf(" %12.1f", c.prefill->total.median_ms());
    }
    for (const DecodeResult& d : c.decode) {
      std::printf("   %8.1f %7.1f/s", d.step.median_ms(), d.tokens_per_s());
    }
    std::printf("\n");
  }
}

}  // namespace md::bench
