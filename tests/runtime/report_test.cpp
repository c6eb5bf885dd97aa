// The run report (runtime/report.h) on a hand-made output directory: which records it reads
// (a resumed run's history before metrics.jsonl), the SVG series and their point counts,
// checkpoint markers, predictions, the config table, and training_loss.png's size. The page
// in a real browser: tests/e2e/report_test.sh.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "runtime/report.h"

namespace fs = std::filesystem;
using namespace ftrun::runtime;
using nlohmann::json;

namespace {

struct OutputDir {
  fs::path path;
  OutputDir() {
    char tmpl[] = "/tmp/ftrun_report_test.XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~OutputDir() { fs::remove_all(path); }
  void put(const std::string& rel, const std::string& text) const {
    fs::create_directories((path / rel).parent_path());
    std::ofstream(path / rel) << text;
  }
};

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

json rec(int step, double loss) {
  return {{"step", step}, {"epoch", step / 10.0}, {"loss", loss}, {"learning_rate", 1e-3 / step},
          {"grad_norm", 1.0 + step}, {"tokens_per_second", 1000.0 * step}};
}

// data-points of the path of a series, -1 when absent; and the number of points in its d.
std::pair<int, int> series_points(const std::string& html, const std::string& name) {
  const std::regex re("<path class=\"series\" data-series=\"" + name + "\" data-points=\"([0-9]+)\"[^>]* d=\"([^\"]*)\"");
  std::smatch m;
  if (!std::regex_search(html, m, re)) return {-1, -1};
  const std::string d = m[2];
  int n = 0;
  for (char c : d) n += (c == 'M' || c == 'L');
  return {std::stoi(m[1]), n};
}

}  // namespace

TEST(Report, SmoothingIsTensorBoards) {
  // TensorBoard: last = last * w + (1 - w) * v; shown debiased, last / (1 - w^n)
  const auto s = smooth_ema({1.0, 0.0, 0.0}, 0.6);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_DOUBLE_EQ(s[0], 1.0);
  EXPECT_DOUBLE_EQ(s[1], 0.24 / (1 - 0.36));
  EXPECT_DOUBLE_EQ(s[2], 0.144 / (1 - 0.216));
  EXPECT_TRUE(smooth_ema({}).empty());
}

TEST(Report, ResumedRunReadsTheHistoryBeforeMetricsJsonl) {
  OutputDir out;
  // checkpoint-4 (the resume point) holds steps 1-4 and an eval at 4; the resumed run's
  // metrics.jsonl starts at 5; checkpoint-6 (written after resuming) holds 1-6.
  json hist = json::array();
  for (int s = 1; s <= 6; ++s) {
    hist.push_back(rec(s, 2.0 / s));
    if (s == 4) hist.push_back({{"step", 4}, {"eval_loss", 0.9}});
  }
  out.put("checkpoint-4/COMPLETE", "");
  out.put("checkpoint-6/COMPLETE", "");
  out.put("checkpoint-6/trainer_state.json", json{{"log_history", hist}}.dump());
  out.put("checkpoint-8/trainer_state.json", "{}");  // no COMPLETE: not a checkpoint
  std::string lines;
  for (int s = 5; s <= 8; ++s) lines += rec(s, 2.0 / s).dump() + "\n";
  lines += json{{"step", 8}, {"test_loss", 0.5}}.dump() + "\n";
  out.put("metrics.jsonl", lines + "{\"step\": 9, \"lo");  // a torn last line is skipped
  const json r = read_run_records(out.path.string());
  std::vector<int> steps;
  for (const auto& x : r) steps.push_back(x["step"].get<int>());
  EXPECT_EQ(steps, (std::vector<int>{1, 2, 3, 4, 4, 5, 6, 7, 8, 8}));

  const ReportFiles f = write_report(out.path.string());
  const std::string html = read(f.html);
  EXPECT_EQ(series_points(html, "loss"), std::make_pair(8, 8));
  EXPECT_EQ(series_points(html, "smoothed"), std::make_pair(8, 8));
  EXPECT_EQ(series_points(html, "learning_rate"), std::make_pair(8, 8));
  EXPECT_EQ(series_points(html, "grad_norm"), std::make_pair(8, 8));
  EXPECT_EQ(series_points(html, "tokens_per_second"), std::make_pair(8, 8));
  EXPECT_EQ(series_points(html, "eval_loss"), std::make_pair(1, 1));
  EXPECT_EQ(series_points(html, "eval_rouge-1").first, -1);  // no ROUGE in this run: no chart
  EXPECT_EQ(html.find("id=\"chart-rouge\""), std::string::npos);
  EXPECT_NE(html.find("class=\"checkpoint\" data-step=\"4\""), std::string::npos);
  EXPECT_NE(html.find("class=\"checkpoint\" data-step=\"6\""), std::string::npos);
  EXPECT_EQ(html.find("data-step=\"8\""), std::string::npos);
  // self-contained: nothing to fetch, no script
  for (const char* s : {"<script", "src=", "href=", "url(", "@import", "https:"})
    EXPECT_EQ(html.find(s), std::string::npos) << s;

  // training_loss.png: a PNG of 800 x 500 (IHDR width and height, big-endian)
  const std::string png = read(f.png);
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(png[at])) << 24) | (uint32_t(uint8_t(png[at + 1])) << 16) |
           (uint32_t(uint8_t(png[at + 2])) << 8) | uint32_t(uint8_t(png[at + 3]));
  };
  EXPECT_EQ(be32(16), 800u);
  EXPECT_EQ(be32(20), 500u);
}

// A checkpoint left in the directory by an earlier, different run is not this run's history.
TEST(Report, StaleCheckpointOfAnotherRunIsIgnored) {
  OutputDir out;
  json hist = json::array();
  for (int s = 1; s <= 6; ++s) hist.push_back(rec(s, 5.0 / s));  // other values
  out.put("checkpoint-6/COMPLETE", "");
  out.put("checkpoint-6/trainer_state.json", json{{"log_history", hist}}.dump());
  std::string lines;
  for (int s = 3; s <= 4; ++s) lines += rec(s, 2.0 / s).dump() + "\n";
  out.put("metrics.jsonl", lines);
  const json r = read_run_records(out.path.string());
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]["step"], 3);
}

TEST(Report, ConfigPredictionsAndGenerationMetrics) {
  OutputDir out;
  std::string lines;
  for (int s = 1; s <= 3; ++s) {
    lines += rec(s, 1.0 / s).dump() + "\n";
    lines += json{{"step", s}, {"eval_loss", 1.5 / s}, {"eval_rouge-1", 10.0 * s}, {"eval_rouge-2", 5.0 * s},
                  {"eval_rouge-l", 8.0 * s}, {"eval_bleu-4", 0.1 * s}}
                 .dump() +
             "\n";
  }
  out.put("metrics.jsonl", lines);
  std::string preds;
  for (int i = 0; i < 7; ++i)
    preds += json{{"prompt", "question <" + std::to_string(i) + ">"}, {"reference", "label & " + std::to_string(i)},
                  {"prediction", "guess " + std::to_string(i)}}
                 .dump() +
             "\n";
  out.put("predictions.jsonl", preds);
  write_run_config(out.path.string(), {{"training_args", {{"learning_rate", 0.005}, {"output_dir", "x"}}},
                                       {"peft_config", {{"peft_type", "LORA"}}}});
  const std::string html = read(write_report(out.path.string()).html);
  for (const char* s : {"eval_rouge-1", "eval_rouge-2", "eval_rouge-l", "eval_bleu-4", "eval_loss"})
    EXPECT_EQ(series_points(html, s), std::make_pair(3, 3)) << s;
  // the first five predictions, escaped, next to their labels
  EXPECT_NE(html.find("question &lt;0&gt;"), std::string::npos);
  EXPECT_NE(html.find("label &amp; 4"), std::string::npos);
  EXPECT_NE(html.find("guess 4"), std::string::npos);
  EXPECT_EQ(html.find("guess 5"), std::string::npos);
  // the config, flattened
  EXPECT_NE(html.find("training_args.learning_rate</td><td>0.005"), std::string::npos);
  EXPECT_NE(html.find("peft_config.peft_type</td><td>LORA"), std::string::npos);

  OutputDir empty;
  try {
    write_report(empty.path.string());
    FAIL() << "no error without metrics.jsonl";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no metrics.jsonl"), std::string::npos) << e.what();
  }
}
