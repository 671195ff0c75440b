#!/usr/bin/env bash
# The explorer under abuse in a real terminal (tmux), issue 16:
#
#   Tests/explore-abuse.sh BINARY [ARGS...]
#     e.g. Tests/explore-abuse.sh .build/release/diffuseq explore --checkpoint DIR/model.safetensors --sampler ddpm
#
# 1. 2 × 10,000 random keys in batches (printable text, control keys, escape sequences for arrows/function
#    keys, SGR and X10 mouse reports, bare ESC; never q/Ctrl-C/Ctrl-Z/Ctrl-\, which end or stop it);
# 2. 50 random resizes between 20×6 and 200×60 while a run plays; 3. a storm of 300 SIGWINCH;
# 4. Ctrl-Z (SIGTSTP: the shell prompt must be back with the terminal modes restored), then `fg`
#    (SIGCONT: the explorer redraws); 5. q: exit 0, modes restored;
# 6. a closed terminal (tmux kill-session → SIGHUP): a clean exit within 5 s, no core;
# 7. SIGSEGV: the crash handler restores the terminal modes and the main screen.
# Pass: no crash, the terminal restored, RSS (VmRSS) at the end ≤ 110 % + 10 MB of RSS after the first
# 10,000 keys (the working set is grown by then). Prints the figures.
set -u
if [ $# -lt 1 ]; then echo "usage: $0 BINARY [ARGS...]" >&2; exit 2; fi
command -v tmux >/dev/null || { echo "tmux is required" >&2; exit 2; }
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1"); shift
ARGS="$*"
OUT=${ABUSE_OUT:-$(mktemp -d /tmp/explore-abuse.XXXXXX)}
mkdir -p "$OUT"
S="explore-abuse-$$"
FAILS=0
cleanup() { tmux kill-session -t "$S" 2>/dev/null; }
trap cleanup EXIT
screen() { tmux capture-pane -p -t "$S"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); screen | tail -8 | sed 's/^/  | /'; }
ok() { echo "ok: $*"; }
wait_for() { local re=$1 t=${2:-20} i=0
    while [ $i -lt $((t * 10)) ]; do screen | grep -Eq -- "$re" && return 0; sleep 0.1; i=$((i + 1)); done; return 1; }
# The diffuseq process in the pane's session (it runs under a wrapper shell).
explorer_pid() { local sh; sh=$(tmux display -p -t "$S" '#{pane_pid}'); pgrep -s "$sh" -x diffuseq | head -1; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || true; [ -e "/proc/$1/status" ] || echo 0; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

tmux new-session -d -s "$S" -x 100 -y 30 "env PS1='abuse\$ ' bash --norc --noprofile"
tmux set-option -t "$S" -g default-terminal "xterm-256color" >/dev/null 2>&1
sleep 0.5
# One job (sh -c): Ctrl-Z stops it as a whole and fg resumes it, so the exit status is still printed.
tmux send-keys -t "$S" "sh -c \"stty -g > '$OUT/stty.before'; '$BIN' $ARGS; echo EXPLORE_EXIT=\\\$?; stty -g > '$OUT/stty.after'\"" Enter
wait_for "DiffuSeq explorer" 30 || { fail "explorer did not start"; exit 1; }
wait_for "✓ done" 120 || fail "first run did not finish"
PID=$(explorer_pid)
[ -n "$PID" ] || { fail "no explorer process"; exit 1; }
RSS0=$(rss_kb "$PID")
ok "started (pid $PID, RSS $((RSS0 / 1024)) MB after the first run)"

# 1. Random keys.
python3 - "$OUT/keys" <<'PY'
import random, sys
r = random.Random(16)
esc = ["\x1b[A", "\x1b[B", "\x1b[C", "\x1b[D", "\x1b[H", "\x1b[F", "\x1b[5~", "\x1b[6~", "\x1b[3~", "\x1b[2~",
       "\x1bOP", "\x1bOQ", "\x1b[15~", "\x1b[24~", "\x1b[1;5C", "\x1b[1;2A", "\x1b[Z", "\x1b", "\x1b\x1b", "\x1b[",
       "\x1b[200~", "\x1b[201~", "\x1b[999;999R", "\x1b[?1;2c"]
def mouse():
    # X10 reports carry 32+x and 32+y as raw bytes: never let them spell q or Q (81, 49), which a
    # split sequence would deliver as the quit key.
    x, y = r.choice([v for v in range(1, 231) if v not in (49, 81)]), r.choice([v for v in range(1, 71) if v != 49])
    if r.random() < 0.5:
        return f"\x1b[<{r.choice([0, 1, 2, 32, 64, 65])};{x};{y}{r.choice('Mm')}"
    return "\x1b[M" + chr(32 + r.choice([0, 1, 2, 3, 64])) + chr(min(32 + x, 126)) + chr(min(32 + y, 126))
printable = [c for c in "abcdefghijklmnoprstuvwxyzABCDEFGHIJKLMNOPRSTUVWXYZ0123456789 []<>?+-=.,;:'\"!@#$%^&*()/\\|`~{}_é世😀"]
ctrl = ["\t", "\r", "\x7f", "\x08", "\x01", "\x05", "\x0b", "\x15", "\x17", "\x0c"]
keys = []
while len(keys) < 10000:
    p = r.random()
    keys.append(r.choice(esc) if p < 0.2 else mouse() if p < 0.3 else r.choice(ctrl) if p < 0.4 else r.choice(printable))
with open(sys.argv[1], "w") as f:
    for i in range(0, len(keys), 50):
        f.write("".join(keys[i:i + 50]).encode("unicode_escape").decode() + "\n")
print(len(keys))
PY
# Twice, the same keys: the first round grows the working set (up to 9 seeds, longer runs, caches), the
# second must not grow it much further (a leak grows with every round).
send_keys() {
    while IFS= read -r batch; do
        tmux send-keys -t "$S" -l -- "$(printf '%b' "$batch")"
        NK=$((NK + 50))
        sleep 0.02
        if [ $((NK % 1000)) = 0 ] && ! alive "$PID"; then break; fi
    done < "$OUT/keys"
    sleep 1
    tmux send-keys -t "$S" Escape; sleep 0.3; tmux send-keys -t "$S" Escape; sleep 0.3
    wait_for "✓ done|✗" 120 >/dev/null
    sleep 0.5
}
NK=0
send_keys
RSSK1=$(rss_kb "$PID")
for r in $(seq 2 "${ABUSE_ROUNDS:-2}"); do
    send_keys
    k=$(rss_kb "$PID"); echo "   RSS after key round $r: $((${k:-0} / 1024)) MB"
done
RSSK2=$(rss_kb "$PID")
if alive "$PID"; then ok "$NK random keys in two rounds: still running (RSS $((RSSK1 / 1024)) MB after round 1, $((RSSK2 / 1024)) MB after round 2)"
else fail "died during random keys (after $NK)"; fi
screen > "$OUT/after-keys.txt"

# 2. 50 resizes while a run plays (e = edit the source, Enter = re-run).
tmux send-keys -t "$S" e; sleep 0.2; tmux send-keys -t "$S" Enter; sleep 0.1
RANDOM=16
for i in $(seq 1 50); do
    tmux resize-window -t "$S" -x $((20 + RANDOM % 181)) -y $((6 + RANDOM % 55)); sleep 0.05
done
tmux resize-window -t "$S" -x 100 -y 30
if alive "$PID" && wait_for "DiffuSeq explorer" 10; then ok "50 resizes during a run: redrawn at 100×30"; else fail "after resizes"; fi

# 3. SIGWINCH storm.
for i in $(seq 1 300); do kill -WINCH "$PID" 2>/dev/null; done
sleep 0.5
if alive "$PID" && wait_for "DiffuSeq explorer" 5; then ok "300 SIGWINCH: still drawing"; else fail "after the SIGWINCH storm"; fi
wait_for "✓ done|✗" 120 >/dev/null
sleep 0.5
RSS1=$(rss_kb "$PID")

# 4. Ctrl-Z, then fg.
tmux send-keys -t "$S" C-z
if wait_for "abuse\\$" 5; then
    tmux send-keys -t "$S" "stty -g > '$OUT/stty.stopped'" Enter; sleep 0.3
    if cmp -s "$OUT/stty.before" "$OUT/stty.stopped"; then ok "Ctrl-Z: prompt back, terminal modes restored"; else fail "Ctrl-Z: terminal modes not restored"; fi
    tmux send-keys -t "$S" "fg" Enter
    if wait_for "DiffuSeq explorer" 10 && alive "$PID"; then ok "fg: explorer redrawn"; else fail "fg: no redraw"; fi
else
    fail "Ctrl-Z: no shell prompt"
fi

# 5. q.
tmux send-keys -t "$S" Escape; sleep 0.2; tmux send-keys -t "$S" q
if wait_for "EXPLORE_EXIT=0" 10; then ok "q: exit 0"; else fail "q did not exit 0"; fi
sleep 0.3
if cmp -s "$OUT/stty.before" "$OUT/stty.after"; then ok "terminal modes restored after the abuse"; else fail "stty differs after quit"; fi
# Flat: from the end of key round 1 to the end of everything else (key round 2, resizes, signals),
# at most 10 % + 10 MB more.
GROW=$((RSS1 - RSSK1)); LIMIT=$((RSSK1 / 10 + 10240))
if [ "$GROW" -le "$LIMIT" ]; then ok "RSS flat: $((RSSK1 / 1024)) MB after key round 1, $((RSS1 / 1024)) MB at the end (first run: $((RSS0 / 1024)) MB)"
else fail "RSS grew from $((RSSK1 / 1024)) MB (after key round 1) to $((RSS1 / 1024)) MB"; fi

# 6. Closed terminal: tmux kill-session hangs up the pty. The wrapper shell ignores SIGHUP and does not
#    forward it, so the explorer must notice the hangup on its own (poll reports POLLHUP on stdin).
tmux kill-session -t "$S"
tmux new-session -d -s "$S" -x 80 -y 24 "trap '' HUP; '$BIN' $ARGS; echo \$? > '$OUT/hup.rc'"
wait_for "DiffuSeq explorer" 30 || fail "restart for SIGHUP"
HPID=$(explorer_pid)
tmux kill-session -t "$S"
i=0; while alive "$HPID" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.3
if ! alive "$HPID"; then ok "closed terminal: exited within $((i * 100 + 300)) ms"; else fail "still running 5 s after SIGHUP"; kill -9 "$HPID"; fi
HRC=$(cat "$OUT/hup.rc" 2>/dev/null || echo none)
case "$HRC" in 0|129) ok "closed terminal: exit status $HRC";; *) fail "closed terminal: exit status $HRC (expected 129 or 0)";; esac

# 7. SIGSEGV: the crash handler restores the terminal.
tmux new-session -d -s "$S" -x 100 -y 30 "env PS1='abuse\$ ' bash --norc --noprofile"
sleep 0.5
tmux send-keys -t "$S" "ulimit -c 0; stty -g > '$OUT/stty.before2'; '$BIN' $ARGS; echo EXPLORE_EXIT=\$?; stty -g > '$OUT/stty.after2'" Enter
wait_for "DiffuSeq explorer" 30 || fail "restart for SIGSEGV"
kill -SEGV "$(explorer_pid)"
if wait_for "EXPLORE_EXIT=139" 10; then
    sleep 0.3
    if cmp -s "$OUT/stty.before2" "$OUT/stty.after2" && screen | grep -q 'abuse\$'; then ok "SIGSEGV: terminal modes and main screen restored"
    else fail "SIGSEGV: terminal not restored"; fi
else
    fail "SIGSEGV: no exit status 139"
fi
echo "figures: keys $NK, resizes 50, SIGWINCH 300, RSS first run $((RSS0 / 1024)) MB, after key round 1 $((RSSK1 / 1024)) MB, after round 2 $((RSSK2 / 1024)) MB, at the end $((RSS1 / 1024)) MB"
echo "$FAILS failure(s); screens and logs in $OUT"
[ $FAILS = 0 ]
