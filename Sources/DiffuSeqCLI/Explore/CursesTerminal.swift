import CNCurses
import DiffuSeqTUI
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An input event from the terminal.
enum TerminalEvent {
    /// A key press.
    case key(Key)
    /// A mouse press at a cell.
    case mouse(x: Int, y: Int)
    /// The terminal was resized.
    case resize(width: Int, height: Int)
}

/// Why the terminal could not be used.
struct TerminalError: Error, CustomStringConvertible {
    /// Message.
    var description: String
}

/// The ncurses terminal: set-up and teardown, key decoding, and presenting a `ScreenBuffer` by drawing only changed cells.
final class CursesTerminal {
    private var previous: ScreenBuffer?
    private var attrs: [Role: (attr_t, Int16)] = [:]
    private var active = false
    private var decoder = InputDecoder()
    private var queued: [TerminalEvent] = []

    /// Initialises ncurses (locale, cbreak, keypad, colours, mouse) and installs the signal handlers
    /// that restore the terminal on Ctrl-C, SIGTERM and crashes.
    init(mouse: Bool = true) throws {
        guard isatty(STDIN_FILENO) == 1, isatty(STDOUT_FILENO) == 1 else {
            throw TerminalError(description: "explore needs an interactive terminal (use --render WxH --keys … for text output)")
        }
        cn_install_signal_handlers()
        guard cn_setup(mouse ? 1 : 0) == 0 else { throw TerminalError(description: "cannot initialise the terminal (is TERM set?)") }
        active = true
        CursesTerminal.bracketedPaste(true)
        setUpColours()
    }

    deinit { teardown() }

    /// Restores the terminal (idempotent).
    func teardown() {
        if active {
            active = false
            CursesTerminal.bracketedPaste(false)
            cn_teardown()
        }
    }

    /// Asks the terminal to wrap pastes in ESC [200~ … ESC [201~ (xterm's bracketed paste), so a pasted
    /// sentence arrives as one `Key.paste` (its newlines do not press Enter).
    private static func bracketedPaste(_ on: Bool) {
        fputs(on ? "\u{1B}[?2004h" : "\u{1B}[?2004l", stdout)
        fflush(stdout)
    }

    /// Current size in columns × rows.
    var size: (width: Int, height: Int) {
        var rows: Int32 = 0, cols: Int32 = 0
        cn_getmaxyx(&rows, &cols)
        return (Int(cols), Int(rows))
    }

    /// The signal that asked us to stop (SIGINT, SIGTERM, SIGHUP), or 0.
    var stopSignal: Int32 { cn_stop_signal() }

    private func setUpColours() {
        let n = cn_colors()
        let dim = cn_a_dim(), bold = cn_a_bold()
        // (foreground colour or -1 for default, extra attributes) per role.
        let table: [(Role, Int16, attr_t)] = [
            (.normal, -1, 0), (.dim, n >= 16 ? 8 : -1, n >= 16 ? 0 : dim), (.quiet, n >= 16 ? 8 : -1, dim),
            (.title, Int16(COLOR_CYAN), 0), (.border, Int16(COLOR_BLUE), 0), (.accent, Int16(COLOR_CYAN), bold),
            (.settled, Int16(COLOR_GREEN), 0), (.settling, Int16(COLOR_YELLOW), 0), (.changing, Int16(COLOR_RED), bold),
            (.spark, Int16(COLOR_CYAN), 0), (.mark, Int16(COLOR_MAGENTA), bold), (.status, -1, 0),
            (.error, Int16(COLOR_RED), bold), (.good, Int16(COLOR_GREEN), 0), (.key, Int16(COLOR_YELLOW), bold),
        ]
        for (i, row) in table.enumerated() {
            if n > 0 {
                let pair = Int16(i + 1)
                _ = cn_init_pair(pair, row.1, -1)
                attrs[row.0] = (row.2, pair)
            } else {
                attrs[row.0] = (row.0 == .dim || row.0 == .quiet ? dim : row.2, 0)
            }
        }
    }

    /// Waits until there is terminal input, `wakeFD` becomes readable (the sampling thread posted
    /// frames), a signal arrives, or `timeoutMs` passes.
    func waitForInput(timeoutMs: Int, wakeFD: Int32) {
        _ = cn_wait_input(Int32(max(0, timeoutMs)), wakeFD)
    }

    /// Every event ncurses has ready, without waiting (at most `limit`); `more` is set when the
    /// limit stopped the read, so input may still be buffered inside ncurses.
    func readReadyEvents(limit: Int = 256, more: inout Bool) -> [TerminalEvent] {
        var out: [TerminalEvent] = queued
        queued = []
        more = false
        var reads = 0
        while true {
            if reads >= limit { more = true; break }
            var consumed = false
            let ev = readEvent(timeoutMs: 0, consumed: &consumed)
            reads += 1
            if let ev { out.append(ev) } else if !consumed { break }
        }
        if !more { out += decoder.flush().map { .key($0) } }
        return out
    }

    /// Reads one event; `consumed` tells whether input was read even when no event results.
    private func readEvent(timeoutMs: Int, consumed: inout Bool) -> TerminalEvent? {
        var code: UInt32 = 0, x: Int32 = 0, y: Int32 = 0
        let kind = cn_read_key(Int32(timeoutMs), &code, &x, &y)
        consumed = Int(kind) != Int(CN_EVENT_NONE)
        switch Int(kind) {
        case Int(CN_EVENT_CHAR):
            // Characters go through the decoder (Ctrl-x, Alt-x, bracketed paste); it may complete several keys.
            let keys = decoder.feed(code)
            if keys.count > 1 { queued += keys.dropFirst().map { .key($0) } }
            return keys.first.map { .key($0) }
        case Int(CN_EVENT_KEY):
            return CursesTerminal.functionKeys[Int(code)].map { .key($0) }
        case Int(CN_EVENT_MOUSE):
            return .mouse(x: Int(x), y: Int(y))
        case Int(CN_EVENT_RESIZE):
            previous = nil
            let s = size
            return .resize(width: s.width, height: s.height)
        default:
            return nil
        }
    }

    private static let functionKeys: [Int: Key] = {
        var m: [Int: Key] = [:]
        m[Int(CN_KEY_UP)] = .up
        m[Int(CN_KEY_DOWN)] = .down
        m[Int(CN_KEY_LEFT)] = .left
        m[Int(CN_KEY_RIGHT)] = .right
        m[Int(CN_KEY_HOME)] = .home
        m[Int(CN_KEY_END)] = .end
        m[Int(CN_KEY_BACKSPACE)] = .backspace
        m[Int(CN_KEY_DELETE)] = .delete
        m[Int(CN_KEY_ENTER)] = .enter
        m[Int(CN_KEY_BTAB)] = .backTab
        m[Int(CN_KEY_PPAGE)] = .pageUp
        m[Int(CN_KEY_NPAGE)] = .pageDown
        return m
    }()

    /// Forces the next `present` to redraw everything.
    func invalidate() { previous = nil }

    /// Draws the cells of `buffer` that differ from the last presented buffer, then refreshes.
    func present(_ buffer: ScreenBuffer) {
        if previous == nil || previous?.width != buffer.width || previous?.height != buffer.height {
            cn_clear()
            previous = nil
        }
        let reverse = cn_a_reverse(), bold = cn_a_bold()
        for run in buffer.diff(from: previous) {
            var x = run.x
            for cell in run.cells {
                defer { x += 1 }
                if cell.isContinuation { continue }
                // The bottom-right cell cannot be written without scrolling on some terminals; skip it.
                if run.y == buffer.height - 1 && x + Int(cell.width) >= buffer.width { continue }
                let style = attrs[cell.role] ?? (0, 0)
                var a = style.0
                if cell.bold { a |= bold }
                if cell.reverse { a |= reverse }
                cell.text.withCString { cn_draw_cell(Int32(run.y), Int32(x), $0, a, style.1) }
            }
        }
        cn_refresh()
        previous = buffer
    }
}
