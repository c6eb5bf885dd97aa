// testing/batches.h: batch helpers the multi-rank and checkpointing tests share (header-only).
#pragma once
#include <ATen/ATen.h>

#include "data/collator.h"

namespace ftrun::testing {

// Rows [from, from + n) of a global batch, with its label count recomputed (what one rank
// takes of a global batch, or one micro-batch of it).
inline data::Batch slice_rows(const data::Batch& g, int64_t from, int64_t n) {
  data::Batch b;
  b.input_ids = g.input_ids.narrow(0, from, n);
  b.attention_mask = g.attention_mask.narrow(0, from, n);
  b.labels = g.labels.narrow(0, from, n);
  b.num_label_tokens = (b.labels.narrow(1, 1, b.labels.size(1) - 1) != -100).sum().item<int64_t>();
  return b;
}

}  // namespace ftrun::testing
