#pragma once
// How llama.cpp lays out a LLaMA-family model in GGUF: tensor names, and the
// per-head interleaving of Q and K rows its converter applies for its RoPE.
#include <cstdint>
#include <string>

#include "model/config.h"

namespace qft {

// llama.cpp's name for an HF parameter name of parameter_specs().
std::string gguf_tensor_name(const std::string& hf_name, Architecture architecture);

// llama.cpp's converter stores Gemma's norm weights as 1 + w (the scale
// itself); this is what it adds (0 elsewhere).
float gguf_norm_shift(const ModelConfig& config);

// rows (heads·D, cols) of Q or K. llama.cpp's order puts HF row j·D/2 + i of
// each head at row 2i + j; permute_head_rows goes HF → llama.cpp,
// unpermute_head_rows back.
void permute_head_rows(float* rows, int heads, int64_t head_dim, int64_t cols);
void unpermute_head_rows(float* rows, int heads, int64_t head_dim, int64_t cols);

}  // namespace qft
