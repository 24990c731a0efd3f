#include "model/io/weights.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config/config.h"
#include "model/io/safetensors.h"
#include "model/io/safetensors_writer.h"
#include "model/io/tensor_io.h"
#include "tests/model/golden.h"

namespace md {
namespace {

using ::testing::HasSubstr;

// --- Golden inputs. ---

MoondreamConfig GoldenConfig() {
  absl::StatusOr<MoondreamConfig> config = LoadConfigFile(
      md::testing::GoldenDir() + "/config.json", Moondream2Config());
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : Moondream2Config();
}

std::unique_ptr<SafetensorsFile> OpenGolden(const std::string& file) {
  auto opened = SafetensorsFile::Open(md::testing::GoldenDir() + "/" + file);
  EXPECT_TRUE(opened.ok()) << opened.status();
  return opened.ok() ? std::move(*opened) : nullptr;
}

constexpr char kHfFile[] = "model.safetensors";
constexpr char kLegacyFile[] = "weights.legacy.safetensors";

// --- Walking every parameter of a Weights. ---

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

void AddLinear(NamedTensors* out, const std::string& name,
               const LinearWeights& w) {
  out->emplace_back(name + ".weight", w.weight);
  out->emplace_back(name + ".bias", w.bias);
}

void AddNorm(NamedTensors* out, const std::string& name,
             const LayerNormWeights& w) {
  out->emplace_back(name + ".weight", w.weight);
  out->emplace_back(name + ".bias", w.bias);
}

void AddMlp(NamedTensors* out, const std::string& name, const MlpWeights& w) {
  AddLinear(out, name + ".fc1", w.fc1);
  AddLinear(out, name + ".fc2", w.fc2);
}

// Every parameter, named as in the Hugging Face layout.
NamedTensors AllParameters(const Weights& w) {
  NamedTensors out;
  const VisionWeights& v = w.vision;
  AddLinear(&out, "model.vision.patch_emb", v.patch_emb);
  out.emplace_back("model.vision.pos_emb", v.pos_emb);
  for (size_t i = 0; i < v.blocks.size(); ++i) {
    const std::string p = absl::StrCat("model.vision.blocks.", i);
    const VisionBlockWeights& b = v.blocks[i];
    AddNorm(&out, p + ".ln1", b.ln1);
    AddLinear(&out, p + ".attn.qkv", b.attn.qkv);
    AddLinear(&out, p + ".attn.proj", b.attn.proj);
    AddNorm(&out, p + ".ln2", b.ln2);
    AddMlp(&out, p + ".mlp", b.mlp);
  }
  AddNorm(&out, "model.vision.post_ln", v.post_ln);
  AddMlp(&out, "model.vision.proj_mlp", v.proj_mlp);

  const TextWeights& t = w.text;
  out.emplace_back("model.text.wte", t.wte);
  for (size_t i = 0; i < t.blocks.size(); ++i) {
    const std::string p = absl::StrCat("model.text.blocks.", i);
    const TextBlockWeights& b = t.blocks[i];
    AddNorm(&out, p + ".ln", b.ln);
    AddLinear(&out, p + ".attn.qkv", b.attn.qkv);
    AddLinear(&out, p + ".attn.proj", b.attn.proj);
    AddMlp(&out, p + ".mlp", b.mlp);
  }
  AddNorm(&out, "model.text.post_ln", t.post_ln);
  AddLinear(&out, "model.text.lm_head", t.lm_head);

  const RegionWeights& r = w.region;
  out.emplace_back("model.region.coord_features", r.coord_features);
  AddLinear(&out, "model.region.coord_encoder", r.coord_encoder);
  AddMlp(&out, "model.region.coord_decoder", r.coord_decoder);
  out.emplace_back("model.region.size_features", r.size_features);
  AddLinear(&out, "model.region.size_encoder", r.size_encoder);
  AddMlp(&out, "model.region.size_decoder", r.size_decoder);
  return out;
}

// --- Building safetensors files in memory. ---

struct RawTensor {
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

using RawTensors = std::map<std::string, RawTensor>;

// Through the project's writer, with no checks on the bytes: the tests below
// make malformed checkpoints on purpose.
std::string Serialize(const RawTensors& tensors) {
  std::vector<TensorHeader> headers;
  std::string data;
  for (const auto& [name, t] : tensors) {
    headers.push_back({name, t.dtype, t.shape});
    data += t.bytes;
  }
  absl::StatusOr<std::string> header = EncodeSafetensorsHeader(headers);
  EXPECT_TRUE(header.ok()) << header.status();
  return header.ok() ? *header + data : std::string();
}

RawTensors ReadAll(const SafetensorsFile& file) {
  RawTensors out;
  for (const std::string& name : file.Names()) {
    absl::StatusOr<TensorView> view = file.Get(name);
    EXPECT_TRUE(view.ok()) << view.status();
    if (!view.ok()) continue;
    out[name] = {
        view->dtype, view->shape,
        std::string(reinterpret_cast<const char*>(view->data), view->n_bytes)};
  }
  return out;
}

RawTensors GoldenRaw(const std::string& file) {
  std::unique_ptr<SafetensorsFile> f = OpenGolden(file);
  return f ? ReadAll(*f) : RawTensors();
}

std::unique_ptr<SafetensorsFile> FromRaw(const RawTensors& tensors) {
  auto file = SafetensorsFile::FromBytes(Serialize(tensors), "<test>");
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(*file) : nullptr;
}

absl::Status LoadStatus(const RawTensors& tensors) {
  std::unique_ptr<SafetensorsFile> file = FromRaw(tensors);
  if (file == nullptr) return absl::InternalError("could not build file");
  return LoadWeights(*file, GoldenConfig(), WeightOptions()).status();
}

// --- (a) The golden checkpoints. ---

TEST(WeightsGoldenTest, DetectLayout) {
  std::unique_ptr<SafetensorsFile> hf = OpenGolden(kHfFile);
  std::unique_ptr<SafetensorsFile> legacy = OpenGolden(kLegacyFile);
  ASSERT_NE(hf, nullptr);
  ASSERT_NE(legacy, nullptr);
  absl::StatusOr<WeightLayout> hf_layout = DetectLayout(*hf);
  absl::StatusOr<WeightLayout> legacy_layout = DetectLayout(*legacy);
  ASSERT_TRUE(hf_layout.ok()) << hf_layout.status();
  ASSERT_TRUE(legacy_layout.ok()) << legacy_layout.status();
  EXPECT_EQ(*hf_layout, WeightLayout::kHuggingFace);
  EXPECT_EQ(*legacy_layout, WeightLayout::kLegacy);
}

TEST(WeightsGoldenTest, BothLayoutsLoadBitwiseIdentical) {
  const MoondreamConfig config = GoldenConfig();
  std::unique_ptr<SafetensorsFile> hf_file = OpenGolden(kHfFile);
  std::unique_ptr<SafetensorsFile> legacy_file = OpenGolden(kLegacyFile);
  ASSERT_NE(hf_file, nullptr);
  ASSERT_NE(legacy_file, nullptr);

  absl::StatusOr<Weights> hf = LoadWeights(*hf_file, config, WeightOptions());
  absl::StatusOr<Weights> legacy =
      LoadWeights(*legacy_file, config, WeightOptions());
  ASSERT_TRUE(hf.ok()) << hf.status();
  ASSERT_TRUE(legacy.ok()) << legacy.status();

  EXPECT_EQ(hf->vision.blocks.size(),
            static_cast<size_t>(config.vision.enc_n_layers));
  EXPECT_EQ(hf->text.blocks.size(), static_cast<size_t>(config.text.n_layers));

  const NamedTensors hf_params = AllParameters(*hf);
  const NamedTensors legacy_params = AllParameters(*legacy);
  ASSERT_EQ(hf_params.size(), legacy_params.size());
  // The walk covers every tensor of the checkpoint, once.
  EXPECT_EQ(hf_params.size(), hf_file->Names().size());
  EXPECT_EQ(hf_params.size(), legacy_file->Names().size());

  for (size_t i = 0; i < hf_params.size(); ++i) {
    const auto& [name, a] = hf_params[i];
    const at::Tensor& b = legacy_params[i].second;
    SCOPED_TRACE(name);
    ASSERT_TRUE(a.defined());
    ASSERT_TRUE(b.defined());
    EXPECT_EQ(a.scalar_type(), at::kFloat);
    EXPECT_EQ(b.scalar_type(), at::kFloat);
    EXPECT_TRUE(a.is_contiguous());
    EXPECT_TRUE(b.is_contiguous());
    EXPECT_EQ(a.device(), at::Device(at::kCPU));
    EXPECT_EQ(a.sizes(), b.sizes());
    EXPECT_TRUE(at::equal(a, b));

    // And each is the file's F16 tensor upcast exactly, in our layout.
    absl::StatusOr<TensorView> view = hf_file->Get(name);
    ASSERT_TRUE(view.ok()) << view.status();
    absl::StatusOr<at::Tensor> stored = ToTensor(*view);
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_TRUE(at::equal(a, stored->to(at::kFloat)));
  }
}

TEST(WeightsGoldenTest, ShapesFollowTheConfig) {
  const MoondreamConfig config = GoldenConfig();
  std::unique_ptr<SafetensorsFile> file = OpenGolden(kLegacyFile);
  ASSERT_NE(file, nullptr);
  absl::StatusOr<Weights> w = LoadWeights(*file, config, WeightOptions());
  ASSERT_TRUE(w.ok()) << w.status();
  const int64_t d = config.text.dim;
  const int64_t e = config.vision.enc_dim;
  EXPECT_EQ(w->text.wte.sizes(), at::IntArrayRef({config.text.vocab_size, d}));
  EXPECT_EQ(w->text.blocks[0].attn.qkv.weight.sizes(),
            at::IntArrayRef({3 * d, d}));
  EXPECT_EQ(w->text.lm_head.bias.sizes(),
            at::IntArrayRef({config.text.vocab_size}));
  EXPECT_EQ(w->vision.patch_emb.weight.sizes(),
            at::IntArrayRef({e, config.vision.patch_dim()}));
  EXPECT_EQ(w->vision.pos_emb.sizes(),
            at::IntArrayRef({1, config.vision.n_patches(), e}));
  EXPECT_EQ(w->vision.proj_mlp.fc1.weight.sizes(),
            at::IntArrayRef({config.vision.proj_inner_dim, 2 * e}));
  // Stored transposed in the legacy file, ours is [1, n/2] and [2, n/2].
  EXPECT_EQ(w->region.coord_features.sizes(),
            at::IntArrayRef({1, config.region.coord_feat_dim / 2}));
  EXPECT_EQ(w->region.size_features.sizes(),
            at::IntArrayRef({2, config.region.size_feat_dim / 2}));
  EXPECT_EQ(
      w->region.size_decoder.fc2.weight.sizes(),
      at::IntArrayRef({config.region.size_out_dim, config.region.inner_dim}));
}

TEST(WeightsGoldenTest, LoadsInBFloat16) {
  std::unique_ptr<SafetensorsFile> file = OpenGolden(kHfFile);
  ASSERT_NE(file, nullptr);
  WeightOptions options;
  options.dtype = at::kBFloat16;
  absl::StatusOr<Weights> w = LoadWeights(*file, GoldenConfig(), options);
  ASSERT_TRUE(w.ok()) << w.status();
  for (const auto& [name, t] : AllParameters(*w)) {
    SCOPED_TRACE(name);
    EXPECT_EQ(t.scalar_type(), at::kBFloat16);
  }
  absl::StatusOr<TensorView> view = file->Get("model.text.wte");
  ASSERT_TRUE(view.ok());
  absl::StatusOr<at::Tensor> stored = ToTensor(*view);
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(at::equal(w->text.wte, stored->to(at::kBFloat16)));
}

TEST(WeightsGoldenTest, F32CheckpointLoadsTheSameValues) {
  RawTensors raw = GoldenRaw(kHfFile);
  ASSERT_FALSE(raw.empty());
  std::unique_ptr<SafetensorsFile> f16_file = FromRaw(raw);
  ASSERT_NE(f16_file, nullptr);
  for (auto& [name, t] : raw) {
    ASSERT_EQ(t.dtype, DType::kF16) << name;
    at::Tensor half = at::empty(t.shape, at::kHalf);
    std::memcpy(half.data_ptr(), t.bytes.data(), t.bytes.size());
    at::Tensor f32 = half.to(at::kFloat).contiguous();
    t.dtype = DType::kF32;
    t.bytes.assign(static_cast<const char*>(f32.data_ptr()), f32.nbytes());
  }
  std::unique_ptr<SafetensorsFile> f32_file = FromRaw(raw);
  ASSERT_NE(f32_file, nullptr);
  absl::StatusOr<Weights> a = LoadWeights(*f16_file, GoldenConfig(), {});
  absl::StatusOr<Weights> b = LoadWeights(*f32_file, GoldenConfig(), {});
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const NamedTensors pa = AllParameters(*a);
  const NamedTensors pb = AllParameters(*b);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    SCOPED_TRACE(pa[i].first);
    EXPECT_TRUE(at::equal(pa[i].second, pb[i].second));
  }
}

TEST(WeightsGoldenTest, CompiledModelPrefixIsStripped) {
  // Checkpoints saved from torch.compile'd modules carry "._orig_mod".
  RawTensors renamed;
  for (auto& [name, t] : GoldenRaw(kLegacyFile)) {
    const size_t dot = name.find('.');
    ASSERT_NE(dot, std::string::npos) << name;
    renamed[name.substr(0, dot) + "._orig_mod" + name.substr(dot)] = t;
  }
  ASSERT_TRUE(
      renamed.count("text_model._orig_mod.transformer.embd.wte.weight"));
  std::unique_ptr<SafetensorsFile> file = FromRaw(renamed);
  ASSERT_NE(file, nullptr);
  absl::StatusOr<WeightLayout> layout = DetectLayout(*file);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(*layout, WeightLayout::kLegacy);
  absl::StatusOr<Weights> w = LoadWeights(*file, GoldenConfig(), {});
  ASSERT_TRUE(w.ok()) << w.status();

  std::unique_ptr<SafetensorsFile> hf_file = OpenGolden(kHfFile);
  ASSERT_NE(hf_file, nullptr);
  absl::StatusOr<Weights> expected = LoadWeights(*hf_file, GoldenConfig(), {});
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_TRUE(at::equal(w->text.wte, expected->text.wte));
  EXPECT_TRUE(
      at::equal(w->region.size_features, expected->region.size_features));
  EXPECT_TRUE(at::equal(w->vision.blocks.back().mlp.fc2.weight,
                        expected->vision.blocks.back().mlp.fc2.weight));
}

// --- (b) Malformed checkpoints. ---

TEST(WeightsMalformedTest, RoundTripOfTheGoldenFileLoads) {
  // The helper itself: re-serialising unchanged tensors must load, so the
  // failures below are due to the one change each makes.
  EXPECT_TRUE(LoadStatus(GoldenRaw(kHfFile)).ok());
  EXPECT_TRUE(LoadStatus(GoldenRaw(kLegacyFile)).ok());
}

TEST(WeightsMalformedTest, MissingTensorIsNotFoundNamingIt) {
  for (const auto& [file, name] :
       std::vector<std::pair<std::string, std::string>>{
           {kHfFile, "model.vision.blocks.3.mlp.fc1.bias"},
           {kHfFile, "model.region.size_decoder.fc2.weight"},
           {kHfFile, "model.text.lm_head.bias"},
           {kLegacyFile, "text_model.transformer.h.0.mixer.Wqkv.weight"},
           {kLegacyFile, "region_model.coordinate_features.weight"},
       }) {
    SCOPED_TRACE(name);
    RawTensors raw = GoldenRaw(file);
    ASSERT_EQ(raw.erase(name), 1u);
    absl::Status status = LoadStatus(raw);
    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("'" + name + "'"));
  }
}

std::string Shape(std::initializer_list<int64_t> dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

TEST(WeightsMalformedTest, WrongShapeNamesTensorAndBothShapes) {
  const int64_t d = GoldenConfig().text.dim;
  RawTensors raw = GoldenRaw(kHfFile);
  const std::string name = "model.text.blocks.0.attn.qkv.weight";
  ASSERT_TRUE(raw.count(name));
  ASSERT_EQ(raw[name].shape, (std::vector<int64_t>{3 * d, d}));
  raw[name].shape = {d, 3 * d};  // same bytes, wrong shape
  absl::Status status = LoadStatus(raw);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  const std::string message(status.message());
  EXPECT_THAT(message, HasSubstr("'" + name + "'"));
  EXPECT_THAT(message, HasSubstr(Shape({d, 3 * d})));
  EXPECT_THAT(message, HasSubstr(Shape({3 * d, d})));
}

TEST(WeightsMalformedTest, WrongRankNamesTensor) {
  const VisionConfig v = GoldenConfig().vision;
  RawTensors raw = GoldenRaw(kHfFile);
  const std::string name = "model.vision.pos_emb";
  ASSERT_TRUE(raw.count(name));
  raw[name].shape = {v.n_patches(), v.enc_dim};
  absl::Status status = LoadStatus(raw);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  const std::string message(status.message());
  EXPECT_THAT(message, HasSubstr("'" + name + "'"));
  EXPECT_THAT(message, HasSubstr(Shape({v.n_patches(), v.enc_dim})));
  EXPECT_THAT(message, HasSubstr(Shape({1, v.n_patches(), v.enc_dim})));
}

TEST(WeightsMalformedTest, LegacyFeaturesMustBeStoredTransposed) {
  // Legacy coordinate features are [n/2, 1]; the HF orientation is refused.
  const int64_t half = GoldenConfig().region.coord_feat_dim / 2;
  RawTensors raw = GoldenRaw(kLegacyFile);
  const std::string name = "region_model.coordinate_features.weight";
  ASSERT_TRUE(raw.count(name));
  ASSERT_EQ(raw[name].shape, (std::vector<int64_t>{half, 1}));
  raw[name].shape = {1, half};
  absl::Status status = LoadStatus(raw);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  const std::string message(status.message());
  EXPECT_THAT(message, HasSubstr("'" + name + "'"));
  EXPECT_THAT(message, HasSubstr(Shape({1, half})));
  EXPECT_THAT(message, HasSubstr(Shape({half, 1})));
}

TEST(WeightsMalformedTest, IntegerDtypeIsRefusedNamingTensor) {
  RawTensors raw = GoldenRaw(kHfFile);
  const std::string name = "model.vision.blocks.0.attn.proj.weight";
  ASSERT_TRUE(raw.count(name));
  RawTensor& t = raw[name];
  ASSERT_EQ(t.dtype, DType::kF16);
  t.dtype = DType::kI64;
  t.bytes = std::string(t.bytes.size() * 4, '\0');  // 8 bytes per element
  absl::Status status = LoadStatus(raw);
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("'" + name + "'"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("I64"));
}

TEST(WeightsMalformedTest, NeitherLayoutIsAClearError) {
  RawTensors raw = {
      {"encoder.weight", {DType::kF16, {2, 2}, std::string(8, '\0')}},
      {"decoder.bias", {DType::kF32, {3}, std::string(12, '\0')}},
  };
  std::unique_ptr<SafetensorsFile> file = FromRaw(raw);
  ASSERT_NE(file, nullptr);
  absl::StatusOr<WeightLayout> layout = DetectLayout(*file);
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(layout.status().message()),
              HasSubstr("not a Moondream checkpoint"));
  EXPECT_THAT(std::string(layout.status().message()), HasSubstr("<test>"));

  absl::Status status = LoadStatus(raw);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("not a Moondream checkpoint"));

  // An empty file too.
  EXPECT_FALSE(LoadStatus({}).ok());
}

TEST(WeightsMalformedTest, ConfigThatDoesNotMatchTheCheckpoint) {
  // The moondream2 config asks for far larger tensors than the tiny file has.
  std::unique_ptr<SafetensorsFile> file = OpenGolden(kHfFile);
  ASSERT_NE(file, nullptr);
  absl::StatusOr<Weights> w = LoadWeights(*file, Moondream2Config(), {});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("shape"));
}

// --- (c) Random weights. ---

TEST(RandomWeightsTest, DeterministicForASeed) {
  const MoondreamConfig config = GoldenConfig();
  absl::StatusOr<Weights> a = RandomWeights(config, WeightOptions(), 7);
  absl::StatusOr<Weights> b = RandomWeights(config, WeightOptions(), 7);
  absl::StatusOr<Weights> c = RandomWeights(config, WeightOptions(), 8);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(c.ok()) << c.status();
  const NamedTensors pa = AllParameters(*a);
  const NamedTensors pb = AllParameters(*b);
  const NamedTensors pc = AllParameters(*c);
  ASSERT_EQ(pa.size(), pb.size());
  ASSERT_EQ(pa.size(), pc.size());
  int n_differing = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    SCOPED_TRACE(pa[i].first);
    ASSERT_TRUE(pa[i].second.defined());
    EXPECT_TRUE(at::equal(pa[i].second, pb[i].second));
    EXPECT_TRUE(at::isfinite(pa[i].second).all().item<bool>());
    if (!at::equal(pa[i].second, pc[i].second)) ++n_differing;
  }
  EXPECT_GT(n_differing, 0);
  // Matrices are random, so a different seed changes them.
  EXPECT_FALSE(at::equal(a->text.wte, c->text.wte));
  EXPECT_FALSE(at::equal(a->vision.blocks.back().attn.qkv.weight,
                         c->vision.blocks.back().attn.qkv.weight));
}

TEST(RandomWeightsTest, ShapesMatchTheGoldenCheckpoint) {
  const MoondreamConfig config = GoldenConfig();
  std::unique_ptr<SafetensorsFile> file = OpenGolden(kHfFile);
  ASSERT_NE(file, nullptr);
  absl::StatusOr<Weights> loaded = LoadWeights(*file, config, {});
  absl::StatusOr<Weights> random = RandomWeights(config, {}, 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(random.ok()) << random.status();
  const NamedTensors pl = AllParameters(*loaded);
  const NamedTensors pr = AllParameters(*random);
  ASSERT_EQ(pl.size(), pr.size());
  for (size_t i = 0; i < pl.size(); ++i) {
    SCOPED_TRACE(pl[i].first);
    EXPECT_EQ(pl[i].second.sizes(), pr[i].second.sizes());
    EXPECT_EQ(pr[i].second.scalar_type(), at::kFloat);
  }
}

TEST(RandomWeightsTest, RespectsDtype) {
  WeightOptions options;
  options.dtype = at::kBFloat16;
  absl::StatusOr<Weights> w = RandomWeights(GoldenConfig(), options, 3);
  ASSERT_TRUE(w.ok()) << w.status();
  for (const auto& [name, t] : AllParameters(*w)) {
    SCOPED_TRACE(name);
    EXPECT_EQ(t.scalar_type(), at::kBFloat16);
  }
}

// --- (d) Saving. ---

TEST(SaveWeightsTest, LoadsBackBitForBitInEachDtype) {
  const MoondreamConfig config = GoldenConfig();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(std::string(DTypeLabel(dtype)));
    absl::StatusOr<Weights> w = RandomWeights(config, {dtype, at::kCPU}, 5);
    ASSERT_TRUE(w.ok()) << w.status();
    const std::string path =
        absl::StrCat(::testing::TempDir(), "/save_weights_", getpid(), "_",
                     std::string(DTypeLabel(dtype)), ".safetensors");
    ASSERT_TRUE(SaveWeights(path, config, *w, {{"format", "pt"}}).ok());

    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    absl::StatusOr<WeightLayout> layout = DetectLayout(**file);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(*layout, WeightLayout::kHuggingFace);
    EXPECT_EQ((*file)->metadata().at("format"), "pt");
    // Stored in its own dtype: the file holds exactly these parameters.
    const NamedTensors saved = AllParameters(*w);
    EXPECT_EQ((*file)->Names().size(), saved.size());
    absl::StatusOr<TensorView> wte = (*file)->Get("model.text.wte");
    ASSERT_TRUE(wte.ok());
    EXPECT_EQ(wte->dtype, dtype == at::kFloat ? DType::kF32 : DType::kBF16);

    absl::StatusOr<Weights> loaded =
        LoadWeights(**file, config, {dtype, at::kCPU});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const NamedTensors back = AllParameters(*loaded);
    ASSERT_EQ(back.size(), saved.size());
    for (size_t i = 0; i < saved.size(); ++i) {
      SCOPED_TRACE(saved[i].first);
      EXPECT_TRUE(at::equal(saved[i].second, back[i].second));
    }
    std::remove(path.c_str());
  }
}

TEST(SaveWeightsTest, NamedParametersFollowTheHuggingFaceLayout) {
  const MoondreamConfig config = GoldenConfig();
  absl::StatusOr<Weights> w = RandomWeights(config, {}, 2);
  ASSERT_TRUE(w.ok()) << w.status();
  const auto named = NamedParameters(config, *w);
  const NamedTensors expected = AllParameters(*w);
  std::map<std::string, at::Tensor> by_name(named.begin(), named.end());
  ASSERT_EQ(by_name.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(by_name.count(name));
    EXPECT_TRUE(by_name[name].is_same(tensor));
  }
}

TEST(SaveWeightsTest, UnsetTensorIsAnErrorAndWritesNothing) {
  const MoondreamConfig config = GoldenConfig();
  absl::StatusOr<Weights> w = RandomWeights(config, {}, 2);
  ASSERT_TRUE(w.ok()) << w.status();
  w->region.size_encoder.bias = at::Tensor();
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/unset_", getpid(), ".safetensors");
  absl::Status status = SaveWeights(path, config, *w);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("model.region.size_encoder.bias"));
  EXPECT_FALSE(std::ifstream(path).good());
}

TEST(WeightBytesTest, SumOfAllParameterBytes) {
  const MoondreamConfig config = GoldenConfig();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(std::string(DTypeLabel(dtype)));
    WeightOptions options;
    options.dtype = dtype;
    absl::StatusOr<Weights> w = RandomWeights(config, options, 11);
    ASSERT_TRUE(w.ok()) << w.status();
    int64_t sum = 0;
    int64_t elements = 0;
    for (const auto& [name, t] : AllParameters(*w)) {
      sum += t.nbytes();
      elements += t.numel();
    }
    const int64_t bytes = WeightBytes(config, *w);
    EXPECT_GT(bytes, 0);
    EXPECT_EQ(bytes, sum);
    EXPECT_EQ(bytes, elements * static_cast<int64_t>(at::elementSize(dtype)));
  }
}

TEST(WeightBytesTest, GoldenCheckpointInFp32IsTwiceTheF16File) {
  const MoondreamConfig config = GoldenConfig();
  std::unique_ptr<SafetensorsFile> file = OpenGolden(kHfFile);
  ASSERT_NE(file, nullptr);
  absl::StatusOr<Weights> w = LoadWeights(*file, config, {});
  ASSERT_TRUE(w.ok()) << w.status();
  int64_t file_bytes = 0;
  for (const std::string& name : file->Names()) {
    absl::StatusOr<TensorView> view = file->Get(name);
    ASSERT_TRUE(view.ok());
    file_bytes += static_cast<int64_t>(view->n_bytes);
  }
  EXPECT_EQ(WeightBytes(config, *w), 2 * file_bytes);
}

}  // namespace
}  // namespace md
