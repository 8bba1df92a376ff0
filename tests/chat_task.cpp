#include "chat_task.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "model/weights.h"
#include "test_util.h"
#include "train/optimizers.h"
#include "train/training.h"

namespace qft::test {

void write_tiny_chat_model(const std::string& directory, const std::string& config) {
  write_text(config, nlohmann::json{{"architectures", {"LlamaForCausalLM"}},
                                    {"vocab_size", 49152}, {"hidden_size", 32}, {"intermediate_size", 64},
                                    {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                    {"num_key_value_heads", 2}, {"tie_word_embeddings", true}}
                         .dump());
  make_training(ModelSource::random(config, 11), default_settings(OptimizerKind::AdamW))->save(directory);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(reference_case("tokenizers/smollm2_json/") + file, directory + "/" + file);
  }
}

void write_alpaca_records(const std::string& path, int count) {
  nlohmann::json records = nlohmann::json::array();
  for (int i = 0; i < count; ++i) {
    std::string output = "Answer " + std::to_string(i) + ":";
    for (int word = 0; word < 3 + (i * 7) % 19; ++word) output += " word" + std::to_string((i + word) % 11);
    records.push_back({{"instruction", "Say something about the number " + std::to_string(i) + "."},
                       {"input", i % 3 ? "" : "Be brief."},
                       {"output", output}});
  }
  write_text(path, records.dump());
}

}  // namespace qft::test
