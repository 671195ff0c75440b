import Foundation

/// A minimal read-only zip reader over a memory-mapped file: central directory (zip64 aware),
/// stored entries only. Compressed entries are refused (never inflated), so no zip bomb can
/// make it allocate; every size and offset is checked against the file size.
struct CheckpointZip {
    /// One stored entry: its name and the byte range of its data in the file.
    struct Entry {
        var name: String
        var dataOffset: Int
        var size: Int
    }

    let data: Data
    let file: String
    private(set) var entries: [Entry] = []
    private var byName: [String: Int] = [:]

    private func u16(_ o: Int) -> Int {
        data.withUnsafeBytes { Int(UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
    }
    private func u32(_ o: Int) -> Int {
        data.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt32.self))) }
    }
    private func u64(_ o: Int) throws -> Int {
        let v = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
        guard v <= UInt64(Int.max) else { throw CheckpointError(file: file, "zip64 field at offset \(o) is too large (\(v))") }
        return Int(v)
    }
    private func err(_ m: String) -> CheckpointError { CheckpointError(file: file, m) }

    init(data: Data, file: String) throws {
        // Work with zero-based offsets.
        self.data = data.startIndex == 0 ? data : data.subdata(in: data.startIndex..<data.endIndex)
        self.file = file
        let size = self.data.count
        guard size > 0 else { throw err("file is empty (expected a torch.save zip archive)") }
        guard size >= 22 else { throw err("file is \(size) bytes, too short for a zip archive (truncated?)") }
        if self.data.first == 0x80 {
            throw err("file starts with a pickle header, not a zip archive (legacy torch.save format is not supported)")
        }
        // Find the end-of-central-directory record (22 bytes + comment up to 65535).
        var eocd = -1
        let lowest = max(0, size - 22 - 65535)
        self.data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Void in
            var i = size - 22
            while i >= lowest {
                if raw[i] == 0x50, raw[i + 1] == 0x4B, raw[i + 2] == 0x05, raw[i + 3] == 0x06,
                   i + 22 + Int(raw[i + 20]) + 256 * Int(raw[i + 21]) == size {
                    eocd = i
                    return
                }
                i -= 1
            }
        }
        guard eocd >= 0 else {
            throw err("no zip end-of-central-directory record found before end of file at offset \(size) (file truncated or not a zip archive)")
        }
        var count = u16(eocd + 10)
        var cdSize = u32(eocd + 12)
        var cdOffset = u32(eocd + 16)
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            let loc = eocd - 20
            guard loc >= 0, u32(loc) == 0x0706_4B50 else {
                throw err("zip64 end-of-central-directory locator missing before offset \(eocd)")
            }
            let z = try u64(loc + 8)
            guard z <= size - 56, u32(z) == 0x0606_4B50 else {
                throw err("zip64 end-of-central-directory record at offset \(z) is invalid or beyond the end of the file (\(size) bytes)")
            }
            count = try u64(z + 32)
            cdSize = try u64(z + 40)
            cdOffset = try u64(z + 48)
        }
        guard cdOffset <= size, cdSize <= size - cdOffset else {
            throw err("central directory at offset \(cdOffset) (\(cdSize) bytes) extends past the end of the file at offset \(size) (truncated?)")
        }
        guard count <= cdSize / 46 else {
            throw err("central directory claims \(count) entries but is only \(cdSize) bytes")
        }
        var p = cdOffset
        let cdEnd = cdOffset + cdSize
        entries.reserveCapacity(count)
        for _ in 0..<count {
            guard p + 46 <= cdEnd else { throw err("central directory entry at offset \(p) is truncated") }
            guard u32(p) == 0x0201_4B50 else { throw err("bad central directory signature at offset \(p)") }
            let flags = u16(p + 8)
            let method = u16(p + 10)
            var compSize = u32(p + 20)
            var size0 = u32(p + 24)
            let nameLen = u16(p + 28)
            let extraLen = u16(p + 30)
            let commentLen = u16(p + 32)
            var local = u32(p + 42)
            guard p + 46 + nameLen + extraLen + commentLen <= cdEnd else {
                throw err("central directory entry at offset \(p) extends past the directory end at offset \(cdEnd)")
            }
            let nameBytes = self.data.subdata(in: (p + 46)..<(p + 46 + nameLen))
            let name = String(decoding: nameBytes, as: UTF8.self)
            // zip64 extended information.
            var e = p + 46 + nameLen
            let eEnd = e + extraLen
            while e + 4 <= eEnd {
                let id = u16(e), len = u16(e + 2)
                guard e + 4 + len <= eEnd else { throw err("zip entry '\(name)': extra field at offset \(e) is truncated") }
                if id == 0x0001 {
                    var q = e + 4
                    func next() throws -> Int {
                        guard q + 8 <= e + 4 + len else { throw err("zip entry '\(name)': zip64 extra field at offset \(e) is too short") }
                        defer { q += 8 }
                        return try u64(q)
                    }
                    if size0 == 0xFFFF_FFFF { size0 = try next() }
                    if compSize == 0xFFFF_FFFF { compSize = try next() }
                    if local == 0xFFFF_FFFF { local = try next() }
                }
                e += 4 + len
            }
            if flags & 1 != 0 { throw err("zip entry '\(name)' is encrypted") }
            guard method == 0 else {
                let how = method == 8 ? "deflate" : "method \(method)"
                throw err("zip entry '\(name)' is compressed (\(how), \(compSize) -> \(size0) bytes); only stored entries are read (torch.save never compresses)")
            }
            guard compSize == size0 else {
                throw err("zip entry '\(name)' is stored but its sizes differ (\(compSize) vs \(size0))")
            }
            guard local <= size - 30, u32(local) == 0x0403_4B50 else {
                throw err("zip entry '\(name)': local header at offset \(local) is missing or beyond the end of the file (\(size) bytes)")
            }
            let dataOffset = local + 30 + u16(local + 26) + u16(local + 28)
            guard dataOffset <= size, size0 <= size - dataOffset else {
                throw err("zip entry '\(name)': \(size0) bytes of data at offset \(dataOffset) extend past the end of the file at offset \(size) (truncated?)")
            }
            guard byName[name] == nil else { throw err("duplicate zip entry '\(name)'") }
            byName[name] = entries.count
            entries.append(Entry(name: name, dataOffset: dataOffset, size: size0))
            p += 46 + nameLen + extraLen + commentLen
        }
    }

    /// The entry called `name`, or nil.
    func entry(_ name: String) -> Entry? { byName[name].map { entries[$0] } }

    /// A copy of the bytes of `entry`.
    func contents(_ entry: Entry) -> Data {
        data.subdata(in: entry.dataOffset..<(entry.dataOffset + entry.size))
    }
}
