import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// The `samoyeds` command-line tool.
@main
struct Samoyeds: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "samoyeds",
    abstract: "Mixture-of-Experts inference on dual-side structured sparsity.",
    discussion: """
      Expert weights pruned to the N:M:V + 2:4 format, multiplied with the token \
      rows the router selects (read through index lists, never gathered). \
      Format spec: docs/FORMAT.md.
      """,
    version: "0.1.0",
    subcommands: [Demo.self, Info.self, Verify.self, Bench.self, Tune.self, Compile.self, Memory.self, Prune.self, Inspect.self, MakeCheckpoint.self],
    defaultSubcommand: nil
  )

  static func main() {
    // A write past a file-size limit fails with EFBIG (reported, partial
    // output removed) instead of killing the process.
    signal(SIGXFSZ, SIG_IGN)
    do {
      var command = try parseAsRoot()
      try command.run()
    } catch {
      exit(withError: error)
    }
  }
}
