#!/usr/bin/env bash
# End-to-end test of the interactive explorer in a real terminal (tmux).
#
#   Tests/explore-e2e.sh BINARY [ARGS...]
#     e.g. Tests/explore-e2e.sh .build/release/diffuseq explore --checkpoint Tests/DiffuSeqCoreTests/Fixtures/model.safetensors
#          Tests/explore-e2e.sh .build/release/diffuseq explore            (the built-in model, once installed)
#
# Starts BINARY ARGS in a 100×30 tmux session from an interactive shell, then plays, pauses, steps, scrubs,
# selects a position, edits the source and re-runs, adds a seed (re-run) and hides seed 2, clears the source with
# Ctrl-U and runs a new one, opens the trajectory map and jumps, pins a token (fork) and unpins, cycles the edit
# strength (d: an SDEdit start, then back to noise), opens help, resizes
# (60×20, 30×8, back),
# quits with q and checks that the terminal is restored (stty state unchanged, prompt visible), then starts it
# again and stops it with Ctrl-C. Screens are saved to $E2E_OUT (default: a temp dir). Exits non-zero on failure.
set -u
if [ $# -lt 1 ]; then echo "usage: $0 BINARY [ARGS...]" >&2; exit 2; fi
command -v tmux >/dev/null || { echo "tmux is required" >&2; exit 2; }
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1"); shift
ARGS="$*"
OUT=${E2E_OUT:-$(mktemp -d /tmp/explore-e2e.XXXXXX)}
mkdir -p "$OUT"
S="explore-e2e-$$"
FAILS=0
STEP=0
cleanup() { tmux kill-session -t "$S" 2>/dev/null; }
trap cleanup EXIT

screen() { tmux capture-pane -p -t "$S"; }
save() { STEP=$((STEP + 1)); screen > "$OUT/$(printf %02d $STEP)-$1.txt"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); screen | sed 's/^/  | /'; }
ok() { echo "ok: $*"; }
# wait_for REGEX [SECONDS]: poll the screen until it matches.
wait_for() {
    local re=$1 t=${2:-20} i=0
    while [ $i -lt $((t * 10)) ]; do
        if screen | grep -Eq -- "$re"; then return 0; fi
        sleep 0.1; i=$((i + 1))
    done
    return 1
}
expect_screen() { # NAME REGEX [SECONDS]
    if wait_for "$2" "${3:-10}"; then ok "$1"; else fail "$1: no /$2/ on screen"; fi
    save "$1"
}
keys() { tmux send-keys -t "$S" "$@"; sleep 0.3; }
step_of() { screen | grep -Eo 'step [0-9]+/[0-9]+' | head -1 | sed -E 's/step ([0-9]+)\/.*/\1/'; }

tmux new-session -d -s "$S" -x 100 -y 30 "env PS1='e2e\$ ' bash --norc --noprofile"
tmux set-option -t "$S" -g default-terminal "xterm-256color" >/dev/null 2>&1
sleep 0.5
keys "stty -g > '$OUT/stty.before'; '$BIN' $ARGS; echo EXPLORE_EXIT=\$?; stty -g > '$OUT/stty.after'" Enter

expect_screen start "DiffuSeq explorer" 30
expect_screen first-run-done "✓ done" 120
screen | grep -q "Timeline" && screen | grep -q "Tokens" && ok "panels drawn" || fail "panels missing"

keys Home
expect_screen first-step "step 1/"
keys Space
sleep 1
save playing
S1=$(step_of)
keys Space
sleep 0.3
S2=$(step_of); sleep 0.5; S3=$(step_of)
if [ "${S1:-1}" -gt 1 ] && [ "$S2" = "$S3" ]; then ok "play advanced to $S1, pause held at $S2"; else fail "play/pause (steps $S1 $S2 $S3)"; fi
save paused

keys Home Right Right
expect_screen step-forward "step 3/"
keys ']'
expect_screen ten-forward "step 13/"
keys '['
expect_screen ten-back "step 3/"
keys End
STEP_END=$(step_of)
[ -n "$STEP_END" ] && ok "end at step $STEP_END" || fail "end"

P1=$(screen | grep -Eo 'Position [0-9]+' | head -1)
keys Down Down
P2=$(screen | grep -Eo 'Position [0-9]+' | head -1)
if [ -n "$P1" ] && [ "$P1" != "$P2" ]; then ok "selection moved ($P1 → $P2)"; else fail "selection ($P1 → $P2)"; fi
save select

keys e
expect_screen editing "Enter run"
keys End
tmux send-keys -t "$S" -l " ye"
sleep 0.3
keys Enter
expect_screen rerun-source "Source .* ye" 10
expect_screen rerun-done "✓ done" 120

keys s
expect_screen seed-focus "1–9 toggle"
# Add a seed (works whatever --seeds was given): the run restarts with one more batch row.
NSEEDS=$(screen | grep -Ec '^ *[1-9] [●○] ')
keys +
expect_screen seed-added-done "✓ done" 120
NSEEDS2=$(screen | grep -Ec '^ *[1-9] [●○] ')
if [ "$NSEEDS2" -eq $((NSEEDS + 1)) ]; then ok "seed added ($NSEEDS → $NSEEDS2 rows)"; else fail "seed add ($NSEEDS → $NSEEDS2 rows)"; fi
keys 2
expect_screen seed-toggled "2 ○ "
keys Escape

# Ctrl-U clears the field, then a new sentence is typed and run; a bracketed paste (its newline does not
# press Enter) adds the end.
keys e
keys C-u
tmux send-keys -t "$S" -l "how do i"
tmux set-buffer -b e2e $' learn\n'
tmux paste-buffer -p -d -b e2e -t "$S"
sleep 0.3
if screen | grep -Eq "Source how do i learn" && screen | grep -q "Enter run"; then ok "typed and pasted into the field (still editing)"; else fail "paste into the field"; fi
keys Enter
expect_screen ctrl-u-new-source "Source how do i learn *$" 10
expect_screen ctrl-u-rerun-done "✓ done" 120

# The trajectory map: open it, move the cursor back in time, jump the timeline there.
keys End
keys t
expect_screen map-open "Trajectory map" 10
keys Left Left Left
MAPSTEP=$(screen | grep -Eo 'step [0-9]+/[0-9]+' | head -1 | sed -E 's/step ([0-9]+)\/.*/\1/')
keys Enter
if wait_for "Timeline" 5 && [ -n "$MAPSTEP" ] && [ "$(step_of)" = "$MAPSTEP" ]; then ok "map jump to step $MAPSTEP"; else fail "map jump (map step $MAPSTEP, timeline step $(step_of))"; fi
save map-jumped

# Pin the first listed neighbour at this step: the fork appears beside the original; u removes it.
keys p
expect_screen pin-prompt "pin pos [0-9]+ from step" 10
keys 1
expect_screen fork-shown "fork@$MAPSTEP" 10
if wait_for "fork@$MAPSTEP [0-9]+=.*(BLEU|[a-z])" 60 && ! screen | grep -q "failed"; then
    ok "fork sampled beside the original"
else
    fail "fork not shown (or failed)"
fi
save fork
keys u
if wait_for "fork@" 1; then fail "unpin left the fork"; else ok "unpin removed the fork"; fi

# Edit strength: d re-runs from the source noised to 0.7 of the steps (the header says so, the timeline starts
# there), three more presses come back to a run from pure noise.
keys d
expect_screen strength-header "· edit 0\.7 ·" 10
expect_screen strength-run-done "✓ done" 120
keys Home
FIRST=$(step_of)
if screen | grep -q "starts at step $FIRST (edit 0.7)" && [ "${FIRST:-1}" -gt 1 ]; then ok "edit 0.7: the timeline starts at step $FIRST"
else fail "edit 0.7: timeline start (step ${FIRST:-none})"; fi
save strength-first-step
keys d d d
expect_screen strength-back-to-noise "· from noise ·" 10
expect_screen strength-noise-run-done "✓ done" 120
keys Home
expect_screen strength-noise-first-step "step 1/"

keys '?'
expect_screen help "Help"
keys x
if wait_for "Help" 1; then fail "help did not close"; else ok "help closed"; fi

tmux resize-window -t "$S" -x 60 -y 20
sleep 0.8
save resized-60x20
W=$(screen | LC_ALL=C.UTF-8 wc -L)
if screen | grep -q "DiffuSeq explorer" && [ "${W:-999}" -le 60 ]; then ok "resized to 60×20"; else fail "resize 60×20 (width $W)"; fi
tmux resize-window -t "$S" -x 30 -y 8
expect_screen too-small "too small"
tmux resize-window -t "$S" -x 100 -y 30
expect_screen resized-back "Timeline"

keys q
expect_screen quit "EXPLORE_EXIT=0" 10
sleep 0.5
if cmp -s "$OUT/stty.before" "$OUT/stty.after"; then ok "terminal modes restored"; else fail "stty differs after quit"; fi
if screen | grep -q 'e2e\$'; then ok "prompt visible"; else fail "no prompt after quit"; fi
tput -T xterm-256color cnorm >/dev/null 2>&1 || true

# Ctrl-C also restores the terminal.
keys "clear; '$BIN' $ARGS; echo EXPLORE_EXIT=\$?; stty -g > '$OUT/stty.after2'" Enter
expect_screen restart "DiffuSeq explorer" 30
keys C-c
expect_screen ctrl-c "EXPLORE_EXIT=130" 10
sleep 0.3
if cmp -s "$OUT/stty.before" "$OUT/stty.after2"; then ok "terminal modes restored after Ctrl-C"; else fail "stty differs after Ctrl-C"; fi

# Optional: E2E_SCREENS=DIR captures 80×24 text screens of four states with ARGS --seeds 1,2,3,4:
# playing, scrubbed mid-way, the inspector on a chosen position, four seeds at the last step.
if [ -n "${E2E_SCREENS:-}" ]; then
    mkdir -p "$E2E_SCREENS"
    tmux kill-session -t "$S" 2>/dev/null
    tmux new-session -d -s "$S" -x 80 -y 24 "env PS1='e2e\$ ' bash --norc --noprofile"
    sleep 0.5
    keys "clear; '$BIN' $ARGS --seeds 1,2,3,4; echo EXPLORE_EXIT=\$?" Enter
    expect_screen screens-run-done "✓ done" 120
    shot() { screen > "$E2E_SCREENS/$1.txt"; }
    keys Home
    tmux send-keys -t "$S" Space; sleep 0.6
    if screen | grep -q "▶"; then ok "screen: playing"; else fail "screen: playing (no ▶)"; fi
    shot playing
    keys Space
    N=$(screen | grep -Eo 'step [0-9]+/[0-9]+' | head -1 | sed -E 's/.*\///')
    keys Home
    for _ in $(seq 1 $(( (${N:-2} / 2 - 1) / 10 ))); do keys ']'; done
    for _ in $(seq 1 $(( (${N:-2} / 2 - 1) % 10 ))); do keys Right; done
    expect_screen screen-scrubbed "step $(( ${N:-2} / 2 ))/"
    shot scrubbed
    P1=$(screen | grep -Eo 'Position [0-9]+' | head -1)
    keys Down Down Down
    P2=$(screen | grep -Eo 'Position [0-9]+' | head -1)
    if [ -n "$P2" ] && [ "$P1" != "$P2" ] && screen | grep -q '‖x̂₀‖' && screen | grep -Eq '^ *│? *1 [^ ]+ +[0-9.]+ *$|│ 1 [^ ]+ +[0-9.]+'; then
        ok "screen: inspector ($P1 → $P2, neighbours listed)"
    else
        fail "screen: inspector ($P1 → $P2)"
    fi
    shot inspector
    keys End
    expect_screen screen-four-seeds "self-BLEU|sB [0-9]"
    shot four-seeds-last-step
    keys q
    expect_screen screens-quit "EXPLORE_EXIT=0" 10
    echo "80×24 screens saved in $E2E_SCREENS"
fi

echo "screens saved in $OUT"
if [ $FAILS -gt 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
echo "all explore e2e checks passed"
