#include "train/training.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include "core/error.h"
#include "core/json_integer.h"
#include "dist/fp32_shards.h"
#include "dist/gather.h"
#include "model/hf_export.h"
#include "model/peft_adapter.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/lora_store.h"
#include "train/mixed_store.h"
#include "train/optimizers.h"
#include "train/qft_store.h"

namespace qft {
namespace {

// A non-finite loss whose gradients were all finite; `applied`: the update
// was made inside backward already.
std::optional<NonFinite> loss_check(double loss, bool applied) {
  if (std::isfinite(loss)) return std::nullopt;
  return NonFinite{"loss", -1, 0, applied};
}

// Over every rank's micro-batches.
int64_t predicted_tokens(const std::vector<Batch>& micro_batches) {
  int64_t total = 0;
  for (const Batch& batch : micro_batches) total += batch.predicted;
  total = dist::world().sum(total);
  if (total == 0) fail("the step predicts no tokens: each sequence needs at least 2");
  return total;
}

// Summed over micro-batches with one shared denominator: the gradient of the
// global batch's mean loss (this rank's part of it; the loss returned is all
// ranks'). before(i) runs ahead of micro-batch i.
double forward_backward_all(Transformer& transformer, const std::vector<Batch>& micro_batches,
                            const std::function<void(int)>& before = {}) {
  const int64_t denominator = predicted_tokens(micro_batches);
  double loss = 0.0;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    if (before) before(static_cast<int>(i));
    if (micro_batches[i].predicted > 0) loss += transformer.forward_backward(micro_batches[i], denominator);
  }
  return loss;
}

// Every rank's loss summed, after this rank's micro-batches.
double all_ranks(double loss) { return dist::world().sum(loss); }

// Data-parallel: the step is dropped on every rank when any rank met a
// non-finite value; a rank that met none reports where it was met elsewhere.
std::optional<NonFinite> agreed(std::optional<NonFinite> local, bool changed_here) {
  const dist::World& world = dist::world();
  if (!world.distributed() || !world.any(local.has_value())) return local;
  const bool changed = world.any(changed_here || (local && local->state_changed));
  if (!local) local = NonFinite{"a gradient or loss on another rank", -1, 0, false};
  local->state_changed = changed;
  return local;
}

// Every gradient in the order backward completes them (the last parameter's first), then the loss.
std::optional<NonFinite> check_all(int step, ParamSet& grads, double loss) {
  for (size_t i = grads.specs().size(); i-- > 0;) {
    if (auto found = check_gradient(step, grads.specs()[i].name, grads.data(i), grads.numel(i))) return found;
  }
  return loss_check(loss, false);
}

void save_set(StateWriter& writer, const ParamSet& set) {
  for (size_t i = 0; i < set.specs().size(); ++i) writer.add(set.specs()[i].name, DType::F32, set.specs()[i].shape, set.data(i));
}

void load_set(const StateReader& reader, ParamSet& set) {
  for (size_t i = 0; i < set.specs().size(); ++i) reader.read(set.specs()[i].name, DType::F32, set.specs()[i].shape, set.data(i));
}

class Fp32Training final : public Training {
 public:
  Fp32Training(const ModelSource& source, const TrainingSettings& settings)
      : Training(source.config(), settings),
        world_(dist::world()),
        weights_(load_fp32_weights(source)),
        grads_(MemCategory::Gradients, source.specs()),
        transformer_(model_config_, *weights_, &grads_, {.checkpointing = settings.checkpointing}) {
    if (!world_.distributed()) {
      optimizer_ = make_fp32_optimizer(settings.optimizer, settings.hyper, source.specs());
      return;
    }
    // Views: this rank's share of the weights in place, and of the summed
    // gradient where the in-place reduce-scatter leaves it (each parameter's start).
    const std::vector<ParamSpec> specs = dist::fp32_shard_specs(source.specs(), world_.size(), world_.rank());
    std::vector<float*> weights, grads;
    for (size_t i = 0; i < specs.size(); ++i) {
      weights.push_back(weights_->data(i) + share_offset(i));
      grads.push_back(grads_.data(i));
    }
    shard_weights_ = std::make_unique<ParamSet>(specs, std::move(weights));
    shard_grads_ = std::make_unique<ParamSet>(specs, std::move(grads));
    optimizer_ = make_fp32_optimizer(settings.optimizer, settings.hyper, specs);
  }

  double step(int step, float lr, const std::vector<Batch>& micro_batches) override {
    grads_.zero();
    const double loss = all_ranks(forward_backward_all(transformer_, micro_batches));
    nonfinite_ = agreed(check_all(step, grads_, loss), false);
    if (!nonfinite_) world_.distributed() ? sharded_update(lr) : optimizer_->step(*weights_, grads_, lr);
    last_step_ = step;
    return loss;
  }

  double evaluate(const Batch& batch) override { return transformer_.loss(batch); }
  void parameter(size_t index, float* out) override {
    kernels::copy(out, weights_->data(index), weights_->numel(index) * sizeof(float));
  }

 protected:
  void save_state(StateWriter& writer, StateWriter& shard) const override {
    save_set(writer, *weights_);
    optimizer_->save_state(shard);
  }
  void load_state(const StateReader& reader, const ShardReaders& shards) override {
    load_set(reader, *weights_);
    if (shards.ranks == world_.size()) return optimizer_->load_state(*shards.files.at(world_.rank()));
    optimizer_->load_resharded(shards, weights_->specs(), world_.size(), world_.rank());
  }

 private:
  int64_t share_offset(size_t index) const {
    return dist::fp32_shares(static_cast<int64_t>(weights_->numel(index)), world_.size()).offsets[world_.rank()];
  }

  // ZeRO-1: the global gradient of this rank's share, the optimizer on it,
  // every rank's share of the new weights to every rank. One sum at a time:
  // Open MPI's in-place reduce-scatter takes a temporary copy of its buffer
  // at rank 0, so all of them at once would hold a second gradient set there.
  void sharded_update(float lr) {
    for (size_t i = 0; i < grads_.specs().size(); ++i) {
      const dist::Shares parts = dist::fp32_shares(static_cast<int64_t>(grads_.numel(i)), world_.size());
      world_.reduce_scatter(grads_.data(i), parts.counts).wait();
    }
    optimizer_->step(*shard_weights_, *shard_grads_, lr);
    std::vector<dist::Request> requests;
    for (size_t i = 0; i < weights_->specs().size(); ++i) {
      requests.push_back(dist::gather_values(weights_->data(i), static_cast<int64_t>(weights_->numel(i)), dist::kFp32ShardUnit));
    }
    for (dist::Request& request : requests) request.wait();
  }

  const dist::World& world_;
  std::unique_ptr<ParamSet> weights_;
  ParamSet grads_;
  Transformer transformer_;
  std::unique_ptr<ParamSet> shard_weights_, shard_grads_;  // data-parallel: this rank's share
  std::unique_ptr<Optimizer> optimizer_;
};

// Training through a ParameterStore, which owns the weights and the optimizer
// state and saves them itself (QFT, mixed precision).
template <class Store>
class StoreTraining : public Training {
 public:
  double evaluate(const Batch& batch) override { return transformer_.loss(batch); }

 protected:
  template <class StoreSettings>
  StoreTraining(const ModelSource& source, const TrainingSettings& settings, const StoreSettings& store_settings)
      : Training(source.config(), settings),
        store_(source, store_settings),
        transformer_(model_config_, store_,
                     {.checkpointing = settings.checkpointing, .bf16_weights = TensorStore::bf16_weights(false)}) {}

  Store store_;
  Transformer transformer_;
};

class QftTraining final : public StoreTraining<QftStore> {
 public:
  QftTraining(const ModelSource& source, const TrainingSettings& settings)
      : StoreTraining(source, settings, settings) {}

  double step(int step, float lr, const std::vector<Batch>& micro_batches) override {
    if (static_cast<int>(micro_batches.size()) != settings_.grad_accum) {
      fail("expected ", settings_.grad_accum, " micro-batches per step, got ", micro_batches.size());
    }
    store_.begin_step(step, lr);
    const double loss = all_ranks(forward_backward_all(transformer_, micro_batches));
    nonfinite_ = store_.nonfinite() ? store_.nonfinite() : loss_check(loss, store_.fused());
    store_.finish_backward();
    nonfinite_ = agreed(nonfinite_, store_.fused() && store_.updates() > 0);
    store_.end_step(!nonfinite_);
    last_step_ = step;
    return loss;
  }

  void new_epoch() override { store_.refresh_thresholds(); }
  void parameter(size_t index, float* out) override { store_.dequantize(index, out); }

 protected:
  void save_state(StateWriter& writer, StateWriter& shard) const override { store_.save_state(writer, shard); }
  void load_state(const StateReader& reader, const ShardReaders& shards) override { store_.load_state(reader, shards); }
};

class MixedPrecisionTraining final : public StoreTraining<MixedPrecisionStore> {
 public:
  MixedPrecisionTraining(const ModelSource& source, const TrainingSettings& settings)
      : StoreTraining(source, settings, settings.hyper) {}

  double step(int step, float lr, const std::vector<Batch>& micro_batches) override {
    store_.begin_step(step);
    const double loss = forward_backward_all(transformer_, micro_batches);
    nonfinite_ = store_.nonfinite() ? store_.nonfinite() : loss_check(loss, false);
    store_.end_step(lr, !nonfinite_);
    last_step_ = step;
    return loss;
  }

  void parameter(size_t index, float* out) override { store_.master(index, out); }

 protected:
  void save_state(StateWriter& writer, StateWriter&) const override { store_.save_state(writer); }
  void load_state(const StateReader& reader, const ShardReaders&) override { store_.load_state(reader); }
};

// LoRA: the store holds the frozen base and the adapters; an FP32 optimizer
// updates the adapters after the step's micro-batches.
class LoraTraining final : public Training {
 public:
  LoraTraining(const ModelSource& source, const TrainingSettings& settings)
      : Training(source.config(), settings),
        store_(source, settings),
        transformer_(model_config_, store_,
                     {.checkpointing = settings.checkpointing, .adapter_rank = settings.lora->rank}),
        optimizer_(adapter_optimizer(settings.optimizer).fp32_optimizer(settings.hyper, store_.adapters().specs())) {}

  double step(int step, float lr, const std::vector<Batch>& micro_batches) override {
    ParamSet& grads = store_.adapter_grads();
    grads.zero();
    const double loss =
        forward_backward_all(transformer_, micro_batches, [&](int index) { store_.begin_micro_batch(step, index); });
    nonfinite_ = check_all(step, grads, loss);
    if (!nonfinite_) optimizer_->step(store_.adapters(), grads, lr);
    last_step_ = step;
    return loss;
  }

  double evaluate(const Batch& batch) override { return transformer_.loss(batch); }
  void parameter(size_t index, float* out) override { store_.merged(index, out); }

  void export_adapter(const std::string& directory, const std::string& base_model) const override {
    export_peft_adapter(directory, peft_config(base_model), tensors());
  }
  uint64_t adapter_bytes() const override { return export_peft_adapter_bytes(peft_config(""), tensors()); }

 protected:
  void save_state(StateWriter& writer, StateWriter&) const override {
    save_set(writer, store_.adapters());
    optimizer_->save_state(writer);
  }
  void load_state(const StateReader& reader, const ShardReaders&) override {
    load_set(reader, store_.adapters());
    optimizer_->load_state(reader);
  }
  nlohmann::json settings_json() const override {
    nlohmann::json json = checkpoint_settings_json(settings_);
    char fingerprint[17];
    std::snprintf(fingerprint, sizeof fingerprint, "%016llx", static_cast<unsigned long long>(store_.base_fingerprint()));
    json["lora_base_xxh64"] = fingerprint;
    return json;
  }

 private:
  PeftAdapterConfig peft_config(const std::string& base_model) const {
    const LoraSettings& lora = store_.settings();
    PeftAdapterConfig config{lora.rank, lora.alpha, lora.dropout, {}, base_model};
    for (Linear which : lora.targets) config.target_modules.push_back(peft_module(which));
    return config;
  }
  std::vector<TensorView> tensors() const {
    std::vector<TensorView> views;
    const ParamSet& adapters = store_.adapters();
    for (size_t i = 0; i < adapters.specs().size(); ++i) {
      views.push_back({adapters.specs()[i].name, adapters.specs()[i].shape, adapters.data(i)});
    }
    return views;
  }

  LoraStore store_;
  Transformer transformer_;
  std::unique_ptr<Optimizer> optimizer_;
};

}  // namespace

void Training::export_adapter(const std::string&, const std::string&) const {
  fail("only LoRA training (--method lora) has an adapter to export");
}

uint64_t Training::adapter_bytes() const { return 0; }

void Training::save(const std::string& directory) {
  HfExport options;
  options.dtype = DType::F32;
  export_hf_model(directory, model_config_, [&](size_t i, float* out) { parameter(i, out); }, options);
}

namespace {

// QLion's settings with momentum_bits named even where the checkpoint left
// the default (8) out, so two widths are told apart by their numbers.
nlohmann::json with_momentum_bits(nlohmann::json settings) {
  const bool qlion = settings.is_object() && settings.contains("optimizer") && settings["optimizer"] == "qlion";
  if (qlion && !settings.contains("lora") && !settings.contains("momentum_bits")) {
    settings["momentum_bits"] = 8;
  }
  return settings;
}

}  // namespace

// "grad_accum" counts the micro-batches of a step over all ranks, so a
// checkpoint resumes at another number of ranks with --grad-accum making up
// the same global batch.
nlohmann::json checkpoint_settings_json(const TrainingSettings& settings) {
  nlohmann::json json = {{"optimizer", optimizer_name(settings.optimizer)},
                         {"beta1", settings.hyper.beta1},
                         {"beta2", settings.hyper.beta2},
                         {"eps", settings.hyper.eps},
                         {"weight_decay", settings.hyper.weight_decay},
                         {"grad_accum", settings.grad_accum * dist::world().size()}};
  if (settings.lora) {
    const LoraSettings& lora = *settings.lora;
    json["lora"] = {{"rank", lora.rank},         {"alpha", lora.alpha}, {"dropout", lora.dropout},
                    {"targets", lora_targets_text(lora.targets)}, {"base", lora.int8_base ? "int8" : "fp32"},
                    {"seed", settings.seed}};
    if (lora.int8_base) json["lora"]["outlier_fraction"] = settings.qft.outlier_fraction;
  } else if (settings.optimizer == OptimizerKind::QLion) {
    json["outlier_fraction"] = settings.qft.outlier_fraction;
    json["rounding"] = settings.qft.rounding == Rounding::Stochastic ? "stochastic" : "nearest";
    json["seed"] = settings.seed;
    json["stack_gradients"] = settings.qft.stack_gradients;
    // Named only when not the default, so 8-bit checkpoints read as before.
    if (settings.qft.momentum_bits != 8) json["momentum_bits"] = settings.qft.momentum_bits;
  }
  return json;
}

void Training::save_checkpoint(const std::string& directory, const nlohmann::json& trainer_state) const {
  StateWriter state, shard;
  const bool sharded = dist::world().distributed();
  save_state(state, sharded ? shard : state);
  write_checkpoint(directory,
                   {{"step", last_step_}, {"model_config", model_config_to_json(model_config_)},
                    {"training", settings_json()}, {"trainer_state", trainer_state}},
                   state, sharded ? &shard : nullptr);
}

void Training::check_replicas() const {
  StateWriter replicated, shard;
  save_state(replicated, shard);
  const std::string mine = replicated.checksums().dump();
  const std::vector<std::string> all = dist::world().all_strings(mine);
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    const nlohmann::json first = nlohmann::json::parse(all[0]), other = nlohmann::json::parse(all[r]);
    for (const auto& [name, hash] : first.items()) {
      if (other.value(name, nlohmann::json()) != hash) {
        fail("after step ", last_step_, " rank ", r, " holds another ", name, " than rank 0 (the replicas diverged)");
      }
    }
    fail("after step ", last_step_, " rank ", r, "'s state differs from rank 0's");
  }
}

uint64_t Training::checkpoint_bytes() const {
  StateWriter state, shard;
  const bool sharded = dist::world().distributed();
  save_state(state, sharded ? shard : state);
  return state.file_bytes() + (sharded ? static_cast<uint64_t>(dist::world().sum(static_cast<int64_t>(shard.file_bytes()))) : 0);
}

ResumePoint Training::load_checkpoint(const std::string& directory) {
  const CheckpointFiles files = open_checkpoint(directory);
  const std::string manifest = files.directory + "/manifest.json";
  const auto member = [&](const char* key) { return files.manifest.value(key, nlohmann::json()); };
  expect_same_settings(member("model_config"), model_config_to_json(model_config_), "model config", manifest);
  expect_same_settings(with_momentum_bits(member("training")), with_momentum_bits(settings_json()), "training setting",
                       manifest);
  load_state(*files.state, files.shards());
  files.state->expect_all_read();
  ResumePoint resume;
  resume.step = json_integer<int>(files.manifest.at("step"), manifest + ": 'step'", 0);
  resume.trainer_state = files.manifest.value("trainer_state", nlohmann::json::object());
  resume.directory = files.directory;
  last_step_ = resume.step;
  return resume;
}

std::unique_ptr<Training> make_training(const ModelSource& source, const TrainingSettings& settings) {
  if (settings.grad_accum < 1) fail("--grad-accum must be at least 1");
  check_data_parallel(settings, dist::world().size());
  if (settings.lora) {
    adapter_optimizer(settings.optimizer);  // refuses one that is not
    return make_lora_training(source, settings);
  }
  return optimizer_entry(settings.optimizer).make_training(source, settings);
}

std::unique_ptr<Training> make_fp32_training(const ModelSource& source, const TrainingSettings& settings) {
  return std::make_unique<Fp32Training>(source, settings);
}

std::unique_ptr<Training> make_qft_training(const ModelSource& source, const TrainingSettings& settings) {
  return std::make_unique<QftTraining>(source, settings);
}

std::unique_ptr<Training> make_mixed_training(const ModelSource& source, const TrainingSettings& settings) {
  return std::make_unique<MixedPrecisionTraining>(source, settings);
}

std::unique_ptr<Training> make_lora_training(const ModelSource& source, const TrainingSettings& settings) {
  return std::make_unique<LoraTraining>(source, settings);
}

}  // namespace qft
