// The model-family registry (models/family.h): every family resolves from its config.json's
// model_type and builds, the default templates are what data::template_for_model always gave,
// and an unknown model_type fails with the errors it always had.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <map>
#include <set>
#include <string>

#include "models/family.h"
#include "models/model.h"
#include "models/tiny.h"
#include "testing/errors.h"

using namespace ftrun::models;

namespace {

TinySpec tiny_spec(const std::string& family) {
  TinySpec s;
  s.model_type = family;
  s.vocab_size = 40;
  s.hidden_size = 32;
  s.intermediate_size = 48;
  s.num_attention_heads = 4;
  s.num_key_value_heads = 2;
  return s;
}

using ftrun::testing::error_of;

}  // namespace

TEST(Family, NamesAreUniqueAndFindable) {
  std::set<std::string> names;
  for (const Family* f : families()) {
    EXPECT_TRUE(names.insert(f->name).second) << f->name;
    EXPECT_EQ(find_family(f->name), f);
  }
  for (const char* n : {"llama", "qwen2", "mistral", "chatglm3", "glm4"}) EXPECT_NE(find_family(n), nullptr) << n;
  EXPECT_EQ(find_family("bert"), nullptr);
}

TEST(Family, EachFamilyResolvesFromItsConfigAndBuilds) {
  const std::map<std::string, std::string> first_param = {
      {"llama", "model.embed_tokens.weight"},
      {"qwen2", "model.embed_tokens.weight"},
      {"mistral", "model.embed_tokens.weight"},
      {"chatglm3", "transformer.embedding.word_embeddings.weight"},
      {"glm4", "transformer.embedding.word_embeddings.weight"}};
  for (const Family* f : families()) {
    if (!f->build) continue;
    SCOPED_TRACE(f->name);
    ASSERT_NE(f->tiny.config, nullptr);
    auto j = tiny_config(tiny_spec(f->name));
    EXPECT_EQ(j["model_type"], f->model_type);
    auto cfg = parse_model_config(j, "tiny/config.json");
    const Family& resolved = family_for(cfg);
    EXPECT_EQ(resolved.model_type, f->model_type);
    EXPECT_EQ(resolved.build, f->build);
    EXPECT_EQ(buildable_family(f->model_type), &resolved);
    auto model = build_model(cfg);
    ASSERT_NE(model, nullptr);
    EXPECT_EQ(model->config().model_type, f->model_type);
    ASSERT_FALSE(model->base_parameter_names().empty());
    EXPECT_EQ(model->base_parameter_names().front(), first_param.at(f->name));
    auto logits = model->forward(torch::tensor({{1, 2, 3}}, torch::kLong), {});
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{1, 3, 40}));
  }
}

TEST(Family, Qwen2ReadsBiasOnQkvOnly) {
  auto qwen = parse_model_config(tiny_config(tiny_spec("qwen2")), "tiny/config.json");
  auto llama = parse_model_config(tiny_config(tiny_spec("llama")), "tiny/config.json");
  EXPECT_TRUE(qwen.qkv_bias);
  EXPECT_FALSE(llama.qkv_bias);
  auto params = build_model(qwen)->named_parameters();
  EXPECT_TRUE(params.contains("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_FALSE(params.contains("model.layers.0.self_attn.o_proj.bias"));
}

TEST(Family, ChatGLMEntriesShareModelTypeAndClass) {
  const Family* c3 = find_family("chatglm3");
  const Family* g4 = find_family("glm4");
  EXPECT_EQ(c3->model_type, "chatglm");
  EXPECT_EQ(g4->model_type, "chatglm");
  EXPECT_EQ(c3->build, g4->build);
  EXPECT_EQ(c3->read_config, g4->read_config);
  EXPECT_TRUE(c3->unused_tensor("transformer.rotary_pos_emb.inv_freq"));
  EXPECT_FALSE(find_family("llama")->unused_tensor("transformer.rotary_pos_emb.inv_freq"));
  EXPECT_TRUE(find_family("llama")->unused_tensor("model.layers.0.self_attn.rotary_emb.inv_freq"));
}

TEST(Family, UnknownModelTypeErrorsAsBefore) {
  auto j = tiny_config(tiny_spec("llama"));
  j["model_type"] = "bert";
  EXPECT_EQ(error_of([&] { parse_model_config(j, "/m/config.json"); }),
            "/m/config.json: model_type 'bert' is not supported yet (supported: llama, qwen2, mistral, chatglm)");
  // Keys are still read first: a bad key is named before the unknown type.
  j.erase("hidden_size");
  EXPECT_EQ(error_of([&] { parse_model_config(j, "/m/config.json"); }),
            "/m/config.json: missing required key 'hidden_size'");
  // A template-only family (BlueLM) is not buildable either.
  j = tiny_config(tiny_spec("llama"));
  j["model_type"] = "bluelm";
  EXPECT_NE(error_of([&] { parse_model_config(j, "/m/config.json"); }).find("model_type 'bluelm' is not supported yet"),
            std::string::npos);
  ModelConfig c = parse_model_config(tiny_config(tiny_spec("llama")), "/m/config.json");
  c.model_type = "bert";
  EXPECT_EQ(error_of([&] { build_model(c); }), "/m/config.json: model_type 'bert' is not supported");
  EXPECT_EQ(buildable_family("bert"), nullptr);
  EXPECT_EQ(supported_model_types(), "llama, qwen2, mistral, chatglm");
}

TEST(Family, DefaultTemplates) {
  auto glm4_tok = [](const std::string& t) { return t == "<sop>"; };
  auto other_tok = [](const std::string&) { return false; };
  EXPECT_EQ(default_template("chatglm", glm4_tok), "glm4");
  EXPECT_EQ(default_template("chatglm", other_tok), "chatglm3");
  EXPECT_EQ(default_template("glm", glm4_tok), "glm4");
  EXPECT_EQ(default_template("glm", other_tok), "glm4");
  EXPECT_EQ(default_template("GLM4", other_tok), "glm4");
  EXPECT_EQ(default_template("llama", other_tok), "llama3");
  EXPECT_EQ(default_template("qwen2", other_tok), "qwen");
  EXPECT_EQ(default_template("BlueLM", other_tok), "bluelm");
  EXPECT_EQ(default_template("mistral", other_tok), "");
  EXPECT_EQ(default_template("bert", other_tok), "");
}

TEST(Family, TinyFamiliesAreTheMakeTinyModelList) {
  EXPECT_EQ(tiny_family_names(), (std::vector<std::string>{"llama", "qwen2", "chatglm3", "glm4"}));
  const Family* g4 = find_family("glm4");
  EXPECT_EQ(g4->tiny.extra_eos, (std::vector<std::string>{"<|user|>", "<|observation|>"}));
  auto j = tiny_config(tiny_spec("glm4"));
  EXPECT_EQ(j["_name_or_path"], "THUDM/glm-4-9b-chat");
  EXPECT_EQ(tiny_config(tiny_spec("qwen2"))["architectures"][0], "Qwen2ForCausalLM");
  EXPECT_EQ(tiny_config(tiny_spec("mistral"))["architectures"][0], "LlamaForCausalLM");
}
