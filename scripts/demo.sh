#!/usr/bin/env bash
# The README's first command: set up .venv, take the small trained shapes base model (shipped in
# models/shapes/, or built once into the cache), and train a LoRA that teaches it a concept it never
# saw (examples/shapes_demo: "sks star" = a purple star with a white outline). The reg folder is
# filled with the base's own "a star" images first (--num_class_images); samples every 100 steps
# are read back by the shapes scorer, so the concept's arrival is printed step by step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1
# The shapes model's 64 px kernels are too small to share between threads: one thread trained it at 11.8 it/s
# where torch's default two gave 8, and two threads crawl when anything else holds a core (docs/quality.md).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
out=output/demo
mkdir -p "$out"
model=$(.venv/bin/python tools/make_shapes_model.py --print_path)
.venv/bin/python train_network.py --config_file presets/shapes_demo.toml \
  --pretrained_model_name_or_path "$model" \
  --train_data_dir examples/shapes_demo/img \
  --reg_data_dir "$out/class_star" --class_prompt "a star" --num_class_images 12 \
  --sample_prompts examples/shapes_demo/prompts.txt --logging_dir "$out/logs" "$@"
echo
.venv/bin/python -m library.eval.sample_progress "$out"
echo
echo "Demo finished. Files in $out/:"
echo "  LoRA (loads in ComfyUI / A1111 / diffusers): $out/demo_lora.safetensors"
echo "  checkpoints every 300 steps:                 $out/demo_lora-step*.safetensors (+ *-state folders for --resume)"
echo "  sample images (step 0 = the base model):     $out/sample/"
echo "  class images drawn by the base model:        $out/class_star/"
echo "  report (loss curve + samples per checkpoint): $out/demo_lora_report.html"
echo "  TensorBoard logs:                            $out/logs/  (tensorboard --logdir $out/logs)"
