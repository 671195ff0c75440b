import Foundation

/// Access to the golden files copied from `../shared/fixtures/tiny-official` (made by the official
/// DiffuSeq code; see `Fixtures/README.md`). Never edit an expected value.
enum Fixtures {
    /// The URL of a fixture file, e.g. `Fixtures.url("tokenizer/bert_uncased.jsonl")`.
    static func url(_ relative: String) -> URL {
        let base = Bundle.module.resourceURL ?? URL(fileURLWithPath: ".")
        return base.appendingPathComponent("Fixtures").appendingPathComponent(relative)
    }

    /// A file of this repository, e.g. `repoFile("Resources/data/kjv2modern/test.jsonl")`.
    static func repoFile(_ relative: String) -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(relative)
    }

    /// The contents of a fixture file.
    static func data(_ relative: String) throws -> Data { try Data(contentsOf: url(relative)) }

    /// A fixture file parsed as JSON.
    static func json(_ relative: String) throws -> Any {
        try JSONSerialization.jsonObject(with: data(relative), options: [.fragmentsAllowed])
    }
}
