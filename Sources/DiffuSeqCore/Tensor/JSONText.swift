import Foundation

/// JSON string literals written by hand (safetensors headers, sampler output, traces), so the
/// byte layout is fixed and Python-compatible.
public enum JSONText {
    /// A JSON string literal for `s`. Quotes, backslashes and control characters (and U+007F,
    /// U+2028, U+2029) are escaped; with `asciiOnly` every non-ASCII UTF-16 unit is written as
    /// `\uXXXX`, as Python's `json.dumps` (ensure_ascii=True) does.
    public static func quote(_ s: String, asciiOnly: Bool = false) -> String {
        var out = "\""
        func escape(_ v: UInt32) { out += String(format: "\\u%04x", v) }
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F || u.value == 0x2028 || u.value == 0x2029 {
                    escape(u.value)
                } else if asciiOnly && u.value > 0x7F {
                    for unit in String(u).utf16 { escape(UInt32(unit)) }
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
