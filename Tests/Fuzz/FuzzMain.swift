// The libFuzzer entry point for the readers (README "Tests and CI", issue 16). Built only when the
// manifest sees DIFFUSEQ_FUZZ=1, with `-sanitize=fuzzer,address` (libFuzzer supplies `main`):
//
//   DIFFUSEQ_FUZZ=1 swift build --scratch-path .build-fuzz -sanitize=fuzzer,address --product diffuseq-fuzz
//   FUZZ_TARGET=pt .build-fuzz/debug/diffuseq-fuzz CORPUS_DIR -max_total_time=600
//
// FUZZ_TARGET picks one of FuzzTargets.names; Tests/Fuzz/run.sh drives them all.
import DiffuSeqCore
import Foundation

nonisolated(unsafe) private var target = ""

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    target = ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? ""
    guard FuzzTargets.names.contains(target) else {
        FileHandle.standardError.write("FUZZ_TARGET must be one of \(FuzzTargets.names.joined(separator: ", ")), got \"\(target)\"\n".data(using: .utf8) ?? Data())
        exit(2)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let data = bytes.map { Data(bytes: $0, count: count) } ?? Data()
    FuzzTargets.run(target, data)
    return 0
}
