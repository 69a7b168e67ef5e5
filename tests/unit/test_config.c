/* Unit tests for config.json parsing: valid configs of every model_type (both rope formats,
 * configs written by transformers itself in tests/data/configs), and each bad case. */
#include "punctum/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail;

static void check(int ok, const char *what, const char *detail) {
    if (ok) {
        n_pass++;
        printf("ok   %s\n", what);
    } else {
        n_fail++;
        printf("FAIL %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    }
}

static int parse(const char *json, pt_config *c, pt_error *e) {
    memset(e, 0, sizeof *e);
    return pt_config_parse(json, strlen(json), "config.json", c, e);
}

static int close_to(double a, double b) { return fabs(a - b) <= 1e-12 * fabs(b); }

/* A valid config: parse and print the failure if any. */
static int good(const char *what, const char *json, pt_config *c) {
    pt_error e;
    int rc = parse(json, c, &e);
    char w[200];
    snprintf(w, sizeof w, "%s parses", what);
    check(rc == 0, w, e.msg);
    return rc == 0;
}

/* A bad config: must fail; the message is one line, starts with "config.json: " and contains
 * the fragment(s). */
static void bad(const char *what, const char *json, const char *f1, const char *f2) {
    pt_config c;
    pt_error e;
    int rc = parse(json, &c, &e);
    int ok = rc != 0 && strncmp(e.msg, "config.json: ", 13) == 0 && !strchr(e.msg, '\n') &&
             (!f1 || strstr(e.msg, f1)) && (!f2 || strstr(e.msg, f2));
    char d[700];
    snprintf(d, sizeof d, "rc=%d msg=\"%s\"", rc, e.msg);
    check(ok, what, ok ? NULL : d);
    if (ok) printf("       -> %s\n", e.msg);
}

/* ---- configs written by transformers (tests/data/configs, see generate.py there) --------- */

static int load(const char *file, pt_config *c) {
    char path[256];
    snprintf(path, sizeof path, "tests/data/configs/%s", file);
    pt_error e = {{0}};
    int rc = pt_config_load(path, c, &e);
    if (rc != 0) { /* the test may run from the build directory */
        char alt[300];
        snprintf(alt, sizeof alt, "../%s", path);
        rc = pt_config_load(alt, c, &e);
    }
    char w[300];
    snprintf(w, sizeof w, "transformers %s loads", file);
    check(rc == 0, w, e.msg);
    return rc == 0;
}

static void test_fixtures(void) {
    pt_config c;
    if (load("llama3.json", &c)) {
        check(c.arch == PT_ARCH_LLAMA && !strcmp(c.model_type, "llama") && c.n_layers == 2 &&
                  c.d_model == 64 && c.n_heads == 4 && c.n_kv_heads == 2 && c.head_dim == 16 &&
                  c.d_ff == 96 && c.vocab_size == 128 && c.max_positions == 512,
              "llama3.json: sizes", NULL);
        check(c.norm == PT_NORM_RMSNORM && close_to(c.norm_eps, 1e-5) && c.mlp == PT_MLP_SWIGLU &&
                  !c.learned_positions && !c.qkv_bias && !c.o_bias && !c.mlp_bias && c.tied_embeddings &&
                  c.bos_token_id == 1 && c.eos_token_id == 2 && c.sliding_window == 0,
              "llama3.json: flags, eos list -> first", NULL);
        check(c.rope == PT_ROPE_LLAMA3 && c.rope_theta == 500000.0 && c.rope_factor == 8.0 &&
                  c.rope_low_freq_factor == 1.0 && c.rope_high_freq_factor == 4.0 &&
                  c.rope_original_max_positions == 128,
              "llama3.json: rope_parameters llama3", NULL);
    }
    if (load("llama_linear.json", &c)) {
        check(c.n_heads == 6 && c.n_kv_heads == 6 && c.head_dim == 8 && c.qkv_bias && c.o_bias &&
                  c.mlp_bias && !c.tied_embeddings && c.rope == PT_ROPE_LINEAR && c.rope_factor == 2.0 &&
                  c.rope_theta == 10000.0 && close_to(c.norm_eps, 1e-6),
              "llama_linear.json: biases, linear rope", NULL);
    }
    if (load("gpt2.json", &c)) {
        check(c.arch == PT_ARCH_GPT2 && c.n_layers == 2 && c.d_model == 32 && c.n_heads == 4 &&
                  c.n_kv_heads == 4 && c.head_dim == 8 && c.d_ff == 128 && c.vocab_size == 100 &&
                  c.max_positions == 64 && c.norm == PT_NORM_LAYERNORM && close_to(c.norm_eps, 1e-5) &&
                  c.mlp == PT_MLP_GELU_TANH && c.learned_positions && c.qkv_bias && c.o_bias &&
                  c.mlp_bias && c.tied_embeddings && c.rope == PT_ROPE_NONE && c.bos_token_id == 0 &&
                  c.eos_token_id == 1,
              "gpt2.json: fields (n_inner null -> 4*n_embd)", NULL);
    }
    if (load("mistral.json", &c)) {
        check(c.arch == PT_ARCH_MISTRAL && c.d_model == 64 && c.n_heads == 4 && c.n_kv_heads == 2 &&
                  c.head_dim == 32 && c.sliding_window == 16 && c.max_positions == 1024 &&
                  c.rope == PT_ROPE_DEFAULT && c.rope_theta == 1e6 && !c.qkv_bias && !c.tied_embeddings,
              "mistral.json: head_dim != hidden/heads, sliding_window", NULL);
    }
    if (load("qwen2.json", &c)) {
        check(c.arch == PT_ARCH_QWEN2 && c.qkv_bias && !c.o_bias && !c.mlp_bias && c.tied_embeddings &&
                  c.head_dim == 16 && c.n_kv_heads == 2 && c.rope == PT_ROPE_DEFAULT &&
                  c.rope_theta == 1e6 && c.bos_token_id == -1 && c.eos_token_id == 7 &&
                  c.sliding_window == 0 && c.max_positions == 32768,
              "qwen2.json: qkv bias, no sliding window, bos null", NULL);
    }
    pt_error e = {{0}};
    int rc = pt_config_load("tests/data/configs/nope.json", &c, &e);
    check(rc != 0 && strstr(e.msg, "nope.json: "), "missing file names the file", e.msg);
}

/* ---- hand-written valid configs ------------------------------------------------------------ */

static void test_valid(void) {
    pt_config c;
    /* Llama-3.2-1B as published (older transformers: top-level rope_theta + rope_scaling) */
    if (good("legacy llama3 rope_scaling",
             "{\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,\"bos_token_id\":128000,"
             "\"eos_token_id\":128001,\"head_dim\":64,\"hidden_act\":\"silu\",\"hidden_size\":2048,"
             "\"intermediate_size\":8192,\"max_position_embeddings\":131072,\"mlp_bias\":false,"
             "\"model_type\":\"llama\",\"num_attention_heads\":32,\"num_hidden_layers\":16,"
             "\"num_key_value_heads\":8,\"rms_norm_eps\":1e-05,\"rope_scaling\":{\"factor\":32.0,"
             "\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,\"original_max_position_embeddings\":8192,"
             "\"rope_type\":\"llama3\"},\"rope_theta\":500000.0,\"tie_word_embeddings\":true,"
             "\"torch_dtype\":\"bfloat16\",\"vocab_size\":128256}",
             &c))
        check(c.rope == PT_ROPE_LLAMA3 && c.rope_theta == 500000.0 && c.rope_factor == 32.0 &&
                  c.rope_original_max_positions == 8192 && c.head_dim == 64 && c.n_kv_heads == 8 &&
                  c.bos_token_id == 128000 && c.eos_token_id == 128001 && c.tied_embeddings &&
                  c.max_positions == 131072,
              "legacy llama3: fields", NULL);
    if (good("legacy linear rope ('type' key)",
             "{\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":4,"
             "\"rope_scaling\":{\"type\":\"linear\",\"factor\":4},\"rope_theta\":20000}",
             &c))
        check(c.rope == PT_ROPE_LINEAR && c.rope_factor == 4.0 && c.rope_theta == 20000.0,
              "legacy linear: fields (integer factor accepted)", NULL);
    if (good("rope_scaling null, top-level theta",
             "{\"model_type\":\"qwen2\",\"hidden_size\":896,\"num_attention_heads\":14,"
             "\"num_key_value_heads\":2,\"rope_scaling\":null,\"rope_theta\":1000000.0,"
             "\"use_sliding_window\":false,\"sliding_window\":32768,\"max_window_layers\":21,"
             "\"tie_word_embeddings\":true,\"vocab_size\":151936,\"bos_token_id\":151643,"
             "\"eos_token_id\":151643}",
             &c))
        check(c.rope == PT_ROPE_DEFAULT && c.rope_theta == 1e6 && c.head_dim == 64 && c.n_kv_heads == 2 &&
                  c.sliding_window == 0 && c.bos_token_id == 151643,
              "qwen2.5-style: fields", NULL);
    if (good("rope_type default with type 'default'",
             "{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"default\"}}", &c))
        check(c.rope == PT_ROPE_DEFAULT && c.rope_theta == 10000.0, "explicit default rope", NULL);
    if (good("llama3 without original_max_position_embeddings",
             "{\"model_type\":\"llama\",\"max_position_embeddings\":4096,\"rope_parameters\":{"
             "\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4}}",
             &c))
        check(c.rope_original_max_positions == 4096 && c.rope_theta == 10000.0,
              "llama3: original_max defaults to max_position_embeddings", NULL);
    if (good("llama3 with top-level original_max_position_embeddings",
             "{\"model_type\":\"llama\",\"max_position_embeddings\":4096,\"original_max_position_embeddings\":"
             "1024,\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,"
             "\"high_freq_factor\":4,\"original_max_position_embeddings\":2048}}",
             &c))
        check(c.rope_original_max_positions == 2048, "llama3: rope dict's original_max wins (as transformers 5)",
              NULL);
    if (good("minimal llama (HF defaults)", "{\"model_type\":\"llama\"}", &c))
        check(c.n_layers == 32 && c.d_model == 4096 && c.n_heads == 32 && c.n_kv_heads == 32 &&
                  c.head_dim == 128 && c.d_ff == 11008 && c.vocab_size == 32000 && c.max_positions == 2048 &&
                  close_to(c.norm_eps, 1e-6) && c.bos_token_id == 1 && c.eos_token_id == 2 &&
                  !c.tied_embeddings && c.rope == PT_ROPE_DEFAULT && c.rope_theta == 10000.0,
              "minimal llama: LlamaConfig defaults", NULL);
    if (good("minimal mistral (HF defaults)", "{\"model_type\":\"mistral\"}", &c))
        check(c.n_kv_heads == 8 && c.d_ff == 14336 && c.max_positions == 131072 && c.sliding_window == 4096,
              "minimal mistral: MistralConfig defaults", NULL);
    if (good("minimal qwen2 (HF defaults)", "{\"model_type\":\"qwen2\"}", &c))
        check(c.vocab_size == 151936 && c.d_ff == 22016 && c.n_kv_heads == 32 && c.max_positions == 32768 &&
                  c.bos_token_id == -1 && c.eos_token_id == -1 && c.qkv_bias,
              "minimal qwen2: Qwen2Config defaults", NULL);
    if (good("minimal gpt2 (HF defaults)", "{\"model_type\":\"gpt2\"}", &c))
        check(c.n_layers == 12 && c.d_model == 768 && c.n_heads == 12 && c.d_ff == 3072 &&
                  c.vocab_size == 50257 && c.max_positions == 1024 && c.tied_embeddings &&
                  c.bos_token_id == 50256 && c.eos_token_id == 50256,
              "minimal gpt2: GPT2Config defaults", NULL);
    /* the original openai-community/gpt2 config.json keys */
    if (good("gpt2 hub config",
             "{\"activation_function\":\"gelu_new\",\"architectures\":[\"GPT2LMHeadModel\"],"
             "\"attn_pdrop\":0.1,\"bos_token_id\":50256,\"embd_pdrop\":0.1,\"eos_token_id\":50256,"
             "\"initializer_range\":0.02,\"layer_norm_epsilon\":1e-05,\"model_type\":\"gpt2\","
             "\"n_ctx\":1024,\"n_embd\":768,\"n_head\":12,\"n_layer\":12,\"n_positions\":1024,"
             "\"resid_pdrop\":0.1,\"summary_activation\":null,\"summary_first_dropout\":0.1,"
             "\"summary_proj_to_labels\":true,\"summary_type\":\"cls_index\",\"summary_use_proj\":true,"
             "\"task_specific_params\":{\"text-generation\":{\"do_sample\":true,\"max_length\":50}},"
             "\"vocab_size\":50257}",
             &c))
        check(c.d_model == 768 && c.head_dim == 64 && c.d_ff == 3072, "gpt2 hub config: fields", NULL);
    if (good("gpt2 with n_inner and gelu_pytorch_tanh",
             "{\"model_type\":\"gpt2\",\"n_embd\":64,\"n_head\":2,\"n_inner\":100,"
             "\"activation_function\":\"gelu_pytorch_tanh\",\"tie_word_embeddings\":false}",
             &c))
        check(c.d_ff == 100 && c.head_dim == 32 && !c.tied_embeddings, "gpt2 n_inner, untied", NULL);
    if (good("gpt2 with hidden_size alias", "{\"model_type\":\"gpt2\",\"hidden_size\":128,"
                                            "\"num_attention_heads\":4,\"num_hidden_layers\":3}",
             &c))
        check(c.d_model == 128 && c.n_heads == 4 && c.n_layers == 3, "gpt2 attribute_map aliases", NULL);
    if (good("mistral sliding_window null, head_dim null",
             "{\"model_type\":\"mistral\",\"hidden_size\":64,\"num_attention_heads\":4,"
             "\"num_key_value_heads\":null,\"head_dim\":null,\"sliding_window\":null}",
             &c))
        check(c.sliding_window == 0 && c.head_dim == 16 && c.n_kv_heads == 4,
              "mistral: nulls -> no window, d/h, kv = heads", NULL);
    if (good("eos empty list, bos out of vocabulary",
             "{\"model_type\":\"llama\",\"vocab_size\":10,\"bos_token_id\":10,\"eos_token_id\":[]}", &c))
        check(c.bos_token_id == -1 && c.eos_token_id == -1, "token ids outside vocab -> -1", NULL);
    if (good("partial_rotary_factor 1.0", "{\"model_type\":\"llama\",\"partial_rotary_factor\":1.0}", &c))
        check(c.rope == PT_ROPE_DEFAULT, "partial_rotary_factor 1.0 accepted", NULL);
    if (good("rope_parameters theta overrides top-level",
             "{\"model_type\":\"llama\",\"rope_theta\":5.0,\"rope_parameters\":{\"rope_type\":\"default\","
             "\"rope_theta\":7.0}}",
             &c))
        check(c.rope_theta == 7.0, "rope_parameters.rope_theta wins", NULL);
    if (good("rope_scaling wins over rope_parameters",
             "{\"model_type\":\"llama\",\"rope_parameters\":{\"rope_type\":\"default\"},"
             "\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":2.0}}",
             &c))
        check(c.rope == PT_ROPE_LINEAR, "rope_scaling first (as transformers)", NULL);
}

/* ---- bad configs ---------------------------------------------------------------------------- */

#define L "{\"model_type\":\"llama\","

static void test_bad(void) {
    bad("malformed JSON", "{\"model_type\": \"llama\",", "not valid JSON", NULL);
    bad("empty input", "", "not valid JSON", NULL);
    bad("not an object", "[1]", "not a JSON object", NULL);
    bad("duplicate key", "{\"model_type\":\"llama\",\"model_type\":\"gpt2\"}", "key 'model_type' appears twice",
        NULL);
    {
        pt_config c;
        pt_error e = {{0}};
        static const char nul[] = "{\"model_type\":\"llama\"}\0";
        int rc = pt_config_parse(nul, sizeof nul - 1, "config.json", &c, &e);
        check(rc != 0 && strstr(e.msg, "config.json: ") && strstr(e.msg, "NUL"), "embedded NUL", e.msg);
    }
    bad("missing model_type", "{\"hidden_size\":64}", "missing 'model_type'", NULL);
    bad("model_type not a string", "{\"model_type\":3}", "'model_type' must be a string", NULL);
    bad("unsupported model_type", "{\"model_type\":\"bert\"}",
        "model_type 'bert' is not supported (gpt2, llama, mistral, qwen2, qwen3, gemma2", NULL);
    bad("wrong type: heads as string", L "\"num_attention_heads\":\"32\"}",
        "config.json: 'num_attention_heads' must be an integer", NULL);
    bad("wrong type: heads as float", L "\"num_attention_heads\":32.0}", "'num_attention_heads' must be an integer",
        NULL);
    bad("wrong type: heads null", L "\"num_attention_heads\":null}", "'num_attention_heads' must be an integer",
        NULL);
    bad("wrong type: bool as int", L "\"hidden_size\":true}", "'hidden_size' must be an integer", NULL);
    bad("wrong type: gpt2 n_head", "{\"model_type\":\"gpt2\",\"n_head\":[12]}", "'n_head' must be an integer",
        NULL);
    bad("zero heads", L "\"num_attention_heads\":0}", "'num_attention_heads' must be between 1", "got 0");
    bad("negative layers", L "\"num_hidden_layers\":-2}", "'num_hidden_layers'", "got -2");
    bad("zero vocab", L "\"vocab_size\":0}", "'vocab_size'", NULL);
    bad("huge vocab", L "\"vocab_size\":4000000000}", "'vocab_size'", NULL);
    bad("huge hidden", L "\"hidden_size\":9223372036854775807}", "'hidden_size'", NULL);
    bad("zero max_position_embeddings", L "\"max_position_embeddings\":0}", "'max_position_embeddings'",
        NULL);
    bad("heads do not divide width", L "\"hidden_size\":100,\"num_attention_heads\":8}",
        "'hidden_size' (100) is not divisible by 'num_attention_heads' (8)", NULL);
    bad("gpt2 heads do not divide width", "{\"model_type\":\"gpt2\",\"n_embd\":100,\"n_head\":8}",
        "'n_embd' (100) is not divisible by 'n_head' (8)", NULL);
    bad("kv heads do not divide heads", L "\"num_attention_heads\":8,\"num_key_value_heads\":3}",
        "'num_key_value_heads' (3) does not divide 'num_attention_heads' (8)", NULL);
    bad("kv heads > heads", L "\"num_attention_heads\":8,\"num_key_value_heads\":16}",
        "'num_key_value_heads' (16)", NULL);
    bad("kv heads zero", L "\"num_key_value_heads\":0}", "'num_key_value_heads'", NULL);
    bad("mistral default kv (8) > heads", "{\"model_type\":\"mistral\",\"num_attention_heads\":4,"
                                          "\"hidden_size\":64}",
        "'num_key_value_heads' (8)", NULL);
    bad("head_dim odd", L "\"hidden_size\":60,\"num_attention_heads\":4}", "head dimension 15 must be even",
        NULL);
    bad("head_dim zero", L "\"head_dim\":0}", "'head_dim'", NULL);
    bad("head_dim negative", L "\"head_dim\":-1}", "'head_dim'", "got -1");
    bad("head_dim string", L "\"head_dim\":\"64\"}", "'head_dim' must be an integer or null", NULL);
    bad("n_heads*head_dim too large", L "\"num_attention_heads\":1024,\"num_key_value_heads\":1,"
                                        "\"head_dim\":65536}",
        "too large", NULL);
    bad("unsupported rope type yarn", L "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,"
                                        "\"original_max_position_embeddings\":32768}}",
        "rope type 'yarn' is not supported", NULL);
    bad("unsupported rope type dynamic (legacy 'type')", L "\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2}}",
        "rope type 'dynamic' is not supported", NULL);
    bad("unsupported rope type longrope (rope_parameters)", L "\"rope_parameters\":{\"rope_type\":\"longrope\"}}",
        "'longrope'", NULL);
    bad("rope_scaling not an object", L "\"rope_scaling\":\"linear\"}", "'rope_scaling' must be an object",
        NULL);
    bad("rope_parameters not an object", L "\"rope_parameters\":[1]}", "'rope_parameters' must be an object",
        NULL);
    bad("rope_type not a string", L "\"rope_parameters\":{\"rope_type\":3}}",
        "'rope_parameters.rope_type' must be a string", NULL);
    bad("linear without factor", L "\"rope_scaling\":{\"type\":\"linear\"}}",
        "'rope_scaling.factor' is required for rope type 'linear'", NULL);
    bad("linear factor string", L "\"rope_scaling\":{\"type\":\"linear\",\"factor\":\"2\"}}",
        "'rope_scaling.factor' must be a number", NULL);
    bad("linear factor zero", L "\"rope_scaling\":{\"type\":\"linear\",\"factor\":0}}", "must be positive",
        NULL);
    bad("llama3 missing low_freq_factor", L "\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8,"
                                            "\"high_freq_factor\":4}}",
        "'rope_parameters.low_freq_factor' is required", NULL);
    bad("llama3 high <= low", L "\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8,"
                               "\"low_freq_factor\":4,\"high_freq_factor\":4}}",
        "must be greater than", NULL);
    bad("llama3 original_max zero", L "\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8,"
                                     "\"low_freq_factor\":1,\"high_freq_factor\":4,"
                                     "\"original_max_position_embeddings\":0}}",
        "original_max_position_embeddings", NULL);
    bad("rope_theta zero", L "\"rope_theta\":0}", "'rope_theta' must be positive", NULL);
    bad("rope_theta string", L "\"rope_theta\":\"1e4\"}", "'rope_theta' must be a number", NULL);
    bad("rope nested by layer type", L "\"rope_parameters\":{\"full_attention\":{\"rope_type\":\"default\"}}}",
        "nested by layer type", NULL);
    bad("partial_rotary_factor 0.5", L "\"partial_rotary_factor\":0.5}", "'partial_rotary_factor' 0.5", NULL);
    bad("unsupported activation (gpt2)", "{\"model_type\":\"gpt2\",\"activation_function\":\"gelu\"}",
        "activation_function 'gelu' is not supported", NULL);
    bad("unsupported activation (gpt2 relu)", "{\"model_type\":\"gpt2\",\"activation_function\":\"relu\"}",
        "'relu'", NULL);
    bad("activation not a string", "{\"model_type\":\"gpt2\",\"activation_function\":1}",
        "'activation_function' must be a string", NULL);
    bad("unsupported activation (llama)", L "\"hidden_act\":\"gelu\"}", "hidden_act 'gelu' is not supported (silu)",
        NULL);
    bad("rms_norm_eps zero", L "\"rms_norm_eps\":0}", "'rms_norm_eps' must be positive", NULL);
    bad("rms_norm_eps negative", L "\"rms_norm_eps\":-1e-6}", "'rms_norm_eps' must be positive", NULL);
    bad("rms_norm_eps string", L "\"rms_norm_eps\":\"1e-6\"}", "'rms_norm_eps' must be a number", NULL);
    bad("layer_norm_epsilon zero", "{\"model_type\":\"gpt2\",\"layer_norm_epsilon\":0.0}",
        "'layer_norm_epsilon' must be positive", NULL);
    bad("gpt2 n_inner zero", "{\"model_type\":\"gpt2\",\"n_inner\":0}", "'n_inner'", NULL);
    bad("gpt2 scale_attn_by_inverse_layer_idx", "{\"model_type\":\"gpt2\",\"scale_attn_by_inverse_layer_idx\":true}",
        "not supported", NULL);
    bad("gpt2 scale_attn_weights false", "{\"model_type\":\"gpt2\",\"scale_attn_weights\":false}",
        "not supported", NULL);
    bad("tie_word_embeddings string", L "\"tie_word_embeddings\":\"yes\"}", "'tie_word_embeddings' must be true or false",
        NULL);
    bad("attention_bias int", L "\"attention_bias\":1}", "'attention_bias' must be true or false", NULL);
    bad("bos_token_id string", L "\"bos_token_id\":\"1\"}", "'bos_token_id' must be an integer", NULL);
    bad("eos_token_id list of strings", L "\"eos_token_id\":[1,\"2\"]}", "'eos_token_id'", NULL);
    bad("qwen2 use_sliding_window", "{\"model_type\":\"qwen2\",\"use_sliding_window\":true}",
        "'use_sliding_window' true is not supported", NULL);
    bad("qwen2 layer_types wrong length", "{\"model_type\":\"qwen2\",\"num_hidden_layers\":3,"
                                          "\"layer_types\":[\"full_attention\"]}",
        "'layer_types' has 1 entries but 'num_hidden_layers' is 3", NULL);
    bad("qwen2 sliding layer type", "{\"model_type\":\"qwen2\",\"num_hidden_layers\":2,\"layer_types\":[\"full_attention\","
                                    "\"sliding_attention\"]}",
        "layer_types[1] 'sliding_attention' is not supported", NULL);
    bad("mistral sliding_window zero", "{\"model_type\":\"mistral\",\"num_key_value_heads\":4,"
                                       "\"sliding_window\":0}",
        "'sliding_window' must be a positive integer or null", NULL);
    bad("mistral sliding_window string", "{\"model_type\":\"mistral\",\"sliding_window\":\"4096\"}",
        "'sliding_window' must be an integer or null", NULL);
    bad("model_type with control chars escaped", "{\"model_type\":\"x\\ny\"}", "'x\\x0ay'", NULL);
}

/* The families' defaults and per-layer layouts, as their transformers config classes give them. */
static void test_families(void) {
    pt_config c;
    if (good("qwen3 defaults", "{\"model_type\":\"qwen3\",\"num_hidden_layers\":2}", &c))
        check(c.head_dim == 128 && c.qk_norm == PT_QKNORM_HEAD && !c.qkv_bias && c.layer_flags[1] == 0 &&
                  c.rope == PT_ROPE_DEFAULT,
              "qwen3: head_dim 128, per-head q/k norms, no biases, global layers", NULL);
    if (good("gemma2 defaults", "{\"model_type\":\"gemma2\",\"num_hidden_layers\":4,\"hidden_size\":64}", &c))
        check(c.norm_plus_one && c.post_norms && c.pre_norms && c.mlp == PT_MLP_GEGLU && c.tied_embeddings &&
                  close_to(c.attn_scale, 1.0 / 16.0) && close_to(c.attn_softcap, 50.0) &&
                  close_to(c.final_softcap, 30.0) && close_to(c.embed_scale, 8.0) && c.sliding_window == 4096 &&
                  c.layer_flags[0] == PT_LAYER_SLIDING && c.layer_flags[1] == 0 &&
                  c.layer_flags[2] == PT_LAYER_SLIDING && c.layer_flags[3] == 0,
              "gemma2: (1+w) norms, four norms, GeGLU, scale 256^-1/2, caps 50 / 30, x sqrt(d), even layers local",
              NULL);
    if (good("gemma3 text_config",
             "{\"model_type\":\"gemma3\",\"tie_word_embeddings\":true,\"text_config\":{\"model_type\":"
             "\"gemma3_text\",\"num_hidden_layers\":7,\"hidden_size\":64,\"rope_local_base_freq\":10000,"
             "\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":8.0}}}",
             &c))
        check(c.arch == PT_ARCH_GEMMA3 && c.qk_norm == PT_QKNORM_HEAD && c.attn_softcap == 0 &&
                  c.final_softcap == 0 && c.rope == PT_ROPE_LINEAR && close_to(c.rope_factor, 8.0) &&
                  close_to(c.rope_theta, 1e6) && close_to(c.rope_local_theta, 10000) &&
                  c.layer_flags[0] == (PT_LAYER_SLIDING | PT_LAYER_LOCAL_ROPE) && c.layer_flags[5] == 0 &&
                  c.layer_flags[6] == (PT_LAYER_SLIDING | PT_LAYER_LOCAL_ROPE),
              "gemma3: nested text_config, pattern 6 (every sixth layer global), local RoPE base, linear global",
              NULL);
    if (good("olmo2 defaults", "{\"model_type\":\"olmo2\",\"num_hidden_layers\":2}", &c))
        check(!c.pre_norms && c.post_norms && !c.norm_plus_one && c.qk_norm == PT_QKNORM_PROJ,
              "olmo2: norms after the sublayers, q/k norms over the projections", NULL);
    if (good("smollm3 defaults", "{\"model_type\":\"smollm3\",\"num_hidden_layers\":8}", &c))
        check(c.layer_flags[3] == PT_LAYER_NO_ROPE && c.layer_flags[7] == PT_LAYER_NO_ROPE && c.layer_flags[0] == 0 &&
                  c.layer_flags[4] == 0,
              "smollm3: every fourth layer without RoPE (no_rope_layer_interval 4)", NULL);
    if (good("phi3 longrope",
             "{\"model_type\":\"phi3\",\"hidden_size\":64,\"num_attention_heads\":4,\"max_position_embeddings\":"
             "131072,\"original_max_position_embeddings\":4096,\"partial_rotary_factor\":0.5,\"rope_scaling\":"
             "{\"type\":\"longrope\",\"short_factor\":[1,1,1,1],\"long_factor\":[2,3,4,5]}}",
             &c))
        check(c.rope == PT_ROPE_LONGROPE && c.rotary_dim == 8 && c.rope_original_max_positions == 4096 &&
                  c.rope_long[3] == 5.0f && close_to(c.rope_attn_factor, sqrt(1.0 + log(32.0) / log(4096.0))),
              "phi3: partial rotary, longrope factors, attention factor sqrt(1 + ln(s) / ln(4096))", NULL);
}

int main(void) {
    test_fixtures();
    test_valid();
    test_bad();
    test_families();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
