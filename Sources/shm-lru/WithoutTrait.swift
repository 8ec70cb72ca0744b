#if !CLI
import Glibc

/// Built without the `CLI` trait: say how to build the real tool.
@main
enum WithoutTrait {
    static func main() {
        let text = "shm-lru: built without the CLI trait; build it with `swift build --traits CLI --product shm-lru`\n"
        text.withCString { _ = write(2, $0, strlen($0)) }
        exit(2)
    }
}
#endif
