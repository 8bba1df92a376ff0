#pragma once
// An HF model directory's tensors: model.safetensors, or the shards listed in
// model.safetensors.index.json, all memory-mapped.
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace qft {

class HfCheckpoint {
 public:
  explicit HfCheckpoint(const std::string& directory);

  // Throws naming the file that should have held it when absent.
  const TensorRecord& tensor(const std::string& name) const;
  const std::string& directory() const { return directory_; }

 private:
  std::string directory_;
  std::string expected_file_;  // where a missing tensor was looked for
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorRecord*> index_;
};

}  // namespace qft
