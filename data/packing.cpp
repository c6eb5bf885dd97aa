// The packer (first-fit-decreasing per window of the shuffled sample order) and the packed
// collator; see packing.h.
#include "data/packing.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace ftrun::data {
namespace {
constexpr int64_t kIgnore = -100;
}  // namespace

std::vector<int64_t> sample_lengths(const std::vector<Sample>& samples) {
  std::vector<int64_t> out;
  out.reserve(samples.size());
  for (const auto& s : samples) out.push_back(static_cast<int64_t>(s.input_ids.size()));
  return out;
}

std::vector<PackedRow> pack_samples(const std::vector<int64_t>& lengths, const PackOptions& o) {
  if (o.capacity <= 0)
    throw std::runtime_error("packing: the row length (max_input_length + max_output_length) must be positive, got " +
                             std::to_string(o.capacity));
  if (o.window <= 0) throw std::runtime_error("packing: window must be positive, got " + std::to_string(o.window));
  const int64_t n = static_cast<int64_t>(lengths.size());
  for (int64_t i = 0; i < n; ++i) {
    if (lengths[size_t(i)] <= 0) throw std::runtime_error("packing: sample " + std::to_string(i) + " is empty");
    if (lengths[size_t(i)] > o.capacity)
      throw std::runtime_error("packing: sample " + std::to_string(i) + " has " + std::to_string(lengths[size_t(i)]) +
                               " tokens, more than the row length " + std::to_string(o.capacity));
  }
  const std::vector<int64_t> order = epoch_order(n, o.seed, 0);
  std::vector<PackedRow> rows;
  for (int64_t w0 = 0; w0 < n; w0 += o.window) {
    const int64_t w1 = std::min(n, w0 + o.window);
    // Positions in the shuffled order, longest sample first; stable, so ties keep that order.
    std::vector<int64_t> byLen(size_t(w1 - w0));
    std::iota(byLen.begin(), byLen.end(), w0);
    std::stable_sort(byLen.begin(), byLen.end(), [&](int64_t a, int64_t b) {
      return lengths[size_t(order[size_t(a)])] > lengths[size_t(order[size_t(b)])];
    });
    const size_t first = rows.size();
    std::vector<int64_t> room;  // free tokens of this window's rows
    for (int64_t k : byLen) {
      const int64_t idx = order[size_t(k)];
      const int64_t len = lengths[size_t(idx)];
      size_t r = 0;
      while (r < room.size() && room[r] < len) ++r;
      if (r == room.size()) {
        room.push_back(o.capacity);
        rows.emplace_back();
      }
      room[r] -= len;
      rows[first + r].push_back(idx);
    }
  }
  return rows;
}

Batch collate_packed(const std::vector<std::vector<const Sample*>>& rows, int64_t pad_id) {
  if (rows.empty()) throw std::runtime_error("collate_packed: empty batch");
  int64_t T = 0;
  for (const auto& row : rows) {
    if (row.empty()) throw std::runtime_error("collate_packed: a row holds no sample");
    int64_t len = 0;
    for (const Sample* s : row) len += checked_length(s, "collate_packed");
    T = std::max(T, len);
  }
  if (T == 0) throw std::runtime_error("collate: every sample in the batch is empty");
  const int64_t B = static_cast<int64_t>(rows.size());
  Batch b = padding_batch(B, T, pad_id);
  int64_t* ids = b.input_ids.data_ptr<int64_t>();
  int64_t* labels = b.labels.data_ptr<int64_t>();
  int64_t* mask = b.attention_mask.data_ptr<int64_t>();
  for (int64_t i = 0; i < B; ++i) {
    int64_t at = i * T, index = 0;
    for (const Sample* s : rows[size_t(i)]) {
      const int64_t n = static_cast<int64_t>(s->input_ids.size());
      ++index;
      std::copy(s->input_ids.begin(), s->input_ids.end(), ids + at);
      std::copy(s->labels.begin(), s->labels.end(), labels + at);
      // HF's shift: position t predicts label t + 1, so the previous sample's last token would
      // predict this sample's first label. Unpacked, label 0 never counts; here it must not
      // either.
      if (n > 0) labels[at] = kIgnore;
      std::fill(mask + at, mask + at + n, index);
      for (int64_t t = 1; t < n; ++t) b.num_label_tokens += s->labels[size_t(t)] != kIgnore;
      at += n;
    }
  }
  return b;
}

}  // namespace ftrun::data
