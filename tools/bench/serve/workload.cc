#include "tools/bench/serve/workload.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <queue>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/files.h"
#include "base/status_macros.h"

namespace md::bench::serve {
namespace {

constexpr const char* kQuestions[] = {
    "What is in this image?",
    "How many shapes are there?",
    "What color is the largest shape?",
    "Describe the background.",
    "Is there a circle in the picture?",
    "Which shape is closest to the top left corner?",
};
constexpr const char* kObjects[] = {"circle", "rectangle", "shape", "line"};

absl::StatusOr<double> ParseNumber(absl::string_view text,
                                   absl::string_view what) {
  double value = 0;
  if (!absl::SimpleAtod(text, &value) || !std::isfinite(value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " wants a non-negative number, got '", text, "'"));
  }
  return value;
}

// An index drawn with probability proportional to its weight.
template <typename T>
int DrawWeighted(const std::vector<T>& items, std::mt19937_64& rng) {
  std::vector<double> weights;
  for (const T& item : items) weights.push_back(item.weight);
  std::discrete_distribution<int> pick(weights.begin(), weights.end());
  return pick(rng);
}

bool IsImageFile(const std::filesystem::path& path) {
  const std::string ext = absl::AsciiStrToLower(path.extension().string());
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp";
}

}  // namespace

absl::StatusOr<std::vector<Weighted>> ParseWeighted(absl::string_view spec) {
  std::vector<Weighted> out;
  double total = 0;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    std::vector<absl::string_view> kv = absl::StrSplit(part, ':');
    if (kv.size() > 2 || kv[0].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", part, "' is not name:weight"));
    }
    Weighted w{std::string(kv[0]), 1.0};
    if (kv.size() == 2) {
      ASSIGN_OR_RETURN(w.weight, ParseNumber(kv[1], part));
    }
    total += w.weight;
    out.push_back(std::move(w));
  }
  if (out.empty() || total <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", spec, "' has no positive weight"));
  }
  return out;
}

absl::StatusOr<std::vector<ImageBucket>> ParseImageBuckets(
    absl::string_view spec) {
  ASSIGN_OR_RETURN(std::vector<Weighted> weighted, ParseWeighted(spec));
  std::vector<ImageBucket> out;
  for (const Weighted& w : weighted) {
    std::vector<absl::string_view> wh = absl::StrSplit(w.name, 'x');
    ImageBucket b{0, 0, w.weight};
    if (wh.size() != 2 || !absl::SimpleAtoi(wh[0], &b.width) ||
        !absl::SimpleAtoi(wh[1], &b.height) || b.width < 1 || b.height < 1 ||
        b.width > 8192 || b.height > 8192) {
      return absl::InvalidArgumentError(absl::StrCat(
          "image bucket '", w.name, "' is not WIDTHxHEIGHT (1..8192)"));
    }
    out.push_back(b);
  }
  return out;
}

absl::StatusOr<TenantSpec> ParseTenant(absl::string_view spec) {
  std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
  if (parts[0].empty() || parts.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tenant '", spec, "' is not KEY, KEY:weight=W or KEY:rate=R"));
  }
  TenantSpec t;
  t.key = std::string(parts[0]);
  if (parts.size() == 2) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(parts[1], absl::MaxSplits('=', 1));
    ASSIGN_OR_RETURN(double value, ParseNumber(kv.second, spec));
    if (kv.first == "weight") {
      t.weight = value;
    } else if (kv.first == "rate") {
      t.rate = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tenant '", spec, "': say weight=W or rate=R after the key"));
    }
  }
  return t;
}

absl::StatusOr<WorkloadImage> SyntheticImage(int width, int height,
                                             uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&rng](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  auto color = [&]() {
    return cv::Scalar(uniform(0, 255), uniform(0, 255), uniform(0, 255));
  };
  cv::Mat image(height, width, CV_8UC3, color());
  const int shapes = uniform(3, 8);
  const int extent = std::max(4, std::min(width, height) / 3);
  for (int i = 0; i < shapes; ++i) {
    const cv::Point center(uniform(0, width - 1), uniform(0, height - 1));
    const int size = uniform(2, extent);
    switch (uniform(0, 2)) {
      case 0:
        cv::circle(image, center, size, color(), cv::FILLED, cv::LINE_AA);
        break;
      case 1:
        cv::rectangle(image, center, center + cv::Point(size, size / 2 + 1),
                      color(), cv::FILLED);
        break;
      default:
        cv::line(image, center,
                 cv::Point(uniform(0, width), uniform(0, height)), color(),
                 std::max(1, size / 8), cv::LINE_AA);
    }
  }
  std::vector<uchar> jpeg;
  if (!cv::imencode(".jpg", image, jpeg, {cv::IMWRITE_JPEG_QUALITY, 90})) {
    return absl::InternalError("OpenCV could not encode a JPEG");
  }
  return WorkloadImage{std::string(jpeg.begin(), jpeg.end()), width, height};
}

absl::StatusOr<std::vector<WorkloadImage>> ImagesFromDirectory(
    const std::string& dir) {
  std::error_code error;
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.is_regular_file() && IsImageFile(entry.path())) {
      paths.push_back(entry.path());
    }
  }
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read --image_dir ", dir, ": ", error.message()));
  }
  std::sort(paths.begin(), paths.end());
  std::vector<WorkloadImage> images;
  for (const auto& path : paths) {
    ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path.string()));
    // Sizes only for the report; the server decodes the bytes itself.
    const cv::Mat header =
        cv::imdecode(std::vector<uchar>(bytes.begin(), bytes.end()),
                     cv::IMREAD_REDUCED_GRAYSCALE_8);
    images.push_back({std::move(bytes), header.cols * 8, header.rows * 8});
  }
  if (images.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--image_dir ", dir, " has no .jpg, .png or .webp files"));
  }
  return images;
}

ArrivalClock::ArrivalClock(double rate, double burstiness, double ramp_up_s,
                           uint64_t seed)
    : rate_(rate), burstiness_(burstiness), ramp_up_s_(ramp_up_s), rng_(seed) {}

double ArrivalClock::Next() {
  if (std::isinf(rate_)) return now_;
  // During the ramp-up the rate grows linearly (from 5% of it).
  double rate = rate_;
  if (ramp_up_s_ > 0 && now_ < ramp_up_s_) {
    rate *= std::max(0.05, now_ / ramp_up_s_);
  }
  // Gamma gaps with mean 1/rate: shape k = burstiness, scale 1/(rate * k).
  std::gamma_distribution<double> gap(burstiness_, 1.0 / (rate * burstiness_));
  now_ += gap(rng_);
  return now_;
}

absl::StatusOr<Workload> BuildWorkload(const WorkloadOptions& options) {
  if (options.tasks.empty()) {
    return absl::InvalidArgumentError("--tasks names no skill");
  }
  if (options.num_prompts <= 0 && options.duration_s <= 0) {
    return absl::InvalidArgumentError("give --num_prompts or --duration");
  }
  if (!(options.cancel_fraction >= 0 && options.cancel_fraction <= 1)) {
    return absl::InvalidArgumentError("--cancel_fraction must be in [0, 1]");
  }
  if (!(options.burstiness > 0)) {
    return absl::InvalidArgumentError("--burstiness must be positive");
  }
  Workload w;
  std::mt19937_64 rng(options.seed);
  if (!options.image_dir.empty()) {
    ASSIGN_OR_RETURN(w.images, ImagesFromDirectory(options.image_dir));
  } else {
    if (options.buckets.empty() || options.distinct_images < 1) {
      return absl::InvalidArgumentError(
          "synthetic images need --image_buckets and --distinct_images >= 1");
    }
    for (int i = 0; i < options.distinct_images; ++i) {
      const ImageBucket& b =
          options.buckets[DrawWeighted(options.buckets, rng)];
      ASSIGN_OR_RETURN(WorkloadImage image,
                       SyntheticImage(b.width, b.height, options.seed + i));
      w.images.push_back(std::move(image));
    }
  }

  // One arrival stream per tenant: its own rate, or its weight's share of
  // --request_rate.
  std::vector<TenantSpec> tenants = options.tenants;
  if (tenants.empty()) tenants.push_back({"", 1.0, std::nullopt});
  double weight_total = 0;
  for (const TenantSpec& t : tenants) {
    if (!t.rate) weight_total += t.weight.value_or(1.0);
  }
  std::vector<ArrivalClock> clocks;
  for (size_t i = 0; i < tenants.size(); ++i) {
    const TenantSpec& t = tenants[i];
    double rate =
        t.rate.value_or(options.request_rate * t.weight.value_or(1.0) /
                        std::max(weight_total, 1e-12));
    if (!(rate > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tenant '", t.key, "' has no rate: give --request_rate or rate="));
    }
    if (std::isinf(rate) && options.num_prompts <= 0) {
      return absl::InvalidArgumentError(
          "an unlimited rate needs --num_prompts, not --duration");
    }
    clocks.emplace_back(rate, options.burstiness, options.ramp_up_s,
                        options.seed * 7919 + i + 1);
    w.tenant_keys.push_back(t.key);
  }

  // Merge the streams in time order until enough requests or time.
  using Next = std::pair<double, int>;  // time, tenant
  std::priority_queue<Next, std::vector<Next>, std::greater<>> next;
  for (size_t i = 0; i < clocks.size(); ++i) {
    next.push({clocks[i].Next(), static_cast<int>(i)});
  }
  std::uniform_int_distribution<int> image_of(
      0, static_cast<int>(w.images.size()) - 1);
  // Its own generator, so cancelling leaves the rest of the plan unchanged.
  std::mt19937_64 cancel_rng(options.seed ^ 0x5eed0fca9ce1ULL);
  std::bernoulli_distribution cancels(options.cancel_fraction);
  std::uniform_int_distribution<int> cancel_point(
      0, std::max(options.cancel_max_chunks, 1) - 1);
  const bool builtin_questions = options.questions.empty();
  const size_t n_questions =
      builtin_questions ? std::size(kQuestions) : options.questions.size();
  while (true) {
    const auto [at, tenant] = next.top();
    next.pop();
    if (options.num_prompts > 0 &&
        static_cast<int>(w.requests.size()) >= options.num_prompts) {
      break;
    }
    if (options.duration_s > 0 && at > options.duration_s) break;
    PlannedRequest r;
    r.at_s = at;
    r.tenant = tenant;
    r.skill = options.tasks[DrawWeighted(options.tasks, rng)].name;
    r.image = image_of(rng);
    if (r.skill == "query") {
      const size_t q = rng() % n_questions;
      r.text = builtin_questions ? kQuestions[q] : options.questions[q];
    } else if (r.skill == "detect" || r.skill == "point") {
      r.text = kObjects[rng() % std::size(kObjects)];
    }
    const bool streams = r.skill == "caption" || r.skill == "query";
    if (cancels(cancel_rng) && streams) {
      r.cancel_after_chunks = cancel_point(cancel_rng);
    }
    w.requests.push_back(std::move(r));
    next.push({clocks[tenant].Next(), tenant});
  }
  return w;
}

}  // namespace md::bench::serve
