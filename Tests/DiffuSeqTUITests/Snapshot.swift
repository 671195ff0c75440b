import Foundation
import Testing

/// Compares `text` with `__Snapshots__/<name>.txt` next to this file; prints a line diff on mismatch.
/// `RECORD_SNAPSHOTS=1 swift test` (re-)records; a missing snapshot is recorded and the test fails once.
func assertSnapshot(_ text: String, named name: String, filePath: String = #filePath,
                    sourceLocation: SourceLocation = #_sourceLocation) {
    let dir = URL(fileURLWithPath: filePath).deletingLastPathComponent().appendingPathComponent("__Snapshots__")
    let url = dir.appendingPathComponent(name + ".txt")
    let record = ProcessInfo.processInfo.environment["RECORD_SNAPSHOTS"] == "1"
    guard !record, let expected = try? String(contentsOf: url, encoding: .utf8) else {
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try? (text + "\n").write(to: url, atomically: true, encoding: .utf8)
        if !record { Issue.record("recorded new snapshot \(name); re-run", sourceLocation: sourceLocation) }
        return
    }
    let exp = expected.hasSuffix("\n") ? String(expected.dropLast()) : expected
    if exp == text { return }
    let a = exp.components(separatedBy: "\n"), b = text.components(separatedBy: "\n")
    var diff: [String] = []
    for i in 0..<max(a.count, b.count) {
        let l = i < a.count ? a[i] : nil, r = i < b.count ? b[i] : nil
        if l != r {
            if let l { diff.append("-\(i + 1): \(l)") }
            if let r { diff.append("+\(i + 1): \(r)") }
        }
    }
    print("snapshot \(name) differs (RECORD_SNAPSHOTS=1 to re-record):\n" + diff.joined(separator: "\n"))
    let shown = diff.prefix(40).joined(separator: "\n")
    Issue.record("snapshot \(name) differs:\n\(shown)", sourceLocation: sourceLocation)
}
