import DiffuSeqCore
import Foundation

// The process's compute context: defaults and the documented environment overrides, read once here.
var (compute, computeWarnings) = ComputeContext.fromEnvironment()
compute.precision = .auto  // the commands' default (`--precision`); shown by --version
for w in computeWarnings { FileHandle.standardError.write(Data("diffuseq: \(w)\n".utf8)) }
ComputeContext.installForProcess(compute)
DiffuSeqCommand.main()
