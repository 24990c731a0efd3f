#include "model/net/kernels/pack_weights.h"

#include <ATen/ATen.h>

#include <vector>

#include "model/net/kernels/bf16_gemm.h"

namespace md {
namespace {

void AddMlp(MlpWeights& mlp, std::vector<LinearWeights*>& out) {
  out.push_back(&mlp.fc1);
  out.push_back(&mlp.fc2);
}

void AddAttention(AttentionWeights& attn, std::vector<LinearWeights*>& out) {
  out.push_back(&attn.qkv);
  out.push_back(&attn.proj);
}

// Every linear layer of the model.
std::vector<LinearWeights*> AllLinears(Weights& w) {
  std::vector<LinearWeights*> out;
  out.push_back(&w.vision.patch_emb);
  for (VisionBlockWeights& block : w.vision.blocks) {
    AddAttention(block.attn, out);
    AddMlp(block.mlp, out);
  }
  AddMlp(w.vision.proj_mlp, out);
  for (TextBlockWeights& block : w.text.blocks) {
    AddAttention(block.attn, out);
    AddMlp(block.mlp, out);
  }
  out.push_back(&w.text.lm_head);
  out.push_back(&w.region.coord_encoder);
  AddMlp(w.region.coord_decoder, out);
  out.push_back(&w.region.size_encoder);
  AddMlp(w.region.size_decoder, out);
  return out;
}

}  // namespace

int64_t PackLinearWeights(Weights* weights) {
  int64_t bytes = 0;
  for (LinearWeights* linear : AllLinears(*weights)) {
    linear->packed = linear->weight.defined()
                         ? PackLinearWeightBf16(linear->weight)
                         : at::Tensor();
    if (linear->packed.defined()) bytes += linear->packed.nbytes();
  }
  return bytes;
}

}  // namespace md
