import Foundation

/// One line of a sample file as written by `sample_seq2seq.py`: `{"recover", "reference", "source"}`.
public struct EvaluationSample: Sendable, Equatable, Codable {
    /// The generated text.
    public var recover: String
    /// The target text.
    public var reference: String
    /// The conditioning text.
    public var source: String

    /// Creates a sample.
    public init(recover: String, reference: String, source: String) {
        self.recover = recover
        self.reference = reference
        self.source = source
    }
}

/// Why an evaluation could not run. Every case names the file (and line, 1-based, where relevant).
public enum EvaluationError: Error, Equatable, CustomStringConvertible {
    /// The given path does not exist.
    case pathNotFound(String)
    /// A folder holds no file matching the script's `*json` glob.
    case noSampleFiles(folder: String)
    /// A file could not be read.
    case unreadable(file: String, reason: String)
    /// A file has no line at all.
    case emptyFile(file: String)
    /// A line is not a JSON object with string `recover`, `reference` and `source`, or not UTF-8.
    case malformedLine(file: String, line: Int, reason: String)
    /// A seed file has a different number of lines than the first file.
    case lineCountMismatch(file: String, expected: Int, found: Int, firstFile: String)

    /// A one-line, user-facing message.
    public var description: String {
        switch self {
        case .pathNotFound(let p):
            return "\(p): no such file or folder"
        case .noSampleFiles(let folder):
            return "\(folder): no sample file matches \(folder)/*json (a .jsonl file must be passed by its path)"
        case .unreadable(let file, let reason):
            return "\(file): cannot be read: \(reason)"
        case .emptyFile(let file):
            return "\(file): the file has no line"
        case .malformedLine(let file, let line, let reason):
            return "\(file):\(line): \(reason)"
        case .lineCountMismatch(let file, let expected, let found, let firstFile):
            return "\(file): \(found) lines, but the first file \(firstFile) has \(expected); every seed file must have one line per example"
        }
    }
}

/// Runs DiffuSeq's official evaluation (`scripts/eval_seq2seq.py`) on sample files.
public enum Evaluator {
    /// The sample files for `path`, as the script would take them.
    ///
    /// A folder gives `sorted(glob(folder + "/*json"))` (non-hidden names ending in `json`, so a
    /// `.jsonl` file is *not* included; sorted by code point; sub-folders skipped); a file gives
    /// itself. Each returned string is the path as the script prints it.
    public static func sampleFiles(at path: String) throws -> [String] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw EvaluationError.pathNotFound(path)
        }
        guard isDir.boolValue else { return [path] }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw EvaluationError.unreadable(file: path, reason: error.localizedDescription)
        }
        var files: [String] = []
        for name in names where !name.hasPrefix(".") && name.unicodeScalars.reversed().starts(with: "nosj".unicodeScalars) {
            let full = path + "/" + name
            var sub: ObjCBool = false
            if FileManager.default.fileExists(atPath: full, isDirectory: &sub), !sub.boolValue {
                files.append(full)
            }
        }
        files.sort { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) { $0.value < $1.value } }
        if files.isEmpty { throw EvaluationError.noSampleFiles(folder: path) }
        return files
    }

    /// Reads a sample file: one JSON object per line (Python universal newlines: `\n`, `\r\n`, `\r`).
    /// - Throws: `EvaluationError.malformedLine` naming the file and 1-based line for invalid
    ///   UTF-8, bad JSON, a non-object or a missing / non-string key; `.emptyFile` for no line.
    public static func readSamples(file: String) throws -> [EvaluationSample] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: file))
        } catch {
            throw EvaluationError.unreadable(file: file, reason: error.localizedDescription)
        }
        let samples = try parseSamples(data, file: file)
        if samples.isEmpty { throw EvaluationError.emptyFile(file: file) }
        return samples
    }

    /// Parses sample lines from memory; `file` only labels errors.
    public static func parseSamples(_ data: Data, file: String) throws -> [EvaluationSample] {
        let bytes = [UInt8](data)
        var out: [EvaluationSample] = []
        var start = 0
        var i = 0
        var lineNo = 0
        func emit(_ lo: Int, _ hi: Int) throws {
            lineNo += 1
            out.append(try parseLine(bytes[lo..<hi], file: file, line: lineNo))
        }
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x0A || b == 0x0D {
                try emit(start, i)
                if b == 0x0D && i + 1 < bytes.count && bytes[i + 1] == 0x0A { i += 1 }
                start = i + 1
            }
            i += 1
        }
        if start < bytes.count { try emit(start, bytes.count) }
        return out
    }

    private static func parseLine(_ slice: ArraySlice<UInt8>, file: String, line: Int) throws -> EvaluationSample {
        guard String(validating: slice, as: UTF8.self) != nil else {
            throw EvaluationError.malformedLine(file: file, line: line, reason: "invalid UTF-8")
        }
        if slice.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
            throw EvaluationError.malformedLine(file: file, line: line, reason: "empty line (expected a JSON object)")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(slice), options: [.fragmentsAllowed])
        } catch {
            throw EvaluationError.malformedLine(file: file, line: line, reason: "invalid JSON")
        }
        guard let dict = object as? [String: Any] else {
            throw EvaluationError.malformedLine(file: file, line: line, reason: "not a JSON object")
        }
        func field(_ key: String) throws -> String {
            guard let value = dict[key] else {
                throw EvaluationError.malformedLine(file: file, line: line, reason: "missing key \"\(key)\"")
            }
            guard let s = value as? String else {
                throw EvaluationError.malformedLine(file: file, line: line, reason: "\"\(key)\" is not a string")
            }
            return s
        }
        return EvaluationSample(recover: try field("recover"), reference: try field("reference"), source: try field("source"))
    }

    /// Evaluates a sample file or a folder of seed files exactly like the official script.
    /// - Parameters:
    ///   - path: a file (any name, e.g. `.jsonl`) or a folder (its `*json` files).
    ///   - mbr: with ≥ 2 files, select one candidate per source by MBR instead of computing diversity.
    ///   - tokens: the special tokens to delete.
    public static func evaluate(path: String, mbr: Bool = false, tokens: SpecialTokens = .bert) throws -> EvaluationReport {
        let files = try sampleFiles(at: path)
        var sets: [(path: String, samples: [EvaluationSample])] = []
        for f in files {
            let samples = try readSamples(file: f)
            if let first = sets.first, samples.count != first.samples.count {
                throw EvaluationError.lineCountMismatch(file: f, expected: first.samples.count,
                                                        found: samples.count, firstFile: first.path)
            }
            sets.append((f, samples))
        }
        return try evaluate(sets: sets, mbr: mbr, tokens: tokens)
    }

    /// Evaluates in-memory seed sets (one `(label, samples)` per file, in the order to use).
    /// - Throws: `.lineCountMismatch` when the sets differ in length, `.emptyFile` for an empty set.
    public static func evaluate(sets: [(path: String, samples: [EvaluationSample])], mbr: Bool = false,
                                tokens: SpecialTokens = .bert) throws -> EvaluationReport {
        guard let first = sets.first else { throw EvaluationError.noSampleFiles(folder: "") }
        let n = first.samples.count
        if n == 0 { throw EvaluationError.emptyFile(file: first.path) }
        for s in sets where s.samples.count != n {
            throw EvaluationError.lineCountMismatch(file: s.path, expected: n, found: s.samples.count, firstFile: first.path)
        }

        var fileReports: [EvaluationReport.FileReport] = []
        for set in sets {
            let lines = set.samples.map { s -> EvaluationReport.LineScore in
                let rec = Metrics.cleanRecover(s.recover, tokens: tokens)
                let ref = Metrics.cleanReference(s.reference, tokens: tokens)
                let src = Metrics.cleanSource(s.source, tokens: tokens)
                return score(recover: rec, reference: ref, source: src)
            }
            fileReports.append(EvaluationReport.FileReport(
                path: set.path, lineCount: n,
                bleu: PyMath.mean(lines.map(\.bleu)),
                rougeL: PyMath.mean(lines.map(\.rougeL)),
                dist1: PyMath.mean(lines.map(\.dist1)),
                avgLenOfficial: PyMath.mean(lines.map { Double($0.officialLen) }),
                avgWordCount: PyMath.mean(lines.map { Double($0.wordCount) }),
                lines: lines))
        }

        var report = EvaluationReport(tokens: tokens, mbrRequested: mbr, files: fileReports, diversity: nil, mbr: nil)
        guard sets.count > 1 else { return report }

        let candidateWords: [[[String]]] = (0..<n).map { k in fileReports.map { Metrics.words($0.lines[k].recover) } }
        if !mbr {
            let perSource = candidateWords.map { cands -> EvaluationReport.SourceDiversity in
                let pairs = Metrics.pairwiseBLEU(cands)
                return EvaluationReport.SourceDiversity(selfBLEU: pairs.isEmpty ? 0 : PyMath.mean(pairs),
                                                        div4: Metrics.div4(cands), pairwiseBLEU: pairs)
            }
            report.diversity = EvaluationReport.DiversityReport(
                selfBLEU: PyMath.mean(perSource.map(\.selfBLEU)),
                div4: PyMath.mean(perSource.map(\.div4)),
                perSource: perSource)
        } else {
            var picksPerFile = [Int](repeating: 0, count: sets.count)
            let picks = (0..<n).map { k -> EvaluationReport.MBRPick in
                let sums = Metrics.mbrSums(candidateWords[k])
                var best = 0
                for i in sums.indices where sums[i] > sums[best] { best = i }
                picksPerFile[best] += 1
                let selected = fileReports[best].lines[k].recover
                let reference = fileReports[0].lines[k].reference
                let s = score(recover: selected, reference: reference, source: fileReports[0].lines[k].source)
                return EvaluationReport.MBRPick(selectedIndex: best, selectedFile: sets[best].path, bleuSums: sums,
                                                selected: selected, reference: reference, bleu: s.bleu,
                                                rougeL: s.rougeL, dist1: s.dist1, officialLen: s.officialLen,
                                                wordCount: s.wordCount)
            }
            report.mbr = EvaluationReport.MBRReport(
                bleu: PyMath.mean(picks.map(\.bleu)),
                rougeL: PyMath.mean(picks.map(\.rougeL)),
                dist1: PyMath.mean(picks.map(\.dist1)),
                avgLenOfficial: PyMath.mean(picks.map { Double($0.officialLen) }),
                avgWordCount: PyMath.mean(picks.map { Double($0.wordCount) }),
                picksPerFile: picksPerFile, perSource: picks)
        }
        return report
    }

    /// Scores one cleaned (hypothesis, reference) pair with every per-line metric.
    public static func score(recover: String, reference: String, source: String = "") -> EvaluationReport.LineScore {
        let hyp = Metrics.words(recover)
        return EvaluationReport.LineScore(
            recover: recover, reference: reference, source: source,
            bleu: Metrics.sentenceBLEU(hypothesis: hyp, reference: Metrics.words(reference)),
            rougeL: Metrics.rougeL(hypothesis: recover, reference: reference),
            dist1: Metrics.dist1(hyp), officialLen: Metrics.officialLen(recover), wordCount: hyp.count)
    }
}
