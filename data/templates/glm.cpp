// The GLM family's chat templates, glm4 and chatglm3, and the GLM-4 demo's sample and eval rows
// (see glm.h for the rules and the demo bugs that are fixed).
//
// Text between two special tokens is encoded as one piece, as HF does when it tokenises a
// rendered template (specials are split out first, then each text run is encoded): for GLM-4
// that makes per-message and whole-conversation tokenisation agree, which the demo's
// combine=false path relies on. ChatGLM3 is the exception: its tokenizer encodes
// "{metadata}\n" and the content separately, and so does this file.
#include "data/templates/glm.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/templates/builtin.h"

namespace ftrun::data {
namespace {

using templates::append;
using templates::Ids;
using templates::kIgnore;

// Builds a sample while remembering which positions are "marked" (the demos' loss_mask),
// before any shift.
struct Marked {
  Ids ids;
  std::vector<bool> mask;
  void add(const Ids& more, bool marked) {
    ids.insert(ids.end(), more.begin(), more.end());
    mask.insert(mask.end(), more.size(), marked);
  }
};

// THUDM's demos: append the end token, shift the mask right by one (`[False, *mask]`), so the
// label at position i exists iff position i-1 was marked; then one right cut.
Sample shifted_sample(Marked m, int64_t end_token, int64_t max_length) {
  m.ids.push_back(end_token);
  m.mask.insert(m.mask.begin(), false);
  Sample s;
  s.input_ids = std::move(m.ids);
  s.labels.resize(s.input_ids.size());
  for (size_t i = 0; i < s.input_ids.size(); ++i)
    s.labels[i] = m.mask[i] ? s.input_ids[i] : kIgnore;
  if (max_length > 0 && static_cast<int64_t>(s.input_ids.size()) > max_length) {
    s.input_ids.resize(max_length);
    s.labels.resize(max_length);
  }
  return s;
}

int64_t demo_max_length(int64_t max_in, int64_t max_out) {
  return max_in + max_out > 0 ? max_in + max_out + 1 : 0;
}

std::string tools_json(const nlohmann::ordered_json& v) {
  // Python's json.dumps(v, ensure_ascii=False, indent=4) (transformers' `tojson` filter, and
  // ChatGLM3's tokenizer): 4-space indent, ", " / ": " separators, key order as written,
  // non-ASCII kept as UTF-8. nlohmann's dump(4) writes the same layout.
  return v.dump(4, ' ', false);
}

// ---------------------------------------------------------------------------------------
// GLM-4

// The fixed texts of glm-4-9b-chat's chat_template (tokenizer_config.json), after jinja's
// trim_blocks has removed the newline that follows each `{% if %}`/`{% elif %}` tag (so each
// tool section starts with one "\n", not two). An older snapshot names the assistant
// "ChatGLM" instead of "GLM-4" in kGlm4System; which snapshot has which is unconfirmed.
const char* const kGlm4System =
    "你是一个名为 GLM-4 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 "
    "模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。";
const char* const kGlm4ToolsHeader = "\n\n# 可用工具";
const char* const kGlm4FunctionTail = "\n在调用上述函数时，请使用 Json 格式表示调用的参数。";
const char* const kGlm4Python =
    "\n## python\n\n当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 "
    "Jupyter notebook 环境中执行。\n`python` 返回代码执行的输出，或在执行 60 "
    "秒后返回超时。\n`/mnt/data` 将会持久化存储你的文件。在此会话中，`python` "
    "无法访问互联网。不要使用 `python` 进行任何网络请求或者在线 API "
    "调用，这些在线内容的访问将不会成功。";
const char* const kGlm4Browser =
    "\n## simple_browser\n\n你可以使用 `simple_browser` 工具。该工具支持以下函数：\n"
    "`search(query: str, recency_days: int)`：使用搜索引擎进行查询并显示结果，可以使用 "
    "`recency_days` 参数控制搜索内容的时效性。\n`mclick(ids: list[int])`：获取一系列指定 id "
    "的页面内容。每次调用时，须选择3-10个页面。选择多个角度的页面，同时尽可能选择可信任的信息来源。"
    "考虑到部分页面是无法加载的，你也可以多打开一些可能有用的页面而不用担心内容过多。\n"
    "`open_url(url: str)`：打开指定的 URL。\n\n使用 `【{引用 id}†{引用文本}】` 来引用内容。\n\n"
    "操作步骤：1. 使用 `search` 来获得信息列表; 2. 使用 `mclick` 来获取指定 ID 页面的内容; 3. "
    "根据获得的内容进行回复。在回复中应当引用信息来源。\n 如果用户提供了 URL，也可以用 `open_url` "
    "直接打开页面。\n如果初次搜索结果没有找到合适的信息，也可以再次使用 `search` 进行搜索。";
const char* const kGlm4Cogview =
    "\n## cogview\n\n如果用户的请求中包含了对图像的描述，你可以使用 `cogview` "
    "来生成图像并展示给用户。你需要向 `cogview` 发送图像描述，规则：\n- 发送给 `cogview` "
    "的消息必须使用英语。用户的中文描述必须完全翻译为英语。\n- "
    "应当尽可能详细地描述图像生成的需求，需求描述约 100 英文单词。\n- "
    "保持用户原始描述的意图。不要虚构内容或者没见过的人物。\n- "
    "如无特殊说明，所在地为中国，持有中国立场并遵循中国社会主义价值观。";

std::string glm4_function_section(const nlohmann::ordered_json& fn, size_t index) {
  const std::string where = "tools[" + std::to_string(index) + "]";
  if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string())
    throw std::runtime_error(where + ": a function tool needs an object with a string 'name'");
  return "\n## " + fn["name"].get<std::string>() + "\n\n" + tools_json(fn) + kGlm4FunctionTail;
}

// "\n" + S + "\n\n# 可用工具" + one section per tool: the text after <|system|>.
std::string glm4_tools_text(const nlohmann::ordered_json& tools) {
  if (!tools.is_array()) throw std::runtime_error("'tools' must be an array");
  std::string text = std::string("\n") + kGlm4System + kGlm4ToolsHeader;
  for (size_t i = 0; i < tools.size(); ++i) {
    const auto& tool = tools[i];
    if (!tool.is_object())
      throw std::runtime_error("tools[" + std::to_string(i) + "] must be an object");
    const auto type = tool.find("type");
    if (type == tool.end()) {
      // LLaMA-Factory/sharegpt tools are bare {"name", "description", "parameters"}: ftrun
      // renders them as the function they describe. (The HF template would print nothing.)
      text += glm4_function_section(tool, i);
      continue;
    }
    const std::string t = type->is_string() ? type->get<std::string>() : "";
    if (t == "function") {
      if (!tool.contains("function"))
        throw std::runtime_error("tools[" + std::to_string(i) +
                                 "]: type 'function' needs a 'function' object");
      text += glm4_function_section(tool["function"], i);
    } else if (t == "python") {
      text += kGlm4Python;
    } else if (t == "simple_browser") {
      text += kGlm4Browser;
    } else if (t == "cogview") {
      text += kGlm4Cogview;
    } else {
      // The HF template silently prints nothing for other types; a tool the model never sees
      // described is a data error, so say so.
      throw std::runtime_error("tools[" + std::to_string(i) + "]: type '" +
                               (type->is_string() ? t : type->dump()) +
                               "' is not one GLM-4's template renders (function, python, "
                               "simple_browser, cogview)");
    }
  }
  return text;
}

struct Glm4Specials {
  int64_t gmask, sop, system, user, assistant, observation;
  explicit Glm4Specials(const Tokenizer& tok)
      : gmask(tok.special_id("[gMASK]")),
        sop(tok.special_id("<sop>")),
        system(tok.special_id("<|system|>")),
        user(tok.special_id("<|user|>")),
        assistant(tok.special_id("<|assistant|>")),
        observation(tok.special_id("<|observation|>")) {}
  int64_t role(const std::string& r) const {
    if (r == "system") return system;
    if (r == "user") return user;
    if (r == "assistant") return assistant;
    if (r == "observation") return observation;
    throw std::runtime_error("GLM-4 has no role '" + r +
                             "' (system, user, assistant, observation)");
  }
};

// One message as the template renders it, without the [gMASK]<sop> prefix: the tools block
// when the message carries tools, then <|role|> metadata "\n" content when content is not
// empty (an empty content prints nothing, not even the role token).
Ids glm4_message(const Message& m, const Tokenizer& tok, const Glm4Specials& sp) {
  Ids ids;
  if (m.has_tools()) {
    ids.push_back(sp.system);
    append(ids, tok.encode(glm4_tools_text(m.tools)));
  }
  if (!m.content.empty()) {
    ids.push_back(sp.role(m.role));
    append(ids, tok.encode(m.metadata + "\n" + m.content));
  }
  return ids;
}

class Glm4Template : public ChatTemplate {
 public:
  std::string name() const override { return "glm4"; }

  // Without options: the demo's combine=false sample (every assistant turn trained), uncut.
  Sample render(const std::vector<Message>& messages, const Tokenizer& tok) const override {
    return glm4_demo_sample(messages, tok, false, 0, 0);
  }
  Sample render_for_training(const std::vector<Message>& messages, const Tokenizer& tok,
                             const EncodeOptions& o) const override {
    return glm4_demo_sample(messages, tok, o.combine, o.max_input_length, o.max_output_length);
  }
  int64_t max_length(const EncodeOptions& o) const override {
    return demo_max_length(o.max_input_length, o.max_output_length);
  }
  // add_generation_prompt: a bare <|assistant|>; the model writes the "\n" itself.
  std::vector<int64_t> prompt(const std::vector<Message>& messages,
                              const Tokenizer& tok) const override {
    Ids ids = glm4_render_ids(messages, tok);
    ids.push_back(tok.special_id("<|assistant|>"));
    return ids;
  }
  // config.json's eos_token_id [151329, 151336, 151338].
  std::vector<int64_t> stop_ids(const Tokenizer& tok) const override {
    return {tok.special_id("<|endoftext|>"), tok.special_id("<|user|>"),
            tok.special_id("<|observation|>")};
  }
  // Evaluation rows are the demo's (glm4_eval_rows), B2 fixed.
  bool uses_demo_eval_rows() const override { return true; }
};

// ---------------------------------------------------------------------------------------
// ChatGLM3 (formats.md 5.3; THUDM/ChatGLM3 tokenization_chatglm.py build_single_message and
// finetune_demo/finetune_hf.py)

struct Chatglm3Specials {
  int64_t gmask, sop, eos;
  explicit Chatglm3Specials(const Tokenizer& tok)
      : gmask(tok.special_id("[gMASK]")), sop(tok.special_id("sop")), eos(tok.eos_id()) {
    if (eos < 0)
      throw std::runtime_error("the chatglm3 template needs the tokenizer's eos_token (</s>, id 2 "
                               "in chatglm3-6b); tokenizer_config.json names none");
  }
};

// <|role|> + encode("{metadata}\n") + encode(content); a system message with tools gets
// "\n" + json.dumps(tools, indent=4, ensure_ascii=False) appended to its content
// (build_chat_input). Unlike GLM-4, an empty content still prints the role and the "\n".
Ids chatglm3_message(const Message& m, const Tokenizer& tok) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "observation")
    throw std::runtime_error("ChatGLM3 has no role '" + m.role +
                             "' (system, user, assistant, observation)");
  std::string content = m.content;
  if (m.has_tools()) content += "\n" + tools_json(m.tools);
  Ids ids = {tok.special_id("<|" + m.role + "|>")};
  append(ids, tok.encode(m.metadata + "\n"));
  append(ids, tok.encode(content));
  return ids;
}

class Chatglm3Template : public ChatTemplate {
 public:
  std::string name() const override { return "chatglm3"; }

  // finetune_hf.py's sample: [gMASK] sop, each message whole (role token included), assistant
  // messages marked (system, user and observation are not trained), eos appended, the mask
  // shifted right by one. So the targets are "\n" + content + the token after the turn, the
  // same shape as GLM-4's combine=false. Observations are not trained (ChatGLM3's script
  // rejected tool turns rather than defining it; GLM-4's demo does not train them).
  Sample render(const std::vector<Message>& messages, const Tokenizer& tok) const override {
    return sample(messages, tok, 0);
  }
  Sample render_for_training(const std::vector<Message>& messages, const Tokenizer& tok,
                             const EncodeOptions& o) const override {
    return sample(messages, tok, max_length(o));
  }
  int64_t max_length(const EncodeOptions& o) const override {
    return demo_max_length(o.max_input_length, o.max_output_length);
  }
  std::vector<int64_t> prompt(const std::vector<Message>& messages,
                              const Tokenizer& tok) const override {
    const Chatglm3Specials sp(tok);
    Ids ids = {sp.gmask, sp.sop};
    for (const Message& m : messages) append(ids, chatglm3_message(m, tok));
    ids.push_back(tok.special_id("<|assistant|>"));
    return ids;
  }
  std::vector<int64_t> stop_ids(const Tokenizer& tok) const override {
    return {Chatglm3Specials(tok).eos, tok.special_id("<|user|>"),
            tok.special_id("<|observation|>")};
  }

 private:
  static Sample sample(const std::vector<Message>& messages, const Tokenizer& tok,
                       int64_t max_length) {
    const Chatglm3Specials sp(tok);
    Marked m;
    m.add({sp.gmask, sp.sop}, false);
    for (const Message& msg : messages) m.add(chatglm3_message(msg, tok), msg.role == "assistant");
    return shifted_sample(std::move(m), sp.eos, max_length);
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------

std::unique_ptr<ChatTemplate> make_glm4_template() { return std::make_unique<Glm4Template>(); }
std::unique_ptr<ChatTemplate> make_chatglm3_template() {
  return std::make_unique<Chatglm3Template>();
}

std::vector<int64_t> glm4_render_ids(const std::vector<Message>& messages, const Tokenizer& tok) {
  const Glm4Specials sp(tok);
  Ids ids = {sp.gmask, sp.sop};
  for (const Message& m : messages) append(ids, glm4_message(m, tok, sp));
  return ids;
}

Sample glm4_demo_sample(const std::vector<Message>& messages, const Tokenizer& tok, bool combine,
                        int64_t max_in, int64_t max_out) {
  const Glm4Specials sp(tok);
  Marked m;
  if (combine) {
    // The whole conversation; everything after the LAST <|assistant|> is marked (so trailing
    // non-assistant messages after it are trained too, as in the demo).
    m.add(glm4_render_ids(messages, tok), false);
    const auto last = std::find(m.ids.rbegin(), m.ids.rend(), sp.assistant);
    if (last == m.ids.rend())
      throw std::runtime_error("combine=true needs an assistant message with content (no "
                               "<|assistant|> token in the rendered conversation)");
    const size_t a = static_cast<size_t>(m.ids.rend() - last) - 1;
    std::fill(m.mask.begin() + static_cast<std::ptrdiff_t>(a) + 1, m.mask.end(), true);
  } else {
    // Message by message: render([m]) without its [gMASK]<sop>; assistant messages marked,
    // role token included (the shift turns that into a label on the "\n" after it).
    m.add({sp.gmask, sp.sop}, false);
    for (const Message& msg : messages) m.add(glm4_message(msg, tok, sp), msg.role == "assistant");
  }
  // 151336 closes the last reply: replies end with <|user|> (or <|observation|> when a tool
  // result follows), matching the stop ids.
  return shifted_sample(std::move(m), sp.user, demo_max_length(max_in, max_out));
}

namespace {

Ids cut(Ids ids, int64_t n) {
  if (n > 0 && static_cast<int64_t>(ids.size()) > n) ids.resize(n);
  return ids;
}

// The row for assistant message `msg` after context `ctx`: prompt ctx[:max_in] + <|assistant|>,
// target ("{metadata}\n{content}" + <|user|>)[:max_out].
EvalRow eval_row(const Ids& ctx, const Message& msg, const Tokenizer& tok, const Glm4Specials& sp,
                 int64_t max_in, int64_t max_out) {
  EvalRow row;
  row.prompt = cut(ctx, max_in);
  row.prompt.push_back(sp.assistant);
  if (!msg.content.empty()) row.target = tok.encode(msg.metadata + "\n" + msg.content);
  row.target.push_back(sp.user);
  row.target = cut(std::move(row.target), max_out);
  return row;
}

}  // namespace

EvalRow eval_prompt_and_target(const std::vector<Message>& messages, const Tokenizer& tok,
                               int64_t max_in, int64_t max_out) {
  const Glm4Specials sp(tok);
  size_t last = messages.size();
  for (size_t i = messages.size(); i-- > 0;)
    if (messages[i].role == "assistant") {
      last = i;
      break;
    }
  if (last == messages.size())
    throw std::runtime_error("an evaluation row needs an assistant message (the gold reply)");
  const std::vector<Message> context(messages.begin(), messages.begin() + last);
  return eval_row(glm4_render_ids(context, tok), messages[last], tok, sp, max_in, max_out);
}

std::vector<EvalRow> glm4_eval_rows(const std::vector<Message>& messages, const Tokenizer& tok,
                                    bool combine, int64_t max_in, int64_t max_out) {
  if (combine) return {eval_prompt_and_target(messages, tok, max_in, max_out)};
  const Glm4Specials sp(tok);
  std::vector<EvalRow> rows;
  Ids ctx = {sp.gmask, sp.sop};
  for (const Message& m : messages) {
    if (max_in > 0 && static_cast<int64_t>(ctx.size()) >= max_in) break;
    if (m.role == "assistant") rows.push_back(eval_row(ctx, m, tok, sp, max_in, max_out));
    append(ctx, glm4_message(m, tok, sp));
  }
  return rows;
}

}  // namespace ftrun::data
