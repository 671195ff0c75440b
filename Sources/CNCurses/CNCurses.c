#include "CNCurses.h"
#if __has_include(<ncursesw/term.h>)
#include <ncursesw/term.h>
#else
#include <term.h>
#endif
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t cn_stop = 0;
static volatile sig_atomic_t cn_active = 0;

attr_t cn_a_normal(void) { return A_NORMAL; }
attr_t cn_a_bold(void) { return A_BOLD; }
attr_t cn_a_dim(void) { return A_DIM; }
attr_t cn_a_reverse(void) { return A_REVERSE; }
attr_t cn_color_pair(int n) { return COLOR_PAIR(n); }
void cn_getmaxyx(int *rows, int *cols) {
    int r = 0, c = 0;
    if (stdscr) { getmaxyx(stdscr, r, c); }
    *rows = r; *cols = c;
}

/* What the crash handler restores without calling curses (see cn_on_crash): the terminal modes from
   before initscr and the terminfo strings that undo ours, prepared at setup. */
static struct termios cn_saved_tty;
static volatile sig_atomic_t cn_have_tty = 0;
static char cn_crash_seq[256];
static size_t cn_crash_len = 0;

static void cn_crash_append(const char *cap) {
    if (cap == NULL || cap == (char *)-1) { return; }
    size_t n = strlen(cap);
    if (cn_crash_len + n < sizeof cn_crash_seq) { memcpy(cn_crash_seq + cn_crash_len, cap, n); cn_crash_len += n; }
}

int cn_setup(int enable_mouse) {
    setlocale(LC_ALL, "");
    if (getenv("ESCDELAY") == NULL) { set_escdelay(25); }
    cn_have_tty = tcgetattr(STDIN_FILENO, &cn_saved_tty) == 0;
    if (initscr() == NULL) { return -1; }
    cn_crash_len = 0;
    cn_crash_append(tigetstr("sgr0"));
    cn_crash_append(tigetstr("cnorm"));
    cn_crash_append(tigetstr("rmkx"));
    if (enable_mouse) { cn_crash_append("\033[?1000l\033[?1002l\033[?1006l"); }
    cn_crash_append(tigetstr("rmcup"));
    cn_crash_append("\r\n");
    cn_active = 1;
    cbreak();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    intrflush(stdscr, FALSE);
    curs_set(0);
    if (has_colors()) {
        start_color();
        use_default_colors();
    }
    if (enable_mouse) {
        mousemask(BUTTON1_PRESSED | BUTTON1_CLICKED, NULL);
        mouseinterval(0);
    }
    return 0;
}

void cn_teardown(void) {
    if (cn_active) {
        cn_active = 0;
        curs_set(1);
        endwin();
        fflush(stdout);
    }
}

int cn_colors(void) { return has_colors() ? COLORS : 0; }
int cn_init_pair(short pair, short fg, short bg) { return init_pair(pair, fg, bg); }

int cn_read_key(int timeout_ms, unsigned int *code, int *x, int *y) {
    wint_t ch = 0;
    timeout(timeout_ms);
    int r = get_wch(&ch);
    *code = 0; *x = 0; *y = 0;
    if (r == ERR) { return CN_EVENT_NONE; }
    if (r == KEY_CODE_YES) {
        switch (ch) {
        case KEY_RESIZE: return CN_EVENT_RESIZE;
        case KEY_MOUSE: {
            MEVENT ev;
            if (getmouse(&ev) == OK && (ev.bstate & (BUTTON1_PRESSED | BUTTON1_CLICKED))) {
                *x = ev.x; *y = ev.y;
                return CN_EVENT_MOUSE;
            }
            return CN_EVENT_IGNORED;
        }
        case KEY_UP: *code = CN_KEY_UP; break;
        case KEY_DOWN: *code = CN_KEY_DOWN; break;
        case KEY_LEFT: *code = CN_KEY_LEFT; break;
        case KEY_RIGHT: *code = CN_KEY_RIGHT; break;
        case KEY_HOME: *code = CN_KEY_HOME; break;
        case KEY_END: *code = CN_KEY_END; break;
        case KEY_BACKSPACE: *code = CN_KEY_BACKSPACE; break;
        case KEY_DC: *code = CN_KEY_DELETE; break;
        case KEY_ENTER: *code = CN_KEY_ENTER; break;
        case KEY_BTAB: *code = CN_KEY_BTAB; break;
        case KEY_PPAGE: *code = CN_KEY_PPAGE; break;
        case KEY_NPAGE: *code = CN_KEY_NPAGE; break;
        default: *code = CN_KEY_OTHER; break;
        }
        return CN_EVENT_KEY;
    }
    *code = (unsigned int)ch;
    return CN_EVENT_CHAR;
}

int cn_wait_input(int timeout_ms, int wake_fd) {
    struct pollfd fds[2];
    fds[0].fd = STDIN_FILENO; fds[0].events = POLLIN; fds[0].revents = 0;
    fds[1].fd = wake_fd; fds[1].events = POLLIN; fds[1].revents = 0;
    int r = poll(fds, wake_fd >= 0 ? 2 : 1, timeout_ms);
    if (r < 0) return errno == EINTR ? 1 : 0;
    /* The terminal is gone (its window closed) but no SIGHUP came, e.g. a parent that ignores it:
       without this the run loop would wake at once forever, spinning a core. Stop as on SIGHUP. */
    if (fds[0].revents & (POLLHUP | POLLERR | POLLNVAL)) { cn_stop = SIGHUP; }
    return r > 0 ? 1 : 0;
}

void cn_draw_cell(int y, int x, const char *utf8, attr_t attrs, short pair) {
    attrset(attrs | COLOR_PAIR(pair));
    mvaddstr(y, x, utf8);
}

void cn_clear(void) { clearok(stdscr, TRUE); erase(); }
void cn_refresh(void) { refresh(); }

static void cn_on_stop(int sig) { cn_stop = sig; }

/* A crash (SIGSEGV, SIGABRT, …) may arrive inside curses or malloc, so only async-signal-safe calls
   are allowed here: endwin() is not (it allocates and writes through stdio). The terminal is restored
   by write(2) of the prepared terminfo strings and tcsetattr(3) of the saved modes, both safe. */
static void cn_on_crash(int sig) {
    if (cn_active) {
        cn_active = 0;
        if (cn_crash_len > 0) { ssize_t r = write(STDOUT_FILENO, cn_crash_seq, cn_crash_len); (void)r; }
        if (cn_have_tty) { tcsetattr(STDIN_FILENO, TCSAFLUSH, &cn_saved_tty); }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void cn_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cn_on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    struct sigaction cr;
    memset(&cr, 0, sizeof cr);
    cr.sa_handler = cn_on_crash;
    sigemptyset(&cr.sa_mask);
    cr.sa_flags = SA_RESETHAND;
    int crashes[] = { SIGSEGV, SIGILL, SIGTRAP, SIGBUS, SIGABRT, SIGFPE };
    for (unsigned i = 0; i < sizeof crashes / sizeof crashes[0]; i++) { sigaction(crashes[i], &cr, NULL); }
    atexit(cn_teardown);
}

int cn_stop_signal(void) { return cn_stop; }

/* Interrupt flag for the batch commands (train, sample, trace): a volatile sig_atomic_t that the
   handler sets, read through a function so the compiler never hoists the read out of a loop. */
static volatile sig_atomic_t cn_interrupt = 0;
static void cn_on_interrupt(int sig) {
    if (cn_interrupt) _exit(130);
    cn_interrupt = sig;
}
void cn_install_interrupt(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cn_on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A launcher may have started us with these blocked; the mask is inherited. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}
int cn_interrupted(void) { return cn_interrupt; }
