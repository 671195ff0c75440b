// C shims for ncursesw: macros and globals Swift cannot import, wide-character input, signal safety.
#ifndef CNCURSES_H
#define CNCURSES_H

#ifndef NCURSES_WIDECHAR
#define NCURSES_WIDECHAR 1
#endif
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1
#endif
#include <locale.h>
#include <wchar.h>
#if __has_include(<ncursesw/curses.h>)
#include <ncursesw/curses.h>
#else
#include <curses.h>
#endif

/// Key event kinds returned by cn_read_key.
enum {
    CN_EVENT_NONE = 0,   ///< timeout, nothing read
    CN_EVENT_CHAR = 1,   ///< a character in *code (Unicode scalar)
    CN_EVENT_KEY = 2,    ///< a function key in *code (one of CN_KEY_*)
    CN_EVENT_MOUSE = 3,  ///< a mouse press at (*x, *y)
    CN_EVENT_RESIZE = 4, ///< the terminal was resized
    CN_EVENT_IGNORED = 5 ///< input was consumed but is not an event (e.g. a mouse release)
};

/// Function keys reported by cn_read_key (CN_EVENT_KEY).
enum {
    CN_KEY_UP = 1, CN_KEY_DOWN, CN_KEY_LEFT, CN_KEY_RIGHT, CN_KEY_HOME, CN_KEY_END, CN_KEY_BACKSPACE,
    CN_KEY_DELETE, CN_KEY_ENTER, CN_KEY_BTAB, CN_KEY_PPAGE, CN_KEY_NPAGE, CN_KEY_OTHER
};

/// Attributes (A_* macros).
attr_t cn_a_normal(void);
attr_t cn_a_bold(void);
attr_t cn_a_dim(void);
attr_t cn_a_reverse(void);
/// COLOR_PAIR(n).
attr_t cn_color_pair(int n);
/// getmaxyx(stdscr, …).
void cn_getmaxyx(int *rows, int *cols);

/// setlocale(LC_ALL, ""), initscr, cbreak, noecho, keypad, colours, mouse, short ESC delay, hidden cursor.
/// Returns 0 on success, -1 when the terminal cannot be initialised.
int cn_setup(int enable_mouse);
/// endwin() once (idempotent, safe to call from atexit and from the crash handler).
void cn_teardown(void);
/// Number of colours (0 when the terminal has none).
int cn_colors(void);
/// init_pair with -1 meaning the default colour.
int cn_init_pair(short pair, short fg, short bg);

/// Reads one input event, waiting at most timeout_ms. Returns a CN_EVENT_* kind.
int cn_read_key(int timeout_ms, unsigned int *code, int *x, int *y);
/// Waits until the terminal has input, `wake_fd` is readable, a signal arrives, or `timeout_ms`
/// passes (poll(2) on stdin and wake_fd; wake_fd < 0 waits on stdin only). Returns 1 when woken by
/// input, the fd or a signal, 0 on timeout.
int cn_wait_input(int timeout_ms, int wake_fd);

/// Draws one cell's UTF-8 text at (y, x) with the given attributes and colour pair.
void cn_draw_cell(int y, int x, const char *utf8, attr_t attrs, short pair);
/// clear() / erase(), refresh(), clearok.
void cn_clear(void);
void cn_refresh(void);

/// Installs SIGINT/SIGTERM/SIGHUP handlers that set a flag, and crash handlers (SIGSEGV, SIGILL, SIGTRAP,
/// SIGBUS, SIGABRT, SIGFPE) that restore the terminal and re-raise. Also registers cn_teardown with atexit.
void cn_install_signal_handlers(void);
/// The signal number that asked us to stop (0: none).
int cn_stop_signal(void);
/// Installs SIGINT/SIGTERM handlers that set a flag (a second signal exits with 130) and unblocks them.
void cn_install_interrupt(void);
/// The signal that asked a batch command to stop (0: none).
int cn_interrupted(void);

#endif
