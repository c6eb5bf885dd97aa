// Internal to models/: the pieces several family entries share (a config key set, a model
// class's tiny config.json), and the entry of each family for the registry's list.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "models/config.h"
#include "models/family.h"
#include "models/tiny.h"

namespace ftrun::models {

// config.json readers (models/config.cpp): transformers' LlamaConfig key set (Llama, Qwen2,
// Mistral) and THUDM's ChatGLMConfig (ChatGLM2/3, GLM-4).
void read_llama_config(const nlohmann::json& j, const std::string& path, ModelConfig& c);
void read_chatglm_config(const nlohmann::json& j, const std::string& path, ModelConfig& c);
// MistralConfig (LlamaConfig's keys and sliding_window) and transformers' native GLM-4 ports:
// GlmConfig (glm-4-9b-chat-hf, glm4 false) and Glm4Config (GLM-4-0414, glm4 true).
void read_mistral_config(const nlohmann::json& j, const std::string& path, ModelConfig& c);
void read_glm_config(const nlohmann::json& j, const std::string& path, ModelConfig& c, bool glm4);

// Tiny config.json files (models/tiny.cpp): LlamaConfig's key set with model_type
// spec.model_type and the given architecture, and THUDM's chatglm3-6b (glm4 false) or
// glm-4-9b-chat (glm4 true) key set.
nlohmann::json tiny_llama_config(const TinySpec& spec, const std::string& architecture);
nlohmann::json tiny_chatglm_config(const TinySpec& spec, bool glm4);

// Checkpoint tensors the Llama model class (families/llama.cpp) and the ChatGLM model class
// (families/chatglm3.cpp) skip; every entry building that class uses the same one.
bool llama_unused_tensor(const std::string& name);
bool chatglm_unused_tensor(const std::string& name);

// One per models/families/*.cpp.
const Family& llama_family();
const Family& qwen2_family();
const Family& mistral_family();
const Family& chatglm3_family();
const Family& glm4_family();
const Family& glm_family();
const Family& glm4_0414_family();
const Family& bluelm_family();

}  // namespace ftrun::models
