#include "model/gguf_layout.h"

#include <algorithm>
#include <stdexcept>

#include "core/memory.h"

namespace qft {
namespace {

struct NamePair {
  const char* hf;
  const char* gguf;
};

constexpr NamePair kGgufHeadNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// model.layers.N.<hf module> ↔ blk.N.<gguf module>, then .weight or .bias.
constexpr NamePair kGgufLayerModules[] = {
    {"input_layernorm", "attn_norm"},      {"post_attention_layernorm", "ffn_norm"},
    {"self_attn.q_proj", "attn_q"},        {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},        {"self_attn.o_proj", "attn_output"},
    {"mlp.gate_proj", "ffn_gate"},         {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},         {"self_attn.qkv_proj", "attn_qkv"},  // Phi-3's fused projections
    {"mlp.gate_up_proj", "ffn_up"},
};

// Gemma-2's norms: post_attention_layernorm is its attention output's norm.
constexpr NamePair kGemma2LayerNorms[] = {
    {"post_attention_layernorm", "post_attention_norm"},
    {"pre_feedforward_layernorm", "ffn_norm"},
    {"post_feedforward_layernorm", "post_ffw_norm"},
};

const char* gguf_module(const std::string& module, Architecture architecture) {
  if (architecture == Architecture::Gemma2) {
    for (const NamePair& pair : kGemma2LayerNorms) {
      if (module == pair.hf) return pair.gguf;
    }
  }
  for (const NamePair& pair : kGgufLayerModules) {
    if (module == pair.hf) return pair.gguf;
  }
  return nullptr;
}

}  // namespace

std::string gguf_tensor_name(const std::string& hf_name, Architecture architecture) {
  for (const NamePair& pair : kGgufHeadNames) {
    if (hf_name == pair.hf) return pair.gguf;
  }
  const std::string prefix = "model.layers.";
  if (hf_name.rfind(prefix, 0) == 0) {
    const size_t dot = hf_name.find('.', prefix.size());
    const size_t suffix = hf_name.rfind('.');
    if (dot != std::string::npos && suffix > dot) {
      const std::string layer = hf_name.substr(prefix.size(), dot - prefix.size());
      const std::string module = hf_name.substr(dot + 1, suffix - dot - 1);
      if (const char* gguf = gguf_module(module, architecture)) return "blk." + layer + "." + gguf + hf_name.substr(suffix);
    }
  }
  throw std::logic_error("no GGUF name for parameter '" + hf_name + "'");
}

float gguf_norm_shift(const ModelConfig& config) { return config.norm_offset(); }

// Moves each head's rows: HF row j·D/2 + i ↔ llama.cpp row 2i + j.
void reorder_head_rows(float* rows, int heads, int64_t head_dim, int64_t cols, bool to_llama_cpp) {
  const int64_t half = head_dim / 2;
  Buffer<float> head(MemCategory::Workspace, static_cast<size_t>(head_dim * cols));
  for (int h = 0; h < heads; ++h) {
    float* block = rows + h * head_dim * cols;
    std::copy(block, block + head_dim * cols, head.data());
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t hf = j * half + i, llama_cpp = 2 * i + j;
        std::copy_n(head.data() + (to_llama_cpp ? hf : llama_cpp) * cols, cols,
                    block + (to_llama_cpp ? llama_cpp : hf) * cols);
      }
    }
  }
}

void permute_head_rows(float* rows, int heads, int64_t head_dim, int64_t cols) {
  reorder_head_rows(rows, heads, head_dim, cols, true);
}

void unpermute_head_rows(float* rows, int heads, int64_t head_dim, int64_t cols) {
  reorder_head_rows(rows, heads, head_dim, cols, false);
}

}  // namespace qft
