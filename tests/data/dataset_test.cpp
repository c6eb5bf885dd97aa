// Tests of the dataset readers: the three record forms, JSON vs JSON Lines, the shipped
// sample files, and that every validation error names file:line (or file[index]) and field.
#include <gtest/gtest.h>

#include "data/dataset.h"
#include "tests/data/test_util.h"

namespace ftrun::data {

// In ftrun::data (not the anonymous namespace) so that std::equal finds them by ADL.
inline bool operator==(const Message& a, const Message& b) {
  return a.role == b.role && a.content == b.content;
}
inline std::ostream& operator<<(std::ostream& os, const Message& m) {
  return os << m.role << ": " << m.content;
}

namespace {

using namespace ftrun::data::testing;


TEST(Dataset, ReadsMessagesJsonlSkippingBlankLines) {
  TempDir dir("ds_msgs");
  const auto path = dir.write(
      "chat.jsonl",
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})"
      "\n\n   \n"
      R"({"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2", "extra": 1}]})"
      "\r\n");
  const auto ds = read_dataset(path);
  ASSERT_EQ(ds.size(), 2u);
  EXPECT_EQ(ds[0].where, path + ":1");
  EXPECT_EQ(ds[1].where, path + ":4");  // blank lines are skipped but still counted
  EXPECT_FALSE(ds[0].pretokenized());
  EXPECT_EQ(ds[0].messages, (std::vector<Message>{
                                {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}}));
  EXPECT_EQ(ds[1].messages.size(), 4u);
  EXPECT_EQ(ds[1].messages[3], (Message{"assistant", "A2"}));
}

TEST(Dataset, ConvertsAlpacaRecords) {
  TempDir dir("ds_alpaca");
  const auto path = dir.write("a.json", R"([
  {"instruction": "Add.", "input": "3 and 4", "output": "7"},
  {"instruction": "Say hi.", "input": "", "output": "hi", "system": "Be kind."},
  {"instruction": "Q3", "output": "A3", "history": [["Q1", "A1"], ["Q2", "A2"]], "input": null},
  {"instruction": "", "input": "only input", "output": "x"}
])");
  const auto ds = read_dataset(path);
  ASSERT_EQ(ds.size(), 4u);
  EXPECT_EQ(ds[0].where, path + "[0]");
  EXPECT_EQ(ds[3].where, path + "[3]");
  EXPECT_EQ(ds[0].messages, (std::vector<Message>{{"user", "Add.\n3 and 4"}, {"assistant", "7"}}));
  EXPECT_EQ(ds[1].messages, (std::vector<Message>{
                                {"system", "Be kind."}, {"user", "Say hi."}, {"assistant", "hi"}}));
  EXPECT_EQ(ds[2].messages, (std::vector<Message>{{"user", "Q1"},
                                                  {"assistant", "A1"},
                                                  {"user", "Q2"},
                                                  {"assistant", "A2"},
                                                  {"user", "Q3"},
                                                  {"assistant", "A3"}}));
  EXPECT_EQ(ds[3].messages[0], (Message{"user", "only input"}));
}

TEST(Dataset, ReadsPretokenizedRecords) {
  TempDir dir("ds_pretok");
  const auto path = dir.write("p.jsonl", R"({"input_ids": [1, 2, 3], "labels": [-100, 2, 3]})"
                                         "\n");
  const auto ds = read_dataset(path);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_TRUE(ds[0].pretokenized());
  EXPECT_EQ(ds[0].input_ids, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(ds[0].labels, (std::vector<int64_t>{-100, 2, 3}));
}

TEST(Dataset, MixesFormsPerRecordAndReadsJsonLinesNamedJson) {
  TempDir dir("ds_mixed");
  // A ".json" file that is really JSON Lines (common on the hub) is read line by line.
  const auto path = dir.write(
      "mixed.json",
      "\xEF\xBB\xBF"  // a UTF-8 BOM is tolerated
      R"({"instruction": "I", "output": "O"})"
      "\n"
      R"({"messages": [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]})"
      "\n"
      R"({"input_ids": [5], "labels": [5]})");
  const auto ds = read_dataset(path);
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds[0].where, path + ":1");
  EXPECT_EQ(ds[0].messages[1], (Message{"assistant", "O"}));
  EXPECT_EQ(ds[1].messages[0], (Message{"user", "U"}));
  EXPECT_TRUE(ds[2].pretokenized());
}

TEST(Dataset, ReadsTheShippedSamples) {
  const std::string dir = std::string(FTRUN_SOURCE_DIR) + "/examples/tiny/";
  const auto train = read_dataset(dir + "train.jsonl");
  const auto dev = read_dataset(dir + "dev.jsonl");
  const auto alpaca = read_dataset(dir + "alpaca.json");
  EXPECT_EQ(train.size(), 300u);
  EXPECT_EQ(dev.size(), 30u);
  EXPECT_EQ(alpaca.size(), 100u);
  for (const auto* ds : {&train, &dev, &alpaca})
    for (const auto& ex : *ds) {
      ASSERT_GE(ex.messages.size(), 2u) << ex.where;
      EXPECT_EQ(ex.messages.back().role, "assistant") << ex.where;
    }
}

struct BadCase {
  std::string file, text;
  std::string where;  // appended to the path: ":LINE" or "[INDEX]" or ""
  std::vector<std::string> needles;
};

TEST(Dataset, ErrorsNameTheRecordAndField) {
  TempDir dir("ds_err");
  const std::string ok_msg =
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})";
  const std::vector<BadCase> cases = {
      {"a.jsonl", ok_msg + "\n\n" + R"({"instruction": "q", "output": 5})" + "\n", ":3",
       {"field 'output'", "must be a string", "number"}},
      {"b.jsonl", R"({"instruction": "q"})", ":1", {"field 'output'", "missing"}},
      {"c.json", R"([{"instruction": "q", "output": "a"}, {"instruction": 1, "output": "a"}])",
       "[1]", {"field 'instruction'", "must be a string"}},
      {"d.jsonl", R"({"instruction": "q", "output": "a", "input": ["x"]})", ":1", {"'input'"}},
      {"e.jsonl", R"({"instruction": "q", "output": "a", "system": 3})", ":1", {"'system'"}},
      {"f.jsonl", R"({"instruction": "q", "output": "a", "history": [["q1"]]})", ":1",
       {"'history[0]'", "pair"}},
      {"g.jsonl", R"({"instruction": "q", "output": "a", "history": "no"})", ":1",
       {"'history'", "array"}},
      {"h.jsonl", R"({"messages": "hi"})", ":1", {"field 'messages'", "array"}},
      {"i.jsonl", R"({"messages": []})", ":1", {"'messages'", "empty"}},
      {"j.jsonl", R"({"messages": [{"role": "user", "content": 1}]})", ":1",
       {"'messages[0].content'", "string"}},
      {"k.jsonl", R"({"messages": [{"content": "x"}]})", ":1", {"'messages[0].role'", "missing"}},
      {"l.jsonl", R"({"messages": [{"role": "bot", "content": "x"}]})", ":1",
       {"'messages[0].role'", "bot"}},
      {"m.jsonl", R"({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}]})",
       ":1", {"'messages[1].role'", "first"}},
      {"n.jsonl", R"({"messages": ["x"]})", ":1", {"'messages[0]'", "object"}},
      {"o.jsonl", R"({"input_ids": [1, 2], "labels": [1]})", ":1", {"'labels'", "same length"}},
      {"p.jsonl", R"({"input_ids": [1, "2"], "labels": [1, 2]})", ":1",
       {"'input_ids[1]'", "integer"}},
      {"q.jsonl", R"({"input_ids": [1, 2.5], "labels": [1, 2]})", ":1", {"'input_ids[1]'"}},
      {"r.jsonl", R"({"input_ids": [1]})", ":1", {"'labels'", "missing"}},
      {"s.jsonl", R"({"text": "pretraining"})", ":1", {"unrecognised record", "'messages'"}},
      {"t.jsonl", ok_msg + "\n[1, 2]\n", ":2", {"must be a JSON object", "array"}},
      {"u.jsonl", ok_msg + "\n" + ok_msg + "\n{\"messages\": [\n", ":3", {"invalid JSON"}},
      {"v.json", "[\n  {\"instruction\": \"q\", \"output\": \"a\"},\n  {\"instruction\": \"q\",,}\n]",
       ":3", {"invalid JSON"}},
      {"w.json", "[1]", "[0]", {"must be a JSON object", "number"}},
      {"x.jsonl", "", "", {"empty"}},
      {"y.jsonl", "\n  \n\n", "", {"empty"}},
      {"z.json", "[]", "", {"empty"}},
      {"z2.json", "  \n", "", {"empty"}},
      {"z3.json", "\"text\"", ":1", {"must be a JSON object", "string"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const auto path = dir.write(c.file, c.text);
    auto needles = c.needles;
    needles.push_back(path + c.where + ": ");
    expect_error([&] { read_dataset(path); }, needles);
  }
}

// Issue 16: a pre-tokenized record whose labels are all -100 has nothing to train (it trained
// with loss 0); it is refused like a conversation without an assistant turn, naming file:line.
// One label kept is enough to be accepted.
TEST(Dataset, RefusesPretokenizedRecordsWithEveryLabelMasked) {
  TempDir dir("ds_masked");
  const auto path = dir.write("m.jsonl", "{\"input_ids\": [1, 2], \"labels\": [-100, 2]}\n"
                                         "{\"input_ids\": [1, 2, 3], \"labels\": [-100, -100, -100]}\n");
  expect_error([&] { read_dataset(path); }, {path + ":2: ", "'labels'", "-100", "nothing would be trained"});
  const auto arr = dir.write("m.json", "[{\"input_ids\": [7], \"labels\": [-100]}]");
  expect_error([&] { read_dataset(arr); }, {arr + "[0]: ", "nothing would be trained"});
  const auto ok = dir.write("ok.jsonl", "{\"input_ids\": [1, 2, 3], \"labels\": [-100, -100, 3]}\n");
  EXPECT_EQ(read_dataset(ok).size(), 1u);
}

TEST(Dataset, FileErrors) {
  TempDir dir("ds_files");
  expect_error([&] { read_dataset(dir.file("missing.jsonl")); },
               {dir.file("missing.jsonl"), "cannot open"});
  const auto csv = dir.write("data.csv", "a,b\n");
  expect_error([&] { read_dataset(csv); }, {csv, ".csv", ".json", ".jsonl"});
  const auto obj = dir.write("obj.json", "[{\"instruction\": \"q\", \"output\": \"a\"}] trailing");
  expect_error([&] { read_dataset(obj); }, {obj + ":1: ", "invalid JSON"});
}

}  // namespace
}  // namespace ftrun::data
