import Foundation

/// An error raised while reading or writing a checkpoint file.
///
/// `description` always starts with the file path, then names the offending key, pickle global,
/// zip entry or byte offset and says what was expected, e.g.
/// `"/x/ema.pt: refusing pickle global os.system at offset 2 (only tensors, tuples and dicts are read)"`.
public struct CheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The path of the file concerned (or a short label such as `"<tensor>"` when there is no file).
    public var file: String
    /// What went wrong, naming the key, global or offset and what was expected.
    public var message: String

    /// Creates an error for `file` with a message that names the offending item.
    public init(file: String, _ message: String) {
        self.file = file
        self.message = message
    }

    /// `"<file>: <message>"`.
    public var description: String { "\(file): \(message)" }
}

extension CheckpointError: LocalizedError {
    /// Same as `description`, so `localizedDescription` is informative too.
    public var errorDescription: String? { description }
}

/// The element type of a tensor, spelled as in the safetensors header.
public enum TensorDType: String, CaseIterable, Sendable {
    /// IEEE 754 binary32.
    case F32
    /// IEEE 754 binary16.
    case F16
    /// bfloat16 (the top 16 bits of a binary32).
    case BF16
    /// IEEE 754 binary64.
    case F64
    /// Signed 64-bit integer.
    case I64
    /// Signed 32-bit integer.
    case I32
    /// Signed 16-bit integer.
    case I16
    /// Signed 8-bit integer.
    case I8
    /// Unsigned 8-bit integer.
    case U8
    /// Boolean, one byte per element (0 or 1).
    case BOOL

    /// The number of bytes of one element.
    public var byteSize: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16, .I16: return 2
        case .I8, .U8, .BOOL: return 1
        }
    }

    /// Whether the type is a floating-point type.
    public var isFloatingPoint: Bool {
        switch self {
        case .F32, .F16, .BF16, .F64: return true
        default: return false
        }
    }
}

/// Multiplies the entries of `shape`, returning nil on a negative entry or on overflow.
func checkpointElementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = p
    }
    return n
}

/// One named tensor: element type, shape and its raw little-endian, row-major (contiguous) bytes.
public struct NamedTensor: Sendable {
    /// The state-dict key, e.g. `"lm_head.weight"`.
    public var name: String
    /// The element type.
    public var dtype: TensorDType
    /// The shape, outermost dimension first (`[]` for a scalar).
    public var shape: [Int]
    /// The raw little-endian bytes, row-major. Its size should be `elementCount * dtype.byteSize`;
    /// this is checked again by `SafeTensors.write` and by the accessors.
    public var data: Data

    /// Creates a tensor from raw little-endian row-major bytes; throws if the size does not match
    /// `shape` × `dtype.byteSize`.
    public init(name: String, dtype: TensorDType, shape: [Int], data: Data) throws {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.data = data
        try checkSize(file: "<tensor>")
    }

    /// Creates an `F32` tensor from `values` (count must equal the product of `shape`).
    public init(name: String, shape: [Int], floats values: [Float]) throws {
        let data = values.withUnsafeBytes { Data($0) }
        try self.init(name: name, dtype: .F32, shape: shape, data: data.littleEndianFromHost(elementSize: 4))
    }

    /// Creates an `I64` tensor from `values` (count must equal the product of `shape`).
    public init(name: String, shape: [Int], int64s values: [Int64]) throws {
        let data = values.withUnsafeBytes { Data($0) }
        try self.init(name: name, dtype: .I64, shape: shape, data: data.littleEndianFromHost(elementSize: 8))
    }

    /// The number of elements (product of `shape`; 1 for a scalar), or -1 if the shape is invalid.
    public var elementCount: Int { checkpointElementCount(shape) ?? -1 }

    /// Throws unless `data.count == elementCount * dtype.byteSize`.
    func checkSize(file: String) throws {
        guard let n = checkpointElementCount(shape) else {
            throw CheckpointError(file: file, "tensor '\(name)': invalid shape \(shape)")
        }
        let (bytes, o) = n.multipliedReportingOverflow(by: dtype.byteSize)
        guard !o, bytes == data.count else {
            throw CheckpointError(file: file,
                "tensor '\(name)': \(dtype.rawValue) \(shape) needs \(o ? "too many" : String(bytes)) bytes but holds \(data.count)")
        }
    }

    /// The values converted to `Float` (F32 copied, F16/BF16 widened, F64 rounded).
    /// Throws for integer and boolean tensors.
    public func floats() throws -> [Float] {
        try checkSize(file: "<tensor>")
        let n = data.count / dtype.byteSize
        switch dtype {
        case .F32:
            return data.withUnsafeBytes { raw in
                [Float](unsafeUninitializedCapacity: n) { buf, count in
                    if n > 0, let src = raw.baseAddress, let dst = buf.baseAddress {
                        memcpy(dst, src, n * 4)
                        #if _endian(big)
                        for i in 0..<n { dst[i] = Float(bitPattern: UInt32(littleEndian: dst[i].bitPattern)) }
                        #endif
                    }
                    count = n
                }
            }
        case .F16:
            return data.withUnsafeBytes { raw in
                [Float](unsafeUninitializedCapacity: n) { buf, count in
                    for i in 0..<n {
                        let h = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                        buf[i] = checkpointHalfToFloat(h)
                    }
                    count = n
                }
            }
        case .BF16:
            return data.withUnsafeBytes { raw in
                [Float](unsafeUninitializedCapacity: n) { buf, count in
                    for i in 0..<n {
                        let h = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                        buf[i] = Float(bitPattern: UInt32(h) << 16)
                    }
                    count = n
                }
            }
        case .F64:
            return data.withUnsafeBytes { raw in
                [Float](unsafeUninitializedCapacity: n) { buf, count in
                    for i in 0..<n {
                        let b = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                        buf[i] = Float(Double(bitPattern: b))
                    }
                    count = n
                }
            }
        default:
            throw CheckpointError(file: "<tensor>",
                "tensor '\(name)' has dtype \(dtype.rawValue); floats() expects F32, F16, BF16 or F64")
        }
    }

    /// The values converted to `Int64` (I64 copied; I32/I16/I8/U8/BOOL widened).
    /// Throws for floating-point tensors.
    public func int64s() throws -> [Int64] {
        try checkSize(file: "<tensor>")
        let n = data.count / dtype.byteSize
        func widen(_ load: @escaping (UnsafeRawBufferPointer, Int) -> Int64) -> [Int64] {
            data.withUnsafeBytes { raw in
                [Int64](unsafeUninitializedCapacity: n) { buf, count in
                    for i in 0..<n { buf[i] = load(raw, i) }
                    count = n
                }
            }
        }
        switch dtype {
        case .I64:
            return data.withUnsafeBytes { raw in
                [Int64](unsafeUninitializedCapacity: n) { buf, count in
                    if n > 0, let src = raw.baseAddress, let dst = buf.baseAddress {
                        memcpy(dst, src, n * 8)
                        #if _endian(big)
                        for i in 0..<n { dst[i] = Int64(littleEndian: dst[i]) }
                        #endif
                    }
                    count = n
                }
            }
        case .I32:
            return widen { Int64(Int32(littleEndian: $0.loadUnaligned(fromByteOffset: 4 * $1, as: Int32.self))) }
        case .I16:
            return widen { Int64(Int16(littleEndian: $0.loadUnaligned(fromByteOffset: 2 * $1, as: Int16.self))) }
        case .I8:
            return widen { Int64(Int8(bitPattern: $0[$1])) }
        case .U8, .BOOL:
            return widen { Int64($0[$1]) }
        default:
            throw CheckpointError(file: "<tensor>",
                "tensor '\(name)' has dtype \(dtype.rawValue); int64s() expects an integer or BOOL tensor")
        }
    }
}

/// Converts an IEEE binary16 bit pattern to `Float` (exact).
func checkpointHalfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = Int((h >> 10) & 0x1F)
    let man = UInt32(h & 0x3FF)
    if exp == 0 {
        // zero or subnormal: man * 2^-24
        let v = Float(man) * Float(bitPattern: 0x3380_0000)  // 2^-24
        return Float(bitPattern: v.bitPattern | sign)
    }
    if exp == 31 {
        return Float(bitPattern: sign | 0x7F80_0000 | (man << 13))
    }
    return Float(bitPattern: sign | (UInt32(exp + 112) << 23) | (man << 13))
}

extension Data {
    /// On big-endian hosts swaps every element of `elementSize` bytes; identity on little-endian hosts.
    func littleEndianFromHost(elementSize: Int) -> Data {
        #if _endian(big)
        var d = self
        d.withUnsafeMutableBytes { raw in
            var i = 0
            while i + elementSize <= raw.count {
                for k in 0..<(elementSize / 2) { raw.swapAt(i + k, i + elementSize - 1 - k) }
                i += elementSize
            }
        }
        return d
        #else
        return self
        #endif
    }
}

/// An ordered collection of uniquely named tensors plus string metadata: the in-memory form of
/// a safetensors file or of a PyTorch state dict.
public struct TensorArchive: Sendable {
    /// The tensors in file order.
    public private(set) var tensors: [NamedTensor]
    /// Free-form string metadata (the safetensors `__metadata__`; empty for `.pt` files).
    public var metadata: [String: String]
    private var index: [String: Int]

    /// Creates an archive; throws if two tensors share a name.
    public init(tensors: [NamedTensor] = [], metadata: [String: String] = [:]) throws {
        self.tensors = []
        self.metadata = metadata
        self.index = [:]
        for t in tensors { try append(t) }
    }

    /// The tensor names in order.
    public var names: [String] { tensors.map(\.name) }

    /// The number of tensors.
    public var count: Int { tensors.count }

    /// The tensor called `name`, or nil.
    public subscript(name: String) -> NamedTensor? {
        index[name].map { tensors[$0] }
    }

    /// The tensor called `name`; throws a `CheckpointError` naming the missing key.
    public func tensor(_ name: String) throws -> NamedTensor {
        guard let i = index[name] else {
            throw CheckpointError(file: "<archive>", "no tensor named '\(name)' (archive has \(tensors.count) tensors)")
        }
        return tensors[i]
    }

    /// Appends a tensor; throws if the name is already present.
    public mutating func append(_ tensor: NamedTensor) throws {
        guard index[tensor.name] == nil else {
            throw CheckpointError(file: "<archive>", "duplicate tensor name '\(tensor.name)'")
        }
        index[tensor.name] = tensors.count
        tensors.append(tensor)
    }
}
