// Dataset readers: JSON / JSON Lines files of alpaca, messages (GLM-4 demo / OpenAI),
// sharegpt or pre-tokenized records, validated record by record so that a bad record is
// reported by file:line and field.
#include "data/dataset.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "io/file.h"

namespace ftrun::data {
namespace {

// Ordered: tool schemas are printed back as JSON by the GLM templates in the order written.
using json = nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error(where + ": " + what);
}

std::string type_name(const json& v) { return v.is_null() ? "null" : v.type_name(); }

// "field 'x' must be a string" for a wrong type, "... is missing" when absent.
[[noreturn]] void bad_field(const std::string& where, const std::string& field,
                            const std::string& expected, const json* got) {
  if (!got) fail(where, "field '" + field + "' is missing (must be " + expected + ")");
  fail(where, "field '" + field + "' must be " + expected + ", got " + type_name(*got));
}

const json* find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

std::string required_string(const json& obj, const char* key, const std::string& where) {
  const json* v = find(obj, key);
  if (!v || !v->is_string()) bad_field(where, key, "a string", v);
  return v->get<std::string>();
}

// Optional strings may be absent or null (pandas writes missing cells as null).
std::string optional_string(const json& obj, const char* key, const std::string& where) {
  const json* v = find(obj, key);
  if (!v || v->is_null()) return "";
  if (!v->is_string()) bad_field(where, key, "a string", v);
  return v->get<std::string>();
}

// Where tools may come from: a JSON array of objects (the GLM-4 demo, OpenAI) or, for
// sharegpt, a string holding that array. Null and "" mean "no tools".
json parse_tools(const json& v, const std::string& where, const std::string& field,
                 bool allow_string) {
  json tools = v;
  if (allow_string && v.is_string()) {
    const std::string text = v.get<std::string>();
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) return json();
    io::check_json_shape(text, where + ": field '" + field + "'", io::kDataJsonLimits);
    try {
      tools = json::parse(text);
    } catch (const json::parse_error& e) {
      fail(where, "field '" + field + "' is not valid JSON: " + e.what());
    }
  }
  if (!tools.is_array())
    bad_field(where, field, allow_string ? "a JSON array of tools (or a string holding one)"
                                         : "an array of tools",
              &v);
  for (size_t i = 0; i < tools.size(); ++i)
    if (!tools[i].is_object())
      bad_field(where, field + "[" + std::to_string(i) + "]", "an object", &tools[i]);
  return tools;
}

void parse_messages(const json& rec, const std::string& where, Example& ex) {
  const json* msgs = find(rec, "messages");
  if (!msgs || !msgs->is_array()) bad_field(where, "messages", "an array", msgs);
  if (msgs->empty()) fail(where, "field 'messages' must not be empty");
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string field = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad_field(where, field, "an object", &m);
    const json* role = find(m, "role");
    if (!role || !role->is_string()) bad_field(where, field + ".role", "a string", role);
    const json* content = find(m, "content");
    if (!content || !content->is_string())
      bad_field(where, field + ".content", "a string", content);
    Message msg{role->get<std::string>(), content->get<std::string>()};
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" &&
        msg.role != "observation")
      fail(where, "field '" + field +
                      ".role' must be system, user, assistant or observation, got '" + msg.role +
                      "'");
    if (msg.role == "system" && i != 0)
      fail(where, "field '" + field + ".role': a system message may only come first");
    if (const json* md = find(m, "metadata"); md && !md->is_null()) {
      if (!md->is_string()) bad_field(where, field + ".metadata", "a string", md);
      msg.metadata = md->get<std::string>();
    }
    if (const json* tools = find(m, "tools"); tools && !tools->is_null()) {
      // The GLM-4 demo's rule: tool definitions travel on the (first) system message only.
      if (msg.role != "system")
        fail(where, "field '" + field + ".tools': tools may only be given on the system message "
                    "(the first message, role system), not on a " + msg.role + " message");
      msg.tools = parse_tools(*tools, where, field + ".tools", false);
    }
    ex.messages.push_back(std::move(msg));
  }
}

// LLaMA-Factory's sharegpt layout with its default tags (formats.md 6.2). An optional leading
// `system` turn replaces the top-level `system`; after it, human/observation turns sit at odd
// positions (1st, 3rd, ...) and gpt/function_call turns at even ones, and the last turn is a
// reply (LLaMA-Factory drops such records with a warning; ftrun reports them). function_call
// values (JSON {"name", "arguments"}) become assistant turns as written, which is how the GLM-4
// demo's data spells a tool call. `tools` (a JSON string) goes on the system message.
void parse_sharegpt(const json& rec, const std::string& where, Example& ex) {
  const json* conv = find(rec, "conversations");
  if (!conv || !conv->is_array()) bad_field(where, "conversations", "an array", conv);
  if (conv->empty()) fail(where, "field 'conversations' must not be empty");
  std::string system = optional_string(rec, "system", where);
  json tools;
  if (const json* t = find(rec, "tools"); t && !t->is_null())
    tools = parse_tools(*t, where, "tools", true);

  std::vector<Message> turns;
  size_t first = 0;
  for (size_t i = 0; i < conv->size(); ++i) {
    const json& t = (*conv)[i];
    const std::string field = "conversations[" + std::to_string(i) + "]";
    if (!t.is_object()) bad_field(where, field, "an object", &t);
    const json* from = find(t, "from");
    if (!from || !from->is_string()) bad_field(where, field + ".from", "a string", from);
    const json* value = find(t, "value");
    if (!value || !value->is_string()) bad_field(where, field + ".value", "a string", value);
    const std::string tag = from->get<std::string>();
    if (tag == "system") {
      if (i != 0)
        fail(where, "field '" + field + ".from': a system turn may only come first");
      system = value->get<std::string>();
      first = 1;
      continue;
    }
    const bool reply = tag == "gpt" || tag == "function_call";
    if (!reply && tag != "human" && tag != "observation")
      fail(where, "field '" + field + ".from' must be human, gpt, function_call, observation or "
                  "system, got '" + tag + "'");
    const size_t position = i - first + 1;  // 1-based, not counting a leading system turn
    if (reply != (position % 2 == 0))
      fail(where, "field '" + field + ".from': '" + tag + "' is at position " +
                      std::to_string(position) + ", but " +
                      (reply ? "gpt/function_call turns must be at even positions (2nd, 4th, ...)"
                             : "human/observation turns must be at odd positions (1st, 3rd, ...)") +
                      (first ? " (positions do not count the leading system turn)" : ""));
    turns.push_back({reply ? "assistant" : (tag == "human" ? "user" : "observation"),
                     value->get<std::string>()});
  }
  if (turns.empty()) fail(where, "field 'conversations' holds no turn besides the system turn");
  if (turns.size() % 2 != 0)
    fail(where, "field 'conversations' must end with a gpt or function_call turn (it has " +
                    std::to_string(turns.size()) + " turns after any system turn)");
  if (!system.empty() || !tools.is_null()) {
    Message sys{"system", system};
    sys.tools = std::move(tools);
    ex.messages.push_back(std::move(sys));
  }
  for (auto& m : turns) ex.messages.push_back(std::move(m));
}

void parse_alpaca(const json& rec, const std::string& where, Example& ex) {
  const std::string instruction = required_string(rec, "instruction", where);
  const std::string input = optional_string(rec, "input", where);
  const std::string output = required_string(rec, "output", where);
  const std::string system = optional_string(rec, "system", where);
  if (!system.empty()) ex.messages.push_back({"system", system});
  if (const json* hist = find(rec, "history"); hist && !hist->is_null()) {
    if (!hist->is_array()) bad_field(where, "history", "an array of [query, response] pairs", hist);
    for (size_t i = 0; i < hist->size(); ++i) {
      const json& turn = (*hist)[i];
      const std::string field = "history[" + std::to_string(i) + "]";
      if (!turn.is_array() || turn.size() != 2 || !turn[0].is_string() || !turn[1].is_string())
        bad_field(where, field, "a [query, response] pair of strings", &turn);
      ex.messages.push_back({"user", turn[0].get<std::string>()});
      ex.messages.push_back({"assistant", turn[1].get<std::string>()});
    }
  }
  // LLaMA-Factory's rule: the non-empty parts of instruction and input, joined by "\n".
  std::string user = instruction;
  if (!input.empty()) user = user.empty() ? input : user + "\n" + input;
  ex.messages.push_back({"user", user});
  ex.messages.push_back({"assistant", output});
}

std::vector<int64_t> int_array(const json& rec, const char* key, const std::string& where) {
  const json* v = find(rec, key);
  if (!v || !v->is_array()) bad_field(where, key, "an array of integers", v);
  std::vector<int64_t> out;
  out.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    const json& x = (*v)[i];
    if (!x.is_number_integer())
      bad_field(where, std::string(key) + "[" + std::to_string(i) + "]", "an integer", &x);
    out.push_back(x.get<int64_t>());
  }
  return out;
}

void parse_pretokenized(const json& rec, const std::string& where, Example& ex) {
  ex.input_ids = int_array(rec, "input_ids", where);
  ex.labels = int_array(rec, "labels", where);
  if (ex.input_ids.empty()) fail(where, "field 'input_ids' must not be empty");
  if (ex.labels.size() != ex.input_ids.size())
    fail(where, "field 'labels' must have the same length as 'input_ids' (" +
                    std::to_string(ex.labels.size()) + " vs " +
                    std::to_string(ex.input_ids.size()) + ")");
  // Issue 16: a record with nothing to learn trained silently with loss 0; the chat forms
  // refuse the same situation (no assistant turn), so this form does too.
  if (std::all_of(ex.labels.begin(), ex.labels.end(), [](int64_t l) { return l == -100; }))
    fail(where, "every entry of field 'labels' is -100 (no label tokens), so nothing would be trained");
}

Example parse_record(const json& rec, const std::string& where) {
  if (!rec.is_object()) fail(where, "record must be a JSON object, got " + type_name(rec));
  Example ex;
  ex.where = where;
  if (rec.contains("messages"))
    parse_messages(rec, where, ex);
  else if (rec.contains("conversations"))
    parse_sharegpt(rec, where, ex);
  else if (rec.contains("input_ids") || rec.contains("labels"))
    parse_pretokenized(rec, where, ex);
  else if (rec.contains("instruction") || rec.contains("output"))
    parse_alpaca(rec, where, ex);
  else
    fail(where, "unrecognised record: expected field 'messages', 'conversations' (sharegpt), "
                "'instruction' + 'output' (alpaca) or 'input_ids' + 'labels' (pre-tokenized)");
  return ex;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

std::vector<Example> read_jsonl(const std::string& path, const std::string& text) {
  std::vector<Example> out;
  std::istringstream in(text);
  std::string line;
  for (size_t lineno = 1; std::getline(in, line); ++lineno) {
    if (blank(line)) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    json rec;
    io::check_json_shape(line, where, io::kDataJsonLimits);  // nesting bounded (issue 16)
    try {
      rec = json::parse(line);
    } catch (const json::parse_error& e) {
      fail(where, std::string("invalid JSON: ") + e.what());
    }
    out.push_back(parse_record(rec, where));
  }
  return out;
}

std::vector<Example> read_json_array(const std::string& path, const std::string& text) {
  json doc;
  io::check_json_shape(text, path, io::kDataJsonLimits);  // nesting bounded (issue 16)
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    // nlohmann reports a byte offset (1-based, just past the error); users want a line.
    const size_t end = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
    const auto line = 1 + std::count(text.begin(), text.begin() + end, '\n');
    fail(path + ":" + std::to_string(line), std::string("invalid JSON: ") + e.what());
  }
  if (!doc.is_array()) fail(path, "expected a JSON array of records, got " + type_name(doc));
  std::vector<Example> out;
  out.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i)
    out.push_back(parse_record(doc[i], path + "[" + std::to_string(i) + "]"));
  return out;
}

}  // namespace

std::vector<Example> read_dataset(const std::string& path) {
  const std::string ext = lower(std::filesystem::path(path).extension().string());
  if (ext != ".json" && ext != ".jsonl")
    fail(path, "unsupported dataset file type '" + ext + "' (expected .json or .jsonl)");
  std::error_code dir_ec;
  if (std::filesystem::is_directory(path, dir_ec))
    fail(path, "is a directory, expected a dataset file (.json or .jsonl)");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open dataset file (does it exist?): " + std::string(std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);  // UTF-8 BOM

  // Like HF datasets' "json" loader, a .json file that does not open with '[' is read as
  // JSON Lines: many published "*.json" datasets are one object per line.
  const size_t first = text.find_first_not_of(" \t\r\n");
  const bool lines = ext == ".jsonl" || first == std::string::npos || text[first] != '[';
  std::vector<Example> out = lines ? read_jsonl(path, text) : read_json_array(path, text);
  if (out.empty()) fail(path, "dataset is empty (no records)");
  return out;
}

}  // namespace ftrun::data
