// The run report: report.html with inline SVG charts and training_loss.png with cairo (see
// report.h).
#include "runtime/report.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "io/file.h"
#include "runtime/checkpoint.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ftrun::runtime {

namespace {

constexpr const char* kRunConfigFile = "run_config.json";
constexpr int kPredictionsShown = 5;

std::string fmt(double v) {
  char buf[64];
  if (v != 0 && (std::fabs(v) < 1e-3 || std::fabs(v) >= 1e9)) std::snprintf(buf, sizeof buf, "%.3g", v);
  else if (std::fabs(v) >= 1e4) std::snprintf(buf, sizeof buf, "%.0f", v);  // tokens/s: 23417, not 2.342e+04
  else std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// The step of a record, or nullopt.
std::optional<int64_t> step_of(const json& r) {
  if (!r.is_object() || !r.contains("step") || !r["step"].is_number()) return std::nullopt;
  return r["step"].get<int64_t>();
}

std::vector<json> read_jsonl(const fs::path& path) {
  std::vector<json> out;
  std::istringstream in(io::read_text_file(path));
  std::string line;
  int line_no = 0;
  std::vector<std::pair<int, std::string>> bad;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const json::parse_error& e) {
      bad.push_back({line_no, e.what()});
    }
  }
  // A run killed mid-write can leave a torn last line; anything else is a broken file.
  if (!bad.empty() && (bad.size() > 1 || bad[0].first != line_no))
    throw std::runtime_error(path.string() + ":" + std::to_string(bad[0].first) + ": invalid JSON: " + bad[0].second);
  return out;
}

std::optional<fs::path> newest_checkpoint(const std::string& output_dir) {
  const auto steps = complete_checkpoints(output_dir);
  if (steps.empty()) return std::nullopt;
  return fs::path(output_dir) / ("checkpoint-" + std::to_string(steps.back()));
}

// ---- values per key ------------------------------------------------------------------------

struct Points {
  std::vector<double> x, y;
};

Points points_of(const json& records, const std::string& key) {
  Points p;
  for (const auto& r : records) {
    const auto step = step_of(r);
    if (!step || !r.contains(key) || !r[key].is_number()) continue;
    const double v = r[key].get<double>();
    if (!std::isfinite(v)) continue;
    p.x.push_back(double(*step));
    p.y.push_back(v);
  }
  return p;
}

// ---- SVG charts ----------------------------------------------------------------------------

// Round tick steps (1, 2, 5 x 10^k) covering [lo, hi] with about `want` ticks.
std::vector<double> nice_ticks(double lo, double hi, int want) {
  std::vector<double> ticks;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(1, want);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

struct Series {
  std::string name, color;
  Points pts;
  double width = 1.8;
  double opacity = 1.0;
};

std::pair<double, double> y_range(const std::vector<Series>& series) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& s : series)
    for (double v : s.pts.y) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (!std::isfinite(lo)) return {0, 1};
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {
    const double pad = std::fabs(hi) > 0 ? std::fabs(hi) * 0.1 : 1.0;
    return {lo - pad, hi + pad};
  }
  const double pad = (hi - lo) * 0.06;
  return {lo >= 0 && lo - pad < 0 ? 0 : lo - pad, hi + pad};
}

std::string svg_chart(const std::string& id, const std::string& title, const std::vector<Series>& series,
                      const std::vector<int64_t>& checkpoints, double x_lo, double x_hi) {
  const double W = 600, H = 280, L = 64, R = 16, T = 34, B = 40;  // two side by side at 1280 px
  const double pw = W - L - R, ph = H - T - B;
  const auto [y_lo, y_hi] = y_range(series);
  auto X = [&](double x) { return L + (x_hi > x_lo ? (x - x_lo) / (x_hi - x_lo) : 0.5) * pw; };
  auto Y = [&](double y) { return T + (1 - (y - y_lo) / (y_hi - y_lo)) * ph; };
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(2);
  o << "<figure class=\"chart\" id=\"" << id << "\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W
    << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << " " << H << "\" role=\"img\" aria-label=\""
    << html_escape(title) << "\">\n";
  o << "<text class=\"title\" x=\"" << L << "\" y=\"20\">" << html_escape(title) << "</text>\n";
  // legend, right-aligned on the title line
  double lx = W - R;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    const double tw = 7.0 * double(it->name.size()) + 26;
    lx -= tw;
    o << "<g class=\"legend\"><line x1=\"" << lx << "\" y1=\"16\" x2=\"" << lx + 16 << "\" y2=\"16\" stroke=\""
      << it->color << "\" stroke-width=\"3\" stroke-opacity=\"" << it->opacity << "\"/><text x=\"" << lx + 20
      << "\" y=\"20\">" << html_escape(it->name) << "</text></g>\n";
  }
  // grid and axes
  for (double t : nice_ticks(y_lo, y_hi, 5)) {
    o << "<line class=\"grid\" x1=\"" << L << "\" y1=\"" << Y(t) << "\" x2=\"" << L + pw << "\" y2=\"" << Y(t)
      << "\"/><text class=\"tick\" x=\"" << L - 6 << "\" y=\"" << Y(t) + 4 << "\" text-anchor=\"end\">" << fmt(t)
      << "</text>\n";
  }
  for (double t : nice_ticks(x_lo, x_hi, 8)) {
    o << "<line class=\"xtick\" x1=\"" << X(t) << "\" y1=\"" << T + ph << "\" x2=\"" << X(t) << "\" y2=\""
      << T + ph + 4 << "\"/><text class=\"tick\" x=\"" << X(t) << "\" y=\"" << T + ph + 16
      << "\" text-anchor=\"middle\">" << fmt(t) << "</text>\n";
  }
  o << "<rect class=\"frame\" x=\"" << L << "\" y=\"" << T << "\" width=\"" << pw << "\" height=\"" << ph << "\"/>\n";
  o << "<text class=\"axis\" x=\"" << L + pw / 2 << "\" y=\"" << H - 6 << "\" text-anchor=\"middle\">step</text>\n";
  // checkpoints: a dashed line and a marker on the step axis
  for (int64_t c : checkpoints) {
    if (double(c) < x_lo || double(c) > x_hi) continue;
    const double x = X(double(c));
    o << "<g class=\"checkpoint\" data-step=\"" << c << "\"><title>checkpoint-" << c << "</title><line x1=\"" << x
      << "\" y1=\"" << T << "\" x2=\"" << x << "\" y2=\"" << T + ph << "\"/><path d=\"M" << x << " " << T + ph - 7
      << " L" << x - 5 << " " << T + ph << " L" << x + 5 << " " << T + ph << " Z\"/></g>\n";
  }
  for (const auto& s : series) {
    if (s.pts.x.empty()) continue;
    o << "<path class=\"series\" data-series=\"" << html_escape(s.name) << "\" data-points=\"" << s.pts.x.size()
      << "\" fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"" << s.width << "\" stroke-opacity=\""
      << s.opacity << "\" d=\"";
    for (size_t i = 0; i < s.pts.x.size(); ++i)
      o << (i ? " L" : "M") << X(s.pts.x[i]) << " " << Y(s.pts.y[i]);
    o << "\"/>\n";
    if (s.pts.x.size() <= 60)
      for (size_t i = 0; i < s.pts.x.size(); ++i)
        o << "<circle class=\"pt\" cx=\"" << X(s.pts.x[i]) << "\" cy=\"" << Y(s.pts.y[i]) << "\" r=\"2.5\" fill=\""
          << s.color << "\" fill-opacity=\"" << s.opacity << "\"><title>" << html_escape(s.name) << " step "
          << fmt(s.pts.x[i]) << ": " << fmt(s.pts.y[i]) << "</title></circle>\n";
  }
  o << "</svg></figure>\n";
  return o.str();
}

// ---- config table --------------------------------------------------------------------------

void flatten(const json& j, const std::string& prefix, std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object() && !j.empty()) {
    for (const auto& kv : j.items()) flatten(kv.value(), prefix.empty() ? kv.key() : prefix + "." + kv.key(), out);
    return;
  }
  out.push_back({prefix, j.is_string() ? j.get<std::string>() : j.dump()});
}

json run_config(const std::string& output_dir) {
  const fs::path saved = fs::path(output_dir) / kRunConfigFile;
  if (fs::exists(saved)) return io::read_json_file(saved, "run config");
  // Older outputs: what the newest checkpoint recorded.
  if (auto ckpt = newest_checkpoint(output_dir)) {
    const json state = io::read_json_file(*ckpt / "trainer_state.json", "trainer state");
    json c;
    for (const char* k : {"strategy", "world_size", "zero_stage", "seed", "training_args", "peft_config"})
      if (state.contains(k)) c[k] = state[k];
    return c;
  }
  return json::object();
}

// ---- PNG with cairo ------------------------------------------------------------------------

cairo_status_t append_png(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

std::string draw_loss_png(const Points& raw, const std::vector<double>& smoothed, const std::string& title,
                          int width, int height) {
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
  cairo_t* cr = cairo_create(surface);
  const double L = 70, R = 24, T = 44, B = 52;
  const double pw = width - L - R, ph = height - T - B;
  double x_lo = raw.x.front(), x_hi = raw.x.back();
  if (x_hi <= x_lo) {
    x_lo -= 1;
    x_hi += 1;
  }
  std::vector<Series> s = {{"loss", "", raw}};
  const auto [y_lo, y_hi] = y_range(s);
  auto X = [&](double x) { return L + (x - x_lo) / (x_hi - x_lo) * pw; };
  auto Y = [&](double y) { return T + (1 - (y - y_lo) / (y_hi - y_lo)) * ph; };

  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  auto text = [&](const std::string& t, double x, double y, double align) {
    cairo_text_extents_t ext;
    cairo_text_extents(cr, t.c_str(), &ext);
    cairo_move_to(cr, x - ext.width * align - ext.x_bearing * (1 - align), y);
    cairo_show_text(cr, t.c_str());
  };
  // grid, ticks, frame
  cairo_set_font_size(cr, 12);
  cairo_set_line_width(cr, 1);
  for (double t : nice_ticks(y_lo, y_hi, 6)) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, L, Y(t) + 0.5);
    cairo_line_to(cr, L + pw, Y(t) + 0.5);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    text(fmt(t), L - 8, Y(t) + 4, 1.0);
  }
  for (double t : nice_ticks(x_lo, x_hi, 8)) {
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    cairo_move_to(cr, X(t) + 0.5, T + ph);
    cairo_line_to(cr, X(t) + 0.5, T + ph + 5);
    cairo_stroke(cr);
    text(fmt(t), X(t), T + ph + 20, 0.5);
  }
  cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
  cairo_rectangle(cr, L + 0.5, T + 0.5, pw, ph);
  cairo_stroke(cr);
  text("step", L + pw / 2, height - 12, 0.5);
  cairo_set_font_size(cr, 16);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  text(title, L, 26, 0.0);
  // the curves: raw (light) under smoothed (dark)
  auto curve = [&](const std::vector<double>& ys, double r, double g, double b, double a, double w) {
    cairo_set_source_rgba(cr, r, g, b, a);
    cairo_set_line_width(cr, w);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (size_t i = 0; i < ys.size(); ++i) {
      if (i == 0) cairo_move_to(cr, X(raw.x[i]), Y(ys[i]));
      else cairo_line_to(cr, X(raw.x[i]), Y(ys[i]));
    }
    if (ys.size() == 1) cairo_arc(cr, X(raw.x[0]), Y(ys[0]), 2.5, 0, 2 * M_PI);
    cairo_stroke(cr);
  };
  curve(raw.y, 0.12, 0.47, 0.71, 0.35, 1.5);
  curve(smoothed, 0.12, 0.47, 0.71, 1.0, 2.5);
  // legend
  cairo_set_font_size(cr, 12);
  const double lx = L + pw - 200, ly = T + 18;
  cairo_set_source_rgba(cr, 0.12, 0.47, 0.71, 0.35);
  cairo_set_line_width(cr, 3);
  cairo_move_to(cr, lx, ly - 4);
  cairo_line_to(cr, lx + 18, ly - 4);
  cairo_stroke(cr);
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  text("original", lx + 24, ly, 0.0);
  cairo_set_source_rgb(cr, 0.12, 0.47, 0.71);
  cairo_move_to(cr, lx + 90, ly - 4);
  cairo_line_to(cr, lx + 108, ly - 4);
  cairo_stroke(cr);
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  text("smoothed", lx + 114, ly, 0.0);

  std::string png;
  cairo_surface_flush(surface);
  const cairo_status_t status = cairo_surface_write_to_png_stream(surface, append_png, &png);
  cairo_destroy(cr);
  cairo_surface_destroy(surface);
  if (status != CAIRO_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cairo cannot encode the PNG: ") + cairo_status_to_string(status));
  return png;
}

constexpr const char* kCss = R"(
body{font-family:"DejaVu Sans",Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;font-size:13px}.charts{display:flex;flex-wrap:wrap;gap:12px}
figure.chart{margin:0;border:1px solid #e3e3e3;border-radius:4px}
svg text{font-family:"DejaVu Sans",Arial,sans-serif;font-size:11px;fill:#444}
svg text.title{font-size:13px;font-weight:bold;fill:#222}
svg .grid{stroke:#eee}svg .xtick{stroke:#888}svg .frame{fill:none;stroke:#aaa}
svg .checkpoint line{stroke:#c0392b;stroke-dasharray:3 3;stroke-opacity:.7}svg .checkpoint path{fill:#c0392b}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;vertical-align:top;text-align:left}
th{background:#f6f6f6}td.k{font-family:monospace;white-space:nowrap}
td.text{white-space:pre-wrap;max-width:520px;font-family:monospace;font-size:12px}
.summary td:first-child{font-weight:bold}
)";

}  // namespace

std::vector<double> smooth_ema(const std::vector<double>& values, double weight) {
  std::vector<double> out;
  double last = 0;
  int64_t n = 0;
  for (double v : values) {
    last = last * weight + (1 - weight) * v;
    ++n;
    out.push_back(weight == 1.0 ? v : last / (1 - std::pow(weight, double(n))));
  }
  return out;
}

json read_run_records(const std::string& output_dir) {
  const fs::path metrics = fs::path(output_dir) / "metrics.jsonl";
  if (!fs::exists(metrics))
    throw std::runtime_error(output_dir + ": no metrics.jsonl here (is it a training output_dir?)");
  const std::vector<json> logged = read_jsonl(metrics);
  std::optional<int64_t> first;
  for (const auto& r : logged)
    if (auto s = step_of(r)) first = first ? std::min(*first, *s) : *s;
  json records = json::array();
  // A resumed run's metrics.jsonl starts after the checkpoint: the earlier records are in
  // the checkpoint's log history (the newest one holds every record up to its step). A
  // checkpoint left by an earlier run in the same directory is not this run's: its records
  // from `first` on would differ from metrics.jsonl's.
  if (auto ckpt = newest_checkpoint(output_dir)) {
    const fs::path state = *ckpt / "trainer_state.json";
    json history = json::array();
    if (fs::exists(state)) {
      const json s = io::read_json_file(state, "trainer state");
      if (s.contains("log_history") && s["log_history"].is_array()) history = s["log_history"];
    }
    bool same_run = true;
    for (const auto& r : history)
      if (auto st = step_of(r); st && first && *st >= *first)
        same_run = same_run && std::find(logged.begin(), logged.end(), r) != logged.end();
    if (same_run)
      for (const auto& r : history)
        if (auto st = step_of(r); st && (!first || *st < *first)) records.push_back(r);
  }
  for (const auto& r : logged) records.push_back(r);
  return records;
}

void write_run_config(const std::string& output_dir, const json& config) {
  io::write_json_atomic(fs::path(output_dir) / kRunConfigFile, config);
}

ReportFiles write_report(const std::string& output_dir) {
  const json records = read_run_records(output_dir);
  const auto checkpoints = complete_checkpoints(output_dir);
  const json config = run_config(output_dir);
  ReportFiles files;
  files.html = (fs::path(output_dir) / "report.html").string();

  double x_lo = 0, x_hi = 1;
  for (const auto& r : records)
    if (auto s = step_of(r)) x_hi = std::max(x_hi, double(*s));
  for (int64_t c : checkpoints) x_hi = std::max(x_hi, double(c));

  const Points loss = points_of(records, "loss");
  Points smooth = loss;
  smooth.y = smooth_ema(loss.y);
  std::string charts;
  auto chart = [&](const std::string& id, const std::string& title, std::vector<Series> series) {
    bool any = false;
    for (const auto& s : series) any = any || !s.pts.x.empty();
    if (any) charts += svg_chart(id, title, series, checkpoints, x_lo, x_hi);
  };
  chart("chart-loss", "Training loss", {{"loss", "#1f77b4", loss, 1.4, 0.35}, {"smoothed", "#1f77b4", smooth, 2.4}});
  chart("chart-lr", "Learning rate", {{"learning_rate", "#2ca02c", points_of(records, "learning_rate")}});
  chart("chart-grad-norm", "Grad norm", {{"grad_norm", "#d62728", points_of(records, "grad_norm")}});
  chart("chart-tokens", "Tokens per second", {{"tokens_per_second", "#9467bd", points_of(records, "tokens_per_second")}});
  chart("chart-eval-loss", "Eval loss", {{"eval_loss", "#ff7f0e", points_of(records, "eval_loss")}});
  chart("chart-rouge", "Eval ROUGE (F x100)",
        {{"eval_rouge-1", "#1f77b4", points_of(records, "eval_rouge-1")},
         {"eval_rouge-2", "#ff7f0e", points_of(records, "eval_rouge-2")},
         {"eval_rouge-l", "#2ca02c", points_of(records, "eval_rouge-l")}});
  chart("chart-bleu", "Eval BLEU-4", {{"eval_bleu-4", "#8c564b", points_of(records, "eval_bleu-4")}});

  // Summary: the last value of every metric.
  std::map<std::string, std::pair<int64_t, double>> last;
  for (const auto& r : records) {
    const auto s = step_of(r);
    if (!s) continue;
    for (const auto& kv : r.items())
      if (kv.key() != "step" && kv.key() != "epoch" && kv.value().is_number())
        last[kv.key()] = {*s, kv.value().get<double>()};
  }
  std::ostringstream h;
  const std::string name = fs::path(output_dir).lexically_normal().filename().string();
  char when[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ftrun report: "
    << html_escape(name) << "</title><style>" << kCss << "</style></head><body>\n";
  h << "<h1>ftrun run report</h1><div class=\"sub\">" << html_escape(fs::absolute(output_dir).lexically_normal().string())
    << " &middot; " << records.size() << " metric records, " << checkpoints.size()
    << " checkpoint(s) &middot; written " << when << "</div>\n";
  h << "<h2>Last values</h2><table class=\"summary\"><tr><th>metric</th><th>step</th><th>value</th></tr>\n";
  for (const auto& kv : last)
    h << "<tr><td>" << html_escape(kv.first) << "</td><td>" << kv.second.first << "</td><td>" << fmt(kv.second.second)
      << "</td></tr>\n";
  h << "</table>\n<h2>Curves</h2><div class=\"sub\">Against the global step; dashed red lines are the complete "
       "checkpoints; the smoothed loss is TensorBoard's smoothing (EMA, weight "
    << kReportSmoothing << ").</div>\n<div class=\"charts\">\n" << charts << "</div>\n";

  // Predictions next to their labels.
  const fs::path pred = fs::path(output_dir) / "predictions.jsonl";
  if (fs::exists(pred)) {
    const auto rows = read_jsonl(pred);
    h << "<h2>Test predictions</h2><div class=\"sub\">The first " << std::min<size_t>(rows.size(), kPredictionsShown)
      << " of " << rows.size() << " rows of predictions.jsonl.</div>\n<table class=\"predictions\"><tr><th>#</th>"
      << "<th>prompt</th><th>label</th><th>prediction</th></tr>\n";
    for (size_t i = 0; i < rows.size() && i < size_t(kPredictionsShown); ++i) {
      auto field = [&](const char* k) {
        return rows[i].contains(k) && rows[i][k].is_string() ? rows[i][k].get<std::string>() : std::string();
      };
      std::string prompt = field("prompt");
      if (prompt.size() > 600) prompt = "..." + prompt.substr(prompt.size() - 600);  // the end is the question
      h << "<tr class=\"prediction\"><td>" << i + 1 << "</td><td class=\"text\">" << html_escape(prompt)
        << "</td><td class=\"text\">" << html_escape(field("reference")) << "</td><td class=\"text\">"
        << html_escape(field("prediction")) << "</td></tr>\n";
    }
    h << "</table>\n";
  }

  std::vector<std::pair<std::string, std::string>> flat;
  flatten(config, "", flat);
  h << "<h2>Config</h2><table class=\"config\"><tr><th>key</th><th>value</th></tr>\n";
  for (const auto& kv : flat)
    h << "<tr><td class=\"k\">" << html_escape(kv.first) << "</td><td>" << html_escape(kv.second) << "</td></tr>\n";
  h << "</table>\n</body></html>\n";

  if (!loss.x.empty()) {
    files.png = (fs::path(output_dir) / "training_loss.png").string();
    io::write_file_atomic(files.png, draw_loss_png(loss, smooth.y, "training loss of " + name, 800, 500));
  }
  io::write_file_atomic(files.html, h.str());
  return files;
}

void write_report_after_training(const std::string& output_dir, bool verbose) {
  try {
    const ReportFiles f = write_report(output_dir);
    if (verbose) std::printf("ftrun: wrote %s%s\n", f.html.c_str(), f.png.empty() ? "" : (" and " + f.png).c_str());
  } catch (const std::exception& e) {
    std::cerr << "warning: the run report was not written: " << e.what() << "\n";
  }
}

}  // namespace ftrun::runtime
