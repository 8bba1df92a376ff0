// Checkpoint loading into a tiny QLion training (hybrid INT8 weights, CSR
// outliers, thresholds, INT8 momentum). The first byte picks what the rest of
// the input replaces in a valid checkpoint made at start-up:
//   even: manifest.json (with the valid state file beside it);
//   odd:  state.safetensors, with the manifest's checksums recomputed for the
//         tensors it holds, so mutations reach the state's own validation
//         instead of stopping at the checksum (as PNG fuzzers fix up CRCs).
// QFT_FUZZ_WRITE_SEEDS=DIR writes those two inputs (the seed corpus) to DIR.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "io/state_file.h"
#include "model/weights.h"
#include "train/training.h"

namespace {

namespace fs = std::filesystem;

struct Fixture {
  std::unique_ptr<qft::ModelSource> source;
  std::unique_ptr<qft::Training> training;
  std::string manifest, state;  // the valid checkpoint's files
  nlohmann::json manifest_json;  // the manifest, parsed once
};

std::string read_file(const fs::path& path) {
  std::ostringstream text;
  text << std::ifstream(path, std::ios::binary).rdbuf();
  return text.str();
}

Fixture& fixture() {
  static Fixture fixture = [] {
    Fixture made;
    const std::string directory = qft::fuzz::scratch_directory();
    const std::string config = directory + "/config.json";
    std::ofstream(config) << nlohmann::json{{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 64},
                                            {"hidden_size", 16}, {"intermediate_size", 32},
                                            {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                                            {"num_key_value_heads", 1}, {"tie_word_embeddings", false}}
                                 .dump();
    made.source = std::make_unique<qft::ModelSource>(qft::ModelSource::random(config, 1));
    made.training = qft::make_training(*made.source, qft::TrainingSettings{});
    made.training->save_checkpoint(directory + "/template", {{"fuzz", true}});
    made.manifest = read_file(directory + "/template/manifest.json");
    made.state = read_file(directory + "/template/state.safetensors");
    made.manifest_json = nlohmann::json::parse(made.manifest);
    // scripts/fuzz.sh asks for the seeds: the two inputs that rebuild this checkpoint.
    if (const char* seeds = std::getenv("QFT_FUZZ_WRITE_SEEDS")) {
      std::ofstream(std::string(seeds) + "/manifest", std::ios::binary) << '\0' << made.manifest;
      std::ofstream(std::string(seeds) + "/state", std::ios::binary) << '\1' << made.state;
    }
    return made;
  }();
  return fixture;
}

// The valid manifest with checksums of the tensors `state_path` holds.
std::string manifest_for(const nlohmann::json& manifest, const std::string& state_path) {
  nlohmann::json json = manifest;
  try {
    const qft::SafetensorsFile file(state_path);
    nlohmann::json checksums = nlohmann::json::object();
    for (const auto& [name, record] : file.tensors()) checksums[name] = qft::hex64(qft::xxh64(record.data, record.nbytes));
    json["state"]["checksums"] = checksums;
    json["state"]["bytes"] = fs::file_size(state_path);
  } catch (const qft::Error&) {
  }
  return json.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Fixture& f = fixture();
  const std::string directory = qft::fuzz::scratch_directory() + "/checkpoint";
  fs::create_directories(directory);
  const bool replace_state = data[0] & 1;
  const std::string state_path = directory + "/state.safetensors";
  std::ofstream(state_path, std::ios::binary | std::ios::trunc)
      .write(replace_state ? reinterpret_cast<const char*>(data + 1) : f.state.data(),
             replace_state ? static_cast<std::streamsize>(size - 1) : static_cast<std::streamsize>(f.state.size()));
  const std::string manifest = replace_state ? manifest_for(f.manifest_json, state_path)
                                             : std::string(reinterpret_cast<const char*>(data + 1), size - 1);
  std::ofstream(directory + "/manifest.json", std::ios::binary | std::ios::trunc) << manifest;
  qft::fuzz::expect_only_qft_errors([&] { f.training->load_checkpoint(directory); });
  return 0;
}
