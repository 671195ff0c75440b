/// The version of the engine and the `diffuseq` tool.
public enum DiffuSeqVersion {
    /// Semantic version string.
    public static let string = "0.1.0"
}
