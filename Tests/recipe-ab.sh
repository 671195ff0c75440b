#!/usr/bin/env bash
# Recipe A/B (issue 13): each variant continues the built-in model (or trains from scratch with INIT=none) for the same
# number of steps from the same seed, then is scored on the first PAIRS pairs of the *valid* split: ddpm 20 steps,
# seed 101 alone and MBR over seeds 101–105, plus the explorer's default verse. One row per variant is appended to
# $OUT/table.md; the load average is recorded beside each run's minutes.
#
#   Tests/recipe-ab.sh NAME [train flags…]        e.g. Tests/recipe-ab.sh token --token-loss 1 --loss-mask target
#   STEPS=300 PAIRS=200 OUT=runs/ab B=.build/release/diffuseq Tests/recipe-ab.sh …
#   SCORE_ONLY=1 Tests/recipe-ab.sh NAME           re-score an existing $OUT/NAME run
#   SAMPLE_FLAGS="--start-from-source 0.35"        extra sampler flags for the scoring (e.g. an SDEdit start)
#   SPLIT=test PAIRS=792 SCORE_ONLY=1 …           the model card's test scoring (default: valid, 200 pairs)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-.build/release/diffuseq}
STEPS=${STEPS:-300}; PAIRS=${PAIRS:-200}; OUT=${OUT:-runs/ab}; INIT=${INIT:-Resources/model/kjv2modern}
SEEDS=${SEEDS:-101,102,103,104,105}; SAMPLE_FLAGS=${SAMPLE_FLAGS:-}; SPLIT=${SPLIT:-valid}
[ $# -ge 1 ] || { echo "usage: $0 NAME [diffuseq train flags…]" >&2; exit 2; }
name=$1; shift
[ -x "$B" ] || { echo "error: $B is not built (swift build -c release)" >&2; exit 2; }
mkdir -p "$OUT"
run="$OUT/$name"
load0=$(cut -d' ' -f1 /proc/loadavg)
t0=$(date +%s)
if [ -z "${SCORE_ONLY:-}" ]; then
  init=(); [ "$INIT" != none ] && init=(--init-from "$INIT")
  rm -rf "$run"
  nice -n 0 "$B" train --preset kjv2modern "${init[@]}" --lr "${LR:-3e-4}" --warmup "${WARMUP:-50}" --steps "$STEPS" \
    --save-interval "$STEPS" --output "$run" "$@" 2> "$run.train.log" || { tail -5 "$run.train.log"; exit 1; }
fi
t1=$(date +%s)
load1=$(cut -d' ' -f1 /proc/loadavg)
ck="$run/$(ls "$run" | grep '^ckpt-' | sort | tail -1)"
# shellcheck disable=SC2086
"$B" sample --checkpoint "$ck" --data-dir Resources/data/kjv2modern --split "$SPLIT" --limit "$PAIRS" --sampler ddpm \
  --steps 20 --batch-size 100 --seeds "$SEEDS" --mbr $SAMPLE_FLAGS --output "$run/samples" 2> "$run.sample.log"
single=$("$B" eval "$run/samples/seed${SEEDS%%,*}_step0.json" 2>/dev/null)
mbr=$("$B" eval "$run/samples" --mbr 2>/dev/null)
val() { awk -v k="$2" '$1 == k { print $2; exit }' <<< "$1"; }
arch() { grep -m1 'archaic' <<< "$1" | awk '{ print $5 }'; }
mbrpart=$(sed -n '/MBR selection/,$p' <<< "$mbr")
# shellcheck disable=SC2086
verse=$("$B" sample --checkpoint "$ck" --text "And God said, Let there be light: and there was light." --sampler ddpm --steps 20 \
  --seed 101 $SAMPLE_FLAGS 2>/dev/null | sed -n 's/.*"recover": *"\([^"]*\)".*/\1/p' | head -1)
# A short verse too: models sampled from the source prior without training on it collapsed short verses to PAD.
# shellcheck disable=SC2086
short=$("$B" sample --checkpoint "$ck" --text "Thou shalt not steal." --text "Jesus wept." --sampler ddpm --steps 20 \
  --seed 101 $SAMPLE_FLAGS 2>/dev/null | sed -n 's/.*"recover": *"\([^"]*\)".*/\1/p' | paste -sd'/' -)
[ -f "$OUT/table.md" ] || {
  echo "| variant | train flags | steps | minutes (load) | BLEU 1 seed | ROUGE-L 1 seed | BLEU MBR-5 | ROUGE-L MBR-5 | archaic/100 (MBR) | default verse (seed 101) | short verses (seed 101) |" > "$OUT/table.md"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|" >> "$OUT/table.md"
}
row="| $name | \`$* $SAMPLE_FLAGS\` | $STEPS | $(( (t1 - t0) / 60 )) ($load0→$load1) | $(val "$single" BLEU) | $(val "$single" ROUGE-L) | $(val "$mbrpart" BLEU) | $(val "$mbrpart" ROUGE-L) | $(arch "$mbrpart") | $verse | $short |"
echo "$row" >> "$OUT/table.md"
echo "$row"
