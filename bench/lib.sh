# Sourced by the bench scripts.

# random_token_lines LINES VOCAB LENGTH: LINES lines of LENGTH token ids below
# VOCAB, the same every run (seed 0).
random_token_lines() {
  python3 -c "
import random; random.seed(0)
for _ in range($1): print(' '.join(str(random.randrange($2)) for _ in range($3)))"
}
