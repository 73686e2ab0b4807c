#!/usr/bin/env bash
# The paper's Table 4 in small: adapt the shipped base model to marine-debris-fls (sonar) and SSDD
# (SAR) with every method, score each on the test split next to the box-filled baseline, and
# print a Markdown table (test Dice / IoU, trainable parameters, epochs, seconds per epoch, peak
# RSS of the training process).
#
#   scripts/real_data_table.sh [DATASETS_DIR] [OUT_DIR] [EPOCHS] [METHODS...]
#   scripts/real_data_table.sh ../shared/datasets runs/table 3
#
# Training uses `train`'s defaults but for --epochs (and the data sets' own preprocessing and
# splits); the CPU model is printed with the figures. SETS="ssdd" (or "marine-debris") makes
# one set's table only, so that two runs of the script can share a machine.
set -euo pipefail
data=${1:-../shared/datasets}
out=${2:-runs/table}
epochs=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
methods=("$@")
[ ${#methods[@]} -eq 0 ] && methods=(freeze lightweight lora lora+cobot adapter adapter+cobot)
bin=${SAM_COBOT:-target/release/sam-cobot}
base=${BASE:-models/sam-cobot-base-512.safetensors}
threads=${THREADS:-2}
mkdir -p "$out"
echo "CPU: $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs), family $(grep -m1 "cpu family" /proc/cpuinfo | cut -d: -f2 | xargs), model $(grep -m1 "^model\s*:" /proc/cpuinfo | cut -d: -f2 | xargs); $threads threads"
echo "base: $base"

# name | train args | test args
sets=(
  "marine-debris|--data $data/marine-debris-fls --train-split $data/marine-debris-fls/train.txt --val-split $data/marine-debris-fls/val.txt --preprocessing sonar|--data $data/marine-debris-fls --split $data/marine-debris-fls/test.txt --preprocessing sonar"
  "ssdd|--data $data/ssdd/annotations/instances_train.json|--data $data/ssdd/annotations/instances_test.json"
)
for set in "${sets[@]}"; do
  IFS='|' read -r name train_args test_args <<< "$set"
  [[ " ${SETS:-marine-debris ssdd} " == *" $name "* ]] || continue
  echo
  echo "### $name"
  echo
  echo "| method | test Dice % | test IoU % | trainable params | epochs | s / epoch | peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  # shellcheck disable=SC2086
  "$bin" eval $test_args --baseline boxfill --out "$out/$name/box-fill" --force > "$out/$name.box-fill.log"
  read -r dice iou < <(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['mean_dice'], m['mean_iou'])" "$out/$name/box-fill/metrics.json")
  printf "| box-fill | %.2f | %.2f | 0 | - | - | - |\n" "$dice" "$iou"
  for method in "${methods[@]}"; do
    run="$out/$name/$method"
    params=$("$bin" params --checkpoint "$base" --method "$method" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['total'])")
    rm -rf "$run"
    if [ "$method" = freeze ]; then
      # The base model as it is (zero-shot): nothing trains.
      params=0
      # shellcheck disable=SC2086
      "$bin" --threads "$threads" eval $test_args --checkpoint "$base" --out "$run/test" > "$run.log" 2>&1
      rss=-; per_epoch=-; n=-
    else
      # shellcheck disable=SC2086
      /usr/bin/time -f "%M" -o "$run.rss" "$bin" --threads "$threads" train --checkpoint "$base" $train_args \
        --method "$method" --epochs "$epochs" --out "$run" > "$run.log" 2>&1
      rss=$(( $(tail -1 "$run.rss") / 1024 ))
      per_epoch=$(python3 -c "import json,sys; h=json.load(open(sys.argv[1]))['history']; print(f\"{sum(e['seconds'] for e in h)/len(h):.0f}\")" "$run/last/state.json")
      n=$epochs
      # shellcheck disable=SC2086
      "$bin" --threads "$threads" eval $test_args --checkpoint "$base" --adapter "$run/best/adapter.safetensors" --out "$run/test" >> "$run.log" 2>&1
    fi
    read -r dice iou < <(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['mean_dice'], m['mean_iou'])" "$run/test/metrics.json")
    printf "| %s | %.2f | %.2f | %s | %s | %s | %s |\n" "$method" "$dice" "$iou" "$params" "$n" "$per_epoch" "$rss"
  done
done
