// libftrun_sentencepiece: the only code that touches the sentencepiece C++ API. Built as a
// module and loaded at run time (see sp_shim.h for why it cannot be linked directly).
#include "data/sp_shim.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

#define FTRUN_SP_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using sentencepiece::SentencePieceProcessor;

SentencePieceProcessor* sp(void* h) { return static_cast<SentencePieceProcessor*>(h); }

int report(ftrun_sp_bytes_sink err, void* ctx, const std::string& msg) {
  if (err) err(ctx, msg.data(), msg.size());
  return 1;
}

// Exceptions must not unwind through the C boundary.
template <class Fn>
int guarded(ftrun_sp_bytes_sink err, void* ctx, Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return report(err, ctx, e.what());
  } catch (...) {
    return report(err, ctx, "unknown exception in sentencepiece");
  }
}

}  // namespace

FTRUN_SP_EXPORT int ftrun_sp_abi_version(void) { return FTRUN_SP_ABI_VERSION; }

FTRUN_SP_EXPORT void* ftrun_sp_new(void) {
  try {
    return new SentencePieceProcessor();
  } catch (...) {
    return nullptr;
  }
}

FTRUN_SP_EXPORT void ftrun_sp_delete(void* h) { delete sp(h); }

FTRUN_SP_EXPORT int ftrun_sp_load(void* h, const char* model, size_t n, ftrun_sp_bytes_sink err,
                                  void* err_ctx) {
  return guarded(err, err_ctx, [&] {
    auto st = sp(h)->LoadFromSerializedProto(absl::string_view(model, n));
    return st.ok() ? 0 : report(err, err_ctx, st.ToString());
  });
}

FTRUN_SP_EXPORT int ftrun_sp_piece_size(void* h) { return sp(h)->GetPieceSize(); }

FTRUN_SP_EXPORT int ftrun_sp_piece_to_id(void* h, const char* piece, size_t n) {
  const std::string s(piece, n);
  const int id = sp(h)->PieceToId(s);
  if (id < 0) return -1;
  if (sp(h)->IsUnknown(id) && sp(h)->IdToPiece(id) != s) return -1;
  return id;
}

FTRUN_SP_EXPORT int ftrun_sp_encode(void* h, const char* text, size_t n, ftrun_sp_ids_sink out,
                                    void* out_ctx, ftrun_sp_bytes_sink err, void* err_ctx) {
  return guarded(err, err_ctx, [&] {
    std::vector<int> ids;
    auto st = sp(h)->Encode(absl::string_view(text, n), &ids);
    if (!st.ok()) return report(err, err_ctx, st.ToString());
    out(out_ctx, ids.data(), ids.size());
    return 0;
  });
}

FTRUN_SP_EXPORT int ftrun_sp_decode(void* h, const int* ids, size_t n, ftrun_sp_bytes_sink out,
                                    void* out_ctx, ftrun_sp_bytes_sink err, void* err_ctx) {
  return guarded(err, err_ctx, [&] {
    std::string text;
    auto st = sp(h)->Decode(std::vector<int>(ids, ids + n), &text);
    if (!st.ok()) return report(err, err_ctx, st.ToString());
    out(out_ctx, text.data(), text.size());
    return 0;
  });
}

FTRUN_SP_EXPORT int ftrun_sp_train(const char* const* keys, const char* const* values, size_t n,
                                   unsigned seed, ftrun_sp_bytes_sink out, void* out_ctx,
                                   ftrun_sp_bytes_sink err, void* err_ctx) {
  return guarded(err, err_ctx, [&] {
    std::unordered_map<std::string, std::string> args;
    for (size_t i = 0; i < n; ++i) args[keys[i]] = values[i];
    sentencepiece::SetRandomGeneratorSeed(seed);
    std::string model;
    auto st = sentencepiece::SentencePieceTrainer::Train(args, nullptr, &model);
    if (!st.ok()) return report(err, err_ctx, st.ToString());
    out(out_ctx, model.data(), model.size());
    return 0;
  });
}
