import DiffuSeqCore
import Foundation

if SamplingEngine.fromEnvironment == nil {
    let v = ProcessInfo.processInfo.environment["DIFFUSEQ_ENGINE"] ?? ""
    FileHandle.standardError.write(Data("diffuseq: DIFFUSEQ_ENGINE=\(v) is not automatic, blas or packed; using automatic\n".utf8))
}
DiffuSeqCommand.main()
