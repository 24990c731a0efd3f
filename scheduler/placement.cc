// Image prefixes for sequences: a cache hit is handed to them at once (they
// read the cached tensor in place; nothing is copied); misses go to the
// image encoder thread as one batch and are cached and handed out when it
// finishes, while the other streams keep decoding.
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "scheduler/engine_impl.h"

namespace md::scheduler {
namespace {

// Sequences waiting for one image, in admission order.
struct Waiting {
  const ImageCrops* crops = nullptr;
  std::vector<std::pair<Job*, Sequence*>> seqs;
};

}  // namespace

void Engine::Impl::PlaceImagePrefixes(StepReport& report) {
  std::vector<std::string> keys;
  absl::flat_hash_map<std::string, Waiting> waiting;
  for (auto& job : running_) {
    if (job->finished) continue;
    for (Sequence& seq : job->seqs) {
      if (seq.slot < 0 || seq.state != SlotState::kAwaitingImage) continue;
      const std::string& key = job->image_key(seq);
      auto [it, inserted] = waiting.try_emplace(key);
      if (inserted) keys.push_back(key);
      it->second.crops = &job->request.image->crops_of(seq.side);
      it->second.seqs.emplace_back(job.get(), &seq);
    }
  }

  auto place = [&](const std::string& key, const CachedPrefix& prefix) {
    auto it = waiting.find(key);
    if (it == waiting.end()) return;
    for (auto [job, seq] : it->second.seqs) {
      if (job->finished) continue;
      progress_ = true;
      DropPrefix(*seq);
      seq->prefix = prefix;
      prefix_cache_.Pin(prefix.id);
      seq->pos = executor_->prefix_len();
      seq->state = SlotState::kPrefill;
      slots_.Set(seq->slot, SlotState::kPrefill);
    }
    waiting.erase(it);
  };

  // A batch the encoder finished: cache its prefixes and place them.
  if (std::optional<ImageEncoder::Batch> batch = encoder_->TakeFinished()) {
    progress_ = true;
    for (const std::string& key : batch->keys) encoding_keys_.erase(key);
    if (!batch->encoded.ok()) {
      for (const std::string& key : batch->keys) {
        auto it = waiting.find(key);
        if (it == waiting.end()) continue;
        for (auto [job, seq] : it->second.seqs)
          Fail(*job, batch->encoded.status());
        waiting.erase(it);
      }
    } else {
      const int64_t n = static_cast<int64_t>(batch->keys.size());
      {
        absl::MutexLock lock(&stats_mu_);
        stats_.images_encoded += n;
        stats_.prefix_prefills += n;
      }
      report.images_encoded = static_cast<int>(n);
      report.encode_seconds = batch->seconds;
      for (size_t i = 0; i < batch->keys.size(); ++i) {
        place(batch->keys[i],
              prefix_cache_.Insert(batch->keys[i],
                                   (*batch->encoded)[i].prefix_kv_L2HPD));
      }
    }
  }

  // Cache hits are placed now; misses go to the encoder as one batch when
  // it is free (keys already being encoded just wait).
  std::vector<std::string> to_encode;
  std::vector<ImageCrops> crops;
  const bool encoder_free = !encoder_->Busy();
  for (const std::string& key : keys) {
    if (!waiting.contains(key) || encoding_keys_.contains(key)) continue;
    if (prefix_cache_.Contains(key)) {
      place(key, *prefix_cache_.Lookup(key));
      continue;
    }
    if (!encoder_free ||
        static_cast<int>(to_encode.size()) >= options_.max_images_per_step) {
      continue;
    }
    prefix_cache_.Lookup(key);  // Counts the miss.
    to_encode.push_back(key);
    crops.push_back(*waiting[key].crops);
    for (auto [job, seq] : waiting[key].seqs) job->image_cache_hit = false;
  }
  if (to_encode.empty()) return;
  progress_ = true;
  for (const std::string& key : to_encode) encoding_keys_.insert(key);
  encoder_->Start(std::move(to_encode), std::move(crops));
}

}  // namespace md::scheduler
