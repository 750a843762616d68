#!/bin/sh
# Wheels of the Python packages bench/gpu_check.py needs that the GPU device machine's image lacks
# or has at another version (diffusers, transformers as pinned in requirements.txt; torchsde and its
# trampoline), saved in .whl/ (git-ignored) for the device tool's `carry`. The image already has
# torch, huggingface_hub, tokenizers, safetensors, numpy, scipy and Pillow. See docs/PERFORMANCE.md.
set -eu
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" requirements.txt | head -n 1; }
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$(pin diffusers)" "$(pin transformers)" "$(pin torchsde)" trampoline==0.1.2
ls -l .whl
