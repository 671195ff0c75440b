/// An owned, fixed-size, 64-byte aligned Float buffer. Kernels take its raw pointer.
///
/// A class rather than `[Float]` so that hot loops work on one stable pointer with no
/// copy-on-write or exclusivity checks; the memory is freed with the object.
///
/// Sendable (unchecked): a fixed allocation; who writes which range when is the owner's contract (one
/// writer per range at a time: kernels split rows, samplers own their buffers), checked by the TSan run.
public final class FloatBuffer: @unchecked Sendable {
    /// The storage (`count` Floats, zero-initialised).
    public let ptr: UnsafeMutablePointer<Float>
    /// Number of Floats.
    public let count: Int

    /// Allocates `count` zeros.
    public init(count: Int) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64)
        ptr = raw.bindMemory(to: Float.self, capacity: max(1, count))
        ptr.initialize(repeating: 0, count: max(1, count))
    }

    /// Allocates a copy of `values`.
    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { ptr.update(from: base, count: values.count) }
        }
    }

    deinit { ptr.deallocate() }

    /// Sets every element to zero.
    public func zero() { ptr.update(repeating: 0, count: count) }

    /// A copy as an array.
    public var array: [Float] { Array(UnsafeBufferPointer(start: ptr, count: count)) }

    /// A copy of `range` as an array.
    public func array(_ range: Range<Int>) -> [Float] {
        Array(UnsafeBufferPointer(start: ptr + range.lowerBound, count: range.count))
    }

    /// A deep copy.
    public func copy() -> FloatBuffer {
        let c = FloatBuffer(count: count)
        c.ptr.update(from: ptr, count: count)
        return c
    }
}

/// An owned, 64-byte-aligned buffer of bf16 values (the upper 16 bits of a float), for the bf16 copies of
/// weights and of the activations a bf16 training step keeps for its backward pass.
///
/// Sendable (unchecked): like `FloatBuffer`, a fixed allocation whose contents the owner writes.
final class HalfBuffer: @unchecked Sendable {
    /// The storage (`count` values).
    let ptr: UnsafeMutablePointer<UInt16>
    /// Number of values.
    let count: Int

    /// Allocates `count` values (uninitialised contents are zero).
    init(count: Int) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 2, alignment: 64)
        ptr = raw.bindMemory(to: UInt16.self, capacity: max(1, count))
        ptr.initialize(repeating: 0, count: max(1, count))
    }

    deinit { ptr.deallocate() }
}
