#!/usr/bin/env bash
# Runs the libFuzzer targets (README "Tests and CI"): Tests/Fuzz/run.sh [SECONDS] [TARGET ...]
# Default: every target for 30 s (what CI does). Each run starts from the committed corpus
# (Tests/Fuzz/corpus/<target>) plus the fixture files as read-only seeds, writes new inputs to a
# scratch folder (not to git), and prints libFuzzer's final stats. A crash, leak, timeout or OOM
# leaves its input in .build-fuzz/artifacts/<target>/ and makes the script exit 1: fix the bug and
# move the input into Tests/Fuzz/corpus/<target>/ (the FuzzCorpusTests suite replays it).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pt safetensors vocab jsonl args)
bin=.build-fuzz/debug/diffuseq-fuzz
DIFFUSEQ_FUZZ=1 swift build --scratch-path .build-fuzz --sanitize=fuzzer --sanitize=address \
    --product diffuseq-fuzz >/dev/null
fx=Tests/DiffuSeqCoreTests/Fixtures
status=0
for t in "${targets[@]}"; do
    work=$(mktemp -d) seeds=$(mktemp -d)
    art=.build-fuzz/artifacts/$t
    mkdir -p "$art"
    case $t in
        pt) cp $fx/ema_0.9999_000005.pt "$seeds/" ;;
        safetensors) cp $fx/model.safetensors $fx/adamw.safetensors "$seeds/" ;;
        vocab) cp $fx/custom-vocab/vocab.json $fx/vocab.txt "$seeds/" ;;
        jsonl) head -c 16000 Resources/data/kjv2modern/valid.jsonl > "$seeds/valid.jsonl" ;;
        args) cp $fx/training_args.json Resources/model/kjv2modern/training_args.json $fx/bert_config.json "$seeds/" 2>/dev/null \
              || cp $fx/training_args.json "$seeds/" ;;
    esac
    echo "== $t: ${secs}s"
    FUZZ_TARGET=$t "$bin" "$work" "Tests/Fuzz/corpus/$t" "$seeds" -max_total_time="$secs" -max_len=16384 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/" >"$art/log.txt" 2>&1 || status=1
    grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|ERROR|SUMMARY' \
        "$art/log.txt" | tail -8
    ls "$art" | grep -v '^log.txt$' | sed "s|^|   artifact: $art/|" || true
    rm -rf "$work" "$seeds"
done
exit $status
