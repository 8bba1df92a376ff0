#pragma once
// Each subcommand takes the arguments after its name; returns the exit code.

namespace qft::cli {

int run_grad(int argc, char** argv);
int run_train(int argc, char** argv);
int run_memory(int argc, char** argv);
int run_tokenize(int argc, char** argv);
int run_generate(int argc, char** argv);
int run_export(int argc, char** argv);
int run_eval(int argc, char** argv);
int run_finetune(int argc, char** argv);
int run_template(int argc, char** argv);
int run_version();  // qft --version

}  // namespace qft::cli
