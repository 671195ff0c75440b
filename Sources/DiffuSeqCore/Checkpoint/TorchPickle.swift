import Foundation

/// Reads PyTorch checkpoints written by `torch.save` (the zip format of torch ≥ 1.6) without
/// executing anything: a zip reader (stored entries only) plus a small pickle interpreter that
/// knows only tensors, tuples, lists and dicts and refuses every other pickle global.
public enum TorchCheckpoint {
    /// Keys under which a wrapped state dict is looked for when the top-level dict holds no tensors.
    public static let wrapperKeys = ["state_dict", "model_state_dict", "model", "module"]

    /// Reads the state dict of a `torch.save` zip file as an ordered `TensorArchive` (metadata empty).
    ///
    /// `data.pkl` is found by suffix (any prefix); storages come from `<prefix>/data/<key>`.
    /// Tensor offsets and strides are honoured (non-contiguous views are gathered). If the
    /// top-level dict holds no tensors but holds a dict under one of `wrapperKeys`, that dict's
    /// tensors are returned. Any pickle global other than `collections.OrderedDict`,
    /// `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the
    /// Float/Half/BFloat16/Double/Long/Int storage types throws a `CheckpointError`.
    public static func read(_ url: URL) throws -> TensorArchive {
        let data = try checkpointMapFile(url)
        return try read(data: data, file: url.path)
    }

    /// Reads `torch.save` zip bytes held in memory; `file` is used in error messages.
    public static func read(data: Data, file: String = "<memory>") throws -> TensorArchive {
        let zip = try CheckpointZip(data: data, file: file)
        let pkls = zip.entries.filter { $0.name == "data.pkl" || $0.name.hasSuffix("/data.pkl") }
        guard let pkl = pkls.first else {
            throw CheckpointError(file: file, "zip archive has no '*/data.pkl' entry (not a torch.save checkpoint)")
        }
        guard pkls.count == 1 else {
            throw CheckpointError(file: file, "zip archive has \(pkls.count) '*/data.pkl' entries (\(pkls.map(\.name).joined(separator: ", ")))")
        }
        let prefix = String(pkl.name.dropLast("data.pkl".count))
        if let bo = zip.entry(prefix + "byteorder") {
            let s = String(decoding: zip.contents(bo), as: UTF8.self)
            guard s == "little" else {
                throw CheckpointError(file: file, "entry '\(bo.name)' says byte order '\(s)'; only 'little' is supported")
            }
        }
        var vm = TorchPickleMachine(bytes: [UInt8](zip.contents(pkl)), zip: zip, prefix: prefix, file: file)
        let refs = try vm.run()
        var tensors: [NamedTensor] = []
        tensors.reserveCapacity(refs.count)
        // Views may share or broadcast storages; bound what they can make us allocate.
        let budget = 8 * data.count + (1 << 20)
        var total = 0
        for (name, ref) in refs {
            let bytes = (checkpointElementCount(ref.size) ?? 0) * ref.storage.dtype.byteSize
            total += bytes
            guard bytes <= data.count, total <= budget else {
                throw CheckpointError(file: file,
                    "tensor '\(name)' (size \(ref.size), stride \(ref.stride)) would need \(bytes) bytes; views larger than the file (\(data.count) bytes) or totalling more than \(budget) bytes are refused")
            }
            tensors.append(try ref.materialize(name: name, zip: zip, file: file))
        }
        do {
            return try TensorArchive(tensors: tensors)
        } catch let e as CheckpointError {
            throw CheckpointError(file: file, e.message)
        }
    }
}

/// A storage referenced by a persistent id: element type and its zip entry.
struct TorchStorageRef {
    var dtype: TensorDType
    var key: String
    var numel: Int
    var entry: CheckpointZip.Entry
}

/// A tensor view `(storage, offset, size, stride)`, validated against the storage size.
struct TorchTensorRef {
    var storage: TorchStorageRef
    var offset: Int
    var size: [Int]
    var stride: [Int]

    /// Copies the view out of the mapped file into contiguous row-major bytes.
    func materialize(name: String, zip: CheckpointZip, file: String) throws -> NamedTensor {
        let es = storage.dtype.byteSize
        let numel = checkpointElementCount(size) ?? 0
        let base = storage.entry.dataOffset
        var contiguous = true
        var expect = 1
        for i in stride.indices.reversed() where size[i] != 1 {
            if stride[i] != expect { contiguous = false }
            expect *= size[i]
        }
        if numel == 0 {
            return try NamedTensor(name: name, dtype: storage.dtype, shape: size, data: Data())
        }
        if contiguous {
            let start = base + offset * es
            let bytes = zip.data.subdata(in: start..<(start + numel * es))
            return try NamedTensor(name: name, dtype: storage.dtype, shape: size, data: bytes)
        }
        var out = Data(count: numel * es)
        let rank = size.count
        out.withUnsafeMutableBytes { dst in
            zip.data.withUnsafeBytes { src in
                guard let d = dst.baseAddress, let s = src.baseAddress else { return }
                let inner = size[rank - 1], innerStride = stride[rank - 1]
                let outer = numel / inner
                var idx = [Int](repeating: 0, count: rank)
                var w = 0
                for _ in 0..<outer {
                    var srcElem = offset
                    for k in 0..<(rank - 1) { srcElem += idx[k] * stride[k] }
                    if innerStride == 1 {
                        memcpy(d + w, s + base + srcElem * es, inner * es)
                        w += inner * es
                    } else {
                        for j in 0..<inner {
                            memcpy(d + w, s + base + (srcElem + j * innerStride) * es, es)
                            w += es
                        }
                    }
                    var k = rank - 2
                    while k >= 0 {
                        idx[k] += 1
                        if idx[k] < size[k] { break }
                        idx[k] = 0
                        k -= 1
                    }
                }
            }
        }
        return try NamedTensor(name: name, dtype: storage.dtype, shape: size, data: out)
    }
}

/// The callables a checkpoint pickle may name.
enum TorchPickleGlobal {
    case orderedDict
    case rebuildTensorV2
    case rebuildParameter
    case storage(TensorDType)

    static func lookup(module: String, name: String) -> TorchPickleGlobal? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
        case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
        case ("torch", "FloatStorage"): return .storage(.F32)
        case ("torch", "HalfStorage"): return .storage(.F16)
        case ("torch", "BFloat16Storage"): return .storage(.BF16)
        case ("torch", "DoubleStorage"): return .storage(.F64)
        case ("torch", "LongStorage"): return .storage(.I64)
        case ("torch", "IntStorage"): return .storage(.I32)
        default: return nil
        }
    }
}

/// A mutable pickle list (shared by reference through the memo, as in Python).
final class TorchPickleList {
    var items: [TorchPickleValue] = []
}

/// A mutable pickle dict that keeps insertion order; string keys are overwritten in place.
final class TorchPickleDict {
    var items: [(TorchPickleValue, TorchPickleValue)] = []
    var stringIndex: [String: Int] = [:]

    func set(_ k: TorchPickleValue, _ v: TorchPickleValue) {
        if case .string(let s) = k {
            if let i = stringIndex[s] { items[i].1 = v; return }
            stringIndex[s] = items.count
        }
        items.append((k, v))
    }

    subscript(key: String) -> TorchPickleValue? { stringIndex[key].map { items[$0].1 } }
}

/// A value on the pickle stack.
indirect enum TorchPickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes(Int)  // only the length is kept
    case tuple([TorchPickleValue], depth: Int)
    case list(TorchPickleList)
    case dict(TorchPickleDict)
    case global(TorchPickleGlobal)
    case storage(TorchStorageRef)
    case tensor(TorchTensorRef)

    var depth: Int {
        if case .tuple(_, let d) = self { return d }
        return 0
    }

    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .tuple: return "tuple"
        case .list: return "list"
        case .dict: return "dict"
        case .global: return "global"
        case .storage: return "storage"
        case .tensor: return "tensor"
        }
    }
}

/// The pickle interpreter (protocol 2–5 opcode subset). Never imports or calls anything: the
/// allowed globals are interpreted by hand.
struct TorchPickleMachine {
    /// Limits that bound work and memory on hostile input.
    static let maxOps = 50_000_000
    static let maxStack = 1_000_000
    static let maxMemo = 1_000_000
    static let maxMarks = 10_000
    static let maxDepth = 200

    let bytes: [UInt8]
    let zip: CheckpointZip
    let prefix: String
    let file: String
    var pos = 0
    var opStart = 0
    var stack: [TorchPickleValue] = []
    var marks: [Int] = []
    var memo: [Int: TorchPickleValue] = [:]
    var containers: [AnyObject] = []
    var storages: [String: TorchStorageRef] = [:]

    init(bytes: [UInt8], zip: CheckpointZip, prefix: String, file: String) {
        self.bytes = bytes
        self.zip = zip
        self.prefix = prefix
        self.file = file
    }

    func fail(_ m: String) -> CheckpointError {
        CheckpointError(file: file, "\(m) at offset \(opStart) of pickle '\(prefix)data.pkl'")
    }

    mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - pos else {
            throw CheckpointError(file: file,
                "pickle '\(prefix)data.pkl' truncated: opcode at offset \(opStart) needs \(n) bytes at offset \(pos) but only \(bytes.count - pos) remain")
        }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }

    mutating func uint(_ n: Int) throws -> Int {
        let s = try take(n)
        var v = 0
        for (i, b) in s.enumerated() { v |= Int(b) << (8 * i) }
        return v
    }

    mutating func line() throws -> String {
        var end = pos
        while end < bytes.count, bytes[end] != 0x0A {
            end += 1
            if end - pos > 1024 { throw fail("GLOBAL name longer than 1024 bytes") }
        }
        guard end < bytes.count else {
            throw CheckpointError(file: file, "pickle '\(prefix)data.pkl' truncated inside GLOBAL at offset \(opStart)")
        }
        let s = String(decoding: bytes[pos..<end], as: UTF8.self)
        pos = end + 1
        return s
    }

    mutating func text(_ n: Int) throws -> String {
        let s = try take(n)
        guard let str = String(bytes: s, encoding: .utf8) else { throw fail("string is not valid UTF-8") }
        return str
    }

    mutating func push(_ v: TorchPickleValue) throws {
        guard stack.count < Self.maxStack else { throw fail("pickle stack exceeds \(Self.maxStack) items") }
        stack.append(v)
    }

    mutating func pop() throws -> TorchPickleValue {
        guard stack.count > (marks.last ?? 0), let v = stack.popLast() else { throw fail("pickle stack underflow") }
        return v
    }

    mutating func popMark() throws -> [TorchPickleValue] {
        guard let m = marks.popLast() else { throw fail("no MARK on the pickle stack") }
        guard m <= stack.count else { throw fail("pickle stack underflow") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    mutating func tuple(_ items: [TorchPickleValue]) throws -> TorchPickleValue {
        let d = 1 + (items.map(\.depth).max() ?? 0)
        guard d <= Self.maxDepth else { throw fail("tuples nested deeper than \(Self.maxDepth)") }
        return .tuple(items, depth: d)
    }

    mutating func memoize(_ i: Int, _ v: TorchPickleValue) throws {
        guard memo.count < Self.maxMemo || memo[i] != nil else { throw fail("pickle memo exceeds \(Self.maxMemo) entries") }
        memo[i] = v
    }

    mutating func newList() -> TorchPickleValue {
        let l = TorchPickleList()
        containers.append(l)
        return .list(l)
    }

    mutating func newDict() -> TorchPickleValue {
        let d = TorchPickleDict()
        containers.append(d)
        return .dict(d)
    }

    func int(_ v: TorchPickleValue, _ what: String) throws -> Int {
        guard case .int(let i) = v else { throw fail("\(what) is a \(v.kind), expected an int") }
        return i
    }

    func ints(_ v: TorchPickleValue, _ what: String) throws -> [Int] {
        guard case .tuple(let items, _) = v else { throw fail("\(what) is a \(v.kind), expected a tuple of ints") }
        return try items.map { try int($0, what) }
    }

    /// Runs the pickle and returns the named tensors of the resulting state dict, in order.
    mutating func run() throws -> [(String, TorchTensorRef)] {
        defer {
            // Break all container links so releasing them is shallow (no deep recursion, no cycles).
            for c in containers {
                if let l = c as? TorchPickleList { l.items.removeAll() }
                if let d = c as? TorchPickleDict { d.items.removeAll() }
            }
            stack.removeAll()
            memo.removeAll()
        }
        var ops = 0
        while true {
            guard pos < bytes.count else {
                throw CheckpointError(file: file, "pickle '\(prefix)data.pkl' ends at offset \(pos) without STOP (truncated)")
            }
            ops += 1
            guard ops <= Self.maxOps else { throw fail("more than \(Self.maxOps) pickle opcodes") }
            opStart = pos
            let op = bytes[pos]
            pos += 1
            switch op {
            case 0x80:  // PROTO
                let p = try uint(1)
                guard (2...5).contains(p) else { throw fail("unsupported pickle protocol \(p)") }
            case 0x95:  // FRAME
                _ = try take(8)
            case 0x2E:  // STOP
                let v = try pop()
                return try result(v)
            case 0x28:  // MARK
                guard marks.count < Self.maxMarks else { throw fail("more than \(Self.maxMarks) nested MARKs") }
                marks.append(stack.count)
            case 0x63:  // GLOBAL
                let module = try line(), name = try line()
                try push(try global(module, name))
            case 0x93:  // STACK_GLOBAL
                let n = try pop(), m = try pop()
                guard case .string(let module) = m, case .string(let name) = n else {
                    throw fail("STACK_GLOBAL operands are \(m.kind) and \(n.kind), expected strings")
                }
                try push(try global(module, name))
            case 0x8C: try push(.string(try text(try uint(1))))  // SHORT_BINUNICODE
            case 0x58: try push(.string(try text(try uint(4))))  // BINUNICODE
            case 0x8D: try push(.string(try text(try uint(8))))  // BINUNICODE8
            case 0x55:  // SHORT_BINSTRING
                let s = try take(try uint(1))
                try push(.string(String(decoding: s, as: UTF8.self)))
            case 0x54:  // BINSTRING
                let s = try take(try uint(4))
                try push(.string(String(decoding: s, as: UTF8.self)))
            case 0x43: try push(.bytes(try take(try uint(1)).count))  // SHORT_BINBYTES
            case 0x42: try push(.bytes(try take(try uint(4)).count))  // BINBYTES
            case 0x71:  // BINPUT
                let i = try uint(1)
                guard let top = stack.last else { throw fail("BINPUT on an empty stack") }
                try memoize(i, top)
            case 0x72:  // LONG_BINPUT
                let i = try uint(4)
                guard let top = stack.last else { throw fail("LONG_BINPUT on an empty stack") }
                try memoize(i, top)
            case 0x94:  // MEMOIZE
                guard let top = stack.last else { throw fail("MEMOIZE on an empty stack") }
                try memoize(memo.count, top)
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let i = try uint(op == 0x68 ? 1 : 4)
                guard let v = memo[i] else { throw fail("memo key \(i) not defined") }
                try push(v)
            case 0x29: try push(try tuple([]))  // EMPTY_TUPLE
            case 0x74: try push(try tuple(try popMark()))  // TUPLE
            case 0x85:  // TUPLE1
                let a = try pop()
                try push(try tuple([a]))
            case 0x86:  // TUPLE2
                let b = try pop(), a = try pop()
                try push(try tuple([a, b]))
            case 0x87:  // TUPLE3
                let c = try pop(), b = try pop(), a = try pop()
                try push(try tuple([a, b, c]))
            case 0x7D: try push(newDict())  // EMPTY_DICT
            case 0x5D: try push(newList())  // EMPTY_LIST
            case 0x64, 0x75:  // DICT, SETITEMS
                let items = try popMark()
                guard items.count % 2 == 0 else { throw fail("odd number of items for a dict") }
                let target: TorchPickleValue
                if op == 0x64 { target = newDict() } else { target = try pop(); stack.append(target) }
                guard case .dict(let d) = target else { throw fail("SETITEMS on a \(target.kind), expected a dict") }
                var i = 0
                while i < items.count { d.set(items[i], items[i + 1]); i += 2 }
                if op == 0x64 { try push(target) }
            case 0x73:  // SETITEM
                let v = try pop(), k = try pop()
                guard stack.count > (marks.last ?? 0), case .dict(let d) = stack.last ?? .none else { throw fail("SETITEM target is not a dict") }
                d.set(k, v)
            case 0x6C, 0x65:  // LIST, APPENDS
                let items = try popMark()
                let target: TorchPickleValue
                if op == 0x6C { target = newList() } else { target = try pop(); stack.append(target) }
                guard case .list(let l) = target else { throw fail("APPENDS on a \(target.kind), expected a list") }
                l.items.append(contentsOf: items)
                if op == 0x6C { try push(target) }
            case 0x61:  // APPEND
                let v = try pop()
                guard stack.count > (marks.last ?? 0), case .list(let l) = stack.last ?? .none else { throw fail("APPEND target is not a list") }
                l.items.append(v)
            case 0x4A:  // BININT
                try push(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))
            case 0x4B: try push(.int(try uint(1)))  // BININT1
            case 0x4D: try push(.int(try uint(2)))  // BININT2
            case 0x8A, 0x8B:  // LONG1, LONG4
                let n = try uint(op == 0x8A ? 1 : 4)
                guard n <= 8 else { throw fail("integer of \(n) bytes is too large") }
                let s = try take(n)
                var v: UInt64 = 0
                for (i, b) in s.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
                if n > 0, n < 8, s.last.map({ $0 & 0x80 != 0 }) == true { v |= ~0 << (8 * UInt64(n)) }
                try push(.int(Int(Int64(bitPattern: v))))
            case 0x47:  // BINFLOAT (big-endian)
                let s = try take(8)
                var v: UInt64 = 0
                for b in s { v = v << 8 | UInt64(b) }
                try push(.float(Double(bitPattern: v)))
            case 0x88: try push(.bool(true))  // NEWTRUE
            case 0x89: try push(.bool(false))  // NEWFALSE
            case 0x4E: try push(.none)  // NONE
            case 0x30: _ = try pop()  // POP
            case 0x31: _ = try popMark()  // POP_MARK
            case 0x32:  // DUP
                guard let top = stack.last else { throw fail("DUP on an empty stack") }
                try push(top)
            case 0x51:  // BINPERSID
                try push(.storage(try persistentLoad(try pop())))
            case 0x52:  // REDUCE
                let args = try pop(), callable = try pop()
                try push(try reduce(callable, args))
            case 0x62:  // BUILD: state of an OrderedDict (e.g. `_metadata`) is ignored
                _ = try pop()
                guard !stack.isEmpty else { throw fail("BUILD on an empty stack") }
            default:
                throw fail("unsupported pickle opcode 0x\(String(op, radix: 16, uppercase: true))")
            }
        }
    }

    func global(_ module: String, _ name: String) throws -> TorchPickleValue {
        guard let g = TorchPickleGlobal.lookup(module: module, name: name) else {
            throw CheckpointError(file: file,
                "refusing pickle global \(module).\(name) at offset \(opStart) (only tensors, tuples and dicts are read)")
        }
        return .global(g)
    }

    mutating func persistentLoad(_ pid: TorchPickleValue) throws -> TorchStorageRef {
        guard case .tuple(let t, _) = pid, t.count == 5, case .string("storage") = t[0] else {
            throw fail("persistent id is not ('storage', type, key, location, numel)")
        }
        guard case .global(.storage(let dtype)) = t[1] else { throw fail("persistent id storage type is a \(t[1].kind)") }
        guard case .string(let key) = t[2] else { throw fail("persistent id key is a \(t[2].kind), expected a str") }
        let numel = try int(t[4], "storage numel")
        guard numel >= 0 else { throw fail("storage '\(key)' has negative numel \(numel)") }
        if let s = storages[key] {
            guard s.dtype == dtype, s.numel == numel else {
                throw fail("storage '\(key)' is referenced with two different types or sizes")
            }
            return s
        }
        let entryName = prefix + "data/" + key
        guard let entry = zip.entry(entryName) else {
            throw fail("storage '\(key)': zip entry '\(entryName)' not found")
        }
        let (bytes, o) = numel.multipliedReportingOverflow(by: dtype.byteSize)
        guard !o, bytes <= entry.size else {
            throw fail("storage '\(key)' claims \(numel) \(dtype.rawValue) elements (\(o ? "overflow" : String(bytes)) bytes) but zip entry '\(entryName)' holds \(entry.size) bytes")
        }
        let s = TorchStorageRef(dtype: dtype, key: key, numel: numel, entry: entry)
        storages[key] = s
        return s
    }

    mutating func reduce(_ callable: TorchPickleValue, _ argsValue: TorchPickleValue) throws -> TorchPickleValue {
        guard case .global(let g) = callable else { throw fail("REDUCE on a \(callable.kind), expected an allowed global") }
        guard case .tuple(let args, _) = argsValue else { throw fail("REDUCE arguments are a \(argsValue.kind), expected a tuple") }
        switch g {
        case .orderedDict:
            guard args.isEmpty else { throw fail("OrderedDict called with \(args.count) arguments, expected none") }
            return newDict()
        case .rebuildParameter:
            guard (2...3).contains(args.count), case .tensor = args[0] else {
                throw fail("_rebuild_parameter expects (tensor, requires_grad, hooks)")
            }
            return args[0]
        case .rebuildTensorV2:
            guard (6...7).contains(args.count) else {
                throw fail("_rebuild_tensor_v2 called with \(args.count) arguments, expected 6 (storage, offset, size, stride, requires_grad, hooks)")
            }
            guard case .storage(let s) = args[0] else { throw fail("_rebuild_tensor_v2 storage is a \(args[0].kind)") }
            let offset = try int(args[1], "storage offset")
            let size = try ints(args[2], "tensor size")
            let stride = try ints(args[3], "tensor stride")
            guard size.count == stride.count else {
                throw fail("tensor size \(size) and stride \(stride) have different ranks")
            }
            guard offset >= 0, size.allSatisfy({ $0 >= 0 }), stride.allSatisfy({ $0 >= 0 }) else {
                throw fail("negative offset, size or stride (offset \(offset), size \(size), stride \(stride))")
            }
            guard let numel = checkpointElementCount(size) else { throw fail("tensor size \(size) overflows") }
            if numel > 0 {
                var last = offset
                var overflow = false
                for (n, st) in Swift.zip(size, stride) {
                    let (a, o1) = (n - 1).multipliedReportingOverflow(by: st)
                    let (b, o2) = last.addingReportingOverflow(a)
                    overflow = overflow || o1 || o2
                    last = b
                }
                let (bytes, o3) = numel.multipliedReportingOverflow(by: s.dtype.byteSize)
                guard !overflow, !o3, bytes > 0, last < s.numel else {
                    throw fail("tensor of size \(size), stride \(stride), storage offset \(offset) needs \(overflow ? "too many" : String(last + 1)) elements but storage '\(s.key)' holds \(s.numel)")
                }
            }
            return .tensor(TorchTensorRef(storage: s, offset: offset, size: size, stride: stride))
        case .storage:
            throw fail("calling a storage type is not supported")
        }
    }

    func result(_ top: TorchPickleValue) throws -> [(String, TorchTensorRef)] {
        guard case .dict(let d) = top else {
            throw fail("top-level object is a \(top.kind), expected a dict of tensors")
        }
        func tensors(_ d: TorchPickleDict) throws -> [(String, TorchTensorRef)] {
            var out: [(String, TorchTensorRef)] = []
            for (k, v) in d.items {
                guard case .tensor(let t) = v else { continue }
                guard case .string(let name) = k else { throw fail("a tensor is stored under a \(k.kind) key, expected a str") }
                out.append((name, t))
            }
            return out
        }
        let direct = try tensors(d)
        if !direct.isEmpty { return direct }
        for key in TorchCheckpoint.wrapperKeys {
            if case .dict(let inner)? = d[key] {
                let t = try tensors(inner)
                if !t.isEmpty { return t }
            }
        }
        return []
    }
}
