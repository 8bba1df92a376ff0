#include "text/sentencepiece_model.h"

#include <sentencepiece_processor.h>

#include <cstring>

#include "core/error.h"

namespace qft::text {
namespace {

// Just enough of protobuf's wire format to list a ModelProto's pieces and read
// normalizer_spec.add_dummy_prefix (Debian's libsentencepiece ships no model header).
class WireReader {
 public:
  WireReader(std::string_view bytes, const std::string& where) : bytes_(bytes), where_(where) {}
  bool done() const { return pos_ >= bytes_.size(); }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (done()) break;
      const auto byte = static_cast<unsigned char>(bytes_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return value;
    }
    fail(where_, ": truncated or corrupt SentencePiece model");
  }

  // Reads the next field's key; the caller then reads or skips its value.
  std::pair<uint32_t, uint32_t> key() {
    const uint64_t key = varint();
    return {static_cast<uint32_t>(key >> 3), static_cast<uint32_t>(key & 7)};
  }

  std::string_view bytes() {
    const uint64_t length = varint();
    if (length > bytes_.size() - pos_) fail(where_, ": truncated SentencePiece model");
    const std::string_view value = bytes_.substr(pos_, length);
    pos_ += length;
    return value;
  }

  float fixed32() {
    if (bytes_.size() - pos_ < 4) fail(where_, ": truncated SentencePiece model");
    float value;
    std::memcpy(&value, bytes_.data() + pos_, 4);
    pos_ += 4;
    return value;
  }

  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: advance(8); break;
      case 2: bytes(); break;
      case 5: advance(4); break;
      default: fail(where_, ": unsupported protobuf wire type ", wire_type, " in SentencePiece model");
    }
  }

 private:
  void advance(size_t count) {
    if (bytes_.size() - pos_ < count) fail(where_, ": truncated SentencePiece model");
    pos_ += count;
  }
  std::string_view bytes_;
  std::string where_;
  size_t pos_ = 0;
};

SentencePieceInfo parse_model_proto(std::string_view serialized, const std::string& where) {
  SentencePieceInfo info;
  WireReader model(serialized, where);
  while (!model.done()) {
    const auto [field, wire] = model.key();
    if (field == 1 && wire == 2) {  // repeated SentencePiece pieces
      WireReader piece(model.bytes(), where);
      std::string text;
      float score = 0;
      int type = 1;  // NORMAL
      while (!piece.done()) {
        const auto [f, w] = piece.key();
        if (f == 1 && w == 2) {
          text = std::string(piece.bytes());
        } else if (f == 2 && w == 5) {
          score = piece.fixed32();
        } else if (f == 3 && w == 0) {
          type = static_cast<int>(piece.varint());
        } else {
          piece.skip(w);
        }
      }
      info.pieces.push_back(std::move(text));
      info.scores.push_back(score);
      info.types.push_back(type);
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      WireReader spec(model.bytes(), where);
      while (!spec.done()) {
        const auto [f, w] = spec.key();
        if (f == 3 && w == 0) {
          info.add_dummy_prefix = spec.varint() != 0;
        } else {
          spec.skip(w);
        }
      }
    } else {
      model.skip(wire);
    }
  }
  return info;
}

}  // namespace

SentencePieceModel::SentencePieceModel(const std::string& path)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  // libsentencepiece reports most problems by status, but its trie builder
  // (darts-clone) throws on some malformed models, e.g. an empty piece.
  sentencepiece::util::Status status;
  try {
    status = processor_->Load(path);
  } catch (const std::exception& error) {
    fail(path, ": cannot load SentencePiece model: ", error.what());
  }
  if (!status.ok()) fail(path, ": cannot load SentencePiece model: ", status.ToString());
  info_ = parse_model_proto(processor_->serialized_model_proto(), path);
  if (static_cast<int>(info_.pieces.size()) != processor_->GetPieceSize()) {
    fail(path, ": SentencePiece model lists ", info_.pieces.size(), " pieces, the library ", processor_->GetPieceSize());
  }
  for (size_t id = 0; id < info_.pieces.size(); ++id) ids_.emplace(info_.pieces[id], static_cast<int>(id));
}

SentencePieceModel::~SentencePieceModel() = default;

void SentencePieceModel::tokenize(std::string_view word, std::vector<int>& ids) const {
  std::vector<int> pieces;
  const auto status = processor_->Encode(std::string(word), &pieces);
  if (!status.ok()) fail("SentencePiece encode failed: ", status.ToString());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
}

std::optional<int> SentencePieceModel::token_to_id(std::string_view token) const {
  const auto found = ids_.find(token);
  if (found == ids_.end()) return std::nullopt;
  return found->second;
}

std::optional<std::string> SentencePieceModel::id_to_token(int id) const {
  if (id < 0 || id >= size()) return std::nullopt;
  return info_.pieces[id];
}

std::optional<int> SentencePieceModel::bos_id() const {
  const int id = processor_->bos_id();
  return id >= 0 ? std::optional<int>(id) : std::nullopt;
}

std::optional<int> SentencePieceModel::eos_id() const {
  const int id = processor_->eos_id();
  return id >= 0 ? std::optional<int>(id) : std::nullopt;
}

std::optional<int> SentencePieceModel::pad_id() const {
  const int id = processor_->pad_id();
  return id >= 0 ? std::optional<int>(id) : std::nullopt;
}

}  // namespace qft::text
