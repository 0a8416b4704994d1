#!/usr/bin/env bash
# Issue 12 items 3 and 4: every run behind docs/RESULTS.md's "ImageNet: EfficientNet-Lite0" and
# "Activation grid" sections. Run from the checkout root (PYTHONPATH=. if fpxint is not installed).
# The slow parts (bench.queue_sweep) rewrite their CSV/JSON after every row, in priority order,
# so a stopped run keeps what finished; the RESULTS tables say which rows ran.
#
#   bash scripts/results_i12.sh digits   # item 4 on the digits CNN (seconds)
#   bash scripts/results_i12.sh item4    # item 4 on ResNet-20/32, all 10,000 CIFAR-10 test JPEGs (hours on 2 cores)
#   bash scripts/results_i12.sh item3    # item 3: EfficientNet-Lite0 on all 1,300 images (hours on 2 cores)
#   bash scripts/results_i12.sh peers    # item 3: RTN / optimum-quanto at matched storage on Lite0 (100 images)
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
  # needs optimum-quanto (requirements-bench.txt); run here on 100 stratified images for lack of CPU time
  peers) nice -n 5 $PY -m bench.peers efficientnet_lite0 100 $R/peers_lite0_100.csv matched ;;
  tables) $PY -m bench.queue_sweep tables ;;
  *) echo "usage: $0 digits|item3|item4|peers|tables" >&2; exit 2 ;;
esac
