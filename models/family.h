// The model-family registry: everything ftrun knows about one family of HF checkpoints, in one
// entry (torchtitan's ModelSpec idea). An entry says
//   - how its config.json is read (read_config) and which model class it builds (build);
//   - its default chat template (chat_template, tokenizer_marker);
//   - its HF weight names: those of the class `build` makes (named_parameters() are the
//     checkpoint names, models/model.h), plus the checkpoint tensors that class has no
//     parameter for and loading skips (unused_tensor);
//   - how `ftrun make-tiny-model` makes a tiny one (tiny: config.json and tokenizer recipe).
// The rest of ftrun asks the registry (family_for, find_family, default_template) and never
// compares model_type strings itself.
//
// Adding a family: write models/families/NAME.cpp defining its entry, list it in kFamilies
// (models/family.cpp) and in models/CMakeLists.txt. Nothing in the trainer, launcher or
// evaluator changes.
//
// Light header (no torch): data/ includes it for the default chat template.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/tiny.h"

namespace ftrun::models {

class CausalLM;

// How make-tiny-model makes a tiny model of the family.
struct TinyRecipe {
  // The config.json transformers would write for a tiny model of TinySpec's sizes.
  nlohmann::json (*config)(const TinySpec& spec) = nullptr;
  // The family's special tokens (formats.md 4.3), appended after the sentencepiece pieces, and
  // which of them are bos / eos / pad, so the family's chat template works unchanged. An empty
  // list: make-tiny-model does not offer the family.
  std::vector<std::string> specials;
  std::string bos, eos, pad;  // bos "": the family has none
  std::string first;          // the token pre-training samples start with
  std::vector<std::string> extra_eos;  // further stop ids listed after eos in config.json
};

struct Family {
  std::string name;  // "llama", "qwen2", "mistral", "chatglm3", "glm4" (TinySpec::model_type)
  // config.json's model_type the entry answers to. ChatGLM3 and GLM-4 both say "chatglm" and
  // read and build the same way; only their tokenizers tell them apart (tokenizer_marker).
  std::string model_type;
  // Further config.json model_types of the family that ftrun cannot build (transformers'
  // native GLM-4 ports say "glm" / "glm4"): they still get the family's chat template.
  std::vector<std::string> template_only_model_types;

  // Reads config.json's keys after model_type and architectures; errors name `path` and the key.
  void (*read_config)(const nlohmann::json& j, const std::string& path, ModelConfig& c) = nullptr;
  // The model with uninitialised weights (build_model() initialises them); null: ftrun has no
  // model class for the family, only its chat template.
  std::shared_ptr<CausalLM> (*build)(const ModelConfig& config) = nullptr;
  // A checkpoint tensor the model class has no parameter for and that loading skips (rotary
  // buffers older exports carry); null: none.
  bool (*unused_tensor)(const std::string& name) = nullptr;

  // Default chat template (data::make_template's name); "": none, data::template_for_model
  // then returns the model_type itself so that make_template names it in its error.
  std::string chat_template;
  // When several entries share a model_type: the special token whose presence in the
  // tokenizer picks this entry ("" marks the entry taken when no marker is present).
  std::string tokenizer_marker;

  TinyRecipe tiny;
};

// Every entry, in registration order.
const std::vector<const Family*>& families();

// The entry named `name` (Family::name), or null.
const Family* find_family(const std::string& name);

// The first entry that builds config.json's model_type (exact match), or null.
const Family* buildable_family(const std::string& model_type);

// The entry that builds config.model_type; throws "<config.path>: model_type '<t>' is not
// supported" when there is none.
const Family& family_for(const ModelConfig& config);

// "llama, qwen2, mistral, chatglm": the model_types ftrun builds, for error messages.
std::string supported_model_types();

// Names of the entries make-tiny-model offers, in registration order.
std::vector<std::string> tiny_family_names();

// The default chat template of config.json's model_type (compared case-insensitively) given
// the tokenizer's special tokens; "" when no entry knows one.
using HasToken = std::function<bool(const std::string& token)>;
std::string default_template(const std::string& model_type, const HasToken& has_token);

}  // namespace ftrun::models
