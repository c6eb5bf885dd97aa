// Packing (`packing: true`, LLaMA-Factory's neat_packing): several tokenized samples share one
// row of up to `capacity` tokens (the per-sample cut, max_input_length + max_output_length),
// without cross-contamination. The packer plans which samples go into which row; the collator
// writes a packed batch whose attention_mask carries each token's sample index within its row
// (1, 1, 1, 2, 2, 0 = padding) instead of 0/1. The model families (models/model.h
// packed_layout) turn that into block-diagonal causal attention and positions that restart at 0
// for each sample; the first label of every sample is -100, so no sample's last token predicts
// the next sample's first one. The loss over label tokens is then that of unpacked training.
//
// The plan is deterministic: a pure function of the sample lengths, the capacity, the window
// and the seed (no state to checkpoint besides the row-stream position the trainer already
// records). See docs/decisions.md "Packing".
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "data/chat_template.h"
#include "data/collator.h"

namespace ftrun::data {

struct PackOptions {
  int64_t capacity = 0;  // tokens per row; > 0
  // Samples packed together are taken from windows of this many consecutive samples of the
  // shuffled order (LLaMA-Factory packs each datasets.map batch of 1000 samples alone).
  int64_t window = 1000;
  uint64_t seed = 42;    // the shuffled order is epoch_order(n, seed, 0)
};

// One packed row: indices into the sample list, in the order they sit in the row.
using PackedRow = std::vector<int64_t>;

// First-fit-decreasing over each window of epoch_order(lengths.size(), seed, 0): a window's
// samples by length, longest first (ties: earlier in the order first), each into the first
// row of that window with room, else a new row. Rows come out window by window, in the order
// they were opened. Every sample is in exactly one row; no row holds more than `capacity`
// tokens. A sample longer than capacity, or an empty one, is an error naming its index.
std::vector<PackedRow> pack_samples(const std::vector<int64_t>& lengths, const PackOptions& options);

// The lengths pack_samples takes (input_ids sizes).
std::vector<int64_t> sample_lengths(const std::vector<Sample>& samples);

// A batch of packed rows, right-padded to the longest row: input_ids (pad_id on padding),
// labels (-100 on padding and at the first token of every sample), attention_mask = the
// sample's 1-based index within its row (0 on padding). num_label_tokens counts labels that
// are not -100 (positions 1..T-1), the same count the samples give unpacked.
Batch collate_packed(const std::vector<std::vector<const Sample*>>& rows, int64_t pad_id);

}  // namespace ftrun::data
