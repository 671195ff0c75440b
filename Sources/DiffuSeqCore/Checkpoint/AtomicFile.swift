import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a file atomically: the bytes go to a temporary file in the same folder, which is
/// fsync'ed and then renamed over the target. On any error the temporary file is removed and a
/// previous file at the target path is left untouched.
public enum AtomicFile {
    /// A sink handed to the body of `AtomicFile.write(to:_:)`; every call writes all bytes or throws.
    public final class Writer {
        let fd: Int32
        let path: String
        /// The number of bytes written so far.
        public private(set) var offset: Int = 0

        init(fd: Int32, path: String) {
            self.fd = fd
            self.path = path
        }

        /// Writes all of `bytes`, retrying on partial writes and `EINTR`.
        public func write(_ bytes: UnsafeRawBufferPointer) throws {
            guard var p = bytes.baseAddress else { return }
            var left = bytes.count
            while left > 0 {
                let n = checkpointSysWrite(fd, p, min(left, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw CheckpointError(file: path, "write failed at offset \(offset): \(String(cString: strerror(errno)))")
                }
                if n == 0 {
                    throw CheckpointError(file: path, "write returned 0 at offset \(offset)")
                }
                p += n
                left -= n
                offset += n
            }
        }

        /// Writes all bytes of `data`.
        public func write(_ data: Data) throws {
            try data.withUnsafeBytes { try write($0) }
        }
    }

    /// Runs `body` with a writer on a fresh temporary file next to `url`, then fsyncs and renames
    /// it to `url` (and fsyncs the folder, best effort). If `body` or any step throws, the
    /// temporary file is deleted and the error rethrown; the file at `url` is unchanged.
    public static func write(to url: URL, _ body: (Writer) throws -> Void) throws {
        let target = url.standardizedFileURL
        let dir = target.deletingLastPathComponent()
        let tmp = dir.appendingPathComponent(".\(target.lastPathComponent).tmp-\(UUID().uuidString)")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw CheckpointError(file: target.path,
                "cannot create temporary file \(tmp.path): \(String(cString: strerror(errno)))")
        }
        // Held until the file is renamed or removed: `removeStaleTemporaries` takes the lock to tell a
        // live writer's temporary from one left by a writer that was killed (the kernel drops the lock
        // when its process dies, even on SIGKILL).
        _ = flock(fd, LOCK_EX | LOCK_NB)
        var closed = false
        var renamed = false
        defer {
            if !closed { _ = close(fd) }
            if !renamed { _ = unlink(tmp.path) }
        }
        let writer = Writer(fd: fd, path: target.path)
        try body(writer)
        guard fsync(fd) == 0 else {
            throw CheckpointError(file: target.path, "fsync of temporary file failed: \(String(cString: strerror(errno)))")
        }
        closed = true
        guard close(fd) == 0 else {
            throw CheckpointError(file: target.path, "close of temporary file failed: \(String(cString: strerror(errno)))")
        }
        guard rename(tmp.path, target.path) == 0 else {
            throw CheckpointError(file: target.path,
                "cannot rename temporary file over the target: \(String(cString: strerror(errno)))")
        }
        renamed = true
        let dfd = open(dir.path, O_RDONLY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            _ = close(dfd)
        }
    }

    /// Removes the temporary files and folders (`.<name>.tmp-…`) in `folder` whose writer is gone: an
    /// `AtomicFile` temporary or a checkpoint folder being written holds an exclusive `flock` on itself
    /// while it is written, and the kernel releases that lock when the writer exits or is killed. An
    /// entry whose lock can be taken is therefore stale. Returns the names removed.
    @discardableResult
    public static func removeStaleTemporaries(in folder: URL) -> [String] {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: folder.path) else { return [] }
        var removed: [String] = []
        for name in names.sorted() where name.hasPrefix(".") && name.contains(".tmp-") {
            let url = folder.appendingPathComponent(name)
            let fd = open(url.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { continue }
            defer { _ = close(fd) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }  // a live writer holds it
            if (try? fm.removeItem(at: url)) != nil { removed.append(name) }
        }
        return removed
    }

    /// The readable part of an I/O error: our own errors as they are, Foundation's as the POSIX reason
    /// and path (unless `withPath` is false) instead of an NSError dump.
    package static func reason(_ error: Error, withPath: Bool = true) -> String {
        if error is CheckpointError || error is EngineError { return "\(error)" }
        let ns = error as NSError
        let posix = (ns.userInfo[NSUnderlyingErrorKey] as? NSError).flatMap { $0.domain == NSPOSIXErrorDomain ? $0 : nil }
            ?? (ns.domain == NSPOSIXErrorDomain ? ns : nil)
        let path = ns.userInfo[NSFilePathErrorKey] as? String
        let what = posix.map { String(cString: strerror(Int32($0.code))) } ?? ns.localizedDescription
        guard withPath, let path else { return what }
        return "\(path): \(what)"
    }

    /// Atomically replaces the file at `url` with `data`.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { try $0.write(data) }
    }
}

@inline(__always)
private func checkpointSysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    #if canImport(Darwin)
    return Darwin.write(fd, p, n)
    #elseif canImport(Musl)
    return Musl.write(fd, p, n)
    #else
    return Glibc.write(fd, p, n)
    #endif
}
