import Foundation
import Testing
@testable import DiffuSeqCore

@Suite("JSON text")
struct JSONTextTests {
    @Test("sampler lines are written like Python's json.dumps (ensure_ascii) and parse back")
    func samplerLine() throws {
        let o = GenerationOutput(recover: "caf\u{E9} \"q\" 😀\n", reference: "[CLS] a\\b [SEP]", source: "tab\there")
        #expect(o.jsonLine == #"{"recover": "caf\u00e9 \"q\" \ud83d\ude00\n", "reference": "[CLS] a\\b [SEP]", "source": "tab\there"}"#)
        let back = try JSONDecoder().decode(GenerationOutput.self, from: Data(o.jsonLine.utf8))
        #expect(back == o)
    }

    @Test("UTF-8 mode keeps non-ASCII text and escapes control characters")
    func utf8Mode() {
        #expect(JSONText.quote("é\u{1}\u{2028}") == "\"é\\u0001\\u2028\"")
    }
}
