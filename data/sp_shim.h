// C interface of libftrun_sentencepiece, the module that wraps libsentencepiece.
//
// Why a separately loaded module: Debian's libsentencepiece embeds its own, older
// protobuf-lite and exports those symbols, while libtorch pulls in the system libprotobuf
// (3.21). Linked into one program, whichever loads first answers the other's calls, and the
// process crashes during static initialisation. The module is dlopen()ed with RTLD_LOCAL |
// RTLD_DEEPBIND, so sentencepiece binds to its own protobuf and stays out of the global
// symbol scope. Only plain C types cross this boundary; data comes back through caller
// callbacks, so memory is never freed on the other side.
#pragma once
#include <cstddef>

extern "C" {

typedef void (*ftrun_sp_bytes_sink)(void* ctx, const char* data, size_t n);
typedef void (*ftrun_sp_ids_sink)(void* ctx, const int* ids, size_t n);

// Bumped whenever a signature below changes; the loader refuses another version.
#define FTRUN_SP_ABI_VERSION 1

typedef int (*ftrun_sp_abi_version_fn)(void);
typedef void* (*ftrun_sp_new_fn)(void);
typedef void (*ftrun_sp_delete_fn)(void* h);
// The functions returning int give 0 on success; on failure they pass a message to `err`.
typedef int (*ftrun_sp_load_fn)(void* h, const char* model, size_t n, ftrun_sp_bytes_sink err,
                                void* err_ctx);
typedef int (*ftrun_sp_piece_size_fn)(void* h);
// Id of a piece, or -1 when the model does not have it (the unknown id is not returned for
// other strings).
typedef int (*ftrun_sp_piece_to_id_fn)(void* h, const char* piece, size_t n);
typedef int (*ftrun_sp_encode_fn)(void* h, const char* text, size_t n, ftrun_sp_ids_sink out,
                                  void* out_ctx, ftrun_sp_bytes_sink err, void* err_ctx);
typedef int (*ftrun_sp_decode_fn)(void* h, const int* ids, size_t n, ftrun_sp_bytes_sink out,
                                  void* out_ctx, ftrun_sp_bytes_sink err, void* err_ctx);
// Trains with sentencepiece's command-line options given as key/value pairs; the serialized
// model goes to `out`.
typedef int (*ftrun_sp_train_fn)(const char* const* keys, const char* const* values, size_t n,
                                 unsigned seed, ftrun_sp_bytes_sink out, void* out_ctx,
                                 ftrun_sp_bytes_sink err, void* err_ctx);

}  // extern "C"
