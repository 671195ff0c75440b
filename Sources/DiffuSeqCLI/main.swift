import DiffuSeqCore
import Foundation

// The process's compute context: defaults and the documented environment overrides, read once here.
let (compute, computeWarnings) = ComputeContext.fromEnvironment()
for w in computeWarnings { FileHandle.standardError.write(Data("diffuseq: \(w)\n".utf8)) }
ComputeContext.installForProcess(compute)
DiffuSeqCommand.main()
