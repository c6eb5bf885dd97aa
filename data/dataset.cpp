// Dataset readers: JSON / JSON Lines files of alpaca, messages or pre-tokenized records,
// validated record by record so that a bad record is reported by file:line and field.
#include "data/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace ftrun::data {
namespace {

using nlohmann::json;

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
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
      fail(where, "field '" + field + ".role' must be system, user or assistant, got '" +
                      msg.role + "'");
    if (msg.role == "system" && i != 0)
      fail(where, "field '" + field + ".role': a system message may only come first");
    ex.messages.push_back(std::move(msg));
  }
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
}

Example parse_record(const json& rec, const std::string& where) {
  if (!rec.is_object()) fail(where, "record must be a JSON object, got " + type_name(rec));
  Example ex;
  ex.where = where;
  if (rec.contains("messages"))
    parse_messages(rec, where, ex);
  else if (rec.contains("input_ids") || rec.contains("labels"))
    parse_pretokenized(rec, where, ex);
  else if (rec.contains("instruction") || rec.contains("output"))
    parse_alpaca(rec, where, ex);
  else
    fail(where, "unrecognised record: expected field 'messages', 'instruction' + 'output' "
                "(alpaca) or 'input_ids' + 'labels' (pre-tokenized)");
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
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open dataset file (does it exist?)");
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
