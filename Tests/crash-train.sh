#!/usr/bin/env bash
# Crash consistency of `diffuseq train` under kill -9 (issue 16):
#
#   Tests/crash-train.sh BINARY [KILLS=20] [STEPS=40]
#
# Trains a tiny model (1 layer × 16, custom vocabulary, --save-interval 1) straight through, then runs the
# same flags again and SIGKILLs it KILLS times at random steps (spread over the run by watching the log, plus 0–19 ms, so
# many kills land inside checkpoint writes), each time resuming with `train --resume`. After every kill:
#   - every visible ckpt-* folder must be complete (all six files, state.json parses) — never half-written;
#   - the newest checkpoint may lag the last logged step by at most one save interval;
#   - the resume must succeed and remove the temporaries (.ckpt-*.tmp-*) of the killed writer.
# At the end the final checkpoint's model.safetensors and state.safetensors and the log (without wall-clock
# seconds) must be byte-identical to the straight run's. Prints one line per kill and "survived N/KILLS".
set -u
if [ $# -lt 1 ]; then echo "usage: $0 BINARY [KILLS] [STEPS]" >&2; exit 2; fi
BIN=$1 KILLS=${2:-20} STEPS=${3:-40}
W=$(mktemp -d /tmp/crash-train.XXXXXX)
trap 'rm -rf "$W"' EXIT
words="the cat dog sat ran on mat a big small red blue house tree saw bird fish sun moon is was here there we you go"
printf '%s\n' $words > "$W/vocab.txt"
mkdir -p "$W/data"
python3 - "$W/data" <<'PY'
import json, random, sys
w = "the cat dog sat ran on mat a big small red blue house tree saw bird fish sun moon is was here there we you go".split()
r = random.Random(1)
for name, n in [("train", 24), ("valid", 4), ("test", 4)]:
    with open(f"{sys.argv[1]}/{name}.jsonl", "w") as f:
        for _ in range(n):
            f.write(json.dumps({"src": " ".join(r.choices(w, k=r.randint(2, 4))), "trg": " ".join(r.choices(w, k=r.randint(2, 4)))}) + "\n")
PY
FLAGS=(--data-dir "$W/data" --vocab "$W/vocab.txt" --layers 1 --width 16 --heads 2 --ffn 32 --hidden-dim 8
       --hidden-t-dim 8 --seq-len 12 --diffusion-steps 20 --batch-size 4 --threads 1
       --steps "$STEPS" --save-interval 1 --seed 11)
"$BIN" train "${FLAGS[@]}" --output "$W/straight" >/dev/null 2>"$W/straight.err" || { cat "$W/straight.err"; exit 1; }
final=$(printf 'ckpt-%06d' "$STEPS")

complete() { # every ckpt-* in $1 has its six files and a parseable state.json
    local d f
    for d in "$1"/ckpt-*; do
        [ -d "$d" ] || continue
        for f in model.safetensors training_args.json bert_config.json vocab.txt state.safetensors state.json; do
            [ -s "$d/$f" ] || { echo "incomplete: $d lacks $f"; return 1; }
        done
        python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$d/state.json" 2>/dev/null || { echo "bad $d/state.json"; return 1; }
    done
}
last_logged() { python3 - "$1/train_log.jsonl" <<'PY'
import json, sys
s = 0
try:
    for l in open(sys.argv[1]):
        try: s = max(s, json.loads(l)["step"])
        except Exception: pass
except FileNotFoundError: pass
print(s)
PY
}
newest() { ls "$1" 2>/dev/null | grep '^ckpt-' | sort | tail -1 | sed 's/ckpt-0*//;s/^$/0/'; }

survived=0 leaks=0
out="$W/killed"
RANDOM=$$
for k in $(seq 1 "$KILLS"); do
    if [ -d "$out/$final" ]; then echo "kill $k: the run already finished (raise STEPS)"; break; fi
    # A kill before the first checkpoint leaves nothing to resume: then the run starts afresh.
    if ls "$out" 2>/dev/null | grep -q '^ckpt-'; then args=(--resume "$out" --threads 1); else args=("${FLAGS[@]}" --output "$out"); fi
    # Kill k lands at a random step in the next 1/(kills left + 1) of the remaining steps, found by watching the
    # log, plus 0-19 ms so that it often falls inside a checkpoint write. Wall-clock delays alone finished the whole
    # run early on a faster machine; watching the step keeps every kill inside the run at any speed.
    have0=$(newest "$out"); have0=${have0:-0}
    span=$(( (STEPS - have0) / (KILLS - k + 2) )); [ "$span" -ge 1 ] || span=1
    target=$(( have0 + 1 + RANDOM % span ))
    "$BIN" train "${args[@]}" >/dev/null 2>"$W/run.err" & pid=$!
    t0=$(date +%s.%N)
    for _ in $(seq 1 6000); do
        kill -0 $pid 2>/dev/null || break
        s=$(tail -n 1 "$out/train_log.jsonl" 2>/dev/null | sed -n 's/^{"step": \([0-9]*\),.*/\1/p')
        [ -n "$s" ] && [ "$s" -ge "$target" ] && break
        sleep 0.01
    done
    sleep "$(printf '0.0%02d' $((RANDOM % 20)))"
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; rc=$?
    delay=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)")
    tmps=$(ls -a "$out" 2>/dev/null | grep -c '\.tmp-' || true)
    names=$(ls -a "$out" 2>/dev/null | grep '\.tmp-' | sed 's/\.tmp-.*/.tmp-*/' | tr '\n' ' ')
    logged=$(last_logged "$out"); have=$(newest "$out")
    problem=""
    [ $rc = 137 ] || [ $rc = 0 ] || problem="exited $rc before the kill: $(grep -m1 error "$W/run.err")"
    complete "$out" >"$W/complete.txt" || problem=$(cat "$W/complete.txt")
    [ $((logged - have)) -le 1 ] || problem="$problem newest checkpoint $have lags logged step $logged by more than one interval"
    # The next resume (the next iteration, or the final one) must clean up: check it right here.
    if [ "$tmps" -gt 0 ]; then leaks=$((leaks + tmps)); fi
    if [ -z "$problem" ]; then survived=$((survived + 1)); st=ok; else st="FAIL:$problem"; fi
    echo "kill $k after ${delay}s (aimed at step $target): last logged step $logged, newest ckpt $have, temporaries left by the kill: $tmps ${names:+($names)}— $st"
done
"$BIN" train --resume "$out" --threads 1 >/dev/null 2>"$W/final.err" || { echo "final resume failed:"; cat "$W/final.err"; exit 1; }
left=$(ls -a "$out" | grep -c '\.tmp-' || true)
same=1
for f in model.safetensors state.safetensors; do
    cmp -s "$W/straight/$final/$f" "$out/$final/$f" || { echo "$final/$f differs from the straight run"; same=0; }
done
strip() { sed 's/, "seconds": [0-9.e+-]*//' "$1/train_log.jsonl"; }
[ "$(strip "$W/straight")" = "$(strip "$out")" ] || { echo "train_log.jsonl differs from the straight run"; same=0; }
echo "temporaries left by kills: $leaks in all; after the final resume: $left"
echo "final $final bit-identical to the straight run: $([ $same = 1 ] && echo yes || echo NO)"
echo "survived $survived/$KILLS"
[ $survived = "$KILLS" ] && [ $same = 1 ] && [ "$left" = 0 ]
