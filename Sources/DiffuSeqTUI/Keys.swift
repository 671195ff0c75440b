// Keys, actions and the one key table that both `update` and the help overlay read.

/// A decoded key press.
public enum Key: Hashable, Sendable {
    /// A printable character (including space).
    case char(Character)
    /// Arrow keys.
    case left, right, up, down
    /// Home / End.
    case home, end
    /// Tab / Shift-Tab.
    case tab, backTab
    /// Enter / Return.
    case enter
    /// Escape.
    case escape
    /// Backspace / Delete.
    case backspace, delete
    /// Page Up / Page Down.
    case pageUp, pageDown
    /// Ctrl-C when the terminal delivers it as a key.
    case ctrlC
    /// Ctrl plus a letter (lower case): `.ctrl("a")` is Ctrl-A.
    case ctrl(Character)
    /// Alt (Meta) plus a character, sent by terminals as ESC then the character.
    case alt(Character)
    /// A bracketed paste: the whole pasted text at once.
    case paste(String)

    /// How the key is written in help text and key scripts.
    public var label: String {
        switch self {
        case .char(" "): return "space"
        case .char(let c): return String(c)
        case .left: return "←"
        case .right: return "→"
        case .up: return "↑"
        case .down: return "↓"
        case .home: return "Home"
        case .end: return "End"
        case .tab: return "Tab"
        case .backTab: return "S-Tab"
        case .enter: return "Enter"
        case .escape: return "Esc"
        case .backspace: return "Bksp"
        case .delete: return "Del"
        case .pageUp: return "PgUp"
        case .pageDown: return "PgDn"
        case .ctrlC: return "^C"
        case .ctrl(let c): return "^" + String(c).uppercased()
        case .alt(let c): return "M-" + String(c)
        case .paste: return "paste"
        }
    }
}

/// Something the user can ask for with a key.
public enum ExplorerAction: String, CaseIterable, Sendable {
    /// Start or stop playing through the steps.
    case playPause
    /// One step back / forward in time.
    case stepBack, stepForward
    /// Ten steps back / forward.
    case back10, forward10
    /// First / last step.
    case first, last
    /// Previous / next target position.
    case selectPrevious, selectNext
    /// Edit the source sentence.
    case edit
    /// Focus (or unfocus) the seed panel.
    case seedFocus
    /// Toggle seed n (1–9) in the seed panel.
    case toggleSeed
    /// Add / remove a seed in the seed panel.
    case addSeed, removeSeed
    /// Cycle the sampler.
    case cycleSampler
    /// Fewer / more sampling steps.
    case fewerSteps, moreSteps
    /// Cycle the edit strength (SDEdit start fraction) 1 → 0.7 → 0.5 → 0.3 → 1 and re-run.
    case cycleStrength
    /// Pin a token at the selected position from this step on and fork the run.
    case pin
    /// Remove the pin (and its fork).
    case unpin
    /// Compare the primary seed with another sampler on the same noise (cycles the sampler).
    case compare
    /// Remove the sampler comparisons.
    case clearComparisons
    /// Show / hide the forward view of the reference.
    case toggleForward
    /// Open / close the trajectory map.
    case toggleMap
    /// In the map: jump the timeline to the cursor's step and position.
    case mapJump
    /// Show the help overlay.
    case help
    /// Quit.
    case quit
}

/// Where a binding applies.
public enum KeyContext: String, CaseIterable, Sendable {
    /// Anywhere outside editing and help.
    case global = "Explore"
    /// While the seed panel has focus (`s`).
    case seeds = "Seed panel (s)"
    /// While the trajectory map is open (`t`).
    case map = "Trajectory map (t)"
    /// While choosing the token to pin (`p`).
    case pin = "Pinning a token (p)"
    /// While editing the source (`e`).
    case editing = "Editing the source (e)"
}

/// One row of the key table.
public struct KeyBinding: Sendable {
    /// The keys that trigger the action.
    public var keys: [Key]
    /// How the keys are shown ("←/→", "1–9").
    public var keyLabel: String
    /// The action; nil for rows that only document editing keys.
    public var action: ExplorerAction?
    /// Where the binding applies.
    public var context: KeyContext
    /// Help text.
    public var help: String
    /// Short hint for the status line (empty: not shown there).
    public var hint: String
}

/// The one key table: `update` dispatches through it and the help overlay is generated from it.
public let explorerKeyTable: [KeyBinding] = [
    KeyBinding(keys: [.char(" ")], keyLabel: "space", action: .playPause, context: .global, help: "play / pause", hint: "play"),
    KeyBinding(keys: [.left], keyLabel: "←", action: .stepBack, context: .global, help: "one step back in time", hint: ""),
    KeyBinding(keys: [.right], keyLabel: "→", action: .stepForward, context: .global, help: "one step forward in time", hint: "step"),
    KeyBinding(keys: [.char("[")], keyLabel: "[", action: .back10, context: .global, help: "ten steps back", hint: ""),
    KeyBinding(keys: [.char("]")], keyLabel: "]", action: .forward10, context: .global, help: "ten steps forward", hint: "±10"),
    KeyBinding(keys: [.home], keyLabel: "Home", action: .first, context: .global, help: "first step", hint: ""),
    KeyBinding(keys: [.end], keyLabel: "End", action: .last, context: .global, help: "last step (follow a live run)", hint: ""),
    KeyBinding(keys: [.up, .backTab], keyLabel: "↑ S-Tab", action: .selectPrevious, context: .global, help: "previous position", hint: ""),
    KeyBinding(keys: [.down, .tab], keyLabel: "↓ Tab", action: .selectNext, context: .global, help: "next position (or click a token)", hint: "pos"),
    KeyBinding(keys: [.char("e")], keyLabel: "e", action: .edit, context: .global, help: "edit the source, Enter re-runs", hint: "edit"),
    KeyBinding(keys: [.char("s")], keyLabel: "s", action: .seedFocus, context: .global, help: "seed panel focus", hint: "seeds"),
    KeyBinding(keys: [.char("m")], keyLabel: "m", action: .cycleSampler, context: .global, help: "sampler: ddpm → ddim → dpm-solver++ → ddim-official", hint: "sampler"),
    KeyBinding(keys: [.char("<"), .char(",")], keyLabel: "<", action: .fewerSteps, context: .global, help: "fewer sampling steps", hint: ""),
    KeyBinding(keys: [.char(">"), .char(".")], keyLabel: ">", action: .moreSteps, context: .global, help: "more sampling steps", hint: "steps"),
    KeyBinding(keys: [.char("d")], keyLabel: "d", action: .cycleStrength, context: .global,
               help: "edit strength: start from the source noised to 0.7, 0.5, 0.3 of the steps, or from noise (1); re-runs",
               hint: ""),
    KeyBinding(keys: [.char("p")], keyLabel: "p", action: .pin, context: .global,
               help: "pin a token at the selected position from this step on; the run forks beside the original", hint: "pin"),
    KeyBinding(keys: [.char("u")], keyLabel: "u", action: .unpin, context: .global, help: "remove the pin and its fork", hint: ""),
    KeyBinding(keys: [.char("f")], keyLabel: "f", action: .toggleForward, context: .global,
               help: "forward view: the reference noised to this t and rounded, and how much survives", hint: ""),
    KeyBinding(keys: [.char("t")], keyLabel: "t", action: .toggleMap, context: .global,
               help: "trajectory map: every position over every step", hint: "map"),
    KeyBinding(keys: [.char("?"), .char("h")], keyLabel: "?", action: .help, context: .global, help: "this help", hint: "help"),
    KeyBinding(keys: [.char("q"), .ctrlC], keyLabel: "q", action: .quit, context: .global, help: "quit", hint: "quit"),
    KeyBinding(keys: (1...9).compactMap { Character(String($0)) }.map { Key.char($0) }, keyLabel: "1–9",
               action: .toggleSeed, context: .seeds, help: "show / hide seed n", hint: "toggle"),
    KeyBinding(keys: [.char("+"), .char("=")], keyLabel: "+", action: .addSeed, context: .seeds, help: "add a seed (re-runs)", hint: "add"),
    KeyBinding(keys: [.char("-"), .char("_")], keyLabel: "-", action: .removeSeed, context: .seeds, help: "remove the last seed", hint: "remove"),
    KeyBinding(keys: [.char("c")], keyLabel: "c", action: .compare, context: .seeds,
               help: "compare the first seed with another sampler on the same noise (again: next sampler)", hint: "compare"),
    KeyBinding(keys: [.char("x")], keyLabel: "x", action: .clearComparisons, context: .seeds, help: "remove the comparisons", hint: ""),
    KeyBinding(keys: [.char("s"), .escape], keyLabel: "s Esc", action: .seedFocus, context: .seeds, help: "leave the seed panel", hint: "back"),
    KeyBinding(keys: (1...9).compactMap { Character(String($0)) }.map { Key.char($0) }, keyLabel: "1–9", action: nil, context: .pin,
               help: "pin that neighbour of the inspector's list", hint: "neighbour"),
    KeyBinding(keys: [.enter], keyLabel: "word Enter", action: nil, context: .pin, help: "pin the typed word (one vocabulary token)", hint: "pin word"),
    KeyBinding(keys: [.escape], keyLabel: "Esc", action: nil, context: .pin, help: "cancel", hint: "cancel"),
    KeyBinding(keys: [.left, .right], keyLabel: "← →", action: nil, context: .map, help: "one column of steps", hint: "step"),
    KeyBinding(keys: [.char("["), .char("]")], keyLabel: "[ ]", action: nil, context: .map, help: "ten columns", hint: ""),
    KeyBinding(keys: [.home, .end], keyLabel: "Home End", action: nil, context: .map, help: "first / last step", hint: ""),
    KeyBinding(keys: [.up, .down], keyLabel: "↑ ↓", action: nil, context: .map, help: "previous / next position", hint: "pos"),
    KeyBinding(keys: [.enter], keyLabel: "Enter", action: .mapJump, context: .map,
               help: "jump the timeline to this step and position", hint: "jump"),
    KeyBinding(keys: [.char("t"), .escape], keyLabel: "t Esc", action: .toggleMap, context: .map, help: "close the map", hint: "close"),
    KeyBinding(keys: [.enter], keyLabel: "Enter", action: nil, context: .editing, help: "run the edited source (live paraphrase)", hint: "run"),
    KeyBinding(keys: [.escape], keyLabel: "Esc", action: nil, context: .editing, help: "cancel the edit", hint: "cancel"),
    KeyBinding(keys: [.left, .right, .home, .end, .ctrl("a"), .ctrl("e")], keyLabel: "←→ ^A ^E", action: nil, context: .editing,
               help: "move the cursor (Home, End too)", hint: ""),
    KeyBinding(keys: [.alt("b"), .alt("f")], keyLabel: "M-b M-f", action: nil, context: .editing,
               help: "one word back / forward", hint: ""),
    KeyBinding(keys: [.ctrl("u"), .ctrl("k"), .ctrl("w")], keyLabel: "^U ^K ^W", action: nil, context: .editing,
               help: "delete to the start / to the end / the word before", hint: "clear"),
    KeyBinding(keys: [.backspace, .delete], keyLabel: "Bksp Del", action: nil, context: .editing, help: "delete a character", hint: ""),
    KeyBinding(keys: [.up, .down], keyLabel: "↑ ↓", action: nil, context: .editing,
               help: "sentences run in this session", hint: "history"),
    KeyBinding(keys: [], keyLabel: "type", action: nil, context: .editing,
               help: "the first key replaces the old sentence unless the cursor moved; paste works", hint: ""),
]

/// The action bound to `key` in `context`, if any (seed-panel bindings fall back to global ones).
public func explorerAction(for key: Key, in context: KeyContext) -> ExplorerAction? {
    if let b = explorerKeyTable.first(where: { $0.context == context && $0.action != nil && $0.keys.contains(key) }) {
        return b.action
    }
    if context == .seeds || context == .map {
        return explorerKeyTable.first(where: { $0.context == .global && $0.keys.contains(key) })?.action
    }
    return nil
}
