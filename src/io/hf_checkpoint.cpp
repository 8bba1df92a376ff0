#include "io/hf_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace qft {
namespace fs = std::filesystem;

HfCheckpoint::HfCheckpoint(const std::string& directory) : directory_(directory) {
  const fs::path root(directory);
  const fs::path single = root / "model.safetensors";
  const fs::path index_path = root / "model.safetensors.index.json";
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> shard_of_tensor;
  if (fs::exists(index_path)) {
    expected_file_ = index_path.string();
    std::ifstream stream(index_path);
    try {
      const nlohmann::json index = nlohmann::json::parse(stream);
      for (const auto& [tensor, shard] : index.at("weight_map").items()) {
        const std::string shard_name = shard.get<std::string>();
        if (shard_name.find('/') != std::string::npos) {
          fail(index_path.string(), ": shard name '", shard_name, "' must be a plain file name");
        }
        shard_of_tensor[tensor] = shard_name;
        if (std::find(shard_names.begin(), shard_names.end(), shard_name) == shard_names.end()) {
          shard_names.push_back(shard_name);
        }
      }
    } catch (const nlohmann::json::exception& error) {
      fail(index_path.string(), ": malformed index: ", error.what());
    }
  } else if (fs::exists(single)) {
    expected_file_ = single.string();
    shard_names.push_back("model.safetensors");
  } else {
    fail(directory, ": no model.safetensors or model.safetensors.index.json");
  }
  for (const std::string& shard_name : shard_names) {
    files_.push_back(std::make_unique<SafetensorsFile>((root / shard_name).string()));
    for (const auto& [name, record] : files_.back()->tensors()) index_[name] = &record;
  }
  for (const auto& [tensor, shard] : shard_of_tensor) {
    if (!index_.count(tensor)) {
      fail((root / shard).string(), ": tensor '", tensor, "' listed in the index is missing");
    }
  }
}

const TensorRecord& HfCheckpoint::tensor(const std::string& name) const {
  const auto found = index_.find(name);
  if (found == index_.end()) fail(expected_file_, ": missing tensor '", name, "'");
  return *found->second;
}

}  // namespace qft
