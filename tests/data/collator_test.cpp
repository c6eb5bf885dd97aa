// Tests of batching (right padding, masks, label-token count) and of the per-epoch order.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "data/collator.h"
#include "tests/data/test_util.h"

namespace ftrun::data {
namespace {

using namespace ftrun::data::testing;

constexpr int64_t I = -100;

std::vector<int64_t> row(const at::Tensor& t, int64_t i) {
  auto r = t[i].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

TEST(Collate, RightPadsWithMasks) {
  const Sample a{{1, 2, 3}, {I, 2, 3}};
  const Sample b{{4, 5, 6, 7, 8}, {I, I, 6, I, 8}};
  const Sample c{{9}, {9}};
  const int64_t pad = 99;
  const Batch batch = collate({&a, &b, &c}, pad);

  for (const auto* t : {&batch.input_ids, &batch.labels, &batch.attention_mask}) {
    EXPECT_EQ(t->sizes(), (at::IntArrayRef{3, 5}));
    EXPECT_EQ(t->scalar_type(), at::kLong);
  }
  EXPECT_EQ(row(batch.input_ids, 0), (std::vector<int64_t>{1, 2, 3, pad, pad}));
  EXPECT_EQ(row(batch.input_ids, 1), (std::vector<int64_t>{4, 5, 6, 7, 8}));
  EXPECT_EQ(row(batch.input_ids, 2), (std::vector<int64_t>{9, pad, pad, pad, pad}));
  EXPECT_EQ(row(batch.labels, 0), (std::vector<int64_t>{I, 2, 3, I, I}));
  EXPECT_EQ(row(batch.labels, 1), (std::vector<int64_t>{I, I, 6, I, 8}));
  EXPECT_EQ(row(batch.labels, 2), (std::vector<int64_t>{9, I, I, I, I}));
  EXPECT_EQ(row(batch.attention_mask, 0), (std::vector<int64_t>{1, 1, 1, 0, 0}));
  EXPECT_EQ(row(batch.attention_mask, 1), (std::vector<int64_t>{1, 1, 1, 1, 1}));
  EXPECT_EQ(row(batch.attention_mask, 2), (std::vector<int64_t>{1, 0, 0, 0, 0}));
  // labels[:, 1:] != -100: row 0 has 2, row 1 has 2, row 2's only label sits at position 0.
  EXPECT_EQ(batch.num_label_tokens, 4);
  EXPECT_EQ(batch.num_label_tokens,
            batch.labels.slice(1, 1).ne(I).sum().item<int64_t>());
}

TEST(Collate, SingleSampleNeedsNoPadding) {
  const Sample a{{1, 2}, {1, 2}};
  const Batch batch = collate({&a}, 0);
  EXPECT_EQ(batch.input_ids.sizes(), (at::IntArrayRef{1, 2}));
  EXPECT_EQ(batch.attention_mask.sum().item<int64_t>(), 2);
  EXPECT_EQ(batch.num_label_tokens, 1);
}

TEST(Collate, RejectsBadInput) {
  const Sample bad{{1, 2}, {1}};
  const Sample empty{{}, {}};
  expect_error([] { collate({}, 0); }, {"empty batch"});
  expect_error([&] { collate({&bad}, 0); }, {"differ in length"});
  expect_error([&] { collate({&empty}, 0); }, {"empty"});
}

TEST(EpochOrder, IsADeterministicPermutation) {
  for (int64_t n : {0, 1, 2, 7, 100, 1001}) {
    auto order = epoch_order(n, 42, 3);
    EXPECT_EQ(order, epoch_order(n, 42, 3));
    auto sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> iota(static_cast<size_t>(n));
    std::iota(iota.begin(), iota.end(), int64_t{0});
    EXPECT_EQ(sorted, iota) << n;
    EXPECT_EQ(epoch_order(n, 42, 3, /*shuffle=*/false), iota);
  }
  expect_error([] { epoch_order(-1, 0, 0); }, {"-1"});
}

TEST(EpochOrder, DiffersAcrossEpochsAndSeeds) {
  const auto e0 = epoch_order(100, 42, 0);
  EXPECT_NE(e0, epoch_order(100, 42, 1));
  EXPECT_NE(e0, epoch_order(100, 43, 0));
  std::vector<int64_t> iota(100);
  std::iota(iota.begin(), iota.end(), int64_t{0});
  EXPECT_NE(e0, iota);
}

TEST(EpochOrder, IsPinnedAcrossPlatformsAndVersions) {
  // Resume and multi-rank sampling rely on this exact sequence; changing the PRNG breaks
  // resuming old checkpoints, so it must be a deliberate change of this golden value.
  EXPECT_EQ(epoch_order(10, 42, 0), (std::vector<int64_t>{9, 4, 2, 8, 1, 3, 0, 6, 5, 7}));
  EXPECT_EQ(epoch_order(10, 42, 1), (std::vector<int64_t>{0, 9, 1, 6, 2, 8, 3, 4, 7, 5}));
}

TEST(EpochOrder, IsRoughlyUniform) {
  // All 6 orders of 3 items, over 6000 epochs: each should come up about 1000 times.
  std::map<std::vector<int64_t>, int> counts;
  for (int64_t e = 0; e < 6000; ++e) ++counts[epoch_order(3, 7, e)];
  ASSERT_EQ(counts.size(), 6u);
  for (const auto& [order, n] : counts) {
    EXPECT_GT(n, 850);
    EXPECT_LT(n, 1150);
  }
}

}  // namespace
}  // namespace ftrun::data
