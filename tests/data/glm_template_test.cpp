// Tests of the glm4 / chatglm3 / qwen / bluelm templates, the GLM-4 demo's samples, masks,
// truncation and evaluation rows, and the GLM-4 messages + sharegpt readers.
//
// Expected ids are written out by hand from the rules in shared/reference/glm4-demo.md 3.3-3.5
// and formats.md 5: specials at their real ids, text pieces spelled literally and mapped to
// ids by the test tokenizer's byte code (tests/data/byte_tokenizer.h), never by the code under
// test.
#include <gtest/gtest.h>

#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/templates/glm.h"
#include "tests/data/byte_tokenizer.h"
#include "tests/data/test_util.h"
#include "testing/glm4_tool_call.h"

namespace ftrun::data {
namespace {

using namespace ftrun::data::testing;

constexpr int64_t kIgnore = -100;
// glm-4-9b-chat
constexpr int64_t kEot = 151329, kGmask = 151331, kSop = 151333, kSystem = 151335,
                  kUser = 151336, kAssistant = 151337, kObservation = 151338;

std::vector<int64_t> ign(size_t n) { return std::vector<int64_t>(n, kIgnore); }

Message msg(std::string role, std::string content) {
  Message m;
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}

std::string trained_text(const Sample& s, const Tokenizer& tok) {
  std::vector<int64_t> t;
  for (int64_t l : s.labels)
    if (l != kIgnore) t.push_back(l);
  return tok.decode(t, false);
}

// ---- the GLM-4 tool-call conversation (glm4-demo.md 3.3) --------------------------------

using namespace ftrun::testing::glm4_tool_call;  // kToolRecord, kToolsText, kCall, kResult, kAnswer

std::vector<Message> tool_conversation() {
  TempDir dir("glm_tool");
  const auto ds = read_dataset(dir.write("tools.jsonl", std::string(kToolRecord) + "\n"));
  EXPECT_EQ(ds.size(), 1u);
  return ds.at(0).messages;
}

TEST(Glm4Template, ReadsTheToolConversation) {
  const auto m = tool_conversation();
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].role, "system");
  EXPECT_TRUE(m[0].has_tools());
  EXPECT_FALSE(m[1].has_tools());  // "tools": null is no tools (demo bug B1/B11)
  EXPECT_EQ(m[3].role, "observation");
  EXPECT_EQ(m[2].content, kCall);
  // Key order as written (ordered_json), not sorted.
  EXPECT_EQ(m[0].tools[0]["function"].begin().key(), "name");
}

TEST(Glm4Template, RendersTheToolConversationTokenByToken) {
  const auto& tok = glm4_tokenizer();
  const auto m = tool_conversation();
  const std::vector<int64_t> rendered =
      cat({{kGmask, kSop, kSystem}, bytes(kToolsText),
           {kUser}, bytes("\n北京天气怎么样？"),
           {kAssistant}, bytes(std::string("\n") + kCall),
           {kObservation}, bytes(std::string("\n") + kResult),
           {kAssistant}, bytes(std::string("\n") + kAnswer)});
  EXPECT_EQ(glm4_render_ids(m, tok), rendered);

  auto tmpl = make_template("glm4");
  EXPECT_EQ(tmpl->name(), "glm4");
  EXPECT_EQ(tmpl->prompt(m, tok), cat({rendered, {kAssistant}}));
  EXPECT_EQ(tok.decode(rendered, false),
            std::string("[gMASK]<sop><|system|>") + kToolsText + "<|user|>\n北京天气怎么样？"
            "<|assistant|>\n" + kCall + "<|observation|>\n" + kResult + "<|assistant|>\n" + kAnswer);

  // combine=false: both assistant turns, each from its "\n" through the token after it.
  const size_t before_call = 3 + bytes(kToolsText).size() + 1 + bytes("\n北京天气怎么样？").size() + 1;
  const Sample f = glm4_demo_sample(m, tok, false, 0, 0);
  EXPECT_EQ(f.input_ids, cat({rendered, {kUser}}));
  EXPECT_EQ(f.labels, cat({ign(before_call), bytes(std::string("\n") + kCall), {kObservation},
                           ign(bytes(std::string("\n") + kResult).size() + 1),
                           bytes(std::string("\n") + kAnswer), {kUser}}));
  EXPECT_EQ(trained_text(f, tok), std::string("\n") + kCall + "<|observation|>\n" + kAnswer + "<|user|>");

  // combine=true with tools works (B1) and trains only after the last <|assistant|>, minus
  // the "\n" right after it.
  const Sample t = glm4_demo_sample(m, tok, true, 0, 0);
  EXPECT_EQ(t.input_ids, f.input_ids);
  EXPECT_EQ(t.labels, cat({ign(rendered.size() - bytes(kAnswer).size()), bytes(kAnswer), {kUser}}));
  EXPECT_EQ(trained_text(t, tok), std::string(kAnswer) + "<|user|>");

  EXPECT_EQ(tmpl->stop_ids(tok), (std::vector<int64_t>{151329, 151336, 151338}));
}

// ---- glm4-demo.md 3.4's example ----------------------------------------------------------

std::vector<Message> u1a1u2a2() {
  return {msg("user", "U1"), msg("assistant", "A1"), msg("user", "U2"), msg("assistant", "A2")};
}

TEST(Glm4DemoSample, CombineFalseAndTrueMasks) {
  const auto& tok = glm4_tokenizer();
  // input [gMASK]<sop><|user|>\nU1<|assistant|>\nA1<|user|>\nU2<|assistant|>\nA2<|user|>
  const std::vector<int64_t> ids = cat({{kGmask, kSop, kUser}, bytes("\nU1"), {kAssistant},
                                        bytes("\nA1"), {kUser}, bytes("\nU2"), {kAssistant},
                                        bytes("\nA2"), {kUser}});
  const Sample f = glm4_demo_sample(u1a1u2a2(), tok, false, 0, 0);
  EXPECT_EQ(f.input_ids, ids);
  // combine=false targets `\nA1<|user|>` and `\nA2<|user|>`
  EXPECT_EQ(f.labels, cat({ign(7), bytes("\nA1"), {kUser}, ign(4), bytes("\nA2"), {kUser}}));

  const Sample t = glm4_demo_sample(u1a1u2a2(), tok, true, 0, 0);
  EXPECT_EQ(t.input_ids, ids);
  // combine=true targets `A2<|user|>`
  EXPECT_EQ(t.labels, cat({ign(ids.size() - 3), bytes("A2"), {kUser}}));
  EXPECT_EQ(trained_text(t, tok), "A2<|user|>");
}

TEST(Glm4DemoSample, CutsToInputPlusOutputPlusOne) {
  const auto& tok = glm4_tokenizer();
  const Sample full = glm4_demo_sample(u1a1u2a2(), tok, false, 0, 0);
  for (bool combine : {false, true}) {
    const Sample full_c = glm4_demo_sample(u1a1u2a2(), tok, combine, 0, 0);
    const Sample cut = glm4_demo_sample(u1a1u2a2(), tok, combine, 5, 3);
    ASSERT_EQ(cut.input_ids.size(), 9u);  // 5 + 3 + 1
    EXPECT_EQ(cut.input_ids, std::vector<int64_t>(full_c.input_ids.begin(), full_c.input_ids.begin() + 9));
    EXPECT_EQ(cut.labels, std::vector<int64_t>(full_c.labels.begin(), full_c.labels.begin() + 9));
  }
  // B10, kept: a cut one short of the full length loses the closing <|user|>.
  const int64_t n = static_cast<int64_t>(full.input_ids.size());
  const Sample short_cut = glm4_demo_sample(u1a1u2a2(), tok, false, n - 2, 0);
  EXPECT_EQ(short_cut.input_ids.back(), bytes("2")[0]);
  // Long limits leave it whole.
  EXPECT_EQ(glm4_demo_sample(u1a1u2a2(), tok, false, 512, 512).input_ids, full.input_ids);
}

TEST(Glm4DemoSample, EncodeExampleUsesTheDemoRulesWithOptions) {
  const auto& tok = glm4_tokenizer();
  auto tmpl = make_template("glm4");
  Example ex;
  ex.where = "train.jsonl:3";
  ex.messages = u1a1u2a2();
  for (bool combine : {true, false}) {
    EncodeOptions o;
    o.combine = combine;
    o.max_input_length = 6;
    o.max_output_length = 4;
    const Sample s = encode_example(ex, *tmpl, tok, o);
    const Sample d = glm4_demo_sample(ex.messages, tok, combine, 6, 4);
    EXPECT_EQ(s.input_ids, d.input_ids);
    EXPECT_EQ(s.labels, d.labels);
    EXPECT_EQ(s.input_ids.size(), 11u);
  }
  // Without options (the old signature): render() = combine=false, cut as asked.
  const Sample r = encode_example(ex, *tmpl, tok, 0);
  EXPECT_EQ(r.labels, glm4_demo_sample(ex.messages, tok, false, 0, 0).labels);

  // Errors inside the template name the record.
  ex.messages = {msg("user", "q"), msg("tool", "x"), msg("assistant", "a")};
  expect_error([&] { encode_example(ex, *tmpl, tok, EncodeOptions{}); },
               {"train.jsonl:3", "role 'tool'"});
  ex.messages = {msg("user", "q")};
  expect_error([&] { encode_example(ex, *tmpl, tok, EncodeOptions{}); },
               {"train.jsonl:3", "assistant"});
}

TEST(Glm4Template, EmptyContentMetadataAndPrompt) {
  const auto& tok = glm4_tokenizer();
  Message sys = msg("system", "");  // no tools, empty content: prints nothing at all
  Message call = msg("assistant", "print(1)");
  call.metadata = "python";
  const std::vector<Message> m = {sys, msg("user", "run it"), call};
  EXPECT_EQ(glm4_render_ids(m, tok),
            cat({{kGmask, kSop, kUser}, bytes("\nrun it"), {kAssistant}, bytes("python\nprint(1)")}));
  auto tmpl = make_template("glm4");
  EXPECT_EQ(tmpl->prompt({msg("user", "#裙子#夏天")}, tok),
            cat({{kGmask, kSop, kUser}, bytes("\n#裙子#夏天"), {kAssistant}}));
  EXPECT_EQ(tmpl->prompt({}, tok), (std::vector<int64_t>{kGmask, kSop, kAssistant}));
  // combine=true needs an <|assistant|> token
  expect_error([&] { glm4_demo_sample({msg("user", "q")}, tok, true, 0, 0); }, {"assistant"});
}

TEST(Glm4Template, OtherToolTypes) {
  const auto& tok = glm4_tokenizer();
  Message sys = msg("system", "Be brief.");
  sys.tools = nlohmann::ordered_json::parse(
      R"([{"type": "python"}, {"name": "f", "parameters": {}}])");
  const std::string python =
      "\n## python\n\n当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 "
      "Jupyter notebook 环境中执行。\n`python` 返回代码执行的输出，或在执行 60 秒后返回超时。\n"
      "`/mnt/data` 将会持久化存储你的文件。在此会话中，`python` 无法访问互联网。不要使用 `python` "
      "进行任何网络请求或者在线 API 调用，这些在线内容的访问将不会成功。";
  // A bare tool (sharegpt's form, no "type") is rendered as the function it describes.
  const std::string bare =
      "\n## f\n\n{\n    \"name\": \"f\",\n    \"parameters\": {}\n}\n在调用上述函数时，请使用 Json 格式表示调用的参数。";
  const std::string head =
      "\n你是一个名为 GLM-4 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
      "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具";
  // Tools block first, then the system message's own content.
  EXPECT_EQ(glm4_render_ids({sys}, tok),
            cat({{kGmask, kSop, kSystem}, bytes(head + python + bare), {kSystem}, bytes("\nBe brief.")}));
  sys.tools = nlohmann::ordered_json::parse(R"([{"type": "retrieval"}])");
  expect_error([&] { glm4_render_ids({sys}, tok); }, {"tools[0]", "retrieval"});
}

TEST(Glm4EvalRows, PromptHoldsNoGoldAnswer) {
  const auto& tok = glm4_tokenizer();
  // B2 fixed: the context before the last assistant turn + <|assistant|>; target "\nA2<|user|>".
  const EvalRow row = eval_prompt_and_target(u1a1u2a2(), tok, 0, 0);
  EXPECT_EQ(row.prompt, cat({{kGmask, kSop, kUser}, bytes("\nU1"), {kAssistant}, bytes("\nA1"),
                             {kUser}, bytes("\nU2"), {kAssistant}}));
  EXPECT_EQ(row.target, cat({bytes("\nA2"), {kUser}}));
  EXPECT_EQ(tok.decode(row.prompt, false).find("A2"), std::string::npos);
  EXPECT_NE(row.prompt.back(), kGmask);

  const EvalRow cut = eval_prompt_and_target(u1a1u2a2(), tok, 4, 2);
  EXPECT_EQ(cut.prompt, cat({{kGmask, kSop, kUser}, bytes("\n"), {kAssistant}}));
  EXPECT_EQ(cut.target, bytes("\nA"));

  // combine=true: that one row; combine=false: one row per assistant turn (the demo's).
  const auto one = glm4_eval_rows(u1a1u2a2(), tok, true, 0, 0);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].prompt, row.prompt);
  const auto rows = glm4_eval_rows(u1a1u2a2(), tok, false, 0, 0);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].prompt, cat({{kGmask, kSop, kUser}, bytes("\nU1"), {kAssistant}}));
  EXPECT_EQ(rows[0].target, cat({bytes("\nA1"), {kUser}}));
  EXPECT_EQ(rows[1].prompt, row.prompt);
  EXPECT_EQ(rows[1].target, row.target);
  // The walk stops once the context reaches max_input_length: [gMASK]<sop> + <|user|>\nU1 is
  // 6 tokens, so with 6 no row is made, with 7 the first one only.
  EXPECT_EQ(glm4_eval_rows(u1a1u2a2(), tok, false, 6, 0).size(), 0u);
  EXPECT_EQ(glm4_eval_rows(u1a1u2a2(), tok, false, 7, 0).size(), 1u);

  expect_error([&] { eval_prompt_and_target({msg("user", "q")}, tok, 0, 0); }, {"assistant"});
}

// ---- chatglm3 -----------------------------------------------------------------------------

TEST(Chatglm3Template, RendersIdsLabelsPromptAndStops) {
  const auto& tok = chatglm3_tokenizer();
  constexpr int64_t gmask = 64790, sop = 64792, sys = 64794, user = 64795, asst = 64796,
                    obs = 64797, eos = 2;
  auto tmpl = make_template("chatglm3");
  Message s = msg("system", "SYS");
  s.tools = nlohmann::ordered_json::parse(R"([{"name": "f", "description": "d"}])");
  const std::vector<Message> m = {s, msg("user", "Q"), msg("assistant", "A"),
                                  msg("observation", "R"), msg("assistant", "B")};
  const std::string sys_content = "SYS\n[\n    {\n        \"name\": \"f\",\n        \"description\": \"d\"\n    }\n]";
  const Sample r = tmpl->render(m, tok);
  EXPECT_EQ(r.input_ids, cat({{gmask, sop, sys}, bytes("\n"), bytes(sys_content),
                              {user}, bytes("\n"), bytes("Q"),
                              {asst}, bytes("\n"), bytes("A"),
                              {obs}, bytes("\n"), bytes("R"),
                              {asst}, bytes("\n"), bytes("B"), {eos}}));
  // finetune_hf.py: assistant messages marked whole, shifted by one: "\n" + content + the
  // token after the turn.
  EXPECT_EQ(r.labels, cat({ign(3 + 1 + sys_content.size() + 4), bytes("\nA"), {obs},
                           ign(2 + 1), bytes("\nB"), {eos}}));
  EXPECT_EQ(tmpl->prompt({msg("user", "Q")}, tok),
            cat({{gmask, sop, user}, bytes("\n"), bytes("Q"), {asst}}));
  EXPECT_EQ(tmpl->stop_ids(tok), (std::vector<int64_t>{eos, user, obs}));

  EncodeOptions o;
  o.max_input_length = 4;
  o.max_output_length = 2;
  EXPECT_EQ(tmpl->max_length(o), 7);
  Example ex;
  ex.where = "c.jsonl:1";
  ex.messages = m;
  EXPECT_EQ(encode_example(ex, *tmpl, tok, o).input_ids.size(), 7u);
  // Empty content still prints the role and "\n" (build_single_message).
  EXPECT_EQ(tmpl->prompt({msg("user", "")}, tok), cat({{gmask, sop, user}, bytes("\n"), {asst}}));
}

// ---- qwen ---------------------------------------------------------------------------------

TEST(QwenTemplate, ChatMLWithDefaultSystem) {
  const auto& tok = qwen2_tokenizer();
  constexpr int64_t start = 151644, end = 151645, eot = 151643;
  auto tmpl = make_template("qwen");
  const Sample r = tmpl->render({msg("user", "Q"), msg("assistant", "A")}, tok);
  EXPECT_EQ(r.input_ids, cat({{start}, bytes("system\nYou are a helpful assistant."), {end}, bytes("\n"),
                              {start}, bytes("user\nQ"), {end}, bytes("\n"),
                              {start}, bytes("assistant\nA"), {end}, bytes("\n")}));
  EXPECT_EQ(trained_text(r, tok), "A<|im_end|>");
  EXPECT_EQ(tok.decode(r.input_ids, false),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nQ"
            "<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n");

  const Sample own = tmpl->render({msg("system", "S"), msg("user", "Q"), msg("assistant", "A"),
                                   msg("observation", "R"), msg("assistant", "B")}, tok);
  EXPECT_EQ(tok.decode(own.input_ids, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
            "A<|im_end|>\n<|im_start|>user\n<tool_response>\nR\n</tool_response><|im_end|>\n"
            "<|im_start|>assistant\nB<|im_end|>\n");
  EXPECT_EQ(trained_text(own, tok), "A<|im_end|>B<|im_end|>");
  EXPECT_EQ(tmpl->prompt({msg("system", "S"), msg("user", "Q")}, tok),
            cat({{start}, bytes("system\nS"), {end}, bytes("\n"), {start}, bytes("user\nQ"), {end},
                 bytes("\n"), {start}, bytes("assistant\n")}));
  EXPECT_EQ(tmpl->stop_ids(tok), (std::vector<int64_t>{end, eot}));

  Message t = msg("system", "S");
  t.tools = nlohmann::ordered_json::array();
  expect_error([&] { tmpl->render({t, msg("user", "q"), msg("assistant", "a")}, tok); },
               {"qwen", "tool"});
}

// ---- bluelm -------------------------------------------------------------------------------

TEST(BluelmTemplate, HumanAiFormat) {
  // Markers as text (a tokenizer that does not list them as specials).
  const ByteTokenizer plain("bluelm", {{"<s>", 1}, {"</s>", 2}}, 100000, 1, 2);
  auto tmpl = make_template("bluelm");
  const std::vector<Message> m = {msg("user", "Q1"), msg("assistant", "A1"), msg("user", "Q2"),
                                  msg("assistant", "A2")};
  const Sample r = tmpl->render(m, plain);
  EXPECT_EQ(plain.decode(r.input_ids, false), "<s>[|Human|]:Q1[|AI|]:A1</s>[|Human|]:Q2[|AI|]:A2</s>");
  EXPECT_EQ(r.input_ids, cat({{1}, bytes("[|Human|]:"), bytes("Q1"), bytes("[|AI|]:"), bytes("A1"), {2},
                              bytes("[|Human|]:"), bytes("Q2"), bytes("[|AI|]:"), bytes("A2"), {2}}));
  EXPECT_EQ(trained_text(r, plain), "A1</s>A2</s>");
  EXPECT_EQ(plain.decode(tmpl->prompt({msg("system", "S"), msg("user", "Q")}, plain), false),
            "<s>[|SYSTEM|]:S[|Human|]:Q[|AI|]:");
  EXPECT_EQ(plain.decode(tmpl->render({msg("user", "Q"), msg("assistant", "call"),
                                       msg("observation", "R"), msg("assistant", "A")}, plain)
                             .input_ids, false),
            "<s>[|Human|]:Q[|AI|]:call</s>[|Function|]:R[|AI|]:A</s>");
  EXPECT_EQ(tmpl->stop_ids(plain), (std::vector<int64_t>{2}));

  // Markers as single tokens when the tokenizer has them.
  const ByteTokenizer marked("bluelm-m",
                             {{"<s>", 1}, {"</s>", 2}, {"[|Human|]:", 99990}, {"[|AI|]:", 99991}},
                             100000, 1, 2);
  const Sample k = tmpl->render({msg("user", "Q"), msg("assistant", "A")}, marked);
  EXPECT_EQ(k.input_ids, cat({{1, 99990}, bytes("Q"), {99991}, bytes("A"), {2}}));
  EXPECT_EQ(k.labels, cat({ign(4), bytes("A"), {2}}));
  EXPECT_EQ(tmpl->stop_ids(marked), (std::vector<int64_t>{2, 99990}));
}

// ---- registry -----------------------------------------------------------------------------

TEST(TemplateRegistry, NamesAndModelDefaults) {
  for (const char* n : {"llama3", "glm4", "chatglm3", "qwen", "bluelm"})
    EXPECT_EQ(make_template(n)->name(), n);
  expect_error([] { make_template("chatml"); }, {"chatml", "glm4", "chatglm3", "qwen", "bluelm"});
  EXPECT_EQ(template_for_model("chatglm", glm4_tokenizer()), "glm4");
  EXPECT_EQ(template_for_model("chatglm", chatglm3_tokenizer()), "chatglm3");
  EXPECT_EQ(template_for_model("glm", glm4_tokenizer()), "glm4");
  EXPECT_EQ(template_for_model("llama", qwen2_tokenizer()), "llama3");
  EXPECT_EQ(template_for_model("qwen2", qwen2_tokenizer()), "qwen");
  EXPECT_EQ(template_for_model("BlueLM", qwen2_tokenizer()), "bluelm");
  EXPECT_EQ(template_for_model("mistral", qwen2_tokenizer()), "mistral");
}

// ---- readers: GLM-4 messages and sharegpt -------------------------------------------------

TEST(GlmMessagesReader, ObservationMetadataAndToolErrors) {
  TempDir dir("glm_reader");
  const auto ok = dir.write("ok.jsonl",
      R"({"messages": [{"role": "user", "content": "q", "metadata": null}, {"role": "assistant", "content": "c", "metadata": "python"}, {"role": "observation", "content": "r"}, {"role": "assistant", "content": "a"}]})"
      "\n");
  const auto ds = read_dataset(ok);
  ASSERT_EQ(ds[0].messages.size(), 4u);
  EXPECT_EQ(ds[0].messages[1].metadata, "python");
  EXPECT_EQ(ds[0].messages[0].metadata, "");
  EXPECT_EQ(ds[0].messages[2].role, "observation");

  struct Bad {
    std::string text, where;
    std::vector<std::string> needles;
  };
  const std::vector<Bad> cases = {
      {R"({"messages": [{"role": "user", "content": "q", "tools": [{"type": "function"}]}]})", ":1",
       {"'messages[0].tools'", "system"}},
      {"\n" R"({"messages": [{"role": "system", "content": "", "tools": {"name": "f"}}]})", ":2",
       {"'messages[0].tools'", "array"}},
      {R"({"messages": [{"role": "system", "content": "", "tools": ["f"]}]})", ":1",
       {"'messages[0].tools[0]'", "object"}},
      {R"({"messages": [{"role": "user", "content": "q", "metadata": 3}]})", ":1",
       {"'messages[0].metadata'", "string"}},
      {R"({"messages": [{"role": "tool", "content": "q"}]})", ":1",
       {"'messages[0].role'", "observation", "'tool'"}},
  };
  int i = 0;
  for (const auto& c : cases) {
    const auto path = dir.write("bad" + std::to_string(i++) + ".jsonl", c.text);
    auto needles = c.needles;
    needles.push_back(path + c.where + ": ");
    expect_error([&] { read_dataset(path); }, needles);
  }
}

TEST(SharegptReader, ConvertsTurnsSystemAndTools) {
  TempDir dir("sharegpt");
  const auto path = dir.write("sg.json", R"([
  {"conversations": [{"from": "human", "value": "Weather in Paris?"},
                     {"from": "function_call", "value": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"},
                     {"from": "observation", "value": "{\"t\": 20}"},
                     {"from": "gpt", "value": "20 degrees."}],
   "system": "You are a weather bot.",
   "tools": "[{\"name\": \"get_weather\", \"description\": \"d\", \"parameters\": {\"type\": \"object\"}}]"},
  {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
   "system": "ignored: the system turn wins", "tools": ""},
  {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "tools": null}
])");
  const auto ds = read_dataset(path);
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds[0].where, path + "[0]");
  const auto& m = ds[0].messages;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].role, "system");
  EXPECT_EQ(m[0].content, "You are a weather bot.");
  ASSERT_TRUE(m[0].has_tools());
  EXPECT_EQ(m[0].tools.dump(), R"([{"name":"get_weather","description":"d","parameters":{"type":"object"}}])");
  EXPECT_EQ(m[1].role, "user");
  EXPECT_EQ(m[2].role, "assistant");
  EXPECT_EQ(m[2].content, R"({"name": "get_weather", "arguments": {"city": "Paris"}})");
  EXPECT_EQ(m[3].role, "observation");
  EXPECT_EQ(m[4].role, "assistant");
  EXPECT_EQ(m[4].content, "20 degrees.");

  ASSERT_EQ(ds[1].messages.size(), 3u);
  EXPECT_EQ(ds[1].messages[0].content, "Be brief.");
  EXPECT_FALSE(ds[1].messages[0].has_tools());
  ASSERT_EQ(ds[2].messages.size(), 2u);  // no system message invented
  EXPECT_EQ(ds[2].messages[0].role, "user");

  // Renders through glm4 with the bare tool shown as a function.
  const auto ids = glm4_render_ids(m, glm4_tokenizer());
  EXPECT_NE(glm4_tokenizer().decode(ids, false).find("\n## get_weather\n\n{\n    \"name\": \"get_weather\""),
            std::string::npos);
}

TEST(SharegptReader, PositionAndFieldErrors) {
  TempDir dir("sharegpt_err");
  struct Bad {
    std::string text;
    std::vector<std::string> needles;
  };
  const std::string ok_turns = R"([{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}])";
  const std::vector<Bad> cases = {
      {R"({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]})",
       {"'conversations[0].from'", "'gpt'", "position 1", "even"}},
      {R"({"conversations": [{"from": "human", "value": "q"}, {"from": "observation", "value": "r"}]})",
       {"'conversations[1].from'", "'observation'", "position 2", "odd"}},
      {R"({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "human", "value": "q"}]})",
       {"'conversations[2].from'", "position 2", "system turn"}},
      {R"({"conversations": [{"from": "human", "value": "q"}, {"from": "system", "value": "s"}]})",
       {"'conversations[1].from'", "system turn may only come first"}},
      {R"({"conversations": [{"from": "user", "value": "q"}]})",
       {"'conversations[0].from'", "human, gpt, function_call, observation", "'user'"}},
      {R"({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "human", "value": "q2"}]})",
       {"'conversations'", "end with a gpt or function_call"}},
      {R"({"conversations": [{"from": "human", "value": 1}]})", {"'conversations[0].value'", "string"}},
      {R"({"conversations": [{"value": "q"}]})", {"'conversations[0].from'", "missing"}},
      {R"({"conversations": []})", {"'conversations'", "empty"}},
      {R"({"conversations": [{"from": "system", "value": "s"}]})", {"'conversations'", "no turn"}},
      {R"({"conversations": )" + ok_turns + R"(, "tools": "[{\"name\": ")"+ "}", {"'tools'", "not valid JSON"}},
      {R"({"conversations": )" + ok_turns + R"(, "tools": "{\"name\": \"f\"}"})", {"'tools'", "array"}},
      {R"({"conversations": )" + ok_turns + R"(, "system": 5})", {"'system'", "string"}},
  };
  int i = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const auto path = dir.write("bad" + std::to_string(i++) + ".jsonl", "\n" + c.text + "\n");
    auto needles = c.needles;
    needles.push_back(path + ":2: ");
    expect_error([&] { read_dataset(path); }, needles);
  }
}

}  // namespace
}  // namespace ftrun::data
