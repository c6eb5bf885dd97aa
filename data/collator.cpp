// Batching (right padding into int64 tensors) and the deterministic per-epoch sample order.
#include "data/collator.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace ftrun::data {
namespace {

constexpr int64_t kIgnore = -100;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, bound) by rejection, so no index is favoured by modulo bias.
uint64_t below(uint64_t& state, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t r;
  do r = splitmix64(state);
  while (r >= limit);
  return r % bound;
}

}  // namespace

int64_t checked_length(const Sample* s, const char* who) {
  if (!s) throw std::runtime_error(std::string(who) + ": null sample");
  if (s->input_ids.size() != s->labels.size())
    throw std::runtime_error("collate: a sample's input_ids and labels differ in length (" +
                             std::to_string(s->input_ids.size()) + " vs " +
                             std::to_string(s->labels.size()) + ")");
  return static_cast<int64_t>(s->input_ids.size());
}

Batch padding_batch(int64_t B, int64_t T, int64_t pad_id) {
  Batch b;
  b.input_ids = at::full({B, T}, pad_id, at::kLong);
  b.labels = at::full({B, T}, kIgnore, at::kLong);
  b.attention_mask = at::zeros({B, T}, at::kLong);
  return b;
}

Batch collate(const std::vector<const Sample*>& samples, int64_t pad_id) {
  if (samples.empty()) throw std::runtime_error("collate: empty batch");
  int64_t T = 0;
  for (const Sample* s : samples) T = std::max(T, checked_length(s, "collate"));
  if (T == 0) throw std::runtime_error("collate: every sample in the batch is empty");
  const int64_t B = static_cast<int64_t>(samples.size());

  Batch b = padding_batch(B, T, pad_id);
  int64_t* ids = b.input_ids.data_ptr<int64_t>();
  int64_t* labels = b.labels.data_ptr<int64_t>();
  int64_t* mask = b.attention_mask.data_ptr<int64_t>();
  for (int64_t i = 0; i < B; ++i) {
    const Sample& s = *samples[i];
    const int64_t n = static_cast<int64_t>(s.input_ids.size());
    std::copy(s.input_ids.begin(), s.input_ids.end(), ids + i * T);
    std::copy(s.labels.begin(), s.labels.end(), labels + i * T);
    std::fill(mask + i * T, mask + i * T + n, int64_t{1});
    // The model predicts label t from position t-1, so label 0 never contributes to the loss.
    for (int64_t t = 1; t < n; ++t) b.num_label_tokens += s.labels[t] != kIgnore;
  }
  return b;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  if (n < 0) throw std::runtime_error("epoch_order: negative size " + std::to_string(n));
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  // Mixing seed and epoch through splitmix64 gives unrelated streams for neighbouring
  // (seed, epoch) pairs; Fisher-Yates then draws each permutation with equal probability.
  uint64_t state = seed;
  uint64_t e = static_cast<uint64_t>(epoch);
  state ^= splitmix64(e);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(below(state, static_cast<uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace ftrun::data
