import Glibc
import ShmLRU
import Testing

// Every ```swift block of README.md and of the DocC articles is compiled here,
// so that none can drift from the API. A block is one of:
// - a program (the default): compiled as top-level code (main.swift) against
//   the built ShmLRU module, linked, and run; it must exit 0 and leave no segment;
// - `<!-- snippet: compile -->` on the line before it: compiled only (a server
//   that runs until stopped, say);
// - `<!-- snippet: quote PATH -->`: a quote of a compiled file of this package,
//   which must contain the block's lines, in order and contiguous (indentation aside);
// - `<!-- snippet: manifest -->`: Package.swift lines, built as a consumer
//   package by ConsumerPackageTests.

/// One ```swift block of a Markdown file.
struct DocSnippet: CustomStringConvertible {
    enum Kind: Equatable { case program, compile, quote(String), manifest }
    var file: String
    var line: Int
    var kind: Kind
    var code: String
    var description: String { "\(file):\(line)" }
}

/// The package's root (this file is Tests/ShmLRUTests/DocSnippetTests.swift).
func packageRoot(_ file: String = #filePath) -> String {
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}

func readTextFile(_ path: String) -> String? {
    readFileBytes(path).map { String(decoding: $0, as: UTF8.self) }
}

/// README.md and every article of every DocC catalog under Sources/.
func documentationFiles() -> [String] {
    let root = packageRoot()
    var files = [root + "/README.md"]
    let run = try? SpawnedProcess("/usr/bin/find", [root + "/Sources", "-path", "*.docc/*", "-name", "*.md"]).wait()
    files += (run?.output ?? "").split(separator: "\n").map(String.init).sorted()
    return files
}

/// The ```swift blocks of a Markdown text, with the marker before each.
func docSnippets(in path: String) -> [DocSnippet] {
    guard let text = readTextFile(path) else { return [] }
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let name = String(path.dropFirst(packageRoot().count + 1))
    var snippets: [DocSnippet] = []
    var index = 0
    while index < lines.count {
        let trimmed = lines[index].trimmingBlanks()
        guard trimmed == "```swift" else {
            index += 1
            continue
        }
        let indent = lines[index].prefix { $0 == " " }.count
        var kind = DocSnippet.Kind.program
        var previous = index - 1
        while previous >= 0, lines[previous].trimmingBlanks().isEmpty { previous -= 1 }
        if previous >= 0 {
            let marker = lines[previous].trimmingBlanks()
            if marker.hasPrefix("<!-- snippet:"), marker.hasSuffix("-->") {
                let words = marker.dropFirst("<!-- snippet:".count).dropLast(3).split(separator: " ").map(String.init)
                switch words.first {
                case "compile": kind = .compile
                case "manifest": kind = .manifest
                case "quote" where words.count == 2: kind = .quote(words[1])
                default: Issue.record("\(name):\(previous + 1): unknown snippet marker \(marker)")
                }
            }
        }
        var body: [String] = []
        index += 1
        while index < lines.count, lines[index].trimmingBlanks() != "```" {
            body.append(String(lines[index].dropFirst(min(indent, lines[index].prefix { $0 == " " }.count))))
            index += 1
        }
        snippets.append(DocSnippet(file: name, line: index - body.count, kind: kind, code: body.joined(separator: "\n")))
        index += 1
    }
    return snippets
}

extension String {
    /// Without leading and trailing spaces, tabs and line ends.
    func trimmingBlanks() -> String {
        var s = Substring(self)
        while let first = s.first, first == " " || first == "\t" || first == "\n" || first == "\r" { s = s.dropFirst() }
        while let last = s.last, last == " " || last == "\t" || last == "\n" || last == "\r" { s = s.dropLast() }
        return String(s)
    }
}

/// Compiles `code` as a main.swift against the built ShmLRU module; runs it unless `run` is false.
private func compileAndRun(_ snippet: DocSnippet, run: Bool) throws {
    let products = productsDirectory()
    let root = packageRoot()
    let directory = "/tmp/shmlru-snippet-\(getpid())-\(snippet.line)"
    _ = try SpawnedProcess("/bin/mkdir", ["-p", directory]).wait()
    defer { _ = try? SpawnedProcess("/bin/rm", ["-rf", directory]).wait() }
    let source = directory + "/main.swift"
    guard let file = fopen(source, "w") else { throw ShmError(.systemCall, "fopen(\(source))", errno: errno) }
    fputs(snippet.code + "\n", file)
    fclose(file)
    // The package's modules the snippet imports, linked from their object files.
    let imported = snippet.code.split(separator: "\n").compactMap { line -> String? in
        line.hasPrefix("import ShmLRU") ? String(line.dropFirst("import ".count)).trimmingBlanks() : nil
    }
    var objects: [String] = []
    for module in Set(imported + ["ShmLRU"]) {
        // The module's objects, one per source its build lists (a stale object of
        // a removed source may still lie in the folder).
        let build = products + "/\(module).build"
        let sources = readTextFile(build + "/sources") ?? ""
        objects += sources.split(separator: "\n").compactMap { path -> String? in
            guard let name = path.split(separator: "/").last, name.hasSuffix(".swift") else { return nil }
            return "\(build)/\(name).o"
        }
    }
    if imported.contains("ShmLRURedis") { objects.append("-lhiredis") }
    let swiftc = (try? SpawnedProcess("/usr/bin/which", ["swiftc"]).wait())?.output.trimmingBlanks() ?? "swiftc"
    var arguments = [
        "-swift-version", "6", "-I", products + "/Modules", "-I", root + "/Sources/CShm", "-I", root + "/Sources/CHiredis", source,
    ]
    arguments += run ? objects + ["-o", directory + "/snippet"] : ["-typecheck"]
    // Under `make sanitize` the module's objects are instrumented: link the same runtime.
    if products.contains("/.build-asan/") { arguments.append("-sanitize=address") }
    if products.contains("/.build-tsan/") { arguments.append("-sanitize=thread") }
    let compiled = try SpawnedProcess(swiftc.isEmpty ? "/usr/bin/swiftc" : swiftc, arguments).wait()
    #expect(compiled.status == 0, "\(snippet) does not compile:\n\(compiled.errorOutput)\n--- the block:\n\(snippet.code)")
    guard compiled.status == 0, run else { return }
    let before = Set(ShmRegion.list().map(\.id))
    // (Under the sanitizers LeakSanitizer is off for the snippet: the runtime's
    // top-level async code keeps a few allocations to exit.)
    let ran = try SpawnedProcess("/usr/bin/env", ["ASAN_OPTIONS=detect_leaks=0", "/usr/bin/timeout", "60", directory + "/snippet"]).wait()
    #expect(ran.status == 0, "\(snippet) exited \(ran.status):\n\(ran.output)\(ran.errorOutput)")
    let left = ShmRegion.list().filter { !before.contains($0.id) && $0.attachCount == 0 && kill($0.creatorPID, 0) != 0 }
    #expect(left.isEmpty, "\(snippet) left segments behind: \(left.map(\.key))")
    for segment in left { try? ShmRegion.remove(key: segment.key) }
}

@Suite(.serialized) struct DocSnippetTests {
    static let snippets = documentationFiles().flatMap(docSnippets(in:))

    @Test func theDocumentationHasSnippets() {
        #expect(Self.snippets.filter { $0.file == "README.md" }.count >= 3)
        #expect(Self.snippets.contains { $0.kind == .manifest })
    }

    /// Programs compile, run, exit 0 and leave nothing behind; compile-only blocks compile.
    /// (A program that uses the near cache is compiled only: it would need a Redis server.)
    @Test(arguments: snippets.filter { $0.kind == .program || $0.kind == .compile })
    func snippetCompiles(_ snippet: DocSnippet) throws {
        try compileAndRun(snippet, run: snippet.kind == .program && !snippet.code.contains("ShmLRURedis") && !snippet.code.contains("redis://"))
    }

    /// Package.swift lines typecheck against the toolchain's PackageDescription
    /// (the README's are also built as a consumer package: ConsumerPackageTests).
    @Test(arguments: snippets.filter { $0.kind == .manifest })
    func manifestSnippetTypechecks(_ snippet: DocSnippet) throws {
        let swiftc = try #require(
            (try SpawnedProcess("/bin/sh", ["-c", "command -v swiftc"]).wait()).output.split(separator: "\n").first)
        let resolved = try #require(
            (try SpawnedProcess("/bin/sh", ["-c", "readlink -f \"$(command -v swiftc)\""]).wait()).output.split(separator: "\n").first)
        var toolchain = resolved.split(separator: "/", omittingEmptySubsequences: false)
        toolchain.removeLast(2)  // …/usr/bin/swiftc → …/usr
        let manifestAPI = toolchain.joined(separator: "/") + "/lib/swift/pm/ManifestAPI"
        let directory = "/tmp/shmlru-manifest-\(getpid())-\(snippet.line)"
        _ = try SpawnedProcess("/bin/mkdir", ["-p", directory]).wait()
        defer { _ = try? SpawnedProcess("/bin/rm", ["-rf", directory]).wait() }
        let file = try #require(fopen(directory + "/Package.swift", "w"))
        fputs(snippet.code + "\n", file)
        fclose(file)
        let run = try SpawnedProcess(
            String(swiftc), ["-typecheck", "-swift-version", "6", "-package-description-version", "6.1", "-I", manifestAPI,
                             directory + "/Package.swift"]).wait()
        #expect(run.status == 0, "\(snippet) is not a valid manifest:\n\(run.errorOutput)\n\(snippet.code)")
    }

    /// A quoted block stands in its file, line for line (indentation aside).
    @Test(arguments: snippets.filter { if case .quote = $0.kind { true } else { false } })
    func quotedSnippetStandsInItsFile(_ snippet: DocSnippet) throws {
        guard case .quote(let path) = snippet.kind else { return }
        let text = try #require(readTextFile(packageRoot() + "/" + path), "\(snippet): no file \(path)")
        let fileLines = text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0).trimmingBlanks() }
        let quoted = snippet.code.split(separator: "\n", omittingEmptySubsequences: false).map { String($0).trimmingBlanks() }
        let found = fileLines.indices.contains { start in
            start + quoted.count <= fileLines.count && Array(fileLines[start..<start + quoted.count]) == quoted
        }
        #expect(found, "\(snippet): these lines are not in \(path):\n\(snippet.code)")
    }
}
