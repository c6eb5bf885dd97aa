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
      {"glm4", "transformer.embedding.word_embeddings.weight"},
      {"glm", "model.embed_tokens.weight"},
      {"glm4-0414", "model.embed_tokens.weight"},
      {"bluelm", "model.embed_tokens.weight"}};
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
            "/m/config.json: model_type 'bert' is not supported yet (supported: llama, qwen2, mistral, chatglm, glm, "
            "glm4, BlueLM)");
  // Keys are still read first: a bad key is named before the unknown type.
  j.erase("hidden_size");
  EXPECT_EQ(error_of([&] { parse_model_config(j, "/m/config.json"); }),
            "/m/config.json: missing required key 'hidden_size'");
  // model_type is matched exactly: BlueLM's config.json spells it "BlueLM".
  j = tiny_config(tiny_spec("llama"));
  j["model_type"] = "bluelm";
  EXPECT_NE(error_of([&] { parse_model_config(j, "/m/config.json"); }).find("model_type 'bluelm' is not supported yet"),
            std::string::npos);
  ModelConfig c = parse_model_config(tiny_config(tiny_spec("llama")), "/m/config.json");
  c.model_type = "bert";
  EXPECT_EQ(error_of([&] { build_model(c); }), "/m/config.json: model_type 'bert' is not supported");
  EXPECT_EQ(buildable_family("bert"), nullptr);
  EXPECT_EQ(supported_model_types(), "llama, qwen2, mistral, chatglm, glm, glm4, BlueLM");
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
  EXPECT_EQ(tiny_family_names(),
            (std::vector<std::string>{"llama", "qwen2", "chatglm3", "glm4", "glm", "glm4-0414", "bluelm"}));
  EXPECT_EQ(tiny_config(tiny_spec("glm"))["model_type"], "glm");
  EXPECT_EQ(tiny_config(tiny_spec("glm4-0414"))["model_type"], "glm4");
  EXPECT_EQ(tiny_config(tiny_spec("glm4-0414"))["architectures"][0], "Glm4ForCausalLM");
  const Family* g4 = find_family("glm4");
  EXPECT_EQ(g4->tiny.extra_eos, (std::vector<std::string>{"<|user|>", "<|observation|>"}));
  auto j = tiny_config(tiny_spec("glm4"));
  EXPECT_EQ(j["_name_or_path"], "THUDM/glm-4-9b-chat");
  EXPECT_EQ(tiny_config(tiny_spec("qwen2"))["architectures"][0], "Qwen2ForCausalLM");
  EXPECT_EQ(tiny_config(tiny_spec("mistral"))["architectures"][0], "LlamaForCausalLM");
}

// transformers' GLM ports (GlmConfig / Glm4Config) and MistralConfig's window, as read.
TEST(Family, GlmAndMistralConfigKeys) {
  auto glm = parse_model_config(tiny_config(tiny_spec("glm")), "tiny/config.json");
  EXPECT_EQ(glm.rotary_dim, glm.head_dim / 2);  // partial_rotary_factor 0.5
  EXPECT_TRUE(glm.rope_interleaved && glm.fused_gate_up && glm.qkv_bias);
  EXPECT_FALSE(glm.attention_bias || glm.sandwich_norms);  // o_proj has no bias in GlmAttention
  auto glm4 = parse_model_config(tiny_config(tiny_spec("glm4-0414")), "tiny/config.json");
  EXPECT_TRUE(glm4.sandwich_norms);
  auto params = build_model(glm4)->named_parameters();
  EXPECT_TRUE(params.contains("model.layers.1.post_self_attn_layernorm.weight"));
  EXPECT_TRUE(params.contains("model.layers.1.mlp.gate_up_proj.weight"));
  EXPECT_FALSE(params.contains("model.layers.1.mlp.gate_proj.weight"));
  EXPECT_FALSE(params.contains("model.layers.1.self_attn.o_proj.bias"));
  EXPECT_EQ(params["model.layers.1.mlp.gate_up_proj.weight"].size(0), 2 * glm4.intermediate_size);

  auto j = tiny_config(tiny_spec("glm"));
  j["head_dim"] = 16;
  j["partial_rotary_factor"] = 0.3;  // 16 x 0.3 = 4.8 -> 4: even, accepted as transformers' int()
  EXPECT_EQ(parse_model_config(j, "c.json").rotary_dim, 4);
  j["partial_rotary_factor"] = 0.1;  // 1.6 -> 1: no rotary pair
  EXPECT_NE(error_of([&] { parse_model_config(j, "c.json"); }).find("'partial_rotary_factor' must be in (0, 1]"),
            std::string::npos);
  j = tiny_config(tiny_spec("glm"));
  j["mlp_bias"] = true;
  EXPECT_NE(error_of([&] { parse_model_config(j, "c.json"); }).find("'mlp_bias' is not a GlmConfig key"),
            std::string::npos);

  auto q = tiny_config(tiny_spec("qwen2"));
  q["use_sliding_window"] = true;
  EXPECT_NE(error_of([&] { parse_model_config(q, "c.json"); }).find("c.json: 'use_sliding_window': true is not supported"),
            std::string::npos);
  q["use_sliding_window"] = false;
  EXPECT_EQ(parse_model_config(q, "c.json").sliding_window, 0);

  auto m = tiny_config(tiny_spec("mistral"));
  m["model_type"] = "mistral";
  EXPECT_EQ(parse_model_config(m, "c.json").sliding_window, 4096);  // MistralConfig's default
  m["sliding_window"] = nullptr;
  EXPECT_EQ(parse_model_config(m, "c.json").sliding_window, 0);
  m["sliding_window"] = 0;
  EXPECT_EQ(error_of([&] { parse_model_config(m, "c.json"); }),
            "c.json: 'sliding_window' must be a positive number of tokens or null, got 0");
}
