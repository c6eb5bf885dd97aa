#include "runtime/text_metrics.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <unordered_map>

namespace ftrun::runtime {
namespace {

enum class CharClass { kSpace, kSingle, kWord };

bool in(uint32_t cp, uint32_t lo, uint32_t hi) { return cp >= lo && cp <= hi; }

CharClass classify(uint32_t cp) {
  if (cp < 0x80) {
    // Python's str.split() whitespace: \t \n \v \f \r, the separators 0x1c-0x1f, space.
    // Other control characters are dropped like whitespace.
    if (cp <= 0x20 || cp == 0x7f) return CharClass::kSpace;
    if (in(cp, 0x21, 0x2f) || in(cp, 0x3a, 0x40) || in(cp, 0x5b, 0x60) || in(cp, 0x7b, 0x7e))
      return CharClass::kSingle;
    return CharClass::kWord;
  }
  if (cp <= 0xa0) return CharClass::kSpace;  // C1 controls, U+0085 NEL, U+00A0 NBSP
  if (cp <= 0xff) {
    // Latin-1 punctuation and symbols, except the letter/number-like ª ² ³ µ ¹ º ¼ ½ ¾.
    if (in(cp, 0xa1, 0xbf) && cp != 0xaa && cp != 0xb2 && cp != 0xb3 && cp != 0xb5 && cp != 0xb9 &&
        cp != 0xba && !in(cp, 0xbc, 0xbe))
      return CharClass::kSingle;
    if (cp == 0xd7 || cp == 0xf7) return CharClass::kSingle;
    return CharClass::kWord;
  }
  // Unicode whitespace (Python's isspace) plus zero-width spaces / joiners and the BOM.
  if (cp == 0x1680 || in(cp, 0x2000, 0x200d) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
      cp == 0x205f || cp == 0x2060 || cp == 0x3000 || cp == 0xfeff)
    return CharClass::kSpace;
  if (in(cp, 0x2010, 0x2027) || in(cp, 0x2030, 0x205e) || in(cp, 0x2e00, 0x2e7f))
    return CharClass::kSingle;  // general and supplemental punctuation
  // CJK: radicals, Kangxi, description characters, symbols and punctuation, kana, bopomofo,
  // strokes, enclosed / compatibility, ideographs (all extensions), compatibility ideographs,
  // vertical / small / compatibility forms.
  if (in(cp, 0x2e80, 0x2fff) || in(cp, 0x3001, 0x30ff) || in(cp, 0x3100, 0x312f) || in(cp, 0x3190, 0x33ff) ||
      in(cp, 0x3400, 0x4dbf) || in(cp, 0x4e00, 0x9fff) || in(cp, 0xf900, 0xfaff) || in(cp, 0xfe10, 0xfe1f) ||
      in(cp, 0xfe30, 0xfe6f) || in(cp, 0x20000, 0x3ffff))
    return CharClass::kSingle;
  // Full-width punctuation, half-width CJK punctuation and katakana, full-width symbols;
  // full-width digits and letters (U+FF10-19, FF21-3A, FF41-5A) stay word characters.
  if (in(cp, 0xff01, 0xff0f) || in(cp, 0xff1a, 0xff20) || in(cp, 0xff3b, 0xff40) || in(cp, 0xff5b, 0xff9f) ||
      in(cp, 0xffe0, 0xffee))
    return CharClass::kSingle;
  return CharClass::kWord;
}

// Decodes one UTF-8 sequence at s[i]; returns its length (1 for an invalid byte, with *valid false).
size_t decode_utf8(const std::string& s, size_t i, uint32_t* cp, bool* valid) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  *valid = true;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t len;
  uint32_t v, min;
  if ((c & 0xe0) == 0xc0) {
    len = 2, v = c & 0x1f, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3, v = c & 0x0f, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4, v = c & 0x07, min = 0x10000;
  } else {
    *valid = false;
    return 1;
  }
  if (i + len > s.size()) {
    *valid = false;
    return 1;
  }
  for (size_t k = 1; k < len; ++k) {
    unsigned char cc = byte(i + k);
    if ((cc & 0xc0) != 0x80) {
      *valid = false;
      return 1;
    }
    v = (v << 6) | (cc & 0x3f);
  }
  if (v < min || v > 0x10ffff || in(v, 0xd800, 0xdfff)) {
    *valid = false;
    return 1;
  }
  *cp = v;
  return len;
}

// Token strings -> small integer ids shared by all the lists of one computation.
class Interner {
 public:
  std::vector<int32_t> ids(const std::vector<std::string>& tokens) {
    std::vector<int32_t> out;
    out.reserve(tokens.size());
    for (const auto& t : tokens) out.push_back(map_.emplace(t, int32_t(map_.size())).first->second);
    return out;
  }

 private:
  std::unordered_map<std::string, int32_t> map_;
};

using Ngram = std::vector<int32_t>;

std::map<Ngram, int64_t> ngram_counts(const std::vector<int32_t>& ids, int n) {
  std::map<Ngram, int64_t> counts;
  if (ids.size() < size_t(n)) return counts;
  for (size_t i = 0; i + n <= ids.size(); ++i) ++counts[Ngram(ids.begin() + i, ids.begin() + i + n)];
  return counts;
}

// rouge's F: 2 * ((p * r) / (p + r + 1e-8)), evaluated in that order.
double rouge_f(double p, double r) { return 2.0 * ((p * r) / (p + r + 1e-8)); }

// Correctly rounded sum (as Python's math.fsum): exact partials, then a half-way correction.
double exact_sum(const std::vector<double>& xs) {
  std::vector<double> partials;
  for (double x : xs) {
    size_t keep = 0;
    for (size_t j = 0; j < partials.size(); ++j) {
      double y = partials[j];
      if (std::fabs(x) < std::fabs(y)) std::swap(x, y);
      double hi = x + y;
      double lo = y - (hi - x);
      if (lo != 0.0) partials[keep++] = lo;
      x = hi;
    }
    partials.resize(keep);
    if (x != 0.0) partials.push_back(x);
  }
  if (partials.empty()) return 0.0;
  size_t k = partials.size() - 1;
  double hi = partials[k], lo = 0.0;
  while (k > 0) {
    double x = hi, y = partials[--k];
    hi = x + y;
    lo = y - (hi - x);
    if (lo != 0.0) break;
  }
  // The remaining partials decide a tie between hi and hi + 2*lo.
  if (k > 0 && ((lo < 0 && partials[k - 1] < 0) || (lo > 0 && partials[k - 1] > 0))) {
    double y = lo * 2, x = hi + y;
    if (y == x - hi) hi = x;
  }
  return hi;
}

// numpy's pairwise summation of a contiguous float64 array (np.add.reduce / np.mean).
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double res = 0.0;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

double numpy_mean(const std::vector<double>& v) {
  if (v.empty()) return 0.0;
  return (0.0 + pairwise_sum(v.data(), v.size())) / double(v.size());
}

}  // namespace

std::vector<std::string> segment_words(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) out.push_back(std::move(word));
    word.clear();
  };
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    bool valid = true;
    size_t len = decode_utf8(text, i, &cp, &valid);
    CharClass cls = valid ? classify(cp) : CharClass::kWord;
    if (cls == CharClass::kWord) {
      word.append(text, i, len);
    } else {
      flush();
      if (cls == CharClass::kSingle) out.emplace_back(text, i, len);
    }
    i += len;
  }
  flush();
  return out;
}

double rouge_n_f(const std::vector<std::string>& hyp, const std::vector<std::string>& ref, int n) {
  if (n < 1) throw std::invalid_argument("rouge_n_f: n must be >= 1, got " + std::to_string(n));
  Interner interner;
  auto h = ngram_counts(interner.ids(hyp), n);
  auto r = ngram_counts(interner.ids(ref), n);
  if (h.empty() || r.empty()) return 0.0;
  int64_t common = 0;
  for (const auto& [gram, count] : h) common += r.count(gram) ? 1 : 0;
  double p = double(common) / double(h.size());
  double rc = double(common) / double(r.size());
  return rouge_f(p, rc);
}

double rouge_l_f(const std::vector<std::string>& hyp, const std::vector<std::string>& ref) {
  if (hyp.empty() || ref.empty()) return 0.0;
  Interner interner;
  auto x = interner.ids(ref), y = interner.ids(hyp);
  std::vector<int64_t> prev(y.size() + 1, 0), cur(y.size() + 1, 0);
  for (size_t i = 1; i <= x.size(); ++i) {
    cur[0] = 0;
    for (size_t j = 1; j <= y.size(); ++j)
      cur[j] = x[i - 1] == y[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  int64_t lcs = prev[y.size()];
  double p = double(lcs) / double(hyp.size());
  double r = double(lcs) / double(ref.size());
  return rouge_f(p, r);
}

BleuPrecision bleu_modified_precision(const std::vector<std::vector<std::string>>& refs,
                                      const std::vector<std::string>& hyp, int n) {
  if (n < 1) throw std::invalid_argument("bleu_modified_precision: n must be >= 1");
  Interner interner;
  auto counts = ngram_counts(interner.ids(hyp), n);
  std::map<Ngram, int64_t> max_ref;
  for (const auto& ref : refs) {
    auto rc = ngram_counts(interner.ids(ref), n);
    for (const auto& [gram, c] : counts) {
      auto it = rc.find(gram);
      int64_t v = it == rc.end() ? 0 : it->second;
      int64_t& m = max_ref[gram];
      m = std::max(m, v);
    }
  }
  BleuPrecision p;
  int64_t total = 0;
  for (const auto& [gram, c] : counts) {
    total += c;
    auto it = max_ref.find(gram);
    p.numerator += std::min(c, it == max_ref.end() ? int64_t(0) : it->second);
  }
  p.denominator = std::max<int64_t>(1, total);
  return p;
}

std::size_t bleu_closest_ref_length(const std::vector<std::vector<std::string>>& refs, std::size_t hyp_len) {
  if (refs.empty()) throw std::invalid_argument("BLEU needs at least one reference");
  std::size_t best = refs[0].size();
  auto dist = [&](std::size_t len) { return len > hyp_len ? len - hyp_len : hyp_len - len; };
  for (const auto& r : refs) {
    std::size_t len = r.size();
    if (dist(len) < dist(best) || (dist(len) == dist(best) && len < best)) best = len;
  }
  return best;
}

double bleu_brevity_penalty(std::size_t closest_ref_len, std::size_t hyp_len) {
  if (hyp_len > closest_ref_len) return 1.0;
  if (hyp_len == 0) return 0.0;
  return std::exp(1.0 - double(closest_ref_len) / double(hyp_len));
}

double sentence_bleu(const std::vector<std::vector<std::string>>& refs, const std::vector<std::string>& hyp,
                     const std::vector<double>& weights, BleuSmoothing smoothing, double epsilon) {
  if (refs.empty()) throw std::invalid_argument("sentence_bleu: no reference");
  if (weights.empty()) throw std::invalid_argument("sentence_bleu: no weights");
  const int max_n = int(weights.size());
  std::vector<BleuPrecision> precisions;
  for (int n = 1; n <= max_n; ++n) precisions.push_back(bleu_modified_precision(refs, hyp, n));
  double bp = bleu_brevity_penalty(bleu_closest_ref_length(refs, hyp.size()), hyp.size());
  if (precisions[0].numerator == 0) return 0.0;

  std::vector<double> p(max_n);
  int k = 1;  // NIST's exponent: the k-th zero precision gets 1 / 2^k
  for (int i = 0; i < max_n; ++i) {
    const auto& pr = precisions[i];
    if (pr.numerator != 0) {
      p[i] = double(pr.numerator) / double(pr.denominator);
    } else if (smoothing == BleuSmoothing::kMethod1) {
      p[i] = (0 + epsilon) / double(pr.denominator);
    } else if (smoothing == BleuSmoothing::kMethod3) {
      p[i] = 1.0 / (std::ldexp(1.0, k) * double(pr.denominator));
      ++k;
    } else {
      p[i] = DBL_MIN;
    }
  }
  std::vector<double> terms;
  for (int i = 0; i < max_n; ++i)
    if (p[i] > 0) terms.push_back(weights[i] * std::log(p[i]));
  return bp * std::exp(exact_sum(terms));
}

double sentence_bleu4_method3(const std::vector<std::vector<std::string>>& refs, const std::vector<std::string>& hyp) {
  return sentence_bleu(refs, hyp, {0.25, 0.25, 0.25, 0.25}, BleuSmoothing::kMethod3);
}

double python_round(double x, int digits) {
  if (!std::isfinite(x)) return x;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);  // glibc: exact decimal rounding
  return std::strtod(buf, nullptr);
}

TextScores score_pair(const std::string& prediction, const std::string& reference) {
  TextScores s;
  auto hyp = segment_words(prediction);
  auto ref = segment_words(reference);
  if (hyp.empty() || ref.empty()) return s;
  s.rouge1 = python_round(rouge_n_f(hyp, ref, 1) * 100, 4);
  s.rouge2 = python_round(rouge_n_f(hyp, ref, 2) * 100, 4);
  s.rougeL = python_round(rouge_l_f(hyp, ref) * 100, 4);
  s.bleu4 = sentence_bleu4_method3({ref}, hyp);
  return s;
}

std::map<std::string, double> mean_text_scores(const std::vector<std::string>& predictions,
                                               const std::vector<std::string>& references) {
  if (predictions.size() != references.size())
    throw std::invalid_argument("mean_text_scores: " + std::to_string(predictions.size()) + " predictions but " +
                                std::to_string(references.size()) + " references");
  std::vector<double> r1, r2, rl, b4;
  for (size_t i = 0; i < predictions.size(); ++i) {
    auto s = score_pair(predictions[i], references[i]);
    r1.push_back(s.rouge1);
    r2.push_back(s.rouge2);
    rl.push_back(s.rougeL);
    b4.push_back(s.bleu4);
  }
  return {{"rouge-1", numpy_mean(r1)}, {"rouge-2", numpy_mean(r2)}, {"rouge-l", numpy_mean(rl)}, {"bleu-4", numpy_mean(b4)}};
}

}  // namespace ftrun::runtime
