#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/state_file.h"
#include "kernels/kernels.h"
#include "optim/fp32_optimizers.h"
#include "optim/updates.h"

namespace qft {
AdamW8bit::AdamW8bit(const OptimizerSettings& settings, const std::vector<ParamSpec>& specs)
    : settings_(settings),
      signed_book_(dynamic_code_book(true)),
      unsigned_book_(dynamic_code_book(false)),
      signed_encoder_(signed_book_),
      unsigned_encoder_(unsigned_book_) {
  size_t values = 0, blocks = 0;
  for (const ParamSpec& spec : specs) {
    const size_t count = static_cast<size_t>(shape_numel(spec.shape));
    tensors_.push_back({values, blocks, count});
    values += count;
    blocks += (count + kBlockwiseBlock - 1) / kBlockwiseBlock;
  }
  momentum_ = Buffer<uint8_t>(MemCategory::OptimizerState, values);
  variance_ = Buffer<uint8_t>(MemCategory::OptimizerState, values);
  momentum_absmax_ = Buffer<float>(MemCategory::OptimizerState, blocks);
  variance_absmax_ = Buffer<float>(MemCategory::OptimizerState, blocks);
  // Codes start at the book's zero, so both moments start at 0.
  const uint8_t signed_zero = nearest_code(signed_book_, 0.0f), unsigned_zero = nearest_code(unsigned_book_, 0.0f);
  kernels::fill_bytes(momentum_.data(), signed_zero, values);
  kernels::fill_bytes(variance_.data(), unsigned_zero, values);
}

void AdamW8bit::step(ParamSet& weights, const ParamSet& grads, float lr) {
  const AdamWStep adam = AdamWStep::at(settings_, ++steps_, lr);
  const BlockwiseCodeBooks books{signed_book_, unsigned_book_, signed_encoder_, unsigned_encoder_};
  for (size_t t = 0; t < tensors_.size(); ++t) {
    const Tensor& tensor = tensors_[t];
    const BlockwiseMoments moments{momentum_.data() + tensor.value_offset, variance_.data() + tensor.value_offset,
                                   momentum_absmax_.data() + tensor.block_offset,
                                   variance_absmax_.data() + tensor.block_offset};
    adamw8bit_step(weights.data(t), moments, grads.data(t), tensor.count, books, adam);
  }
}

void AdamW8bit::save_state(StateWriter& writer) const {
  const Shape values = {static_cast<int64_t>(momentum_.size())}, blocks = {static_cast<int64_t>(momentum_absmax_.size())};
  writer.add("optimizer.adamw8bit.m_codes", DType::U8, values, momentum_.data());
  writer.add("optimizer.adamw8bit.v_codes", DType::U8, values, variance_.data());
  writer.add("optimizer.adamw8bit.m_absmax", DType::F32, blocks, momentum_absmax_.data());
  writer.add("optimizer.adamw8bit.v_absmax", DType::F32, blocks, variance_absmax_.data());
  writer.add_int64("optimizer.adamw8bit.steps", steps_);
}

void AdamW8bit::load_state(const StateReader& reader) {
  const Shape values = {static_cast<int64_t>(momentum_.size())}, blocks = {static_cast<int64_t>(momentum_absmax_.size())};
  reader.read("optimizer.adamw8bit.m_codes", DType::U8, values, momentum_.data());
  reader.read("optimizer.adamw8bit.v_codes", DType::U8, values, variance_.data());
  reader.read("optimizer.adamw8bit.m_absmax", DType::F32, blocks, momentum_absmax_.data());
  reader.read("optimizer.adamw8bit.v_absmax", DType::F32, blocks, variance_absmax_.data());
  steps_ = reader.read_int64("optimizer.adamw8bit.steps");
  if (steps_ < 0) fail(reader.path(), ": negative 8-bit AdamW step count");
}

// Shares are whole 256-value blocks (a parameter's last may be short), so a
// run of values is a run of blocks too.
void AdamW8bit::load_resharded(const ShardReaders& shards, const std::vector<ParamSpec>& specs, int ranks, int rank) {
  const auto layout = [&](int of_ranks, int of_rank) {
    std::vector<Tensor> tensors;
    size_t values = 0, blocks = 0;
    for (const ParamSpec& spec : dist::fp32_shard_specs(specs, of_ranks, of_rank)) {
      const size_t count = static_cast<size_t>(shape_numel(spec.shape));
      tensors.push_back({values, blocks, count});
      values += count;
      blocks += (count + kBlockwiseBlock - 1) / kBlockwiseBlock;
    }
    tensors.push_back({values, blocks, 0});  // the totals
    return tensors;
  };
  for (const dist::ShareOverlap& run : dist::share_overlaps(specs, shards.ranks, ranks, rank)) {
    const std::vector<Tensor> theirs = layout(shards.ranks, run.source);
    const StateReader& reader = *shards.files.at(run.source);
    const Shape values = {static_cast<int64_t>(theirs.back().value_offset)};
    const Shape blocks = {static_cast<int64_t>(theirs.back().block_offset)};
    const Tensor& from = theirs[run.param];
    const Tensor& to = tensors_[run.param];
    // `count` elements of `bytes` each, from element `source` of the stored tensor to element `target` of `out`.
    const auto copy = [&](const char* tensor, DType dtype, const Shape& shape, void* out, size_t target, size_t source,
                          size_t bytes, size_t count) {
      std::memcpy(static_cast<uint8_t*>(out) + target * bytes, reader.get(tensor, dtype, shape) + source * bytes, count * bytes);
    };
    const size_t to_value = to.value_offset + run.offset, from_value = from.value_offset + run.source_offset;
    const size_t to_block = to.block_offset + run.offset / kBlockwiseBlock, from_block = from.block_offset + run.source_offset / kBlockwiseBlock;
    const size_t count = static_cast<size_t>(run.count), block_count = (count + kBlockwiseBlock - 1) / kBlockwiseBlock;
    copy("optimizer.adamw8bit.m_codes", DType::U8, values, momentum_.data(), to_value, from_value, 1, count);
    copy("optimizer.adamw8bit.v_codes", DType::U8, values, variance_.data(), to_value, from_value, 1, count);
    copy("optimizer.adamw8bit.m_absmax", DType::F32, blocks, momentum_absmax_.data(), to_block, from_block, sizeof(float), block_count);
    copy("optimizer.adamw8bit.v_absmax", DType::F32, blocks, variance_absmax_.data(), to_block, from_block, sizeof(float), block_count);
  }
  steps_ = shards.files.at(0)->read_int64("optimizer.adamw8bit.steps");
  if (steps_ < 0) fail(shards.files.at(0)->path(), ": negative 8-bit AdamW step count");
}

}  // namespace qft
