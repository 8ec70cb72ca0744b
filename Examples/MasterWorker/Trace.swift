import Glibc

// Output goes straight to fd 1 with write(2), one whole line per call, so the
// master's and the workers' lines interleave only where the protocol lets them.

func writeAll(_ fd: Int32, _ text: String) {
    var text = text
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}

/// Prints `[who] text`, each line of `text` prefixed.
func say(_ who: String, _ text: String) {
    writeAll(1, text.split(separator: "\n", omittingEmptySubsequences: false).map { "[\(who)] \($0)" }.joined(separator: "\n") + "\n")
}

func sayError(_ who: String, _ text: String) {
    writeAll(2, "[\(who)] \(text)\n")
}

/// Lays out the cache's JSON dump one record a line (still valid JSON): breaks
/// only inside the top-level object's arrays, outside strings.
func recordPerLine(_ json: String) -> String {
    var out = ""
    var depth = 0
    var inString = false
    var escaped = false
    for character in json {
        if inString {
            out.append(character)
            if escaped { escaped = false } else if character == "\\" { escaped = true } else if character == "\"" { inString = false }
            continue
        }
        switch character {
        case "\"":
            inString = true
            out.append(character)
        case "{", "[":
            out.append(character)
            depth += 1
            if character == "[" && depth == 2 { out += "\n  " }
        case "}", "]":
            if character == "]" && depth == 2 { out += "\n" }
            depth -= 1
            out.append(character)
        case "," where depth == 2:
            out += ",\n  "
        default:
            out.append(character)
        }
    }
    return out
}

/// Lower-case hex of a string's UTF-8 bytes (values travel the pipe this way).
func hexEncode(_ text: String) -> String {
    let digits = Array("0123456789abcdef")
    var out = ""
    for byte in text.utf8 {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 15)])
    }
    return out
}

func hexDecode(_ hex: Substring) -> String? {
    var bytes: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) ?? hex.endIndex
        guard let byte = UInt8(hex[index..<next], radix: 16), hex.distance(from: index, to: next) == 2 else { return nil }
        bytes.append(byte)
        index = next
    }
    return String(validating: bytes, as: UTF8.self)
}
