#include "train/qft_store.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "dist/gather.h"
#include "dist/partition.h"
#include "kernels/kernels.h"
#include "optim/qlion.h"
#include "train/checkpoint.h"

namespace qft {
namespace {

// Random streams of one parameter: its weights, momentum and gradient
// writes draw independent numbers.
enum Purpose : uint32_t { kWeight = 0, kMomentum = 1, kGradient = 2, kPurposes = 4 };

// (rows, cols) of a parameter as QFT stores it: vectors are one row.
std::pair<int, int> stored_shape(const ParamSpec& spec) {
  const int rows = TensorStore::is_matrix(spec.role) ? static_cast<int>(spec.shape[0]) : 1;
  return {rows, static_cast<int>(shape_numel(spec.shape) / rows)};
}

// The momentum's codes. 4 bits: one BF16 range per 64 values (0.5625
// bytes a value): on a fine-tuned SmolLM2's Lion momentum that cuts the
// error of per-row 4-bit codes to a third and flips the sign of 6.3 % of
// the values rather than 16 % (FP32 ranges: 6.1 % at 0.625 bytes; BF16 per
// 128: 8.5 %); docs/results.md has the table.
CodeLayout momentum_layout(const QftSettings& qft) {
  if (qft.momentum_bits == 8) return {};
  if (qft.momentum_bits == 4) return CodeLayout::int4(64);
  fail("--momentum-bits must be 4 or 8, got ", qft.momentum_bits);
}

// Rows [first, first + rows) of a parameter that rank `rank` of `ranks` owns.
dist::Range owned_rows(int64_t total, Placement placement, int64_t first, int64_t rows) {
  const dist::Range share = dist::share(total, placement.ranks, placement.rank);
  const int64_t begin = std::clamp(first, share.begin, share.end);
  return {begin, std::clamp(first + rows, begin, share.end)};
}

// FP32 buffers of a data-parallel rank: the local gradient in flight (the
// largest linear: larger matrices are summed straight from the store's
// gradient buffer, before backward goes on, and the LM head's and the
// embedding's blocks are no larger) and its rows of the global one.
std::pair<size_t, size_t> exchange_floats(const ModelConfig& config, Placement placement, int head_rows) {
  if (placement.ranks == 1) return {0, 0};
  size_t owned = 0;
  for (const ParamSpec& spec : parameter_specs(config)) {
    const auto [rows, cols] = stored_shape(spec);
    const bool in_blocks = spec.role == ParamRole::Embedding || spec.role == ParamRole::LmHead;
    const int block = in_blocks ? std::min(head_rows, rows) : rows;
    for (int first = 0; first < rows; first += block) {
      owned = std::max(owned, static_cast<size_t>(owned_rows(rows, placement, first, block).size()) * cols);
    }
  }
  return {TensorStore::largest_linear(config), owned};
}

}  // namespace

struct QftStore::Param {
  const ParamSpec* spec = nullptr;
  int rows = 0, cols = 0;
  dist::Range owned;  // the rows this rank updates (all of them alone)
  std::unique_ptr<HybridMatrix> matrix;  // matrices
  Buffer<float> vector;                  // norm weights and biases, FP32
  QuantizedRows momentum;  // (owned rows, cols)
};

bool QftStore::fused(const TrainingSettings& settings) {
  return settings.grad_accum == 1 && !settings.qft.stack_gradients;
}

int QftStore::planned_head_block_rows(const ModelConfig& config, const TrainingSettings& settings) {
  return TensorStore::planned_head_block_rows(config, fused(settings));
}

QftMemory QftStore::memory(const ModelConfig& config, const TrainingSettings& settings, Placement placement) {
  QftMemory memory;
  for (const ParamSpec& spec : parameter_specs(config)) {
    const auto [rows, cols] = stored_shape(spec);
    const int64_t count = shape_numel(spec.shape);
    memory.weights += is_matrix(spec.role)
                          ? HybridMatrix::bytes(rows, cols, HybridMatrix::outliers_for(count, settings.qft.outlier_fraction))
                          : static_cast<size_t>(count) * sizeof(float);
    memory.momentum += QuantizedRows::bytes(dist::share(rows, placement.ranks, placement.rank).size(), cols,
                                            momentum_layout(settings.qft));
    memory.stack += QuantizedRows::bytes(rows, cols);  // the same per-row INT8 layout, every row
  }
  const bool stacked = settings.grad_accum > 1 || settings.qft.stack_gradients;
  if (!stacked) memory.stack = 0;
  const auto [in_flight, owned] = exchange_floats(config, placement, planned_head_block_rows(config, settings));
  memory.exchange = (in_flight + owned) * sizeof(float);
  const WorkingMemory working = working_memory(config, false, fused(settings));
  memory.fp32_grads = working.grads;
  memory.workspace = working.weights;
  return memory;
}

QftStore::QftStore(const ModelSource& source, const TrainingSettings& settings)
    : TensorStore(source.config(), source.specs(), false, fused(settings)), settings_(settings), world_(dist::world()) {
  if (settings_.grad_accum < 1) fail("--grad-accum must be at least 1");
  const Placement placement = Placement::of_world();
  const auto [in_flight, owned] = exchange_floats(config_, placement, head_block_rows());
  in_flight_ = Buffer<float>(MemCategory::Gradients, in_flight);
  owned_grad_ = Buffer<float>(MemCategory::Gradients, owned);
  float* staging = borrow_fp32_buffer();  // one tensor at a time, never the model
  for (size_t i = 0; i < specs_.size(); ++i) {
    auto param = std::make_unique<Param>();
    param->spec = &specs_[i];
    std::tie(param->rows, param->cols) = stored_shape(specs_[i]);
    if (is_matrix(specs_[i].role)) {
      param->matrix = std::make_unique<HybridMatrix>(specs_[i].name, param->rows, param->cols);
      const float fraction = settings_.qft.outlier_fraction;
      const bool vocabulary = specs_[i].role == ParamRole::Embedding || specs_[i].role == ParamRole::LmHead;
      if (vocabulary && param->rows > head_block_rows()) {  // taken in blocks: larger than the staging room
        param->matrix->assign([&](int row, float* out) { source.fill_rows(i, out, row, 1); }, fraction,
                              rounding(i, kWeight, 0));
      } else {
        source.fill(i, staging);
        param->matrix->assign(staging, fraction, rounding(i, kWeight, 0));
      }
    } else {
      source.fill(i, staging);
      param->vector = Buffer<float>(MemCategory::Weights, param->cols);
      kernels::copy(param->vector.data(), staging, param->cols * sizeof(float));
    }
    param->owned = dist::share(param->rows, placement.ranks, placement.rank);
    param->momentum = QuantizedRows(MemCategory::OptimizerState, static_cast<int>(param->owned.size()), param->cols,
                                    momentum_layout(settings_.qft));
    params_.push_back(std::move(param));
  }
  if (!fused()) stack_ = std::make_unique<GradientStack>();
  bind_views();
}

QftStore::~QftStore() = default;

RoundingContext QftStore::rounding(size_t index, int purpose, uint32_t step) const {
  // The initial split and the per-epoch refresh change nothing on average,
  // so they round to nearest; updates use the configured rounding.
  const Rounding mode = purpose == kWeight && step == 0 ? Rounding::Nearest : settings_.qft.rounding;
  return {mode, settings_.seed, static_cast<uint32_t>(index) * kPurposes + purpose, step};
}

void QftStore::begin_step(int step, float lr) {
  if (step < 1) fail("steps count from 1");
  step_ = step;
  lr_ = lr;
  skip_updates_ = false;
  updates_ = 0;
  start_step(step);
}

void QftStore::end_step(bool apply) {
  if (passes_ != settings_.grad_accum) fail("a step needs ", settings_.grad_accum, " micro-batches, got ", passes_);
  if (!fused()) {
    if (!apply) {
      stack_->clear();
    } else {
      // Algorithm 2: the first layer's gradients are on top.
      while (!stack_->empty()) {
        const GradientStack::Entry entry = stack_->pop();
        if (!world_.distributed()) {
          update(entry.param, nullptr, entry.grad, params_[entry.param]->owned);
          continue;
        }
        float* grad = borrow_fp32_buffer();  // backward is over
        dequantize_rows(grad, entry.grad->view());
        exchange(entry.param, grad, 0, params_[entry.param]->rows);
        finish_exchange();
      }
    }
  }
  finish_exchange();
  for (dist::Request& gather : gathers_) gather.wait();
  gathers_.clear();
  for (size_t index : gathered_) invalidate(index);
  gathered_.clear();
}

void QftStore::refresh_thresholds() {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i]->matrix) continue;
    params_[i]->matrix->refresh(settings_.qft.outlier_fraction, rounding(i, kWeight, 0));
    invalidate(i);
  }
}

void QftStore::save_state(StateWriter& writer, StateWriter& shard) const {
  if (stack_ && !stack_->empty()) fail("a checkpoint is taken between steps, not inside one");
  for (const auto& param : params_) {
    const std::string& name = param->spec->name;
    if (param->matrix) {
      save_hybrid(writer, name, *param->matrix);
    } else {
      writer.add(name, DType::F32, param->spec->shape, param->vector.data());
    }
    save_rows(shard, name + ".momentum", param->momentum);
  }
}

void QftStore::load_state(const StateReader& reader, const ShardReaders& shards) {
  if (stack_ && !stack_->empty()) fail("a checkpoint is loaded between steps, not inside one");
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& param = *params_[i];
    const std::string& name = param.spec->name;
    if (param.matrix) {
      load_hybrid(reader, name, *param.matrix);
    } else {
      reader.read(name, DType::F32, param.spec->shape, param.vector.data());
    }
    load_row_share(shards, name + ".momentum", param.rows, param.owned.begin, param.momentum);
    invalidate(i);
  }
}

void QftStore::dequantize(size_t index, float* out) const {
  const Param& param = *params_.at(index);
  if (param.matrix) return load(index, out, 0, param.rows);
  kernels::copy(out, param.vector.data(), param.cols * sizeof(float));
}

void QftStore::load(size_t index, float* out, int first, int rows) const {
  dequantize_hybrid_rows(out, params_.at(index)->matrix->view(), first, first + rows);
}

void QftStore::load_bf16(size_t index, uint16_t* out, int first, int rows) const {
  dequantize_hybrid_rows_bf16(out, params_.at(index)->matrix->view(), first, first + rows);
}

void QftStore::gather_rows(float* out, size_t index, const int* rows, int N) const {
  gather_hybrid_rows(out, params_.at(index)->matrix->view(), rows, N);
}

float* QftStore::vector(size_t index) { return params_.at(index)->vector.data(); }

int64_t QftStore::outlier_count() const {
  int64_t total = 0;
  for (const auto& param : params_) total += param->matrix ? param->matrix->outlier_count() : 0;
  return total;
}

// Fused: update the rows now. Stacked: quantize the gradient onto the
// stack (first micro-batch) or into its slot (later ones).
void QftStore::consume(size_t index, const float* grad, int first, int rows) {
  if (fused()) {
    if (world_.distributed()) return exchange(index, grad, first, rows);
    update(index, grad, nullptr, {first, first + rows});
    return;
  }
  const Param& param = *params_[index];
  if (first != 0 || rows != param.rows) throw std::logic_error("the gradient stack takes whole parameters");
  const RoundingContext context = rounding(index, kGradient, static_cast<uint32_t>(step_ * settings_.grad_accum + passes_));
  if (passes_ == 0) {
    stack_->push(index, param.rows, param.cols, grad, context, param.spec->name);
  } else {
    stack_->accumulate(index, grad, context, param.spec->name);
  }
}

// Algorithm 2 for `rows` of one parameter, all of them this rank's.
void QftStore::update(size_t index, const float* fp32_grad, const QuantizedRows* int8_grad, dist::Range rows) {
  Param& param = *params_[index];
  QLionParameter state;
  if (param.matrix) state.weights = param.matrix->view();
  state.vector = param.vector.data();
  state.momentum = param.momentum.view().rows_from(static_cast<int>(rows.begin - param.owned.begin));
  state.grad = fp32_grad;
  if (int8_grad) state.stacked_grad = int8_grad->view();
  state.cols = param.cols;
  const QLionRounding rounds{rounding(index, kWeight, step_), rounding(index, kMomentum, step_)};
  qlion_update_rows(state, static_cast<int>(rows.begin), static_cast<int>(rows.end), lr_, settings_.hyper, rounds,
                    param.spec->name);
  invalidate(index);
  ++updates_;
}

void QftStore::exchange(size_t index, const float* grad, int first, int rows) {
  finish_exchange();
  const Param& param = *params_[index];
  const size_t count = static_cast<size_t>(rows) * param.cols;
  const bool fits = count <= in_flight_.size();
  if (fits) {
    kernels::copy(in_flight_.data(), grad, count * sizeof(float));
    grad = in_flight_.data();
  }
  std::vector<int64_t> counts;
  for (int r = 0; r < world_.size(); ++r) {
    counts.push_back(owned_rows(param.rows, {world_.size(), r}, first, rows).size() * param.cols);
  }
  in_flight_sum_ = world_.reduce_scatter(grad, owned_grad_.data(), counts);
  in_flight_index_ = index;
  in_flight_rows_ = {first, first + rows};
  if (!fits) finish_exchange();  // `grad` is the store's buffer, which backward reuses next
}

// The global gradient of this rank's rows has arrived: check it, update the
// rows, and once the parameter's last rows are in, send them. Once this rank
// met a non-finite gradient — its own, or in its rows of a sum — it updates
// no more rows; the ranks then agree on the step's fate (Training: stopped,
// or dropped when no rank updated anything).
void QftStore::finish_exchange() {
  if (in_flight_index_ == SIZE_MAX) return;
  in_flight_sum_.wait();
  const size_t index = std::exchange(in_flight_index_, SIZE_MAX);
  Param& param = *params_[index];
  const dist::Range rows = owned_rows(param.rows, Placement::of_world(), in_flight_rows_.begin, in_flight_rows_.size());
  const size_t owned = static_cast<size_t>(rows.size()) * param.cols;
  const size_t first = static_cast<size_t>(rows.begin) * param.cols;
  if (!skip_updates_ && !nonfinite() && !check_gradient(step_, param.spec->name, owned_grad_.data(), owned, first)) {
    if (rows.size() > 0) update(index, owned_grad_.data(), nullptr, rows);
  } else {
    skip_updates_ = true;
  }
  if (in_flight_rows_.end < param.rows) return;
  if (param.matrix) {
    for (dist::Request& request : dist::gather_rows(*param.matrix)) gathers_.push_back(std::move(request));
  } else {
    gathers_.push_back(dist::gather_values(param.vector.data(), param.cols, param.cols));
  }
  gathered_.push_back(index);
}

}  // namespace qft
