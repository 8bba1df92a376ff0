#include "model/parameter_store.h"

#include "kernels/kernels.h"

namespace qft {

Fp32ParameterStore::Fp32ParameterStore(const ModelConfig& config, ParamSet& weights, ParamSet* grads)
    : hidden_size_(config.hidden_size),
      weights_(bind_model_params(config, weights)),
      grads_(grads ? bind_model_params(config, *grads) : ModelParams{}),
      frozen_(grads == nullptr) {}

void Fp32ParameterStore::embed(float* out, const int* tokens, int N) {
  kernels::embedding_forward(out, tokens, weights_.head.embed, N, hidden_size_);
}

}  // namespace qft
