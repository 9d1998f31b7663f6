// Greedy decoding with llama.cpp's library, printing per step the chosen token and the top-k
// log-probabilities (log-softmax of the raw logits over the whole vocabulary, in double).
// ferro's own program, built against a llama.cpp build tree by scripts/gen-arch-fixtures:
//
//   llama-logits MODEL -p 1,2,3 [-p 4,5] [-n 16] [-k 8] [-t 2] [-c 256] [-b 512]
//                [--fa on|off|auto] [--ctk f16|f32|q8_0] [--ctv f16|f32|q8_0] [--repack on|off]
//                [--dump FILE]
//
// Each prompt (token ids) runs from an empty cache: llama_decode of the prompt in batches of
// `-b` tokens (logits of its last token only), then one llama_decode per generated token, as
// llama-cli and the server do. Output: one JSON object on stdout,
//   {"n_vocab": V, "prompts": [{"prompt_tokens": [...], "tokens": [...],
//     "top": [[[id, logprob], ...k], ...per step]}]}
// `--repack off` keeps the weights in their file layout (no CPU_REPACK buffers, whose kernels
// sum in another order). `--dump FILE` also writes every step's raw logits (f32, V per step, prompts in order).

#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

static std::vector<llama_token> parse_ids(const char * s) {
    std::vector<llama_token> out;
    const char * p = s;
    while (*p) {
        char * end = nullptr;
        long v = std::strtol(p, &end, 10);
        if (end == p) {
            std::fprintf(stderr, "bad token list: %s\n", s);
            std::exit(2);
        }
        out.push_back((llama_token) v);
        p = end;
        while (*p == ',' || *p == ' ') {
            p++;
        }
    }
    return out;
}

static ggml_type parse_type(const std::string & s) {
    if (s == "f16") return GGML_TYPE_F16;
    if (s == "f32") return GGML_TYPE_F32;
    if (s == "bf16") return GGML_TYPE_BF16;
    if (s == "q8_0") return GGML_TYPE_Q8_0;
    std::fprintf(stderr, "unknown cache type %s\n", s.c_str());
    std::exit(2);
}

static void usage() {
    std::fprintf(stderr,
                 "usage: llama-logits MODEL -p IDS [-p IDS...] [-n N] [-k K] [-t T] [-c CTX] [-b BATCH]\n"
                 "       [--fa on|off|auto] [--ctk TYPE] [--ctv TYPE] [--repack on|off] [--dump FILE]\n");
    std::exit(2);
}

int main(int argc, char ** argv) {
    if (argc < 2) usage();
    std::string model_path = argv[1];
    std::vector<std::vector<llama_token>> prompts;
    int n_gen = 16, top_k = 8, threads = 2, n_ctx = 256, n_batch = 512;
    llama_flash_attn_type fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
    ggml_type ctk = GGML_TYPE_F16, ctv = GGML_TYPE_F16;
    std::string dump;
    bool repack = true;
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 >= argc) usage();
        const char * v = argv[++i];
        if (a == "-p") prompts.push_back(parse_ids(v));
        else if (a == "-n") n_gen = std::atoi(v);
        else if (a == "-k") top_k = std::atoi(v);
        else if (a == "-t") threads = std::atoi(v);
        else if (a == "-c") n_ctx = std::atoi(v);
        else if (a == "-b") n_batch = std::atoi(v);
        else if (a == "--ctk") ctk = parse_type(v);
        else if (a == "--ctv") ctv = parse_type(v);
        else if (a == "--dump") dump = v;
        else if (a == "--repack") repack = std::string(v) != "off";
        else if (a == "--fa") {
            std::string f = v;
            fa = f == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
               : f == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                            : LLAMA_FLASH_ATTN_TYPE_AUTO;
        } else usage();
    }
    if (prompts.empty()) usage();

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_extra_bufts = repack;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) {
        std::fprintf(stderr, "cannot load %s\n", model_path.c_str());
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_batch;
    cp.n_ubatch = n_batch;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.flash_attn_type = fa;
    cp.type_k = ctk;
    cp.type_v = ctv;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        std::fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    FILE * dump_f = dump.empty() ? nullptr : std::fopen(dump.c_str(), "wb");

    std::printf("{\"n_vocab\": %d, \"prompts\": [", n_vocab);
    std::vector<int> order(n_vocab);
    for (size_t pi = 0; pi < prompts.size(); pi++) {
        llama_memory_clear(llama_get_memory(ctx), true);
        std::vector<llama_token> toks = prompts[pi];
        std::vector<llama_token> gen;
        std::string top_json;
        // The prompt in batches of at most n_batch tokens; the last one is decoded below.
        size_t done = 0;
        while (toks.size() - done > (size_t) n_batch) {
            if (llama_decode(ctx, llama_batch_get_one(toks.data() + done, n_batch)) != 0) {
                std::fprintf(stderr, "llama_decode failed\n");
                return 1;
            }
            done += n_batch;
        }
        llama_batch batch = llama_batch_get_one(toks.data() + done, (int32_t) (toks.size() - done));
        for (int step = 0; step < n_gen; step++) {
            if (llama_decode(ctx, batch) != 0) {
                std::fprintf(stderr, "llama_decode failed\n");
                return 1;
            }
            const float * logits = llama_get_logits_ith(ctx, -1);
            if (dump_f) std::fwrite(logits, sizeof(float), n_vocab, dump_f);
            double mx = -INFINITY;
            for (int i = 0; i < n_vocab; i++) mx = std::max(mx, (double) logits[i]);
            double sum = 0;
            for (int i = 0; i < n_vocab; i++) sum += std::exp((double) logits[i] - mx);
            const double lse = mx + std::log(sum);
            std::iota(order.begin(), order.end(), 0);
            std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int a, int b) {
                return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
            });
            top_json += step ? ", [" : "[";
            for (int j = 0; j < top_k; j++) {
                char buf[64];
                std::snprintf(buf, sizeof buf, "%s[%d, %.6f]", j ? ", " : "", order[j], logits[order[j]] - lse);
                top_json += buf;
            }
            top_json += "]";
            llama_token next = order[0];
            gen.push_back(next);
            batch = llama_batch_get_one(&gen.back(), 1);
        }
        std::printf("%s{\"prompt_tokens\": [", pi ? ", " : "");
        for (size_t i = 0; i < toks.size(); i++) std::printf("%s%d", i ? ", " : "", toks[i]);
        std::printf("], \"tokens\": [");
        for (size_t i = 0; i < gen.size(); i++) std::printf("%s%d", i ? ", " : "", gen[i]);
        std::printf("], \"top\": [%s]}", top_json.c_str());
    }
    std::printf("]}\n");
    if (dump_f) std::fclose(dump_f);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
