// Text-generation metrics for evaluation: the GLM-4 demo's compute_metrics (ROUGE-1/2/L F from
// rouge_chinese 1.0.3, BLEU-4 from nltk's sentence_bleu with SmoothingFunction().method3),
// re-implemented in plain C++. Segmentation differs from the demo's jieba: see
// docs/evaluation.md ("Metrics") for what is matched exactly and what is not.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ftrun::runtime {

// Words for scoring. Each CJK ideograph, kana and CJK / full-width punctuation mark is one
// token; ASCII punctuation and other punctuation marks are one token each; runs of any other
// non-space characters (ASCII letters and digits, Latin, Cyrillic, Hangul, emoji, ...) form one
// word; whitespace (everything Python's str.split() splits on) separates and is dropped.
// Invalid UTF-8 bytes count as word characters and are kept as they are.
// "我爱北京 NLP-2024 models!" -> 我 爱 北 京 NLP - 2024 models !
std::vector<std::string> segment_words(const std::string& utf8_text);

// ROUGE-N F as rouge_chinese (and the `rouge` package >= 1.0.1) computes it with its default
// exclusive=True: hyp and ref are reduced to their SETS of distinct n-grams;
// p = |common| / |hyp set|, r = |common| / |ref set|, F = 2 * (p * r / (p + r + 1e-8)).
// Returns 0 when either side has no n-gram. n >= 1 (throws std::invalid_argument otherwise).
double rouge_n_f(const std::vector<std::string>& hyp, const std::vector<std::string>& ref, int n);

// ROUGE-L F as rouge_chinese computes it: plain LCS over the whole token lists (all sentences
// flattened, repeated tokens counted), p = lcs / |hyp|, r = lcs / |ref|, same F with 1e-8.
// (The `rouge` package instead uses a union-LCS over sentences with token sets.) 0 if a side
// is empty.
double rouge_l_f(const std::vector<std::string>& hyp, const std::vector<std::string>& ref);

// nltk.translate.bleu_score (3.8) building blocks.
struct BleuPrecision {
  int64_t numerator = 0;    // clipped n-gram matches
  int64_t denominator = 1;  // max(1, number of hypothesis n-grams)
};
BleuPrecision bleu_modified_precision(const std::vector<std::vector<std::string>>& refs,
                                      const std::vector<std::string>& hyp, int n);
// Length of the reference closest to hyp_len; ties go to the shorter one. refs must not be empty.
std::size_t bleu_closest_ref_length(const std::vector<std::vector<std::string>>& refs, std::size_t hyp_len);
// 1 if hyp_len > closest_ref_len, 0 if hyp_len == 0, else exp(1 - r / c).
double bleu_brevity_penalty(std::size_t closest_ref_len, std::size_t hyp_len);

enum class BleuSmoothing {
  kNone,     // method0: a zero precision becomes DBL_MIN (BLEU ~ 0, not exactly 0)
  kMethod1,  // zero numerator -> epsilon / denominator
  kMethod3,  // NIST geometric: the k-th zero precision (k = 1, 2, ...) -> 1 / (2^k * denominator)
};
// sentence_bleu(refs, hyp, weights, smoothing_function): exactly 0 when no unigram matches
// (including an empty hypothesis); otherwise BP * exp(fsum(w_i * log p_i over p_i > 0)).
// Throws std::invalid_argument if refs is empty or weights is empty.
double sentence_bleu(const std::vector<std::vector<std::string>>& refs, const std::vector<std::string>& hyp,
                     const std::vector<double>& weights = {0.25, 0.25, 0.25, 0.25},
                     BleuSmoothing smoothing = BleuSmoothing::kNone, double epsilon = 0.1);

// nltk sentence_bleu(refs, hyp, weights=(0.25,)*4, smoothing_function=SmoothingFunction().method3).
double sentence_bleu4_method3(const std::vector<std::vector<std::string>>& refs, const std::vector<std::string>& hyp);

// Python's round(x, digits) (correctly rounded, ties to even on the exact binary value).
double python_round(double x, int digits);

// One row as the demo appends it: rouge F x100 rounded to 4 decimals, bleu as nltk gives it.
// Both strings are segmented with segment_words and scored as they are (the caller decides
// whether special tokens were stripped). A prediction or reference with no tokens scores 0 on
// all four (the demo raises "Hypothesis is empty." / "Reference is empty." instead).
struct TextScores {
  double rouge1 = 0, rouge2 = 0, rougeL = 0, bleu4 = 0;
};
TextScores score_pair(const std::string& prediction, const std::string& reference);

// Mean of score_pair over rows (numpy's pairwise summation, so the same bits as np.mean):
// keys "rouge-1", "rouge-2", "rouge-l", "bleu-4". The vectors must have the same size
// (std::invalid_argument otherwise); with no rows every key is 0 (numpy would give nan).
std::map<std::string, double> mean_text_scores(const std::vector<std::string>& predictions,
                                               const std::vector<std::string>& references);

}  // namespace ftrun::runtime
