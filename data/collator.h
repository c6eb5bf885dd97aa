// Batching and sampling. Right padding: input_ids padded with pad_id, labels with -100,
// attention_mask 0 on padding; positions stay 0..T-1 as in HF with right padding.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "data/chat_template.h"

namespace ftrun::data {

struct Batch {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor labels;          // [B, T] int64
  at::Tensor attention_mask;  // [B, T] int64
  int64_t num_label_tokens = 0;  // labels != -100 after the causal shift (positions 1..T-1)
};

Batch collate(const std::vector<const Sample*>& samples, int64_t pad_id);

// Shared by collate and collate_packed (data/packing.h): a sample's token count, after checking
// that it exists and its labels match its input_ids (errors start with `who`); and a batch of
// B rows of T slots, all padding (input_ids pad_id, labels -100, attention_mask 0).
int64_t checked_length(const Sample* s, const char* who);
Batch padding_batch(int64_t B, int64_t T, int64_t pad_id);

// Deterministic order of `n` indices for an epoch: a permutation seeded by (seed, epoch),
// identical on every platform (own PRNG, not std::shuffle's implementation-defined one).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle = true);

}  // namespace ftrun::data
