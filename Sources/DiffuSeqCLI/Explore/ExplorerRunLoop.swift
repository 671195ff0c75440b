import DiffuSeqCore
import DiffuSeqTUI
import Foundation

/// The terminal as the run loop's input and output: keys, clicks and resizes from ncurses, screens
/// presented as a diff, stop on SIGINT/SIGTERM/SIGHUP.
final class TerminalIO: ExplorerIO {
    private let terminal: CursesTerminal

    init(_ terminal: CursesTerminal) { self.terminal = terminal }

    func wait(timeoutMs: Int, wakeFD: Int32) { terminal.waitForInput(timeoutMs: timeoutMs, wakeFD: wakeFD) }

    /// Every key ready (a burst of auto-repeat or a paste) is applied before one redraw.
    func readMessages(more: inout Bool) -> [ExplorerMessage] {
        terminal.readReadyEvents(more: &more).map { ev in
            switch ev {
            case .key(let k): return .key(k)
            case .mouse(let x, let y): return .mouse(x: x, y: y)
            case .resize(let w, let h):
                terminal.invalidate()
                return .resize(width: w, height: h)
            }
        }
    }

    func present(_ screen: ScreenBuffer, driver: ExplorerDriver) { terminal.present(screen) }
    func shouldStop(_ driver: ExplorerDriver) -> Bool { terminal.stopSignal != 0 }
    var timedTicks: Bool { true }
}

/// Runs the interactive explorer on `backend` until the user quits; the terminal is always restored
/// (on `q`, Ctrl-C, SIGTERM, thrown errors, and crashes through the signal handlers).
/// Returns the process exit status to use (0, or 128 + signal when stopped by a signal).
func runExplorer(backend: any ExplorerBackend, config: ExplorerConfig, mouse: Bool = true) throws -> Int32 {
    let terminal = try CursesTerminal(mouse: mouse)
    defer { terminal.teardown() }
    let s = terminal.size
    // Derived data only for frames that are drawn (most streamed frames are not).
    let driver = ExplorerDriver(model: ExplorerModel(backend: backend, config: config, width: s.width, height: s.height),
                                executor: ThreadedExecutor(), deriveEveryMessage: false)
    driver.send(.start)
    runExplorerLoop(driver, io: TerminalIO(terminal))
    // Stop sampling before the terminal is restored.
    driver.shutdown(waitSeconds: 2)
    let sig = terminal.stopSignal
    return sig == 0 ? 0 : 128 + sig
}
