#!/usr/bin/env bash
# Issue 12 items 3 and 4: every run behind docs/RESULTS.md's "ImageNet: EfficientNet-Lite0" and
# "Activation grid" sections. Run from the checkout root (PYTHONPATH=. if fpxint is not installed).
# The slow parts (bench.queue_sweep) rewrite their CSV/JSON after every row, in priority order,
# so a stopped run keeps what finished; the RESULTS tables say which rows ran.
#
#   bash scripts/results_i12.sh digits   # item 4 on the digits CNN (seconds)
#   bash scripts/results_i12.sh item4    # item 4 on ResNet-20/32, all 10,000 CIFAR-10 test JPEGs (hours on 2 cores)
#   bash scripts/results_i12.sh item3    # item 3: EfficientNet-Lite0 on all 1,300 images (hours on 2 cores)
#   bash scripts/results_i12.sh i12      # item 3 rows item3 did not reach: W8A8, 8-bit ends, same ends, Lite0 grids (resumes)
#   bash scripts/results_i12.sh alloc    # item 3: Lite0 allocation at 0.75x the integer GEMMs of W4A4 x3
#   bash scripts/results_i12.sh peers    # item 3: RTN / optimum-quanto at matched storage on Lite0 (all 1,300)
#   bash scripts/results_i12.sh tables   # the markdown tables from docs/results/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
R=docs/results
# everything but the grid and the policy spelled out, so no row depends on ExpansionConfig's defaults
FIXED=(--level layer --w-granularity per_channel --a-granularity per_sample --w-grid symmetric --scale-rule max
       --truncation full --mode simulate)

case "${1:-}" in
  digits)
    for fl in same 8bit; do for g in symmetric asymmetric auto; do
      $PY -m fpxint sweep digits_cnn --pairs 4:4,3:3,2:2 --terms 1,2,3,4 --a-grid $g --first-last $fl "${FIXED[@]}" \
        -q --force --out $R/agrid_digits_${g}_${fl} >/dev/null
    done; done ;;
  item3|item4) nice -n 5 $PY -m bench.queue_sweep "$1" --threads 1 ;;
  i12) for p in i12-w8 i12-8bit i12-same i12-agrid; do nice -n 5 $PY -m bench.queue_sweep $p --threads 1; done ;;
  # data-free (weights-only) allocation; the CLI still holds out --calib images, so 1 here: 1,299 evaluated
  alloc) nice -n 5 $PY -m fpxint allocate --threads 1 efficientnet_lite0 --w-bits 4 --a-bits 4 --terms 3 \
           --budget-gemms 0.75x --calibration weights --calib 1 --eval all --max-terms 4 --uniform-terms 2 \
           --a-grid symmetric --first-last same "${FIXED[@]}" --batch-size 100 \
           --save $R/alloc_lite0_w4a4x3_gemms075 --out $R/alloc_lite0_w4a4x3_gemms075.config.json ;;
  # needs optimum-quanto (requirements-bench.txt; PYTHONPATH to a --target install); the CSV grows row by row
  peers) nice -n 5 $PY -m bench.peers efficientnet_lite0 1300 $R/peers_lite0_1300.csv lite1300 ;;
  tables) $PY -m bench.queue_sweep tables ;;
  *) echo "usage: $0 digits|item3|item4|i12|alloc|peers|tables" >&2; exit 2 ;;
esac
