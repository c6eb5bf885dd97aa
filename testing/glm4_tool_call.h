// testing/glm4_tool_call.h: the GLM-4 demo's tool-call conversation (glm4-demo.md 3.3) and the
// texts the glm4 template renders from it, shared by the template test (tests/data) and the
// `ftrun data` test (tests/runtime) so both check the same sample.
#pragma once

namespace ftrun::testing::glm4_tool_call {

// The demo's data layout: tools on an empty system message, the call as a JSON string in the
// assistant content, the result as an observation. Keys deliberately not in sorted order.
inline constexpr const char* kToolRecord =
    R"({"messages": [)"
    R"({"role": "system", "content": "", "tools": [{"type": "function", "function": {"name": "get_weather", "description": "查询城市天气", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "城市名"}}, "required": ["city"]}}}]}, )"
    R"({"role": "user", "content": "北京天气怎么样？", "tools": null}, )"
    R"({"role": "assistant", "content": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}"}, )"
    R"({"role": "observation", "content": "{\"temperature\": 25, \"weather\": \"晴\"}"}, )"
    R"({"role": "assistant", "content": "北京今天晴，25度。"}]})";

// The text after <|system|>: "\n" + S + "\n\n# 可用工具", then per function tool "\n## NAME\n\n"
// + json.dumps(function, indent=4, ensure_ascii=False) + the fixed sentence (one "\n" before
// "##": jinja's trim_blocks ate the other).
inline constexpr const char* kToolsText =
    "\n你是一个名为 GLM-4 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具"
    "\n## get_weather\n\n"
    "{\n"
    "    \"name\": \"get_weather\",\n"
    "    \"description\": \"查询城市天气\",\n"
    "    \"parameters\": {\n"
    "        \"type\": \"object\",\n"
    "        \"properties\": {\n"
    "            \"city\": {\n"
    "                \"type\": \"string\",\n"
    "                \"description\": \"城市名\"\n"
    "            }\n"
    "        },\n"
    "        \"required\": [\n"
    "            \"city\"\n"
    "        ]\n"
    "    }\n"
    "}"
    "\n在调用上述函数时，请使用 Json 格式表示调用的参数。";

inline constexpr const char* kCall = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}";
inline constexpr const char* kResult = "{\"temperature\": 25, \"weather\": \"晴\"}";
inline constexpr const char* kAnswer = "北京今天晴，25度。";

}  // namespace ftrun::testing::glm4_tool_call
