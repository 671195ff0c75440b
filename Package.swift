// swift-tools-version:6.0
import Foundation
import PackageDescription

let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")
let optimise: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo", "-enable-testing"], .when(configuration: .release))]

let package = Package(
    name: "DiffuSeq",
    products: [
        .executable(name: "diffuseq", targets: ["DiffuSeqCLI"]),
        .library(name: "DiffuSeqCore", targets: ["DiffuSeqCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // MARK: - C shims
        // OpenBLAS is loaded with dlopen after OPENBLAS_CORETYPE is chosen (see README, "BLAS").
        .target(name: "COpenBLAS", linkerSettings: [.linkedLibrary("dl")]),
        // oneDNN is loaded with dlopen too: the build needs only its header (libdnnl-dev; without it the shim
        // compiles to stubs) and the binary runs without the library, in fp32 (see README, "Matrix products").
        .target(name: "CDNNL", cSettings: [.unsafeFlags(["-O3"])], linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "CNCurses", linkerSettings: [.linkedLibrary("ncursesw")]),
        // Elementwise kernels compiled for AVX-512 / AVX2 / baseline, picked at load (see CKernels.h).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // MARK: - Libraries
        .target(name: "DiffuSeqResources", path: "Resources",
                resources: [.copy("data"), .copy("model")]),
        .target(name: "DiffuSeqCore", dependencies: ["COpenBLAS", "CDNNL", "CKernels", "DiffuSeqResources"],
                swiftSettings: optimise),
        .target(name: "DiffuSeqTUI", dependencies: ["DiffuSeqCore"], swiftSettings: optimise),
        // MARK: - Executable
        .executableTarget(name: "DiffuSeqCLI",
                          dependencies: ["DiffuSeqCore", "DiffuSeqResources", "DiffuSeqTUI", "CNCurses", argumentParser]),
        // MARK: - Tests
        .testTarget(name: "DiffuSeqCoreTests", dependencies: ["DiffuSeqCore"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "DiffuSeqTUITests", dependencies: ["DiffuSeqTUI", "DiffuSeqCore"], exclude: ["__Snapshots__"]),
        .testTarget(name: "DiffuSeqCLITests", dependencies: ["DiffuSeqCore"]),
    ],
    swiftLanguageModes: [.v5]
)

// MARK: - Fuzzing (only with DIFFUSEQ_FUZZ=1 and -sanitize=fuzzer,address; see README "Tests and CI")
if ProcessInfo.processInfo.environment["DIFFUSEQ_FUZZ"] == "1" {
    package.products.append(.executable(name: "diffuseq-fuzz", targets: ["DiffuSeqFuzz"]))
    package.targets.append(.executableTarget(name: "DiffuSeqFuzz", dependencies: ["DiffuSeqCore"], path: "Tests/Fuzz",
                                             exclude: ["corpus", "run.sh", "make_seeds.py"],
                                             swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
}
