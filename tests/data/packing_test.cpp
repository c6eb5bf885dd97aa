// The packer (data/packing.h): first-fit-decreasing rows worked out by hand, determinism,
// every sample exactly once and whole, the row-length cap, windows, and the packed collator's
// sample-index mask and -100 boundary labels.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "data/collator.h"
#include "data/packing.h"

namespace ftrun::data {
namespace {

constexpr int64_t I = -100;

std::vector<int64_t> row_of(const at::Tensor& t, int64_t i) {
  auto r = t[i].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

// The shuffled order the packer walks, mapped back: lengths given per position of that order.
std::vector<int64_t> lengths_in_order(const std::vector<int64_t>& by_position, uint64_t seed) {
  const auto order = epoch_order(int64_t(by_position.size()), seed, 0);
  std::vector<int64_t> lengths(by_position.size());
  for (size_t k = 0; k < order.size(); ++k) lengths[size_t(order[k])] = by_position[k];
  return lengths;
}

TEST(Packing, FirstFitDecreasingByHand) {
  // In the walk's order the lengths are 2, 5, 1, 3, 4, 3; capacity 8. Longest first:
  // 5 -> row A (3 left), 4 -> row B (4 left), 3 (the earlier one) -> A (0 left),
  // 3 -> B (1 left), 2 -> new row C (6 left), 1 -> B (0 left).
  const uint64_t seed = 7;
  const auto lengths = lengths_in_order({2, 5, 1, 3, 4, 3}, seed);
  const auto order = epoch_order(6, seed, 0);
  PackOptions o;
  o.capacity = 8;
  o.seed = seed;
  const auto rows = pack_samples(lengths, o);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (PackedRow{order[1], order[3]}));
  EXPECT_EQ(rows[1], (PackedRow{order[4], order[5], order[2]}));
  EXPECT_EQ(rows[2], (PackedRow{order[0]}));
}

TEST(Packing, EverySampleOnceWholeAndUnderTheCap) {
  std::vector<int64_t> lengths;
  uint64_t x = 12345;
  for (int i = 0; i < 3000; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    lengths.push_back(1 + int64_t((x >> 33) % 190));
  }
  PackOptions o;
  o.capacity = 192;
  o.window = 1000;
  const auto rows = pack_samples(lengths, o);
  std::vector<int> seen(lengths.size(), 0);
  int64_t total = 0;
  for (const auto& r : rows) {
    ASSERT_FALSE(r.empty());
    int64_t len = 0;
    for (int64_t i : r) {
      ++seen[size_t(i)];
      len += lengths[size_t(i)];
    }
    EXPECT_LE(len, o.capacity);
    total += len;
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 1) << "sample " << i;
  EXPECT_EQ(total, std::accumulate(lengths.begin(), lengths.end(), int64_t{0}));
  // Far fewer rows than samples, and at least the token lower bound.
  EXPECT_GE(int64_t(rows.size()), (total + o.capacity - 1) / o.capacity);
  EXPECT_LT(rows.size(), lengths.size() * 2 / 3);

  // Windows: samples of different windows of the walk never share a row.
  const auto order = epoch_order(int64_t(lengths.size()), o.seed, 0);
  std::vector<int64_t> window_of(lengths.size());
  for (size_t k = 0; k < order.size(); ++k) window_of[size_t(order[k])] = int64_t(k) / o.window;
  for (const auto& r : rows) {
    std::set<int64_t> w;
    for (int64_t i : r) w.insert(window_of[size_t(i)]);
    EXPECT_EQ(w.size(), 1u);
  }
}

TEST(Packing, DeterministicAndSeeded) {
  std::vector<int64_t> lengths;
  for (int i = 0; i < 200; ++i) lengths.push_back(1 + (i * 37) % 50);
  PackOptions o;
  o.capacity = 64;
  o.seed = 3;
  const auto a = pack_samples(lengths, o);
  EXPECT_EQ(pack_samples(lengths, o), a);  // a pure function of its inputs (resume relies on it)
  o.seed = 4;
  EXPECT_NE(pack_samples(lengths, o), a);  // another seed shuffles other samples together
}

TEST(Packing, RefusesWhatDoesNotFit) {
  PackOptions o;
  o.capacity = 4;
  EXPECT_THROW(pack_samples({3, 5}, o), std::runtime_error);
  EXPECT_THROW(pack_samples({3, 0}, o), std::runtime_error);
  o.capacity = 0;
  EXPECT_THROW(pack_samples({1}, o), std::runtime_error);
}

TEST(Packing, CollateMarksSamplesAndCutsBoundaryLabels) {
  const Sample a{{1, 2, 3}, {11, 12, 13}};  // a pre-tokenized sample may label its first token
  const Sample b{{4, 5}, {I, 15}};
  const Sample c{{6, 7, 8, 9}, {16, I, 18, 19}};
  const int64_t pad = 0;
  const Batch batch = collate_packed({{&a, &b}, {&c}}, pad);
  EXPECT_EQ(batch.input_ids.sizes(), (at::IntArrayRef{2, 5}));
  EXPECT_EQ(row_of(batch.input_ids, 0), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(row_of(batch.input_ids, 1), (std::vector<int64_t>{6, 7, 8, 9, pad}));
  EXPECT_EQ(row_of(batch.attention_mask, 0), (std::vector<int64_t>{1, 1, 1, 2, 2}));
  EXPECT_EQ(row_of(batch.attention_mask, 1), (std::vector<int64_t>{1, 1, 1, 1, 0}));
  // Every sample's first label is -100: token 3 (a's last) must not be trained to predict 4.
  EXPECT_EQ(row_of(batch.labels, 0), (std::vector<int64_t>{I, 12, 13, I, 15}));
  EXPECT_EQ(row_of(batch.labels, 1), (std::vector<int64_t>{I, I, 18, 19, I}));
  // The count unpacked collation gives for the same samples: a 2, b 1, c 2.
  EXPECT_EQ(batch.num_label_tokens, 5);
  EXPECT_EQ(batch.num_label_tokens, collate({&a}, pad).num_label_tokens + collate({&b}, pad).num_label_tokens +
                                        collate({&c}, pad).num_label_tokens);
  EXPECT_EQ(batch.num_label_tokens, batch.labels.slice(1, 1).ne(I).sum().item<int64_t>());
  EXPECT_THROW(collate_packed({{&a}, {}}, pad), std::runtime_error);
}

}  // namespace
}  // namespace ftrun::data
