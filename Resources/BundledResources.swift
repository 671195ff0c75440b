import Foundation

/// The files shipped in `Resources/`: the built-in dataset, the BERT vocabulary and the built-in model.
public enum BundledResources {
    /// The folder holding `data/` and `model/`, searched in order: `$DIFFUSEQ_RESOURCES`, the
    /// SwiftPM resource bundle next to the binary, and this source tree's `Resources/`.
    public static var root: URL? {
        let fm = FileManager.default
        if let env = ProcessInfo.processInfo.environment["DIFFUSEQ_RESOURCES"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        if let url = Bundle.module.resourceURL, fm.fileExists(atPath: url.appendingPathComponent("data").path) {
            return url
        }
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        if fm.fileExists(atPath: source.appendingPathComponent("data").path) { return source }
        return nil
    }

    /// A shipped file, e.g. `url("data/bert-base-uncased-vocab.txt")`, or nil when absent.
    public static func url(_ relative: String) -> URL? {
        guard let root else { return nil }
        let u = root.appendingPathComponent(relative)
        return FileManager.default.fileExists(atPath: u.path) ? u : nil
    }
}
