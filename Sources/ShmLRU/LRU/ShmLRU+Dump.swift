extension ShmLRU {
    /// The LRU list as JSON (shm-typed-lru's `debug_dump_list`, but valid JSON):
    /// most recently used first, or least recently used first with `backwards`.
    ///
    ///     {"key":"0x5eed","capacity":10,"recordSize":250,"count":1,"indexKind":"shared",
    ///      "order":"mostRecentFirst","complete":true,
    ///      "records":[{"offset":672,"hash":134,"shareKey":0,"prevOffset":null,
    ///                  "nextOffset":null,"lastUsedNs":81234,"length":4,"value":"abcd"}]}
    ///
    /// `value` is the UTF-8 text when the bytes are valid UTF-8, else null with
    /// `valueHex`. `complete` is false when the walk stopped at a broken link.
    public func dumpJSON(backwards: Bool = false) throws(ShmError) -> String {
        try _withLockedHandle("dumpJSON(key: \(key))") { (lru) -> String in
            let s = _segment
            var seen = [Bool](repeating: false, count: capacity)
            var records: [String] = []
            func offset(_ link: UInt32) -> String {
                s.isSlot(link) ? String(s.layout.recordOffset(link)) : "null"
            }
            // Stops at a broken link or a revisited record (complete: false).
            let end = lru.walk(from: backwards ? .leastRecent : .mostRecent) { (record) -> Bool in
                let slot = record.index
                guard !seen[Int(slot)] else { return false }
                seen[Int(slot)] = true
                let meta = s.meta(slot)
                let length = min(s.length(meta: meta), recordSize)
                let bytes = Array(UnsafeRawBufferPointer(start: s.payload(slot), count: length))
                var fields = [
                    "\"offset\":\(s.layout.recordOffset(slot))", "\"hash\":\(s.hash(slot))",
                    "\"shareKey\":\(s.shareKey(slot))", "\"prevOffset\":\(offset(s.prev(slot)))",
                    "\"nextOffset\":\(offset(s.next(slot)))", "\"lastUsedNs\":\(s.lastUse(slot))", "\"length\":\(length)",
                ]
                if let text = String(validating: bytes, as: UTF8.self) {
                    fields.append("\"value\":" + _jsonString(text))
                } else {
                    fields.append("\"value\":null")
                    fields.append("\"valueHex\":\"" + bytes.map { _hexByte($0) }.joined() + "\"")
                }
                records.append("{" + fields.joined(separator: ",") + "}")
                return true
            }
            let complete = end == .completed
            return "{\"key\":\"\(key)\",\"capacity\":\(capacity),\"recordSize\":\(recordSize),\"count\":\(records.count),"
                + "\"indexKind\":\"\(indexKind.rawValue)\",\"order\":\"\(backwards ? "leastRecentFirst" : "mostRecentFirst")\","
                + "\"complete\":\(complete),\"records\":[" + records.joined(separator: ",") + "]}"
        }
    }
}

package func _hexByte(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
}

/// A JSON string literal (RFC 8259 escaping); `package`, so the shm-lru tool's
/// `--json` output escapes the same way.
package func _jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            out += "\\u00" + _hexByte(UInt8(scalar.value))
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
