// Text metrics (runtime/text_metrics.h): hand-computed cases, values published by nltk and the
// rouge package, and a comparison with the real nltk (Debian's python3-nltk) on random pairs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/text_metrics.h"

namespace fs = std::filesystem;
using ftrun::runtime::BleuSmoothing;
using Tokens = std::vector<std::string>;

namespace {

Tokens split_ws(const std::string& s) {
  std::istringstream in(s);
  Tokens out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// rouge's F with its 1e-8 in the denominator.
double rouge_formula(double p, double r) { return 2.0 * ((p * r) / (p + r + 1e-8)); }

}  // namespace

// ---------------------------------------------------------------- segmentation

TEST(SegmentWords, MixedChineseEnglish) {
  EXPECT_EQ(ftrun::runtime::segment_words("我爱北京 NLP-2024 models!"),
            (Tokens{"我", "爱", "北", "京", "NLP", "-", "2024", "models", "!"}));
  EXPECT_EQ(ftrun::runtime::segment_words("你好，世界！GLM4模型"),
            (Tokens{"你", "好", "，", "世", "界", "！", "GLM4", "模", "型"}));
  EXPECT_EQ(ftrun::runtime::segment_words("“引号”和《书名》……"),
            (Tokens{"“", "引", "号", "”", "和", "《", "书", "名", "》", "…", "…"}));
}

TEST(SegmentWords, WhitespacePunctuationAndOtherScripts) {
  EXPECT_EQ(ftrun::runtime::segment_words(""), Tokens{});
  EXPECT_EQ(ftrun::runtime::segment_words(" \t\n\r\u3000\u00a0 "), Tokens{});
  EXPECT_EQ(ftrun::runtime::segment_words("  tabs\tand\nnew\u00a0line\u3000end  "),
            (Tokens{"tabs", "and", "new", "line", "end"}));
  EXPECT_EQ(ftrun::runtime::segment_words("don't use C++ (3.14)"),
            (Tokens{"don", "'", "t", "use", "C", "+", "+", "(", "3", ".", "14", ")"}));
  EXPECT_EQ(ftrun::runtime::segment_words("café über naïve"), (Tokens{"café", "über", "naïve"}));
  EXPECT_EQ(ftrun::runtime::segment_words("한국어 텍스트"), (Tokens{"한국어", "텍스트"}));
  EXPECT_EQ(ftrun::runtime::segment_words("カタカナ"), (Tokens{"カ", "タ", "カ", "ナ"}));
  EXPECT_EQ(ftrun::runtime::segment_words("hi🙂 ok"), (Tokens{"hi🙂", "ok"}));
  EXPECT_EQ(ftrun::runtime::segment_words("𠀀𠀁"), (Tokens{"𠀀", "𠀁"}));  // CJK extension B
  // An invalid byte stays inside its word, untouched.
  EXPECT_EQ(ftrun::runtime::segment_words("ab\xff" "cd ef"), (Tokens{"ab\xff" "cd", "ef"}));
}

// ---------------------------------------------------------------- ROUGE, by hand

TEST(Rouge, HandComputedEnglish) {
  Tokens hyp = split_ws("the cat sat on the mat"), ref = split_ws("the cat is on the mat");
  // Distinct unigrams: hyp {the cat sat on mat} = 5, ref {the cat is on mat} = 5, common 4:
  // p = r = 4/5, F = 2 * (0.64 / (1.6 + 1e-8)) = 0.799999997...
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_n_f(hyp, ref, 1), rouge_formula(0.8, 0.8));
  EXPECT_NEAR(ftrun::runtime::rouge_n_f(hyp, ref, 1), 0.8, 1e-8);
  // Bigrams: hyp {the-cat cat-sat sat-on on-the the-mat}, ref {the-cat cat-is is-on on-the
  // the-mat}: 3 of 5 common -> p = r = 0.6.
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_n_f(hyp, ref, 2), rouge_formula(0.6, 0.6));
  // LCS = "the cat on the mat" = 5 of 6 tokens each side -> p = r = 5/6.
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_l_f(hyp, ref), rouge_formula(5.0 / 6, 5.0 / 6));
  // Trigrams: hyp {the-cat-sat cat-sat-on sat-on-the on-the-mat}, ref {the-cat-is cat-is-on
  // is-on-the on-the-mat}: 1 of 4 -> 0.25.
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_n_f(hyp, ref, 3), rouge_formula(0.25, 0.25));
}

TEST(Rouge, NgramsAreSetsButLcsCountsRepeats) {
  Tokens hyp = {"a", "a", "a", "b"}, ref = {"a", "b", "b"};
  // rouge_chinese's exclusive=True: unigram sets {a, b} and {a, b} -> p = r = 1
  // (clipped counts would give p = 2/4, r = 2/3).
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_n_f(hyp, ref, 1), rouge_formula(1, 1));
  // Bigram sets {aa, ab} and {ab, bb}: 1 common of 2 each -> 0.5.
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_n_f(hyp, ref, 2), rouge_formula(0.5, 0.5));
  // LCS("a a a b", "a b b") = "a b" = 2: p = 2/4, r = 2/3, F = 2 * (1/3) / (7/6) = 4/7.
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_l_f(hyp, ref), rouge_formula(0.5, 2.0 / 3));
  EXPECT_NEAR(ftrun::runtime::rouge_l_f(hyp, ref), 4.0 / 7, 1e-8);
}

TEST(Rouge, IdenticalDisjointEmpty) {
  Tokens a = split_ws("one two three four"), b = split_ws("five six seven");
  // Identical: p = r = 1, F = 2 / (2 + 1e-8), not exactly 1 (the package's epsilon).
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_n_f(a, a, 1), 2.0 / (2.0 + 1e-8));
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_n_f(a, a, 2), 2.0 / (2.0 + 1e-8));
  EXPECT_DOUBLE_EQ(ftrun::runtime::rouge_l_f(a, a), 2.0 / (2.0 + 1e-8));
  EXPECT_EQ(ftrun::runtime::rouge_n_f(a, b, 1), 0.0);
  EXPECT_EQ(ftrun::runtime::rouge_n_f(a, b, 2), 0.0);
  EXPECT_EQ(ftrun::runtime::rouge_l_f(a, b), 0.0);
  EXPECT_EQ(ftrun::runtime::rouge_n_f({}, a, 1), 0.0);
  EXPECT_EQ(ftrun::runtime::rouge_n_f(a, {}, 1), 0.0);
  EXPECT_EQ(ftrun::runtime::rouge_l_f({}, a), 0.0);
  EXPECT_EQ(ftrun::runtime::rouge_n_f({"x"}, {"x"}, 2), 0.0);  // no bigram on either side
  EXPECT_THROW(ftrun::runtime::rouge_n_f(a, a, 0), std::invalid_argument);
}

// ---------------------------------------------------------------- BLEU, by hand

TEST(Bleu, IdenticalAndDisjoint) {
  Tokens a = split_ws("the quick brown fox jumps"), b = split_ws("lazy dogs sleep all day");
  // Every precision 1, equal lengths -> BP = 1, exp(0) = 1 exactly.
  EXPECT_EQ(ftrun::runtime::sentence_bleu4_method3({a}, a), 1.0);
  // No unigram in common -> nltk returns 0 before any smoothing.
  EXPECT_EQ(ftrun::runtime::sentence_bleu4_method3({b}, a), 0.0);
  EXPECT_EQ(ftrun::runtime::sentence_bleu4_method3({a}, {}), 0.0);  // empty hypothesis
  EXPECT_EQ(ftrun::runtime::sentence_bleu4_method3({Tokens{}}, a), 0.0);  // empty reference
  EXPECT_THROW(ftrun::runtime::sentence_bleu4_method3({}, a), std::invalid_argument);
}

TEST(Bleu, Method3SmoothsZeroOrders) {
  Tokens ref = {"a", "b", "c", "d", "e"}, hyp = {"a", "b", "x", "d", "e"};
  // p1 = 4/5 (a b d e), p2 = 2/4 (ab, de), p3 = 0/3 -> 1/(2^1 * 3) = 1/6, p4 = 0/2 -> 1/(2^2 * 2) = 1/8.
  // BP = 1 (5 vs 5). BLEU = (4/5 * 1/2 * 1/6 * 1/8)^(1/4) = (1/120)^(1/4) = 0.30213753973...
  EXPECT_NEAR(ftrun::runtime::sentence_bleu4_method3({ref}, hyp), std::pow(1.0 / 120, 0.25), 1e-15);
  EXPECT_NEAR(ftrun::runtime::sentence_bleu4_method3({ref}, hyp), 0.3021375397356768, 1e-15);
  // method1 (epsilon 0.1): p3 = 0.1/3, p4 = 0.1/2 -> (0.8 * 0.5 * 0.1/3 * 0.05)^(1/4).
  EXPECT_NEAR(ftrun::runtime::sentence_bleu({ref}, hyp, {0.25, 0.25, 0.25, 0.25}, BleuSmoothing::kMethod1),
              std::pow(0.8 * 0.5 * (0.1 / 3) * 0.05, 0.25), 1e-15);
  // No smoothing: the zero orders become DBL_MIN -> exp(0.25 log .4 + 0.5 log DBL_MIN): tiny but > 0.
  double none = ftrun::runtime::sentence_bleu({ref}, hyp);
  EXPECT_GT(none, 0.0);
  EXPECT_NEAR(std::log(none), 0.25 * std::log(0.4) + 0.5 * std::log(DBL_MIN), 1e-9);
  // Weights (1/2, 1/2): only p1, p2 -> sqrt(0.8 * 0.5).
  EXPECT_NEAR(ftrun::runtime::sentence_bleu({ref}, hyp, {0.5, 0.5}), std::sqrt(0.4), 1e-15);
}

TEST(Bleu, BrevityPenaltyAndShortHypotheses) {
  Tokens ref = split_ws("a b c d e f g h"), hyp = split_ws("a b c d");
  // All four precisions are 1 (4/4, 3/3, 2/2, 1/1); BP = exp(1 - 8/4) = exp(-1).
  EXPECT_NEAR(ftrun::runtime::sentence_bleu4_method3({ref}, hyp), std::exp(-1.0), 1e-15);
  // Hypothesis shorter than 4: "a b" vs "a b c": p1 = 2/2, p2 = 1/1, p3 = 0/max(1, 0) -> 1/2,
  // p4 -> 1/4; BP = exp(1 - 3/2). BLEU = exp(-0.5) * (1/8)^(1/4) = 0.36064...
  EXPECT_NEAR(ftrun::runtime::sentence_bleu4_method3({split_ws("a b c")}, split_ws("a b")),
              std::exp(-0.5) * std::pow(0.125, 0.25), 1e-15);
  // Longer hypothesis: BP = 1; "a b c d x" vs "a b c d": p = 4/5, 3/4, 2/3, 1/2.
  EXPECT_NEAR(ftrun::runtime::sentence_bleu4_method3({hyp}, split_ws("a b c d x")),
              std::pow(0.8 * 0.75 * (2.0 / 3) * 0.5, 0.25), 1e-15);
  // Closest reference: 11 and 13 are both 1 away from 12 -> the shorter, 11.
  EXPECT_EQ(ftrun::runtime::bleu_closest_ref_length({Tokens(13, "a"), Tokens(11, "a")}, 12), 11u);
  EXPECT_EQ(ftrun::runtime::bleu_brevity_penalty(11, 12), 1.0);
  EXPECT_EQ(ftrun::runtime::bleu_brevity_penalty(5, 0), 0.0);
}

TEST(Bleu, ModifiedPrecisionClipsCounts) {
  // nltk's "the the the ..." example: "the" occurs at most twice in one reference -> 2/7.
  auto p = ftrun::runtime::bleu_modified_precision(
      {split_ws("the cat is on the mat"), split_ws("there is a cat on the mat")}, split_ws("the the the the the the the"), 1);
  EXPECT_EQ(p.numerator, 2);
  EXPECT_EQ(p.denominator, 7);
  // Order above the hypothesis length: 0 / max(1, 0).
  p = ftrun::runtime::bleu_modified_precision({split_ws("a b")}, split_ws("a"), 2);
  EXPECT_EQ(p.numerator, 0);
  EXPECT_EQ(p.denominator, 1);
}

// ---------------------------------------------------------------- published values

namespace {
// nltk 3.8 nltk/translate/bleu_score.py docstrings (sentence_bleu, modified_precision, SmoothingFunction).
const Tokens kHyp1 = {"It", "is", "a", "guide", "to", "action", "which", "ensures", "that",
                      "the", "military", "always", "obeys", "the", "commands", "of", "the", "party"};
const Tokens kHyp2 = {"It", "is", "to", "insure", "the", "troops", "forever", "hearing", "the",
                      "activity", "guidebook", "that", "party", "direct"};
const Tokens kRef1 = {"It", "is", "a", "guide", "to", "action", "that", "ensures", "that",
                      "the", "military", "will", "forever", "heed", "Party", "commands"};
const Tokens kRef2 = {"It", "is", "the", "guiding", "principle", "which", "guarantees", "the", "military",
                      "forces", "always", "being", "under", "the", "command", "of", "the", "Party"};
const Tokens kRef3 = {"It", "is", "the", "practical", "guide", "for", "the", "army", "always",
                      "to", "heed", "the", "directions", "of", "the", "party"};
}  // namespace

TEST(BleuPublished, NltkDocstrings) {
  std::vector<Tokens> refs = {kRef1, kRef2, kRef3};
  EXPECT_NEAR(ftrun::runtime::sentence_bleu(refs, kHyp1), 0.5045666840058485, 1e-15);
  EXPECT_NEAR(ftrun::runtime::sentence_bleu(refs, kHyp1, {0.5, 0.5}), 0.7453, 1e-4);
  EXPECT_NEAR(ftrun::runtime::sentence_bleu(refs, kHyp1, {1. / 3, 1. / 3, 1. / 3}), 0.6240, 1e-4);
  EXPECT_NEAR(ftrun::runtime::sentence_bleu(refs, kHyp1, {0.2, 0.2, 0.2, 0.2, 0.2}), 0.3920, 1e-4);
  EXPECT_EQ(std::round(ftrun::runtime::sentence_bleu(refs, kHyp2) * 1e4), 0.0);  // "round(..., 4) == 0.0"
  EXPECT_NEAR(ftrun::runtime::sentence_bleu(refs, kHyp2, {0.25, 0.25, 0.25, 0.25}, BleuSmoothing::kMethod1),
              0.0370, 1e-4);
  // SmoothingFunction docstring: one reference, no zero precision -> method0/1/3 all 0.4118...
  for (auto s : {BleuSmoothing::kNone, BleuSmoothing::kMethod1, BleuSmoothing::kMethod3})
    EXPECT_NEAR(ftrun::runtime::sentence_bleu({kRef1}, kHyp1, {0.25, 0.25, 0.25, 0.25}, s), 0.4118, 1e-4);
  // modified_precision docstring: 0.9444..., 0.5714..., 0.5882352941176471, 0.07692...
  auto prec = [&](const Tokens& h, int n) {
    auto p = ftrun::runtime::bleu_modified_precision(refs, h, n);
    return double(p.numerator) / double(p.denominator);
  };
  EXPECT_NEAR(prec(kHyp1, 1), 0.9444, 1e-4);
  EXPECT_NEAR(prec(kHyp2, 1), 0.5714, 1e-4);
  EXPECT_EQ(prec(kHyp1, 2), 0.5882352941176471);
  EXPECT_NEAR(prec(kHyp2, 2), 0.07692, 1e-5);
  // brevity_penalty docstring.
  EXPECT_EQ(ftrun::runtime::bleu_brevity_penalty(
                ftrun::runtime::bleu_closest_ref_length({Tokens(28, "a"), Tokens(28, "a")}, 12), 12),
            0.2635971381157267);
  EXPECT_NEAR(ftrun::runtime::bleu_brevity_penalty(
                  ftrun::runtime::bleu_closest_ref_length({Tokens(13, "a"), Tokens(2, "a")}, 12), 12),
              0.9200, 1e-4);
  EXPECT_NEAR(ftrun::runtime::bleu_brevity_penalty(
                  ftrun::runtime::bleu_closest_ref_length({Tokens(11, "a"), Tokens(8, "a")}, 7), 7),
              0.8668, 1e-4);
  EXPECT_EQ(ftrun::runtime::bleu_brevity_penalty(
                ftrun::runtime::bleu_closest_ref_length(
                    {Tokens(11, "a"), Tokens(8, "a"), Tokens(6, "a"), Tokens(7, "a")}, 7), 7),
            1.0);
}

TEST(RougePublished, RougePackageTestData) {
  // pltrdy/rouge tests/data.json (also shipped by rouge_chinese 1.0.3), entries 0 and 3:
  // whitespace-tokenised text and the expected "f" of rouge-1 / rouge-2. (The rouge-l values
  // in that file are the old union-LCS ones, which rouge_chinese no longer computes.)
  struct Case {
    const char* hyp;
    const char* ref;
    double r1, r2;
  };
  const Case cases[] = {
      {"the #### transcript is a written version of each day 's cnn student news program use this transcript "
       "to help students with reading comprehension and vocabulary use the weekly newsquiz to test your "
       "knowledge of storie s you saw on cnn student news",
       "this page includes the show transcript use the transcript to help students with reading comprehension "
       "and vocabulary at the bottom of the page , comment for a chance to be mentioned on cnn student news . "
       "you must be a teacher or a student age # # or older to request a mention on the cnn student news roll "
       "call . the weekly newsquiz tests students ' knowledge of even ts in the news",
       0.5238095189484127, 0.27027026566025497},
      {"the captain of the delta flight was en route to <unk> airport , the coast guard says the plane was "
       "carrying ### passengers and ## crew members the plane was en route from atlanta to the dominican "
       "republic",
       "delta air lines flight #### skidded into a fence last week at a laguardia airport beset by winter "
       "weather the ntsb says the crew reported they did not sense any deceleration from the wheel brake upon "
       "landing",
       0.2295081917871541, 0.028985502255829465},
  };
  for (const auto& c : cases) {
    Tokens h = split_ws(c.hyp), r = split_ws(c.ref);
    EXPECT_EQ(ftrun::runtime::rouge_n_f(h, r, 1), c.r1);
    EXPECT_EQ(ftrun::runtime::rouge_n_f(h, r, 2), c.r2);
  }
}

// ---------------------------------------------------------------- rows and means

TEST(TextScores, ScorePairAndMean) {
  // Identical Chinese text: rouge 2/(2+1e-8) * 100 = 99.9999995 -> round(., 4) = 100.0; bleu 1.
  auto s = ftrun::runtime::score_pair("我爱北京天安门", "我爱北京天安门");
  EXPECT_EQ(s.rouge1, 100.0);
  EXPECT_EQ(s.rouge2, 100.0);
  EXPECT_EQ(s.rougeL, 100.0);
  EXPECT_EQ(s.bleu4, 1.0);
  // "我爱北京" vs "我爱上海": tokens 我 爱 北 京 / 我 爱 上 海. Unigrams 2 of 4 each side -> p = r = .5;
  // bigrams {我爱 爱北 北京} vs {我爱 爱上 上海}: 1 of 3 -> 1/3; LCS 2 -> .5.
  // x100 rounded to 4 decimals: 49.9999995 -> 50.0, 33.33333325 -> 33.3333, 50.0.
  s = ftrun::runtime::score_pair("我爱北京", "我爱上海");
  EXPECT_EQ(s.rouge1, 50.0);
  EXPECT_EQ(s.rouge2, 33.3333);
  EXPECT_EQ(s.rougeL, 50.0);
  // BLEU: p1 = 2/4, p2 = 1/3, p3 = 0/2 -> 1/4, p4 = 0/1 -> 1/4; BP 1 -> (1/96)^(1/4).
  EXPECT_NEAR(s.bleu4, std::pow(1.0 / 96, 0.25), 1e-15);
  // Empty (or whitespace-only) prediction: all zero instead of the demo's ValueError.
  s = ftrun::runtime::score_pair("  ", "我爱北京");
  EXPECT_EQ(s.rouge1, 0.0);
  EXPECT_EQ(s.rouge2, 0.0);
  EXPECT_EQ(s.rougeL, 0.0);
  EXPECT_EQ(s.bleu4, 0.0);

  auto m = ftrun::runtime::mean_text_scores({"我爱北京天安门", "我爱北京", ""}, {"我爱北京天安门", "我爱上海", "x"});
  ASSERT_EQ(m.size(), 4u);
  EXPECT_DOUBLE_EQ(m.at("rouge-1"), (100.0 + 50.0 + 0.0) / 3);
  EXPECT_DOUBLE_EQ(m.at("rouge-2"), (100.0 + 33.3333 + 0.0) / 3);
  EXPECT_DOUBLE_EQ(m.at("rouge-l"), (100.0 + 50.0 + 0.0) / 3);
  EXPECT_DOUBLE_EQ(m.at("bleu-4"), (1.0 + std::pow(1.0 / 96, 0.25) + 0.0) / 3);
  EXPECT_THROW(ftrun::runtime::mean_text_scores({"a"}, {}), std::invalid_argument);
  EXPECT_EQ(ftrun::runtime::mean_text_scores({}, {}).at("bleu-4"), 0.0);
}

TEST(TextScores, PythonRound) {
  EXPECT_EQ(ftrun::runtime::python_round(33.333333325, 4), 33.3333);
  EXPECT_EQ(ftrun::runtime::python_round(99.9999995, 4), 100.0);
  EXPECT_EQ(ftrun::runtime::python_round(0.00005, 4), 0.0001);  // 0.00005 is a bit above the tie in binary
  EXPECT_EQ(ftrun::runtime::python_round(2.675, 2), 2.67);      // Python's documented example
  EXPECT_EQ(ftrun::runtime::python_round(0.125, 2), 0.12);      // exact tie -> even
}

// ---------------------------------------------------------------- against the real nltk

TEST(TextScoresNltk, RandomPairsMatchNltkAndNumpy) {
  const std::string py = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  if (std::system((py + " -c 'import nltk.translate.bleu_score, numpy' > /dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << "python3 with nltk and numpy is needed (apt-get install python3-nltk python3-numpy)";

  // Random mixed Chinese / English pairs: a reference and a mutated copy (drops, swaps,
  // replacements, insertions), some unrelated, some with two references, a few empty.
  std::mt19937 rng(1234);
  const std::vector<std::string> zh = {"的", "一", "是", "在", "不", "了", "有", "和", "人", "这", "中", "大",
                                       "模", "型", "训", "练", "数", "据", "学", "习", "率", "损", "失", "，",
                                       "。", "！", "？", "北", "京", "上", "海"};
  const std::vector<std::string> en = {"model", "data", "train", "loss", "the", "of", "GPU", "LoRA",
                                       "2024", "v1", "NLP", "-", ",", ".", "!", "a"};
  auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  auto sentence = [&](int len) {
    std::string s;
    for (int i = 0; i < len; ++i) s += (rng() % 3 == 0) ? " " + pick(en) + " " : pick(zh);
    return s;
  };
  auto mutate = [&](Tokens t) {
    int edits = int(rng() % 6);
    for (int e = 0; e < edits && !t.empty(); ++e) {
      size_t i = rng() % t.size();
      switch (rng() % 4) {
        case 0: t.erase(t.begin() + i); break;
        case 1: std::swap(t[i], t[rng() % t.size()]); break;
        case 2: t[i] = pick(zh); break;
        default: t.insert(t.begin() + i, pick(en)); break;
      }
    }
    return t;
  };
  nlohmann::json cases = nlohmann::json::array();
  std::vector<std::vector<Tokens>> all_refs;
  std::vector<Tokens> all_hyps;
  for (int k = 0; k < 60; ++k) {
    std::vector<Tokens> refs = {ftrun::runtime::segment_words(sentence(2 + int(rng() % 30)))};
    if (k % 7 == 3) refs.push_back(ftrun::runtime::segment_words(sentence(2 + int(rng() % 30))));
    Tokens hyp;
    if (k % 10 == 9) hyp = ftrun::runtime::segment_words(sentence(1 + int(rng() % 20)));  // unrelated
    else if (k % 25 != 24) hyp = mutate(refs[0]);                                       // k = 24, 49: empty
    all_refs.push_back(refs);
    all_hyps.push_back(hyp);
    // Per-row scores from our side, for the demo's round(f * 100, 4) and np.mean.
    nlohmann::json c = {{"refs", refs}, {"hyp", hyp}};
    c["rouge_raw"] = {ftrun::runtime::rouge_n_f(hyp, refs[0], 1), ftrun::runtime::rouge_n_f(hyp, refs[0], 2),
                      ftrun::runtime::rouge_l_f(hyp, refs[0])};
    cases.push_back(c);
  }
  fs::path dir = fs::temp_directory_path() / ("ftrun_text_metrics_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "cases.json") << cases.dump();
  const char* script = R"(
import json, sys, warnings
import numpy as np
from nltk.translate.bleu_score import sentence_bleu, SmoothingFunction
warnings.simplefilter('ignore')
cases = json.load(open(sys.argv[1], encoding='utf-8'))
sf = SmoothingFunction()
out = {'method3': [], 'method1': [], 'method0': [], 'rounded': []}
for c in cases:
    out['method3'].append(float(sentence_bleu(c['refs'], c['hyp'], smoothing_function=sf.method3)))
    out['method1'].append(float(sentence_bleu(c['refs'], c['hyp'], smoothing_function=sf.method1)))
    out['method0'].append(float(sentence_bleu(c['refs'], c['hyp'])))
    out['rounded'].append([round(v * 100, 4) for v in c['rouge_raw']])
out['mean_rounded'] = [float(np.mean([r[i] for r in out['rounded']])) for i in range(3)]
out['mean_method3_first'] = float(np.mean(
    [sentence_bleu(c['refs'][:1], c['hyp'], smoothing_function=sf.method3) for c in cases]))
json.dump(out, open(sys.argv[2], 'w'))
)";
  std::ofstream(dir / "nltk_side.py") << script;
  std::string cmd = py + " " + (dir / "nltk_side.py").string() + " " + (dir / "cases.json").string() + " " +
                    (dir / "nltk.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  nlohmann::json ref;
  std::ifstream(dir / "nltk.json") >> ref;
  fs::remove_all(dir);

  int exact = 0, nonzero = 0, smoothed = 0;
  for (size_t k = 0; k < all_hyps.size(); ++k) {
    double ours = ftrun::runtime::sentence_bleu4_method3(all_refs[k], all_hyps[k]);
    double theirs = ref["method3"][k].get<double>();
    EXPECT_NEAR(ours, theirs, 1e-9) << "row " << k;
    exact += ours == theirs;
    nonzero += theirs > 0;
    auto p4 = ftrun::runtime::bleu_modified_precision(all_refs[k], all_hyps[k], 4);
    smoothed += theirs > 0 && p4.numerator == 0;
    EXPECT_NEAR(ftrun::runtime::sentence_bleu(all_refs[k], all_hyps[k], {0.25, 0.25, 0.25, 0.25},
                                              BleuSmoothing::kMethod1),
                ref["method1"][k].get<double>(), 1e-9)
        << "row " << k;
    double m0 = ftrun::runtime::sentence_bleu(all_refs[k], all_hyps[k]), t0 = ref["method0"][k].get<double>();
    EXPECT_NEAR(m0, t0, 1e-9 * std::max(1.0, t0)) << "row " << k;
    // The demo's round(f * 100, 4): ours must give the same double.
    const auto& raw = cases[k]["rouge_raw"];
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(ftrun::runtime::python_round(raw[i].get<double>() * 100, 4), ref["rounded"][k][i].get<double>())
          << "row " << k << " metric " << i;
  }
  // The sample must exercise the interesting paths, not only zeros.
  EXPECT_GT(nonzero, 30);
  EXPECT_GT(smoothed, 3);
  EXPECT_GT(exact, 50) << "expected bit-identical results on almost every row";
  // mean_text_scores on the same rows (space-joined tokens re-segment to the same tokens; the
  // first reference only, as the demo has one) against np.mean over the demo's row values.
  std::vector<std::string> preds, golds;
  auto join = [](const Tokens& t) {
    std::string s;
    for (const auto& w : t) s += (s.empty() ? "" : " ") + w;
    return s;
  };
  for (size_t k = 0; k < all_hyps.size(); ++k) {
    preds.push_back(join(all_hyps[k]));
    golds.push_back(join(all_refs[k][0]));
    ASSERT_EQ(ftrun::runtime::segment_words(preds.back()), all_hyps[k]);
  }
  auto means = ftrun::runtime::mean_text_scores(preds, golds);
  EXPECT_EQ(means.at("rouge-1"), ref["mean_rounded"][0].get<double>());
  EXPECT_EQ(means.at("rouge-2"), ref["mean_rounded"][1].get<double>());
  EXPECT_EQ(means.at("rouge-l"), ref["mean_rounded"][2].get<double>());
  EXPECT_NEAR(means.at("bleu-4"), ref["mean_method3_first"].get<double>(), 1e-12);
  std::cout << "[ nltk     ] " << exact << "/" << all_hyps.size() << " rows bit-identical, " << smoothed
            << " with method3 smoothing\n";
}
