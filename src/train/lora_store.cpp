#include "train/lora_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

#include "core/error.h"
#include "model/peft_adapter.h"
#include "quant/hybrid.h"
#include "kernels/kernels.h"
#include "train/qft_store.h"
#include "train/tensor_store.h"

namespace qft {
namespace {

constexpr int kLinearCount = static_cast<int>(std::size(kLinears));
constexpr uint32_t kInitialisationStream = 0x4c6f5241u;  // "LoRA": A's uniforms, apart from dropout's

int linear_position(Linear which) { return static_cast<int>(which); }

std::string weight_name(int layer, Linear which) {
  return layer_param_name(layer, std::string(linear_module(which)) + ".weight");
}

std::string adapter_name(int layer, Linear which, char matrix) {
  return layer_param_name(layer, std::string(linear_module(which)) + ".lora_" + matrix + ".weight");
}

// (out, in) of a linear weight, from the model's parameter list.
std::pair<int64_t, int64_t> linear_shape(const std::vector<ParamSpec>& specs, int layer, Linear which) {
  const std::string name = weight_name(layer, which);
  for (const ParamSpec& spec : specs) {
    if (spec.name == name) return {spec.shape[0], spec.shape[1]};
  }
  fail("the model has no parameter '", name, "'");
}

std::string shape_text(const Shape& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

bool is_target(const LoraSettings& settings, Linear which) {
  return std::find(settings.targets.begin(), settings.targets.end(), which) != settings.targets.end();
}

void refuse_fused_projections(const ModelConfig& config) {
  if (config.fused_projections()) {
    fail("LoRA on ", architecture_name(config.architecture), "'s fused qkv_proj and gate_up_proj is not implemented "
         "(full fine-tuning is)");
  }
}

void check_settings(const ModelConfig& config, const LoraSettings& settings) {
  refuse_fused_projections(config);
  if (settings.rank < 1) fail("--lora-rank must be at least 1");
  if (!(settings.alpha > 0.0f) || !std::isfinite(settings.alpha)) fail("--lora-alpha must be a positive number");
  if (!(settings.dropout >= 0.0f && settings.dropout < 1.0f)) fail("--lora-dropout must be in [0, 1)");
  if (settings.targets.empty()) fail("--lora-targets names no module");
  const std::vector<ParamSpec> specs = parameter_specs(config);
  for (Linear which : settings.targets) {
    const auto [out, in] = linear_shape(specs, 0, which);
    if (settings.rank > std::min(out, in)) {
      fail("--lora-rank ", settings.rank, " exceeds ", peft_module(which), "'s smaller side (", std::min(out, in), ")");
    }
  }
}

}  // namespace

const char* peft_module(Linear which) { return std::strchr(linear_module(which), '.') + 1; }

std::vector<Linear> parse_lora_targets(const std::string& list) {
  std::set<int> chosen;
  size_t begin = 0;
  while (begin <= list.size()) {
    const size_t end = std::min(list.find(',', begin), list.size());
    std::string name = list.substr(begin, end - begin);
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    begin = end + 1;
    if (name.empty()) continue;
    const std::vector<Linear> adaptable = LoraSettings{}.targets;
    if (name == "all-linear") {  // PEFT's shorthand: every linear but the LM head
      for (Linear which : adaptable) chosen.insert(linear_position(which));
      continue;
    }
    const auto found = std::find_if(adaptable.begin(), adaptable.end(),
                                    [&](Linear which) { return name == peft_module(which); });
    if (found == adaptable.end()) {
      fail("unknown LoRA target '", name, "' (expected ", lora_targets_text(adaptable), " or all-linear)");
    }
    chosen.insert(linear_position(*found));
  }
  std::vector<Linear> targets;
  for (int position : chosen) targets.push_back(static_cast<Linear>(position));
  return targets;
}

std::string lora_targets_text(const std::vector<Linear>& targets) {
  std::string text;
  for (Linear which : targets) text += (text.empty() ? "" : ",") + std::string(peft_module(which));
  return text;
}

std::vector<ParamSpec> lora_adapter_specs(const ModelConfig& config, const LoraSettings& settings) {
  refuse_fused_projections(config);
  const std::vector<ParamSpec> model = parameter_specs(config);
  std::vector<ParamSpec> specs;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    for (Linear which : linears_of(config)) {
      if (!is_target(settings, which)) continue;
      const auto [out, in] = linear_shape(model, layer, which);
      specs.push_back({adapter_name(layer, which, 'A'), {settings.rank, in}, ParamRole::Linear});
      specs.push_back({adapter_name(layer, which, 'B'), {out, settings.rank}, ParamRole::Linear});
    }
  }
  return specs;
}

// QFT's hybrid INT8 form of the base, rounded to nearest once and never
// written again; TensorStore materialises one matrix at a time.
class LoraStore::FrozenInt8 final : public TensorStore {
 public:
  FrozenInt8(const ModelSource& source, float outlier_fraction, uint64_t& fingerprint)
      : TensorStore(source.config(), source.specs(), /*frozen=*/true) {
    float* staging = borrow_fp32_buffer();
    matrices_.resize(specs_.size());
    vectors_.resize(specs_.size());
    for (size_t i = 0; i < specs_.size(); ++i) {
      const ParamSpec& spec = specs_[i];
      source.fill(i, staging);
      const size_t count = static_cast<size_t>(shape_numel(spec.shape));
      fingerprint = xxh64(staging, count * sizeof(float), fingerprint);
      if (is_matrix(spec.role)) {
        const int rows = static_cast<int>(spec.shape[0]);
        matrices_[i] = std::make_unique<HybridMatrix>(spec.name, rows, static_cast<int>(count / rows));
        matrices_[i]->assign(staging, outlier_fraction, {Rounding::Nearest, 0, static_cast<uint32_t>(i), 0});
      } else {
        vectors_[i] = Buffer<float>(MemCategory::Weights, count);
        kernels::copy(vectors_[i].data(), staging, count * sizeof(float));
      }
    }
    bind_views();
  }

  void parameter(size_t index, float* out) const {
    if (matrices_[index]) return load(index, out, 0, matrices_[index]->rows());
    kernels::copy(out, vectors_[index].data(), vectors_[index].size() * sizeof(float));
  }

 private:
  void load(size_t index, float* out, int first, int rows) const override {
    dequantize_hybrid_rows(out, matrices_[index]->view(), first, first + rows);
  }
  void gather_rows(float* out, size_t index, const int* rows, int N) const override {
    gather_hybrid_rows(out, matrices_[index]->view(), rows, N);
  }
  float* vector(size_t index) override { return vectors_[index].data(); }
  void consume(size_t, const float*, int, int) override { throw std::logic_error("a frozen store consumed a gradient"); }

  std::vector<std::unique_ptr<HybridMatrix>> matrices_;
  std::vector<Buffer<float>> vectors_;
};

LoraMemory LoraStore::memory(const ModelConfig& config, const TrainingSettings& settings) {
  LoraMemory memory;
  if (settings.lora->int8_base) {
    memory.base = QftStore::memory(config, settings).weights;  // the same hybrid matrices
    memory.workspace = TensorStore::working_memory(config, /*frozen=*/true).weights;
  } else {
    memory.base = ParamSet::bytes(parameter_specs(config));
  }
  memory.adapters = memory.grads = ParamSet::bytes(lora_adapter_specs(config, *settings.lora));
  return memory;
}

LoraStore::LoraStore(const ModelSource& source, const TrainingSettings& settings)
    : settings_(*settings.lora),
      seed_(settings.seed),
      config_(source.config()),
      specs_(source.specs()),
      adapters_(MemCategory::Weights, (check_settings(source.config(), settings_), lora_adapter_specs(source.config(), settings_))),
      grads_(MemCategory::Gradients, adapters_.specs()) {
  if (settings_.int8_base) {
    auto base = std::make_unique<FrozenInt8>(source, settings.qft.outlier_fraction, fingerprint_);
    int8_base_ = base.get();
    base_ = std::move(base);
  } else {
    fp32_base_ = load_fp32_weights(source);
    for (size_t i = 0; i < specs_.size(); ++i) {
      fingerprint_ = xxh64(fp32_base_->data(i), fp32_base_->numel(i) * sizeof(float), fingerprint_);
    }
    base_ = std::make_unique<Fp32ParameterStore>(config_, *fp32_base_, nullptr);
  }
  if (settings_.initial_adapter.empty()) {
    initialise_adapters();
  } else {
    load_initial_adapter(settings_.initial_adapter);
  }
  bind_adapters();
}

LoraStore::~LoraStore() = default;

void LoraStore::initialise_adapters() {
  // PEFT: kaiming_uniform_(A, a=√5), i.e. U(−1/√in, 1/√in); B = 0.
  for (size_t i = 0; i < adapters_.specs().size(); i += 2) {
    const Shape& shape = adapters_.specs()[i].shape;  // A (R, IC)
    kernels::lora_initialise(adapters_.data(i), static_cast<int>(shape[0]), static_cast<int>(shape[1]),
                             {seed_, {static_cast<uint32_t>(i), kInitialisationStream}});
  }
}

void LoraStore::load_initial_adapter(const std::string& directory) {
  const PeftAdapterConfig config = read_peft_adapter_config(directory);
  const std::string config_path = directory + "/adapter_config.json";
  std::vector<Linear> targets;
  for (const std::string& module : config.target_modules) {
    for (Linear which : parse_lora_targets(module)) targets.push_back(which);
  }
  std::sort(targets.begin(), targets.end());
  targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
  if (config.rank != settings_.rank) fail(config_path, ": r is ", config.rank, ", but --lora-rank is ", settings_.rank);
  if (config.alpha != settings_.alpha) {
    fail(config_path, ": lora_alpha is ", config.alpha, ", but --lora-alpha is ", settings_.alpha);
  }
  if (targets != settings_.targets) {
    fail(config_path, ": target_modules are ", lora_targets_text(targets), ", but --lora-targets are ",
         lora_targets_text(settings_.targets));
  }
  const SafetensorsFile file(directory + "/adapter_model.safetensors");
  for (size_t i = 0; i < adapters_.specs().size(); ++i) {
    const ParamSpec& spec = adapters_.specs()[i];
    const TensorRecord* record = file.find(kPeftPrefix + spec.name);
    if (!record) fail(file.path(), ": no tensor '", kPeftPrefix, spec.name, "'");
    if (record->shape != spec.shape) {
      fail(file.path(), ": '", record->name, "' has shape ", shape_text(record->shape), ", expected ",
           shape_text(spec.shape));
    }
    convert_to_f32(adapters_.data(i), *record);
  }
  if (file.tensors().size() != adapters_.specs().size()) {
    for (const auto& [name, record] : file.tensors()) {
      if (name.rfind(kPeftPrefix, 0) != 0 || !adapters_.find(name.substr(std::strlen(kPeftPrefix)))) {
        fail(file.path(), ": tensor '", name, "' is not an adapter of the --lora-targets");
      }
    }
  }
}

void LoraStore::bind_adapters() {
  views_.assign(static_cast<size_t>(config_.num_layers) * kLinearCount, LoraAdapter{});
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    for (Linear which : settings_.targets) {
      const size_t position = static_cast<size_t>(layer) * kLinearCount + linear_position(which);
      adapter_of_weight_[weight_name(layer, which)] = position;
      LoraAdapter& view = views_[position];
      view.a = adapters_.get(adapter_name(layer, which, 'A'));
      view.b = adapters_.get(adapter_name(layer, which, 'B'));
      view.grad_a = grads_.get(adapter_name(layer, which, 'A'));
      view.grad_b = grads_.get(adapter_name(layer, which, 'B'));
      view.rank = settings_.rank;
      view.scale = settings_.alpha / static_cast<float>(settings_.rank);
      view.dropout.p = settings_.dropout;
      view.dropout.uniforms.seed = seed_;
    }
  }
}

const LoraAdapter* LoraStore::adapter(int layer, Linear which) {
  const LoraAdapter& view = views_.at(static_cast<size_t>(layer) * kLinearCount + linear_position(which));
  return view.rank > 0 ? &view : nullptr;
}

void LoraStore::begin_micro_batch(int step, int index) {
  if (index >= (1 << 16)) fail("LoRA's dropout supports at most 65536 micro-batches per step");
  for (size_t k = 0; k < views_.size(); ++k) {
    views_[k].dropout.uniforms.stream[0] = static_cast<uint32_t>(k) | static_cast<uint32_t>(index) << 16;
    views_[k].dropout.uniforms.stream[1] = static_cast<uint32_t>(step);
  }
}

void LoraStore::merged(size_t index, float* out) {
  if (int8_base_) {
    int8_base_->parameter(index, out);
  } else {
    kernels::copy(out, fp32_base_->data(index), fp32_base_->numel(index) * sizeof(float));
  }
  const auto found = adapter_of_weight_.find(specs_[index].name);
  if (found == adapter_of_weight_.end()) return;
  const LoraAdapter& view = views_[found->second];
  const int OC = static_cast<int>(specs_[index].shape[0]), IC = static_cast<int>(specs_[index].shape[1]);
  kernels::lora_merge(out, view.a, view.b, OC, IC, view.rank, view.scale);
}

}  // namespace qft
